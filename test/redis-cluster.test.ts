import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Cluster } from 'ioredis';
import { listConnectedApps, revokeConnectedApp } from '../src/accounts/connected-apps.ts';
import type { RedisStore } from '../src/storage/redis-store.ts';
import { endpoints, signIn, signInAndRedeem } from './helpers/flow.ts';
import { startRedisCluster, type TestCluster } from './helpers/redis-cluster.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { deviceRoundTrip } from './helpers/device.ts';
import { ssoRoundTrip } from './helpers/sso-round-trip.ts';
import { createWorld, type World } from './helpers/world.ts';
import { runCli } from './helpers/cli.ts';

/**
 * Latchkey on a private 3-master Redis Cluster (REDIS_CLUSTER_NODES): the whole sign-in, token,
 * introspection, refresh and reuse-detection flow works, and no command is refused with CROSSSLOT
 * (every record of a grant shares one hash tag; everything else is one key per command).
 */
let cluster: TestCluster;
let server: TestServer;
let world: World;

before(async () => {
  cluster = await startRedisCluster();
  server = await startServer({ env: cluster.env });
  world = await createWorld(server);
});

after(async () => {
  await server?.close();
  await cluster?.dispose();
});

test('the server keeps everything in the cluster it was pointed at', async () => {
  assert.equal(server.store.kind, 'redis');
  const client = (server.store as RedisStore).client as Cluster;
  assert.equal(client.isCluster, true);
  assert.equal(client.nodes('master').length, 3);
});

test('single sign-on end to end, on the cluster', async () => {
  await ssoRoundTrip(server.issuer, world);
  // Several sign-ins, so the grants land on different masters.
  for (let i = 0; i < 3; i += 1) await ssoRoundTrip(server.issuer, { ...world, shop: await world.newApp(`Shop ${i}`) });
  const masters = (server.store as RedisStore).client as Cluster;
  const sizes = await Promise.all(masters.nodes('master').map((node) => node.dbsize()));
  assert.ok(sizes.every((n) => n > 0), `keys per master: ${sizes.join(', ')}`);
});

test('the device authorization grant end to end, on the cluster', async () => {
  // The device code is made before its grant: its records must not mix slots with the grant's.
  for (let i = 0; i < 3; i += 1) await deviceRoundTrip(server.issuer, server.app.registry, world.user);
});

test('connected apps on the cluster: listed, and removing one revokes its grant and asks for consent again', async () => {
  const app = await world.newApp('Cluster notes');
  const { tokens, flow } = await signInAndRedeem({ issuer: server.issuer, client: app, user: world.user, scope: 'openid offline_access' });
  assert.ok(flow.consentPage);
  assert.ok((await listConnectedApps(server.store, server.app.registry, world.user.id)).some((a) => a.clientId === app.clientId));
  const revoked = await revokeConnectedApp(server.store, world.user.id, app.clientId);
  assert.deepEqual(revoked, { clientId: app.clientId, grants: 1, sessions: 1 });
  assert.equal((await endpoints(server.issuer).refresh(app, tokens.refresh_token!)).body.error, 'invalid_grant');
  assert.ok((await signIn({ issuer: server.issuer, client: app, scope: 'openid', jar: flow.jar, consent: 'stop' })).consentPage, 'consent is asked again');
  assert.ok(!(await listConnectedApps(server.store, server.app.registry, world.user.id)).some((a) => a.clientId === app.clientId));
});

test('no request failed and nothing was logged at error level (no CROSSSLOT)', () => {
  const problems = server.logs.filter((line) => (line.level as number) >= 50 || JSON.stringify(line).includes('CROSSSLOT'));
  assert.deepEqual(problems, []);
  const failed = server.logs.filter((line) => typeof line.status === 'number' && line.status >= 500);
  assert.deepEqual(failed, []);
});

test('the CLI works against the cluster (REDIS_CLUSTER_NODES)', async () => {
  const { code, stdout, stderr } = await runCli(['client', 'list', '--json'], { env: cluster.env });
  assert.equal(code, 0, stderr);
  const listed = JSON.stringify(JSON.parse(stdout));
  assert.ok(listed.includes(world.shop.clientId), `the CLI sees the server's clients: ${listed.slice(0, 300)}`);
});
