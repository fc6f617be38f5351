import type Provider from 'oidc-provider';
// @ts-expect-error oidc-provider's internals ship no types; test/lean-refresh.test.ts guards these imports (the corpus fails without them).
import als from 'oidc-provider/lib/helpers/als.js';
// @ts-expect-error as above
import { resourceServer as validResourceServer } from 'oidc-provider/lib/helpers/configuration_result.js';
// @ts-expect-error as above
import { createAccessToken, issueIdToken } from 'oidc-provider/lib/helpers/grant_common.js';
// @ts-expect-error as above
import { buildTokenResponse } from 'oidc-provider/lib/helpers/grant_response.js';
// @ts-expect-error as above
import { findAccount } from 'oidc-provider/lib/helpers/grant_source.js';
// @ts-expect-error as above
import resolveResource from 'oidc-provider/lib/helpers/resolve_resource.js';
// @ts-expect-error as above
import instance from 'oidc-provider/lib/helpers/weak_cache.js';
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
type ModelClass = { new (fields: Record<string, unknown>): Model; find(id: string, options: { ignoreExpiration: boolean }): Promise<Model | undefined> };
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
  const { configuration } = instance(provider) as { configuration: { rotateRefreshToken: unknown; features: { userinfo: unknown; resourceIndicators: ResourceIndicators & { enabled: boolean } } } };
  const { RefreshToken, Grant, ResourceServer } = provider as unknown as { RefreshToken: ModelClass; Grant: { find(id: string, options: { ignoreExpiration: boolean }): Promise<GrantModel | undefined> }; ResourceServer: new (identifier: string, info: unknown) => { scopes: Set<string> } };
  const { userinfo, resourceIndicators } = configuration.features;

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
    let resourceServer: { scopes: Set<string> } | undefined;
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
    await refreshToken.consume();
    ctx.oidc.entity('RotatedRefreshToken', refreshToken);
    const next = new RefreshToken({
      accountId: refreshToken.accountId,
      acr: refreshToken.acr,
      amr: refreshToken.amr,
      authTime: refreshToken.authTime,
      claims: refreshToken.claims,
      client,
      expiresWithSession: refreshToken.expiresWithSession,
      iiat: refreshToken.iiat,
      grantId: refreshToken.grantId,
      gty: refreshToken.gty,
      nonce: refreshToken.nonce,
      resource: refreshToken.resource,
      rotations: typeof refreshToken.rotations === 'number' ? refreshToken.rotations + 1 : 1,
      scope: refreshToken.scope,
      sessionUid: refreshToken.sessionUid,
      sid: refreshToken.sid,
      rar: refreshToken.rar,
      'x5t#S256': refreshToken['x5t#S256'],
      jkt: refreshToken.jkt,
      attestationJkt: refreshToken.attestationJkt,
    });
    if (next.gty && !next.gty.endsWith(GTY)) next.gty = `${next.gty} ${GTY}`;
    ctx.oidc.entity('RefreshToken', next);
    const refreshTokenValue = await next.save();

    // eslint-disable-next-line @typescript-eslint/no-unsafe-call -- an untyped internal (see its import above)
    const at = createAccessToken(provider, ctx, {
      accountId: account.accountId,
      expiresWithSession: next.expiresWithSession,
      grantId: next.grantId,
      sessionUid: next.sessionUid,
      sid: next.sid,
    }, next.gty) as Model;
    if (at.gty && !at.gty.endsWith(GTY)) at.gty = `${at.gty} ${GTY}`;
    if (resource && resourceServer) {
      at.resourceServer = resourceServer;
      at.scope = grant.getResourceScopeFiltered(resource, [...scope].filter(Set.prototype.has.bind(resourceServer.scopes)));
    } else {
      at.claims = next.claims;
      at.scope = grant.getOIDCScopeFiltered(scope);
    }
    ctx.oidc.entity('AccessToken', at);
    // The ID token first (it names neither new token): once the rotation below is written, nothing is left that can fail.
    // eslint-disable-next-line @typescript-eslint/no-unsafe-call -- an untyped internal (see its import above)
    const idToken = (await issueIdToken(provider, ctx, next, at, grant, scope)) as string | undefined;
    let accessToken: string;
    try {
      // The access token's save sends the deferred consume and the new refresh token with it (RefreshRotation).
      accessToken = await at.save();
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
      authorizationDetails: at.rar,
      expiresIn: at.expiration,
      idToken,
      refreshToken: refreshTokenValue,
      scope: next.scope ? at.scope : (at.scope || undefined),
      tokenType: at.tokenType,
    }) as Record<string, unknown>;
    return { body, clientId: client.clientId, accountId: grant.accountId };
  }
}
