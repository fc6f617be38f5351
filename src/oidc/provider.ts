import type Koa from 'koa';
import Provider, { errors, interactionPolicy, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import type { Accounts } from '../accounts/accounts.ts';
import type { Config } from '../config.ts';
import { ACR_MFA, ACR_VALUES, mfaDemanded, type MfaPolicy } from '../interactions/mfa-policy.ts';
import { authenticatesClient } from '../security/client-auth-throttle.ts';
import { CookieKeys } from '../security/cookie-keys.ts';
import type { Lockout } from '../security/lockout.ts';
import { createAdapterClass } from '../storage/oidc-adapter.ts';
import type { Store } from '../storage/store.ts';
import type { Views } from '../views.ts';
import { bendProviderInternals, type InternalsDeps } from './provider-internals.ts';
import { OIDC_SCOPES, type Registry } from './registry.ts';
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
  /** The admin console's own client (admin/console.ts): the same short grants as the account page's. */
  consoleClientId?: string;
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

export async function createProvider({ config, store, accounts, registry, views, clientLockout, accountPageClientId, consoleClientId, onSigningKeysError = () => {} }: ProviderDeps) {
  const [signingKeys, cookieKeys, dpopNonceSecret] = await Promise.all([
    loadSigningKeys(store, config.SIGNING_KEYS_FILE),
    loadCookieKeys(store, config.COOKIE_KEYS),
    loadDpopNonceSecret(store),
  ]);

  /** The API a token is for, and the scopes this client may get for it. */
  const getResourceServerInfo: InternalsDeps['getResourceServerInfo'] = async (_ctx, resourceIndicator, client) => {
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
    adapter: createAdapterClass(store, { find: async (id) => providerClientMetadata(await registry.findClient(id)) }),
    jwks: jwksOf(signingKeys),
    cookies: {
      // keygrip-compatible signatures, computed with keys prepared once (see CookieKeys).
      keys: new CookieKeys(cookieKeys) as never,
      long: { httpOnly: true, sameSite: 'lax' },
      short: { httpOnly: true, sameSite: 'lax' },
    },

    async findAccount(_ctx, sub) {
      const account = await accounts.find(sub);
      if (!account || account.disabled) return undefined;
      return {
        accountId: account.id,
        async claims() {
          // Accounts are created by an operator, who vouches for the address.
          return { sub: account.id, email: account.email, email_verified: true, ...(account.name ? { name: account.name } : {}) };
        },
      };
    },
    scopes: [...OIDC_SCOPES],
    claims: {
      // acr and amr (RFC 8176) in every ID token: oidc-provider adds them only when requested or listed here.
      openid: ['sub', 'acr', 'amr'],
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
    // urn:latchkey:mfa: password and second factor; urn:latchkey:pwd: password only (interactions/mfa-policy.ts).
    acrValues: ACR_VALUES,

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
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          const client = ctx.oidc.client;
          views.render(ctx, 'logout', { form, clientName: client?.clientName, title: 'Sign out' }, formTargets(ctx.oidc.params?.post_logout_redirect_uri));
        },
        async postLogoutSuccessSource(ctx) {
          views.render(ctx, 'logged-out', { clientName: ctx.oidc.client?.clientName, title: 'Signed out' });
        },
      },
      resourceIndicators: {
        enabled: true,
        // Without `resource`, a request whose scopes belong to exactly one API gets a token for that
        // API, so ordinary clients need not know RFC 8707. Otherwise: a token for userinfo.
        async defaultResource(ctx, _client, oneOf) {
          if (oneOf) return oneOf;
          const requested = String(ctx.oidc.params?.scope ?? '').split(' ').filter((s) => s && !OIDC_SCOPES.has(s));
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
      RefreshToken: 14 * DAY,
      Session: 14 * DAY,
      // The absolute lifetime of a sign-in's refresh chain. The account page never redeems its code
      // (the session is what it uses), so its grant need only outlive that code.
      Grant: (_ctx, grant) => {
        const { clientId } = grant as { clientId?: string };
        return clientId !== undefined && (clientId === accountPageClientId || clientId === consoleClientId) ? ACCOUNT_PAGE_GRANT_TTL : 30 * DAY;
      },
      DeviceCode: 10 * MINUTE,
      BackchannelAuthenticationRequest: 10 * MINUTE,
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}`, policy: signInPolicy(config.MFA_POLICY) },
    async renderError(ctx, out) {
      views.renderError(ctx as never, out);
    },
  };

  const provider = new Provider(config.ISSUER, configuration);
  // Only the client address comes from forwarded headers (URLs follow ISSUER: security/issuer-origin.ts).
  // Koa takes the address the outermost of TRUST_PROXY proxies saw, not what a client wrote before it.
  provider.proxy = config.TRUST_PROXY > 0;
  provider.maxIpsCount = config.TRUST_PROXY;
  bendProviderInternals(provider, { store, registry, clientLockout, getResourceServerInfo });
  // `keys rotate` takes effect on every server without a restart; a key file changes only with one.
  const stopFollowingKeys = config.SIGNING_KEYS_FILE
    ? async () => {}
    : await followSigningKeys(store, (stored) => replaceSigningKeys(provider, jwksOf(stored)), onSigningKeysError);
  provider.use(offlineAccessAsksForConsent);
  provider.use(cacheablePublicMetadata);
  provider.use(missingClientAuthIsInvalidClient);
  return { provider, cookieKeys, stopFollowingKeys };
}

/**
 * A stored client as oidc-provider must see it: its `scope` may only hold the static (OpenID) scopes,
 * else every request of a client with an API scope fails with invalid_client_metadata. API scopes travel
 * in `api_scopes` and are put back once the client is built (`cachedClientsWithApiScopes` in provider-internals.ts). Validate new clients in this shape too.
 */
export function providerClientMetadata<T extends { scope?: unknown }>(stored: T | undefined): T | undefined {
  if (!stored) return undefined;
  const { scope, ...rest } = stored;
  const all = String(scope ?? '').split(' ').filter(Boolean);
  const openid = all.filter((s) => OIDC_SCOPES.has(s));
  const api = all.filter((s) => !OIDC_SCOPES.has(s));
  return { ...rest, ...(openid.length ? { scope: openid.join(' ') } : {}), ...(api.length ? { api_scopes: api.join(' ') } : {}) } as T;
}

/**
 * oidc-provider drops `offline_access` unless `prompt=consent` (OIDC Core §11), so an app asking for it
 * the ordinary way never got a refresh token. Our consent page names offline access and is asked once
 * per person and client, which is the consent §11 wants: a request for it without `prompt` asks for consent.
 */
async function offlineAccessAsksForConsent(ctx: Koa.Context, next: Koa.Next) {
  if (ctx.method === 'GET' && ctx.path === '/auth') {
    const { scope, prompt } = ctx.query;
    if (typeof scope === 'string' && prompt === undefined && scope.split(' ').includes('offline_access')) {
      ctx.query = { ...ctx.query, prompt: 'consent' };
    }
  }
  await next();
}

/**
 * Discovery and the key set change only with the configuration or a key rotation. Five minutes keeps
 * a new signing key's wait short; JOSE libraries also fetch the set again on an unknown `kid`.
 */
async function cacheablePublicMetadata(ctx: Koa.Context, next: Koa.Next) {
  await next();
  const route = (ctx as unknown as KoaContextWithOIDC).oidc?.route;
  if (ctx.status === 200 && (route === 'discovery' || route === 'jwks')) ctx.set('Cache-Control', 'public, max-age=300');
}

/**
 * Our client metadata: `require_mfa` makes every sign-in for the client use a second factor (MFA_POLICY=optional);
 * `pkce_optional` see pkceRequired; `native_app`: created with `--native` (RFC 8252).
 */
export const CLIENT_PROPERTIES = ['first_party', 'resource_server', 'api_scopes', 'require_mfa', 'pkce_optional', 'native_app'];

/**
 * A `--pkce optional` client (confidential, for libraries without PKCE) may leave PKCE out only with a
 * `nonce` and `openid`: the nonce in the ID token is then what binds the code to its request (RFC 9700 §2.1.1).
 */
function pkceRequired(ctx: KoaContextWithOIDC, client: { [key: string]: unknown }): boolean {
  if (client.pkce_optional !== true) return true;
  const params = ctx.oidc.params ?? {};
  if (typeof params.nonce === 'string' && params.nonce && String(params.scope ?? '').split(' ').includes('openid')) return false;
  throw new errors.InvalidRequest('this client may leave out PKCE only when it sends a nonce with the openid scope');
}

/**
 * oidc-provider's prompts, plus: a session without a second factor is signed in again when the
 * policy, the client or the request (`acr_values`) demands one. `acr_values` alone is only a wish to
 * oidc-provider; with `prompt=none` this answers `login_required`.
 */
function signInPolicy(policy: MfaPolicy) {
  const prompts = interactionPolicy.base();
  prompts.get('login')!.checks.add(
    new interactionPolicy.Check('mfa_required', 'a second factor is required', 'login_required', (ctx) => {
      const { session, client, params } = ctx.oidc;
      if (!session?.accountId) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      return session.acr !== ACR_MFA && mfaDemanded(policy, client, params ?? {}) ? interactionPolicy.Check.REQUEST_PROMPT : interactionPolicy.Check.NO_NEED_TO_PROMPT;
    }),
  );
  return prompts;
}

/** RFC 6749 §5.2: no client authentication at all is `401 invalid_client`; oidc-provider answers 400 invalid_request. */
async function missingClientAuthIsInvalidClient(ctx: Koa.Context, next: Koa.Next) {
  await next();
  const body = ctx.body as { error?: unknown; error_description?: unknown } | undefined;
  if (
    ctx.status === 400 &&
    authenticatesClient(ctx) &&
    body?.error === 'invalid_request' &&
    body.error_description === 'no client authentication mechanism provided'
  ) {
    ctx.status = 401;
    ctx.body = { error: 'invalid_client', error_description: 'client authentication is required' };
    ctx.set('WWW-Authenticate', 'Basic realm="latchkey"');
  }
}

/** A token belongs to the client it was issued to, and to the API it was issued for. */
function tokenBelongsTo(client: { clientId: string; [key: string]: unknown }, token: { clientId?: string; aud?: unknown }) {
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
