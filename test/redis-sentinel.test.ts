import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Redis } from 'ioredis';
import { loadConfig } from '../src/config.ts';
import type { RedisStore } from '../src/storage/redis-store.ts';
import { endpoints } from './helpers/flow.ts';
import { startRedisSentinel, type TestSentinel } from './helpers/redis-sentinel.ts';
import { startServer, type TestServer } from './helpers/server.ts';

/** Latchkey through Redis Sentinel (REDIS_SENTINELS + REDIS_SENTINEL_NAME): a smoke test. */
let sentinel: TestSentinel;
let server: TestServer;

before(async () => {
  sentinel = await startRedisSentinel();
  server = await startServer({ env: sentinel.env });
});

after(async () => {
  await server?.close();
  await sentinel?.dispose();
});

test('the server finds its Redis through the Sentinel, issues a token and introspects it', async () => {
  const client = (server.store as RedisStore).client as Redis;
  assert.deepEqual(client.options.sentinels, [{ host: '127.0.0.1', port: sentinel.sentinelPort }]);
  assert.equal(client.options.name, sentinel.env.REDIS_SENTINEL_NAME);

  const { registry } = server.app;
  const api = await registry.createResource({ uri: 'https://api.example', scope: 'api:read' });
  const machine = await registry.createClient({ name: 'Nightly job', grants: ['client_credentials'], scope: 'api:read' }, async () => {});
  const ep = endpoints(server.issuer);
  const issued = await ep.token({ clientId: machine.clientId, secret: machine.secret! }, { grant_type: 'client_credentials', scope: 'api:read' });
  assert.equal(issued.status, 200, JSON.stringify(issued.body));
  const seen = await ep.introspect({ clientId: api.resource.clientId, secret: api.secret }, issued.body.access_token as string);
  assert.equal(seen.body.active, true);
  assert.equal(seen.body.client_id, machine.clientId);
  assert.deepEqual([seen.body.aud].flat(), ['https://api.example']);

  // It is in the master the Sentinel named, not somewhere else.
  const ready = await fetch(new URL('/readyz', server.issuer));
  assert.equal(ready.status, 200);
  assert.equal(Number((await client.info('server')).match(/tcp_port:(\d+)/)?.[1]), sentinel.master.port, 'connected to the monitored master');
});

test('a Sentinel configuration needs the master name, and only one kind of Redis may be named', () => {
  assert.throws(() => loadConfig({ REDIS_SENTINELS: sentinel.env.REDIS_SENTINELS! }), /REDIS_SENTINEL_NAME: is required with REDIS_SENTINELS/);
  assert.throws(() => loadConfig({ ...sentinel.env, REDIS_URL: sentinel.master.url }), /set only one of REDIS_URL, REDIS_CLUSTER_NODES and REDIS_SENTINELS/);
});
