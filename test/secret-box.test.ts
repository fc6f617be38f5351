/** Encryption at rest of TOTP secrets: AES-256-GCM round trip, tamper detection, key handling. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { loadSecretBox, parseSecretsKey, SecretBox, SecretBoxError } from '../src/security/secret-box.ts';
import { keys } from '../src/storage/keys.ts';
import { MemoryStore } from '../src/storage/memory-store.ts';

const box = new SecretBox(randomBytes(32));
const SECRET = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';

/** Flips one bit of the base64url part `index` of a sealed value. */
function flip(sealed: string, index: number): string {
  const parts = sealed.split('.');
  const bytes = Buffer.from(parts[index]!, 'base64url');
  bytes[0]! ^= 1;
  parts[index] = bytes.toString('base64url');
  return parts.join('.');
}

describe('SecretBox (AES-256-GCM)', () => {
  test('round trip; the sealed form does not contain the secret; each seal is different', () => {
    const sealed = box.seal(SECRET, 'totp-secret:acct-1');
    assert.equal(box.open(sealed, 'totp-secret:acct-1'), SECRET);
    assert.ok(!sealed.includes(SECRET));
    assert.ok(!sealed.includes(Buffer.from(SECRET).toString('base64url').slice(0, 12)));
    assert.match(sealed, /^v1\.[\w-]{8}\.[\w-]{16}\.[\w-]+\.[\w-]{22}$/, 'version, key id, 96-bit IV, ciphertext, 128-bit tag');
    assert.notEqual(box.seal(SECRET, 'c'), box.seal(SECRET, 'c'), 'a fresh IV every time');
    assert.equal(box.open(box.seal('', 'c'), 'c'), '');
  });

  test('any changed bit of IV, ciphertext or tag is detected', () => {
    const sealed = box.seal(SECRET, 'ctx');
    for (const part of [2, 3, 4]) {
      assert.throws(() => box.open(flip(sealed, part), 'ctx'), SecretBoxError, `part ${part}`);
    }
    const truncated = sealed.split('.');
    truncated[4] = truncated[4]!.slice(0, 10);
    assert.throws(() => box.open(truncated.join('.'), 'ctx'), SecretBoxError, 'a short tag is refused');
  });

  test('a secret sealed for one account does not open for another (bound by AAD)', () => {
    const sealed = box.seal(SECRET, 'totp-secret:acct-1');
    assert.throws(() => box.open(sealed, 'totp-secret:acct-2'), SecretBoxError);
  });

  test('another key: refused with a clear error, not garbage', () => {
    const sealed = box.seal(SECRET, 'ctx');
    const other = new SecretBox(randomBytes(32));
    assert.throws(() => other.open(sealed, 'ctx'), /another SECRETS_KEY/);
    // Even when the key id is forged to match, GCM refuses.
    const forged = [...sealed.split('.')];
    forged[1] = other.keyId;
    assert.throws(() => other.open(forged.join('.'), 'ctx'), /integrity/);
  });

  test('malformed values are refused', () => {
    for (const value of ['', 'plain-secret', 'v2.a.b.c.d', 'v1.a.b.c']) assert.throws(() => box.open(value, 'ctx'), SecretBoxError, value);
  });

  test('a key must be 32 bytes', () => {
    assert.throws(() => new SecretBox(randomBytes(16)), SecretBoxError);
  });
});

describe('SECRETS_KEY', () => {
  test('accepts 32 bytes as hex, base64 or base64url; nothing else', () => {
    const key = randomBytes(32);
    for (const form of [key.toString('hex'), key.toString('base64'), key.toString('base64url'), ` ${key.toString('base64')}\n`]) {
      assert.deepEqual(parseSecretsKey(form), key, form);
    }
    for (const bad of ['', 'short', randomBytes(31).toString('base64'), randomBytes(33).toString('base64'), randomBytes(32).toString('hex').slice(1), 'z'.repeat(64)]) {
      assert.equal(parseSecretsKey(bad), undefined, bad);
    }
  });

  test('configured: used as is, and opens what it sealed in another process', async () => {
    const key = randomBytes(32);
    const store = new MemoryStore();
    const a = await loadSecretBox(store, key.toString('base64'));
    const b = await loadSecretBox(new MemoryStore(), key.toString('hex'));
    assert.equal(b.open(a.seal(SECRET, 'x'), 'x'), SECRET);
    assert.equal(await store.get(keys.secretsKey), null, 'a configured key is never written to storage');
    await assert.rejects(loadSecretBox(store, 'not-a-key'), SecretBoxError);
  });

  test('unset (development): generated once, kept in storage, shared by every node on it', async () => {
    const store = new MemoryStore();
    const [a, b] = await Promise.all([loadSecretBox(store), loadSecretBox(store)]);
    assert.equal(a.keyId, b.keyId);
    assert.equal(b.open(a.seal(SECRET, 'x'), 'x'), SECRET);
    const later = await loadSecretBox(store);
    assert.equal(later.keyId, a.keyId);
    assert.notEqual((await loadSecretBox(new MemoryStore())).keyId, a.keyId, 'another storage, another key');
  });
});
