import type Koa from 'koa';
import { createLocalJWKSet, jwtVerify, type JWK, type JWTPayload } from 'jose';
import { isProviderRequest } from '../observability/metrics.ts';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';
import type { StoredSigningKey } from './signing-keys.ts';

/**
 * JWT access tokens (`--token-format jwt`) are not stored by oidc-provider, which refuses them at
 * introspection and revocation (`unsupported_token_type`). Here they are verified against our own
 * signing keys (retired ones included, as long as they are published) and a revoked one is remembered
 * by a digest of its `jti` until it would have expired. Grants and sessions cannot reach them.
 */
export interface JwtAccessToken extends JWTPayload {
  client_id?: string;
  scope?: string;
  cnf?: { jkt?: string };
}

/** The public members of a signing key: never hand a private key to a verifier. */
const PUBLIC_MEMBERS = ['kty', 'crv', 'x', 'y', 'n', 'e', 'kid', 'alg', 'use'] as const;

export class JwtAccessTokens {
  readonly #store: Store;
  readonly #issuer: string;
  #keySet: ReturnType<typeof createLocalJWKSet>;

  constructor(store: Store, issuer: string, signingKeys: StoredSigningKey[]) {
    this.#store = store;
    this.#issuer = issuer;
    this.#keySet = this.#publicKeySet(signingKeys);
  }

  /** Follows `keys rotate` (the same key set the provider publishes). */
  useKeys(signingKeys: StoredSigningKey[]): void {
    this.#keySet = this.#publicKeySet(signingKeys);
  }

  #publicKeySet(signingKeys: StoredSigningKey[]) {
    const publicKeys = signingKeys.map((key) => Object.fromEntries(PUBLIC_MEMBERS.filter((m) => key[m as keyof StoredSigningKey] !== undefined).map((m) => [m, key[m as keyof StoredSigningKey]])) as JWK);
    return createLocalJWKSet({ keys: publicKeys });
  }

  /** The claims of a live JWT access token we signed; undefined for anything else (bad, expired, revoked). */
  async verify(token: string): Promise<JwtAccessToken | undefined> {
    let payload: JwtAccessToken;
    try {
      ({ payload } = await jwtVerify<JwtAccessToken>(token, this.#keySet, { issuer: this.#issuer, typ: 'at+jwt', requiredClaims: ['exp', 'jti'] }));
    } catch {
      return undefined;
    }
    if (typeof payload.jti !== 'string' || (await this.#store.get(keys.revokedJwt(payload.jti))) !== null) return undefined;
    return payload;
  }

  /** Remembers the token as revoked until it expires. */
  async revoke(token: JwtAccessToken): Promise<void> {
    const ttl = Math.max(1, Math.ceil(token.exp! - Date.now() / 1000));
    await this.#store.set(keys.revokedJwt(token.jti!), '1', { ttl });
  }
}

/** What introspection says of a live JWT access token: the same members as for an opaque one. */
function introspectionOf(token: JwtAccessToken) {
  const jkt = token.cnf?.jkt;
  return {
    active: true,
    client_id: token.client_id,
    exp: token.exp,
    iat: token.iat,
    iss: token.iss,
    sub: token.sub,
    aud: token.aud,
    jti: token.jti,
    scope: token.scope || undefined,
    token_type: jkt ? 'DPoP' : 'Bearer',
    ...(jkt ? { cnf: { jkt } } : {}),
  };
}

type Owner = (client: { clientId: string; [key: string]: unknown }, token: { clientId?: string; aud?: unknown }) => boolean;

/**
 * Answers introspection and revocation of JWT access tokens. oidc-provider authenticates the client
 * first and only then refuses a JWT with `unsupported_token_type`; that answer, with its authenticated
 * client, is replaced here, so every client authentication rule stays oidc-provider's.
 */
export function jwtIntrospectionAndRevocation(jwts: JwtAccessTokens, belongsTo: Owner, onRevoked: (ctx: KoaContextWithOIDC, token: JwtAccessToken) => void = () => {}) {
  return async function jwtAccessTokenEndpoints(koa: Koa.Context, next: Koa.Next) {
    await next();
    if (!isProviderRequest(koa)) return;
    const ctx = koa;
    const route = ctx.oidc?.route;
    if ((route !== 'introspection' && route !== 'revocation') || ctx.status !== 400) return;
    const client = ctx.oidc.entities.Client;
    const value = ctx.oidc.params?.token;
    if ((ctx.body as { error?: unknown })?.error !== 'unsupported_token_type' || !client || typeof value !== 'string') return;

    const token = await jwts.verify(value);
    // A token whose client was deleted is dead, although its signature still verifies until it expires.
    const clientLives = token !== undefined && (token.client_id === client.clientId || (await ctx.oidc.provider.Client.find(String(token.client_id))) !== undefined);
    const owned = token !== undefined && clientLives && belongsTo(client, { clientId: token.client_id, aud: token.aud });
    ctx.status = 200;
    if (route === 'introspection') {
      // Like an opaque token: anything not shown to this client is exactly {"active":false}.
      ctx.body = owned ? introspectionOf(token) : { active: false };
    } else {
      // RFC 7009 §2.2: 200 whether or not there was anything to revoke.
      if (owned) {
        await jwts.revoke(token);
        onRevoked(ctx, token);
      }
      ctx.body = {};
    }
  };
}
