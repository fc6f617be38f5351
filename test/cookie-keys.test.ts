/** Cookie signatures: keygrip's exact output (cookies signed before an upgrade stay valid), key rotation. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { CookieKeys } from '../src/security/cookie-keys.ts';

/** keygrip 1.1's signature, spelled out: HMAC-SHA1, base64 made URL-safe without padding. */
const keygrip = (key: string, data: string) =>
  createHmac('sha1', key).update(data).digest('base64').replace(/\/|\+|=/g, (x) => ({ '/': '_', '+': '-', '=': '' })[x]!);

test('signatures are keygrip\'s: the first key signs, every key verifies, anything else is refused', () => {
  const data = '_session=Xk2c9pQ-vJ3lY0r8u7s6tT5q4w3e2r1y';
  const keys = new CookieKeys(['new-secret', 'old-secret']);
  assert.equal(keys.sign(data), keygrip('new-secret', data));
  assert.equal(keys.index(data, keygrip('new-secret', data)), 0);
  assert.equal(keys.index(data, keygrip('old-secret', data)), 1, 'a cookie signed under the previous key still verifies');
  assert.equal(keys.verify(data, keygrip('old-secret', data)), true);
  assert.equal(keys.index(data, keygrip('other-secret', data)), -1);
  assert.equal(keys.index(`${data}x`, keys.sign(data)), -1, 'the signature covers the value');
  assert.equal(keys.index(data, keys.sign(data).slice(1)), -1, 'a shorter signature is refused, without throwing');
  assert.equal(keys.index(data, ''), -1);
  assert.throws(() => new CookieKeys([]));
});
