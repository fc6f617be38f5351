import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { basic, endpoints, signInAndRedeem } from './helpers/flow.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { createWorld, type World } from './helpers/world.ts';

/** Redis goes away mid-test: the protocol endpoints fail closed and fast with 503 + Retry-After. */
let redis: TestRedis;
let server: TestServer;
let world: World;

before(async () => {
  redis = await startRedis({ persistence: true });
  server = await startServer({ redisUrl: redis.url, env: { REDIS_TIMEOUT_MS: '300' } });
  world = await createWorld(server);
});

after(async () => {
  await server?.close();
  await redis?.dispose();
});

function assertUnavailable(res: { status: number; headers: Headers; body: Record<string, unknown> }, what: string) {
  assert.equal(res.status, 503, `${what}: ${res.status} ${JSON.stringify(res.body)}`);
  assert.ok(Number(res.headers.get('retry-after')) > 0, `${what}: Retry-After`);
  assert.equal(res.body.active, undefined, `${what} must not answer active`);
  assert.equal(res.body.access_token, undefined, `${what} must not issue a token`);
  assert.equal(res.body.error, 'temporarily_unavailable', what);
}

describe('storage outage', () => {
  it('answers 503 with Retry-After at the token and introspection endpoints, and recovers', async () => {
    const call = endpoints(server.issuer);
    const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.firstParty, user: world.user, scope: 'openid offline_access api:read' });
    assert.equal((await call.introspect(world.api, tokens.access_token)).body.active, true);

    await redis.stop();
    try {
      const started = performance.now();
      assertUnavailable(await call.introspect(world.api, tokens.access_token), 'introspection');
      assertUnavailable(await call.token(world.machine, { grant_type: 'client_credentials', scope: 'api:read' }), 'client_credentials');
      assertUnavailable(await call.refresh(world.firstParty, tokens.refresh_token!), 'refresh');
      const revoked = await call.revoke(world.firstParty, tokens.access_token);
      assert.equal(revoked.status, 503, 'revocation cannot claim success');
      const userinfo = await fetch(new URL('/me', server.issuer), { headers: { authorization: `Bearer ${tokens.access_token}` } });
      assert.equal(userinfo.status, 503);
      const auth = await fetch(new URL(`/auth?client_id=${world.shop.clientId}&response_type=code&scope=openid`, server.issuer), { redirect: 'manual', headers: { accept: 'text/html' } });
      assert.equal(auth.status, 503);
      assert.equal(auth.headers.get('location'), null);
      assert.ok(Number(auth.headers.get('retry-after')) > 0);
      // Fail fast: six requests well within a few deadlines, no hanging.
      assert.ok(performance.now() - started < 5000, `took ${Math.round(performance.now() - started)} ms`);
    } finally {
      await redis.restart();
    }

    // Back by itself: the same token is still good, and new ones are issued.
    let seen: Awaited<ReturnType<typeof call.introspect>> | undefined;
    for (let i = 0; i < 50; i += 1) {
      seen = await call.introspect(world.api, tokens.access_token);
      if (seen.status === 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(seen?.status, 200);
    assert.equal(seen?.body.active, true);
    const fresh = await fetch(new URL('/token', server.issuer), {
      method: 'POST',
      headers: { authorization: basic(world.machine.clientId, world.machine.secret), 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=client_credentials&scope=api:read',
    });
    assert.equal(fresh.status, 200);
  });
});
