import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { keys } from '../src/storage/keys.ts';
import { endpoints, signIn, signInAndRedeem } from './helpers/flow.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { createWorld, type World } from './helpers/world.ts';

/**
 * A Redis restart under a running Latchkey, with AOF on (as docker-compose.yml sets it): nothing that
 * was issued or used is lost — tokens, the session, a consumed code, a used TOTP step.
 */
let redis: TestRedis;
let server: TestServer;
let world: World;

before(async () => {
  redis = await startRedis({ ownServer: true, persistence: true });
  server = await startServer({ redisUrl: redis.url });
  world = await createWorld(server);
});

after(async () => {
  await server?.close();
  await redis?.dispose();
});

async function untilReady(issuer: string) {
  const deadline = Date.now() + 10_000;
  while ((await fetch(new URL('/readyz', issuer))).status !== 200) {
    if (Date.now() > deadline) throw new Error('Latchkey did not become ready within 10 s of Redis restarting');
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('a Redis restart loses no token, session, consumed code or used TOTP step', async () => {
  const call = endpoints(server.issuer);
  const { flow, tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid profile offline_access api:read' });
  assert.ok(tokens.refresh_token);
  const totpStep = keys.totpLastStep(world.user.id);
  // A step far ahead of any the sign-in used (its clock is the tests' TOTP clock, helpers/totp.ts).
  assert.equal(await server.store.advanceCounter(totpStep, 90_000_000, 120), true);

  await redis.stop();
  assert.equal((await fetch(new URL('/readyz', server.issuer))).status, 503);
  await redis.restart();
  await untilReady(server.issuer);

  // The access token is still active for its API.
  const introspected = await call.introspect(world.api, tokens.access_token);
  assert.equal(introspected.body.active, true, JSON.stringify(introspected.body));
  // The person is still signed in: prompt=none reaches the app with a code, no sign-in page.
  const silent = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid profile offline_access api:read', jar: flow.jar, params: { prompt: 'none' } });
  assert.ok(silent.code, `prompt=none: ${silent.callback?.search ?? silent.page?.status}`);
  assert.equal(silent.loginPage, undefined);
  // The used TOTP time step is still used.
  assert.equal(await server.store.advanceCounter(totpStep, 90_000_000, 120), false);
  // The refresh token still works (and rotates).
  const refreshed = await call.refresh(world.shop, tokens.refresh_token);
  assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
  // The consumed code is still consumed: a replay is refused.
  const replay = await call.redeem(world.shop, flow.code!, flow.verifier);
  assert.equal(replay.status, 400);
  assert.equal(replay.body.error, 'invalid_grant');
});
