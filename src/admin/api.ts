import { Readable } from 'node:stream';
import { bodyParser } from '@koa/bodyparser';
import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import type Provider from 'oidc-provider';
import { RateLimiterRes } from 'rate-limiter-flexible';
import { z } from 'zod';
import type { Accounts } from '../accounts/accounts.ts';
import type { ActivityLog } from '../observability/activity.ts';
import { ACR_MFA } from '../signin/policy.ts';
import { RegistryError, type Registry } from '../oidc/registry.ts';
import { Refusal } from '../problems.ts';
import { DPOP_ALGS, DpopProofError, verifyDpopProof } from '../security/dpop-proof.ts';
import { digest, keys } from '../storage/keys.ts';
import { createLimiter, type Limiter } from '../storage/limiters.ts';
import { StorageUnavailable, type Store } from '../storage/store.ts';
import { providerCreate, providerUpdate } from '../upstream/admin.ts';
import { clientChangesOfBody, clientCreate, clientInputOfBody, clientUpdate, parseInput, passwordBody, resourceCreate, resourceUpdate, secretRotate, userCreate, userUpdate, invitationCreate } from './inputs.ts';
import { adminApiUri, type Actor, type Operations } from './operations.ts';

/**
 * The admin API (`/admin/api/v1`, JSON): what the CLI does, and what only a server can show (sessions,
 * lockouts, the activity log). It is an API like any other: registered at start (`ensureAdminApi`), it
 * takes this server's own opaque access tokens for its audience with scope `latchkey:admin` (every
 * route) or `latchkey:admin:read` (reads only). Errors are RFC 9457 problem details; authentication
 * failures carry RFC 6750 `WWW-Authenticate`. Every handler calls src/admin/operations.ts, as the CLI does.
 */
export const ADMIN_SCOPE = 'latchkey:admin';
export const ADMIN_READ_SCOPE = 'latchkey:admin:read';
export { adminApiUri };
const PREFIX = '/admin/api';
const REALM = 'latchkey-admin';
/** Admin tokens live 15 minutes: long enough for a console visit, short for a leaked one. */
const ADMIN_TOKEN_TTL = 15 * 60;

/**
 * Registers the admin API (its URI follows ISSUER) when absent, so that a client with scope
 * latchkey:admin can get tokens for it. Every node finds the same one; an API left by an earlier
 * ISSUER gives its scopes up.
 */
export async function ensureAdminApi({ store, registry, issuer }: { store: Store; registry: Registry; issuer: string }): Promise<string> {
  const uri = adminApiUri(issuer);
  const existing = await registry.findResource(uri);
  // Its scopes are for this server's operators, not for discovery's list.
  if (existing && !existing.privateScopes) await registry.updateResource(uri, { privateScopes: true });
  if (existing) return uri;
  const previous = await registry.resourceForScope(ADMIN_SCOPE);
  if (previous && previous !== uri) await registry.deleteResource(previous).catch(() => {});
  try {
    await registry.createResource({ uri, scope: `${ADMIN_SCOPE} ${ADMIN_READ_SCOPE}`, ttl: ADMIN_TOKEN_TTL, privateScopes: true });
  } catch (err) {
    if (!(err instanceof RegistryError)) throw err;
    // Another node is registering it at the same moment: its record follows its scope claim (read past the cache).
    for (let tries = 0; !(await store.get(keys.resource(uri))); tries += 1) {
      if (tries === 50) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  return uri;
}

// ---- problem details (RFC 9457) ----

class Problem extends Error {
  readonly status: number;
  readonly extra: Record<string, unknown>;
  constructor(status: number, detail: string, extra: Record<string, unknown> = {}) {
    super(detail);
    this.status = status;
    this.extra = extra;
  }
}

const TITLES: Record<number, string> = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 409: 'Conflict',
  413: 'Content Too Large', 415: 'Unsupported Media Type', 429: 'Too Many Requests', 503: 'Service Unavailable',
};

function sendProblem(ctx: Context, status: number, detail: string, extra: Record<string, unknown> = {}) {
  ctx.status = status;
  ctx.body = { type: 'about:blank', title: TITLES[status] ?? 'Error', status, detail, ...extra };
  ctx.type = 'application/problem+json';
}


/** zod issues as RFC 9457 `errors`: a JSON pointer and a message per field. */
function invalid(where: 'query', error: z.ZodError): Problem {
  const errors = error.issues.map((issue) => ({ code: 'invalid_field', pointer: `#/${issue.path.map((p) => String(p).replaceAll('~', '~0').replaceAll('/', '~1')).join('/')}`, detail: issue.message }));
  return new Problem(400, `the request ${where} is not valid`, { errors });
}

// ---- input schemas (the OpenAPI document is generated from them) ----

const disabledBody = z.strictObject({ disabled: z.boolean() });
const adminBody = z.strictObject({ admin: z.boolean() });

const limit = z.coerce.number().int().min(1).max(100).default(50);
const pageQuery = z.strictObject({ cursor: z.string().max(1024).regex(/^[A-Za-z0-9_-]+$/, 'not a cursor from this API').optional(), limit });
const userQuery = pageQuery.extend({ q: z.string().trim().min(1).max(254).optional().describe('email prefix') });
const time = z
  .string()
  .max(40)
  .transform((v) => (/^\d+$/.test(v) ? Number(v) : Date.parse(v)))
  // Dates JavaScript can hold from 1970 on: the activity log has nothing earlier, and nothing later can be asked of it.
  .refine((ms) => Number.isFinite(ms) && ms >= 0 && ms <= 8.64e15, 'must be an ISO 8601 time or epoch milliseconds, from 1970 on');
const activityQuery = z.strictObject({
  event: z.string().max(500).regex(/^[a-z_]+(,[a-z_]+)*$/, 'one or more event names, separated by commas').optional(),
  account_id: z.string().max(100).optional(),
  client_id: z.string().max(100).optional(),
  from: time.optional(),
  to: time.optional(),
  cursor: z.string().max(40).regex(/^\d{1,15}-\d{1,15}$/, 'not a cursor from this API').refine((v) => !/^0+-0+$/.test(v), 'not a cursor from this API').optional(),
  limit,
});
const noQuery = z.strictObject({});

type Caller = { actor: Actor; scopes: Set<string> };

interface RouteSpec<Q extends z.ZodType = z.ZodType, B extends z.ZodType | undefined = z.ZodType | undefined> {
  method: 'get' | 'post' | 'put' | 'patch' | 'delete';
  /** Under /admin/api/v1, @koa/router syntax. */
  path: string;
  summary: string;
  /** Changes something: needs `latchkey:admin` (reads also take `latchkey:admin:read`). */
  write: boolean;
  query?: Q;
  body?: B;
  /** The body may be left out (then it is `{}`): for an endpoint that took none before. */
  bodyOptional?: boolean;
  /** 201 for a creation, else 200. */
  status?: number;
  run(input: { params: Record<string, string>; query: z.output<Q>; body: B extends z.ZodType ? z.output<B> : undefined; actor: Actor; ctx: Context }): Promise<unknown>;
}

const route = <Q extends z.ZodType, B extends z.ZodType | undefined>(spec: RouteSpec<Q, B>) => spec as RouteSpec;

function routes(ops: Operations, activity: ActivityLog): RouteSpec[] {
  return [
    route({ method: 'get', path: '/clients', summary: 'List clients (id order), a page at a time', write: false, query: pageQuery, run: ({ query }) => ops.clientPage(query) }),
    route({
      method: 'post', path: '/clients', summary: 'Register a client; its secret is in this answer only', write: true, body: clientCreate, status: 201,
      run: ({ body, actor }) => ops.createClient(actor, clientInputOfBody(body)),
    }),
    route({ method: 'get', path: '/clients/:clientId', summary: 'Show a client', write: false, run: ({ params }) => ops.client(params.clientId!) }),
    route({
      method: 'patch', path: '/clients/:clientId', summary: 'Change a client\'s name, redirect URIs, scope (a list given replaces the list), first party, authentication method (none drops its secret; a secret method on a public client issues one, in this answer only), MFA, PAR, PKCE, refresh grace or back-channel logout URI (null removes it); idempotent', write: true, body: clientUpdate,
      run: ({ params, body, actor }) => ops.updateClient(actor, params.clientId!, clientChangesOfBody(body)),
    }),
    route({
      method: 'post', path: '/clients/:clientId/secret', summary: 'Rotate a client\'s secret; the new one is in this answer only. `keep_old_seconds`: how long the old one keeps working (default 0: it stops now)', write: true, body: secretRotate, bodyOptional: true,
      run: ({ params, body, actor }) => ops.rotateClientSecret(actor, params.clientId!, body.keep_old_seconds),
    }),
    route({ method: 'delete', path: '/clients/:clientId/secret/old', summary: 'End a client\'s previous secret now (the overlap of a rotation)', write: true, run: ({ params, actor }) => ops.revokeOldClientSecret(actor, params.clientId!) }),
    route({ method: 'delete', path: '/clients/:clientId', summary: 'Delete a client', write: true, run: ({ params, actor }) => ops.deleteClient(actor, params.clientId!) }),

    route({ method: 'get', path: '/resources', summary: 'List APIs', write: false, run: async () => ({ resources: await ops.resources() }) }),
    route({
      method: 'post', path: '/resources', summary: 'Register an API; its client secret (introspection) is in this answer only', write: true, body: resourceCreate, status: 201,
      run: ({ body, actor }) => ops.createResource(actor, { uri: body.uri, scope: body.scope, tokenFormat: body.token_format, ttl: body.ttl, privateScopes: body.private_scopes, scopeDescriptions: body.scope_descriptions }),
    }),
    route({
      method: 'patch', path: '/resources/:uri', summary: 'Change an API\'s scopes (the list given replaces the list), token format, lifetime, discovery listing or scope descriptions (those named change; null removes one) (the URI, percent-encoded, names it); idempotent', write: true, body: resourceUpdate,
      run: ({ params, body, actor }) => ops.updateResource(actor, params.uri!, { scope: body.scope, tokenFormat: body.token_format, ttl: body.ttl, privateScopes: body.private_scopes, scopeDescriptions: body.scope_descriptions }),
    }),
    route({ method: 'delete', path: '/resources/:uri', summary: 'Delete an API and its client', write: true, run: ({ params, actor }) => ops.deleteResource(actor, params.uri!) }),

    route({ method: 'get', path: '/users', summary: 'List people (email order), or search by email prefix (q)', write: false, query: userQuery, run: ({ query }) => ops.userPage({ cursor: query.cursor, limit: query.limit, emailPrefix: query.q }) }),
    route({
      method: 'post', path: '/users', summary: 'Create a person with a password, or set_password_link: true for a one-time link they set it with (in this answer only); totp: with an authenticator, its URI in this answer only', write: true, body: userCreate, status: 201,
      run: ({ body, actor }) => ops.createUser(actor, { email: body.email, ...(body.password !== undefined ? { password: body.password } : {}), ...(body.set_password_link ? { setPasswordLink: true } : {}), ...(body.name ? { name: body.name } : {}), admin: body.admin, totp: body.totp }),
    }),
    route({
      method: 'patch', path: '/users/:userId', summary: 'Change a person\'s name (null: none) or address (unverified until they follow the link mailed to it; the old address is told)', write: true, body: userUpdate,
      run: ({ params, body, actor }) => ops.updateUser(actor, params.userId!, body),
    }),
    route({ method: 'post', path: '/users/:userId/password-link', summary: 'A one-time set-password link for the operator to hand over (in this answer only; single use, INVITATION_TTL_SECONDS)', write: true, status: 201, run: ({ params, actor }) => ops.createPasswordLink(actor, params.userId!) }),
    route({ method: 'post', path: '/users/:userId/password-reset', summary: 'Mail the person the normal password reset link (EMAIL on)', write: true, run: ({ params, actor }) => ops.sendPasswordReset(actor, params.userId!) }),
    route({ method: 'get', path: '/invitations', summary: 'Pending invitations (never their links)', write: false, run: () => ops.listInvitations() }),
    route({ method: 'post', path: '/invitations', summary: 'Invite an address: a single-use link that creates the account is emailed (INVITATION_TTL_SECONDS)', write: true, body: invitationCreate, status: 201, run: ({ body, actor }) => ops.inviteUser(actor, body) }),
    route({ method: 'delete', path: '/invitations/:email', summary: 'Revoke a pending invitation: its link stops working', write: true, run: ({ params, actor }) => ops.revokeInvitation(actor, params.email!) }),
    route({ method: 'post', path: '/invitations/:email/resend', summary: 'Send a pending invitation again with a new link (the old one stops working)', write: true, run: ({ params, actor }) => ops.resendInvitation(actor, params.email!) }),
    route({ method: 'get', path: '/users/:userId', summary: 'Show a person', write: false, run: ({ params }) => ops.user(params.userId!) }),
    route({ method: 'delete', path: '/users/:userId', summary: 'Delete a person and end their sessions', write: true, run: ({ params, actor }) => ops.deleteUser(actor, params.userId!) }),
    route({ method: 'put', path: '/users/:userId/disabled', summary: 'Disable (and sign out everywhere) or enable a person', write: true, body: disabledBody, run: ({ params, body, actor }) => ops.setUserDisabled(actor, params.userId!, body.disabled) }),
    route({ method: 'put', path: '/users/:userId/admin', summary: 'Grant or revoke the admin role', write: true, body: adminBody, run: ({ params, body, actor }) => ops.setUserAdmin(actor, params.userId!, body.admin) }),
    route({ method: 'put', path: '/users/:userId/password', summary: 'Set a person\'s password (and sign them out everywhere)', write: true, body: passwordBody, run: ({ params, body, actor }) => ops.setUserPassword(actor, params.userId!, body.password) }),
    route({ method: 'delete', path: '/users/:userId/mfa', summary: 'Remove a person\'s second factor and recovery codes (they enroll again at the next sign-in)', write: true, run: ({ params, actor }) => ops.resetUserMfa(actor, params.userId!) }),
    route({ method: 'delete', path: '/users/:userId/lockout', summary: 'End a person\'s lockout and forget their failed attempts', write: true, run: ({ params, actor }) => ops.unlockUser(actor, params.userId!) }),
    route({ method: 'get', path: '/users/:userId/sessions', summary: 'A person\'s active sessions', write: false, run: ({ params }) => ops.userSessions(params.userId!) }),
    route({ method: 'delete', path: '/users/:userId/sessions/:handle', summary: 'End one of a person\'s sessions (its handle from the list): its apps\' grants and tokens are revoked', write: true, run: ({ params, actor }) => ops.endUserSession(actor, params.userId!, params.handle!) }),
    route({ method: 'delete', path: '/users/:userId/sessions', summary: 'Sign a person out everywhere (sessions end, grants and tokens are revoked)', write: true, run: ({ params, actor }) => ops.revokeUserSessions(actor, params.userId!) }),
    route({ method: 'get', path: '/users/:userId/apps', summary: 'The apps a person granted access to (connected apps)', write: false, run: ({ params }) => ops.connectedApps(params.userId!) }),
    route({ method: 'delete', path: '/users/:userId/apps/:clientId', summary: 'Remove an app\'s access: consent forgotten, its grants and tokens revoked, its sessions ended', write: true, run: ({ params, actor }) => ops.revokeConnectedApp(actor, params.userId!, params.clientId!) }),

    route({ method: 'get', path: '/providers', summary: 'Upstream sign-in providers (never their client secrets)', write: false, run: async () => ({ providers: await ops.providers() }) }),
    route({
      method: 'post', path: '/providers', summary: 'Add an upstream sign-in provider: a generic OpenID Connect one by its issuer, or a preset (google, entra with its tenant, github); its client secret is sealed and never shown', write: true, body: providerCreate, status: 201,
      run: ({ body, actor }) => ops.addProvider(actor, body),
    }),
    route({ method: 'get', path: '/providers/:providerId', summary: 'Show an upstream provider', write: false, run: ({ params }) => ops.provider(params.providerId!) }),
    route({ method: 'patch', path: '/providers/:providerId', summary: 'Change an upstream provider\'s settings (those left out stay; a client_secret given replaces the sealed one)', write: true, body: providerUpdate, run: ({ params, body, actor }) => ops.updateProvider(actor, params.providerId!, body) }),
    route({ method: 'delete', path: '/providers/:providerId', summary: 'Remove an upstream provider (linked identities stay, and work again if it is added back)', write: true, run: ({ params, actor }) => ops.removeProvider(actor, params.providerId!) }),
    route({ method: 'get', path: '/users/:userId/upstreams', summary: 'The upstream identities linked to a person', write: false, run: ({ params }) => ops.userUpstreams(params.userId!) }),
    route({ method: 'delete', path: '/users/:userId/upstreams/:providerId', summary: 'Unlink a person\'s identities of an upstream provider', write: true, run: ({ params, actor }) => ops.unlinkUserUpstream(actor, params.userId!, params.providerId!) }),

    route({ method: 'get', path: '/lockouts', summary: 'Current lockouts: people, IPs and client sources', write: false, run: async () => ({ lockouts: await ops.lockouts() }) }),
    route({ method: 'delete', path: '/lockouts/:key', summary: 'End a listed lockout', write: true, run: ({ params, actor }) => ops.unlockLockout(actor, params.key!) }),

    route({ method: 'get', path: '/keys', summary: 'Signing keys (public parts) and their state', write: false, run: async () => ({ keys: await ops.signingKeys() }) }),
    route({ method: 'post', path: '/keys/rotate', summary: 'Rotate the signing keys', write: true, run: ({ actor }) => ops.rotateSigningKeys(actor) }),

    route({
      method: 'get', path: '/activity', summary: 'Audit events, newest first, filtered by event, account, client and time', write: false, query: activityQuery,
      run: ({ query }) => activity.query(activityFilter(query), { cursor: query.cursor, limit: query.limit }),
    }),
    route({
      method: 'get', path: '/activity.jsonl', summary: 'The same events as JSON lines (every page), for export', write: false, query: activityQuery.omit({ cursor: true, limit: true }),
      run: async ({ query, ctx }) => {
        ctx.type = 'application/jsonl';
        ctx.set('Content-Disposition', 'attachment; filename="latchkey-activity.jsonl"');
        return Readable.from(activity.exportLines(activityFilter(query)));
      },
    }),
  ];
}

function activityFilter(query: { event?: string; account_id?: string; client_id?: string; from?: number; to?: number }) {
  return {
    ...(query.event ? { events: query.event.split(',') } : {}),
    ...(query.account_id ? { accountId: query.account_id } : {}),
    ...(query.client_id ? { clientId: query.client_id } : {}),
    ...(query.from !== undefined ? { from: query.from } : {}),
    ...(query.to !== undefined ? { to: query.to } : {}),
  };
}

// ---- authentication (RFC 6750) and rate limits ----

export interface AdminApiDeps {
  provider: Provider;
  store: Store;
  registry: Registry;
  accounts: Accounts;
  ops: Operations;
  activity: ActivityLog;
  issuer: string;
  /** Per minute: failed authentications per client IP (token guessing), requests per token. */
  limits?: { perIpPerMinute?: number; perTokenPerMinute?: number };
}

function challenge(ctx: Context, status: 401 | 403, error: string | undefined, description: string, scope?: string, extra: string[] = []): never {
  const params = [`realm="${REALM}"`, ...(error ? [`error="${error}"`, `error_description="${description}"`] : []), ...(scope ? [`scope="${scope}"`] : []), ...extra];
  ctx.set('WWW-Authenticate', `Bearer ${params.join(', ')}`);
  throw new Problem(status, description, error ? { error } : {});
}

/** RFC 9449 §7.1: a refused key-bound token is answered with the DPoP scheme's challenge. */
function dpopChallenge(ctx: Context, error: 'invalid_token' | 'invalid_dpop_proof', description: string): never {
  ctx.set('WWW-Authenticate', `DPoP realm="${REALM}", error="${error}", error_description="${description}", algs="${DPOP_ALGS.join(' ')}"`);
  throw new Problem(401, description, { error });
}

type TokenLike = { aud?: string | string[]; scope?: string; accountId?: string; clientId?: string; isExpired?: boolean; jkt?: string; extra?: { acr?: unknown } };

async function authenticate(ctx: Context, deps: AdminApiDeps, audience: string): Promise<Caller> {
  const header = ctx.get('authorization');
  // RFC 6750 §3.1: a request without credentials gets the challenge without an error code.
  if (!header || !/^(bearer|dpop)\s/i.test(header)) challenge(ctx, 401, undefined, 'this API needs a bearer access token (scope latchkey:admin or latchkey:admin:read)');
  const [, scheme, value] = /^(bearer|dpop) +([A-Za-z0-9\-._~+/]+=*)$/i.exec(header) ?? [];
  if (!value || value.length > 512) challenge(ctx, 401, 'invalid_token', 'the access token is malformed');
  const { AccessToken, ClientCredentials } = deps.provider;
  const token: TokenLike | undefined = (await AccessToken.find(value)) ?? (await ClientCredentials.find(value));
  if (!token || token.isExpired) challenge(ctx, 401, 'invalid_token', 'the access token is unknown, expired or revoked');
  // A token bound to a key (DPoP) is worth nothing without a proof from that key: a copy of it alone does not get in.
  if (token.jkt) {
    if (scheme!.toLowerCase() !== 'dpop') dpopChallenge(ctx, 'invalid_token', 'the access token is bound to a key: send it as Authorization: DPoP with a DPoP proof');
    const proof = ctx.get('dpop');
    if (!proof) dpopChallenge(ctx, 'invalid_dpop_proof', 'a DPoP proof is required with this access token');
    try {
      await verifyDpopProof({ proof, method: ctx.method, url: `${new URL(deps.issuer).origin}${ctx.path}`, accessToken: value, jkt: token.jkt, store: deps.store });
    } catch (err) {
      if (err instanceof DpopProofError) dpopChallenge(ctx, 'invalid_dpop_proof', err.message);
      throw err;
    }
  } else if (scheme!.toLowerCase() === 'dpop') {
    challenge(ctx, 401, 'invalid_token', 'the access token is not bound to a key: send it as a Bearer token');
  }
  const aud = [token.aud ?? []].flat();
  if (!aud.includes(audience)) challenge(ctx, 401, 'invalid_token', 'the access token is not for this API');
  // The client is read on every request: deleted, or no longer allowed an admin scope, its tokens stop working at once.
  const client = await deps.registry.findClient(String(token.clientId));
  if (!client) challenge(ctx, 401, 'invalid_token', 'the access token\'s client no longer exists');
  const allowed = new Set(String(client.scope ?? '').split(' '));
  const scopes = new Set((token.scope ?? '').split(' ').filter((s) => s && allowed.has(s)));
  if (token.accountId) {
    // A person's token is worth what their account is now: disabled or no longer an admin, it stops working.
    const account = await deps.accounts.find(token.accountId);
    if (!account || account.disabled || account.admin !== true) challenge(ctx, 401, 'invalid_token', 'the access token\'s account is not an admin');
    // The console's rule: a person administers only after a sign-in with a second factor (RFC 9470 step-up).
    if (token.extra?.acr !== ACR_MFA) {
      challenge(ctx, 401, 'insufficient_user_authentication', 'sign in with a second factor to use the admin API', undefined, [`acr_values="${ACR_MFA}"`]);
    }
    return { actor: { kind: 'account', accountId: account.id }, scopes };
  }
  return { actor: { kind: 'client', clientId: String(token.clientId) }, scopes };
}

async function consume(ctx: Context, rateLimiter: Limiter, key: string) {
  try {
    await rateLimiter.consume(key);
  } catch (err) {
    if (!(err instanceof RateLimiterRes)) throw new StorageUnavailable(err);
    ctx.set('Retry-After', String(Math.max(1, Math.ceil(err.msBeforeNext / 1000))));
    throw new Problem(429, 'too many requests to the admin API: slow down');
  }
}

/** Everything under /admin/api: the OpenAPI document, and the v1 routes behind rate limits and bearer authentication. */
export function adminApiRoutes(deps: AdminApiDeps) {
  const audience = adminApiUri(deps.issuer);
  const specs = routes(deps.ops, deps.activity);
  const byIp = createLimiter(deps.store, { keyPrefix: 'lk:admin-rate:ip', points: deps.limits?.perIpPerMinute ?? 60, duration: 60 });
  const byToken = createLimiter(deps.store, { keyPrefix: 'lk:admin-rate:token', points: deps.limits?.perTokenPerMinute ?? 1200, duration: 60 });
  const json = bodyParser({ enableTypes: ['json'], jsonLimit: '64kb', encoding: 'utf-8' });
  const router = new Router({ prefix: PREFIX });
  const document = openApiDocument(specs, deps.issuer);

  router.get('/openapi.json', (ctx) => {
    ctx.set('Cache-Control', 'public, max-age=300');
    ctx.body = document;
  });

  const problems: Middleware = async (ctx, next) => {
    ctx.set('Cache-Control', 'no-store');
    try {
      await next();
    } catch (err) {
      if (err instanceof Problem) return sendProblem(ctx, err.status, err.message, err.extra);
      // A refusal of the shared rules: its own status, code and JSON pointer, worded with the API's field names.
      if (err instanceof Refusal) return sendProblem(ctx, err.status, err.message, err.problem());
      if (err instanceof StorageUnavailable) return sendProblem(ctx, 503, 'storage is temporarily unavailable, try again shortly');
      const status = (err as { status?: number }).status;
      // The body parser's refusals (too large, not JSON, bad encoding).
      if (status !== undefined && status >= 400 && status < 500) return sendProblem(ctx, status, status === 413 ? 'the request body is too large' : 'the request body could not be read as JSON');
      throw err;
    }
  };

  for (const spec of specs) {
    const handler: Middleware = async (ctx) => {
      // An IP that keeps presenting bad tokens is refused before any lookup; good tokens are limited by token.
      const failures = await byIp.get(ctx.ip).catch((err: unknown) => Promise.reject(new StorageUnavailable(err)));
      if (failures && failures.remainingPoints <= 0) await consume(ctx, byIp, ctx.ip);
      let caller: Caller;
      try {
        caller = await authenticate(ctx, deps, audience);
      } catch (err) {
        if (err instanceof Problem && err.status === 401) await consume(ctx, byIp, ctx.ip);
        throw err;
      }
      await consume(ctx, byToken, digest(ctx.get('authorization')));
      if (!caller.scopes.has(ADMIN_SCOPE) && (spec.write || !caller.scopes.has(ADMIN_READ_SCOPE))) {
        challenge(ctx, 403, 'insufficient_scope', `this needs scope ${spec.write ? ADMIN_SCOPE : `${ADMIN_SCOPE} or ${ADMIN_READ_SCOPE}`}`, spec.write ? ADMIN_SCOPE : ADMIN_READ_SCOPE);
      }
      const query = (spec.query ?? noQuery).safeParse(ctx.query);
      if (!query.success) throw invalid('query', query.error);
      let body: unknown;
      // An endpoint without a body refuses one, rather than act as if it had not been sent.
      if (!spec.body && ((ctx.request.length ?? 0) > 0 || ctx.get('transfer-encoding'))) throw new Problem(400, 'this endpoint takes no request body');
      if (spec.body && spec.bodyOptional && !((ctx.request.length ?? 0) > 0 || ctx.get('transfer-encoding'))) {
        body = parseInput(spec.body, {});
      } else if (spec.body) {
        if (!ctx.is('application/json')) throw new Problem(415, 'send the body as application/json');
        try {
          await json(ctx, async () => {});
        } catch (err) {
          // A body its Content-Encoding does not decode (a truncated gzip stream) has no status of its own: still the client's fault.
          const status = (err as { status?: number }).status;
          if (status !== undefined && status < 500) throw err;
          throw new Problem(400, 'the request body could not be decoded');
        }
        // Refused with every problem at once, each a typed refusal with its JSON pointer.
        body = parseInput(spec.body, ctx.request.body);
      }
      const params = ctx.params as Record<string, string>;
      const result = await spec.run({ params, query: query.data, body: body, actor: caller.actor, ctx });
      ctx.status = spec.status ?? 200;
      ctx.body = result;
    };
    (router[spec.method] as (path: string, ...middleware: Middleware[]) => unknown).call(router, `/v1${spec.path}`, problems, handler);
  }
  return router;
}

/** After the router: anything else under /admin/api/v1 is a problem+json 404, not oidc-provider's page. */
export const adminApiNotFound: Middleware = async (ctx, next) => {
  if (ctx.path !== `${PREFIX}/v1` && !ctx.path.startsWith(`${PREFIX}/v1/`)) {
    await next();
    return;
  }
  ctx.set('Cache-Control', 'no-store');
  sendProblem(ctx, 404, 'no such admin API endpoint or method (see /admin/api/openapi.json)');
};

// ---- OpenAPI 3.1 ----

function jsonSchema(schema: z.ZodType): unknown {
  // A body whose earlier field names are renamed first (src/admin/inputs.ts): the document shows the current names.
  const shown = schema instanceof z.ZodPipe && schema.in instanceof z.ZodTransform ? (schema.out as z.ZodType) : schema;
  const { $schema: _ignored, ...rest } = z.toJSONSchema(shown, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
}

const problemResponse = { description: 'Problem details (RFC 9457)', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } };

/** The document served at /admin/api/openapi.json, made from the same route table and zod schemas the router uses. */
export function openApiDocument(specs: RouteSpec[], issuer: string) {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const spec of specs) {
    const path = `/v1${spec.path}`.replace(/:([A-Za-z]+)/g, '{$1}');
    const pathParams = [...spec.path.matchAll(/:([A-Za-z]+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    const queryShape = spec.query instanceof z.ZodObject ? (spec.query.shape as Record<string, z.ZodType>) : {};
    const queryParams = Object.entries(queryShape).map(([name, schema]) => ({ name, in: 'query', required: false, schema: jsonSchema(schema) }));
    paths[path] ??= {};
    paths[path][spec.method] = {
      summary: spec.summary,
      security: [{ bearer: [spec.write ? ADMIN_SCOPE : ADMIN_READ_SCOPE] }],
      parameters: [...pathParams, ...queryParams],
      ...(spec.body ? { requestBody: { required: !spec.bodyOptional, content: { 'application/json': { schema: jsonSchema(spec.body) } } } } : {}),
      responses: {
        [String(spec.status ?? 200)]: { description: 'OK', content: { [spec.path.endsWith('.jsonl') ? 'application/jsonl' : 'application/json']: {} } },
        400: problemResponse, 401: problemResponse, 403: problemResponse, 404: problemResponse, 409: problemResponse, 429: problemResponse,
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Latchkey admin API', version: '1' },
    servers: [{ url: `${issuer}${PREFIX}` }],
    paths,
    components: {
      securitySchemes: {
        bearer: {
          type: 'oauth2',
          description: `Opaque access tokens of this server for the resource ${adminApiUri(issuer)}; a key-bound (DPoP) token is sent as Authorization: DPoP with a DPoP proof (RFC 9449); a person's token needs a sign-in with a second factor`,
          flows: { clientCredentials: { tokenUrl: `${issuer}/token`, scopes: { [ADMIN_SCOPE]: 'read and change everything', [ADMIN_READ_SCOPE]: 'read only' } } },
        },
      },
      schemas: {
        Problem: {
          type: 'object',
          properties: {
            type: { type: 'string' }, title: { type: 'string' }, status: { type: 'integer' }, detail: { type: 'string' },
            errors: { type: 'array', items: { type: 'object', properties: { pointer: { type: 'string' }, detail: { type: 'string' } } } },
          },
        },
      },
    },
  };
}
