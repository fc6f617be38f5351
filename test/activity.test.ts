import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { adminApiUri } from '../src/admin/api.ts';
import { ActivityLog } from '../src/observability/activity.ts';
import { keys } from '../src/storage/keys.ts';
import { MemoryStore } from '../src/storage/memory-store.ts';
import { connectRedis, RedisStore } from '../src/storage/redis-store.ts';
import { basic, endpoints } from './helpers/flow.ts';
import { startRedis } from './helpers/redis.ts';
import { startServer } from './helpers/server.ts';

/**
 * The activity log must keep what admins look for (their changes, sign-ins, lockouts) however often an
 * anonymous caller gets itself refused: refusals are aggregated per source and minute and capped apart.
 */
const noValidation = async () => {};

test('an anonymous flood of refused client authentications, throttled or not, does not push admin changes out of the activity log', async () => {
  const redis = await startRedis({ ownServer: true });
  const server = await startServer({ redisUrl: redis.url, env: { ADMIN_ACTIVITY_MAX: '50' } });
  try {
    const scope = 'latchkey:admin';
    const ops = await server.app.registry.createClient({ name: 'ops', grants: ['client_credentials'], scope }, noValidation);
    const token = await endpoints(server.issuer).token({ clientId: ops.clientId, secret: ops.secret! }, { grant_type: 'client_credentials', scope, resource: adminApiUri(server.issuer) });
    assert.equal(token.status, 200);
    const read = async (query: string) => {
      const res = await fetch(`${server.issuer}/admin/api/v1/activity?${query}`, { headers: { authorization: `Bearer ${String(token.body.access_token)}` } });
      assert.equal(res.status, 200);
      return ((await res.json()) as { events: Record<string, unknown>[] }).events;
    };
    const created = await fetch(`${server.issuer}/admin/api/v1/users`, {
      method: 'POST',
      headers: { authorization: `Bearer ${String(token.body.access_token)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'grace@example.org', password: 'a long enough passphrase for her' }),
    });
    assert.equal(created.status, 201, await created.text());

    // 300 wrong secrets from one source: the first ten are 401, the rest 429 once the source is throttled.
    const statuses = new Set<number>();
    for (let i = 0; i < 300; i += 1) {
      const res = await fetch(new URL('/token', server.issuer), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(ops.clientId, `wrong-${i}`) },
        body: 'grant_type=client_credentials',
      });
      statuses.add(res.status);
      await res.body?.cancel();
    }
    assert.deepEqual([...statuses].sort(), [401, 429]);
    await server.app.activity.flush();

    assert.equal((await read('event=user_created')).length, 1, 'the admin change is still there');
    assert.equal((await read('event=token_issued')).length, 1);
    const refused = await read('event=client_authentication_failed');
    // One entry per source and minute (more if the flood crossed a minute), counting every refusal: the
    // wrong secrets name the client; the throttled requests were refused before the client was looked up.
    assert.ok(refused.length >= 2 && refused.length <= 4, `${refused.length} entries`);
    assert.equal(refused.filter((e) => e.clientId === ops.clientId).reduce((n, e) => n + Number(e.count), 0), 10, 'the ten wrong secrets');
    assert.equal(refused.reduce((n, e) => n + Number(e.count), 0), 300);
    for (const e of refused) {
      assert.equal(typeof e.ip, 'string');
      assert.match(String(e.minute), /^\d{4}-\d\d-\d\dT\d\d:\d\d:00\.000Z$/);
    }
    assert.ok((await server.store.streamLength(keys.activity)) < 10, 'the capped stream of what matters holds no refusals');
  } finally {
    await server.close();
    await redis.dispose();
  }
});

test('refusals are counted per source and minute, kept apart, and read back merged newest first, paged without loss', async () => {
  const store = new MemoryStore();
  let now = Date.parse('2026-01-01T10:00:05Z');
  const log = new ActivityLog(store, { maxEvents: 100, maxAnonymousEvents: 100, now: () => now });
  const refusal = (ip: string) => log.append('client_authentication_failed', { clientId: 'app', ip, error: 'invalid_client' }, 'client authentication failed');

  log.append('user_created', { accountId: 'a1' }, 'user created');
  await log.flush();
  for (let i = 0; i < 50; i += 1) refusal('192.0.2.1');
  for (let i = 0; i < 5; i += 1) refusal('192.0.2.2');
  log.append('signin_failed', { factor: 'password', reason: 'wrong', ip: '192.0.2.1' }, 'sign-in refused');
  // Nothing of the running minute is written yet: only the admin change is in the stream.
  assert.equal((await log.query({}, { limit: 10 })).events.length, 1);
  now += 60_000;
  for (let i = 0; i < 3; i += 1) refusal('192.0.2.1');
  log.writeFinishedMinutes();
  await new Promise((resolve) => setImmediate(resolve));
  // A lockout of a name nobody has is anonymous too; one of a real account is not.
  log.append('lockout_started', { scope: 'client', subject: 'account', clientIdDigest: 'x', ip: '192.0.2.1' }, 'locked');
  log.append('lockout_started', { scope: 'signin', subject: 'account', accountId: 'a1' }, 'locked');
  await log.flush();

  assert.equal(await store.streamLength(keys.activity), 2, 'the admin change and the real account\'s lockout');
  const all = (await log.query({}, { limit: 100 })).events;
  const summary = all.map((e) => `${e.event}${e.count === undefined ? '' : `×${String(e.count)}@${String(e.ip)}`}`);
  assert.deepEqual([...summary].sort(), [
    'client_authentication_failed×3@192.0.2.1',
    'client_authentication_failed×5@192.0.2.2',
    'client_authentication_failed×50@192.0.2.1',
    'lockout_started',
    'lockout_started',
    'signin_failed×1@192.0.2.1',
    'user_created',
  ].sort());
  // Newest first by stream id (the two streams' entries interleave by time).
  const order = (id: string) => id.split('-').map(Number) as [number, number];
  for (let i = 1; i < all.length; i += 1) {
    const [a, b] = [order(all[i - 1]!.id), order(all[i]!.id)];
    assert.ok(a[0] > b[0] || (a[0] === b[0] && a[1] >= b[1]), `${all[i - 1]!.id} before ${all[i]!.id}`);
  }
  // One at a time, over both streams: every entry once.
  const seen: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await log.query({}, { limit: 1, ...(cursor ? { cursor } : {}) });
    seen.push(...page.events.map((e) => e.id));
    cursor = page.next;
  } while (cursor);
  assert.deepEqual(seen, all.map((e) => e.id));
  // Filters apply to both: a client's refusals and changes alike.
  assert.equal((await log.query({ clientId: 'app' }, { limit: 100 })).events.length, 3);
});

/** The commands clients send to Redis (MONITOR; not those scripts run inside), each with its arguments, until `stop`. */
async function watchCommands(redis: Redis): Promise<{ sent: string[][]; stop(): void }> {
  const monitor = await redis.monitor();
  const sent: string[][] = [];
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    if (source !== 'lua') sent.push(args.map(String));
  });
  return { sent, stop: () => monitor.disconnect() };
}

test('client-credentials tokens are counted, not appended: no Redis work per token for the log, the counts written after, shown per app', async () => {
  const redis = await startRedis({ ownServer: true });
  // The counts' minute is the server's clock: fixed here, so the 200 tokens fall in one minute.
  const now = Date.parse('2026-03-02T10:00:05Z');
  const server = await startServer({ redisUrl: redis.url, clock: () => now });
  const raw = new Redis(redis.url);
  try {
    await server.app.registry.createResource({ uri: 'https://reports.example', scope: 'reports:read' });
    const app = await server.app.registry.createClient({ name: 'Nightly export', grants: ['client_credentials'], scope: 'reports:read' }, noValidation);
    const token = () => endpoints(server.issuer).token({ clientId: app.clientId, secret: app.secret! }, { grant_type: 'client_credentials', scope: 'reports:read', resource: 'https://reports.example' });
    // Warm: the client, the API and "not locked out" are cached after the first request; what is left is per token.
    assert.equal((await token()).status, 200);
    await server.app.activity.flush();
    const streamBefore = await server.store.streamLength(keys.activity);
    const commands = await watchCommands(raw);
    const started = performance.now();
    for (let i = 0; i < 200; i += 1) assert.equal((await token()).status, 200);
    const windows = Math.ceil((performance.now() - started) / 250) + 1;
    // MONITOR reports a command after it ran: a ping through the same server marks the end of what the tokens sent.
    await raw.ping();
    commands.stop();
    const sent = commands.sent.filter(([name]) => name?.toLowerCase() !== 'ping');
    const logWrites = sent.filter((args) => args.some((a) => a.startsWith('lk:activity') || a.startsWith('lk:{activity-tokens}')));
    // The log writes the counts once per 250 ms at most, whatever the number of tokens; nothing per token.
    assert.ok(logWrites.length <= windows, `${logWrites.length} writes of the log in ${windows} intervals`);
    assert.ok(logWrites.every((args) => args.includes(keys.tokenCountMinutes)), 'only the counts');
    // Per token: its record and its client's token index (one script); nothing else.
    const perToken = (sent.length - logWrites.length) / 200;
    assert.equal(await server.store.streamLength(keys.activity), streamBefore, 'no activity entry per token');
    assert.equal(perToken, 1, `${perToken} Redis commands per token besides the log's counts`);
    assert.equal(server.logs.filter((l) => l.event === 'token_issued').length, 201, 'each token still has its log line');

    server.app.activity.writeTokenCounts();
    await server.app.activity.flush();
    const rows = (await server.app.activity.query({ events: ['token_issued'] }, { limit: 10 })).events;
    assert.deepEqual(rows.map(({ clientId, grantType, count, minute, until, time }) => ({ clientId, grantType, count, minute, until, time })), [
      { clientId: app.clientId, grantType: 'client_credentials', count: 201, minute: '2026-03-02T10:00:00.000Z', until: '2026-03-02T10:01:00.000Z', time: '2026-03-02T10:00:00.000Z' },
    ]);
    // The counts live in one hash per minute (the client id a field, not a key name), with a TTL.
    const minuteKey = keys.tokenCounts(Math.floor(now / 60_000));
    assert.ok((await raw.ttl(minuteKey)) > 13 * 86_400, 'kept ADMIN_ACTIVITY_TOKEN_COUNT_DAYS (14 by default)');
    assert.ok((await raw.ttl(keys.tokenCountMinutes)) > 13 * 86_400);
    assert.deepEqual((await raw.keys('lk:{activity-tokens}*')).sort(), [minuteKey, keys.tokenCountMinutes].sort(), 'one hash per minute, not per client');
    // A filter by person leaves counts out (they name no one); a filter by client keeps them.
    assert.equal((await server.app.activity.query({ clientId: app.clientId }, { limit: 10 })).events.length, 1);
    assert.equal((await server.app.activity.query({ accountId: 'someone' }, { limit: 10 })).events.length, 0);
  } finally {
    raw.disconnect();
    await server.close();
    await redis.dispose();
  }
});

test('tokens counted but not yet written are written when the server stops', async () => {
  const redis = await startRedis({ ownServer: true });
  const server = await startServer({ redisUrl: redis.url });
  let closed = false;
  try {
    await server.app.registry.createResource({ uri: 'https://reports.example', scope: 'reports:read' });
    const app = await server.app.registry.createClient({ name: 'Nightly export', grants: ['client_credentials'], scope: 'reports:read' }, noValidation);
    for (let i = 0; i < 5; i += 1) {
      const res = await endpoints(server.issuer).token({ clientId: app.clientId, secret: app.secret! }, { grant_type: 'client_credentials', scope: 'reports:read', resource: 'https://reports.example' });
      assert.equal(res.status, 200);
    }
    // Stopped before the write interval is over: the close hook (the one SIGTERM runs) writes the counts.
    await server.close();
    closed = true;
    const store = new RedisStore(connectRedis(redis.url, 1000));
    const { events: rows } = await store.ready(5000).then(() => new ActivityLog(store, { maxEvents: 100 }).query({ events: ['token_issued'] }, { limit: 10 })).finally(() => store.close());
    assert.deepEqual(rows.map((e) => [e.clientId, e.count]), [[app.clientId, 5]]);
  } finally {
    if (!closed) await server.close();
    await redis.dispose();
  }
});
