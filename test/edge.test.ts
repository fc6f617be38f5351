import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { EdgeEntry } from '../src/edge.ts';
import { UPSTREAM_WORDING } from '../src/oidc/provider-wording.ts';
import { basic, pkcePair } from './helpers/flow.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { REDIRECT_URI } from './helpers/world.ts';

/**
 * The HTTP edge is one ordered table (src/app.ts, src/edge.ts): every middleware and router in front of
 * oidc-provider's routes is an entry of it, installed in its order. A reordering changes this list.
 */
const ORDER = [
  'requestContext',
  'pinIssuerOrigin',
  'securityHeaders',
  'cacheablePublicMetadata',
  'missingClientAuthIsInvalidClient',
  'inactiveIntrospectionLimit',
  'revocationAnswersJson',
  'jwtIntrospectionAndRevocation',
  'tokenReadAhead',
  'clearerErrors',
  'discoveryListsApiScopes',
  'staticRoutes',
  'logoRoutes',
  'languageSwitch',
  'opsRoutes',
  'countFailedClientAuthentication',
  'deviceFlowEdges',
  'deviceGrantNotAllowedIsUnauthorizedClient',
  'interactionRoutes',
  'accountRoutes',
  'passwordResetRoutes',
  'emailAddressRoutes',
  'invitationRoutes',
  'signUpRoutes',
  'sameOriginLogout',
  'formPostAsGet',
  'adminApiRoutes',
  'adminApiNotFound',
  'consoleRoutes',
  'setupRoutes',
  'devOutbox',
  'demoRoutes',
  'upstreamRoutes',
  'upstreamSessionRecord',
];

/** Paths of every kind: oidc-provider's, ours, under a prefix, in another case, with a trailing slash, nobody's. */
const SAMPLE_PATHS = [
  '/token', '/token/', '/TOKEN', '/token/introspection', '/token/revocation', '/token/other', '/me', '/jwks', '/auth', '/auth/x', '/device', '/device/auth',
  '/session/end/confirm', '/.well-known/openid-configuration', '/interaction/x/login', '/interaction/x/upstream/y', '/account', '/Account/sudo',
  '/account/providers', '/admin', '/admin/api/v1/clients', '/admin/api/openapi.json', '/static/style.css', '/static/logo', '/language',
  '/metrics', '/password/forgot', '/email/verify', '/invitation', '/signup', '/setup/abc', '/upstream/callback', '/unknown', '/', '//token',
];

/** oidc-provider 9's POST routes, by name (lib/helpers/initialize_app.js); those our configuration enables have a path. */
const UPSTREAM_POST_ROUTES = [
  'authorization', 'userinfo', 'token', 'credential', 'challenge', 'registration', 'revocation', 'introspection', 'end_session_confirm',
  'end_session', 'device_authorization', 'code_verification', 'pushed_authorization_request', 'backchannel_authentication',
];

let server: TestServer;
before(async () => {
  server = await startServer({ env: { CLIENT_AUTH_MAX_FAILURES: '2' } });
});
after(() => server.close());

const post = (path: string, form: Record<string, string>, authorization?: string) =>
  fetch(new URL(path, server.issuer), {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...(authorization ? { authorization } : {}) },
    body: new URLSearchParams(form),
  });

describe('the edge', () => {
  test('every middleware in front of oidc-provider is an entry of the one table, met in its order', () => {
    const { edge, edgeDispatch, provider } = server.app;
    assert.deepEqual(edge.map((e) => e.name), ORDER);
    assert.deepEqual(edge.filter((e) => !e.middleware).map((e) => e.name), ['logoRoutes', 'signUpRoutes', 'devOutbox', 'demoRoutes'], 'outside development only the logo (no BRAND_LOGO file here), sign-up (SIGNUP off by default), the outbox and the demo are left out');
    const installed = edge.filter((e) => e.middleware);
    // The entries that act on every request first, then the one dispatch, then oidc-provider's own routes.
    const stack = (provider as unknown as { middleware: { name?: string }[] }).middleware;
    const leading = installed.slice(0, 3);
    assert.deepEqual(leading.map((e) => e.name), ['requestContext', 'pinIssuerOrigin', 'securityHeaders']);
    assert.deepEqual(stack.slice(0, 3), leading.map((e) => e.middleware));
    assert.equal(stack.length, 5, "nothing but those, the dispatch, then oidc-provider's own routes");
    assert.equal(stack[3]!.name, 'edgeDispatch');
    // Any path's chain keeps the table's order, and an unusual path meets every installed entry, as before the dispatch.
    for (const path of SAMPLE_PATHS) {
      const names = edgeDispatch.entriesFor(path).map((e) => e.name);
      assert.deepEqual(names, ORDER.filter((n) => names.includes(n)), path);
    }
    assert.deepEqual(edgeDispatch.entriesFor('/caf\u00e9'), installed);
  });

  test('a request meets only the entries that can act on its path: one lookup, not every router', () => {
    const { edgeDispatch } = server.app;
    const first = ['requestContext', 'pinIssuerOrigin', 'securityHeaders'];
    const clientAuth = ['missingClientAuthIsInvalidClient', 'countFailedClientAuthentication'];
    const expected: Record<string, string[]> = {
      '/token': [...first, clientAuth[0]!, 'tokenReadAhead', 'clearerErrors', clientAuth[1]!, 'deviceFlowEdges'],
      '/TOKEN/': [...first, clientAuth[0]!, 'tokenReadAhead', 'clearerErrors', clientAuth[1]!, 'deviceFlowEdges'],
      '/token/introspection': [...first, clientAuth[0]!, 'inactiveIntrospectionLimit', 'jwtIntrospectionAndRevocation', clientAuth[1]!],
      '/token/revocation': [...first, clientAuth[0]!, 'revocationAnswersJson', 'jwtIntrospectionAndRevocation', clientAuth[1]!],
      '/me': [...first, 'clearerErrors'],
      '/.well-known/openid-configuration': [...first, 'cacheablePublicMetadata', 'discoveryListsApiScopes'],
      '/.well-known/oauth-authorization-server': [...first, 'cacheablePublicMetadata', 'discoveryListsApiScopes'],
      '/auth': [...first, 'formPostAsGet', 'upstreamSessionRecord'],
      '/auth/some-uid': [...first, 'formPostAsGet', 'upstreamSessionRecord'],
      '/device': [...first, 'deviceFlowEdges'],
      '/device/auth': [...first, clientAuth[0]!, clientAuth[1]!, 'deviceFlowEdges', 'deviceGrantNotAllowedIsUnauthorizedClient'],
      '/session/end/confirm': [...first, 'sameOriginLogout'],
      '/interaction/x/login': [...first, 'interactionRoutes', 'upstreamRoutes'],
      '/account': [...first, 'accountRoutes', 'upstreamRoutes'],
      '/account/providers/link': [...first, 'accountRoutes', 'upstreamRoutes'],
      '/admin/api/v1/clients': [...first, 'adminApiRoutes', 'adminApiNotFound', 'consoleRoutes'],
      '/admin': [...first, 'adminApiRoutes', 'adminApiNotFound', 'consoleRoutes'],
      '/static/style.css': [...first, 'staticRoutes'],
      '/healthz': [...first, 'opsRoutes'],
      '/password/reset': [...first, 'passwordResetRoutes'],
      '/unknown': first,
      '/': first,
    };
    for (const [path, names] of Object.entries(expected)) assert.deepEqual(edgeDispatch.entriesFor(path).map((e) => e.name), names, path);
  });

  test('a /token request enters none of our routers; a request of theirs enters its own', async () => {
    // Each router of the table counts the paths it matches itself against (@koa/router's `match`).
    const seen = new Map<string, string[]>();
    const restore: (() => void)[] = [];
    for (const entry of server.app.edge) {
      const router = (entry.middleware as { router?: { match: (path: string, method: string) => unknown } } | undefined)?.router;
      if (!router) continue;
      const match = router.match;
      seen.set(entry.name, []);
      router.match = function (path, method) {
        seen.get(entry.name)!.push(path);
        return match.call(this, path, method);
      };
      restore.push(() => (router.match = match));
    }
    try {
      const token = await post('/token', { grant_type: 'client_credentials' });
      assert.equal(token.status, 401);
      assert.deepEqual([...seen].filter(([, paths]) => paths.length > 0), [], 'no router was entered for /token');
      const introspection = await post('/token/introspection', { token: 'made-up' });
      assert.equal(introspection.status, 401);
      assert.deepEqual([...seen].filter(([, paths]) => paths.length > 0), [], 'nor for /token/introspection');
      const account = await fetch(new URL('/account', server.issuer), { redirect: 'manual' });
      assert.equal(account.status, 303, 'the account page sends a signed-out person to sign in');
      assert.deepEqual([...seen].filter(([, paths]) => paths.length > 0).map(([name]) => name), ['accountRoutes'], 'the account page answers it');
    } finally {
      for (const undo of restore) undo();
    }
  });

  test("every path oidc-provider routes by a name meets every entry declared for that name", async () => {
    const { edge, edgeDispatch } = server.app;
    // The request line names oidc-provider's route: what its own router decided, whatever the table says.
    const requests: [string, string][] = [
      ['GET', '/.well-known/openid-configuration'], ['GET', '/.well-known/oauth-authorization-server'], ['GET', '/jwks'],
      ['GET', '/auth'], ['GET', '/auth/made-up-uid'], ['GET', '/AUTH/'], ['POST', '/token'], ['POST', '/Token/'], ['OPTIONS', '/token'],
      ['POST', '/token/introspection'], ['POST', '/token/revocation'], ['GET', '/me'], ['POST', '/request'], ['GET', '/session/end'],
      ['POST', '/session/end/confirm'], ['GET', '/session/end/success'], ['POST', '/device/auth'], ['GET', '/device'], ['GET', '/device/made-up-uid'],
    ];
    const routed = new Set<string>();
    for (const [method, path] of requests) {
      const res = await fetch(new URL(path, server.issuer), { method, redirect: 'manual' });
      const line = server.logs.find((l) => l.msg === 'request' && l.requestId === res.headers.get('x-request-id'));
      const route = String(line?.route);
      assert.notEqual(route, 'unmatched', `${method} ${path} is one of oidc-provider's routes`);
      routed.add(route);
      const met = edgeDispatch.entriesFor(path);
      for (const entry of edge.filter((e) => e.middleware && e.oidcRoutes?.has(route))) assert.ok(met.includes(entry), `${method} ${path} (${route}) meets ${entry.name}`);
    }
    const declared = new Set(edge.filter((e) => e.middleware).flatMap((e) => [...(e.oidcRoutes ?? [])]));
    assert.deepEqual([...declared].filter((name) => !routed.has(name)), [], 'every route an entry names was requested here');
  });

  test('the request line records the status the client got, after the answer rewrites', async () => {
    // No client authentication at all: oidc-provider says 400 invalid_request, the edge rewrites it to 401 invalid_client.
    const res = await post('/token', { grant_type: 'client_credentials' });
    assert.equal(res.status, 401);
    const requestId = res.headers.get('x-request-id');
    const line = server.logs.find((l) => l.msg === 'request' && l.requestId === requestId);
    assert.ok(line, 'one request line for it');
    assert.equal(line.status, 401);
  });

  test('docs/architecture.md lists the same entries in the same order, acting where the table says', () => {
    const page = readFileSync(new URL('../docs/architecture.md', import.meta.url), 'utf8');
    const section = page.slice(page.indexOf('## The HTTP edge'));
    const rows = [...section.matchAll(/^\| \d+ \| `(\w+)` \| ([^|]+) \|/gm)];
    assert.deepEqual(rows.map((m) => m[1]), ORDER);
    const actsOn = (e: EdgeEntry) => (e.paths || e.oidcRoutes ? [...(e.paths ?? []), ...(e.oidcRoutes ?? [])].map((p) => `\`${p}\``).join(', ') : 'all');
    assert.deepEqual(rows.map((m) => `${m[1]}: ${m[2]}`), server.app.edge.map((e) => `${e.name}: ${actsOn(e)}`));
  });

  test("every route of oidc-provider that authenticates clients is in the throttle's entry", async () => {
    const throttle = server.app.edge.find((e) => e.name === 'countFailedClientAuthentication');
    const found: string[] = [];
    for (const name of UPSTREAM_POST_ROUTES) {
      let path: string;
      try {
        path = server.app.provider.pathFor(name);
      } catch {
        continue; // not enabled here
      }
      const res = await post(path, {});
      const body = (await res.json().catch(() => ({}))) as { error?: string; error_description?: string };
      if (body.error === 'invalid_client' || body.error_description === UPSTREAM_WORDING.noClientAuthentication) found.push(name);
    }
    assert.deepEqual(found.sort(), ['device_authorization', 'introspection', 'pushed_authorization_request', 'revocation', 'token']);
    for (const name of found) assert.ok(throttle?.oidcRoutes?.has(name), `${name} is throttled`);
  });

  test('token, introspection, revocation, PAR and device authorization: CLIENT_AUTH_MAX_FAILURES wrong secrets, then 429', async () => {
    const calls: [string, Record<string, string>][] = [
      ['/token', { grant_type: 'refresh_token', refresh_token: 'made-up' }],
      ['/token/introspection', { token: 'made-up' }],
      ['/token/revocation', { token: 'made-up' }],
      ['/request', { response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid', code_challenge: pkcePair().challenge, code_challenge_method: 'S256' }],
      ['/device/auth', { scope: 'openid' }],
    ];
    for (const [path, form] of calls) {
      const c = await server.app.registry.createClient({ name: `Throttled at ${path}`, grants: ['authorization_code'], redirectUris: [REDIRECT_URI], scope: 'openid', secretIn: 'header' }, async () => {});
      const wrong = () => post(path, form, basic(c.clientId, `${c.secret!}x`));
      assert.equal((await wrong()).status, 401, path);
      assert.equal((await wrong()).status, 401, path);
      const throttled = await wrong();
      assert.equal(throttled.status, 429, path);
      assert.equal(((await throttled.json()) as { error: string }).error, 'invalid_client');
      // Even the right secret waits: the source is throttled, not the guess.
      assert.equal((await post(path, form, basic(c.clientId, c.secret!))).status, 429, `${path}, right secret`);
    }
  });
});
