import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { endpoints } from './helpers/flow.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { createWorld, type World } from './helpers/world.ts';

/**
 * An API credential cannot use introspection to try token after made-up token: answers `active: false`
 * are limited per credential (INTROSPECTION_INACTIVE_PER_MINUTE), while its real traffic — tokens that
 * are active — is never counted nor refused.
 */
let redis: TestRedis;
let server: TestServer;
let world: World;
before(async () => {
  redis = await startRedis();
  server = await startServer({ redisUrl: redis.url, env: { INTROSPECTION_INACTIVE_PER_MINUTE: '3' } });
  world = await createWorld(server);
});
after(async () => {
  await server.close();
  await redis.dispose();
});

test('past INTROSPECTION_INACTIVE_PER_MINUTE inactive answers an API credential gets 429 with Retry-After; active tokens still answer, other APIs are untouched', async () => {
  const call = endpoints(server.issuer);
  const issued = await call.token(world.machine, { grant_type: 'client_credentials', scope: 'api:read' });
  assert.equal(issued.status, 200);
  const active = String(issued.body.access_token);
  const madeUp = (i: number) => `made-up-token-${i}-${'x'.repeat(30)}`;

  for (let i = 0; i < 3; i += 1) {
    const res = await call.introspect(world.api, madeUp(i));
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { active: false });
  }
  // Active answers in between neither count nor are refused.
  for (let i = 0; i < 5; i += 1) assert.equal((await call.introspect(world.api, active)).body.active, true);

  const refused = await call.introspect(world.api, madeUp(3));
  assert.equal(refused.status, 429);
  const wait = Number(refused.headers.get('retry-after'));
  assert.ok(Number.isInteger(wait) && wait >= 1 && wait <= 60, `Retry-After ${refused.headers.get('retry-after')}`);
  assert.match(refused.headers.get('content-type') ?? '', /^application\/json/);
  assert.equal(refused.body.error, 'invalid_request');
  assert.match(String(refused.body.error_description), /too many introspections of inactive tokens/);
  assert.equal(refused.body.active, undefined);

  // Still throttled for inactive answers, never for the API's real traffic.
  assert.equal((await call.introspect(world.api, madeUp(4))).status, 429);
  const stillActive = await call.introspect(world.api, active);
  assert.equal(stillActive.status, 200);
  assert.equal(stillActive.body.active, true);
  assert.equal(stillActive.body.client_id, world.machine.clientId);

  // Logged once per credential and minute, however many are refused.
  const logged = server.logs.filter((l) => l.event === 'introspection_throttled');
  assert.equal(logged.length, 1);
  assert.equal(logged[0]!.clientId, world.api.clientId);
  assert.equal(logged[0]!.level, 40);

  // Counted per credential: another API's introspection client has its own allowance.
  const other = await call.introspect(world.jwtApi, madeUp(5));
  assert.equal(other.status, 200);
  assert.deepEqual(other.body, { active: false });
});
