import { hash } from 'node:crypto';
import { calculateJwkThumbprint, EmbeddedJWK, jwtVerify } from 'jose';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';

/**
 * DPoP proofs (RFC 9449 §4.3, §7.1) at resources Latchkey serves itself outside oidc-provider's routes
 * (the admin API): oidc-provider's own check needs its request context (`ctx.oidc`), which our routes
 * have not. The same rules as its userinfo: the proof is signed by the key the token is bound to, names
 * this request's method and URL (without query), is recent, carries the token's hash and is used once.
 */

/** oidc-provider's `dPoPSigningAlgValues` (discovery's `dpop_signing_alg_values_supported`). */
export const DPOP_ALGS = ['ES256', 'Ed25519', 'EdDSA'];
/** How far a proof's `iat` may be from now (oidc-provider's window, without a nonce). */
const IAT_WINDOW_SECONDS = 300;

export class DpopProofError extends Error {}

export interface ProofCheck {
  /** The `DPoP` request header. */
  proof: string;
  method: string;
  /** This request's URL without query or fragment. */
  url: string;
  accessToken: string;
  /** The token's `cnf.jkt`: the thumbprint of the key it is bound to. */
  jkt: string;
  store: Store;
  now?: number;
}

/** Resolves when the proof is good for this request and was not seen before; rejects with DpopProofError otherwise. */
export async function verifyDpopProof(check: ProofCheck): Promise<void> {
  let payload: Record<string, unknown>;
  let jwk: Record<string, unknown>;
  try {
    const verified = await jwtVerify(check.proof, EmbeddedJWK, { typ: 'dpop+jwt', algorithms: DPOP_ALGS });
    payload = verified.payload;
    jwk = verified.protectedHeader.jwk as Record<string, unknown>;
  } catch {
    throw new DpopProofError('the DPoP proof is not a valid dpop+jwt signed by its embedded key');
  }
  const now = Math.floor((check.now ?? Date.now()) / 1000);
  const { iat, jti, htm, htu, ath } = payload;
  if (typeof iat !== 'number' || !Number.isFinite(iat) || Math.abs(now - iat) > IAT_WINDOW_SECONDS) throw new DpopProofError('the DPoP proof is not recent (iat)');
  if (typeof jti !== 'string' || !jti || jti.length > 256) throw new DpopProofError('the DPoP proof has no jti');
  if (htm !== check.method) throw new DpopProofError('the DPoP proof is for another method (htm)');
  const proofUrl = typeof htu === 'string' ? URL.parse(htu) : null;
  if (proofUrl) {
    proofUrl.search = '';
    proofUrl.hash = '';
  }
  if (!proofUrl || proofUrl.href !== new URL(check.url).href) throw new DpopProofError('the DPoP proof is for another URL (htu)');
  if (ath !== hash('sha256', check.accessToken, 'base64url')) throw new DpopProofError('the DPoP proof is for another access token (ath)');
  if ((await calculateJwkThumbprint(jwk)) !== check.jkt) throw new DpopProofError('the DPoP proof is signed by another key than the token is bound to');
  // Used once: remembered (by a digest) until its iat leaves the window, after which the iat check refuses it anyway.
  const ttl = Math.max(1, Math.ceil(iat + IAT_WINDOW_SECONDS - now) + 1);
  if (!(await check.store.set(keys.dpopProof(check.jkt, jti), '1', { ttl, ifAbsent: true }))) throw new DpopProofError('the DPoP proof was used before (jti)');
}
