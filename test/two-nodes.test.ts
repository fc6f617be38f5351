import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { endpoints, signIn } from './helpers/flow.ts';
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

test('brute-force counts are shared: failures spread over both nodes lock the account and the client on both', async () => {
  const person = { email: `two-nodes-${Date.now()}@example.org`, password: 'a long enough password' };
  await nodes[0]!.app.accounts.create(person);
  const attempt = async (password: string) => {
    const flow = await signIn({ issuer: proxy.url, client: world.firstParty, user: { email: person.email, password }, scope: 'openid', secondFactor: 'stop' });
    return flow.page?.status;
  };
  // Ten wrong passwords, the proxy alternating nodes request by request: the tenth locks.
  const statuses: (number | undefined)[] = [];
  for (let i = 0; i < 10; i += 1) statuses.push(await attempt('wrong password'));
  assert.equal(statuses.at(-1), 429, `statuses: ${statuses.join(', ')}`);
  assert.equal(await attempt(person.password), 429, 'the right password is refused too, whichever node answers');

  // The same for client authentication at the token endpoint.
  const call = endpoints(proxy.url);
  const wrong: number[] = [];
  for (let i = 0; i < 10; i += 1) wrong.push((await call.token({ clientId: world.machine.clientId, secret: 'not-the-secret' }, { grant_type: 'client_credentials', scope: 'api:read' })).status);
  assert.deepEqual(new Set(wrong.slice(0, 9)), new Set([401]));
  const right = await call.token(world.machine, { grant_type: 'client_credentials', scope: 'api:read' });
  assert.equal(right.status, 429, 'the right secret is refused while the client is locked');
  assert.ok(Number(right.headers.get('retry-after')) > 0);
});
