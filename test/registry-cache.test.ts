import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Registry } from '../src/oidc/registry.ts';
import { connectRedis, RedisStore } from '../src/storage/redis-store.ts';
import { endpoints } from './helpers/flow.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { eventually } from './helpers/eventually.ts';

/**
 * Servers cache clients and APIs in process (they are read on every token request). A change made by
 * another process — the CLI — reaches every server's cache through Redis pub/sub.
 */
let redis: TestRedis;
let server: TestServer;
let cli: RedisStore;
let cliRegistry: Registry;
before(async () => {
  redis = await startRedis();
  server = await startServer({ redisUrl: redis.url });
  cli = new RedisStore(connectRedis(redis.url, 2000));
  await cli.ready(5000);
  cliRegistry = new Registry(cli); // as the CLI builds it: no cache
});
after(async () => {
  await cli.close();
  await server.close();
  await redis.dispose();
});

const noValidation = async () => {};

test('a secret rotated or a client deleted by another process takes effect on a running server', async () => {
  const api = await cliRegistry.createResource({ uri: 'https://cache.example', scope: 'cache:read' });
  const job = await cliRegistry.createClient({ name: 'job', grants: ['client_credentials'], scope: 'cache:read' }, noValidation);
  const ep = endpoints(server.issuer);
  const grant = (secret: string) => ep.token({ clientId: job.clientId, secret }, { grant_type: 'client_credentials', scope: 'cache:read' });

  const first = await grant(job.secret!);
  assert.equal(first.status, 200, 'a client created by the CLI is usable at once');
  const introspected = await ep.introspect({ clientId: api.resource.clientId, secret: api.secret }, String(first.body.access_token));
  assert.equal(introspected.body.aud, 'https://cache.example');

  const rotated = await cliRegistry.rotateSecret(job.clientId);
  await eventually(async () => (await grant(job.secret!)).status === 401, 'the old secret is refused');
  assert.equal((await grant(rotated)).status, 200, 'the new secret works');

  await cliRegistry.deleteClient(job.clientId);
  await eventually(async () => (await grant(rotated)).status === 401, 'a deleted client is refused');
});

test('an API deleted by another process stops being an audience on a running server', async () => {
  await cliRegistry.createResource({ uri: 'https://gone.example', scope: 'gone:read' });
  const job = await cliRegistry.createClient({ name: 'job2', grants: ['client_credentials'], scope: 'gone:read' }, noValidation);
  const ep = endpoints(server.issuer);
  const grant = () => ep.token({ clientId: job.clientId, secret: job.secret! }, { grant_type: 'client_credentials', scope: 'gone:read', resource: 'https://gone.example' });
  assert.equal((await grant()).status, 200);
  await cliRegistry.deleteResource('https://gone.example');
  await eventually(async () => (await grant()).status === 400, 'the deleted API is an invalid target');
});
