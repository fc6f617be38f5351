import assert from 'node:assert/strict';
import { test } from 'node:test';
import { grantTag, keys } from '../src/storage/keys.ts';
import type { RedisStore } from '../src/storage/redis-store.ts';
import { StorageUnavailable } from '../src/storage/store.ts';
import { useRedisStore } from './helpers/redis.ts';

/**
 * A full Redis with `maxmemory-policy noeviction` (docs/scaling.md) refuses writes with OOM instead
 * of evicting grants: the store reports that as StorageUnavailable (503 + Retry-After), and reads go on.
 */
let store: RedisStore;

useRedisStore((setup) => ({ store } = setup), { ownServer: true });

test('a write refused with OOM is StorageUnavailable; reads and revocations still work', async () => {
  await store.set('test:before', 'v');
  const live = `${grantTag('live')}${'y'.repeat(43)}`;
  await store.putModel(keys.model('AccessToken', live), '{}', 60, keys.grantIndex('live'));
  await store.client.config('SET', 'maxmemory-policy', 'noeviction');
  await store.client.config('SET', 'maxmemory', '1');
  try {
    const id = `${grantTag('g')}${'x'.repeat(43)}`;
    for (const write of [
      () => store.set('test:after', 'v'),
      () => store.putModel(keys.model('AccessToken', id), '{}', 60, keys.grantIndex('g')),
      () => store.setAdd('test:set', 'm'),
    ]) {
      await assert.rejects(write(), (err) => err instanceof StorageUnavailable && /^OOM/.test((err.cause as Error).message));
    }
    assert.equal(await store.get('test:before'), 'v', 'nothing was evicted');
    // Deleting frees memory: revoking a grant works on a full Redis.
    assert.deepEqual(await store.getModel(keys.model('AccessToken', live)), { payload: '{}' });
    await store.deleteIndexed(keys.grantIndex('live'));
    assert.equal(await store.getModel(keys.model('AccessToken', live)), null);
  } finally {
    await store.client.config('SET', 'maxmemory', '0');
  }
});
