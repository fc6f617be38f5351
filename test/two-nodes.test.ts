import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { Accounts } from '../src/accounts/accounts.ts';
import { COMMANDS, commandContext } from '../src/cli/commands.ts';
import { Registry } from '../src/oidc/registry.ts';
import { createLogger } from '../src/observability/logger.ts';
import { connectRedis, RedisStore } from '../src/storage/redis-store.ts';
import { endpoints, signIn, signInAndRedeem } from './helpers/flow.ts';
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

test('keys rotate, twice in a row, reaches both nodes without a restart: tokens issued before still verify, new ones carry the new kid', async () => {
  const job = await nodes[0]!.app.registry.createClient({ name: 'JWT job', grants: ['client_credentials'], scope: 'jwt:read' }, async () => {});
  const call = endpoints(proxy.url);
  /** An ID token (RS256) and a JWT access token (ES256) from a sign-in, and a client-credentials JWT (ES256). */
  const issue = async () => {
    const { tokens } = await signInAndRedeem({ issuer: proxy.url, client: world.firstParty, user: world.user, scope: 'openid jwt:read' });
    const machine = await call.token({ clientId: job.clientId, secret: job.secret! }, { grant_type: 'client_credentials', scope: 'jwt:read' });
    assert.equal(machine.status, 200, JSON.stringify(machine.body));
    return [tokens.id_token!, tokens.access_token, String(machine.body.access_token)];
  };
  const jwksOf = async (node: TestServer) => (await (await fetch(`http://127.0.0.1:${node.port}/jwks`)).json()) as { keys: { kid: string; alg: string }[] };
  // The CLI's command, on a connection of its own as `latchkey keys rotate` would have.
  const cli = new RedisStore(connectRedis(redis.url, 2000));
  await cli.ready(5000);
  const rotate = async () => {
    const ctx = commandContext({ store: cli, registry: new Registry(cli), accounts: new Accounts(cli), logger: createLogger({ level: 'silent' }), validateClient: async () => {}, issuer: proxy.url, actor: { kind: 'cli' } });
    const out = await COMMANDS['keys rotate']!.run(ctx, {}, []);
    const current = (out.json as { keys: { kid: string; alg: string; current: boolean }[] }).keys.filter((k) => k.current);
    // Both nodes publish (and so sign with) the new generation within seconds: pub/sub, no restart.
    for (const node of nodes) {
      for (let i = 0; i < 100 && !(await jwksOf(node)).keys.some((k) => k.kid === current[0]!.kid); i += 1) await new Promise((r) => setTimeout(r, 50));
      assert.ok((await jwksOf(node)).keys.some((k) => k.kid === current[0]!.kid), `node on port ${node.port} learned of the rotation`);
    }
    return current;
  };

  try {
    const before = await issue();
    await rotate();
    const between = await issue();
    const current = await rotate();
    const after = await issue();

    const kid = (alg: string) => current.find((k) => k.alg === alg)!.kid;
    assert.deepEqual(after.map((t) => decodeProtectedHeader(t).kid), [kid('RS256'), kid('ES256'), kid('ES256')], 'new tokens carry the new kids');
    for (const node of nodes) {
      const jwks = await jwksOf(node);
      assert.equal(jwks.keys.length, 9, 'three generations published: the current one and both retired ones');
      const keySet = createLocalJWKSet(jwks);
      for (const token of [...before, ...between, ...after]) {
        await jwtVerify(token, keySet, { issuer: proxy.url });
      }
    }
    const [a, b] = await Promise.all(nodes.map(async (node) => (await fetch(`http://127.0.0.1:${node.port}/jwks`)).text()));
    assert.equal(a, b, 'both nodes publish the same set');
  } finally {
    await cli.close();
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
