import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
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
  'leanMachineEndpoints',
  'cacheablePublicMetadata',
  'missingClientAuthIsInvalidClient',
  'inactiveIntrospectionLimit',
  'revocationAnswersJson',
  'jwtIntrospectionAndRevocation',
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
  test('every middleware in front of oidc-provider is an entry of the one table, installed in its order', () => {
    const { edge, provider } = server.app;
    assert.deepEqual(edge.map((e) => e.name), ORDER);
    assert.deepEqual(edge.filter((e) => !e.middleware).map((e) => e.name), ['logoRoutes', 'signUpRoutes', 'devOutbox', 'demoRoutes'], 'outside development only the logo (no BRAND_LOGO file here), sign-up (SIGNUP off by default), the outbox and the demo are left out');
    const installed = edge.flatMap((e) => (e.middleware ? [e.middleware] : []));
    const stack = (provider as unknown as { middleware: unknown[] }).middleware;
    assert.equal(stack.length, installed.length + 1, "nothing but the table, then oidc-provider's own routes");
    assert.deepEqual(stack.slice(0, installed.length), installed);
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

  test('docs/architecture.md lists the same entries in the same order', () => {
    const page = readFileSync(new URL('../docs/architecture.md', import.meta.url), 'utf8');
    const section = page.slice(page.indexOf('## The HTTP edge'));
    const listed = [...section.matchAll(/^\| \d+ \| `(\w+)` \|/gm)].map((m) => m[1]);
    assert.deepEqual(listed, ORDER);
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
