import { createCipheriv, createDecipheriv, createHash, createHmac, createSecretKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';

/**
 * Encryption at rest for the secrets we must be able to read back (TOTP keys): AES-256-GCM under
 * SECRETS_KEY. A sealed value is `v1.<key id>.<iv>.<ciphertext>.<tag>` (base64url parts), bound to
 * what it belongs to by additional authenticated data (e.g. the account id), so a sealed secret copied
 * to another account, or any changed byte, fails to open.
 */
export const SECRETS_KEY_BYTES = 32;

const HEX = /^[0-9a-fA-F]{64}$/;
// base64 or base64url, with or without its one '=' of padding: 43 characters carry 32 bytes.
const BASE64 = /^[A-Za-z0-9+/_-]{43}=?$/;

/** SECRETS_KEY is 32 bytes written as 64 hex digits or as base64/base64url (`openssl rand -base64 32`). */
export function parseSecretsKey(text: string): Buffer | undefined {
  const value = text.trim();
  const key = HEX.test(value) ? Buffer.from(value, 'hex') : BASE64.test(value) ? Buffer.from(value.replace(/=$/, ''), 'base64url') : undefined;
  return key?.length === SECRETS_KEY_BYTES ? key : undefined;
}

export class SecretBoxError extends Error {}

export class SecretBox {
  // KeyObjects, made once: Node prepares a Buffer key anew for every cipher or HMAC (about 60 µs against 10 here).
  readonly #key: KeyObject;
  /** A separate key for `digest`, derived from the secrets key (one key, one purpose). */
  readonly #digestKey: KeyObject;
  /** Names the key in every sealed value, so a value sealed under another key fails with a clear error. */
  readonly keyId: string;

  constructor(key: Buffer) {
    if (key.length !== SECRETS_KEY_BYTES) throw new SecretBoxError(`the secrets key must be ${SECRETS_KEY_BYTES} bytes`);
    this.#key = createSecretKey(Buffer.from(key));
    this.#digestKey = createSecretKey(Buffer.from(hkdfSync('sha256', key, '', 'latchkey digest', 32)));
    this.keyId = createHash('sha256').update('latchkey secrets key id').update(key).digest('base64url').slice(0, 8);
  }

  /**
   * A keyed digest (HMAC-SHA-256, 128 bits shown) of something that may be a secret, e.g. what was typed
   * into the email field: stable for one key, so log lines can be matched, and not reversible by
   * trying a dictionary of passwords without the key, as a plain hash would be.
   */
  digest(value: string, context: string): string {
    return createHmac('sha256', this.#digestKey).update(`${context}\0${value}`).digest('base64url').slice(0, 22);
  }

  seal(plaintext: string, context: string): string {
    const iv = randomBytes(12); // 96-bit random nonce: the GCM standard size; far below the 2^32 messages per key limit
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv);
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return ['v1', this.keyId, iv.toString('base64url'), ciphertext.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.');
  }

  /** Opens a sealed value; throws SecretBoxError when it was changed, sealed for another context or under another key. */
  open(sealed: string, context: string): string {
    const parts = sealed.split('.');
    if (parts.length !== 5 || parts[0] !== 'v1') throw new SecretBoxError('not a sealed secret');
    const [, keyId, iv, ciphertext, tag] = parts as [string, string, string, string, string];
    if (keyId !== this.keyId) throw new SecretBoxError(`sealed under another SECRETS_KEY (key id ${keyId}, current ${this.keyId})`);
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#key, Buffer.from(iv, 'base64url'), { authTagLength: 16 });
      decipher.setAAD(Buffer.from(context, 'utf8'));
      decipher.setAuthTag(Buffer.from(tag, 'base64url'));
      return Buffer.concat([decipher.update(Buffer.from(ciphertext, 'base64url')), decipher.final()]).toString('utf8');
    } catch (err) {
      throw new SecretBoxError('a sealed secret failed its integrity check', { cause: err });
    }
  }
}

/**
 * The SecretBox for this deployment: under SECRETS_KEY when configured (required in production, see
 * config.ts), else under a key generated once and kept in storage with set-if-absent (development), so
 * every node and restart on one Redis agrees on it — like the cookie keys in oidc/signing-keys.ts.
 */
export async function loadSecretBox(store: Store, configured?: string): Promise<SecretBox> {
  if (configured) {
    const key = parseSecretsKey(configured);
    if (!key) throw new SecretBoxError('SECRETS_KEY must be 32 bytes, base64 or hex');
    return new SecretBox(key);
  }
  await store.set(keys.secretsKey, randomBytes(SECRETS_KEY_BYTES).toString('base64url'), { ifAbsent: true });
  return new SecretBox(Buffer.from((await store.get(keys.secretsKey))!, 'base64url'));
}
