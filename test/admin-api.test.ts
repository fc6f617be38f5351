import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { test } from 'node:test';
import Koa from 'koa';
import { adminApiRoutes, adminApiUri } from '../src/admin/api.ts';
import { keys } from '../src/storage/keys.ts';
import { endpoints, signInAndRedeem } from './helpers/flow.ts';
import { freePort, startRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { enrollTotp, REDIRECT_URI, useWorld, type World } from './helpers/world.ts';

/**
 * The admin API over HTTP, on a real server and Redis: tokens from this server's own token endpoint
 * (client credentials for automation, the code flow for a person), the same operations as the CLI.
 */
let server: TestServer;
let world: World;
useWorld((setup) => ({ server, world } = setup));

const noValidation = async () => {};

/** A machine client with the given admin scope, and a token for the admin API. */
async function adminToken(scope = 'latchkey:admin') {
  const c = await server.app.registry.createClient({ name: `ops ${scope}`, grants: ['client_credentials'], scope }, noValidation);
  const res = await endpoints(server.issuer).token({ clientId: c.clientId, secret: c.secret! }, { grant_type: 'client_credentials', scope, resource: adminApiUri(server.issuer) });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return { token: String(res.body.access_token), clientId: c.clientId };
}

interface Answer {
  status: number;
  headers: Headers;
  body: any;
}

async function api(token: string | undefined, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(`${server.issuer}/admin/api${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // JSON lines or an empty answer.
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

function isProblem(a: Answer, status: number) {
  assert.equal(a.status, status, JSON.stringify(a.body));
  assert.match(a.headers.get('content-type') ?? '', /^application\/problem\+json/);
  assert.equal(a.body.status, status);
  assert.equal(typeof a.body.title, 'string');
  assert.equal(typeof a.body.detail, 'string');
}

test('client credentials with latchkey:admin: clients, APIs, users, keys and lockouts round trip; secrets shown once', async () => {
  const { token } = await adminToken();
  const call = (method: string, path: string, body?: unknown) => api(token, method, path, body);

  const created = await call('POST', '/v1/clients', { name: 'Billing', grants: ['authorization_code'], redirect_uris: ['https://billing.example/cb'], scope: 'openid api:read' });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.client.client_id as string;
  assert.equal(typeof created.body.client_secret, 'string');
  const shown = await call('GET', `/v1/clients/${id}`);
  assert.equal(shown.status, 200);
  assert.equal(shown.body.client_name, 'Billing');
  assert.ok(!JSON.stringify(shown.body).includes(created.body.client_secret), 'the secret is shown once');
  const patch = { name: 'Billing 2', redirect_uris: ['https://billing.example/cb2'] };
  const updated = await call('PATCH', `/v1/clients/${id}`, patch);
  assert.equal(updated.status, 200, JSON.stringify(updated.body));
  assert.deepEqual(updated.body.changed.sort(), ['name', 'redirectUris']);
  assert.deepEqual((await call('PATCH', `/v1/clients/${id}`, patch)).body.changed, [], 'the same change twice changes nothing');
  const rotated = await call('POST', `/v1/clients/${id}/secret`);
  assert.equal(rotated.status, 200);
  assert.notEqual(rotated.body.client_secret, created.body.client_secret);
  // The registry's rules, one copy: an http redirect to a non-loopback host is refused with the rule's words.
  const refused = await call('PATCH', `/v1/clients/${id}`, { redirect_uris: ['http://evil.example/cb'] });
  isProblem(refused, 400);
  assert.match(refused.body.detail, /redirect_uris must use https/);
  // Refresh grace and back-channel logout, set at creation and changed or removed (null) later.
  const tabs = await call('POST', '/v1/clients', { name: 'Tabs', grants: ['authorization_code', 'refresh_token'], redirect_uris: ['https://tabs.example/cb'], scope: 'openid', refresh_grace_seconds: 5, backchannel_logout_uri: 'https://tabs.example/bc' });
  assert.equal(tabs.status, 201, JSON.stringify(tabs.body));
  const tabsId = tabs.body.client.client_id as string;
  assert.deepEqual([tabs.body.client.refresh_grace_seconds, tabs.body.client.backchannel_logout_uri], [5, 'https://tabs.example/bc']);
  isProblem(await call('PATCH', `/v1/clients/${tabsId}`, { refresh_grace_seconds: 61 }), 400);
  isProblem(await call('PATCH', `/v1/clients/${tabsId}`, { refresh_grace_seconds: 'soon' }), 400);
  const plainHttp = await call('PATCH', `/v1/clients/${tabsId}`, { backchannel_logout_uri: 'http://tabs.example/bc' });
  isProblem(plainHttp, 400);
  assert.match(plainHttp.body.detail, /backchannel.logout.uri must use https/);
  const cleared = await call('PATCH', `/v1/clients/${tabsId}`, { refresh_grace_seconds: 0, backchannel_logout_uri: null });
  assert.equal(cleared.status, 200, JSON.stringify(cleared.body));
  assert.deepEqual(cleared.body.changed.sort(), ['backchannelLogoutUri', 'refreshGrace']);
  assert.deepEqual([cleared.body.client.refresh_grace_seconds, cleared.body.client.backchannel_logout_uri], [0, undefined]);
  // First party and the authentication method: none drops the secret; a secret method on a public client answers a new one, once.
  const made = await call('PATCH', `/v1/clients/${tabsId}`, { first_party: true, token_endpoint_auth_method: 'none' });
  assert.equal(made.status, 200, JSON.stringify(made.body));
  assert.deepEqual([made.body.changed.sort(), made.body.client.first_party, made.body.client.public, made.body.client_secret], [['firstParty', 'public'], true, true, undefined]);
  isProblem(await call('PATCH', `/v1/clients/${tabsId}`, { token_endpoint_auth_method: 'private_key_jwt' }), 400);
  const issued = await call('PATCH', `/v1/clients/${tabsId}`, { token_endpoint_auth_method: 'client_secret_post' });
  assert.equal(issued.status, 200, JSON.stringify(issued.body));
  assert.equal(typeof issued.body.client_secret, 'string');
  assert.equal(issued.body.client.token_endpoint_auth_method, 'client_secret_post');
  assert.ok(!JSON.stringify((await call('GET', `/v1/clients/${tabsId}`)).body).includes(issued.body.client_secret), 'shown once');
  assert.equal((await call('DELETE', `/v1/clients/${tabsId}`)).status, 200);

  assert.equal((await call('DELETE', `/v1/clients/${id}`)).status, 200);
  isProblem(await call('GET', `/v1/clients/${id}`), 404);
  isProblem(await call('DELETE', `/v1/clients/${id}`), 404);

  const resource = await call('POST', '/v1/resources', { uri: 'https://reports.example', scope: 'reports:read' });
  assert.equal(resource.status, 201, JSON.stringify(resource.body));
  isProblem(await call('POST', '/v1/resources', { uri: 'https://reports.example', scope: 'reports:other' }), 409);
  const encoded = encodeURIComponent('https://reports.example');
  const changedApi = await call('PATCH', `/v1/resources/${encoded}`, { ttl: 600 });
  assert.equal(changedApi.status, 200, JSON.stringify(changedApi.body));
  assert.equal(changedApi.body.resource.ttl, 600);
  assert.ok((await call('GET', '/v1/resources')).body.resources.some((r: { resource: string }) => r.resource === 'https://reports.example'));
  assert.equal((await call('DELETE', `/v1/resources/${encoded}`)).status, 200);

  const user = await call('POST', '/v1/users', { email: 'Grace@Example.org', name: 'Grace', password: 'a long passphrase' });
  assert.equal(user.status, 201, JSON.stringify(user.body));
  const uid = user.body.user.id as string;
  isProblem(await call('POST', '/v1/users', { email: 'grace@example.org', password: 'a long passphrase' }), 409);
  assert.deepEqual((await call('GET', '/v1/users?q=grace')).body.users.map((u: { email: string }) => u.email), ['grace@example.org']);
  assert.equal((await call('GET', `/v1/users/${uid}`)).body.email, 'grace@example.org');
  for (const [path, body, field, value] of [['disabled', { disabled: true }, 'disabled', true], ['disabled', { disabled: false }, 'disabled', false]] as const) {
    const r = await call('PUT', `/v1/users/${uid}/${path}`, body);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body[field], value);
  }
  const granted = await call('PUT', `/v1/users/${uid}/admin`, { admin: true });
  assert.equal(granted.body.user.admin, true);
  assert.equal((await call('PUT', `/v1/users/${uid}/admin`, { admin: true })).body.changed, false, 'PUT is idempotent');
  assert.equal((await call('PUT', `/v1/users/${uid}/password`, { password: 'another long passphrase' })).status, 200);
  assert.ok(await server.app.accounts.authenticate('grace@example.org', 'another long passphrase'));
  assert.equal((await call('DELETE', `/v1/users/${uid}/mfa`)).body.mfa_removed, false);
  assert.equal((await call('DELETE', `/v1/users/${uid}/lockout`)).body.was_locked, false);
  assert.deepEqual((await call('GET', `/v1/users/${uid}/sessions`)).body.sessions, []);
  assert.equal((await call('DELETE', `/v1/users/${uid}/sessions`)).status, 200);
  assert.equal((await call('DELETE', `/v1/users/${uid}`)).status, 200);
  isProblem(await call('GET', `/v1/users/${uid}`), 404);

  const before = (await call('GET', '/v1/keys')).body.keys.filter((k: { current: boolean }) => k.current);
  const rotation = await call('POST', '/v1/keys/rotate');
  assert.equal(rotation.status, 200);
  assert.deepEqual(rotation.body.retired.sort(), before.map((k: { kid: string }) => k.kid).sort());
  assert.ok(!JSON.stringify(rotation.body).includes('"d"'), 'public parts only');
  assert.ok(Array.isArray((await call('GET', '/v1/lockouts')).body.lockouts));
});

test('a person\'s sessions are listed (never their ids) and a current lockout can be listed and ended', async () => {
  const { token } = await adminToken();
  const { flow } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid' });
  assert.ok(flow.code);
  const sessions = await api(token, 'GET', `/v1/users/${world.user.id}/sessions`);
  assert.equal(sessions.status, 200);
  assert.ok(sessions.body.sessions.length >= 1);
  assert.ok(sessions.body.sessions[0].clients.includes(world.shop.clientId));
  assert.equal(sessions.body.sessions[0].acr, 'urn:latchkey:mfa');
  for (const cookie of flow.jar.header(new URL(server.issuer)).split(';')) {
    const value = cookie.split('=')[1]?.trim() ?? '';
    if (value.length > 20) assert.ok(!JSON.stringify(sessions.body).includes(value), 'no session id');
  }

  // Ten wrong passwords lock the account (the server's own lockout, as at sign-in).
  for (let i = 0; i < 10; i += 1) await server.app.lockout.recordFailure({ factor: 'password', account: 'locked@example.org', ip: '203.0.113.9' });
  const listed = (await api(token, 'GET', '/v1/lockouts')).body.lockouts as { key: string; subject: string; scope: string; emailDigest?: string }[];
  const mine = listed.find((l) => l.subject === 'account' && l.emailDigest);
  assert.ok(mine, JSON.stringify(listed));
  assert.ok(!JSON.stringify(listed).includes('locked@example.org'), 'never what was typed');
  const ended = await api(token, 'DELETE', `/v1/lockouts/${mine.key}`);
  assert.equal(ended.body.was_locked, true);
  assert.ok(!(await api(token, 'GET', '/v1/lockouts')).body.lockouts.some((l: { key: string }) => l.key === mine.key));
  assert.equal((await server.app.lockout.check({ account: 'locked@example.org' })).allowed, true);
  isProblem(await api(token, 'DELETE', '/v1/lockouts/not-a-key'), 404);
});

test('URIs with a line break or other control character: 400 problem+json, nothing stored', async () => {
  const { token } = await adminToken();
  const call = (method: string, path: string, body?: unknown) => api(token, method, path, body);
  const app = { name: 'Ctl', grants: ['authorization_code'], redirect_uris: ['https://ctl.example/cb'], scope: 'openid' };
  for (const [field, value] of [
    ['redirect_uris', ['https://ctl.example/cb\r\nLocation: https://evil.example/']],
    ['redirect_uris', ['https://ctl.example/\tcb']],
    ['post_logout_redirect_uris', ['https://ctl.example/bye\n']],
    ['backchannel_logout_uri', 'https://ctl.example/bc\u0000'],
  ] as const) {
    const refused = await call('POST', '/v1/clients', { ...app, [field]: value });
    isProblem(refused, 400);
    assert.match(refused.body.detail, /must not contain spaces, line breaks or other control characters/);
  }
  const created = await call('POST', '/v1/clients', app);
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.client.client_id as string;
  isProblem(await call('PATCH', `/v1/clients/${id}`, { redirect_uris: ['https://ctl.example/cb\r'] }), 400);
  assert.deepEqual((await call('GET', `/v1/clients/${id}`)).body.redirect_uris, ['https://ctl.example/cb']);
  assert.ok(!(await call('GET', '/v1/clients?limit=100')).body.clients.some((c: { client_name: string; client_id: string }) => c.client_name === 'Ctl' && c.client_id !== id), 'no refused client was stored');
});

test('a device user-code lockout is listed as such and can be ended like the others', async () => {
  const { token } = await adminToken();
  // Wrong user codes from one IP, as the device verification page counts them (device-flow.ts).
  const guesser = { account: 'user-code@198.51.100.7', ip: '198.51.100.7' };
  for (let i = 0; i < 10; i += 1) await server.app.deviceLockout.recordFailure({ factor: 'password', ...guesser });
  assert.equal((await server.app.deviceLockout.check(guesser)).allowed, false);
  const listed = (await api(token, 'GET', '/v1/lockouts')).body.lockouts as { key: string; subject: string; scope: string; ip?: string }[];
  const device = listed.filter((l) => l.scope === 'device');
  // Its "account" is the IP's user-code guesses (the IP's own bar, 50, is not reached).
  assert.deepEqual(device.map((l) => l.subject), ['account'], JSON.stringify(listed));
  for (const lockout of device) {
    const ended = await api(token, 'DELETE', `/v1/lockouts/${lockout.key}`);
    assert.equal(ended.status, 200, JSON.stringify(ended.body));
    assert.equal(ended.body.was_locked, true);
  }
  assert.ok(!(await api(token, 'GET', '/v1/lockouts')).body.lockouts.some((l: { scope: string }) => l.scope === 'device'));
  assert.equal((await server.app.deviceLockout.check(guesser)).allowed, true, 'the IP may enter user codes again');
  isProblem(await api(token, 'DELETE', '/v1/lockouts/device-ip-short'), 404);
});

test('a read-only token reads but cannot write: 403 insufficient_scope naming the scope', async () => {
  const { token } = await adminToken('latchkey:admin:read');
  assert.equal((await api(token, 'GET', '/v1/clients')).status, 200);
  assert.equal((await api(token, 'GET', '/v1/activity')).status, 200);
  const refused = await api(token, 'POST', '/v1/users', { email: 'nope@example.org', password: 'a long passphrase' });
  isProblem(refused, 403);
  assert.match(refused.headers.get('www-authenticate') ?? '', /^Bearer realm="latchkey-admin", error="insufficient_scope".*scope="latchkey:admin"/);
  assert.equal(await server.app.accounts.findByEmail('nope@example.org'), undefined);
});

test('no token, a malformed, unknown, expired or revoked one, or one for another API: 401 with WWW-Authenticate', async () => {
  const none = await api(undefined, 'GET', '/v1/users');
  isProblem(none, 401);
  assert.equal(none.headers.get('www-authenticate'), 'Bearer realm="latchkey-admin"');
  for (const bad of ['Basic Zm9vOmJhcg==', 'Bearer', 'Bearer a b', `Bearer ${'x'.repeat(600)}`, 'Bearer unknown-token-value']) {
    const r = await api(undefined, 'GET', '/v1/users', undefined, { authorization: bad });
    isProblem(r, 401);
    assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer realm="latchkey-admin"/, bad);
  }
  const unknown = await api('A'.repeat(43), 'GET', '/v1/users');
  assert.match(unknown.headers.get('www-authenticate') ?? '', /error="invalid_token"/);

  // A token for the shared test API (same server, other audience) is not an admin token.
  const other = await endpoints(server.issuer).token({ clientId: world.machine.clientId, secret: world.machine.secret }, { grant_type: 'client_credentials', scope: 'api:read' });
  assert.equal(other.status, 200);
  const wrongAudience = await api(String(other.body.access_token), 'GET', '/v1/users');
  isProblem(wrongAudience, 401);
  assert.match(wrongAudience.headers.get('www-authenticate') ?? '', /error="invalid_token"/);

  // Expired: the stored token's expiry moved into the past.
  const { token } = await adminToken();
  const key = keys.model('ClientCredentials', token);
  const stored = (await server.store.getModel(key, { consumable: false }))!;
  await server.store.putModel(key, JSON.stringify({ ...JSON.parse(stored.payload), exp: Math.floor(Date.now() / 1000) - 10 }), 60, undefined, { consumable: false });
  isProblem(await api(token, 'GET', '/v1/users'), 401);

  // Revoked at the revocation endpoint: refused at once.
  const fresh = await adminToken();
  assert.equal((await api(fresh.token, 'GET', '/v1/users')).status, 200);
  await server.store.del(keys.model('ClientCredentials', fresh.token));
  isProblem(await api(fresh.token, 'GET', '/v1/users'), 401);
});

test('a person\'s token: only an enabled admin account gets in, and its changes name the account', async () => {
  const console = await world.newApp('Console', 'openid latchkey:admin');
  const resource = adminApiUri(server.issuer);
  const personToken = async () => (await signInAndRedeem({ issuer: server.issuer, client: console, user: world.user, scope: 'openid latchkey:admin', params: { resource } })).tokens.access_token;
  const asPerson = await personToken();
  isProblem(await api(asPerson, 'GET', '/v1/users'), 401);
  await server.app.accounts.setAdmin(world.user.id, true);
  try {
    const allowed = await api(asPerson, 'POST', '/v1/users', { email: 'made-by-ada@example.org', password: 'a long passphrase' });
    assert.equal(allowed.status, 201, JSON.stringify(allowed.body));
    const events = (await api(asPerson, 'GET', `/v1/activity?event=user_created&account_id=${world.user.id}`)).body.events;
    assert.equal(events[0].accountId, allowed.body.user.id);
    assert.deepEqual(events[0].actor, { kind: 'account', accountId: world.user.id });
    assert.equal(events[0].source, 'admin_api');
    // A disabled admin's token stops working at once (the account is read on every request).
    await server.app.accounts.setDisabled(world.user.id, true);
    try {
      isProblem(await api(asPerson, 'GET', '/v1/users'), 401);
    } finally {
      await server.app.accounts.setDisabled(world.user.id, false);
    }
  } finally {
    await server.app.accounts.setAdmin(world.user.id, false);
  }
  isProblem(await api(asPerson, 'GET', '/v1/users'), 401);
});

test('a person\'s token needs a sign-in with a second factor, as the console does, even under MFA_POLICY=optional', async () => {
  const redis = await startRedis({ ownServer: true });
  const optional = await startServer({ redisUrl: redis.url, env: { MFA_POLICY: 'optional' } });
  try {
    const resource = adminApiUri(optional.issuer);
    const password = 'a long passphrase for the team';
    const account = await optional.app.accounts.create({ email: 'ops@example.org', password, admin: true });
    const app = await optional.app.registry.createClient({ name: 'Ops app', grants: ['authorization_code'], redirectUris: [REDIRECT_URI], scope: 'openid latchkey:admin' }, noValidation);
    const client = { clientId: app.clientId, secret: app.secret!, redirectUri: REDIRECT_URI };
    const personToken = async () => (await signInAndRedeem({ issuer: optional.issuer, client, user: { email: account.email, password }, scope: 'openid latchkey:admin', params: { resource } })).tokens.access_token;
    const users = (token: string) => fetch(`${optional.issuer}/admin/api/v1/users`, { headers: { authorization: `Bearer ${token}` } });

    // A password alone signs this admin in (no factor enrolled, none demanded): the admin API still says no.
    const passwordOnly = await users(await personToken());
    assert.equal(passwordOnly.status, 401);
    assert.match(passwordOnly.headers.get('www-authenticate') ?? '', /error="insufficient_user_authentication".*acr_values="urn:latchkey:mfa"/);
    assert.match(passwordOnly.headers.get('content-type') ?? '', /^application\/problem\+json/);
    await passwordOnly.body?.cancel();

    // With an authenticator app the sign-in asks for it, and the token gets in.
    await enrollTotp(optional, account);
    const withFactor = await users(await personToken());
    assert.equal(withFactor.status, 200);
    await withFactor.body?.cancel();
  } finally {
    await optional.close();
    await redis.dispose();
  }
});

/** Bodies, queries and paths that are wrong in every way we can think of. */
const BAD_BODIES: { name: string; body: string; type?: string }[] = [
  { name: 'not JSON', body: '{"name": ' },
  { name: 'an array', body: '[1,2,3]' },
  { name: 'a string', body: '"hello"' },
  { name: 'null', body: 'null' },
  { name: 'empty object', body: '{}' },
  { name: 'unknown fields', body: '{"bogus": true, "__proto__": {"admin": true}}' },
  { name: 'wrong types', body: '{"name": 5, "grants": "x", "email": [], "password": {}, "disabled": "yes", "admin": 1, "ttl": "60", "uri": 7, "scope": null}' },
  { name: 'huge', body: JSON.stringify({ name: 'x'.repeat(100_000) }) },
  { name: 'form encoded', body: 'name=x', type: 'application/x-www-form-urlencoded' },
  { name: 'deep', body: '['.repeat(5000) + ']'.repeat(5000) },
];
const BAD_QUERIES = ['?limit=0', '?limit=101', '?limit=abc', '?cursor=%00', '?cursor=a&cursor=b', '?bogus=1', '?from=yesterday', '?event=DROP%20TABLE', '?q=' + 'x'.repeat(300), '?cursor=999999999999999999-1', '?cursor=0-0', '?from=99999999999999999999', '?to=-000001-01-01T00:00:00Z'];

test('bad input on every endpoint: a 4xx problem+json, never a 5xx', async () => {
  const document = (await api(undefined, 'GET', '/openapi.json')).body as { paths: Record<string, Record<string, unknown>> };
  let tried = 0;
  for (const [template, methods] of Object.entries(document.paths)) {
    for (const method of Object.keys(methods)) {
      // A token per endpoint: the per-token rate limit is not what this test is about.
      const { token } = await adminToken();
      for (const pathValue of ['does-not-exist', '%E0%A4%A', 'a'.repeat(2000), '..%2F..%2Fetc']) {
        const path = template.replace(/\{[^}]+\}/g, pathValue);
        const answers: Answer[] = [];
        if (['post', 'put', 'patch'].includes(method)) {
          for (const bad of BAD_BODIES) answers.push(await api(token, method.toUpperCase(), path, bad.body, bad.type ? { 'content-type': bad.type } : {}));
        }
        for (const query of BAD_QUERIES) answers.push(await api(token, method.toUpperCase(), `${path}${query}`));
        for (const a of answers) {
          tried += 1;
          assert.ok(a.status >= 400 && a.status < 500, `${method} ${path}: ${a.status} ${JSON.stringify(a.body).slice(0, 200)}`);
          assert.match(a.headers.get('content-type') ?? '', /^application\/problem\+json/, `${method} ${path}`);
        }
      }
    }
  }
  assert.ok(tried > 500, `tried ${tried}`);
  // Field-level errors point at the field.
  const { token } = await adminToken();
  const invalid = await api(token, 'POST', '/v1/users', { email: 'x@example.org', password: 'short' });
  isProblem(invalid, 400);
  assert.deepEqual(invalid.body.errors.map((e: { pointer: string }) => e.pointer), ['#/password']);
  isProblem(await api(token, 'GET', '/v1/nothing-here'), 404);
  assert.equal(server.logs.filter((l) => Number(l.level) >= 50).length, 0, 'no error logged');
});

test('10,000 people page by email with a bounded page size, and search by email prefix', async () => {
  const { token } = await adminToken();
  // Straight into storage, as the accounts module lays them out (argon2 for 10,000 would take minutes).
  const people = Array.from({ length: 10_000 }, (_, i) => ({ id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, email: `p${String(i).padStart(5, '0')}@bulk.example` }));
  for (let i = 0; i < people.length; i += 500) {
    await Promise.all(
      people.slice(i, i + 500).flatMap((p) => [
        server.store.set(keys.account(p.id), JSON.stringify({ ...p, passwordHash: 'x', disabled: false, createdAt: Date.now() })),
        server.store.sortedAdd(keys.accountsByEmail, `${p.email} ${p.id}`),
      ]),
    );
  }
  const seen: string[] = [];
  let cursor: string | undefined;
  let pages = 0;
  do {
    const page = await api(token, 'GET', `/v1/users?limit=100${cursor ? `&cursor=${cursor}` : ''}`);
    assert.equal(page.status, 200);
    assert.ok(page.body.users.length <= 100);
    seen.push(...page.body.users.map((u: { email: string }) => u.email));
    cursor = page.body.next;
    pages += 1;
  } while (cursor);
  const bulk = seen.filter((e) => e.endsWith('@bulk.example'));
  assert.equal(bulk.length, 10_000);
  assert.deepEqual(seen, [...seen].sort(), 'email order');
  assert.ok(pages >= 100);
  const found = await api(token, 'GET', '/v1/users?q=p0999&limit=100');
  assert.deepEqual(found.body.users.map((u: { email: string }) => u.email), Array.from({ length: 10 }, (_, i) => `p0999${i}@bulk.example`));
  assert.equal(found.body.next, undefined);
});

test('activity: every audit event, filtered by event, account, client and time, paged, exported as JSON lines; changes name their actor', async () => {
  const { token, clientId } = await adminToken();
  const started = Date.now();
  const made = await api(token, 'POST', '/v1/users', { email: 'audited@example.org', password: 'a long passphrase' });
  const accountId = made.body.user.id as string;
  await api(token, 'PUT', `/v1/users/${accountId}/disabled`, { disabled: true });
  await api(token, 'PUT', `/v1/users/${accountId}/disabled`, { disabled: false });
  await server.app.activity.flush();

  const about = await api(token, 'GET', `/v1/activity?account_id=${accountId}`);
  assert.deepEqual(about.body.events.map((e: { event: string }) => e.event), ['user_enabled', 'user_disabled', 'user_created']);
  for (const e of about.body.events) assert.deepEqual(e.actor, { kind: 'client', clientId });
  const byActor = await api(token, 'GET', `/v1/activity?client_id=${clientId}&event=user_disabled,user_enabled`);
  assert.deepEqual(byActor.body.events.map((e: { event: string }) => e.event), ['user_enabled', 'user_disabled']);
  // Paging with the cursor.
  const first = await api(token, 'GET', `/v1/activity?account_id=${accountId}&limit=2`);
  assert.equal(first.body.events.length, 2);
  const second = await api(token, 'GET', `/v1/activity?account_id=${accountId}&limit=2&cursor=${first.body.next}`);
  assert.deepEqual(second.body.events.map((e: { event: string }) => e.event), ['user_created']);
  // Time range: nothing of this account before the test started.
  assert.deepEqual((await api(token, 'GET', `/v1/activity?account_id=${accountId}&to=${started - 1}`)).body.events, []);
  assert.equal((await api(token, 'GET', `/v1/activity?account_id=${accountId}&from=${new Date(started).toISOString()}`)).body.events.length, 3);
  // Sign-ins and tokens issued are there too (tokens as counts, written every 250 ms or on flush).
  await server.app.activity.flush();
  assert.ok((await api(token, 'GET', '/v1/activity?event=token_issued')).body.events.length > 0);

  const exported = await api(token, 'GET', `/v1/activity.jsonl?account_id=${accountId}`);
  assert.equal(exported.status, 200);
  assert.match(exported.headers.get('content-type') ?? '', /^application\/jsonl/);
  const lines = String(exported.body).trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((e) => e.event), ['user_enabled', 'user_disabled', 'user_created']);
  // Nothing secret: no password, no token value.
  const all = String((await api(token, 'GET', '/v1/activity.jsonl')).body);
  assert.ok(!all.includes('a long passphrase'));
  assert.ok(!all.includes(token));
});

test('the OpenAPI document lists every route of the router, with its input schemas', async () => {
  const doc = (await api(undefined, 'GET', '/openapi.json')).body;
  assert.equal(doc.openapi, '3.1.0');
  const router = (server.app.edge.map((e) => e.middleware) as unknown as ({ router?: { opts: { prefix?: string }; stack: { path: string; methods: string[] }[] } } | undefined)[]).find((m) => m?.router?.opts.prefix === '/admin/api')!.router!;
  const routes = router.stack.flatMap((layer) => layer.methods.filter((m) => m !== 'HEAD').map((m) => ({ method: m.toLowerCase(), path: layer.path.replace('/admin/api', '').replace(/:([A-Za-z]+)/g, '{$1}') })));
  assert.ok(routes.length > 20);
  for (const r of routes) {
    if (r.path === '/openapi.json') continue;
    assert.ok(doc.paths[r.path]?.[r.method], `${r.method} ${r.path} is documented`);
  }
  assert.equal(doc.paths['/v1/users'].post.requestBody.content['application/json'].schema.properties.email.type, 'string');
  assert.ok(doc.paths['/v1/users'].get.parameters.some((p: { name: string }) => p.name === 'q'));
});

test('admin endpoints are rate limited per token: 429 problem+json with Retry-After', async () => {
  const { token } = await adminToken();
  const { provider, registry, accounts, ops, activity } = server.app;
  const app = new Koa();
  app.use(adminApiRoutes({ provider, store: server.store, registry, accounts, ops, activity, issuer: server.issuer, limits: { perTokenPerMinute: 3 } }).routes());
  const port = await freePort();
  const handle = app.callback();
  const http = createServer((req, res) => void handle(req, res)).listen(port, '127.0.0.1');
  try {
    const statuses: number[] = [];
    let last: Response | undefined;
    for (let i = 0; i < 5; i += 1) {
      last = await fetch(`http://127.0.0.1:${port}/admin/api/v1/keys`, { headers: { authorization: `Bearer ${token}` } });
      statuses.push(last.status);
    }
    assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
    assert.match(last!.headers.get('content-type') ?? '', /^application\/problem\+json/);
    assert.ok(Number(last!.headers.get('retry-after')) > 0);
  } finally {
    http.closeAllConnections();
    await new Promise((r) => http.close(r));
  }
});

test('an API\'s scopes change through PATCH: added ones are claimed, removed ones given up, another API\'s refused', async () => {
  const { token } = await adminToken();
  const call = (method: string, path: string, body?: unknown) => api(token, method, path, body);
  const uri = 'https://reports.example';
  const path = `/v1/resources/${encodeURIComponent(uri)}`;
  assert.equal((await call('POST', '/v1/resources', { uri, scope: 'reports:read' })).status, 201);
  const widened = await call('PATCH', path, { scope: 'reports:read reports:write' });
  assert.equal(widened.status, 200, JSON.stringify(widened.body));
  assert.deepEqual(widened.body.changed, ['scopes']);
  assert.equal(widened.body.resource.scope, 'reports:read reports:write');
  assert.deepEqual((await call('PATCH', path, { scope: 'reports:write reports:read' })).body.changed, [], 'the same scopes in another order change nothing');
  // A machine client gets a token with the added scope for this API.
  const machine = await server.app.registry.createClient({ name: 'reporter', grants: ['client_credentials'], scope: 'reports:write' }, noValidation);
  const issued = await endpoints(server.issuer).token({ clientId: machine.clientId, secret: machine.secret! }, { grant_type: 'client_credentials', scope: 'reports:write', resource: uri });
  assert.equal(issued.status, 200, JSON.stringify(issued.body));
  // A scope another API owns is refused and nothing changes; one this API gave up can be claimed by another.
  isProblem(await call('PATCH', path, { scope: 'reports:read latchkey:admin' }), 409);
  assert.equal((await call('GET', '/v1/resources')).body.resources.find((r: { resource: string }) => r.resource === uri).scope, 'reports:read reports:write');
  assert.equal(await server.app.registry.resourceForScope('latchkey:admin'), adminApiUri(server.issuer));
  assert.deepEqual((await call('PATCH', path, { scope: 'reports:read' })).body.changed, ['scopes']);
  assert.equal(await server.app.registry.resourceForScope('reports:write'), undefined);
  assert.equal((await call('POST', '/v1/resources', { uri: 'https://reports2.example', scope: 'reports:write' })).status, 201);
  isProblem(await call('PATCH', path, { scope: 'openid' }), 400);
  // Discovery lists an API's scopes unless they are private; the admin API's are.
  const discovered = async () => ((await (await fetch(`${server.issuer}/.well-known/openid-configuration`)).json()) as { scopes_supported: string[] }).scopes_supported;
  assert.ok((await discovered()).includes('reports:read'));
  assert.ok(!(await discovered()).includes('latchkey:admin'), 'the admin API\'s scopes are private');
  assert.deepEqual((await call('PATCH', path, { private_scopes: true })).body.changed, ['privateScopes']);
  assert.ok(!(await discovered()).includes('reports:read'));
  const events = (await call('GET', `/v1/activity?event=resource_updated`)).body.events;
  assert.equal(events[0].resource, uri);
  assert.deepEqual(events[0].changed, ['privateScopes']);
  // The admin API itself stays reachable: not deleted, not switched to JWTs.
  const admin = `/v1/resources/${encodeURIComponent(adminApiUri(server.issuer))}`;
  isProblem(await call('DELETE', admin), 409);
  isProblem(await call('PATCH', admin, { token_format: 'jwt' }), 409);
  assert.equal((await call('GET', '/v1/keys')).status, 200);
});

test('an API\'s scope descriptions: set at creation, changed and removed (null) by PATCH, kept out of a removed scope; bad ones are problem+json naming the field', async () => {
  const { token } = await adminToken();
  const call = (method: string, path: string, body?: unknown) => api(token, method, path, body);
  const uri = 'https://journal.example';
  const path = `/v1/resources/${encodeURIComponent(uri)}`;
  const created = await call('POST', '/v1/resources', { uri, scope: 'journal:read journal:write', scope_descriptions: { 'journal:read': '  Read your journal ' } });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  assert.deepEqual(created.body.resource.scope_descriptions, { 'journal:read': 'Read your journal' });
  const described = await call('PATCH', path, { scope_descriptions: { 'journal:write': 'Write in your journal' } });
  assert.deepEqual(described.body.changed, ['scopeDescriptions']);
  assert.deepEqual(described.body.resource.scope_descriptions, { 'journal:read': 'Read your journal', 'journal:write': 'Write in your journal' }, 'those not named stay');
  assert.deepEqual((await call('PATCH', path, { scope_descriptions: { 'journal:write': 'Write in your journal' } })).body.changed, [], 'the same text twice changes nothing');
  assert.equal(await server.app.registry.scopeDescription('journal:write'), 'Write in your journal');
  // Removing a scope takes its description; null removes one.
  assert.deepEqual((await call('PATCH', path, { scope: 'journal:read' })).body.resource.scope_descriptions, { 'journal:read': 'Read your journal' });
  assert.deepEqual((await call('PATCH', path, { scope: 'journal:read journal:write' })).body.resource.scope_descriptions, { 'journal:read': 'Read your journal' });
  assert.deepEqual((await call('PATCH', path, { scope_descriptions: { 'journal:read': null } })).body.resource.scope_descriptions, {});
  assert.equal(await server.app.registry.scopeDescription('journal:read'), undefined);

  // Every bad description of a body at once, each with its code; nothing changes.
  const bad = await call('PATCH', path, { scope_descriptions: { 'journal:read': 'x'.repeat(201), 'journal:write': 'Read\nyour journal', 'journal:delete': 'Delete it', constructor: 'no' } });
  isProblem(bad, 400);
  assert.deepEqual(bad.body.errors.map((e: { code: string }) => e.code), ['scope_description_too_long', 'scope_description_control_characters', 'scope_description_unknown', 'scope_description_unknown']);
  assert.ok(bad.body.errors.every((e: { pointer: string }) => e.pointer === '#/scope_descriptions'));
  assert.match(bad.body.detail, /scope_descriptions: the description of "journal:read" is longer than 200 characters/);
  isProblem(await call('PATCH', path, { scope_descriptions: { 'journal:read': 'Bidi \u202e override' } }), 400);
  isProblem(await call('PATCH', path, { scope_descriptions: { 'journal:read': 7 } }), 400);
  isProblem(await call('PATCH', path, { scope_descriptions: 'journal:read=Read' }), 400);
  isProblem(await call('POST', '/v1/resources', { uri: 'https://journal2.example', scope: 'j2:read', scope_descriptions: { 'j2:write': 'Write' } }), 400);
  assert.equal(await server.app.registry.findResource('https://journal2.example'), undefined, 'a refused creation writes nothing');
  assert.deepEqual((await call('GET', '/v1/resources')).body.resources.find((r: { resource: string }) => r.resource === uri).scope_descriptions, {});
  // The OpenAPI document shows the field.
  const doc = (await call('GET', '/openapi.json')).body;
  assert.ok(doc.paths['/v1/resources/{uri}'].patch.requestBody.content['application/json'].schema.properties.scope_descriptions);
  assert.equal((await call('DELETE', path)).status, 200);
});

test('a small ADMIN_ACTIVITY_MAX caps the activity log: the oldest events are dropped', async () => {
  const redis = await startRedis({ ownServer: true });
  const small = await startServer({ redisUrl: redis.url, env: { ADMIN_ACTIVITY_MAX: '50' } });
  try {
    const scope = 'latchkey:admin';
    const c = await small.app.registry.createClient({ name: 'ops', grants: ['client_credentials'], scope }, noValidation);
    const tokenRequest = () => endpoints(small.issuer).token({ clientId: c.clientId, secret: c.secret! }, { grant_type: 'client_credentials', scope, resource: adminApiUri(small.issuer) });
    const first = await tokenRequest();
    assert.equal(first.status, 200);
    await small.app.activity.flush();
    small.app.activity.append('user_unlocked', { accountId: 'first' }, 'user unlocked');
    await small.app.activity.flush();
    const firstEvent = (await small.store.streamRevRange(keys.activity, '+', '-', 1))[0]!.id;
    // 300 events (tokens are counted apart, not appended): Redis trims in whole blocks of 100 entries (MAXLEN ~), so at most 150 stay.
    for (let i = 0; i < 299; i += 1) small.app.activity.append('user_unlocked', { accountId: `a${i}` }, 'user unlocked');
    await small.app.activity.flush();
    const length = await small.store.streamLength(keys.activity);
    assert.ok(length >= 50 && length <= 150, `the stream holds ${length} events`);
    const exported = await fetch(`${small.issuer}/admin/api/v1/activity.jsonl`, { headers: { authorization: `Bearer ${String(first.body.access_token)}` } });
    assert.equal(exported.status, 200);
    const ids = (await exported.text()).trim().split('\n').map((line) => (JSON.parse(line) as { id: string }).id);
    assert.ok(ids.length <= 150 && ids.length >= 50, `exported ${ids.length}`);
    assert.ok(!ids.includes(firstEvent), 'the oldest event was dropped');
  } finally {
    await small.close();
    await redis.dispose();
  }
});
