import { createLogger } from '../src/observability/logger.ts';
import assert from 'node:assert/strict';
import { spawnLatchkey, type LatchkeyProcess } from './helpers/process.ts';
import { after, before, describe, it } from 'node:test';
import { Accounts } from '../src/accounts/accounts.ts';
import { COMMANDS, commandContext } from '../src/cli/commands.ts';
import { CliError } from '../src/cli/output.ts';
import { Registry, RegistryError } from '../src/oidc/registry.ts';
import { GRANT_TAG_LENGTH } from '../src/storage/keys.ts';
import { connectRedis, RedisStore } from '../src/storage/redis-store.ts';
import { endpoints, signInAndRedeem, type ClientCreds } from './helpers/flow.ts';
import { freePort, startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { createWorld, REDIRECT_URI, type World } from './helpers/world.ts';

/**
 * Refresh-token grace window (`client create --refresh-grace SECONDS`): within it, the same client
 * presenting a used refresh token again gets the very response of the first use; after it, reuse
 * revokes the grant as without a window. On Redis and on the embedded store, one clock injected.
 */
const GRACE = 10;
const SCOPE = 'openid offline_access api:read';
const noValidation = async () => {};

for (const storeKind of ['redis', 'memory'] as const) {
  describe(`grace window on ${storeKind === 'redis' ? 'Redis' : 'the embedded store'}`, () => {
    let redis: TestRedis | undefined;
    let server: TestServer;
    let world: World;
    let app: ClientCreds & { secret: string };
    let call: ReturnType<typeof endpoints>;
    const clock = { offsetMs: 0 };

    before(async () => {
      if (storeKind === 'redis') redis = await startRedis();
      server = await startServer({ ...(redis ? { redisUrl: redis.url } : {}), clock: () => Date.now() + clock.offsetMs });
      world = await createWorld(server);
      const created = await server.app.registry.createClient(
        { name: 'Two tabs', grants: ['authorization_code', 'refresh_token'], redirectUris: [REDIRECT_URI], scope: SCOPE, refreshGrace: GRACE },
        noValidation,
      );
      app = { clientId: created.clientId, secret: created.secret!, redirectUri: REDIRECT_URI };
      call = endpoints(server.issuer);
    });
    after(async () => {
      await server?.close();
      await redis?.dispose();
    });

    const refreshToken = async () => (await signInAndRedeem({ issuer: server.issuer, client: app, user: world.user, scope: SCOPE })).tokens.refresh_token!;

    it('a refresh token presented again within the window gets the same new pair, which stays usable; no reuse alert; another client is refused', async () => {
      const used = await refreshToken();
      const logged = server.logs.length;
      const first = await call.refresh(app, used);
      assert.equal(first.status, 200, JSON.stringify(first.body));
      clock.offsetMs += (GRACE - 1) * 1000;
      const again = await call.refresh(app, used);
      assert.equal(again.status, 200, JSON.stringify(again.body));
      assert.deepEqual(again.body, first.body, 'the identical response, not a new pair');
      assert.equal((await call.refresh(world.shop, used)).body.error, 'invalid_grant', 'another client gets nothing');
      assert.equal((await call.introspect(world.api, String(first.body.access_token))).body.active, true);
      const next = await call.refresh(app, String(first.body.refresh_token));
      assert.equal(next.status, 200, 'the new refresh token works');
      assert.ok(!server.logs.slice(logged).some((l) => l.event === 'refresh_token_reuse_detected'), 'no reuse alert');
    });

    it('after the window, reuse revokes the grant and raises refresh_token_reuse_detected, as it does at once without a window', async () => {
      const used = await refreshToken();
      const first = await call.refresh(app, used);
      assert.equal(first.status, 200);
      assert.deepEqual((await call.refresh(app, used)).body, first.body, 'within the window');
      clock.offsetMs += (GRACE + 1) * 1000;
      const logged = server.logs.length;
      const reuse = await call.refresh(app, used);
      assert.equal(reuse.status, 400);
      assert.equal(reuse.body.error, 'invalid_grant');
      assert.ok(server.logs.slice(logged).some((l) => l.event === 'refresh_token_reuse_detected'), 'reuse detected');
      assert.equal((await call.refresh(app, String(first.body.refresh_token))).body.error, 'invalid_grant', 'the grant is revoked');
      assert.equal((await call.introspect(world.api, String(first.body.access_token))).body.active, false);

      // A client without a window (the default, 0): the second use revokes at once.
      const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: SCOPE });
      const plain = await call.refresh(world.shop, tokens.refresh_token!);
      assert.equal(plain.status, 200);
      assert.equal((await call.refresh(world.shop, tokens.refresh_token!)).body.error, 'invalid_grant');
      assert.equal((await call.refresh(world.shop, String(plain.body.refresh_token))).body.error, 'invalid_grant');
    });

    if (storeKind === 'redis') {
      it('the kept response is sealed, in the grant slot, named by no token value, and lives for the window', async () => {
        const used = await refreshToken();
        const first = await call.refresh(app, used);
        const client = (server.store as RedisStore).client;
        const kept = await client.keys(`lk:{${used.slice(0, GRANT_TAG_LENGTH)}}:RefreshResponse:*`);
        assert.equal(kept.length, 1);
        const value = (await client.get(kept[0]!))!;
        for (const bearer of [used, String(first.body.access_token), String(first.body.refresh_token)]) {
          assert.ok(!kept[0]!.includes(bearer) && !value.includes(bearer), 'no bearer value in its name or in clear in its value');
        }
        const ttl = await client.ttl(kept[0]!);
        assert.ok(ttl > 0 && ttl <= GRACE, `TTL ${ttl}`);
        assert.ok((await client.smembers(`lk:{${used.slice(0, GRANT_TAG_LENGTH)}}:grant`)).includes(kept[0]!), 'listed in the grant index, so revoking the grant deletes it');
      });
    }
  });
}

describe('--refresh-grace', () => {
  let redis: TestRedis;
  let store: RedisStore;
  let registry: Registry;
  before(async () => {
    redis = await startRedis();
    store = new RedisStore(connectRedis(redis.url, 2000));
    await store.ready(5000);
    registry = new Registry(store);
  });
  after(async () => {
    await store.close();
    await redis.dispose();
  });
  const create = (values: Record<string, string | boolean | string[]>) =>
    COMMANDS['client create']!.run(commandContext({ store, registry, accounts: new Accounts(store), logger: createLogger({ level: 'silent' }), validateClient: async () => {}, issuer: 'http://localhost', actor: { kind: 'cli', operator: 'test' } }), { name: 'App', 'redirect-uri': [REDIRECT_URI], scope: 'openid offline_access', ...values }, []);

  it('is stored and shown; the default is 0', async () => {
    const out = await create({ grants: 'authorization_code,refresh_token', 'refresh-grace': '30' });
    const id = String((out.json as { client_id: string }).client_id);
    assert.equal((await registry.findClient(id))?.refresh_grace_seconds, 30);
    const shown = await COMMANDS['client show']!.run(commandContext({ store, registry, accounts: new Accounts(store), logger: createLogger({ level: 'silent' }), validateClient: async () => {}, issuer: 'http://localhost', actor: { kind: 'cli', operator: 'test' } }), {}, [id]);
    assert.equal((shown.json as { refresh_grace_seconds: number }).refresh_grace_seconds, 30);
    const plain = await create({ grants: 'authorization_code,refresh_token' });
    const plainId = String((plain.json as { client_id: string }).client_id);
    assert.equal((await registry.findClient(plainId))?.refresh_grace_seconds, undefined);
  });

  it('refuses what is not 0 to 60 whole seconds, and a client without refresh tokens', async () => {
    for (const bad of ['61', '-1', '1.5', 'ten', '']) {
      await assert.rejects(create({ grants: 'authorization_code,refresh_token', 'refresh-grace': bad }), (err: Error) => (err instanceof RegistryError || err instanceof CliError) && /--refresh-grace must be a whole number of seconds from 0 to 60/.test(err.message), bad);
    }
    await assert.rejects(create({ grants: 'authorization_code', 'refresh-grace': '5' }), /--refresh-grace needs the refresh_token grant/);
  });
});

describe('two server processes on one Redis', () => {
  let redis: TestRedis;
  let nodes: LatchkeyProcess[] = [];
  before(async () => {
    redis = await startRedis();
    const ports = [await freePort(), await freePort()];
    // One issuer for both (the first one's address), as behind a balancer; each is reached at its own address.
    const issuer = `http://127.0.0.1:${ports[0]}`;
    nodes = await Promise.all(ports.map((port) => spawnLatchkey({ REDIS_URL: redis.url, ISSUER: issuer, MFA_POLICY: 'optional' }, { port })));
  });
  after(async () => {
    for (const node of nodes) await node.stop();
    await redis?.dispose();
  });

  it('20 parallel refreshes of one token, alternating between the processes, all get the identical pair', async () => {
    const store = new RedisStore(connectRedis(redis.url, 2000));
    await store.ready(5000);
    try {
      const registry = new Registry(store);
      await registry.createResource({ uri: 'https://api.example', scope: 'api:read' });
      const created = await registry.createClient(
        { name: 'Two threads', grants: ['authorization_code', 'refresh_token'], redirectUris: [REDIRECT_URI], scope: SCOPE, refreshGrace: GRACE },
        noValidation,
      );
      const app = { clientId: created.clientId, secret: created.secret!, redirectUri: REDIRECT_URI };
      const person = { email: 'tabs@example.org', password: 'a long enough password' };
      await new Accounts(store).create(person);
      // Signed in at the first process, the issuer's address.
      const { tokens } = await signInAndRedeem({ issuer: nodes[0]!.url, client: app, user: person, scope: SCOPE });
      const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => endpoints(nodes[i % 2]!.url).refresh(app, tokens.refresh_token!)));
      assert.deepEqual(answers.map((a) => a.status), Array(20).fill(200), JSON.stringify(answers.find((a) => a.status !== 200)?.body));
      const distinct = new Set(answers.map((a) => JSON.stringify(a.body)));
      assert.equal(distinct.size, 1, 'one response for all');
      assert.notEqual(answers[0]!.body.refresh_token, tokens.refresh_token);
      // Each process logged its half (its log arrives through a pipe: wait for it, bounded).
      const answered = (node: (typeof nodes)[number]) => node.lines.filter((l) => l.route === 'token' && l.status === 200).length;
      for (let i = 0; i < 100 && !nodes.every((node) => answered(node) >= 10); i += 1) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(nodes.map((node) => answered(node) >= 10), [true, true], 'each process answered its half');
      const next = await endpoints(nodes[1]!.url).refresh(app, String(answers[0]!.body.refresh_token));
      assert.equal(next.status, 200, 'the one new refresh token works');
    } finally {
      await store.close();
    }
  });
});
