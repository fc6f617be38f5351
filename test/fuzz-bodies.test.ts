import assert from 'node:assert/strict';
import { request } from 'node:http';
import { gzipSync } from 'node:zlib';
import { test } from 'node:test';
import { adminApiUri } from '../src/admin/api.ts';
import { browse, CookieJar, endpoints, follow, hiddenField, pkcePair, signIn } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { useWorld, type World } from './helpers/world.ts';

/**
 * Every route the app serves — our @koa/router routes and oidc-provider's — gets malformed bodies,
 * encodings, content types and query strings. None may answer 5xx, hang, or log an error with a stack.
 */
let server: TestServer;
let world: World;
// SIGNUP=open: its pages are routes too.
useWorld({ env: { SIGNUP: 'open' } }, (setup) => ({ server, world } = setup));

/** oidc-provider's route names (lib/helpers/initialize_app.js); `pathFor` drops those of disabled features. */
const PROVIDER_ROUTES = [
  'authorization', 'resume', 'userinfo', 'token', 'jwks', 'discovery', 'openid_credential_issuer', 'credential', 'challenge',
  'registration', 'client', 'revocation', 'introspection', 'end_session', 'end_session_confirm', 'end_session_success',
  'device_authorization', 'code_verification', 'device_resume', 'pushed_authorization_request', 'backchannel_authentication',
];

interface Route {
  method: string;
  path: string;
}

/** Our routers are found in the edge table (@koa/router marks its dispatcher); oidc-provider's by name. */
function everyRoute(uid: string): Route[] {
  const routes: Route[] = [];
  for (const { middleware } of server.app.edge as unknown as { middleware?: { router?: { stack: { path: string; methods: string[] }[] } } }[]) {
    for (const layer of middleware?.router?.stack ?? []) {
      const path = layer.path.replace(':uid', uid);
      for (const method of layer.methods.filter((m) => m !== 'HEAD')) routes.push({ method, path });
    }
  }
  for (const name of PROVIDER_ROUTES) {
    let path: string;
    try {
      path = server.app.provider.pathFor(name, { uid, clientId: world.shop.clientId });
    } catch {
      continue;
    }
    for (const method of ['GET', 'POST']) routes.push({ method, path });
  }
  return routes;
}

interface Malformed {
  name: string;
  headers: Record<string, string>;
  body?: Buffer | string;
  query?: string;
}

const FORM = 'application/x-www-form-urlencoded';

function malformed(csrf: string): Malformed[] {
  const plain = `_csrf=${csrf}&email=a%40example.org&password=x&code=123456&token=${'a'.repeat(43)}&new_email=b%40example.org&new_password=y`;
  return [
    { name: 'gzip header, plain body', headers: { 'content-type': FORM, 'content-encoding': 'gzip' }, body: plain },
    { name: 'deflate header, plain body', headers: { 'content-type': FORM, 'content-encoding': 'deflate' }, body: plain },
    { name: 'br header, plain body', headers: { 'content-type': FORM, 'content-encoding': 'br' }, body: plain },
    { name: 'truncated gzip', headers: { 'content-type': FORM, 'content-encoding': 'gzip' }, body: gzipSync(plain).subarray(0, 20) },
    { name: 'unknown encoding', headers: { 'content-type': FORM, 'content-encoding': 'x-unknown' }, body: plain },
    { name: 'text/plain', headers: { 'content-type': 'text/plain' }, body: plain },
    { name: 'JSON', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ _csrf: csrf, email: ['a'], password: { $gt: '' } }) },
    { name: 'broken JSON', headers: { 'content-type': 'application/json' }, body: '{"_csrf": ' },
    { name: 'multipart garbage', headers: { 'content-type': 'multipart/form-data; boundary=x' }, body: '--x\r\nbroken' },
    { name: 'unknown charset', headers: { 'content-type': `${FORM}; charset=x-bogus` }, body: plain },
    { name: 'huge body', headers: { 'content-type': FORM }, body: `${plain}&pad=${'a'.repeat(1024 * 1024)}` },
    { name: 'invalid UTF-8', headers: { 'content-type': FORM }, body: Buffer.concat([Buffer.from(`_csrf=${csrf}&email=`), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('&code=\u0000')]) },
    { name: 'invalid percent-encoding', headers: { 'content-type': FORM }, body: `_csrf=${csrf}&email=%zz%E0%A4%A&password=%&code=%C0%AF`, query: 'a=%zz&%E0%A4%A=1' },
    { name: 'duplicate params', headers: { 'content-type': FORM }, body: `_csrf=${csrf}&_csrf=${csrf}&email=a&email=b&code=1&code=2`, query: 'client_id=a&client_id=b&scope=openid&scope=openid' },
    { name: 'array and object params', headers: { 'content-type': FORM }, body: `_csrf=${csrf}&email[]=a&password[x]=b&code[0][1]=c&__proto__[admin]=1`, query: 'client_id[]=a&redirect_uri[x]=b&__proto__[x]=1' },
    { name: 'empty form body', headers: { 'content-type': FORM }, body: '' },
    { name: 'no content type', headers: {}, body: plain },
  ];
}

/**
 * Every query parameter of the admin API and console, one at a time, with values that are wrong or out of
 * range (stream ids Redis refuses, times past what a Date holds, numbers past 2^53).
 */
const ADMIN_QUERY_PARAMS = ['cursor', 'limit', 'q', 'event', 'account_id', 'client_id', 'from', 'to', 'person', 'client'];
const ADMIN_QUERY_VALUES = ['0-0', '0-1', '99999999999999999999', '-1', '1e400', '9007199254740993-9007199254740993', '', '%00', '%E0%A4%A', 'x'.repeat(3000), '275761-01-01T00:00', '-000001-01-01T00:00'];

function adminQueryAttacks(): Malformed[] {
  return ADMIN_QUERY_PARAMS.flatMap((name) => ADMIN_QUERY_VALUES.map((value) => ({ name: `query ${name}=${value.slice(0, 24)}`, headers: {}, query: `${name}=${value}` })));
}

function send(route: Route, attack: Malformed, cookie: string, authorization?: string) {
  const path = attack.query ? `${route.path}${route.path.includes('?') ? '&' : '?'}${attack.query}` : route.path;
  const body = attack.body === undefined ? undefined : Buffer.from(attack.body);
  const headers = { accept: 'text/html', cookie, ...(authorization ? { authorization } : {}), ...attack.headers, ...(body ? { 'content-length': String(body.length) } : {}) };
  return new Promise<{ status: number; type: string }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: server.port, method: route.method, path, headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type'] ?? '') }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('no answer in 10 s')));
    // The server may answer (413) before it has read a huge body, and close: the answer still counts.
    req.once('error', reject);
    req.end(body);
  });
}

test('no route answers 5xx, hangs or logs a stack for a malformed request', async (t) => {
  // An interaction (its cookie and CSRF token), and a signed-in session for /account.
  const signedIn = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid' });
  const jar = new CookieJar();
  const auth = new URL('/auth', server.issuer);
  auth.search = new URLSearchParams({ client_id: world.shop.clientId, redirect_uri: world.shop.redirectUri, response_type: 'code', scope: 'openid', code_challenge: pkcePair().challenge, code_challenge_method: 'S256' }).toString();
  const login = (await follow(jar, server.issuer, await browse(jar, auth), auth)).page!;
  const uid = login.url.pathname.split('/')[2]!;
  const accountPage = await (await browse(signedIn.jar, new URL('/account', server.issuer))).text();

  const routes = everyRoute(uid);
  assert.ok(routes.some((r) => r.path === `/interaction/${uid}/login` && r.method === 'POST'), 'our routes were found');
  assert.ok(routes.some((r) => r.path === '/account/password'), 'the account page routes were found');
  assert.ok(routes.some((r) => r.path === '/token' && r.method === 'POST'), "oidc-provider's routes were found");

  // The admin API with a working admin token (a fresh one per route: its per-token limit is not what this is about);
  // the console with the signed-in person made an admin (their session used a second factor).
  const admins = await server.app.registry.createClient({ name: 'fuzz admin', grants: ['client_credentials'], scope: 'latchkey:admin' }, async () => {});
  const adminToken = async () => {
    const res = await endpoints(server.issuer).token({ clientId: admins.clientId, secret: admins.secret! }, { grant_type: 'client_credentials', scope: 'latchkey:admin', resource: adminApiUri(server.issuer) });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return `Bearer ${String(res.body.access_token)}`;
  };
  await server.app.accounts.setAdmin(world.user.id, true);
  assert.equal((await browse(signedIn.jar, new URL('/admin/activity', server.issuer))).status, 200, 'the console lets the admin in');
  assert.ok(routes.some((r) => r.path === '/admin/api/v1/activity'), 'the admin API routes were found');
  assert.ok(routes.some((r) => r.path === '/setup/:token' && r.method === 'POST'), 'the setup link routes were found');
  assert.ok(routes.some((r) => r.path === '/admin/providers/:id/settings' && r.method === 'POST'), "the console's sign-in providers routes were found");
  assert.ok(routes.some((r) => r.path === '/upstream/callback') && routes.some((r) => r.path === '/account/providers/confirm'), 'the upstream sign-in routes were found');

  const failures: string[] = [];
  const logged = server.logs.length;
  let sent = 0;
  for (const route of routes) {
    const url = new URL(route.path, server.issuer);
    const cookie = [jar.header(url), signedIn.jar.header(url)].filter(Boolean).join('; ');
    const csrf = route.path.startsWith('/account') ? hiddenField(accountPage, '_csrf')! : hiddenField(login.html, '_csrf')!;
    const authorization = route.path.startsWith('/admin/api/v1') ? await adminToken() : undefined;
    const attacks = [...malformed(csrf), ...(route.method === 'GET' && route.path.startsWith('/admin') ? adminQueryAttacks() : [])];
    for (const attack of attacks) {
      sent += 1;
      try {
        const { status, type } = await send(route, attack, cookie, authorization);
        if (status >= 500) failures.push(`${route.method} ${route.path}, ${attack.name}: ${status}`);
        // The admin API refuses with problem details (RFC 9457).
        else if (authorization && status >= 400 && !type.startsWith('application/problem+json')) failures.push(`${route.method} ${route.path}, ${attack.name}: ${status} ${type}`);
      } catch (err) {
        failures.push(`${route.method} ${route.path}, ${attack.name}: ${(err as Error).message}`);
      }
    }
  }
  const stacks = server.logs.slice(logged).filter((l) => (l.level as number) >= 50 || JSON.stringify(l).includes('"stack"'));
  assert.deepEqual(failures, []);
  assert.deepEqual(stacks.map((l) => `${l.msg}: ${JSON.stringify(l.err ?? l).slice(0, 300)}`), []);
  assert.ok(routes.length >= 30, `${routes.length} routes`);
  t.diagnostic(`${routes.length} routes, ${sent} malformed requests`);
});

test('a form whose Content-Encoding does not match its body is a 400 that says so', async () => {
  for (const path of ['/interaction/any-uid/login', '/account/password']) {
    const res = await fetch(new URL(path, server.issuer), { method: 'POST', headers: { 'content-type': FORM, 'content-encoding': 'gzip', accept: 'text/html' }, body: 'email=a' });
    assert.equal(res.status, 400, path);
    assert.match(await res.text(), /the request body could not be decoded/, path);
  }
});
