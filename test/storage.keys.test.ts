import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { digest, grantIndexForTag, grantTag, keys, tagFor } from '../src/storage/keys.ts';

/** The part of a key Redis Cluster hashes: the first non-empty `{…}`, else the whole key. */
function hashedPart(key: string): string {
  const open = key.indexOf('{');
  if (open === -1) return key;
  const close = key.indexOf('}', open + 1);
  if (close === -1 || close === open + 1) return key;
  return key.slice(open + 1, close);
}

const randomId = () => randomBytes(32).toString('base64url');
const URL_SAFE_TAG = /^[A-Za-z0-9_-]{16}$/;

describe('storage keys', () => {
  test('a token id that starts with its grant tag lands in the grant slot', () => {
    const grantId = randomId();
    const tag = grantTag(grantId);
    assert.match(tag, URL_SAFE_TAG);
    const index = keys.grantIndex(grantId);
    assert.equal(index, grantIndexForTag(tag));
    for (const model of ['AccessToken', 'AuthorizationCode', 'RefreshToken']) {
      assert.equal(hashedPart(keys.model(model, tag + randomId())), hashedPart(index), model);
    }
    assert.equal(hashedPart(keys.model('Grant', grantId)), hashedPart(index));
    assert.equal(tagFor('Grant', grantId), tag);
  });

  test('models that are not grant-bound get a digest tag, not a piece of their id', () => {
    // A device code exists before its grant: a tag of its own, never a piece of its id.
    for (const model of ['Session', 'Interaction', 'PushedAuthorizationRequest', 'ClientCredentials', 'ReplayDetection', 'DeviceCode', 'BackchannelAuthenticationRequest']) {
      const id = randomId();
      const key = keys.model(model, id);
      assert.equal(hashedPart(key), digest(id).slice(0, 16));
      assert.ok(!key.includes(id.slice(0, 8)), `${model}: ${key}`);
    }
  });

  test('key names hold digests, never the values', () => {
    const id = randomId();
    for (const key of [keys.model('AccessToken', id), keys.model('Session', id), keys.sessionUid(id), keys.userCode(id)]) {
      assert.ok(!key.includes(id.slice(16)), key);
    }
    assert.ok(!keys.userCode('BCDF-GHJK').includes('BCDF'));
  });

  test('a value with { or } cannot choose or escape the hash slot', () => {
    const victim = grantTag(randomId());
    for (const crafted of [
      `{${victim}}${randomId()}`,
      `}{${victim}${randomId()}`,
      `ab{${victim}}cdefghijklmn${randomId()}`,
      `${'{'.repeat(16)}${randomId()}`,
      `}}}}}}}}}}}}}}}}${randomId()}`,
      '{}{}{}{}{}{}{}{}{}{}',
      '{x}',
      '',
    ]) {
      for (const model of ['AccessToken', 'RefreshToken', 'AuthorizationCode', 'Session', 'Grant']) {
        const key = keys.model(model, crafted);
        const hashed = hashedPart(key);
        assert.match(hashed, URL_SAFE_TAG, `${model} ${JSON.stringify(crafted)} → ${key}`);
        assert.notEqual(hashed, victim, `${model} ${JSON.stringify(crafted)} reached another grant's slot`);
        assert.equal(key.indexOf('{'), 3);
        assert.equal(key.split('{').length, 2, `one hash tag only: ${key}`);
        assert.equal(key.split('}').length, 2, `one hash tag only: ${key}`);
      }
      const index = grantIndexForTag(crafted.slice(0, 16));
      assert.match(hashedPart(index), URL_SAFE_TAG);
      assert.notEqual(hashedPart(index), victim);
      for (const key of [keys.sessionUid(crafted), keys.userCode(crafted)]) assert.match(hashedPart(key), URL_SAFE_TAG);
    }
  });

  test('consuming a crafted id finds the same slot as storing it', () => {
    const crafted = `{evil}${randomId()}`;
    assert.equal(hashedPart(keys.model('RefreshToken', crafted)), hashedPart(grantIndexForTag(tagFor('RefreshToken', crafted))));
  });

  test('two grants get different tags', () => {
    const tags = new Set(Array.from({ length: 1000 }, () => grantTag(randomId())));
    assert.equal(tags.size, 1000);
  });
});
