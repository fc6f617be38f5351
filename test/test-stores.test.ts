import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore } from '../src/storage/memory-store.ts';
import { RedisStore } from '../src/storage/redis-store.ts';
import { endpoints } from './helpers/flow.ts';
import { testStoreKind, useWorld, type World } from './helpers/world.ts';
import type { TestServer } from './helpers/server.ts';

/** The suites' one setup, pointed at each store: the same shared registrations work on all three. */
describe('LATCHKEY_TEST_STORE', () => {
  it('names the store of suites that do not pin one: redis by default, memory or cluster on request, nothing else', () => {
    assert.equal(testStoreKind({}), 'redis');
    assert.equal(testStoreKind({ LATCHKEY_TEST_STORE: 'memory' }), 'memory');
    assert.equal(testStoreKind({ LATCHKEY_TEST_STORE: 'cluster' }), 'cluster');
    assert.throws(() => testStoreKind({ LATCHKEY_TEST_STORE: 'mongo' }), /memory, redis, cluster/);
  });
});

for (const store of ['memory', 'redis'] as const) {
  describe(`useWorld({ store: '${store}' })`, () => {
    let server: TestServer;
    let world: World;
    useWorld({ store }, (setup) => {
      ({ server, world } = setup);
      assert.equal(setup.store, store);
      assert.equal(setup.redis === undefined, store === 'memory');
    });

    it('serves the shared registrations from that store', async () => {
      assert.ok(server.store instanceof (store === 'memory' ? MemoryStore : RedisStore));
      const token = await endpoints(server.issuer).token(world.machine, { grant_type: 'client_credentials', scope: 'api:read' });
      assert.equal(token.status, 200);
      const check = await endpoints(server.issuer).introspect(world.api, String(token.body.access_token));
      assert.equal(check.body.active, true);
    });
  });
}
