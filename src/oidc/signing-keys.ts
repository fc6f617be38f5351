import { generateKeyPairSync, randomBytes, createHash, type JsonWebKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { SecretBoxError, type SecretBox } from '../security/secret-box.ts';
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
  /** Epoch seconds until which a retired key stays published (to verify what it signed); set when retired. */
  retiredUntil?: number;
}

/** Where `keys rotate` announces new keys, so every server swaps them in without a restart. */
export const SIGNING_KEY_CHANGES = 'lk:changes:signing-keys';
/** Every server re-reads the keys this often, in case it missed a rotation message. */
export const KEYS_REREAD_SECONDS = 60;
/** The lifetime of an ID token (oidc-provider `ttl.IdToken`). */
export const ID_TOKEN_TTL_SECONDS = 60 * 60;
/** Verifiers accept a token a little past its `exp` (clock skew). */
const VERIFIER_LEEWAY_SECONDS = 5 * 60;

/**
 * How long a retired key must stay published: the longest lifetime of anything it signed — ID tokens,
 * and the JWT access tokens of every API — after the last moment a server may still sign with it
 * (a server that missed the rotation message learns of it at its next re-read).
 */
export function signingKeyRetentionSeconds(apis: { tokenFormat: string; ttl: number }[]): number {
  const longest = Math.max(ID_TOKEN_TTL_SECONDS, ...apis.filter((api) => api.tokenFormat === 'jwt').map((api) => api.ttl));
  return longest + KEYS_REREAD_SECONDS + VERIFIER_LEEWAY_SECONDS;
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

/** The published signing keys (current generation first), creating the first generation if there is none. */
export async function loadSigningKeys(store: Store, file?: string): Promise<StoredSigningKey[]> {
  if (file) {
    const set = JSON.parse(await readFile(file, 'utf8')) as { keys?: StoredSigningKey[] };
    if (!Array.isArray(set.keys) || set.keys.length === 0) throw new Error(`SIGNING_KEYS_FILE ${file} holds no "keys"`);
    if (!set.keys.some((k) => k.kty === 'RSA' && k.d)) throw new Error(`SIGNING_KEYS_FILE ${file} needs an RSA private key (RS256 is the OIDC default)`);
    return set.keys;
  }
  await store.set(keys.signingKeys, JSON.stringify(generateKeyGeneration()), { ifAbsent: true });
  return signingOrder(JSON.parse((await store.get(keys.signingKeys))!) as StoredSigningKey[]);
}

/** The current generation (newest `iat`) first, then retired keys, newest first: oidc-provider signs
 * with the first key of an algorithm, so only the current generation signs. */
export function signingOrder(stored: StoredSigningKey[]): StoredSigningKey[] {
  return [...stored].sort((a, b) => b.iat - a.iat);
}

/**
 * Adds a new generation of keys in front (it signs from now on, on every server within seconds);
 * marks the previous current generation retired until `retentionSeconds` from now, keeps retired keys
 * until their own date, and drops those whose date has passed. Announces the change.
 */
export async function rotateSigningKeys(store: Store, options: { retentionSeconds: number; now?: number }) {
  const now = options.now ?? Date.now();
  const nowSeconds = Math.floor(now / 1000);
  // Compare-and-set: two operators rotating at the same moment both land (one after the other), neither
  // drops the generation the other retired.
  for (let attempt = 0; ; attempt++) {
    const raw = await store.get(keys.signingKeys);
    const existing = JSON.parse(raw ?? '[]') as StoredSigningKey[];
    const newest = Math.max(0, ...existing.map((k) => k.iat));
    const fresh = generateKeyGeneration(Math.max(now, (newest + 1) * 1000));
    const retiredUntil = nowSeconds + options.retentionSeconds;
    const retired = existing.filter((k) => k.retiredUntil === undefined).map((k) => ({ ...k, retiredUntil }));
    const stillPublished = existing.filter((k) => k.retiredUntil !== undefined && k.retiredUntil > nowSeconds);
    const removed = existing.filter((k) => k.retiredUntil !== undefined && k.retiredUntil <= nowSeconds);
    const kept = signingOrder([...fresh, ...retired, ...stillPublished]);
    const written = raw === null ? await store.set(keys.signingKeys, JSON.stringify(kept), { ifAbsent: true }) : await store.replaceIf(keys.signingKeys, raw, JSON.stringify(kept));
    if (!written) {
      if (attempt >= 10) throw new Error('the signing keys kept changing during the rotation; try again');
      continue;
    }
    await store.publish(SIGNING_KEY_CHANGES, 'rotated');
    return { kept, current: fresh, retired, retiredUntil, removed };
  }
}

/**
 * Keeps a running server on the stored keys: `apply` gets them (newest generation first) after every
 * rotation message, after a dropped subscription (messages may have been lost) and every
 * KEYS_REREAD_SECONDS, whenever they differ from what it last got. Keys it cannot use are reported
 * to `onError` (a reason without key material) and the server keeps signing with its current ones.
 * Returns the function that stops.
 */
export async function followSigningKeys(
  store: Store,
  apply: (stored: StoredSigningKey[]) => void,
  onError: (reason: string) => void,
  rereadMs = KEYS_REREAD_SECONDS * 1000,
): Promise<() => Promise<void>> {
  let last: string | null = null;
  let reading = Promise.resolve();
  const reread = () => {
    reading = reading.then(async () => {
      let raw: string | null;
      try {
        raw = await store.get(keys.signingKeys);
      } catch {
        return; // Storage is down (logged once by the app): try again at the next message or re-read.
      }
      if (!raw || raw === last) return;
      last = raw;
      let stored: StoredSigningKey[];
      try {
        stored = JSON.parse(raw) as StoredSigningKey[];
      } catch {
        // Not the parser's message: it quotes the text, which holds private keys.
        return onError('the stored signing keys are not valid JSON');
      }
      try {
        apply(signingOrder(stored));
      } catch (err) {
        // oidc-provider's messages name a key's index and member, never its value.
        onError((err as Error).message);
      }
    });
  };
  const unsubscribe = await store.subscribe(SIGNING_KEY_CHANGES, reread, reread);
  // Once now: a rotation between the server's first read and the subscription is not missed.
  reread();
  await reading;
  const timer = setInterval(reread, rereadMs).unref();
  return async () => {
    clearInterval(timer);
    await unsubscribe();
    await reading;
  };
}

async function sharedSecret(store: Store, key: string, bytes: number): Promise<string> {
  await store.set(key, randomBytes(bytes).toString('base64url'), { ifAbsent: true });
  return (await store.get(key))!;
}

/**
 * COOKIE_KEYS, or one key generated at first start and kept in storage sealed under SECRETS_KEY (the key
 * name as AAD): a copy of storage alone signs no session cookie. A key an earlier version stored unsealed
 * is sealed in place by the first server to start (compare-and-set: the others read its seal); one sealed
 * under another SECRETS_KEY is replaced by a new key the same way (cookies signed before no longer verify).
 */
export async function loadCookieKeys(store: Store, box: SecretBox, fromEnv?: string[]): Promise<string[]> {
  if (fromEnv?.length) return fromEnv;
  await store.set(keys.cookieKeys, box.seal(randomBytes(32).toString('base64url'), keys.cookieKeys), { ifAbsent: true });
  for (let attempt = 0; attempt < 5; attempt += 1) {
    const stored = (await store.get(keys.cookieKeys))!;
    // A sealed value starts `v1.`; an unsealed key is base64url, which has no dot.
    if (stored.startsWith('v1.')) {
      try {
        return [box.open(stored, keys.cookieKeys)];
      } catch (err) {
        if (!(err instanceof SecretBoxError)) throw err;
        // Sealed under another SECRETS_KEY (a development database given one): a new key, people sign in again.
        await store.replaceIf(keys.cookieKeys, stored, box.seal(randomBytes(32).toString('base64url'), keys.cookieKeys));
        continue;
      }
    }
    if (await store.replaceIf(keys.cookieKeys, stored, box.seal(stored, keys.cookieKeys))) return [stored];
  }
  throw new Error('the stored cookie key kept changing while it was being sealed');
}

/** DPoP nonces must verify on every node, so the secret is shared through storage. */
export async function loadDpopNonceSecret(store: Store): Promise<Buffer> {
  return Buffer.from(await sharedSecret(store, keys.dpopNonceSecret, 32), 'base64url');
}
