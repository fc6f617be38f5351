import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { endpoints, signInAndRedeem } from './helpers/flow.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { createWorld, type World } from './helpers/world.ts';

/**
 * A refresh is on the hot path of every app that keeps people signed in: it reads the token, its
 * grant and the account, then consumes, issues and indexes in one script (storage/oidc-adapter.ts
 * RefreshRotation). Counted on a real redis-server, the commands scripts run included.
 */
const SCOPE = 'openid profile email offline_access api:read';

/** Every command Redis runs (MONITOR; a script's own commands too), until `stop`. */
async function watchCommands(redis: Redis): Promise<{ ran: string[][]; stop(): void }> {
  const monitor = await redis.monitor();
  const ran: string[][] = [];
  monitor.on('monitor', (_time: string, args: string[]) => ran.push(args.map(String)));
  return { ran, stop: () => monitor.disconnect() };
}

for (const storeKind of ['redis', 'memory'] as const) describe(`refresh on ${storeKind === 'redis' ? 'Redis' : 'the embedded store'}`, () => {
  let redis: TestRedis | undefined;
  let server: TestServer;
  let world: World;
  let raw: Redis | undefined;
  before(async () => {
    if (storeKind === 'redis') redis = await startRedis({ ownServer: true });
    server = await startServer(redis ? { redisUrl: redis.url } : {});
    world = await createWorld(server);
    if (redis) raw = new Redis(redis.url);
  });
  after(async () => {
    raw?.disconnect();
    await server?.close();
    await redis?.dispose();
  });

  test(`${storeKind === 'redis' ? 'one refresh is at most 8 Redis commands, scripts included, and ' : ''}the rotated pair works as before`, async () => {
    const call = endpoints(server.issuer);
    const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: SCOPE });
    // Warm: the client and "not locked out" are cached after the first request; what is left is per refresh.
    const warm = await call.refresh(world.shop, tokens.refresh_token!);
    assert.equal(warm.status, 200, JSON.stringify(warm.body));
    const presented = String(warm.body.refresh_token);
    const commands = raw ? await watchCommands(raw) : undefined;
    const refreshed = await call.refresh(world.shop, presented);
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    if (raw && commands) {
      // MONITOR reports a command after it ran: a ping through the same server marks the end of the refresh.
      await raw.ping();
      commands.stop();
      // The activity log writes its token counts on a timer, not per token (activity.test.ts).
      const ran = commands.ran.filter(([name, ...args]) => name?.toLowerCase() !== 'ping' && !args.some((a) => a.startsWith('lk:{activity-tokens}')));
      assert.ok(ran.length <= 8, `${ran.length} commands:\n${ran.map((c) => c.slice(0, 2).join(' ')).join('\n')}`);
      assert.ok(!ran.some((c) => c.some((a) => a.startsWith('lk:session-upstream:'))), 'the idp claim is not read per token');
    }

    // The new pair works; the presented token is used up, and using it again revokes the grant.
    assert.equal((await call.introspect(world.api, String(refreshed.body.access_token))).body.active, true);
    assert.equal((await call.introspect(world.shop, presented)).body.active, false, 'the presented refresh token is used up');
    const reuse = await call.refresh(world.shop, presented);
    assert.equal(reuse.body.error, 'invalid_grant');
    assert.equal((await call.introspect(world.api, String(refreshed.body.access_token))).body.active, false, 'reuse revoked what the rotation issued');
    assert.equal((await call.refresh(world.shop, String(refreshed.body.refresh_token))).body.error, 'invalid_grant');
  });

  if (storeKind === 'redis') test("a refresh waits for Redis twice: the token with its grant and account (named by the chain's last step here), then the rotation", async () => {
    const call = endpoints(server.issuer);
    const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: SCOPE });
    let presented = tokens.refresh_token!;
    const refresh = async () => {
      const refreshed = await call.refresh(world.shop, presented);
      assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
      presented = String(refreshed.body.refresh_token);
    };
    await refresh(); // warm: the client and "not locked out" are cached after the first request
    // Redis counts the reads of its clients' sockets: one per batch of commands a request sent and waited for.
    // Timers send single commands of their own: the activity log's token counts (one script, one
    // ZREMRANGEBYSCORE each time) and the logout queue's RPOP; they are left out.
    const reads = async () => {
      const info = await raw!.info('all');
      const calls = (command: string) => Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(info)?.[1] ?? 0);
      return Number(/total_reads_processed:(\d+)/.exec(info)![1]) - calls('zremrangebyscore') - calls('rpop');
    };
    const N = 20;
    const before = await reads();
    for (let i = 0; i < N; i += 1) await refresh();
    const waits = (await reads()) - before - 1; // the second INFO is a read too
    // Three waits per refresh would be 60 (the token, then its grant and account); a timer's command sent in a request's batch can make it one fewer.
    assert.ok(Math.abs(waits - 2 * N) <= N / 4, `${waits} reads for ${N} refreshes`);
  });

  test('parallel refreshes with one token: exactly one succeeds, and the grant is revoked with everything the winner got', async () => {
    const call = endpoints(server.issuer);
    const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: SCOPE });
    const answers = await Promise.all(Array.from({ length: 10 }, () => call.refresh(world.shop, tokens.refresh_token!)));
    const won = answers.filter((a) => a.status === 200);
    assert.equal(won.length, 1, answers.map((a) => a.status).join(' '));
    assert.ok(answers.filter((a) => a.status !== 200).every((a) => a.body.error === 'invalid_grant'));
    assert.equal((await call.introspect(world.api, String(won[0]!.body.access_token))).body.active, false);
    assert.equal((await call.refresh(world.shop, String(won[0]!.body.refresh_token))).body.error, 'invalid_grant');
  });

  test('a refresh whose access token is a JWT (never stored) still consumes the presented token and stores the new one', async () => {
    const call = endpoints(server.issuer);
    const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid offline_access jwt:read' });
    const refreshed = await call.refresh(world.shop, tokens.refresh_token!);
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.equal(String(refreshed.body.access_token).split('.').length, 3, 'a JWT');
    const next = await call.refresh(world.shop, String(refreshed.body.refresh_token));
    assert.equal(next.status, 200, 'the new refresh token was stored');
    assert.equal((await call.refresh(world.shop, tokens.refresh_token!)).body.error, 'invalid_grant', 'the first one was consumed');
    assert.equal((await call.refresh(world.shop, String(next.body.refresh_token))).body.error, 'invalid_grant', 'and its reuse revoked the grant');
  });
});
