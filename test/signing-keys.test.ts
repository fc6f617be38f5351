import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  followSigningKeys,
  ID_TOKEN_TTL_SECONDS,
  KEYS_REREAD_SECONDS,
  loadSigningKeys,
  rotateSigningKeys,
  signingKeyRetentionSeconds,
  type StoredSigningKey,
} from '../src/oidc/signing-keys.ts';
import { keys } from '../src/storage/keys.ts';
import { MemoryStore } from '../src/storage/memory-store.ts';
import { connectRedis, RedisStore } from '../src/storage/redis-store.ts';
import type { Store } from '../src/storage/store.ts';
import { useRedisStore, type TestRedis } from './helpers/redis.ts';

/** Signing keys in storage: retirement dates, pruning, and servers following rotations. Times are explicit. */
let redis: TestRedis;
let redisStore: RedisStore;
useRedisStore((setup) => ({ redis, store: redisStore } = setup));

const kids = (list: StoredSigningKey[]) => list.map((k) => k.kid);
const HOUR = 3600;

test('retention: the longest lifetime of what a key signed (ID tokens, JWT access tokens), plus the re-read interval and leeway', () => {
  const margin = signingKeyRetentionSeconds([]) - ID_TOKEN_TTL_SECONDS;
  assert.ok(margin >= KEYS_REREAD_SECONDS, 'a server that missed the message signs with the old key until its re-read');
  assert.equal(signingKeyRetentionSeconds([{ tokenFormat: 'jwt', ttl: 600 }]), ID_TOKEN_TTL_SECONDS + margin, 'ID tokens live longer');
  assert.equal(signingKeyRetentionSeconds([{ tokenFormat: 'jwt', ttl: 86400 }, { tokenFormat: 'jwt', ttl: 7200 }]), 86400 + margin);
  assert.equal(signingKeyRetentionSeconds([{ tokenFormat: 'opaque', ttl: 86400 }]), ID_TOKEN_TTL_SECONDS + margin, 'opaque tokens are not signed');
});

for (const kind of ['redis', 'memory'] as const) {
  test(`${kind}: rotating twice in a row keeps both retired generations, each until its own date; rotate prunes expired ones`, async () => {
    const store: Store = kind === 'redis' ? redisStore : new MemoryStore();
    await store.del(keys.signingKeys);
    const t0 = Date.UTC(2030, 0, 1);
    const retentionSeconds = 2 * HOUR;
    const gen0 = await loadSigningKeys(store);

    const r1 = await rotateSigningKeys(store, { retentionSeconds, now: t0 });
    assert.deepEqual(kids(r1.retired), kids(gen0));
    assert.equal(r1.retiredUntil, t0 / 1000 + retentionSeconds);
    const r2 = await rotateSigningKeys(store, { retentionSeconds, now: t0 + 10_000 });
    assert.deepEqual(kids(r2.removed), [], 'nothing dropped by a second rotation right after the first');
    const stored = await loadSigningKeys(store);
    assert.deepEqual(kids(stored), [...kids(r2.current), ...kids(r1.current), ...kids(gen0)], 'current generation first, then retired, newest first');
    const until = new Map(stored.map((k) => [k.kid, k.retiredUntil]));
    for (const k of gen0) assert.equal(until.get(k.kid), t0 / 1000 + retentionSeconds, 'a retired key keeps its date through later rotations');
    for (const k of r1.current) assert.equal(until.get(k.kid), t0 / 1000 + 10 + retentionSeconds);
    for (const k of r2.current) assert.equal(until.get(k.kid), undefined, 'the current generation has no date');

    // Past gen0's date, but not gen1's: the next rotation drops gen0 only.
    const r3 = await rotateSigningKeys(store, { retentionSeconds, now: t0 + (retentionSeconds + 5) * 1000 });
    assert.deepEqual(kids(r3.removed), kids(gen0));
    assert.deepEqual(kids(await loadSigningKeys(store)), [...kids(r3.current), ...kids(r2.current), ...kids(r1.current)]);
  });

  test(`${kind}: two rotations at the same moment both land; neither loses the generation the other retired`, async () => {
    const store: Store = kind === 'redis' ? redisStore : new MemoryStore();
    await store.del(keys.signingKeys);
    const gen0 = await loadSigningKeys(store);
    const [a, b] = await Promise.all([rotateSigningKeys(store, { retentionSeconds: HOUR }), rotateSigningKeys(store, { retentionSeconds: HOUR })]);
    const stored = kids(await loadSigningKeys(store));
    for (const k of [...gen0, ...a.current, ...b.current]) assert.ok(stored.includes(k.kid), `key ${k.kid} is still published`);
    assert.equal(stored.length, 9, 'three generations: the first and one from each rotation');
  });
}

test('a server follows rotations: at once by message, by its periodic re-read when the message was lost', async () => {
  await redisStore.del(keys.signingKeys);
  await loadSigningKeys(redisStore);
  // The rotating process (the CLI) has a connection of its own.
  const cli = new RedisStore(connectRedis(redis.url, 1000));
  await cli.ready(5000);
  const seen: string[][] = [];
  const waitFor = async (expected: string[]) => {
    for (let i = 0; i < 200 && JSON.stringify(seen.at(-1)) !== JSON.stringify(expected); i += 1) await new Promise((r) => setTimeout(r, 25));
    assert.deepEqual(seen.at(-1), expected);
  };
  const errors: string[] = [];
  // A short re-read interval stands in for the minute a server waits.
  const stop = await followSigningKeys(redisStore, (stored) => seen.push(kids(stored)), (reason) => errors.push(reason), 200);
  try {
    assert.equal(seen.length, 1, 'the keys as they are at start');
    const { kept } = await rotateSigningKeys(cli, { retentionSeconds: HOUR });
    await waitFor(kids(kept));

    // Written without a message: only the re-read can notice.
    const lost = kept.filter((k) => k.retiredUntil === undefined);
    await cli.set(keys.signingKeys, JSON.stringify(lost));
    await waitFor(kids(lost));

    // Keys that cannot be used are reported without their contents, and not applied.
    const count = seen.length;
    await cli.set(keys.signingKeys, '{"d":"private-part"');
    await cli.publish('lk:changes:signing-keys', 'rotated');
    for (let i = 0; i < 200 && errors.length === 0; i += 1) await new Promise((r) => setTimeout(r, 25));
    assert.deepEqual(errors, ['the stored signing keys are not valid JSON']);
    assert.equal(seen.length, count);
  } finally {
    await stop();
    await cli.close();
  }
});
