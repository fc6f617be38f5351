import type Koa from 'koa';
import Provider, { errors, interactionPolicy, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import { providerRouteOf } from '../observability/metrics.ts';
import { isEmailVerified, type Accounts } from '../accounts/accounts.ts';
import { browserOf, type SessionDevice } from '../accounts/sessions.ts';
import type { Config } from '../config.ts';
import { appAskedForConsent, consentWithoutAsking, type ConsentGranted } from '../signin/consent.ts';
import { ACR_MFA, ACR_UPSTREAM, ACR_VALUES, mfaDemanded, type MfaPolicy } from '../signin/policy.ts';
import { CookieKeys } from '../security/cookie-keys.ts';
import { limitInactiveIntrospections, type IntrospectionThrottled } from '../security/introspection-limit.ts';
import type { Lockout } from '../security/lockout.ts';
import type { SecretBox } from '../security/secret-box.ts';
import { createAdapterClass, sessionIdpOfRequest } from '../storage/oidc-adapter.ts';
import type { Store } from '../storage/store.ts';
import { withWriteId, writtenInteractions } from '../storage/written-interactions.ts';
import { WayBack, appHomeOf, restartOf } from '../signin/way-back.ts';
import { keys } from '../storage/keys.ts';
import type { Views } from '../views.ts';
import { discoveryListsApiScopes, revocationAnswersJson } from './client-facing-answers.ts';
import { clearerErrors, missingClientAuthIsInvalidClient } from './provider-wording.ts';
import { JwtAccessTokens, jwtIntrospectionAndRevocation } from './jwt-access-tokens.ts';
import { DEVICE_CODE_TTL_SECONDS, deviceFlowFeature, type DeviceFlowDeps } from './device-flow.ts';
import { bendProviderInternals, type InternalsDeps } from './provider-internals.ts';
import { adminApiUri, OIDC_SCOPES, type Registry } from './registry.ts';
import { replaceSigningKeys } from './provider-internals.ts';
import { followSigningKeys, ID_TOKEN_TTL_SECONDS, loadCookieKeys, loadDpopNonceSecret, loadSigningKeys, type StoredSigningKey } from './signing-keys.ts';

/**
 * The one module that owns oidc-provider's configuration. Every departure from a default says why.
 */
export interface ProviderDeps {
  config: Config;
  store: Store;
  accounts: Accounts;
  registry: Registry;
  views: Views;
  /** Failed client authentication at the token, introspection, revocation and PAR endpoints. */
  clientLockout: Lockout;
  /** Told when stored signing keys could not be read or used (the server keeps its current ones). */
  onSigningKeysError?: (reason: string) => void;
  /** The account page's own client (interactions/account-page.ts): its grants need not outlive the sign-in. */
  accountPageClientId?: string;
  /** Seals what must be stored but not read from a copy of Redis (a refresh's response in its grace window). */
  box: SecretBox;
  /** The clock of refresh-token grace windows (ms); tests inject one to pass a window without waiting. */
  clock?: () => number;
  /** The device authorization grant's pages and guessing lockout (device-flow.ts). */
  deviceFlow: Omit<DeviceFlowDeps, 'store' | 'views'>;
  /** The admin console's own client (admin/console.ts): the same short grants as the account page's. */
  consoleClientId?: string;
  /** A grant made without the consent page: a first-party client, or consent remembered (the audit event). */
  onConsentGranted?: (event: ConsentGranted) => void;
  /** A JWT access token revoked at the revocation endpoint (opaque ones are oidc-provider's events). */
  onJwtRevoked?: (event: JwtRevoked) => void;
  /** An API credential's first introspection of the minute refused for too many inactive answers. */
  onIntrospectionThrottled?: (event: IntrospectionThrottled) => void;
}

export interface JwtRevoked {
  requestId?: string;
  clientId: string;
  tokenClientId?: string;
  accountId?: string;
  tokenKind: 'access_token' | 'client_credentials';
}

const MINUTE = 60;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

const ACCOUNT_PAGE_GRANT_TTL = 2 * MINUTE;

type ResourceAware = { resourceServer?: { accessTokenTTL?: number } };

/** The private keys' JWK members only; `iat` and `retiredUntil` are our bookkeeping. */
function jwksOf(stored: StoredSigningKey[]) {
  return { keys: stored.map(({ iat: _iat, retiredUntil: _retiredUntil, ...jwk }) => jwk) as never };
}

export async function createProvider({ config, store, accounts, registry, views, clientLockout, accountPageClientId, consoleClientId, box, clock, deviceFlow, onSigningKeysError = () => {}, onConsentGranted = () => {}, onJwtRevoked = () => {}, onIntrospectionThrottled = () => {} }: ProviderDeps) {
  const wayBack = new WayBack(store);
  const [signingKeys, cookieKeys, dpopNonceSecret] = await Promise.all([
    loadSigningKeys(store, config.SIGNING_KEYS_FILE),
    loadCookieKeys(store, box, config.COOKIE_KEYS),
    loadDpopNonceSecret(store),
  ]);

  const jwtAccessTokens = new JwtAccessTokens(store, config.ISSUER, signingKeys);

  /** The API a token is for, and the scopes this client may get for it. */
  const getResourceServerInfo: InternalsDeps['getResourceServerInfo'] = async (ctx, resourceIndicator, client) => {
    await refuseUnregisteredScopes(ctx, client, registry);
    const resource = await registry.findResource(resourceIndicator);
    if (!resource) throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
    // A client may only get the API scopes it was registered with.
    const allowed = new Set(String(client.scope ?? '').split(' '));
    const scope = resource.scopes.filter((s) => allowed.has(s));
    if (scope.length === 0) throw new errors.InvalidTarget('this client may not request tokens for that resource');
    return {
      scope: scope.join(' '),
      audience: resource.uri,
      accessTokenTTL: resource.ttl,
      accessTokenFormat: resource.tokenFormat,
      // ES256: much faster to sign than RS256, and supported by every JOSE library.
      ...(resource.tokenFormat === 'jwt' ? { jwt: { sign: { alg: 'ES256' } } } : {}),
    };
  };

  const configuration: Configuration = {
    adapter: createAdapterClass(store, { find: async (id) => providerClientMetadata(await registry.findClient(id)) }, clock, signInDevice, sessionUpstreamOf(store), (clientId) => clientId !== accountPageClientId && clientId !== consoleClientId),
    jwks: jwksOf(signingKeys),
    cookies: {
      // keygrip-compatible signatures, computed with keys prepared once (see CookieKeys).
      keys: new CookieKeys(cookieKeys) as never,
      long: { httpOnly: true, sameSite: 'lax' },
      short: { httpOnly: true, sameSite: 'lax' },
    },

    async findAccount(ctx, sub, token) {
      // The sign-in finishing in this request read and checked the account a moment ago (its last factor);
      // nothing is issued here that the token endpoint, which reads it again, would not refuse.
      const login = ctx?.oidc?.route === 'resume' ? (ctx.oidc.result?.login as { accountId?: unknown } | undefined) : undefined;
      // A code's redemption or a refresh read the account ahead, with the grant (storage/oidc-adapter.ts, readGrantAndAccountAhead).
      let account = login?.accountId === sub ? undefined : await accounts.find(sub);
      if (login?.accountId !== sub && (!account || account.disabled)) return undefined;
      return {
        accountId: sub,
        async claims() {
          account ??= await accounts.find(sub);
          if (!account) return { sub };
          // `idp`: the upstream provider this session signed in through (upstream/session-idp.ts), by the token's session.
          // Tokens carry it (storage/oidc-adapter.ts); Redis is read only for tokens of an earlier version.
          const sessionUid = (token as { sessionUid?: string } | undefined)?.sessionUid ?? ctx?.oidc?.session?.uid;
          // A sign-in with a password (the code's `amr`) went through no upstream: nothing to read.
          const withPassword = (token as { amr?: string[] } | undefined)?.amr?.includes('pwd') === true;
          const idp = sessionUid && !withPassword ? (sessionIdpOfRequest(sessionUid) ?? (await store.get(keys.sessionUpstream(sessionUid)))) : null;
          // True once the person followed a link sent to the address (or for accounts from before that existed).
          return { sub: account.id, email: account.email, email_verified: isEmailVerified(account), ...(account.name ? { name: account.name } : {}), ...(idp ? { idp } : {}) };
        },
      };
    },
    scopes: [...OIDC_SCOPES],
    claims: {
      // acr and amr (RFC 8176) in every ID token: oidc-provider adds them only when requested or listed here.
      openid: ['sub', 'acr', 'amr', 'idp'],
      profile: ['name'],
      email: ['email', 'email_verified'],
    },
    // The ID token carries the granted profile and email claims, so an app whose access token is
    // for an API (and so cannot be used at userinfo) still learns who signed in.
    conformIdTokenClaims: false,

    // OIDC Core §3.1.2.1 requires redirect_uri; default: the sole registered one when it is left out.
    allowOmittingSingleRegisteredRedirectUri: false,
    // Authorization code only (no implicit or hybrid): OAuth 2.0 Security BCP (RFC 9700).
    responseTypes: ['code'],
    // PKCE S256 for every client, confidential ones too (RFC 9700 §2.1.1); default: public only.
    pkce: { required: pkceRequired },
    // Secrets are stored digested, so client_secret_jwt (which needs the plain secret as HMAC key) is off.
    clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'none'],
    enabledJWA: {
      idTokenSigningAlgValues: ['RS256', 'ES256', 'EdDSA'],
      userinfoSigningAlgValues: ['RS256', 'ES256', 'EdDSA'],
      introspectionSigningAlgValues: ['RS256', 'ES256', 'EdDSA'],
      authorizationSigningAlgValues: ['RS256', 'ES256', 'EdDSA'],
    },
    extraClientMetadata: { properties: CLIENT_PROPERTIES },
    // Not listed by oidc-provider; libraries read them to pick how to authenticate (same as at /token).
    discovery: {
      introspection_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'none'],
      revocation_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'none'],
    },
    // urn:latchkey:mfa: password and second factor; urn:latchkey:pwd: password only (signin/policy.ts).
    acrValues: ACR_VALUES,
    // `upstream=<id>`: the sign-in page offers that upstream provider even when it is shown only by hint.
    extraParams: ['upstream'],

    features: {
      // Default on, and it accepts any password.
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // Default lets any confidential client introspect any token.
        async allowedPolicy(_ctx, client, token) {
          return tokenBelongsTo(client, token);
        },
      },
      revocation: {
        enabled: true,
        // A client revokes its own tokens; an API those issued for it. Anything else answers 200
        // and changes nothing (RFC 7009 §2.2), so the answer does not reveal that the token exists.
        async allowedPolicy(_ctx, client, token) {
          return tokenBelongsTo(client, token);
        },
      },
      userinfo: { enabled: true },
      // Apps with a `backchannel_logout_uri` learn of every sign-out; delivery is queued, off the request
      // path (queuedBackchannelLogout, oidc/backchannel-logout.ts). It also puts `sid` in their ID tokens.
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          const client = ctx.oidc.client;
          views.render(ctx, 'logout', { form, clientName: client?.clientName, title: 'Sign out' }, formTargets(ctx.oidc.params?.post_logout_redirect_uri));
        },
        async postLogoutSuccessSource(ctx) {
          // The app is known (client_id or id_token_hint): a way back to it, to sign in again.
          const client = ctx.oidc.client;
          const signInAgain = client ? appHomeOf(client, client.redirectUris?.[0], config.ISSUER) : undefined;
          views.render(ctx, 'logged-out', { clientName: client?.clientName ?? client?.clientId, signInAgain, title: 'Signed out' });
        },
      },
      resourceIndicators: {
        enabled: true,
        // Without `resource`, a request whose scopes belong to exactly one API gets a token for that
        // API, so ordinary clients need not know RFC 8707. Otherwise: a token for userinfo.
        async defaultResource(ctx, client, oneOf) {
          await refuseUnregisteredScopes(ctx, client, registry);
          if (oneOf) return oneOf;
          if (ctx.oidc.params?.grant_type === 'client_credentials') return machineClientResource(ctx, client, registry);
          const scope = ctx.oidc.params?.scope;
          const requested = (typeof scope === 'string' ? scope : '').split(' ').filter((s) => s && !OIDC_SCOPES.has(s));
          const owners = new Set<string>();
          for (const scope of requested) {
            const owner = await registry.resourceForScope(scope);
            if (owner) owners.add(owner);
          }
          return owners.size === 1 ? [...owners][0]! : undefined;
        },
        getResourceServerInfo,
        // At the token endpoint, the resource granted at authorization applies without repeating it.
        async useGrantedResource() {
          return true;
        },
      },
      // DPoP (RFC 9449) stays on; the nonce secret is shared through storage so every node agrees.
      dPoP: { enabled: true, nonceSecret: dpopNonceSecret },
      // RFC 8628: POST /device/auth, the code entry at /device (device-flow.ts).
      deviceFlow: deviceFlowFeature({ ...deviceFlow, store, views }),
    },

    // A person's admin API token carries the acr of the sign-in it came from: the admin API, like the
    // console, admits only a sign-in with a second factor (admin/api.ts). Other tokens: nothing extra.
    async extraTokenClaims(ctx, token) {
      const { kind, accountId, aud } = token as { kind?: string; accountId?: string; aud?: string | string[] };
      if (kind !== 'AccessToken' || !accountId || ![aud ?? []].flat().includes(adminApiUri(config.ISSUER))) return undefined;
      const entities = (ctx as KoaContextWithOIDC | undefined)?.oidc?.entities as Record<string, { acr?: unknown } | undefined> | undefined;
      const acr = (entities?.AuthorizationCode ?? entities?.RefreshToken ?? entities?.DeviceCode ?? entities?.BackchannelAuthenticationRequest)?.acr;
      return typeof acr === 'string' ? { acr } : undefined;
    },

    // Rotate every refresh token on use; reuse of a rotated one revokes the grant (atomic consume).
    rotateRefreshToken: true,
    async issueRefreshToken(_ctx, client, code) {
      return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
    },
    // Every TTL set explicitly (a default function logs a notice on first use).
    ttl: {
      AccessToken: (_ctx, token) => (token as ResourceAware).resourceServer?.accessTokenTTL ?? HOUR,
      ClientCredentials: (_ctx, token) => (token as ResourceAware).resourceServer?.accessTokenTTL ?? 10 * MINUTE,
      AuthorizationCode: MINUTE,
      IdToken: ID_TOKEN_TTL_SECONDS,
      Interaction: HOUR,
      // Never past its grant (which refuses it then anyway): the grant's index then outlives every
      // token a refresh writes, so the rotation needs no TTL read (storage/oidc-adapter.ts RefreshRotation).
      RefreshToken: (ctx) => Math.max(1, Math.min(14 * DAY, grantRemainingSeconds(ctx) ?? 14 * DAY)),
      Session: 14 * DAY,
      // The absolute lifetime of a sign-in's refresh chain. The account page never redeems its code
      // (the session is what it uses), so its grant need only outlive that code.
      Grant: (_ctx, grant) => {
        const { clientId } = grant as { clientId?: string };
        return clientId !== undefined && (clientId === accountPageClientId || clientId === consoleClientId) ? ACCOUNT_PAGE_GRANT_TTL : 30 * DAY;
      },
      DeviceCode: DEVICE_CODE_TTL_SECONDS,
    },
    interactions: {
      // Where the sign-in came from, kept a day by the browser (signin/way-back.ts): a lost or finished interaction still has a way forward.
      async url(ctx, interaction) {
        const params = interaction.params as Record<string, unknown>;
        const redirectUri = typeof params.redirect_uri === 'string' ? params.redirect_uri : undefined;
        const resendable = redirectUri !== undefined && ctx.oidc.client?.requirePushedAuthorizationRequests !== true;
        // Not for the server's own pages (/account, /admin): a visit there leaves nothing that outlives its sign-in.
        const own = params.client_id === accountPageClientId || params.client_id === consoleClientId;
        if (!own) await wayBack.remember(ctx, interaction.uid, {
          clientId: String(params.client_id),
          ...(redirectUri ? { redirectUri } : {}),
          ...(resendable ? { restart: restartOf(new URL(ctx.oidc.urlFor('authorization')).pathname, params) } : {}),
        });
        // Saved just before: its page renders from that write when this process shows it (storage/written-interactions.ts).
        return withWriteId(`/interaction/${interaction.uid}`, writtenInteractions(store), keys.model('Interaction', interaction.uid));
      },
      policy: signInPolicy(config.MFA_POLICY),
    },
    // A first-party client, or scopes allowed before: the grant is made here and the code issued without
    // the consent interaction (two redirects fewer); anything to ask goes to the consent page.
    loadExistingGrant: consentWithoutAsking(store, onConsentGranted, clock),
    async renderError(ctx, out) {
      views.renderError(ctx, out);
    },
  };

  const provider = new Provider(config.ISSUER, configuration);
  // Only the client address comes from forwarded headers (URLs follow ISSUER: security/issuer-origin.ts).
  // Koa takes the address the outermost of TRUST_PROXY proxies saw, not what a client wrote before it.
  provider.proxy = config.TRUST_PROXY > 0;
  provider.maxIpsCount = config.TRUST_PROXY;
  bendProviderInternals(provider, { store, registry, clientLockout, getResourceServerInfo, box, ...(clock ? { clock } : {}) });
  // `keys rotate` takes effect on every server without a restart; a key file changes only with one.
  const stopFollowingKeys = config.SIGNING_KEYS_FILE
    ? async () => {}
    : await followSigningKeys(store, (stored) => {
        replaceSigningKeys(provider, jwksOf(stored));
        jwtAccessTokens.useKeys(stored);
      }, onSigningKeysError);
  // Not installed here: the edge table (src/app.ts) puts every middleware in front of oidc-provider's routes, in one order.
  const edge = {
    cacheablePublicMetadata,
    missingClientAuthIsInvalidClient,
    inactiveIntrospectionLimit: limitInactiveIntrospections(store, config.INTROSPECTION_INACTIVE_PER_MINUTE, onIntrospectionThrottled),
    revocationAnswersJson,
    jwtIntrospectionAndRevocation: jwtIntrospectionAndRevocation(jwtAccessTokens, tokenBelongsTo, (ctx, token) => {
      // A client-credentials JWT names its client as the subject; a person's names their account.
      const machine = token.sub === token.client_id;
      onJwtRevoked({
        requestId: (ctx.state as { requestId?: string }).requestId,
        clientId: ctx.oidc.entities.Client!.clientId,
        tokenClientId: token.client_id,
        ...(machine ? {} : { accountId: token.sub }),
        tokenKind: machine ? 'client_credentials' : 'access_token',
      });
    }),
    clearerErrors: clearerErrors(provider, jwtAccessTokens),
    discoveryListsApiScopes: discoveryListsApiScopes(registry),
  } satisfies Record<string, Koa.Middleware>;
  return { provider, cookieKeys, stopFollowingKeys, edge };
}

/**
 * A stored client as oidc-provider must see it: its `scope` may only hold the static (OpenID) scopes,
 * else every request of a client with an API scope fails with invalid_client_metadata. API scopes travel
 * in `api_scopes` and are put back once the client is built (`cachedClientsWithApiScopes` in provider-internals.ts). Validate new clients in this shape too.
 */
export function providerClientMetadata<T extends { scope?: unknown }>(stored: T | undefined): T | undefined {
  if (!stored) return undefined;
  const { scope, ...rest } = stored;
  const all = (typeof scope === 'string' ? scope : '').split(' ').filter(Boolean);
  const openid = all.filter((s) => OIDC_SCOPES.has(s));
  const api = all.filter((s) => !OIDC_SCOPES.has(s));
  return { ...rest, ...(openid.length ? { scope: openid.join(' ') } : {}), ...(api.length ? { api_scopes: api.join(' ') } : {}) } as T;
}

/** Seconds until the grant of the request (`ctx.oidc.entities.Grant`, loaded by every grant that issues a refresh token) expires. */
function grantRemainingSeconds(ctx: KoaContextWithOIDC | undefined): number | undefined {
  const exp = (ctx?.oidc?.entities?.Grant as { exp?: unknown } | undefined)?.exp;
  return typeof exp === 'number' ? exp - Math.floor(Date.now() / 1000) : undefined;
}

/**
 * The upstream provider ('' for none) of the session a code is issued in: the login result when the
 * sign-in finishes in this request (upstream/session-idp.ts records it only after), else as recorded.
 */
function sessionUpstreamOf(store: Store) {
  return async (sessionUid: string): Promise<string> => {
    const login = Provider.ctx?.oidc?.result?.login as { upstream?: unknown } | undefined;
    if (Provider.ctx?.oidc?.route === 'resume' && login) return typeof login.upstream === 'string' ? login.upstream : '';
    return (await store.get(keys.sessionUpstream(sessionUid))) ?? '';
  };
}

/**
 * Where and how a person signed in (IP, browser and OS from the user agent), kept in the session's record
 * for the person's and the operator's list of sessions. Taken when a sign-in completes (the `resume` route
 * saves the signed-in session); other saves of the session (each app it signs in to) keep it as it was.
 */
function signInDevice(payload: { loginTs?: unknown }): SessionDevice | undefined {
  const ctx = Provider.ctx;
  if (ctx?.oidc?.route !== 'resume') return undefined;
  return { ip: ctx.ip, browser: browserOf(ctx.get('user-agent')), ...(typeof payload.loginTs === 'number' ? { loginTs: payload.loginTs } : {}) };
}

/**
 * Discovery and the key set change only with the configuration or a key rotation. Five minutes keeps
 * a new signing key's wait short; JOSE libraries also fetch the set again on an unknown `kid`.
 */
async function cacheablePublicMetadata(ctx: Koa.Context, next: Koa.Next) {
  await next();
  const route = providerRouteOf(ctx);
  if (ctx.status === 200 && (route === 'discovery' || route === 'jwks')) ctx.set('Cache-Control', 'public, max-age=300');
}

/**
 * Our client metadata: `require_mfa` makes every sign-in for the client use a second factor (MFA_POLICY=optional);
 * `pkce_optional` see pkceRequired; `native_app`: created with `--native` (RFC 8252);
 * `refresh_grace_seconds`: a refresh token presented again within it gets the first use's response (provider-internals.ts);
 * `client_secret_created_at`, `previous_client_secret` (digest, age, expiry): a rotated-out secret that still works for a while.
 */
export const CLIENT_PROPERTIES = ['first_party', 'resource_server', 'api_scopes', 'require_mfa', 'pkce_optional', 'native_app', 'refresh_grace_seconds', 'client_secret_created_at', 'previous_client_secret'];

/**
 * A `--pkce optional` client (confidential, for libraries without PKCE) may leave PKCE out only with a
 * `nonce` and `openid`: the nonce in the ID token is then what binds the code to its request (RFC 9700 §2.1.1).
 */
function pkceRequired(ctx: KoaContextWithOIDC, client: { [key: string]: unknown }): boolean {
  if (client.pkce_optional !== true) return true;
  const params = ctx.oidc.params ?? {};
  if (typeof params.nonce === 'string' && params.nonce && typeof params.scope === 'string' && params.scope.split(' ').includes('openid')) return false;
  throw new errors.InvalidRequest('this client may leave out PKCE only when it sends a nonce with the openid scope');
}

/**
 * oidc-provider's prompts, plus: a session without a second factor is signed in again when the
 * policy, the client or the request (`acr_values`) demands one. `acr_values` alone is only a wish to
 * oidc-provider; with `prompt=none` this answers `login_required`.
 */
function signInPolicy(policy: MfaPolicy) {
  const prompts = interactionPolicy.base();
  // RFC 8628 §5.4: a device request is shown and allowed every time, signed in or not, remembered or not:
  // the person must see which app on which device gets in (a code can be sent by a phisher).
  prompts.get('consent')!.checks.add(
    new interactionPolicy.Check('device_request', 'a device request is always shown', 'interaction_required', (ctx) =>
      ctx.oidc.deviceCode && !ctx.oidc.result?.consent ? interactionPolicy.Check.REQUEST_PROMPT : interactionPolicy.Check.NO_NEED_TO_PROMPT,
    ),
  );
  prompts.get('login')!.checks.add(
    new interactionPolicy.Check('mfa_required', 'a second factor is required', 'login_required', (ctx) => {
      const { session, client, params } = ctx.oidc;
      if (!session?.accountId) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      // An upstream sign-in's second factor follows its provider's require_mfa (upstream/routes.ts), not MFA_POLICY; a client's or request's demand still holds.
      const sessionPolicy = session.acr === ACR_UPSTREAM ? 'optional' : policy;
      return session.acr !== ACR_MFA && mfaDemanded(sessionPolicy, client, params ?? {}) ? interactionPolicy.Check.REQUEST_PROMPT : interactionPolicy.Check.NO_NEED_TO_PROMPT;
    }),
  );
  // The consent page when the app sent prompt=consent: `params.prompt`, since `prompts.has('consent')` also
  // answers yes for offline_access (offlineAccessWithoutPromptConsent). Otherwise only missing scopes ask.
  const consent = prompts.get('consent')!;
  consent.checks.remove('consent_prompt');
  consent.checks.add(
    new interactionPolicy.Check('consent_prompt', 'consent prompt was not resolved', 'consent_required', (ctx) => {
      const { params, result, route } = ctx.oidc;
      const asked = appAskedForConsent(params);
      return asked && !(route.endsWith('resume') && result?.consent) ? interactionPolicy.Check.REQUEST_PROMPT : interactionPolicy.Check.NO_NEED_TO_PROMPT;
    }),
    0,
  );
  return prompts;
}

// Without the `scope` member oidc-provider would add: RFC 6749 §5.2 names error, error_description and error_uri.
const invalidScope = (description: string) => new errors.InvalidScope(description, undefined as never);

/**
 * An API scope the request names but the client is not registered for is `invalid_scope`, naming it: at
 * /auth (an error redirect), PAR, device authorization, client credentials and a refresh that names its
 * scope. Leaving it out quietly gave apps tokens their API refuses, with nothing saying why. Runs where
 * oidc-provider resolves the request's API (defaultResource, getResourceServerInfo), so every grant
 * passes here; OpenID scopes are oidc-provider's to check, and a scope no API owns is decided elsewhere.
 */
async function refuseUnregisteredScopes(ctx: KoaContextWithOIDC, client: { scope?: string }, registry: Registry): Promise<void> {
  const named = ctx.oidc.params?.scope;
  if (typeof named !== 'string' || !named) return;
  const registered = new Set(String(client.scope ?? '').split(' '));
  for (const scope of new Set(named.split(' '))) {
    if (!scope || registered.has(scope) || OIDC_SCOPES.has(scope)) continue;
    if (await registry.resourceForScope(scope)) throw invalidScope(`this client is not registered for the scope ${scope}`);
  }
}

/**
 * `client_credentials` without `resource`: a machine client that names no scope (Go's clientcredentials
 * without Scopes, a plain curl) gets its registered API scopes when they belong to one API, rather
 * than a token no API accepts; a scope no API owns is `invalid_scope`.
 */
async function machineClientResource(ctx: KoaContextWithOIDC, client: { scope?: string }, registry: Registry): Promise<string | undefined> {
  const params = ctx.oidc.params as { scope?: string };
  const registered = String(client.scope ?? '').split(' ').filter((s) => s && !OIDC_SCOPES.has(s));
  const named = String(params.scope ?? '').split(' ').filter(Boolean);
  const requested = named.filter((s) => !OIDC_SCOPES.has(s));
  // Only OpenID scopes: oidc-provider refuses those it was not registered with, as before.
  if (named.length && !requested.length) return undefined;
  const owners = new Map<string, string[]>();
  for (const scope of requested.length ? requested : registered) {
    const owner = await registry.resourceForScope(scope);
    // A known scope the client lacks was refused before (refuseUnregisteredScopes).
    if (!owner && requested.length) throw invalidScope(`the scope ${scope} belongs to no API`);
    if (!owner) continue;
    owners.set(owner, [...(owners.get(owner) ?? []), scope]);
  }
  if (owners.size > 1) throw invalidScope(`${requested.length ? 'these scopes' : "this client's scopes"} belong to several APIs: name the scopes of one (or its resource)`);
  const [only] = owners;
  if (only && !requested.length) params.scope = only[1].join(' ');
  return only?.[0];
}

/** A token belongs to the client it was issued to, and to the API it was issued for. */
export function tokenBelongsTo(client: { clientId: string; [key: string]: unknown }, token: { clientId?: string; aud?: unknown }) {
  if (token.clientId === client.clientId) return true;
  const api = client.resource_server;
  if (typeof api !== 'string') return false;
  const aud = token.aud;
  return aud === api || (Array.isArray(aud) && aud.includes(api));
}

/**
 * Where a form on this page may lead: our origin and the client's redirect target. Chromium applies
 * CSP `form-action` to the redirect that follows a form post, so `'self'` alone would block it.
 */
export function formTargets(uri: unknown): string[] {
  if (typeof uri !== 'string') return [];
  try {
    return [new URL(uri).origin];
  } catch {
    return [];
  }
}

export type { KoaContextWithOIDC };
