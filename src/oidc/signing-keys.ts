import { generateKeyPairSync, randomBytes, createHash, type JsonWebKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';

/**
 * Signing keys, cookie keys and the DPoP nonce secret. Generated once and kept in storage with
 * set-if-absent, so every node on one Redis agrees on them; or given through the environment.
 */
export interface StoredSigningKey extends JsonWebKey {
  kid: string;
  alg: string;
  use: 'sig';
  /** Epoch seconds; newest first in storage. */
  iat: number;
}

/** RS256 is the OIDC default every client can verify; ES256 and EdDSA are faster to sign. */
const ALGORITHMS = ['RS256', 'ES256', 'EdDSA'] as const;

function thumbprintKid(jwk: JsonWebKey): string {
  const members =
    jwk.kty === 'RSA' ? { e: jwk.e, kty: jwk.kty, n: jwk.n } : jwk.kty === 'EC' ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y } : { crv: jwk.crv, kty: jwk.kty, x: jwk.x };
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url');
}

export function generateSigningKey(alg: (typeof ALGORITHMS)[number], now = Date.now()): StoredSigningKey {
  const pair =
    alg === 'RS256'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : alg === 'ES256'
        ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
        : generateKeyPairSync('ed25519');
  const jwk = pair.privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: thumbprintKid(jwk), alg, use: 'sig', iat: Math.floor(now / 1000) };
}

export function generateKeyGeneration(now = Date.now()): StoredSigningKey[] {
  return ALGORITHMS.map((alg) => generateSigningKey(alg, now));
}

/** The current signing keys (newest generation first), creating the first generation if there is none. */
export async function loadSigningKeys(store: Store, file?: string): Promise<StoredSigningKey[]> {
  if (file) {
    const set = JSON.parse(await readFile(file, 'utf8')) as { keys?: StoredSigningKey[] };
    if (!Array.isArray(set.keys) || set.keys.length === 0) throw new Error(`SIGNING_KEYS_FILE ${file} holds no "keys"`);
    if (!set.keys.some((k) => k.kty === 'RSA' && k.d)) throw new Error(`SIGNING_KEYS_FILE ${file} needs an RSA private key (RS256 is the OIDC default)`);
    return set.keys;
  }
  await store.set(keys.signingKeys, JSON.stringify(generateKeyGeneration()), { ifAbsent: true });
  return JSON.parse((await store.get(keys.signingKeys))!) as StoredSigningKey[];
}

/** Adds a new generation of keys in front (it signs from now on); keeps the previous generation for
 * verification and retires anything older. Returns the kept keys. */
export async function rotateSigningKeys(store: Store): Promise<{ current: StoredSigningKey[]; retired: StoredSigningKey[] }> {
  const existing = JSON.parse((await store.get(keys.signingKeys)) ?? '[]') as StoredSigningKey[];
  const generations = [...new Set(existing.map((k) => k.iat))].sort((a, b) => b - a);
  const keep = new Set(generations.slice(0, 1));
  const fresh = generateKeyGeneration(Math.max(Date.now(), ((generations[0] ?? 0) + 1) * 1000));
  const kept = existing.filter((k) => keep.has(k.iat));
  const retired = existing.filter((k) => !keep.has(k.iat));
  const current = [...fresh, ...kept];
  await store.set(keys.signingKeys, JSON.stringify(current));
  return { current, retired };
}

/** Public half of a key: what `keys list` shows and what JWKS would publish. */
export function publicPart(k: StoredSigningKey) {
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = k;
  return pub;
}

async function sharedSecret(store: Store, key: string, bytes: number): Promise<string> {
  await store.set(key, randomBytes(bytes).toString('base64url'), { ifAbsent: true });
  return (await store.get(key))!;
}

export async function loadCookieKeys(store: Store, fromEnv?: string[]): Promise<string[]> {
  if (fromEnv?.length) return fromEnv;
  return [await sharedSecret(store, keys.cookieKeys, 32)];
}

/** DPoP nonces must verify on every node, so the secret is shared through storage. */
export async function loadDpopNonceSecret(store: Store): Promise<Buffer> {
  return Buffer.from(await sharedSecret(store, keys.dpopNonceSecret, 32), 'base64url');
}
