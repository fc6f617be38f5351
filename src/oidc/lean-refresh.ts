import { createPrivateKey, hash, randomBytes, sign, type KeyObject } from 'node:crypto';
import type Provider from 'oidc-provider';
import type { Adapter, AdapterPayload } from 'oidc-provider';
// @ts-expect-error oidc-provider's internals ship no types; test/lean-refresh.test.ts guards these imports (the corpus fails without them).
import als from 'oidc-provider/lib/helpers/als.js';
// @ts-expect-error as above
import { extraTokenClaims as validExtraTokenClaims, resourceServer as validResourceServer } from 'oidc-provider/lib/helpers/configuration_result.js';
// @ts-expect-error as above
import { issueIdToken } from 'oidc-provider/lib/helpers/grant_common.js';
// @ts-expect-error as above
import { buildTokenResponse } from 'oidc-provider/lib/helpers/grant_response.js';
// @ts-expect-error as above
import { findAccount } from 'oidc-provider/lib/helpers/grant_source.js';
// @ts-expect-error as above
import resolveResource from 'oidc-provider/lib/helpers/resolve_resource.js';
// @ts-expect-error as above
import instance from 'oidc-provider/lib/helpers/weak_cache.js';
import { grantTag } from '../storage/keys.ts';
import { RefreshRotation, refreshRotation } from '../storage/oidc-adapter.ts';
import { withReadAhead } from '../storage/read-ahead.ts';

/**
 * The refresh-token grant on the lean path (lean-path.ts): the common refresh — a confidential client
 * that authenticated as registered, `grant_type` and `refresh_token` only, a live unused bearer refresh
 * token of its own whose new access token is opaque — answered without Koa, by running oidc-provider's
 * own steps of its refresh handler (lib/actions/grants/refresh_token.js: its models, `findAccount`,
 * `resolveResource`, `createAccessToken`, `issueIdToken`, `buildTokenResponse`) in a small request
 * context, inside the same `RefreshRotation` as `refreshGraceWindow` (one store call consumes, saves and
 * indexes). Whatever is not that common refresh is undefined *before anything is written*, so the
 * request goes on to oidc-provider, which refuses, revokes on reuse and audits as always.
 */

/** What the lean path answers for a refresh: the response and who it was for (the token_issued line, "last used"). */
export interface LeanRefreshAnswer {
  body: Record<string, unknown>;
  clientId: string;
  accountId: string;
}

/** A refresh that lost the race to rotate its token (another request rotated it first): the grant is revoked, as for any reuse. */
export interface RefreshReused {
  clientId: string;
  accountId: string;
}

type Model = Record<string, unknown> & {
  jti: string;
  clientId: string;
  grantId: string;
  accountId: string;
  scope?: string;
  scopes: Set<string>;
  resource?: string | string[];
  gty?: string;
  rotations?: number;
  consumed?: unknown;
  isExpired: boolean;
  expiresWithSession?: boolean;
  expiration: number;
  tokenType: string;
  aud?: unknown;
  claims?: unknown;
  resourceServer?: unknown;
  consume(): Promise<void>;
  save(): Promise<string>;
};
type GrantModel = { clientId: string; accountId: string; isExpired: boolean; getResourceScopeFiltered(resource: string, scopes: string[]): string; getOIDCScopeFiltered(scopes: Set<string>): string };
type ModelClass = { new (fields: Record<string, unknown>): Model; find(id: string, options: { ignoreExpiration: boolean }): Promise<Model | undefined>; expiresIn(ctx: unknown, token: unknown, client: unknown): number };
type ResourceIndicators = { getResourceServerInfo(ctx: unknown, resource: string, client: unknown): Promise<unknown> };
type LeanClient = { clientId: string; [key: string]: unknown };

/** What oidc-provider's token route reads of a request context (ctx.oidc) on this grant's path. */
interface LeanContext {
  oidc: {
    provider: Provider;
    client: LeanClient;
    params: { grant_type: 'refresh_token'; refresh_token: string };
    entities: Record<string, unknown>;
    account?: unknown;
    entity(name: string, value: unknown): void;
  };
  state: Record<string, unknown>;
}

const GTY = 'refresh_token';

/**
 * The lean refresh for one provider: resolves the answer, or undefined (nothing written) for anything
 * that is not the common refresh. `onReused` is told when the rotation itself found the token used
 * (a parallel refresh won): the rotation revoked the grant, and the request goes on to oidc-provider.
 */
export function leanRefresh(provider: Provider, onReused: (reused: RefreshReused) => void) {
  // eslint-disable-next-line @typescript-eslint/no-unsafe-call -- an untyped internal (see its import above)
  const { configuration } = instance(provider) as { configuration: { rotateRefreshToken: unknown; extraTokenClaims(ctx: unknown, token: unknown): unknown; features: { userinfo: unknown; resourceIndicators: ResourceIndicators & { enabled: boolean } } } };
  const { RefreshToken, AccessToken, Grant, ResourceServer } = provider as unknown as { RefreshToken: ModelClass; AccessToken: ModelClass; Grant: { find(id: string, options: { ignoreExpiration: boolean }): Promise<GrantModel | undefined> }; ResourceServer: new (identifier: string, info: unknown) => { scopes: Set<string>; audience?: string } };
  const { userinfo, resourceIndicators } = configuration.features;
  // The adapters oidc-provider itself uses for these models (their format, keys, indexes and the deferred rotation).
  const refreshAdapter = (RefreshToken as unknown as { adapter: Adapter }).adapter;
  const accessAdapter = (AccessToken as unknown as { adapter: Adapter }).adapter;
  const idTokens = leanIdTokens(provider);

  /** The client-side conditions: registered to rotate, bearer tokens, no grace window (refreshGraceWindow's repeats are oidc-provider's). */
  const commonClient = (client: LeanClient) =>
    configuration.rotateRefreshToken === true && resourceIndicators.enabled
    && !client.tlsClientCertificateBoundAccessTokens && !client.dpopBoundAccessTokens
    && !(Number(client['refresh_grace_seconds'] ?? 0) > 0)
    && (client.subjectType ?? 'public') === 'public' && !client.idTokenEncryptedResponseAlg;

  return async function refresh(client: LeanClient, presented: string): Promise<LeanRefreshAnswer | undefined> {
    if (!commonClient(client)) return undefined;
    const ctx: LeanContext = {
      oidc: {
        provider,
        client,
        params: { grant_type: 'refresh_token', refresh_token: presented },
        entities: { Client: client },
        entity(name, value) {
          this.entities[name] = value;
          if (name === 'Account') this.account = value;
        },
      },
      state: {},
    };
    // Provider.ctx is this context for the adapter and oidc-provider's helpers (per-request reads, TTLs, extraTokenClaims).
    const rotation = new RefreshRotation(0);
    // Its own read-ahead scope (in front of Koa, no edge entry opens one): the grant and account go out together.
    return (als as { run<T>(store: unknown, fn: () => T): T }).run(ctx, () => withReadAhead(() => refreshRotation.run(rotation, () => rotate(ctx, client, presented))));
  };

  async function rotate(ctx: LeanContext, client: LeanClient, presented: string): Promise<LeanRefreshAnswer | undefined> {
    // refresh_token.js, in its order; each refusal it would make is left to it.
    const refreshToken = await RefreshToken.find(presented, { ignoreExpiration: true });
    if (!refreshToken || refreshToken.clientId !== client.clientId || refreshToken.isExpired) return undefined;
    // Sender-constrained (mTLS, DPoP, attestation) and rich-authorization tokens: oidc-provider's.
    if (refreshToken['x5t#S256'] || refreshToken.jkt || refreshToken.attestationJkt || refreshToken.rar !== undefined) return undefined;
    const grant = await Grant.find(refreshToken.grantId, { ignoreExpiration: true });
    if (!grant || grant.isExpired || grant.clientId !== client.clientId) return undefined;
    ctx.oidc.entity('RefreshToken', refreshToken);
    ctx.oidc.entity('Grant', grant);
    // A disabled or deleted account, or a mismatch: oidc-provider's refusal.
    // eslint-disable-next-line @typescript-eslint/no-unsafe-call -- an untyped internal (see its import above)
    const account = (await findAccount(provider, ctx, refreshToken.accountId, refreshToken)) as { accountId: string } | undefined;
    if (!account || refreshToken.accountId !== grant.accountId) return undefined;
    ctx.oidc.entity('Account', account);
    // Reuse: oidc-provider destroys the token, revokes the grant and says so (refresh_token_reuse_detected).
    if (refreshToken.consumed) return undefined;

    // The new access token's API, resolved before anything is consumed (as targetCheckedBeforeRotation does): a refusal or a JWT API is oidc-provider's.
    const scope = refreshToken.scopes;
    let resource: string | undefined;
    let resourceServer: { scopes: Set<string>; audience?: string } | undefined;
    try {
      // eslint-disable-next-line @typescript-eslint/no-unsafe-call -- an untyped internal (see its import above)
      resource = (await resolveResource(ctx, refreshToken, { userinfo, resourceIndicators }, scope)) as string | undefined;
      if (resource) {
        // eslint-disable-next-line @typescript-eslint/no-unsafe-call -- an untyped internal (see its import above)
        const info = validResourceServer(await resourceIndicators.getResourceServerInfo(ctx, resource, client)) as { accessTokenFormat?: string };
        if ((info.accessTokenFormat ?? 'opaque') !== 'opaque') return undefined;
        resourceServer = new ResourceServer(resource, info);
      }
    } catch {
      return undefined;
    }

    // From here on as refresh_token.js: rotate (deferred by the adapter into one store call), then the access token.
    // The records are written as its models would write them (BaseToken#save: opaque.js getValueAndPayload, the
    // members in the model's order, none undefined), through the same adapter, without building the models.
    await refreshAdapter.consume(refreshToken.jti);
    ctx.oidc.entity('RotatedRefreshToken', refreshToken);
    const gty = refreshToken.gty && !refreshToken.gty.endsWith(GTY) ? `${refreshToken.gty} ${GTY}` : refreshToken.gty;
    const next: Record<string, unknown> = {
      accountId: refreshToken.accountId,
      acr: refreshToken.acr,
      amr: refreshToken.amr,
      authTime: refreshToken.authTime,
      claims: refreshToken.claims,
      expiresWithSession: refreshToken.expiresWithSession,
      iiat: refreshToken.iiat || epochTime(),
      grantId: refreshToken.grantId,
      gty,
      nonce: refreshToken.nonce,
      resource: refreshToken.resource,
      rotations: typeof refreshToken.rotations === 'number' ? refreshToken.rotations + 1 : 1,
      scope: refreshToken.scope,
      sessionUid: refreshToken.sessionUid,
      sid: refreshToken.sid,
      kind: 'RefreshToken',
      clientId: client.clientId,
    };
    // What the adapter and the configuration read of the request's new refresh token (extraTokenClaims: its acr).
    ctx.oidc.entity('RefreshToken', next);
    // The models' own TTLs (configuration.ttl), validated as they validate them.
    const refreshTtl = RefreshToken.expiresIn(ctx, next, client);
    // tagTokenIdsWithGrant (provider-internals.ts): every id of the grant starts with its tag.
    const tag = grantTag(refreshToken.grantId);
    const refreshTokenValue = `${tag}${opaqueId()}`;
    await refreshAdapter.upsert(refreshTokenValue, stamped({ ...next, jti: refreshTokenValue }, refreshTtl), refreshTtl);

    const at: Record<string, unknown> = {
      accountId: account.accountId,
      expiresWithSession: next.expiresWithSession,
      grantId: next.grantId,
      gty,
      sessionUid: next.sessionUid,
      sid: next.sid,
      kind: 'AccessToken',
      clientId: client.clientId,
    };
    let atScope: string;
    if (resource && resourceServer) {
      at.aud = resourceServer.audience;
      atScope = grant.getResourceScopeFiltered(resource, [...scope].filter(Set.prototype.has.bind(resourceServer.scopes)));
    } else {
      at.claims = next.claims;
      atScope = grant.getOIDCScopeFiltered(scope);
    }
    at.scope = atScope;
    ctx.oidc.entity('AccessToken', at);
    const accessTtl = AccessToken.expiresIn(ctx, { resourceServer }, client);
    const accessToken = `${tag}${opaqueId()}`;
    const atPayload = stamped({ ...at, jti: accessToken }, accessTtl);
    // opaque.js: an access token's extra claims, the last member.
    // eslint-disable-next-line @typescript-eslint/no-unsafe-call -- an untyped internal (see its import above)
    const extra = validExtraTokenClaims(await configuration.extraTokenClaims(ctx, { ...at, jti: accessToken, resourceServer })) as Record<string, unknown> | undefined;
    if (extra !== undefined) atPayload.extra = extra;
    // The ID token first (it names neither new token): once the rotation below is written, nothing is left that can fail.
    const source = { claims: next.claims, acr: next.acr, amr: next.amr, authTime: next.authTime, nonce: next.nonce, sid: next.sid, scope: next.scope, scopes: scope };
    const idToken = await idTokens.issue(ctx, client, account as IdTokenAccount, source, grant as unknown as IdTokenGrant, scope, at);
    try {
      // The access token's save sends the deferred consume and the new refresh token with it (RefreshRotation).
      await accessAdapter.upsert(accessToken, atPayload, accessTtl);
    } catch (err) {
      // Another request rotated this token first: the script revoked the grant (reuse); oidc-provider answers the retry.
      if ((err as { error?: unknown }).error === 'invalid_grant') {
        onReused({ clientId: client.clientId, accountId: account.accountId });
        return undefined;
      }
      throw err;
    }
    // eslint-disable-next-line @typescript-eslint/no-unsafe-call -- an untyped internal (see its import above)
    const body = buildTokenResponse(provider, {
      accessToken,
      authorizationDetails: undefined,
      expiresIn: accessTtl,
      idToken,
      refreshToken: refreshTokenValue,
      scope: next.scope ? atScope : (atScope || undefined),
      tokenType: 'Bearer',
    }) as Record<string, unknown>;
    return { body, clientId: client.clientId, accountId: grant.accountId };
  }
}

/** Seconds since the epoch, as oidc-provider stamps its records. */
export const epochTime = () => Math.floor(Date.now() / 1000);

/** A record as opaque.js getValueAndPayload makes it of a model's members: `iat` and `exp` first, then the members that are defined, in order. */
function stamped(members: Record<string, unknown>, ttl: number): AdapterPayload {
  const iat = epochTime();
  const payload: AdapterPayload = { iat, exp: iat + ttl };
  for (const key in members) if (members[key] !== undefined) payload[key] = members[key];
  return payload;
}

/** Random bytes drawn from the system in batches (one call per 256 ids instead of one per token), each byte handed out once. */
const RANDOM_BATCH = 32 * 256;
let randomPool = Buffer.alloc(0);
let randomOffset = RANDOM_BATCH;

/** A new opaque token id: 256 random bits in base64url, as oidc-provider makes them (its `bitsOfOpaqueRandomness`). */
export function opaqueId(): string {
  if (randomOffset + 32 > randomPool.length) {
    randomPool = randomBytes(RANDOM_BATCH);
    randomOffset = 0;
  }
  const id = randomPool.toString('base64url', randomOffset, randomOffset + 32);
  randomPool.fill(0, randomOffset, randomOffset + 32);
  randomOffset += 32;
  return id;
}

/** What an ID token is made of on a refresh: its source (the new refresh token's members) and the grant. */
export interface IdTokenSource {
  claims?: unknown;
  acr?: unknown;
  amr?: unknown;
  authTime?: unknown;
  nonce?: unknown;
  sid?: unknown;
  scope?: unknown;
  scopes: Set<string>;
}
type IdTokenGrant = { getOIDCScopeFiltered(scopes: Set<string>): string; getRejectedOIDCClaims(): string[] };
type IdTokenAccount = { accountId: string; claims(use: string, scope: string, claims: object, rejected: string[]): Promise<Record<string, unknown>> | Record<string, unknown> };
type SigningKey = { kid: string | undefined; key: KeyObject };

/** id_token.js: the half-hashes a payload may carry (none on a refresh; kept as it does, should a claim bring one). */
const HASHED = ['at_hash', 'c_hash', 's_hash'];

/**
 * The refresh's ID token as oidc-provider issues it (grant_common.js issueIdToken, id_token.js, jwt.js sign):
 * the same claims in the same order, the same header, signed with the same key — for its common shape (an
 * RS256 client, no encryption, a public subject, no claims requested or rejected, a TTL that is a number); any
 * other goes to oidc-provider's own. Made without its Claims, IdToken and jose's WebCrypto (crypto.sign on the
 * thread pool, as WebCrypto is): a third of the main thread's time per token. The claims a scope reveals are
 * asked of oidc-provider's Claims once per scope. test/lean-refresh.test.ts compares the two, byte for byte.
 */
export function leanIdTokens(provider: Provider) {
  // eslint-disable-next-line @typescript-eslint/no-unsafe-call -- an untyped internal (see its import above)
  const internals = () => instance(provider) as { configuration: { conformIdTokenClaims: boolean; claimsSupported: Set<string>; ttl: { IdToken?: unknown }; features: { userinfo: { enabled: boolean } } }; keystore: { selectForSign(o: { alg: string; use: string }): Record<string, unknown>[] } };
  const { Claims } = provider as unknown as { Claims: new (available: object, options: { client: unknown }) => { scope(s: string): void; mask(m: object): void; rejected(r: string[]): void; result(): Promise<Record<string, unknown>> } };
  /** By scope: the claims it reveals, in the order oidc-provider's Claims#result picks them. */
  const revealed = new Map<string, Promise<string[]>>();
  /** By keystore (a rotation makes a new one): its RS256 signing key, or null for none usable here. */
  const keys = new WeakMap<object, SigningKey | null>();

  const claimsOf = (scope: string, client: unknown) => {
    let known = revealed.get(scope);
    if (!known) {
      const probe = Object.fromEntries([...internals().configuration.claimsSupported].map((claim) => [claim, claim]));
      const mask = new Claims(probe, { client });
      mask.scope(scope);
      mask.mask({});
      mask.rejected([]);
      known = mask.result().then((picked) => Object.keys(picked));
      // A failure is this request's, not the scope's: the next one asks again.
      known.catch(() => revealed.delete(scope));
      if (revealed.size >= 1000) revealed.clear();
      revealed.set(scope, known);
    }
    return known;
  };

  const signingKey = (): SigningKey | null => {
    const { keystore } = internals();
    let known = keys.get(keystore);
    if (known === undefined) {
      const [jwk] = keystore.selectForSign({ alg: 'RS256', use: 'sig' });
      // A key held outside (ExternalSigningKey) or without its private part: oidc-provider's to use.
      known = jwk && Object.getPrototypeOf(jwk) === Object.prototype && typeof jwk.d === 'string'
        ? { kid: jwk.kid as string | undefined, key: createPrivateKey({ key: jwk, format: 'jwk' }) }
        : null;
      keys.set(keystore, known);
    }
    return known;
  };

  /** The common shape, or undefined. */
  const common = (client: { [key: string]: unknown }, source: IdTokenSource, grant: IdTokenGrant) => {
    const { configuration } = internals();
    const ttl = configuration.ttl.IdToken;
    const idTokenClaims = (source.claims as { id_token?: object } | undefined)?.id_token;
    if (client.idTokenSignedResponseAlg !== 'RS256' || client.idTokenEncryptedResponseAlg || client.idTokenEncryptedResponseEnc) return undefined;
    if ((client.subjectType ?? 'public') !== 'public' || typeof ttl !== 'number' || !Number.isSafeInteger(ttl) || ttl <= 0) return undefined;
    if ((source.claims !== undefined && (typeof source.claims !== 'object' || source.claims === null)) || (idTokenClaims !== undefined && (typeof idTokenClaims !== 'object' || idTokenClaims === null || Object.keys(idTokenClaims).length))) return undefined;
    if (grant.getRejectedOIDCClaims().length) return undefined;
    const key = signingKey();
    return key ? { key, ttl, conform: configuration.conformIdTokenClaims && configuration.features.userinfo.enabled } : undefined;
  };

  return {
    /** Whether `issue` signs this ID token itself (its common shape) rather than asking oidc-provider's: what the byte-for-byte test checks it compares. */
    signsItself: (client: { [key: string]: unknown }, source: IdTokenSource, grant: IdTokenGrant) => common(client, source, grant) !== undefined,
    /** The ID token of a refresh (none without `openid`): `at` is the access token's members (its `aud`). */
    async issue(ctx: unknown, client: { clientId: string; [key: string]: unknown }, account: IdTokenAccount, source: IdTokenSource, grant: IdTokenGrant, scopes: Set<string>, at: { aud?: unknown }): Promise<string | undefined> {
      if (!scopes.has('openid')) return undefined;
      const shape = common(client, source, grant);
      // eslint-disable-next-line @typescript-eslint/no-unsafe-call -- an untyped internal (see its import above)
      if (!shape) return (await issueIdToken(provider, ctx, source, at, grant, scopes)) as string | undefined;
      const scope = shape.conform && !at.aud ? 'openid' : grant.getOIDCScopeFiltered(scopes);
      const [revealedClaims, accountClaims] = await Promise.all([claimsOf(scope, client), account.claims('id_token', [...scopes].join(' '), {}, [])]);
      // IdToken's available claims: the account's, its id as `sub`, then the token's acr, amr and auth_time.
      const available: Record<string, unknown> = { ...accountClaims, sub: account.accountId, acr: source.acr, amr: source.amr, auth_time: source.authTime };
      const payload: Record<string, unknown> = {};
      for (const claim of revealedClaims) if (Object.hasOwn(available, claim) && available[claim] !== undefined) payload[claim] = available[claim];
      if (source.nonce !== undefined) payload.nonce = source.nonce;
      if (source.sid !== undefined) payload.sid = source.sid;
      const now = epochTime();
      Object.assign(payload, { aud: client.clientId, exp: now + shape.ttl, iat: payload.iat !== undefined ? payload.iat : now, iss: provider.issuer, sub: payload.sub });
      for (const claim of HASHED) {
        if (payload[claim]) payload[claim] = hash('sha256', payload[claim] as string, 'buffer').subarray(0, 16).toString('base64url');
      }
      const input = `${Buffer.from(JSON.stringify({ alg: 'RS256', kid: shape.key.kid })).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
      const signature = await new Promise<Buffer>((resolve, reject) => sign('sha256', Buffer.from(input), shape.key.key, (err, signed) => (err ? reject(err) : resolve(signed))));
      return `${input}.${signature.toString('base64url')}`;
    },
  };
}
