import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider, { type Configuration } from 'oidc-provider';
import LRU from 'oidc-provider/lib/helpers/lru.js';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';

/**
 * Baseline: raw oidc-provider 9 with its own in-memory adapter, the same grants as Latchkey
 * (client_credentials, introspection, revocation, refresh with rotation, the device flow), devInteractions off.
 * The adapter is oidc-provider's default one over its own LRU, only with room for 50,000 records instead
 * of 1,000: a revocation run revokes tens of thousands of tokens made just before it, and a token the
 * LRU had dropped would be revoked for nothing (an unknown token costs less).
 * Static clients: a machine client, an API (resource server) client and an app (a client's `scope` may
 * only list OpenID scopes; the API scope comes from getResourceServerInfo). Sign-ins need no
 * password: a tiny interaction handler logs the bench user in and consents to whatever is asked
 * (so its sign-in is the engine's redirect chain only — no form, no argon2id).
 * Env: PORT, API_URI, and the client credentials (see bench/run.ts).
 */
const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const env = (name: string) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};
const apiUri = env('API_URI');
const jwtApiUri = env('JWT_API_URI');
const wantsJwt = (ctx: { oidc?: { params?: Record<string, unknown> } }) => (typeof ctx.oidc?.params?.scope === 'string' ? ctx.oidc.params.scope : '').split(' ').includes('jwt:read');
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const records = new LRU({ maxSize: 50_000 });
const CLOCK_TOLERANCE = 15;

const configuration: Configuration = {
  // As oidc-provider's default adapter: its clock tolerance (the default 15 s) widens each record's lifetime.
  adapter: (model) => new MemoryAdapter(model, records, CLOCK_TOLERANCE),
  clockTolerance: CLOCK_TOLERANCE,
  clients: [
    { client_id: env('DEVICE_ID'), token_endpoint_auth_method: 'none', grant_types: ['urn:ietf:params:oauth:grant-type:device_code'], response_types: [], redirect_uris: [] },
    { client_id: env('MACHINE_ID'), client_secret: env('MACHINE_SECRET'), grant_types: ['client_credentials'], response_types: [], redirect_uris: [] },
    { client_id: env('API_ID'), client_secret: env('API_SECRET'), grant_types: [], response_types: [], redirect_uris: [] },
    {
      client_id: env('APP_ID'),
      client_secret: env('APP_SECRET'),
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: [env('REDIRECT_URI')],
      scope: 'openid profile email offline_access',
    },
  ],
  jwks: { keys: [privateKey.export({ format: 'jwk' })] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  // The scopes Latchkey supports (profile and email come from their claims).
  claims: { openid: ['sub'], profile: ['name'], email: ['email', 'email_verified'] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    // Polled by the device-flow row on codes nobody approves: authorization_pending.
    deviceFlow: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx) => (wantsJwt(ctx) ? jwtApiUri : apiUri),
      // The JWT scenario: RS256, oidc-provider's default signing algorithm.
      getResourceServerInfo: (_ctx, indicator) =>
        indicator === jwtApiUri
          ? { scope: 'jwt:read', audience: jwtApiUri, accessTokenTTL: 3600, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } }
          : { scope: 'api:read', audience: apiUri, accessTokenTTL: 3600, accessTokenFormat: 'opaque' },
      useGrantedResource: () => true,
    },
  },
  rotateRefreshToken: true,
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
};

const provider = new Provider(issuer, configuration);
provider.use(async (ctx, next) => {
  if (!ctx.path.startsWith('/interaction/')) {
    await next();
    return;
  }
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  let result: Record<string, unknown>;
  if (details.prompt.name === 'login') {
    result = { login: { accountId: 'bench-user' } };
  } else {
    const missing = details.prompt.details as { missingOIDCScope?: string[]; missingResourceScopes?: Record<string, string[]> };
    const grant = new provider.Grant({ accountId: details.session!.accountId, clientId: String(details.params.client_id) });
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
    result = { consent: { grantId: await grant.save() } };
  }
  const to = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: details.prompt.name !== 'login' });
  ctx.status = 303;
  ctx.redirect(to);
});
provider.listen(port, '127.0.0.1');
// Exit on SIGTERM rather than be killed by it, so that `--cpu-prof` (bench/profile.ts --target raw) writes its profile.
process.on('SIGTERM', () => process.exit(0));
