import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { adminApiUri } from '../src/admin/api.ts';
import { runCli } from './helpers/cli.ts';
import { endpoints } from './helpers/flow.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';

/**
 * The admin stack as one door: one refusal, rendered by each front in its words (the CLI with flags and
 * exit 2, the admin API as problem+json with a code and a JSON pointer; the console in
 * test/e2e/admin-console.test.ts), clients named as RFC 7591 names them, and the CLI administering a
 * running server on its embedded store through the admin API (--server).
 */
let redis: TestRedis;
let server: TestServer;
let embedded: TestServer;

before(async () => {
  redis = await startRedis();
  server = await startServer({ redisUrl: redis.url });
  embedded = await startServer();
});

after(async () => {
  await server.close();
  await embedded.close();
  await redis.dispose();
});

async function adminToken(on: TestServer) {
  const c = await on.app.registry.createClient({ name: 'ops', grants: ['client_credentials'], scope: 'latchkey:admin' }, async () => {});
  const res = await endpoints(on.issuer).token({ clientId: c.clientId, secret: c.secret! }, { grant_type: 'client_credentials', scope: 'latchkey:admin', resource: adminApiUri(on.issuer) });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return String(res.body.access_token);
}

async function api(on: TestServer, token: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${on.issuer}/admin/api/v1${path}`, { method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: (await res.json()) };
}

const HTTP_REDIRECT = 'http://door.example/cb';

test('one refusal, three fronts: the CLI says it with flags (exit 2), the API with a code and a JSON pointer', async () => {
  const cli = await runCli(['client', 'create', '--name', 'Door', '--grants', 'authorization_code', '--redirect-uri', HTTP_REDIRECT, '--scope', 'openid'], { env: { REDIS_URL: redis.url } });
  assert.equal(cli.code, 2, cli.stderr);
  assert.equal(cli.stderr, `latchkey: --redirect-uri must use https (plain http only for 127.0.0.1, [::1] or localhost), got ${HTTP_REDIRECT}\n`);

  const token = await adminToken(server);
  const refused = await api(server, token, 'POST', '/clients', { client_name: 'Door', grant_types: ['authorization_code'], redirect_uris: [HTTP_REDIRECT], scope: 'openid' });
  assert.equal(refused.status, 400);
  assert.match(refused.type, /^application\/problem\+json/);
  assert.equal(refused.body.code, 'uri_plain_http');
  assert.equal(refused.body.detail, `redirect_uris must use https (plain http only for 127.0.0.1, [::1] or localhost), got ${HTTP_REDIRECT}`);
  assert.deepEqual(refused.body.errors.map((e: { pointer: string; code: string }) => [e.pointer, e.code]), [['#/redirect_uris', 'uri_plain_http']]);
  assert.ok(!JSON.stringify(refused.body).includes('--'), 'no CLI flag at the API');

  // Every problem of a body at once, each with its pointer; a refused password is a 400 about the password, not a conflict.
  const many = await api(server, token, 'POST', '/clients', { client_name: ' ', grant_types: ['implicit'], scope: 'openid', refresh_grace_seconds: 61 });
  assert.equal(many.status, 400);
  assert.deepEqual(many.body.errors.map((e: { pointer: string }) => e.pointer).sort(), ['#/client_name', '#/grant_types', '#/refresh_grace_seconds']);
  const weak = await api(server, token, 'POST', '/users', { email: 'door@example.org', password: 'password' });
  assert.equal(weak.status, 400);
  assert.deepEqual([weak.body.code, weak.body.errors[0].pointer], ['password_refused', '#/password']);
  const cliMany = await runCli(['client', 'create', '--name', ' ', '--grants', 'implicit', '--scope', 'openid', '--refresh-grace', '61'], { env: { REDIS_URL: redis.url } });
  assert.equal(cliMany.code, 2);
  assert.match(cliMany.stderr, /^latchkey: .*--name must not be empty.*; .*unknown grant "implicit".*; .*--refresh-grace must be a whole number of seconds from 0 to 60\n$/);
});

test('the admin API takes and answers RFC 7591 client fields; the earlier names still work', async () => {
  const token = await adminToken(server);
  const created = await api(server, token, 'POST', '/clients', {
    client_name: 'Shop', grant_types: ['authorization_code', 'refresh_token'], redirect_uris: ['https://shop.example/cb'], scope: 'openid', token_endpoint_auth_method: 'client_secret_post', require_pushed_authorization_requests: true,
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const c = created.body.client;
  assert.deepEqual([c.client_name, c.grant_types, c.token_endpoint_auth_method, c.require_pushed_authorization_requests], ['Shop', ['authorization_code', 'refresh_token'], 'client_secret_post', true]);
  const spa = await api(server, token, 'POST', '/clients', { client_name: 'SPA', grant_types: ['authorization_code'], redirect_uris: ['https://spa.example/cb'], scope: 'openid', token_endpoint_auth_method: 'none' });
  assert.equal(spa.status, 201);
  assert.deepEqual([spa.body.client.public, spa.body.client_secret], [true, undefined]);
  // Earlier names: name, grants, public, secret_in, require_par.
  const old = await api(server, token, 'POST', '/clients', { name: 'Old', grants: ['authorization_code'], redirect_uris: ['https://old.example/cb'], scope: 'openid', secret_in: 'body', require_par: true });
  assert.equal(old.status, 201, JSON.stringify(old.body));
  assert.deepEqual([old.body.client.client_name, old.body.client.token_endpoint_auth_method, old.body.client.require_pushed_authorization_requests], ['Old', 'client_secret_post', true]);
  const renamed = await api(server, token, 'PATCH', `/clients/${old.body.client.client_id}`, { client_name: 'Renamed' });
  assert.deepEqual([renamed.status, renamed.body.client.client_name], [200, 'Renamed']);
  const oldPatch = await api(server, token, 'PATCH', `/clients/${old.body.client.client_id}`, { name: 'Again' });
  assert.deepEqual([oldPatch.status, oldPatch.body.client.client_name], [200, 'Again']);
  // The document names the current fields.
  const doc = (await (await fetch(`${server.issuer}/admin/api/openapi.json`)).json());
  const props = doc.paths['/v1/clients'].post.requestBody.content['application/json'].schema.properties;
  assert.ok(props.client_name && props.grant_types && props.token_endpoint_auth_method, Object.keys(props).join(','));
});

test('latchkey --server URL --token TOKEN administers a server on its embedded store through the admin API', async () => {
  const token = await adminToken(embedded);
  const env = { LATCHKEY_SERVER: embedded.issuer, LATCHKEY_TOKEN: token };
  const created = await runCli(['client', 'create', '--name', 'Remote', '--grants', 'client_credentials', '--scope', 'latchkey:admin:read', '--json'], { env });
  assert.equal(created.code, 0, created.stderr);
  const { client_id, client_secret } = JSON.parse(created.stdout);
  assert.match(client_secret, /^[\w-]{43}$/);
  assert.equal((await embedded.app.ops.client(client_id)).client_name, 'Remote', 'created in the server\'s own store');
  const listed = await runCli(['--server', embedded.issuer, '--token', token, 'client', 'list', '--json'], { env: {} });
  assert.equal(listed.code, 0, listed.stderr);
  assert.ok(JSON.parse(listed.stdout).clients.some((c: { client_id: string }) => c.client_id === client_id));
  // A token is base64url: one in 64 begins with "-", and it is still a value, given apart or after "=".
  for (const argv of [['--token', `-${token}`], [`--token=-${token}`]]) {
    const dashed = await runCli(['--server', embedded.issuer, ...argv, 'client', 'list'], { env: {} });
    assert.equal(dashed.code, 1, dashed.stderr);
    assert.doesNotMatch(dashed.stderr, /needs a value/);
  }
  // A refusal comes back typed and is worded with flags again.
  const refused = await runCli(['client', 'update', client_id, '--refresh-grace', '5'], { env });
  assert.equal(refused.code, 2);
  assert.equal(refused.stderr, 'latchkey: --refresh-grace needs the refresh_token grant\n');
  const deleted = await runCli(['client', 'delete', client_id, '--json'], { env });
  assert.equal(deleted.code, 0, deleted.stderr);
  assert.equal(JSON.parse(deleted.stdout).deleted, true);
  await assert.rejects(embedded.app.ops.client(client_id), /no client/);
  // The server wrote the audit event, naming the token's client.
  assert.ok(embedded.logs.some((l) => l.event === 'client_deleted' && l.source === 'admin_api'));
  const gone = await runCli(['client', 'show', client_id], { env: { ...env, LATCHKEY_TOKEN: 'not-a-token' } });
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /^latchkey: the server refused the token/);
});
