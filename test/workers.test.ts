import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Registry } from '../src/oidc/registry.ts';
import { connectRedis, RedisStore } from '../src/storage/redis-store.ts';
import { endpoints } from './helpers/flow.ts';
import { spawnLatchkey } from './helpers/process.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';

/**
 * WORKERS=2: a node:cluster primary runs two serving processes on one port and one Redis; tokens
 * issued by one are valid at the other; /metrics counts what every worker did; SIGTERM drains both and
 * the primary exits 0.
 */
let redis: TestRedis;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.dispose();
});

test('WORKERS=2 serves from two processes that share the port and the Redis, and stops cleanly', async () => {
  const store = new RedisStore(connectRedis(redis.url, 2000));
  await store.ready(5000);
  const registry = new Registry(store);
  const api = await registry.createResource({ uri: 'https://workers.example', scope: 'w:read' });
  const job = await registry.createClient({ name: 'job', grants: ['client_credentials'], scope: 'w:read' }, async () => {});
  await store.close();

  const server = await spawnLatchkey({ REDIS_URL: redis.url, WORKERS: '2' });
  const { lines, port } = server;
  try {
    const listening = lines.filter((l) => /is listening/.test(l.msg ?? ''));
    assert.equal(listening.length, 2, 'two workers listen');
    assert.equal(new Set(listening.map((l) => l.worker)).size, 2, 'in two processes');

    const ep = endpoints(`http://127.0.0.1:${port}`);
    const issued = await Promise.all(Array.from({ length: 20 }, () => ep.token({ clientId: job.clientId, secret: job.secret! }, { grant_type: 'client_credentials', scope: 'w:read' })));
    assert.deepEqual(new Set(issued.map((r) => r.status)), new Set([200]));
    const checks = await Promise.all(issued.map((r) => ep.introspect({ clientId: api.resource.clientId, secret: api.secret }, String(r.body.access_token))));
    assert.ok(checks.every((c) => c.body.active === true), 'every token is active at every worker');
    const served = new Set(lines.filter((l) => l.msg === 'request').map((l) => l.worker));
    assert.equal(served.size, 2, 'both workers answered requests');

    // Whichever worker answers a scrape, it reports the whole cluster's counts (both issued tokens).
    const issuers = new Set(lines.filter((l) => l.msg === 'request' && (l as { route?: string }).route === 'token').map((l) => l.worker));
    assert.equal(issuers.size, 2, 'both workers issued tokens');
    for (let i = 0; i < 4; i += 1) {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert.match(text, /^latchkey_tokens_issued_total\{grant_type="client_credentials",token="access_token"\} 20$/m, 'tokens issued by both workers');
      assert.match(text, /^latchkey_introspections_total\{result="active"\} 20$/m, 'introspections answered by both workers');
      assert.match(text, /^process_resident_memory_bytes \d+/m, 'process metrics too');
    }
  } finally {
    await server.stop();
  }
  assert.equal((await server.exited).code, 0);
  assert.ok(lines.some((l) => l.msg === 'all workers stopped'));
});
