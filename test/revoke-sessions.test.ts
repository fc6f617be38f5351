import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { endpoints, signIn, signInAndRedeem } from './helpers/flow.ts';
import { type TestRedis } from './helpers/redis.ts';
import type { TestServer } from './helpers/server.ts';
import { useWorld, type World } from './helpers/world.ts';

/** `latchkey user revoke-sessions`: a person is signed out everywhere, and their tokens die. */
let redis: TestRedis;
let server: TestServer;
let world: World;

useWorld((setup) => ({ redis, server, world } = setup));

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('REDIS_')) env[k] = v;
  env.REDIS_URL = redis.url;
  const child = spawn(process.execPath, ['src/cli/main.ts', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

const SCOPE = 'openid profile offline_access api:read';

test('revoke-sessions ends every session and grant of one person, and nobody else’s', async () => {
  const call = endpoints(server.issuer);
  // Ada: two apps in one browser (two grants, one session), and a second browser (another session).
  const laptop = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: SCOPE });
  const dashboard = await signInAndRedeem({ issuer: server.issuer, client: world.firstParty, scope: SCOPE, jar: laptop.flow.jar });
  assert.equal(dashboard.flow.loginPage, undefined, 'the second app used the same session');
  const phone = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: SCOPE });
  // Someone else, signed in too.
  const bobUser = { email: 'bob@example.org', password: 'bob has a long passphrase' };
  await server.app.accounts.create({ ...bobUser, name: 'Bob' });
  const bob = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: bobUser, scope: SCOPE });

  const r = await cli(['user', 'revoke-sessions', world.user.email, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.deepEqual(out, { id: world.user.id, email: world.user.email, sessions_revoked: 2, grants_revoked: 3 });

  for (const [what, signedIn, client] of [
    ['laptop', laptop, world.shop],
    ['dashboard', dashboard, world.firstParty],
    ['phone', phone, world.shop],
  ] as const) {
    const introspected = await call.introspect(world.api, signedIn.tokens.access_token);
    assert.deepEqual(introspected.body, { active: false }, `${what}: the access token is dead`);
    const refreshed = await call.refresh(client, signedIn.tokens.refresh_token!);
    assert.equal(refreshed.body.error, 'invalid_grant', `${what}: the refresh token is dead`);
    assert.equal(refreshed.body.access_token, undefined);
    const silent = await signIn({ issuer: server.issuer, client, scope: 'openid', jar: signedIn.flow.jar, params: { prompt: 'none' } });
    assert.equal(silent.callback?.searchParams.get('error'), 'login_required', `${what}: signed out`);
    assert.equal(silent.code, undefined);
  }

  // Bob is untouched.
  assert.equal((await call.introspect(world.api, bob.tokens.access_token)).body.active, true);
  const bobSilent = await signIn({ issuer: server.issuer, client: world.shop, scope: SCOPE, jar: bob.flow.jar, params: { prompt: 'none' } });
  assert.ok(bobSilent.code, 'Bob is still signed in');

  // Ada can sign in again.
  const again = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: SCOPE });
  assert.equal((await call.introspect(world.api, again.tokens.access_token)).body.active, true);

  // An unknown person: exit 2, one line.
  const unknown = await cli(['user', 'revoke-sessions', 'nobody@example.org']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^latchkey: no user with email nobody@example\.org\n$/);
});

test('disabling or deleting a person also signs them out everywhere', async () => {
  const call = endpoints(server.issuer);
  for (const action of ['disable', 'delete'] as const) {
    const person = { email: `${action}@example.org`, password: `${action} me with a long passphrase` };
    await server.app.accounts.create(person);
    const signedIn = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: person, scope: SCOPE });
    assert.equal((await call.introspect(world.api, signedIn.tokens.access_token)).body.active, true);
    const r = await cli(['user', action, person.email, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await call.introspect(world.api, signedIn.tokens.access_token)).body, { active: false }, `${action}: the access token is dead`);
    assert.equal((await call.refresh(world.shop, signedIn.tokens.refresh_token!)).body.error, 'invalid_grant');
  }
});
