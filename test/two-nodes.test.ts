import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startProxy, type TestProxy } from './helpers/proxy.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { ssoRoundTrip } from './helpers/sso-round-trip.ts';
import { createWorld, type World } from './helpers/world.ts';

/**
 * Many nodes: two Latchkey servers on one Redis behind a round-robin proxy that sends each request
 * to the other node, with nothing configured but ISSUER (the proxy's URL) and REDIS_URL. Signing
 * keys, cookie keys, the DPoP nonce secret, sessions, interactions and grants are all in Redis, so a
 * sign-in whose every step lands on the other node works like one on a single node.
 */
let redis: TestRedis;
let proxy: TestProxy;
let nodes: TestServer[];
let world: World;

before(async () => {
  redis = await startRedis();
  proxy = await startProxy();
  // Both at once, as a deployment would start them: the keys each generates at first start are
  // set-if-absent in Redis, so they agree on one set.
  nodes = await Promise.all([0, 1].map(() => startServer({ redisUrl: redis.url, env: { ISSUER: proxy.url } })));
  proxy.backends.push(...nodes.map((node) => ({ port: node.port })));
  world = await createWorld(nodes[0]!);
});

after(async () => {
  await proxy?.close();
  for (const node of nodes ?? []) await node.close();
  await redis?.dispose();
});

test('both nodes publish one issuer and one key set', async () => {
  const discovery = await Promise.all(nodes.map(async (node) => (await fetch(`http://127.0.0.1:${node.port}/.well-known/openid-configuration`)).json() as Promise<{ issuer: string; jwks_uri: string }>));
  assert.deepEqual(discovery.map((d) => d.issuer), [proxy.url, proxy.url]);
  const jwks = await Promise.all(nodes.map(async (node) => (await fetch(`http://127.0.0.1:${node.port}/jwks`)).text()));
  assert.equal(jwks[0], jwks[1]);
});

test('single sign-on through the round-robin proxy: every other request on the other node', async () => {
  const before = [...proxy.counts];
  await ssoRoundTrip(proxy.url, world);
  const served = proxy.counts.map((n, i) => n - (before[i] ?? 0));
  assert.ok(served.every((n) => n >= 8), `requests per node: ${served.join(', ')}`);
  assert.ok(Math.abs(served[0]! - served[1]!) <= 1, 'round robin');
  // Each node handled requests of the flow, and neither logged a failure.
  for (const node of nodes) {
    assert.ok(node.logs.some((line) => line.msg === 'request'), 'the node served requests');
    const problems = node.logs.filter((line) => (line.level as number) >= 50 || (typeof line.status === 'number' && line.status >= 500));
    assert.deepEqual(problems, []);
  }
});
