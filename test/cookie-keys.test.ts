/** Cookie signatures: keygrip's exact output (cookies signed before an upgrade stay valid), key rotation; the stored key sealed. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { loadCookieKeys } from '../src/oidc/signing-keys.ts';
import { CookieKeys } from '../src/security/cookie-keys.ts';
import { SecretBox } from '../src/security/secret-box.ts';
import { keys } from '../src/storage/keys.ts';
import type { RedisStore } from '../src/storage/redis-store.ts';
import { useRedisStore } from './helpers/redis.ts';

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

describe('the cookie key kept in storage (no COOKIE_KEYS)', () => {
  let store: RedisStore;
  useRedisStore((setup) => ({ store } = setup));
  const box = new SecretBox(randomBytes(32));

  test('is made once, stored sealed under SECRETS_KEY, and the same for every server', async () => {
    await store.del(keys.cookieKeys);
    const [first, second] = await Promise.all([loadCookieKeys(store, box), loadCookieKeys(store, box)]);
    assert.deepEqual(first, second, 'two servers starting together agree');
    assert.equal(first.length, 1);
    const stored = (await store.get(keys.cookieKeys))!;
    assert.match(stored, /^v1\./);
    assert.ok(!stored.includes(first[0]!), 'the key is not stored in clear');
    assert.equal(box.open(stored, keys.cookieKeys), first[0]);
    assert.deepEqual(await loadCookieKeys(store, box), first, 'a restart reads the same key');
  });

  test('a key stored unsealed by an earlier version is sealed in place at the first start, once, and keeps signing', async () => {
    const legacy = randomBytes(32).toString('base64url');
    await store.set(keys.cookieKeys, legacy);
    // Servers of the new version starting together: one compare-and-set wins, every one gets the same key.
    const loaded = await Promise.all(Array.from({ length: 5 }, () => loadCookieKeys(store, box)));
    for (const l of loaded) assert.deepEqual(l, [legacy], 'cookies signed before the upgrade still verify');
    const stored = (await store.get(keys.cookieKeys))!;
    assert.match(stored, /^v1\./);
    assert.ok(!stored.includes(legacy));
    assert.equal(box.open(stored, keys.cookieKeys), legacy);
    assert.deepEqual(await loadCookieKeys(store, box), [legacy]);
  });

  test('sealed under another SECRETS_KEY (a development database given one): replaced by a new key, once, for every server', async () => {
    await store.del(keys.cookieKeys);
    const [before] = await loadCookieKeys(store, box);
    const other = new SecretBox(randomBytes(32));
    const loaded = await Promise.all(Array.from({ length: 5 }, () => loadCookieKeys(store, other)));
    for (const l of loaded) assert.deepEqual(l, loaded[0], 'servers starting together agree on the new key');
    assert.notEqual(loaded[0]![0], before);
    assert.equal(other.open((await store.get(keys.cookieKeys))!, keys.cookieKeys), loaded[0]![0]);
  });

  test('COOKIE_KEYS wins and nothing is stored', async () => {
    await store.del(keys.cookieKeys);
    assert.deepEqual(await loadCookieKeys(store, box, ['a'.repeat(32), 'b'.repeat(32)]), ['a'.repeat(32), 'b'.repeat(32)]);
    assert.equal(await store.get(keys.cookieKeys), null);
  });
});
