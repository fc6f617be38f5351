import type Provider from 'oidc-provider';
import type { JWKS } from 'oidc-provider';
// @ts-expect-error oidc-provider's internals ship no types; test/live-signing-keys.test.ts guards this import.
import initializeKeystore from 'oidc-provider/lib/helpers/initialize_keystore.js';

/**
 * Swaps the keys a running provider signs with and publishes at /jwks. oidc-provider reads
 * `configuration.jwks` once, at construction, through this same initializer, which validates every
 * key and only then replaces `instance(provider).keystore` and `.jwks` (a bad key throws and leaves
 * the old set). ID tokens and JWT access tokens sign with the first key of their algorithm: list the
 * current keys first.
 */
export function replaceSigningKeys(provider: Provider, jwks: JWKS): void {
  (initializeKeystore as (this: Provider, jwks: JWKS) => void).call(provider, jwks);
}
