import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { adminApiUri } from '../src/admin/api.ts';
import { keys } from '../src/storage/keys.ts';
import { UpstreamIdentities, unsetPasswordMark } from '../src/upstream/identities.ts';
import { runCli } from './helpers/cli.ts';
import { SoftAuthenticator } from './helpers/soft-authenticator.ts';
import { endpoints } from './helpers/flow.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';

/** Upstream providers as operators manage them: `latchkey provider …` and /admin/api/v1/providers, over the same Operations. */
const SECRET = 'upstream-secret-7f3a9c';

let redis: TestRedis;
let server: TestServer;
let secretFile: string;

before(async () => {
  redis = await startRedis();
  server = await startServer({ redisUrl: redis.url });
  secretFile = join(mkdtempSync(join(tmpdir(), 'latchkey-upstream-')), 'secret');
  writeFileSync(secretFile, `${SECRET}\n`, { mode: 0o600 });
});

after(async () => {
  await server?.close();
  await redis?.dispose();
});

const cli = (...args: string[]) => runCli(args, { env: { REDIS_URL: redis.url } });

async function adminToken() {
  const c = await server.app.registry.createClient({ name: 'ops', grants: ['client_credentials'], scope: 'latchkey:admin' }, async () => {});
  const res = await endpoints(server.issuer).token({ clientId: c.clientId, secret: c.secret! }, { grant_type: 'client_credentials', scope: 'latchkey:admin', resource: adminApiUri(server.issuer) });
  return String(res.body.access_token);
}

describe('latchkey provider', () => {
  test('add, list, show, update and remove; the client secret is sealed and never shown', async () => {
    const added = await cli('provider', 'add', 'google', '--preset', 'google', '--client-id', 'abc.apps.googleusercontent.com', '--client-secret-file', secretFile, '--allowed-domain', 'example.com', '--create-accounts', '--json');
    assert.equal(added.code, 0, added.stderr);
    const { provider } = JSON.parse(added.stdout);
    assert.equal(provider.issuer, 'https://accounts.google.com');
    assert.equal(provider.name, 'Google');
    assert.equal(provider.require_mfa, true, "Latchkey's own second factor unless the operator says otherwise");
    assert.equal(provider.trusted_for_email, false, 'addresses are not trusted for linking unless the operator says so');
    assert.deepEqual(provider.allowed_domains, ['example.com']);
    const raw = (await server.store.get(keys.upstreamProvider('google')))!;
    assert.ok(!raw.includes(SECRET), 'sealed in storage');
    assert.ok(!added.stdout.includes(SECRET) && !added.stderr.includes(SECRET), 'never printed, nor in the audit line');
    assert.match(added.stderr, /"event":"upstream_provider_added"/);

    const entra = await cli('provider', 'add', 'work', '--preset', 'entra', '--tenant', 'contoso.onmicrosoft.com', '--client-id', 'x', '--client-secret-file', secretFile, '--trusted-for-email', '--no-require-mfa', '--json');
    assert.equal(entra.code, 0, entra.stderr);
    assert.equal(JSON.parse(entra.stdout).provider.issuer, 'https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0');
    assert.equal(JSON.parse(entra.stdout).provider.claims.email_verified, 'xms_edov');

    const listed = await cli('provider', 'list');
    assert.equal(listed.code, 0);
    assert.match(listed.stdout, /google\s+google\s+Google\s+https:\/\/accounts\.google\.com/);
    assert.match(listed.stdout, /work\s+entra/);

    const updated = await cli('provider', 'update', 'google', '--display', 'hint', '--trusted-for-email', '--json');
    assert.equal(updated.code, 0, updated.stderr);
    assert.deepEqual(JSON.parse(updated.stdout).changed.sort(), ['display', 'trusted_for_email']);
    const shown = JSON.parse((await cli('provider', 'show', 'google', '--json')).stdout);
    assert.equal(shown.display, 'hint');
    assert.equal(shown.trusted_for_email, true);
    assert.ok(!JSON.stringify(shown).includes(SECRET));

    assert.equal((await cli('provider', 'remove', 'work')).code, 0);
    const gone = await cli('provider', 'show', 'work');
    assert.equal(gone.code, 2);
    assert.match(gone.stderr, /no upstream provider with id work/);
  });

  test('bad settings are refused with the flags named, nothing stored', async () => {
    const plainHttp = await cli('provider', 'add', 'corp', '--preset', 'oidc', '--issuer', 'http://idp.example.com', '--client-id', 'x', '--client-secret-file', secretFile);
    assert.equal(plainHttp.code, 2);
    assert.match(plainHttp.stderr, /--issuer must use https/);
    const noIssuer = await cli('provider', 'add', 'corp', '--preset', 'oidc', '--client-id', 'x', '--client-secret-file', secretFile);
    assert.equal(noIssuer.code, 2);
    assert.match(noIssuer.stderr, /--issuer is required for the oidc preset/);
    const noTenant = await cli('provider', 'add', 'corp', '--preset', 'entra', '--client-id', 'x', '--client-secret-file', secretFile);
    assert.match(noTenant.stderr, /--tenant .* is required for the entra preset/);
    const badId = await cli('provider', 'add', 'Bad_Id', '--preset', 'google', '--client-id', 'x', '--client-secret-file', secretFile);
    assert.match(badId.stderr, /--id must be 1 to 40 lower-case letters/);
    const noFile = await cli('provider', 'add', 'corp', '--preset', 'google', '--client-id', 'x', '--client-secret-file', '/nonexistent/secret');
    assert.match(noFile.stderr, /--client-secret-file: cannot read/);
    assert.equal(await server.store.get(keys.upstreamProvider('corp')), null);
  });
});

describe('latchkey user unlink', () => {
  test("an account's last way in is refused with the way out, on its storage and through --server; a second identity unlinks", async () => {
    await server.app.ops.addProvider({ kind: 'cli' }, { id: 'corp', preset: 'google', client_id: 'x', client_secret: SECRET });
    const { user } = await server.app.ops.createUser({ kind: 'cli' }, { email: 'lin@example.com', password: 'a random one nobody was told' });
    const account = (await server.app.accounts.find(user.id))!;
    // As an upstream sign-in that created the account would have linked it: its password is unknown to anyone.
    const identities = new UpstreamIdentities(server.store);
    await identities.link({ accountId: user.id, provider: 'corp', iss: 'https://accounts.google.com', sub: '1071', linkedAt: Date.now(), via: 'created', unsetPassword: unsetPasswordMark(account) });

    const refused = await cli('user', 'unlink', user.id, 'corp');
    assert.equal(refused.code, 2);
    const says = (stderr: string) => {
      assert.match(stderr, /the corp identity is the only way this account signs in \(its password was never set, and it has no passkey\)/);
      assert.match(stderr, new RegExp(`latchkey user send-password-reset ${user.id}\\).* or let them add a passkey on their account page; then unlink`), 'the operator is told the ways out');
    };
    says(refused.stderr);
    // Through the admin API, which answers 409 identity_last_way_in: the same words.
    const remote = await runCli(['--server', server.issuer, '--token', await adminToken(), 'user', 'unlink', user.id, 'corp'], { env: {} });
    assert.equal(remote.code, 2, remote.stderr);
    says(remote.stderr);
    assert.equal((await server.app.ops.userUpstreams(user.id)).identities.length, 1, 'still linked');

    await identities.link({ accountId: user.id, provider: 'gh', iss: 'https://github.com', sub: '42', linkedAt: Date.now(), via: 'account_page' });
    const unlinked = await cli('user', 'unlink', user.id, 'corp');
    assert.equal(unlinked.code, 0, unlinked.stderr);
    assert.match(unlinked.stdout, /Unlinked 1 identity of corp/);
  });

  test('a registered passkey is a way in while PASSKEYS is not off: the only identity then unlinks', async () => {
    const { user } = await server.app.ops.createUser({ kind: 'cli' }, { email: 'pia@example.com', password: 'a random one nobody was told either' });
    const account = (await server.app.accounts.find(user.id))!;
    await new UpstreamIdentities(server.store).link({ accountId: user.id, provider: 'corp', iss: 'https://accounts.google.com', sub: '2072', linkedAt: Date.now(), via: 'created', unsetPassword: unsetPasswordMark(account) });
    const device = new SoftAuthenticator({ origin: server.issuer });
    assert.ok((await server.app.passkeys.register(user.id, 'test-pia', device.create(await server.app.passkeys.registrationOptions(account, 'test-pia')), 'Phone')).ok);

    // With passkeys turned off it signs nobody in, so the identity is still the only way.
    const off = await runCli(['user', 'unlink', user.id, 'corp'], { env: { REDIS_URL: redis.url, PASSKEYS: 'off' } });
    assert.equal(off.code, 2, off.stdout);
    assert.match(off.stderr, /only way this account signs in/);
    const shown = JSON.parse((await cli('user', 'upstreams', user.id, '--json')).stdout);
    assert.equal(shown.identities[0].last_way_in, false, 'PASSKEYS optional: the passkey is a way in');
    const unlinked = await cli('user', 'unlink', user.id, 'corp');
    assert.equal(unlinked.code, 0, unlinked.stderr);
    assert.deepEqual((await server.app.ops.userUpstreams(user.id)).identities, []);
  });
});

describe('/admin/api/v1/providers', () => {
  async function call(token: string, method: string, path: string, body?: unknown) {
    const res = await fetch(`${server.issuer}/admin/api/v1${path}`, {
      method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, type: res.headers.get('content-type') ?? '', body: (await res.json()) as Record<string, any> };
  }

  test('created, read, changed and removed through the API; the secret never comes back', async () => {
    const token = await adminToken();
    const created = await call(token, 'POST', '/providers', { id: 'gh', preset: 'github', client_id: 'Iv1.abc', client_secret: SECRET, create_accounts: true });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.provider.api_base, 'https://api.github.com');
    assert.ok(!JSON.stringify(created.body).includes(SECRET));
    const list = await call(token, 'GET', '/providers');
    assert.ok(list.body.providers.some((p: { id: string }) => p.id === 'gh'));
    const patched = await call(token, 'PATCH', '/providers/gh', { client_secret: 'a-new-secret', require_mfa: false });
    assert.equal(patched.status, 200);
    assert.deepEqual(patched.body.changed.sort(), ['client_secret', 'require_mfa']);
    assert.equal((await call(token, 'DELETE', '/providers/gh')).status, 200);
    assert.equal((await call(token, 'GET', '/providers/gh')).status, 404);
  });

  test('bad input: 4xx problem+json pointing at the fields, never a 5xx', async () => {
    const token = await adminToken();
    const problem = async (method: string, path: string, body: unknown, status: number, pointers?: string[]) => {
      const a = await call(token, method, path, body);
      assert.equal(a.status, status, `${method} ${path} ${JSON.stringify(body)}: ${JSON.stringify(a.body)}`);
      assert.match(a.type, /^application\/problem\+json/);
      if (pointers) assert.deepEqual(a.body.errors.map((e: { pointer: string }) => e.pointer).sort(), pointers.sort());
      return a.body;
    };
    await problem('POST', '/providers', { id: 'x', preset: 'oidc', client_id: 'c', client_secret: 's', issuer: 'http://idp.example.com', token_endpoint: 'ftp://x' }, 400, ['#/issuer', '#/authorization_endpoint', '#/token_endpoint']);
    await problem('POST', '/providers', { id: 'x', preset: 'saml', client_id: 'c', client_secret: 's' }, 400, ['#/preset']);
    await problem('POST', '/providers', { id: 'x', preset: 'google', client_id: 'c' }, 400, ['#/client_secret']);
    await problem('POST', '/providers', { id: 'x', preset: 'google', client_id: 'c', client_secret: 's', allowed_domains: ['not a domain'], surprise: 1 }, 400);
    await problem('POST', '/providers', { id: '../../etc', preset: 'google', client_id: 'c', client_secret: 's' }, 400, ['#/id']);
    await problem('PATCH', '/providers/nobody', { name: 'X' }, 404);
    await problem('PATCH', '/providers/nobody', {}, 400);
    await problem('DELETE', '/providers/nobody', undefined, 404);
    await problem('GET', '/users/nobody@example.org/upstreams', undefined, 404);
    assert.equal((await call(token, 'POST', '/providers', { id: 'dup', preset: 'google', client_id: 'c', client_secret: 's' })).status, 201);
    await problem('POST', '/providers', { id: 'dup', preset: 'google', client_id: 'c', client_secret: 's' }, 409);
    assert.equal(server.logs.filter((l) => Number(l.level) >= 50).length, 0, 'no error logged');
  });
});
