import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { basic, browse, CookieJar, endpoints, follow, formAction, hiddenField, pkcePair, signInAndRedeem } from './helpers/flow.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { loadConfig } from '../src/config.ts';
import { createWorld, type World } from './helpers/world.ts';

/** Redis goes away mid-test: the protocol endpoints fail closed and fast with 503 + Retry-After. */
let redis: TestRedis;
let server: TestServer;
let world: World;

before(async () => {
  // Stopped and restarted below: always a redis-server of its own, never a shared REDIS_URL.
  redis = await startRedis({ ownServer: true, persistence: true });
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

    // A person on the sign-in page when Redis goes away.
    const jar = new CookieJar();
    const { challenge } = pkcePair();
    const authUrl = new URL(`/auth?${new URLSearchParams({ client_id: world.shop.clientId, redirect_uri: world.shop.redirectUri, response_type: 'code', scope: 'openid', code_challenge: challenge, code_challenge_method: 'S256', state: 'outage' })}`, server.issuer);
    const loginPage = (await follow(jar, server.issuer, await browse(jar, authUrl), authUrl)).page!;
    const loginAction = new URL(formAction(loginPage.html, '/login')!, loginPage.url);
    const csrf = hiddenField(loginPage.html, '_csrf')!;
    const cookiesBefore = jar.names().sort();

    await redis.stop();
    try {
      // Each request answers within 2 s, whatever it needs from Redis.
      const timed = async <T>(what: string, call: () => Promise<T>): Promise<T> => {
        const t0 = performance.now();
        const result = await call();
        const ms = performance.now() - t0;
        // Without the deadline the request would wait out the pause; the margin absorbs a loaded machine.
        assert.ok(ms < 4500, `${what} took ${Math.round(ms)} ms`);
        return result;
      };
      const login = await timed('sign-in POST', () => browse(jar, loginAction, { form: { _csrf: csrf, email: world.user.email, password: world.user.password } }));
      assert.equal(login.status, 503, 'a sign-in during the outage is refused');
      assert.equal(login.headers.get('location'), null, 'and does not continue to the app');
      assert.ok(Number(login.headers.get('retry-after')) > 0);
      assert.match(await login.text(), /temporarily unavailable/i);
      assert.deepEqual(jar.names().sort(), cookiesBefore, 'no session cookie is set');
      const readyz = await timed('/readyz', () => fetch(new URL('/readyz', server.issuer)));
      assert.equal(readyz.status, 503, 'readiness follows Redis');
      assert.equal((await fetch(new URL('/healthz', server.issuer))).status, 200, 'liveness does not');
      const discovery = await fetch(new URL('/.well-known/openid-configuration', server.issuer));
      assert.equal(discovery.status, 200, 'what needs no storage still answers');
      await discovery.body?.cancel();

      const started = performance.now();
      assertUnavailable(await call.introspect(world.api, tokens.access_token), 'introspection');
      assertUnavailable(await call.token(world.machine, { grant_type: 'client_credentials', scope: 'api:read' }), 'client_credentials');
      assertUnavailable(await call.refresh(world.firstParty, tokens.refresh_token!), 'refresh');
      const revoked = await call.revoke(world.firstParty, tokens.access_token);
      assert.equal(revoked.status, 503, 'revocation cannot claim success');
      const userinfo = await fetch(new URL('/me', server.issuer), { headers: { authorization: `Bearer ${tokens.access_token}` } });
      assert.equal(userinfo.status, 503);
      // A valid request (clients are cached in process, so an invalid one is refused without storage).
      const valid = new URLSearchParams({ client_id: world.shop.clientId, redirect_uri: world.shop.redirectUri, response_type: 'code', scope: 'openid', code_challenge: challenge, code_challenge_method: 'S256' });
      const auth = await fetch(new URL(`/auth?${valid}`, server.issuer), { redirect: 'manual', headers: { accept: 'text/html' } });
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
    assert.equal((await fetch(new URL('/readyz', server.issuer))).status, 200);

    // The outage and the recovery are logged once each, not once per failed request.
    const events = server.logs.map((l) => l.event);
    assert.equal(events.filter((e) => e === 'storage_unavailable').length, 1, 'one storage_unavailable line');
    assert.equal(events.filter((e) => e === 'storage_recovered').length, 1, 'one storage_recovered line');
    assert.ok(events.indexOf('storage_unavailable') < events.indexOf('storage_recovered'));
    const down = server.logs.find((l) => l.event === 'storage_unavailable')!;
    assert.equal(down.level, 50, 'an outage is an error');
    assert.ok(server.logs.filter((l) => l.msg === 'request' && l.status === 503).length >= 8, 'while each failed request has its request line');
  });

  it('a Redis that stops answering (paused 10 s): 503 at the default 1 s deadline, long before the pause ends, logged once, then recovers', async () => {
    // The default REDIS_TIMEOUT_MS (1000 ms): a stalled command ends the request, not the end of the pause.
    const stalled = await startServer({ redisUrl: redis.url, env: { REDIS_TIMEOUT_MS: String(loadConfig({}).REDIS_TIMEOUT_MS) } });
    const admin = new Redis(redis.url);
    try {
      const call = endpoints(stalled.issuer);
      const { tokens } = await signInAndRedeem({ issuer: stalled.issuer, client: world.firstParty, user: world.user, scope: 'openid api:read' });
      // Long enough that both requests meet it on a loaded machine (each may wait its whole 1 s deadline).
      await admin.call('CLIENT', 'PAUSE', '10000', 'ALL');
      for (const [what, request] of [
        ['introspection', () => call.introspect(world.api, tokens.access_token)],
        ['client_credentials', () => call.token(world.machine, { grant_type: 'client_credentials', scope: 'api:read' })],
      ] as const) {
        const t0 = performance.now();
        const res = await request();
        const ms = performance.now() - t0;
        assertUnavailable(res, what);
        // Without the deadline the request would wait out the pause; the margin absorbs a loaded machine.
        assert.ok(ms < 4500, `${what} took ${Math.round(ms)} ms`);
      }
      let seen: Awaited<ReturnType<typeof call.introspect>> | undefined;
      for (let i = 0; i < 150; i += 1) {
        seen = await call.introspect(world.api, tokens.access_token);
        if (seen.status === 200) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(seen?.body.active, true, 'back by itself once Redis answers');
      // The recovery is reported once calls have succeeded, with no failure, for a moment (redis-store.ts).
      for (let i = 0; i < 100 && !stalled.logs.some((l) => l.event === 'storage_recovered'); i += 1) {
        await call.introspect(world.api, tokens.access_token);
        await new Promise((r) => setTimeout(r, 100));
      }
      const events = stalled.logs.map((l) => l.event);
      assert.equal(events.filter((e) => e === 'storage_unavailable').length, 1);
      assert.equal(events.filter((e) => e === 'storage_recovered').length, 1);
    } finally {
      admin.disconnect();
      await stalled.close();
    }
  });
});
