import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { parse as parseQuery, type ParsedUrlQuery } from 'node:querystring';
import type Provider from 'oidc-provider';
import type { Adapter, AdapterPayload } from 'oidc-provider';
import { clientAuthSource } from '../security/client-auth-throttle.ts';
import type { Lockout } from '../security/lockout.ts';
import { epochTime, leanRefresh, opaqueId, type RefreshReused } from './lean-refresh.ts';
import { cachedClient } from './provider-internals.ts';
import { clientSecretMatches, OIDC_SCOPES, type Registry, type ResourceServer } from './registry.ts';

/**
 * The lean path (`LEAN_PATH`): the two requests machines make all day — `client_credentials` at /token
 * and introspection of a client-credentials token — answered in front of the Koa app (node:http's
 * request listener, before any context is made) for their common shape only, from the same records (the
 * adapter's own `upsert` and `find`) and with the same answers, headers, request line and metrics.
 * Anything it is not sure of — another grant, another way to authenticate, DPoP, a bad secret, a
 * locked source, an inactive answer, an odd body or URL — goes on to the app untouched (the body it read
 * is handed over), so refusals, lockout counting and audit stay oidc-provider's and the edge's.
 * test/lean-path.test.ts answers a corpus with the path on and off and compares the answers.
 */
export interface LeanPathDeps {
  provider: Provider;
  registry: Registry;
  /** The same client-authentication lockout oidc-provider's path checks (provider-internals.ts `throttledClientAuthentication`). */
  clientLockout: Lockout;
  /** Belongs-to rule of introspection (provider.ts `tokenBelongsTo`). */
  tokenBelongsTo: (client: { clientId: string; [key: string]: unknown }, token: { clientId?: string; aud?: unknown }) => boolean;
  /** A token response answered here: what oidc-provider's `grant.success` would have counted (and, for a person's grant, "last used"). */
  onTokenIssued: (answered: { requestId: string; clientId: string; grantType: string; accountId?: string; body: Record<string, unknown> }) => void;
  /** A lean refresh whose rotation found its token used (a parallel refresh won): the grant is revoked; oidc-provider answers the request. */
  onRefreshReused?: (reused: RefreshReused) => void;
  /** Each request answered here, once its answer is written: the edge's request line and metrics (app.ts `requestContext`). */
  onAnswered: (answered: { requestId: string; route: LeanRoute; body: Record<string, unknown>; seconds: number }) => void;
  /** The headers every answer of the app carries (security/headers.ts), in its order. */
  commonHeaders: readonly (readonly [string, string])[];
}

export type LeanRoute = 'token' | 'introspection';

/** What the lean path reads of a request besides its body. */
interface LeanRequest {
  headers: IncomingHttpHeaders;
  /** The client's address as Koa reads it (`ctx.ip`: TRUST_PROXY hops of X-Forwarded-For, else the socket's). */
  ip: string;
}

/** Bodies of the common shapes are short; a longer one is not common and is left to oidc-provider unread. */
const MAX_BODY = 4096;
const FORM = /^application\/x-www-form-urlencoded(?:;\s*charset=utf-8)?$/i;
/** Client ids and secrets the registry makes (base64url): their form and Basic encodings are the value itself. */
const PLAIN = /^[A-Za-z0-9_-]{1,128}$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
/** oidc-provider's scope syntax (is_valid_scope.js). */
const SCOPE_SYNTAX = /^[\x21\x23-\x5B\x5D-\x7E]+(?: [\x21\x23-\x5B\x5D-\x7E]+)*$/u;
/** Opaque ids: 256 random bits in base64url (oidc-provider's `bitsOfOpaqueRandomness`), the shape the adapter expects of a client-credentials token. */
const OPAQUE_ID = /^[A-Za-z0-9_-]{43}$/;
const TOKEN_PARAMS = new Set(['grant_type', 'scope', 'client_id', 'client_secret']);
/** The common refresh: no `scope` (a narrowed refresh) nor `resource` (lean-refresh.ts). */
const REFRESH_PARAMS = new Set(['grant_type', 'refresh_token', 'client_id', 'client_secret']);
/** A refresh token's id: its grant's 16-character tag, then 256 random bits (provider-internals.ts `tagTokenIdsWithGrant`). */
const REFRESH_TOKEN_ID = /^[A-Za-z0-9_-]{59}$/;
const INTROSPECTION_PARAMS = new Set(['token', 'token_type_hint', 'client_id', 'client_secret']);
const HINTS = new Set(['access_token', 'refresh_token', 'urn:ietf:params:oauth:token-type:access_token', 'urn:ietf:params:oauth:token-type:refresh_token']);
/** What a client-credentials record written by oidc-provider (or here) holds; anything more is left to oidc-provider. */
const PLAIN_RECORD = new Set(['iat', 'exp', 'scope', 'clientId', 'aud', 'jti', 'kind']);
/** oidc-provider's CORS answers on these routes without an Origin (cors.js; DPoP nonces are exposed at /token). */
const EXPOSED = { token: 'DPoP-Nonce,WWW-Authenticate', introspection: 'WWW-Authenticate' } as const;

type BuiltClient = { clientId: string; clientAuthMethod?: string; clientSecret?: string; clientSecretExpiresAt?: number; scope?: string; grantTypeAllowed(type: string): boolean; [key: string]: unknown };

/**
 * The app's request listener with the lean path in front: `app` gets every request the lean path does
 * not answer, with its body intact.
 */
export function leanFront(deps: LeanPathDeps, app: RequestListener): RequestListener {
  const { provider, registry, clientLockout, tokenBelongsTo, onTokenIssued, onAnswered } = deps;
  const tokenPath = provider.pathFor('token');
  const introspectionPath = provider.pathFor('introspection');
  // Koa's `ctx.ip` (request.js `ips`), with the proxy trust oidc-provider's app was given (provider.ts).
  const proxy = provider.proxy;
  const proxyIpHeader = provider.proxyIpHeader.toLowerCase();
  const maxIpsCount = provider.maxIpsCount;
  const ipOf = (req: IncomingMessage): string => {
    const forwarded = proxy ? req.headers[proxyIpHeader] : undefined;
    let ips = typeof forwarded === 'string' && forwarded ? forwarded.split(',').map((v) => v.trim()) : [];
    if (maxIpsCount > 0) ips = ips.slice(-maxIpsCount);
    return ips[0] || req.socket.remoteAddress || '';
  };
  // The headers of an answer: the request id, the app's, then oidc-provider's for these routes (no-store, CORS
  // without an Origin), then Koa's for JSON and the length. One list per route, its two values filled in per
  // answer: writeHead copies it into the head at once.
  const headersOf = (route: LeanRoute): string[] => [
    'X-Request-Id', '',
    ...deps.commonHeaders.flat(),
    'Cache-Control', 'no-store', 'Vary', 'Origin', 'Access-Control-Allow-Origin', '*', 'Access-Control-Expose-Headers', EXPOSED[route],
    'Content-Type', 'application/json; charset=utf-8',
    'Content-Length', '',
  ];
  const answerHeaders = { token: headersOf('token'), introspection: headersOf('introspection') };
  // The adapter instance oidc-provider itself uses for this model (its `upsert` and `find`: one format, one set of indexes).
  let modelAdapter: Adapter | undefined;
  const adapter = () => (modelAdapter ??= (provider.ClientCredentials as unknown as { adapter: Adapter }).adapter);
  const refresh = leanRefresh(provider, deps.onRefreshReused ?? (() => {}));

  /**
   * The client authenticated the way it was registered (client_secret_basic or _post), or undefined for
   * anything else; a promise only when the lockout's or the client's answer is not in memory.
   */
  function authenticated(req: LeanRequest, params: ParsedUrlQuery): BuiltClient | undefined | Promise<BuiltClient | undefined> {
    const header = req.headers.authorization;
    let id: unknown;
    let secret: unknown;
    let method: string;
    if (header !== undefined) {
      if (params.client_secret !== undefined) return undefined;
      // `Basic <value>`: one space, the scheme in any case, the value base64 (split by hand: no arrays per request).
      const space = header.indexOf(' ');
      const value = header.slice(space + 1);
      if (space !== 5 || header.slice(0, 5).toLowerCase() !== 'basic' || !value || !BASE64.test(value) || value.length % 4 !== 0) return undefined;
      const basic = Buffer.from(value, 'base64').toString('utf8');
      const colon = basic.indexOf(':');
      if (colon === -1) return undefined;
      // Form-encoded, as RFC 6749 §2.3.1 asks (openid-client encodes `-` and `_` too): decoded as oidc-provider's client_auth.js does.
      id = formDecoded(basic.slice(0, colon));
      secret = formDecoded(basic.slice(colon + 1));
      if (params.client_id !== undefined && params.client_id !== id) return undefined;
      method = 'client_secret_basic';
    } else {
      id = params.client_id;
      secret = params.client_secret;
      method = 'client_secret_post';
    }
    if (typeof id !== 'string' || typeof secret !== 'string' || !PLAIN.test(id) || !PLAIN.test(secret)) return undefined;
    const source = { account: clientAuthSource(id, req.ip), ip: req.ip };
    // Both answers in memory (the usual case): no promise. The lockout is asked first either way.
    const known = clientLockout.knownUnlocked(source) ? (cachedClient(provider, id) as BuiltClient | undefined) : undefined;
    if (known) return provedBy(known, method, secret);
    return (async () => {
      // A locked source is refused (429) by oidc-provider's path; the "not locked" answer is cached (Lockout.watch).
      if (!(await clientLockout.check(source)).allowed) return undefined;
      const client = (await provider.Client.find(id).catch(() => undefined)) as BuiltClient | undefined;
      return client && provedBy(client, method, secret);
    })();
  }

  /** The client, when registered for `method` with a secret that does not expire and `secret` is it. */
  function provedBy(client: BuiltClient, method: string, secret: string): BuiltClient | undefined {
    if (client.clientAuthMethod !== method || client.clientSecretExpiresAt) return undefined;
    // The current secret, or the previous one within its overlap (provider-internals.ts `digestedClientSecrets`).
    if (!clientSecretMatches({ client_secret: client.clientSecret, previous_client_secret: client.previous_client_secret }, secret, registry.nowSeconds())) return undefined;
    return client;
  }

  // Each client's last grants by scope parameter, with a test that the registry's cache still holds the
  // very answers they were made from (an answer reloaded, expired or dropped is another object).
  type GrantMade = { grant: MachineGrant | undefined; held: () => boolean };
  const grantsMade = new WeakMap<BuiltClient, Map<string, GrantMade>>();

  /**
   * The scopes and API of a client_credentials request, as provider.ts `machineClientResource` and
   * `getResourceServerInfo` resolve them; undefined when in doubt. A promise only when the registry's
   * answers are not all in memory.
   */
  function machineGrant(client: BuiltClient, scopeParam: string | undefined): MachineGrant | undefined | Promise<MachineGrant | undefined> {
    const key = scopeParam ?? '';
    let made = grantsMade.get(client);
    const known = made?.get(key);
    if (known?.held()) return known.grant;
    const now = machineGrantNow(client, scopeParam);
    if (now instanceof Promise) return now;
    if (!made) grantsMade.set(client, (made = new Map<string, GrantMade>()));
    // The client chooses its scope parameters: a few are kept.
    if (made.size >= 100) made.clear();
    made.set(key, now);
    return now.grant;
  }

  /** `machineGrant` from the registry's answers in memory, and how to tell they still are; a promise (reading storage) when one is not. */
  function machineGrantNow(client: BuiltClient, scopeParam: string | undefined) {
    const registered = String(client.scope ?? '').split(' ').filter(Boolean);
    const named = scopeParam === undefined ? [] : scopeParam.split(' ');
    // OpenID scopes, or scopes the client lacks: oidc-provider's refusals (or its odd cases).
    if (named.some((s) => OIDC_SCOPES.has(s) || !registered.includes(s))) return { grant: undefined, held: () => true };
    const scopes = named.length ? named : registered.filter((s) => !OIDC_SCOPES.has(s));
    const answers: object[] = [];
    const owners: (string | undefined)[] = [];
    for (const scope of scopes) {
      const hit = registry.cachedScopeOwner(scope);
      if (!hit) return machineGrantRead(registered, named, scopes);
      answers.push(hit);
      owners.push(hit.value);
    }
    const api = soleApi(scopes, owners, named.length > 0);
    const resource = api && registry.cachedResource(api.uri);
    if (api && !resource) return machineGrantRead(registered, named, scopes);
    const held = () => scopes.every((s, i) => registry.cachedScopeOwner(s) === answers[i]) && (!api || registry.cachedResource(api.uri) === resource);
    return { grant: api && grantOf(resource!.value, api, registered, named), held };
  }

  /** `machineGrant` reading through the registry, in the order oidc-provider's path reads. */
  async function machineGrantRead(registered: string[], named: string[], scopes: string[]): Promise<MachineGrant | undefined> {
    const owners: (string | undefined)[] = [];
    for (const scope of scopes) {
      const owner = await registry.resourceForScope(scope);
      if (!owner && named.length) return undefined;
      owners.push(owner);
    }
    const api = soleApi(scopes, owners, named.length > 0);
    return api && grantOf(await registry.findResource(api.uri), api, registered, named);
  }

  /** The answer to a common refresh (lean-refresh.ts), its rotation stored; undefined when it is not one. */
  async function refreshGrant(req: LeanRequest, params: ParsedUrlQuery): Promise<Answer | undefined> {
    const presented = params.refresh_token;
    if (typeof presented !== 'string' || !REFRESH_TOKEN_ID.test(presented) || !onlyStrings(params, REFRESH_PARAMS)) return undefined;
    const client = await authenticated(req, params);
    if (!client || !client.grantTypeAllowed('refresh_token')) return undefined;
    const answer = await refresh(client, presented);
    return answer && { ...answer, grantType: 'refresh_token' };
  }

  /** The answer to a common client_credentials request, its token stored; undefined when it is not one. */
  async function token(req: LeanRequest, params: ParsedUrlQuery): Promise<Answer | undefined> {
    if (params.grant_type === 'refresh_token') return refreshGrant(req, params);
    if (params.grant_type !== 'client_credentials' || !onlyStrings(params, TOKEN_PARAMS)) return undefined;
    const scopeParam = params.scope as string | undefined;
    if (scopeParam !== undefined && !SCOPE_SYNTAX.test(scopeParam)) return undefined;
    const proved = authenticated(req, params);
    const client = proved instanceof Promise ? await proved : proved;
    if (!client || !client.grantTypeAllowed('client_credentials')) return undefined;
    const granted = machineGrant(client, scopeParam);
    const grant = granted instanceof Promise ? await granted : granted;
    if (!grant) return undefined;
    const id = opaqueId();
    const iat = epochTime();
    // The record oidc-provider's ClientCredentials#save writes, through the same adapter (its key, TTL and the client's index).
    const { scope, ttl, audience: aud } = grant;
    const { clientId } = client;
    // Two literals each rather than spreads: the members in the same order, without copying objects per token.
    const payload: AdapterPayload = scope
      ? { iat, exp: iat + ttl, scope, clientId, aud, jti: id, kind: 'ClientCredentials' }
      : { iat, exp: iat + ttl, clientId, aud, jti: id, kind: 'ClientCredentials' };
    await adapter().upsert(id, payload, ttl);
    const body = scope ? { access_token: id, expires_in: ttl, scope, token_type: 'Bearer' } : { access_token: id, expires_in: ttl, token_type: 'Bearer' };
    return { body, clientId, grantType: 'client_credentials' };
  }

  /** The answer to introspecting an active client-credentials token in the common shape; undefined for anything else. */
  async function introspection(req: LeanRequest, params: ParsedUrlQuery): Promise<Answer | undefined> {
    const value = params.token;
    if (typeof value !== 'string' || !OPAQUE_ID.test(value) || !onlyStrings(params, INTROSPECTION_PARAMS)) return undefined;
    if (params.token_type_hint !== undefined && !HINTS.has(params.token_type_hint as string)) return undefined;
    const proved = authenticated(req, params);
    const client = proved instanceof Promise ? await proved : proved;
    // A signed or encrypted introspection answer is oidc-provider's to make.
    if (!client || client.introspectionSignedResponseAlg || client.introspectionEncryptedResponseAlg) return undefined;
    // The adapter's find: a token of a deleted client is not found. Inactive answers are oidc-provider's (and the limiter's).
    const stored = await adapter().find(value);
    if (!stored) return undefined;
    for (const key in stored) if (!PLAIN_RECORD.has(key)) return undefined;
    const { iat, exp, clientId, aud, scope } = stored as { iat?: unknown; exp?: unknown; clientId?: unknown; aud?: unknown; scope?: unknown };
    const now = epochTime();
    if (typeof iat !== 'number' || typeof exp !== 'number' || typeof clientId !== 'string' || iat > now || exp <= now + 1) return undefined;
    if (!tokenBelongsTo(client, { clientId, aud })) return undefined;
    return { body: { active: true, client_id: clientId, exp, iat, iss: provider.issuer, aud, scope: typeof scope === 'string' && scope ? scope : undefined, token_type: 'Bearer' } };
  }

  /** Writes an answer as the app would (its headers, Koa's JSON), then what the app counts and logs for it. */
  function respond(res: ServerResponse, route: LeanRoute, answer: Answer, started: number) {
    const requestId = randomUUID();
    const json = JSON.stringify(answer.body);
    const headers = answerHeaders[route];
    headers[1] = requestId;
    headers[headers.length - 1] = String(Buffer.byteLength(json));
    res.writeHead(200, headers);
    res.end(json);
    if (answer.clientId !== undefined && answer.grantType !== undefined) onTokenIssued({ requestId, clientId: answer.clientId, grantType: answer.grantType, ...(answer.accountId ? { accountId: answer.accountId } : {}), body: answer.body });
    onAnswered({ requestId, route, body: answer.body, seconds: (performance.now() - started) / 1000 });
  }

  return function leanMachineEndpoints(req, res) {
    const route = req.method !== 'POST' ? undefined : req.url === tokenPath ? 'token' : req.url === introspectionPath ? 'introspection' : undefined;
    if (!route || !commonShape(req.headers)) {
      app(req, res);
      return;
    }
    const started = performance.now();
    void readBody(req).then(async (body) => {
      // A body cut short is oidc-provider's to refuse (400), as is every failure here (its own 503 for storage out of reach).
      try {
        const answer = body.length === Number(req.headers['content-length'])
          ? await (route === 'token' ? token : introspection)({ headers: req.headers, ip: ipOf(req) }, parseQuery(body.toString()))
          : undefined;
        if (answer) return respond(res, route, answer, started);
      } catch {
        // An answer already on its way is left as it is; before that, the app answers instead.
        if (res.headersSent) return;
      }
      app(replayBody(req, body), res);
    });
  };
}

type MachineGrant = { scope: string | undefined; audience: string; ttl: number };

/** The one API that owns the scopes (`owners`, in their order) and its scopes among them; undefined for none, several, or a named scope of none. */
function soleApi(scopes: string[], owners: (string | undefined)[], named: boolean): { uri: string; ownScopes: string[] } | undefined {
  let uri: string | undefined;
  const ownScopes: string[] = [];
  for (const [i, owner] of owners.entries()) {
    if (!owner) {
      if (named) return undefined;
      continue;
    }
    if (uri !== undefined && owner !== uri) return undefined;
    uri = owner;
    ownScopes.push(scopes[i]!);
  }
  return uri === undefined ? undefined : { uri, ownScopes };
}

/** The grant of an API with opaque tokens: the requested scopes (or the API's that were asked for by default) the client holds. */
function grantOf(resource: ResourceServer | undefined, api: { uri: string; ownScopes: string[] }, registered: string[], named: string[]): MachineGrant | undefined {
  const href = URL.parse(api.uri)?.href;
  if (!resource || resource.tokenFormat !== 'opaque' || !href || href.includes('#')) return undefined;
  const allowed = new Set(registered);
  const apiScopes = new Set(resource.scopes.filter((s) => allowed.has(s)));
  if (!apiScopes.size) return undefined;
  const requested = new Set(named.length ? named : api.ownScopes);
  const scope = [...requested].filter((s) => apiScopes.has(s)).join(' ') || undefined;
  return { scope, audience: resource.uri, ttl: resource.ttl };
}

/** A lean answer: its JSON, and for a token the client it was issued to, the grant type and the person it is for. */
interface Answer {
  body: Record<string, unknown>;
  clientId?: string;
  grantType?: string;
  accountId?: string;
}

/** A Basic credential's part, form-decoded (`+` is a space); undefined when it does not decode. */
function formDecoded(part: string): string | undefined {
  if (!part.includes('%') && !part.includes('+')) return part;
  try {
    return decodeURIComponent(part.replaceAll('+', '%20'));
  } catch {
    return undefined;
  }
}

/** Every member one of `allowed` and given once, none empty (oidc-provider reads an empty one as absent). */
function onlyStrings(params: ParsedUrlQuery, allowed: ReadonlySet<string>): boolean {
  for (const key in params) {
    const value = params[key];
    if (!allowed.has(key) || typeof value !== 'string' || value === '') return false;
  }
  return true;
}

/** The headers of the common shape: a short urlencoded body of known length, no DPoP, no CORS, no attestation. */
function commonShape(h: IncomingHttpHeaders): boolean {
  const length = Number(h['content-length']);
  return FORM.test(h['content-type'] ?? '') && Number.isInteger(length) && length > 0 && length <= MAX_BODY
    && h['transfer-encoding'] === undefined && h['content-encoding'] === undefined && h.dpop === undefined && h.origin === undefined
    && h['oauth-client-attestation'] === undefined && h['oauth-client-attestation-pop'] === undefined;
}

/** The body as received; what arrived before an aborted upload, which oidc-provider then refuses as it would have. */
function readBody(req: IncomingMessage): Promise<Buffer> {
  // Events rather than an async iterator: no iterator, promise and microtask per chunk.
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const done = () => {
      req.off('data', onData);
      req.off('end', done);
      req.off('error', done);
      req.off('close', done);
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    };
    const onData = (chunk: Buffer) => chunks.push(chunk);
    req.on('data', onData);
    req.once('end', done);
    // Aborted: the partial body goes on.
    req.once('error', done);
    req.once('close', done);
  });
}

/**
 * Hands the body read here to oidc-provider's own parser (selective_body.js reads `ctx.req` while it is
 * readable): the app gets a view of the request that yields the same bytes once more.
 */
function replayBody(req: IncomingMessage, body: Buffer): IncomingMessage {
  return Object.create(req, {
    readable: { value: true },
    readableEncoding: { value: null },
    iterator: { value: () => (async function* replay() { yield body; })() },
  }) as IncomingMessage;
}
