import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { endpoints } from './helpers/flow.ts';
import { startRedis } from './helpers/redis.ts';
import { startServer } from './helpers/server.ts';

/**
 * What one client-credentials token costs Redis (issue 23): at most 400 bytes of used_memory everything
 * included (its record, the client's index of its tokens, the activity counts, Redis' own bookkeeping),
 * and one command sent per token, three run (the script and the two writes inside it).
 */
const noValidation = async () => {};
const TOKENS = 2000;

const usedMemory = async (redis: Redis) => Number(/^used_memory:(\d+)/m.exec(await redis.info('memory'))?.[1]);

/** MEMORY USAGE summed over the keys matching `pattern`, and their number. */
async function usageOf(redis: Redis, pattern: string): Promise<{ keys: number; bytes: number }> {
  const found = await redis.keys(pattern);
  const usage = await Promise.all(found.map((k) => redis.call('MEMORY', 'USAGE', k, 'SAMPLES', '0') as Promise<number | null>));
  return { keys: found.length, bytes: usage.reduce<number>((n, u) => n + (u ?? 0), 0) };
}

/** Every command Redis runs (MONITOR), a script's own commands marked `inner`, until `stop`. */
async function watchCommands(redis: Redis): Promise<{ ran: { args: string[]; inner: boolean }[]; stop(): void }> {
  const monitor = await redis.monitor();
  const ran: { args: string[]; inner: boolean }[] = [];
  monitor.on('monitor', (_time: string, args: string[], source: string) => ran.push({ args: args.map(String), inner: source === 'lua' }));
  return { ran, stop: () => monitor.disconnect() };
}

async function machineServer() {
  const redis = await startRedis({ ownServer: true });
  const server = await startServer({ redisUrl: redis.url });
  const raw = new Redis(redis.url);
  await server.app.registry.createResource({ uri: 'https://reports.example', scope: 'reports:read' });
  const app = await server.app.registry.createClient({ name: 'Nightly export', grants: ['client_credentials'], scope: 'reports:read' }, noValidation);
  const token = async () => {
    const res = await endpoints(server.issuer).token({ clientId: app.clientId, secret: app.secret! }, { grant_type: 'client_credentials', scope: 'reports:read', resource: 'https://reports.example' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  };
  // Warm: the client, the API, "not locked out" and the scripts are cached after the first requests; what is left is per token.
  for (let i = 0; i < 3; i += 1) await token();
  await server.app.activity.flush();
  return {
    raw,
    token,
    /** The activity log's counts written now, as its timer would. */
    flushCounts: async () => {
      server.app.activity.writeTokenCounts();
      await server.app.activity.flush();
    },
    close: async () => {
      raw.disconnect();
      await server.close();
      await redis.dispose();
    },
  };
}

test(`a client-credentials token costs at most 400 B of Redis memory, everything included (${TOKENS} tokens, INFO memory and MEMORY USAGE)`, async () => {
  const { raw, token, flushCounts, close } = await machineServer();
  try {
    await flushCounts();
    const parts = { record: 'lk:{*}:ClientCredentials:*', index: 'lk:client-token*', counts: 'lk:{activity-tokens}:*', log: 'lk:activity*' };
    const measure = async () => ({ used: await usedMemory(raw), ...Object.fromEntries(await Promise.all(Object.entries(parts).map(async ([name, pattern]) => [name, await usageOf(raw, pattern)] as const))) }) as { used: number } & Record<keyof typeof parts, { keys: number; bytes: number }>;
    const before = await measure();
    for (let i = 0; i < TOKENS; i += 8) await Promise.all(Array.from({ length: 8 }, token));
    await flushCounts();
    const after = await measure();
    const perToken = (after.used - before.used) / TOKENS;
    const part = (name: keyof typeof parts) => (after[name].bytes - before[name].bytes) / TOKENS;
    const detail = `used_memory ${perToken.toFixed(1)} B per token: record ${part('record').toFixed(1)}, index ${part('index').toFixed(1)} (${after.index.keys} key), counts ${part('counts').toFixed(1)}, log ${part('log').toFixed(1)}`;
    console.log(detail);
    assert.equal(after.record.keys - before.record.keys, TOKENS, 'one record per token');
    assert.equal(after.index.keys, 1, "one index key for the client's day");
    assert.ok(part('index') <= 40, `the index costs at most 40 B per token: ${detail}`);
    assert.ok(part('counts') + part('log') <= 1, `the activity log nearly nothing per token: ${detail}`);
    assert.ok(perToken <= 400, detail);
  } finally {
    await close();
  }
});

test('a client-credentials token is one Redis command sent, three run (a script: the record and the index append), one round trip', async () => {
  const { raw, token, close } = await machineServer();
  try {
    const commands = await watchCommands(raw);
    const n = 200;
    for (let i = 0; i < n; i += 1) await token();
    // MONITOR reports a command after it ran: a ping through the same server marks the end of what the tokens sent.
    await raw.ping();
    commands.stop();
    // The activity log's counts are written on a timer, not per token (test/activity.test.ts).
    const ran = commands.ran.filter(({ args }) => args[0]?.toLowerCase() !== 'ping' && !args.some((a) => a.startsWith('lk:{activity-tokens}')));
    const sent = ran.filter((c) => !c.inner);
    const names = [...new Set(ran.map(({ args }) => args[0]!.toLowerCase()))].sort();
    assert.equal(sent.length / n, 1, `one command sent per token (one round trip): ${sent.length} for ${n} (${names.join(', ')})`);
    // EVALSHA, SET, RPUSH; the index's TTL is raised once per clock hour (an EXPIRE when the run crosses one).
    assert.deepEqual(names.filter((name) => name !== 'expire'), ['evalsha', 'rpush', 'set']);
    assert.ok(ran.length <= 3 * n + 2, `${ran.length / n} Redis commands per token, scripts' own included (${names.join(', ')})`);
  } finally {
    await close();
  }
});
