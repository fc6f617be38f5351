/**
 * The storage contract: one suite body, run against the embedded MemoryStore and against RedisStore
 * on a private redis-server. It covers the Store interface and the oidc-provider adapter on top of it,
 * then the storage rules (docs/architecture.md "Storage") that only Redis can show (TTLs, key names, hash slots, outages) and the
 * expiry of the embedded store under an injected clock.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { AdapterPayload } from 'oidc-provider';
import { digest, grantTag, keys } from '../src/storage/keys.ts';
import { MemoryStore } from '../src/storage/memory-store.ts';
import { withReadAhead } from '../src/storage/read-ahead.ts';
import { createAdapterClass, revokeAccountSessions, revokeClientGrants, TokenBatch } from '../src/storage/oidc-adapter.ts';
import { Cluster } from 'ioredis';
import { connectCluster, connectRedis, RedisStore } from '../src/storage/redis-store.ts';
import { StorageUnavailable, type Store } from '../src/storage/store.ts';
import { freePort, startRedis, type TestRedis } from './helpers/redis.ts';
import { startRedisCluster, type TestCluster } from './helpers/redis-cluster.ts';

const DAY = 24 * 60 * 60;

/** A random id shaped like oidc-provider's (base64url of 32 bytes). */
/** Keys of one grant's family, as the adapter makes them: one hash tag, the grant's index, and its members. */
function grantFamily() {
  const tag = randomId().slice(0, 16);
  return { index: `lk:{${tag}}:grant`, member: (model: string, id = randomId()) => `lk:{${tag}}:${model}:${id}` };
}

function randomId(): string {
  return randomBytes(32).toString('base64url');
}

/** A token id as oidc-provider generates it once provider-internals.ts tags it: the grant's tag, then 256 random bits. */
function tokenId(grantId: string): string {
  return grantTag(grantId) + randomId();
}

function epoch() {
  return Math.floor(Date.now() / 1000);
}

/** Clients that exist: every id but `gone` (a deleted client). */
const CLIENTS = { find: async (id: string) => (id === 'gone' ? undefined : { client_id: id }) };

function adapters(store: Store) {
  const Adapter = createAdapterClass(store, CLIENTS);
  return {
    Adapter,
    code: new Adapter('AuthorizationCode'),
    access: new Adapter('AccessToken'),
    refresh: new Adapter('RefreshToken'),
    grant: new Adapter('Grant'),
    session: new Adapter('Session'),
    interaction: new Adapter('Interaction'),
    par: new Adapter('PushedAuthorizationRequest'),
    device: new Adapter('DeviceCode'),
  };
}

interface GrantRecords {
  grantId: string;
  codeId: string;
  accessId: string;
  refreshId: string;
}

/** Writes a grant and one record of each grant-bound model, with payloads shaped like oidc-provider's. */
async function seedGrant(store: Store): Promise<GrantRecords> {
  const a = adapters(store);
  const grantId = randomId();
  const clientId = `client-${randomId().slice(0, 8)}`;
  const now = epoch();
  const records = { grantId, codeId: tokenId(grantId), accessId: tokenId(grantId), refreshId: tokenId(grantId) };
  await a.grant.upsert(grantId, { jti: grantId, kind: 'Grant', iat: now, exp: now + 30 * DAY, accountId: 'acct-1', clientId, openid: { scope: 'openid offline_access' } }, 30 * DAY);
  await a.code.upsert(records.codeId, {
    jti: records.codeId, kind: 'AuthorizationCode', iat: now, exp: now + 60, accountId: 'acct-1', clientId, grantId,
    scope: 'openid offline_access', redirectUri: 'https://app.example/cb', codeChallenge: 'x'.repeat(43), codeChallengeMethod: 'S256',
  }, 60);
  await a.access.upsert(records.accessId, {
    jti: records.accessId, kind: 'AccessToken', iat: now, exp: now + 3600, accountId: 'acct-1', clientId, grantId, scope: 'openid', gty: 'authorization_code',
  }, 3600);
  await a.refresh.upsert(records.refreshId, {
    jti: records.refreshId, kind: 'RefreshToken', iat: now, exp: now + 14 * DAY, accountId: 'acct-1', clientId, grantId, scope: 'openid offline_access', gty: 'authorization_code',
  }, 14 * DAY);
  return records;
}

/** Whether each record of the grant is still found, by model. */
async function present(store: Store, r: GrantRecords) {
  const a = adapters(store);
  return {
    Grant: (await a.grant.find(r.grantId)) !== undefined,
    AuthorizationCode: (await a.code.find(r.codeId)) !== undefined,
    AccessToken: (await a.access.find(r.accessId)) !== undefined,
    RefreshToken: (await a.refresh.find(r.refreshId)) !== undefined,
  };
}

const ALL_PRESENT = { Grant: true, AuthorizationCode: true, AccessToken: true, RefreshToken: true };
const NONE_PRESENT = { Grant: false, AuthorizationCode: false, AccessToken: false, RefreshToken: false };

function isInvalidGrant(err: unknown) {
  return (err as { error?: string }).error === 'invalid_grant';
}

/** The suite body every Store implementation must pass. */
function storeContract(getStore: () => Store) {
  const k = (name: string) => `test:${name}:${randomId().slice(0, 10)}`;

  describe('Store', () => {
    test('set / get / del', async () => {
      const store = getStore();
      const key = k('kv');
      assert.equal(await store.get(key), null);
      assert.equal(await store.set(key, 'one'), true);
      assert.equal(await store.get(key), 'one');
      assert.equal(await store.set(key, 'two'), true);
      assert.equal(await store.get(key), 'two');
      assert.equal(await store.del(key, k('never-written')), 1);
      assert.equal(await store.get(key), null);
      assert.equal(await store.del(key), 0);
      assert.equal(await store.del(), 0);
    });

    test('set with ifAbsent writes only once', async () => {
      const store = getStore();
      const key = k('nx');
      assert.equal(await store.set(key, 'first', { ifAbsent: true }), true);
      assert.equal(await store.set(key, 'second', { ifAbsent: true }), false);
      assert.equal(await store.set(key, 'third', { ifAbsent: true, ttl: 60 }), false);
      assert.equal(await store.get(key), 'first');
      const other = k('nx-ttl');
      assert.equal(await store.set(other, 'a', { ifAbsent: true, ttl: 60 }), true);
      assert.equal(await store.get(other), 'a');
    });

    test('ifAbsent under contention: exactly one writer wins', async () => {
      const store = getStore();
      const key = k('nx-race');
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => store.set(key, `w${i}`, { ifAbsent: true, ttl: 60 })));
      assert.equal(results.filter(Boolean).length, 1);
      assert.equal(await store.get(key), `w${results.indexOf(true)}`);
    });

    test('set with ttl keeps the value readable', async () => {
      const store = getStore();
      const key = k('ttl');
      assert.equal(await store.set(key, 'v', { ttl: 60 }), true);
      assert.equal(await store.get(key), 'v');
    });

    test('sets: add, members, remove', async () => {
      const store = getStore();
      const key = k('set');
      assert.deepEqual(await store.setMembers(key), []);
      await store.setAdd(key, 'b');
      await store.setAdd(key, 'a');
      await store.setAdd(key, 'a');
      assert.deepEqual((await store.setMembers(key)).sort(), ['a', 'b']);
      assert.equal(await store.setRemove(key, 'a'), true);
      assert.equal(await store.setRemove(key, 'a'), false, 'removing twice: only the first removal counts');
      assert.equal(await store.setRemove(key, 'not-a-member'), false);
      assert.deepEqual(await store.setMembers(key), ['b']);
      assert.equal(await store.setRemove(key, 'b'), true);
      assert.deepEqual(await store.setMembers(key), []);
      assert.equal(await store.setRemove(k('missing-set'), 'x'), false);
    });

    test('setRemove under contention: exactly one remover wins (single-use codes)', async () => {
      const store = getStore();
      const key = k('set-race');
      await store.setAdd(key, 'code');
      await store.setAdd(key, 'other');
      const results = await Promise.all(Array.from({ length: 20 }, () => store.setRemove(key, 'code')));
      assert.equal(results.filter(Boolean).length, 1);
      assert.deepEqual(await store.setMembers(key), ['other']);
    });

    test('advanceCounter: only ever upwards', async () => {
      const store = getStore();
      const key = k('counter');
      assert.equal(await store.advanceCounter(key, 100, 60), true, 'absent: set');
      assert.equal(await store.get(key), '100');
      assert.equal(await store.advanceCounter(key, 100, 60), false, 'the same value again: refused');
      assert.equal(await store.advanceCounter(key, 99, 60), false, 'a smaller value: refused');
      assert.equal(await store.get(key), '100');
      assert.equal(await store.advanceCounter(key, 101, 60), true, 'a larger value: set');
      assert.equal(await store.get(key), '101');
      assert.equal(await store.advanceCounter(key, 57_000_000, 60), true, 'numbers compare as numbers, not strings');
      assert.equal(await store.advanceCounter(key, 9_000_000, 60), false);
      await assert.rejects(store.advanceCounter(key, 1.5, 60), TypeError);
      await assert.rejects(store.advanceCounter(key, 200, 0), TypeError);
    });

    test('advanceCounterSeen: like advanceCounter for a caller that saw a smaller value; one raised meanwhile is kept', async () => {
      const store = getStore();
      const key = k('counter-seen');
      assert.equal(await store.advanceCounterSeen(key, 100, 60), true, 'absent: set');
      assert.equal(await store.advanceCounterSeen(key, 100, 60), false, 'the same value again: refused');
      assert.equal(await store.get(key), '100');
      assert.equal(await store.advanceCounterSeen(key, 99, 60), false, 'raised beyond it meanwhile: refused');
      assert.equal(await store.get(key), '100', 'and the higher value put back');
      assert.equal(await store.advanceCounterSeen(key, 57_000_000, 60), true);
      assert.equal(await store.advanceCounterSeen(key, 9_000_000, 60), false, 'numbers compare as numbers');
      assert.equal(await store.get(key), '57000000');
      const racing = await Promise.all([store.advanceCounterSeen(key, 57_000_001, 60), store.advanceCounterSeen(key, 57_000_001, 60)]);
      assert.deepEqual(racing.sort(), [false, true], 'of two parallel raises to one value, exactly one wins');
      await assert.rejects(store.advanceCounterSeen(key, 1.5, 60), TypeError);
    });

    test('advanceCounter under contention: two parallel submissions of one value, exactly one wins', async () => {
      const store = getStore();
      for (let round = 0; round < 10; round += 1) {
        const key = k('counter-race');
        await store.advanceCounter(key, 10, 60);
        const pair = await Promise.all([store.advanceCounter(key, 11, 60), store.advanceCounter(key, 11, 60)]);
        assert.deepEqual(pair.filter(Boolean).length, 1, `round ${round}: ${JSON.stringify(pair)}`);
        const many = await Promise.all(Array.from({ length: 20 }, () => store.advanceCounter(key, 12, 60)));
        assert.equal(many.filter(Boolean).length, 1);
      }
    });

    test('replaceIf: writes only over the value it was given, keeps the TTL', async () => {
      const store = getStore();
      const key = k('cas');
      assert.equal(await store.replaceIf(key, 'anything', 'v1'), false, 'absent: nothing to replace');
      assert.equal(await store.get(key), null);
      await store.set(key, 'v1', { ttl: 60 });
      assert.equal(await store.replaceIf(key, 'v0', 'v2'), false, 'changed since read: refused');
      assert.equal(await store.get(key), 'v1');
      assert.equal(await store.replaceIf(key, 'v1', 'v2'), true);
      assert.equal(await store.get(key), 'v2');
      if (store instanceof RedisStore) {
        const ttl = await store.client.ttl(key);
        assert.ok(ttl > 55 && ttl <= 60, `TTL kept: ${ttl}`);
      }
      await store.del(key);
      assert.equal(await store.replaceIf(key, 'v2', 'v3'), false, 'deleted meanwhile: not brought back');
      assert.equal(await store.get(key), null);
      // With a TTL: replaced along with the value, and only when it wrote.
      await store.set(key, 'w1', { ttl: 60 });
      assert.equal(await store.replaceIf(key, 'w0', 'w2', { ttl: 3600 }), false);
      assert.equal(await store.replaceIf(key, 'w1', 'w2', { ttl: 3600 }), true);
      assert.equal(await store.get(key), 'w2');
      if (store instanceof RedisStore) {
        const ttl = await store.client.ttl(key);
        assert.ok(ttl > 3590 && ttl <= 3600, `TTL replaced: ${ttl}`);
      }
      await store.del(key);
      assert.equal(await store.replaceIf(key, 'w2', 'w3', { ttl: 3600 }), false, 'deleted meanwhile: not brought back, TTL or not');
      assert.equal(await store.get(key), null);
    });

    test('replaceIf under contention: of writers that read the same value, exactly one wins', async () => {
      const store = getStore();
      for (let round = 0; round < 10; round += 1) {
        const key = k('cas-race');
        await store.set(key, 'start');
        const results = await Promise.all(Array.from({ length: 20 }, (_, i) => store.replaceIf(key, 'start', `w${i}`)));
        assert.equal(results.filter(Boolean).length, 1, `round ${round}`);
        assert.equal(await store.get(key), `w${results.indexOf(true)}`);
      }
    });

    test('putModel / getModel', async () => {
      const store = getStore();
      const key = k('model');
      assert.equal(await store.getModel(key), null);
      await store.putModel(key, '{"a":1}', 60);
      assert.deepEqual(await store.getModel(key), { payload: '{"a":1}' });
      await store.putModel(key, '{"a":2}', 60);
      assert.deepEqual(await store.getModel(key), { payload: '{"a":2}' });
    });

    test('getModel take: deletes the record, or leaves the given one in its place (with its TTL) whether or not there was one', async () => {
      const store = getStore();
      const key = k('taken');
      await store.putModel(key, '{"a":1}', 60, undefined, { consumable: false });
      assert.deepEqual(await store.getModel(key, { consumable: false, take: true }), { payload: '{"a":1}' });
      assert.equal(await store.getModel(key, { consumable: false }), null);

      await store.putModel(key, '{"a":2}', 60, undefined, { consumable: false });
      assert.deepEqual(await store.getModel(key, { consumable: false, take: { leave: 'mark', ttl: 1 } }), { payload: '{"a":2}' });
      assert.deepEqual(await store.getModel(key, { consumable: false }), { payload: 'mark' });
      const absent = k('never-there');
      assert.equal(await store.getModel(absent, { consumable: false, take: { leave: 'mark', ttl: 1 } }), null);
      assert.deepEqual(await store.getModel(absent, { consumable: false }), { payload: 'mark' });
      await new Promise((resolve) => setTimeout(resolve, 1100));
      assert.equal(await store.getModel(key, { consumable: false }), null, 'the mark lives its TTL only');
    });

    test('consumeModel: consumed once, then reused (which deletes the index), missing when absent', async () => {
      const store = getStore();
      const { index, member } = grantFamily();
      const code = member('AuthorizationCode');
      const sibling = member('AccessToken');
      await store.putModel(code, 'code', 60, index);
      await store.putModel(sibling, 'at', 3600, index);
      assert.deepEqual((await store.setMembers(index)).sort(), [code, sibling].sort());

      const now = epoch();
      assert.equal(await store.consumeModel(code, index, now), 'consumed');
      assert.deepEqual(await store.getModel(code), { payload: 'code', consumed: now });
      assert.deepEqual(await store.getModel(sibling), { payload: 'at' }, 'a first consume touches nothing else');

      assert.equal(await store.consumeModel(code, index, now + 1), 'reused');
      assert.equal(await store.getModel(code), null);
      assert.equal(await store.getModel(sibling), null);
      assert.deepEqual(await store.setMembers(index), []);

      assert.equal(await store.consumeModel(code, index, now), 'missing');
      assert.equal(await store.consumeModel(k('never'), undefined, now), 'missing');
    });

    test('consumeModel given the record as read: consumed once, then reused (which deletes the index); missing when absent; one winner of 20', async () => {
      const store = getStore();
      const { index, member } = grantFamily();
      const code = member('AuthorizationCode');
      const sibling = member('AccessToken');
      await store.putModel(code, 'code', 60, index);
      await store.putModel(sibling, 'at', 3600, index, { consumable: false });
      const now = epoch();
      const results = await Promise.all(Array.from({ length: 20 }, () => store.consumeModel(code, index, now, 0, 'code')));
      assert.equal(results.filter((r) => r === 'consumed').length, 1, results.join(' '));
      // The losers saw the winner's mark: each is a reuse, and the grant is gone.
      assert.equal(await store.getModel(sibling, { consumable: false }), null);
      assert.deepEqual(await store.setMembers(index), []);
      assert.equal(await store.consumeModel(code, index, now, 0, 'code'), 'missing');

      const single = member('AuthorizationCode');
      await store.putModel(single, 'once', 60, index);
      assert.equal(await store.consumeModel(single, index, now, 0, 'once'), 'consumed');
      assert.deepEqual(await store.getModel(single), { payload: 'once', consumed: now }, 'marked, payload as it was');
      assert.equal(await store.consumeModel(single, index, now + 1, 0, 'once'), 'reused');
      assert.equal(await store.getModel(single), null);
    });

    test("putModel of a grant ('owner') and of tokens its index outlives ('outlives'): listed, and revoked together", async () => {
      const store = getStore();
      const { index, member } = grantFamily();
      const grant = member('Grant');
      const code = member('AuthorizationCode');
      const access = member('AccessToken');
      await store.putModel(grant, 'g', 3600, index, { consumable: false, index: 'owner' });
      await store.putModel(code, 'c', 60, index, { index: 'outlives' });
      await store.putModel(access, 'a', 600, index, { consumable: false, index: 'outlives' });
      assert.deepEqual((await store.setMembers(index)).sort(), [grant, code, access].sort());
      assert.deepEqual(await store.getModel(code), { payload: 'c' });
      await store.deleteIndexed(index);
      for (const key of [grant, code, access]) assert.equal(await store.getModel(key, { consumable: key !== code ? false : true }), null);
    });

    test('consumeModel with a grace window: repeated (nothing deleted) within it, reused (the grant deleted) after it', async () => {
      const store = getStore();
      const { index, member } = grantFamily();
      const token = member('RefreshToken');
      const sibling = member('AccessToken');
      await store.putModel(token, 'rt', 60, index);
      await store.putModel(sibling, 'at', 3600, index);
      assert.equal(await store.consumeModel(token, index, 100, 10), 'consumed');
      assert.equal(await store.consumeModel(token, index, 100, 10), 'repeated');
      assert.equal(await store.consumeModel(token, index, 110, 10), 'repeated', 'the window includes its last second');
      assert.deepEqual(await store.getModel(token), { payload: 'rt', consumed: 100 }, 'the first mark stays');
      assert.deepEqual(await store.getModel(sibling), { payload: 'at' }, 'nothing of the grant is deleted within the window');
      assert.equal(await store.consumeModel(token, index, 111, 10), 'reused');
      assert.equal(await store.getModel(sibling), null, 'after the window, reuse deletes the grant');
    });

    test('queuePush and queueTake: oldest first, each item taken once, at most maxLength kept', async () => {
      const store = getStore();
      const queue = k('queue');
      assert.equal(await store.queueTake(queue), null);
      for (const item of ['a', 'b', 'c', 'd']) await store.queuePush(queue, item, 3, 60);
      const taken = await Promise.all([1, 2, 3, 4, 5].map(() => store.queueTake(queue)));
      assert.deepEqual(taken.filter((t) => t !== null).sort(), ['b', 'c', 'd'], 'the oldest went beyond three; none twice');
      await store.queuePush(queue, 'e', 3, 60);
      await store.queuePush(queue, 'f', 3, 60);
      assert.deepEqual([await store.queueTake(queue), await store.queueTake(queue), await store.queueTake(queue)], ['e', 'f', null]);
    });

    test('rotateModel: consumes the presented record and writes and indexes the new ones in one step; reuse, a repeat and a missing record write nothing', async () => {
      const store = getStore();
      const { index, member } = grantFamily();
      const presented = member('RefreshToken');
      await store.putModel(presented, 'rt0', 60, index);
      const next = (n: number) => [
        { key: member('RefreshToken', `next-${n}`), payload: `rt${n}`, ttl: 60, consumable: true },
        { key: member('AccessToken', `next-${n}`), payload: `at${n}`, ttl: 30, consumable: false },
      ];
      assert.equal(await store.rotateModel({ key: presented, payload: 'rt0' }, index, next(1), 100), 'consumed');
      assert.deepEqual(await store.getModel(presented), { payload: 'rt0', consumed: 100 });
      assert.deepEqual(await store.getModel(next(1)[0]!.key), { payload: 'rt1' }, 'the new refresh token, unconsumed');
      assert.deepEqual(await store.getModel(next(1)[1]!.key, { consumable: false }), { payload: 'at1' });
      assert.deepEqual((await store.setMembers(index)).sort(), [presented, ...next(1).map((r) => r.key)].sort(), 'all in the grant index');

      assert.equal(await store.rotateModel({ key: presented, payload: 'rt0' }, index, next(2), 105, { graceSeconds: 10 }), 'repeated');
      assert.deepEqual(await store.getModel(presented), { payload: 'rt0', consumed: 100 }, 'a repeat keeps the first mark');
      assert.equal(await store.getModel(next(2)[0]!.key), null, 'and writes nothing');

      const missing = member('RefreshToken');
      assert.equal(await store.rotateModel({ key: missing, payload: 'x' }, index, next(3), 106), 'missing');
      assert.equal(await store.getModel(missing), null, 'a token gone meanwhile is not brought back');
      assert.equal(await store.getModel(next(3)[0]!.key), null);

      assert.equal(await store.rotateModel({ key: presented, payload: 'rt0' }, index, next(4), 120, { graceSeconds: 10 }), 'reused');
      for (const key of [presented, ...next(1).map((r) => r.key), ...next(4).map((r) => r.key)]) assert.equal(await store.getModel(key), null, `${key} revoked`);
      assert.deepEqual(await store.setMembers(index), []);
    });

    test('consumeModel without an index', async () => {
      const store = getStore();
      const key = k('par');
      await store.putModel(key, 'p', 60);
      assert.equal(await store.consumeModel(key, undefined, 5), 'consumed');
      assert.equal(await store.consumeModel(key, undefined, 6), 'reused');
      assert.deepEqual(await store.getModel(key), { payload: 'p', consumed: 5 }, 'the first mark stays');
    });

    test('publish reaches a subscriber of the channel, and only while it is subscribed', async () => {
      const store = getStore();
      const channel = k('channel');
      const received: string[] = [];
      let arrived: () => void = () => {};
      const stop = await store.subscribe(channel, (m) => {
        received.push(m);
        arrived();
      }, () => {});
      await Promise.all([new Promise<void>((r) => (arrived = r)), store.publish(channel, 'changed')]);
      await store.publish(k('other-channel'), 'not for us');
      assert.deepEqual(received, ['changed']);
      await stop();
      await store.publish(channel, 'after stop');
      assert.deepEqual(received, ['changed']);
    });

    test('a grant index forgets members that expired when the next record of the grant is written', async () => {
      const store = getStore();
      const { index, member } = grantFamily();
      const gone = [1, 2, 3].map((i) => member('AccessToken', `gone-${i}-${randomId()}`));
      for (const key of gone) await store.putModel(key, 'old', 60, index, { consumable: false });
      await store.del(...gone); // what their expiry would do
      const live = member('AccessToken', `live-${randomId()}`);
      await store.putModel(live, 'new', 60, index, { consumable: false });
      assert.deepEqual(await store.setMembers(index), [live]);
    });

    test('deleteIndexed deletes what is listed and the index, nothing else', async () => {
      const store = getStore();
      const { index, member } = grantFamily();
      const listed = [1, 2, 3].map((i) => member('AccessToken', `${i}-${randomId()}`));
      const unlisted = member('AccessToken', `other-${randomId()}`);
      for (const key of listed) await store.putModel(key, key, 60, index);
      await store.putModel(unlisted, 'u', 60);
      await store.deleteIndexed(index);
      for (const key of listed) assert.equal(await store.getModel(key), null);
      assert.deepEqual(await store.setMembers(index), []);
      assert.deepEqual(await store.getModel(unlisted), { payload: 'u' });
      await store.deleteIndexed(index); // again: nothing to do, no error
    });

    test('ping resolves', async () => {
      await getStore().ping();
    });

    test('info: Redis reports its memory in bytes, the embedded store its key count', async () => {
      const store = getStore();
      const before = await store.info();
      assert.equal(before.kind, store.kind);
      if (before.kind === 'redis') {
        assert.ok(Number.isInteger(before.usedMemory) && before.usedMemory > 0, `used memory ${before.usedMemory}`);
        assert.ok(Number.isInteger(before.maxMemory) && before.maxMemory >= 0, `max memory ${before.maxMemory}`);
      } else {
        await store.set(k('info'), 'x');
        const after = await store.info();
        assert.ok(after.kind === 'memory' && after.keys === before.keys + 1, 'one more key');
      }
    });

    test('sorted sets: lexical pages after a cursor, prefix search in UTF-8 byte order, counts', async () => {
      const store = getStore();
      const index = k('zlex');
      const members = ['bob@b.example', 'ada@a.example', 'adam@a.example', 'zoe@z.example', 'élodie@e.example', 'ad@x.example'];
      for (const m of members) await store.sortedAdd(index, m);
      await store.sortedAdd(index, 'ada@a.example');
      assert.equal(await store.sortedCount(index), members.length);
      const all = [...members].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
      assert.deepEqual(await store.sortedRangeByLex(index, { limit: 100 }), all);
      assert.deepEqual(await store.sortedRangeByLex(index, { limit: 2 }), all.slice(0, 2));
      assert.deepEqual(await store.sortedRangeByLex(index, { after: all[1], limit: 2 }), all.slice(2, 4));
      assert.deepEqual(await store.sortedRangeByLex(index, { prefix: 'ada', limit: 10 }), ['ada@a.example', 'adam@a.example']);
      assert.deepEqual(await store.sortedRangeByLex(index, { prefix: 'ada', after: 'ada@a.example', limit: 10 }), ['adam@a.example']);
      assert.deepEqual(await store.sortedRangeByLex(index, { prefix: 'é', limit: 10 }), ['élodie@e.example']);
      assert.deepEqual(await store.sortedRangeByLex(index, { prefix: 'q', limit: 10 }), []);
      assert.equal(await store.sortedRemove(index, 'bob@b.example'), true);
      assert.equal(await store.sortedRemove(index, 'bob@b.example'), false);
      assert.equal(await store.sortedCount(index), members.length - 1);
    });

    test('sorted sets by score: from a minimum, lowest first; remove up to a maximum', async () => {
      const store = getStore();
      const index = k('zscore');
      await store.sortedAdd(index, 'late', 300);
      await store.sortedAdd(index, 'early', 100);
      await store.sortedAdd(index, 'mid', 200);
      assert.deepEqual(await store.sortedRangeByScore(index, 150, 10), ['mid', 'late']);
      assert.deepEqual(await store.sortedRangeByScore(index, 0, 2), ['early', 'mid']);
      await store.sortedRemoveByScore(index, 200);
      assert.deepEqual(await store.sortedRangeByScore(index, 0, 10), ['late']);
    });

    test('streams: appended in order, read newest first between ids, capped', async () => {
      const store = getStore();
      const stream = k('stream');
      const ids: string[] = [];
      for (let i = 0; i < 5; i += 1) ids.push(await store.streamAdd(stream, `e${i}`, 1000));
      const parts = ids.map((id) => id.split('-').map(Number) as [number, number]);
      for (let i = 1; i < parts.length; i += 1) assert.ok(parts[i]![0] > parts[i - 1]![0] || (parts[i]![0] === parts[i - 1]![0] && parts[i]![1] > parts[i - 1]![1]), 'ids increase');
      const newest = await store.streamRevRange(stream, '+', '-', 2);
      assert.deepEqual(newest.map((e) => e.entry), ['e4', 'e3']);
      const next = await store.streamRevRange(stream, `(${newest[1]!.id}`, '-', 10);
      assert.deepEqual(next.map((e) => e.entry), ['e2', 'e1', 'e0']);
      const between = await store.streamRevRange(stream, ids[3]!, ids[1]!, 10);
      assert.deepEqual(between.map((e) => e.entry), ['e3', 'e2', 'e1']);
      assert.equal(await store.streamLength(stream), 5);
      assert.deepEqual(await store.streamRevRange(k('none'), '+', '-', 10), []);
      // The cap: Redis trims whole nodes of 100 entries (MAXLEN ~), so it holds at most ~100 more.
      const capped = k('capped');
      for (let i = 0; i < 400; i += 1) await store.streamAdd(capped, `c${i}`, 50);
      const length = await store.streamLength(capped);
      assert.ok(length >= 50 && length <= 150, `capped at about 50, holds ${length}`);
      assert.equal((await store.streamRevRange(capped, '+', '-', 1))[0]!.entry, 'c399');
    });

    test('counters: added in one call per batch, read back newest bucket first, old buckets dropped from the index', async () => {
      const store = getStore();
      // One hash tag for the index and its buckets, as callers keep them (one cluster slot).
      const tag = `{${randomId().slice(0, 10)}}`;
      const index = `test:${tag}:counters`;
      const bucket = (n: number) => `test:${tag}:bucket:${n}`;
      await store.countersAdd(index, [
        { bucket: bucket(1), score: 1, field: 'a', by: 3 },
        { bucket: bucket(2), score: 2, field: 'a', by: 1 },
        { bucket: bucket(2), score: 2, field: 'b', by: 2 },
      ], 60, 0);
      await store.countersAdd(index, [{ bucket: bucket(2), score: 2, field: 'a', by: 4 }], 60, 0);
      assert.deepEqual(await store.countersRevRange(index, Infinity, -Infinity, 10), [
        { bucket: bucket(2), score: 2, counters: { a: 5, b: 2 } },
        { bucket: bucket(1), score: 1, counters: { a: 3 } },
      ]);
      assert.deepEqual((await store.countersRevRange(index, 1, 0, 10)).map((b) => b.score), [1]);
      assert.deepEqual((await store.countersRevRange(index, 5, 0, 1)).map((b) => b.score), [2]);
      await store.countersAdd(index, [], 60, 10);
      await store.countersAdd(index, [{ bucket: bucket(3), score: 3, field: 'c', by: 1 }], 60, 2);
      assert.deepEqual((await store.countersRevRange(index, Infinity, -Infinity, 10)).map((b) => b.score), [3, 2], 'scores below 2 are dropped');
      assert.deepEqual(await store.countersRevRange(`test:${tag}:none`, Infinity, -Infinity, 10), []);
    });

    test('indexAdd adds members to one index key', async () => {
      const store = getStore();
      const index = k('index');
      await store.indexAdd(index, 'a', 60);
      await store.indexAdd(index, 'b', 3600);
      await store.indexAdd(index, 'a', 10);
      assert.deepEqual((await store.setMembers(index)).sort(), ['a', 'b']);
    });

    test("putIndexed with the grant as holder: its tokens join the index; after a revocation (index and grant gone) none is kept", async () => {
      const store = getStore();
      const { index, member } = grantFamily();
      const grant = member('Grant');
      await store.putModel(grant, 'g', 3600, index, { consumable: false, index: 'owner' });
      const [access, refresh] = [member('AccessToken'), member('RefreshToken')];
      const records = [{ key: access, payload: 'a', ttl: 600, consumable: false }, { key: refresh, payload: 'r', ttl: 1200, consumable: true }];
      assert.equal(await store.putIndexed(records, index, grant), true);
      assert.deepEqual((await store.setMembers(index)).sort(), [grant, access, refresh].sort());
      assert.deepEqual(await store.getModel(refresh), { payload: 'r' });

      // An index lost while its grant lives (an earlier version's, or evicted): refilled, the holder listed again.
      await store.del(index);
      const late = member('AccessToken');
      assert.equal(await store.putIndexed([{ key: late, payload: 'l', ttl: 600, consumable: false }], index, grant), true);
      assert.deepEqual((await store.setMembers(index)).sort(), [grant, late].sort());

      // Revoked while the tokens were issued: the index and the grant went, the new tokens go too.
      await store.del(index);
      await store.del(grant);
      const [lostAccess, lostRefresh] = [member('AccessToken'), member('RefreshToken')];
      const lost = [{ key: lostAccess, payload: 'a', ttl: 600, consumable: false }, { key: lostRefresh, payload: 'r', ttl: 1200, consumable: true }];
      assert.equal(await store.putIndexed(lost, index, grant), false);
      assert.equal(await store.getModel(lostAccess, { consumable: false }), null);
      assert.equal(await store.getModel(lostRefresh), null);
      assert.deepEqual(await store.setMembers(index), [], 'no index left behind');
    });

    test("a code's tokens, when its grant is revoked while they are issued: none is kept and the redemption answers invalid_grant", async () => {
      const store = getStore();
      const { index, member } = grantFamily();
      const grant = member('Grant');
      await store.putModel(grant, 'g', 3600, index, { consumable: false, index: 'owner' });
      const batch = new TokenBatch();
      const access = member('AccessToken');
      batch.add(index, grant, { key: access, payload: 'a', ttl: 600, consumable: false });
      await store.deleteIndexed(index); // the grant's revocation (revokeByGrantId)
      await assert.rejects(batch.write(store), isInvalidGrant);
      assert.equal(await store.getModel(access, { consumable: false }), null);
    });

    test('putListed writes a record and appends to a list index, in order, duplicates kept; listMembers reads it', async () => {
      const store = getStore();
      const list = k('list');
      const [one, two] = [k('record'), k('record')];
      assert.deepEqual(await store.listMembers(list), []);
      await store.putListed(one, '{"n":1}', 60, list, 'first');
      await store.putListed(two, '{"n":2}', 3600, list, 'second');
      await store.putListed(one, '{"n":3}', 10, list, 'first');
      assert.deepEqual(await store.listMembers(list), ['first', 'second', 'first']);
      assert.deepEqual(await store.getModel(one, { consumable: false }), { payload: '{"n":3}' }, 'the record is replaced');
      assert.deepEqual(await store.getModel(two, { consumable: false }), { payload: '{"n":2}' });
      await store.del(list);
      assert.deepEqual(await store.listMembers(list), []);
    });

    /** Runs `request` in its own read-ahead scope up to `gate`; meanwhile the caller acts as another request. */
    function pausedRequest<T>(request: (gate: Promise<void>) => Promise<T>): { release(): Promise<T> } {
      let open!: () => void;
      const gate = new Promise<void>((resolve) => (open = resolve));
      const done = withReadAhead(() => request(gate));
      return {
        release: () => {
          open();
          return done;
        },
      };
    }

    test('readAhead: in its request, the next get or getModel of each key answers what the key held when read ahead (absent too, keys of any slot), once', async () => {
      const store = getStore();
      const [plain, record, absent] = [k('ahead'), k('ahead-record'), k('ahead-absent')];
      await store.set(plain, 'before');
      await store.putModel(record, '{"n":1}', 60, undefined, { consumable: false });
      const request = pausedRequest(async (gate) => {
        store.readAhead([plain, record, absent, plain]);
        await gate;
        return {
          plain: [await store.get(plain), await store.get(plain)],
          record: [await store.getModel(record, { consumable: false }), await store.getModel(record, { consumable: false })],
          absent: [await store.get(absent), await store.get(absent)],
        };
      });
      // Another request writes all three after they were read ahead.
      await store.set(plain, 'after');
      await store.putModel(record, '{"n":2}', 60, undefined, { consumable: false });
      await store.set(absent, 'now');
      assert.deepEqual(await request.release(), {
        plain: ['before', 'after'],
        record: [{ payload: '{"n":1}' }, { payload: '{"n":2}' }],
        absent: [null, 'now'],
      });
      // Outside a request nothing is read ahead: a read answers what the key holds.
      store.readAhead([plain]);
      await store.set(plain, 'later');
      assert.equal(await store.get(plain), 'later');
    });

    test('readAhead: a key written in the same request is read afresh; a take is never answered from a read ahead', async () => {
      const store = getStore();
      const [written, taken, left] = [k('ahead-written'), k('ahead-taken'), k('ahead-left')];
      await store.set(written, 'old');
      await store.putModel(taken, '{"t":1}', 60, undefined, { consumable: false });
      await store.putModel(left, '{"l":1}', 60, undefined, { consumable: false });
      const request = pausedRequest(async () => {
        store.readAhead([written, taken, left]);
        assert.equal(await store.set(written, 'new'), true);
        assert.equal(await store.get(written), 'new');
        assert.deepEqual(await store.getModel(taken, { consumable: false, take: true }), { payload: '{"t":1}' });
        assert.equal(await store.getModel(taken, { consumable: false }), null, 'taken: gone, not what was read before');
        assert.deepEqual(await store.getModel(left, { consumable: false, take: { leave: '{"answered":true}', ttl: 60 } }), { payload: '{"l":1}' });
        assert.deepEqual(await store.getModel(left, { consumable: false }), { payload: '{"answered":true}' }, 'what the take left, not what was read before');
      });
      await request.release();
    });

    test('readAhead: a record that can be consumed answers as it was when read ahead, with its consumed mark, once', async () => {
      const store = getStore();
      const [fresh, used] = [k('ahead-code'), k('ahead-used')];
      await store.putModel(fresh, '{"c":1}', 60, undefined, { consumable: true });
      await store.putModel(used, '{"u":1}', 60, undefined, { consumable: true });
      assert.equal(await store.consumeModel(used, undefined, epoch()), 'consumed');
      const request = pausedRequest(async (gate) => {
        store.readAhead([fresh, used]);
        await gate;
        return { fresh: [await store.getModel(fresh, { consumable: true }), await store.getModel(fresh, { consumable: true })], used: await store.getModel(used, { consumable: true }) };
      });
      // Another request consumes the record after it was read ahead (the consume itself decides who was first).
      assert.equal(await store.consumeModel(fresh, undefined, epoch()), 'consumed');
      const read = await request.release();
      assert.deepEqual(read.fresh[0], { payload: '{"c":1}' }, 'as it was when read ahead');
      assert.equal(read.fresh[1]?.payload, '{"c":1}');
      assert.equal(typeof read.fresh[1]?.consumed, 'number', 'the next read goes to the store: consumed');
      assert.equal(read.used?.payload, '{"u":1}');
      assert.equal(typeof read.used?.consumed, 'number', 'a mark it had when read ahead is kept');
    });

    test("readAhead: consuming a grant's record drops what was read ahead of that grant's records only (a reuse deletes them), not of other keys", async () => {
      const store = getStore();
      const { index, member } = grantFamily();
      const [code, grant, account] = [member('AuthorizationCode'), member('Grant'), k('ahead-account')];
      await store.putModel(code, '{"c":1}', 60, index, { consumable: true });
      await store.putModel(grant, '{"g":1}', 60, index, { consumable: false });
      await store.set(account, 'acct');
      const request = pausedRequest(async (gate) => {
        store.readAhead([grant, account]);
        await gate;
        assert.equal(await store.consumeModel(code, index, epoch()), 'consumed');
        return [await store.getModel(grant, { consumable: false }), await store.get(account)] as const;
      });
      // Meanwhile the grant and the account change: the grant's read goes to the store again, the account's is taken as read.
      await store.putModel(grant, '{"g":2}', 60, index, { consumable: false });
      await store.set(account, 'changed');
      const [grantRead, accountRead] = await request.release();
      assert.deepEqual(grantRead, { payload: '{"g":2}' }, 'read afresh after the consume');
      assert.equal(accountRead, 'acct', 'answered from the read ahead');
    });
  });

  describe('oidc-provider adapter', () => {
    test('upsert / find round-trips the payload and restores jti', async () => {
      const { code } = adapters(getStore());
      const grantId = randomId();
      const id = tokenId(grantId);
      const payload: AdapterPayload = {
        jti: id, kind: 'AuthorizationCode', iat: 1_700_000_000, exp: 1_700_000_060, accountId: 'acct', clientId: 'app', grantId,
        scope: 'openid', redirectUri: 'https://app.example/cb', claims: { id_token: { acr: { essential: true } } }, resource: ['https://api.example'],
      };
      await code.upsert(id, payload, 60);
      assert.deepEqual(await code.find(id), payload);
      assert.equal(await code.find(tokenId(grantId)), undefined);
      assert.equal(await code.find(''), undefined);
    });

    test('the bearer value (jti) is not stored in a token payload', async () => {
      const store = getStore();
      const { access } = adapters(store);
      const grantId = randomId();
      const id = tokenId(grantId);
      await access.upsert(id, { jti: id, kind: 'AccessToken', grantId, clientId: 'app' }, 60);
      const raw = await store.getModel(keys.model('AccessToken', id), { consumable: false });
      assert.ok(raw);
      assert.ok(!raw.payload.includes(id.slice(16)), 'the stored payload holds no part of the token value');
    });

    test('Session: find by id and by uid; destroy', async () => {
      const { session } = adapters(getStore());
      const id = randomId();
      const uid = randomId();
      const payload: AdapterPayload = { jti: id, uid, kind: 'Session', iat: 1, exp: 2, accountId: 'acct', loginTs: 1, authorizations: { app: { sid: 'sid', grantId: 'g' } } };
      await session.upsert(id, payload, 3600);
      assert.deepEqual(await session.find(id), payload);
      // By uid the id is not known (it is stored nowhere): oidc-provider only compares account and grants.
      const { jti: _jti, ...withoutId } = payload;
      assert.deepEqual(await session.findByUid(uid), withoutId);
      assert.equal(await session.findByUid(randomId()), undefined);
      await session.destroy(id);
      assert.equal(await session.find(id), undefined);
      assert.equal(await session.findByUid(uid), undefined);
    });

    test('a session written by an earlier version (its id in clear) is not found, by id or by uid', async () => {
      const store = getStore();
      const { session } = adapters(store);
      const id = randomId();
      const uid = randomId();
      // What the earlier version wrote: the payload kept `jti`, the uid index held the id itself.
      await store.putModel(keys.model('Session', id), JSON.stringify({ jti: id, uid, accountId: 'acct', authorizations: {} }), 3600, undefined, { consumable: false });
      await store.set(keys.sessionUid(uid), id, { ttl: 3600 });
      assert.equal(await session.find(id), undefined);
      assert.equal(await session.findByUid(uid), undefined);
    });

    test("revokeAccountSessions deletes the account's sessions and grants with their tokens, nothing of another account", async () => {
      const store = getStore();
      const a = adapters(store);
      const mine = `acct-${randomId().slice(0, 8)}`;
      const theirs = `acct-${randomId().slice(0, 8)}`;
      const now = epoch();
      async function grantOf(accountId: string) {
        const grantId = randomId();
        const accessId = tokenId(grantId);
        const refreshId = tokenId(grantId);
        await a.grant.upsert(grantId, { jti: grantId, kind: 'Grant', iat: now, exp: now + DAY, accountId, clientId: 'app' }, DAY);
        await a.access.upsert(accessId, { jti: accessId, kind: 'AccessToken', accountId, clientId: 'app', grantId }, 3600);
        await a.refresh.upsert(refreshId, { jti: refreshId, kind: 'RefreshToken', accountId, clientId: 'app', grantId }, DAY);
        return { grantId, accessId, refreshId };
      }
      async function sessionOf(accountId: string) {
        const id = randomId();
        await a.session.upsert(id, { jti: id, uid: randomId(), kind: 'Session', accountId, authorizations: {} }, 3600);
        await a.session.upsert(id, { jti: id, uid: randomId(), kind: 'Session', accountId, authorizations: {} }, 3600); // saved again: listed once
        return id;
      }
      const myGrants = [await grantOf(mine), await grantOf(mine)];
      const mySessions = [await sessionOf(mine), await sessionOf(mine)];
      const gone = await sessionOf(mine);
      await a.session.destroy(gone); // signed out already: listed, but no longer there
      const theirGrant = await grantOf(theirs);
      const theirSession = await sessionOf(theirs);

      assert.deepEqual(await revokeAccountSessions(store, mine), { sessions: 2, grants: 2 });
      for (const g of myGrants) {
        assert.equal(await a.grant.find(g.grantId), undefined);
        assert.equal(await a.access.find(g.accessId), undefined);
        assert.equal(await a.refresh.find(g.refreshId), undefined);
      }
      for (const id of mySessions) assert.equal(await a.session.find(id), undefined);
      assert.deepEqual(await store.setMembers(keys.accountSessions(mine)), []);
      assert.deepEqual(await store.setMembers(keys.accountGrants(mine)), []);
      assert.ok(await a.grant.find(theirGrant.grantId));
      assert.ok(await a.access.find(theirGrant.accessId));
      assert.ok(await a.session.find(theirSession));
      assert.deepEqual(await revokeAccountSessions(store, mine), { sessions: 0, grants: 0 }, 'again: nothing left');
    });

    test("revokeClientGrants deletes the client's client-credentials tokens, listed today or days ago, in this version's lists or an earlier version's sets", async () => {
      const store = getStore();
      const Adapter = createAdapterClass(store, CLIENTS);
      const cc = new Adapter('ClientCredentials');
      const doomed = `doomed-${randomId().slice(0, 8)}`;
      const kept = `kept-${randomId().slice(0, 8)}`;
      const now = Date.now();
      const issue = async (clientId: string, adapter = cc) => {
        const id = randomId();
        await adapter.upsert(id, { jti: id, kind: 'ClientCredentials', iat: epoch(), exp: epoch() + 3600, clientId, scope: 'api:read', aud: 'https://api.example' }, 3600);
        return id;
      };
      const ours = [await issue(doomed), await issue(doomed)];
      // Issued yesterday (the adapter's clock a day back): listed under that day.
      const yesterday = await issue(doomed, new (createAdapterClass(store, CLIENTS, () => now - DAY * 1000))('ClientCredentials'));
      const theirs = await issue(kept);
      // One written by an earlier version: its record key in a set of the day.
      const earlier = randomId();
      await store.putModel(keys.model('ClientCredentials', earlier), JSON.stringify({ iat: epoch(), exp: epoch() + 3600, clientId: doomed, aud: 'https://api.example' }), 3600, undefined, { consumable: false });
      await store.indexAdd(keys.clientTokenSet(doomed, Math.floor(now / (DAY * 1000))), keys.model('ClientCredentials', earlier), 3600);
      for (const id of [...ours, yesterday, earlier, theirs]) assert.equal((await cc.find(id))?.jti, id);
      // The list holds digests of the ids, never the ids (bearer values) themselves.
      const today = keys.clientTokens(doomed, Math.floor(now / (DAY * 1000)));
      assert.deepEqual(await store.listMembers(today), ours.map(digest));

      assert.deepEqual(await revokeClientGrants(store, doomed, now), { grants: 0, tokens: 4 });
      for (const id of [...ours, yesterday, earlier]) assert.equal(await store.getModel(keys.model('ClientCredentials', id), { consumable: false }), null);
      assert.equal((await cc.find(theirs))?.jti, theirs, "another client's token is kept");
      assert.deepEqual(await store.listMembers(today), []);
      assert.deepEqual(await store.setMembers(keys.clientTokenSet(doomed, Math.floor(now / (DAY * 1000)))), []);
      assert.deepEqual(await revokeClientGrants(store, doomed, now), { grants: 0, tokens: 0 }, 'again: nothing left');
    });

    test('DeviceCode: find by user code', async () => {
      const { device } = adapters(getStore());
      const id = randomId();
      const userCode = 'BCDF-GHJK';
      await device.upsert(id, { jti: id, kind: 'DeviceCode', userCode, clientId: 'tv' }, 600);
      assert.equal((await device.findByUserCode(userCode))?.jti, id);
      assert.equal(await device.findByUserCode('ZZZZ-ZZZZ'), undefined);
    });

    test('Client is looked up through the registry, never the store', async () => {
      const Adapter = createAdapterClass(getStore(), { find: async (id) => (id === 'app' ? { client_id: 'app' } : undefined) });
      const clients = new Adapter('Client');
      assert.deepEqual(await clients.find('app'), { client_id: 'app' });
      assert.equal(await clients.find('other'), undefined);
    });

    test("a token whose client is gone is not found (introspection answers inactive), and the grant's other records still are", async () => {
      const store = getStore();
      const a = adapters(store);
      const grantId = randomId();
      const kept = tokenId(grantId);
      const orphan = tokenId(grantId);
      await a.grant.upsert(grantId, { jti: grantId, kind: 'Grant', clientId: 'gone', accountId: 'acct' }, 60);
      await a.access.upsert(kept, { jti: kept, kind: 'AccessToken', grantId, clientId: 'app' }, 60);
      await a.access.upsert(orphan, { jti: orphan, kind: 'AccessToken', grantId, clientId: 'gone' }, 60);
      assert.equal((await a.access.find(kept))?.jti, kept);
      assert.equal(await a.access.find(orphan), undefined);
      assert.ok(await a.grant.find(grantId), 'a grant is not a token: found, for oidc-provider to revoke');
    });

    test('destroy removes one record', async () => {
      const store = getStore();
      const r = await seedGrant(store);
      await adapters(store).access.destroy(r.accessId);
      assert.deepEqual(await present(store, r), { ...ALL_PRESENT, AccessToken: false });
    });

    test('revokeByGrantId removes the records of its model in that grant, and nothing of another grant', async () => {
      const store = getStore();
      const a = adapters(store);
      const victim = await seedGrant(store);
      const bystander = await seedGrant(store);
      assert.deepEqual(await present(store, victim), ALL_PRESENT);
      // oidc-provider revokes a grant model by model, then destroys the Grant only if its policy says so
      // (revoking an access token keeps the Grant, and with it the person's consent).
      await a.access.revokeByGrantId(victim.grantId);
      assert.deepEqual(await present(store, victim), { ...ALL_PRESENT, AccessToken: false });
      await a.refresh.revokeByGrantId(victim.grantId);
      await a.code.revokeByGrantId(victim.grantId);
      assert.deepEqual(await present(store, victim), { ...NONE_PRESENT, Grant: true });
      await a.grant.destroy(victim.grantId);
      assert.deepEqual(await present(store, victim), NONE_PRESENT);
      assert.deepEqual(await present(store, bystander), ALL_PRESENT);
      // Records written to the grant afterwards are revoked by the next revocation too.
      const late = tokenId(bystander.grantId);
      await a.access.upsert(late, { jti: late, kind: 'AccessToken', grantId: bystander.grantId }, 60);
      await a.access.revokeByGrantId(bystander.grantId);
      assert.equal(await a.access.find(late), undefined);
      assert.deepEqual(await present(store, bystander), { ...ALL_PRESENT, AccessToken: false });
    });

    test('consume marks a record consumed; consume of a missing record is invalid_grant', async () => {
      const store = getStore();
      const a = adapters(store);
      const r = await seedGrant(store);
      const before = epoch();
      await a.code.consume(r.codeId);
      const consumed = (await a.code.find(r.codeId))?.consumed;
      assert.equal(typeof consumed, 'number');
      assert.ok((consumed as number) >= before && (consumed as number) <= epoch());
      await assert.rejects(a.code.consume(tokenId(r.grantId)), isInvalidGrant);
    });

    test('consume of a non-consumable model is a no-op', async () => {
      const store = getStore();
      const a = adapters(store);
      const r = await seedGrant(store);
      await a.access.consume(r.accessId);
      await a.access.consume(r.accessId);
      assert.deepEqual(await present(store, r), ALL_PRESENT);
    });

    test('PushedAuthorizationRequest: consumed once, then invalid_grant', async () => {
      const { par } = adapters(getStore());
      const id = randomId();
      await par.upsert(id, { jti: id, kind: 'PushedAuthorizationRequest', request: 'eyJ...', dupe: false }, 60);
      await par.consume(id);
      await assert.rejects(par.consume(id), isInvalidGrant);
    });

    for (const model of ['AuthorizationCode', 'RefreshToken'] as const) {
      test(`20 parallel redemptions of one ${model === 'AuthorizationCode' ? 'authorization code' : 'refresh token'}: exactly one succeeds`, async () => {
        const store = getStore();
        const a = adapters(store);
        const r = await seedGrant(store);
        const bystander = await seedGrant(store);
        const id = model === 'AuthorizationCode' ? r.codeId : r.refreshId;
        const adapter = model === 'AuthorizationCode' ? a.code : a.refresh;

        const results = await Promise.allSettled(Array.from({ length: 20 }, () => adapter.consume(id)));
        const won = results.filter((s) => s.status === 'fulfilled');
        const lost = results.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
        assert.equal(won.length, 1);
        assert.equal(lost.length, 19);
        for (const failure of lost) {
          assert.ok(isInvalidGrant(failure.reason), `rejected with ${String(failure.reason)}`);
          assert.equal(failure.reason instanceof StorageUnavailable, false);
        }
        // Reuse revokes the grant: none of its records survives, another grant's all do.
        assert.deepEqual(await present(store, r), NONE_PRESENT);
        assert.deepEqual(await present(store, bystander), ALL_PRESENT);
        // And a later redemption fails as well.
        await assert.rejects(adapter.consume(id), isInvalidGrant);
      });
    }
  });
}

/** The part of a key Redis Cluster hashes: the first non-empty `{…}`, else the whole key. */
function hashedPart(key: string): string {
  const open = key.indexOf('{');
  if (open === -1) return key;
  const close = key.indexOf('}', open + 1);
  if (close === -1 || close === open + 1) return key;
  return key.slice(open + 1, close);
}

/** CRC16/XMODEM mod 16384, as Redis Cluster computes a key's slot. */
function keySlot(key: string): number {
  let crc = 0;
  for (const byte of Buffer.from(hashedPart(key))) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i += 1) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

describe('MemoryStore', () => {
  const store = new MemoryStore();
  after(() => store.close());
  storeContract(() => store);

  describe('expiry (injected clock)', () => {
    let t = 1_700_000_000_000;
    const clocked = new MemoryStore({ now: () => t });
    after(() => clocked.close());

    test('values, models, indexes and lookups disappear after their TTL, without sleeping', async () => {
      const a = adapters(clocked);
      await clocked.set('plain', 'v', { ttl: 10 });
      await clocked.set('forever', 'v');
      const r = await seedGrant(clocked);
      const sessionId = randomId();
      const uid = randomId();
      await a.session.upsert(sessionId, { jti: sessionId, uid, kind: 'Session' }, 120);
      const baseline = clocked.size();

      t += 10_000 - 1;
      assert.equal(await clocked.get('plain'), 'v');
      t += 1;
      assert.equal(await clocked.get('plain'), null);
      assert.equal(await clocked.set('plain', 'again', { ifAbsent: true }), true, 'an expired key is absent');

      t += 50_000; // 60 s: the authorization code is gone, the rest of the grant is not
      assert.deepEqual(await present(clocked, r), { ...ALL_PRESENT, AuthorizationCode: false });
      await assert.rejects(a.code.consume(r.codeId), isInvalidGrant);

      t += 60_000; // 120 s: the session and its uid lookup
      assert.equal(await a.session.find(sessionId), undefined);
      assert.equal(await a.session.findByUid(uid), undefined);

      t += 3600_000; // the access token
      assert.deepEqual(await present(clocked, r), { ...ALL_PRESENT, AuthorizationCode: false, AccessToken: false });

      t += 30 * DAY * 1000; // everything of the grant, and its index
      assert.deepEqual(await present(clocked, r), NONE_PRESENT);
      assert.deepEqual(await clocked.setMembers(keys.grantIndex(r.grantId)), []);
      assert.ok(baseline > 2);
      assert.equal(clocked.size(), 2, 'only the keys written without a TTL remain');
      assert.equal(await clocked.get('forever'), 'v');
    });

    test("a list index (a client's tokens) lives to the end of the clock hour its longest-lived record ends in", async () => {
      t = Math.ceil(t / 3_600_000) * 3_600_000 + 600_000; // 10 minutes into an hour
      const list = 'lk:client-token-digests:clocked:1';
      await clocked.putListed('lk:{a}:ClientCredentials:a', '{}', 60, list, 'a');
      await clocked.putListed('lk:{b}:ClientCredentials:b', '{}', 3600, list, 'b');
      await clocked.putListed('lk:{c}:ClientCredentials:c', '{}', 10, list, 'c');
      t += 61_000;
      assert.equal(await clocked.getModel('lk:{a}:ClientCredentials:a'), null);
      t += 3600_000 - 61_000 - 1;
      assert.deepEqual(await clocked.listMembers(list), ['a', 'b', 'c'], 'its longest-lived record is still there');
      t += 1;
      assert.equal(await clocked.getModel('lk:{b}:ClientCredentials:b'), null);
      assert.deepEqual(await clocked.listMembers(list), ['a', 'b', 'c'], 'until the end of that hour');
      t += 50 * 60_000;
      assert.deepEqual(await clocked.listMembers(list), []);
    });

    test('an index lives as long as its longest-lived member', async () => {
      const index = 'lk:{clocktag}:grant';
      await clocked.putModel('lk:{clocktag}:RefreshToken:1', 'long', 100, index);
      await clocked.putModel('lk:{clocktag}:AccessToken:1', 'short', 10, index);
      t += 50_000;
      assert.deepEqual(await clocked.setMembers(index), ['lk:{clocktag}:RefreshToken:1', 'lk:{clocktag}:AccessToken:1']);
      await clocked.deleteIndexed(index);
      assert.equal(await clocked.getModel('lk:{clocktag}:RefreshToken:1'), null);
      await clocked.putModel('lk:{clocktag}:AccessToken:2', 'short', 10, index);
      t += 10_000;
      assert.deepEqual(await clocked.setMembers(index), [], 'the index expires with its last member');
    });

    test('advanceCounter: the counter expires after its TTL, and a write renews it', async () => {
      assert.equal(await clocked.advanceCounter('counter', 5, 10), true);
      t += 9_000;
      assert.equal(await clocked.advanceCounter('counter', 5, 10), false);
      assert.equal(await clocked.advanceCounter('counter', 6, 10), true, 'renews the TTL');
      t += 9_000;
      assert.equal(await clocked.get('counter'), '6');
      t += 1_000;
      assert.equal(await clocked.get('counter'), null);
      assert.equal(await clocked.advanceCounter('counter', 1, 10), true, 'an expired counter is absent');
    });
  });
});

// The same suite on one redis-server and on a private 3-master Redis Cluster (no CROSSSLOT anywhere).
for (const backend of ['redis-server', 'Redis Cluster'] as const) describe(backend === 'redis-server' ? 'RedisStore' : 'RedisStore on a 3-master Redis Cluster', () => {
  let testRedis: TestRedis | TestCluster;
  let store: RedisStore;

  before(async () => {
    if (backend === 'redis-server') {
      const redis = await startRedis();
      testRedis = redis;
      store = new RedisStore(connectRedis(redis.url, 1000));
    } else {
      const cluster = await startRedisCluster();
      testRedis = cluster;
      store = new RedisStore(connectCluster(cluster.ports.map((port) => ({ host: '127.0.0.1', port })), 1000));
    }
    await store.ready(5000);
  });
  after(async () => {
    await store?.close();
    await testRedis?.dispose();
  });

  storeContract(() => store);

  test('refresh tokens and codes stored by an earlier version (a hash: `p` payload, `c` consumed-at) are still read, consumed and rotated', async () => {
    const { index, member } = grantFamily();
    const [code, used, rotated] = ['AuthorizationCode', 'RefreshToken', 'RefreshToken'].map((model) => member(model)) as [string, string, string];
    for (const key of [code, used, rotated]) {
      await store.client.hset(key, 'p', `{"was":"${key}"}`);
      await store.client.expire(key, 60);
      await store.client.sadd(index, key);
    }
    await store.client.hset(used, 'c', '90');
    await store.client.expire(index, 60);
    assert.deepEqual(await store.getModel(code), { payload: `{"was":"${code}"}` });
    assert.deepEqual(await store.getModel(used), { payload: `{"was":"${used}"}`, consumed: 90 });
    // Read ahead (MGET answers nil for a hash): read again, not taken for absent.
    assert.deepEqual(await withReadAhead(() => (store.readAhead([used, code]), store.getModel(used))), { payload: `{"was":"${used}"}`, consumed: 90 });
    assert.equal(await store.consumeModel(code, index, 100), 'consumed');
    assert.deepEqual(await store.getModel(code), { payload: `{"was":"${code}"}`, consumed: 100 });
    const next = { key: member('RefreshToken'), payload: '{}', ttl: 60, consumable: true };
    assert.equal(await store.rotateModel({ key: rotated, payload: `{"was":"${rotated}"}` }, index, [next], 100), 'consumed');
    assert.deepEqual(await store.getModel(rotated), { payload: `{"was":"${rotated}"}`, consumed: 100 });
    assert.deepEqual(await store.getModel(next.key), { payload: '{}' });
    assert.equal(await store.rotateModel({ key: used, payload: `{"was":"${used}"}` }, index, [], 100), 'reused', 'reuse of a token consumed by an earlier version');
    assert.equal(await store.getModel(next.key), null, 'revokes the grant');
  });

  test("a grant's index: the grant's first save gives it the grant's TTL, its tokens leave it, a token written after a revocation deleted it gives it one", async () => {
    const { index, member } = grantFamily();
    await store.putModel(member('Grant'), 'g', 3600, index, { consumable: false, index: 'owner' });
    await store.putModel(member('AccessToken'), 'a', 600, index, { consumable: false, index: 'outlives' });
    const ttl = await store.client.ttl(index);
    assert.ok(ttl > 3590 && ttl <= 3600, `index TTL ${ttl}`);
    await store.client.del(index);
    await store.putModel(member('AccessToken'), 'a', 600, index, { consumable: false, index: 'outlives' });
    const again = await store.client.ttl(index);
    assert.ok(again > 590 && again <= 600, `a re-made index has a TTL: ${again}`);
  });

  test("putIndexed with the grant as holder: one SET per token and one SADD while the index lives; an index re-made without its grant's revocation gets a TTL", async () => {
    const { index, member } = grantFamily();
    const grant = member('Grant');
    await store.putModel(grant, 'g', 3600, index, { consumable: false, index: 'owner' });
    const records = () => [{ key: member('AccessToken'), payload: 'a', ttl: 600, consumable: false }, { key: member('RefreshToken'), payload: 'r', ttl: 1200, consumable: true }];
    // Counted on one server (a cluster's counters are per node).
    const counted = backend === 'redis-server' ? store.client : undefined;
    await counted?.config('RESETSTAT');
    await store.putIndexed(records(), index, grant);
    const stats = (await counted?.info('commandstats')) ?? '';
    const calls = Object.fromEntries(stats.split('\r\n').filter((l) => l.startsWith('cmdstat_') && !l.startsWith('cmdstat_config')).map((l) => [l.slice(8, l.indexOf(':')), Number(/calls=(\d+)/.exec(l)![1])]));
    if (counted) assert.deepEqual(calls, { set: 2, sadd: 1 }, 'no EXPIRE: the grant gave its index its TTL');
    await store.client.persist(index);
    await store.client.srem(index, grant);
    await store.putIndexed(records(), index, grant);
    const ttl = await store.client.ttl(index);
    assert.ok(ttl > 1190 && ttl <= 1200, `an index found without its grant gets the tokens' TTL: ${ttl}`);
  });

  test('indexAdd: a new set gets the TTL, a longer one extends it, a shorter one never shortens it', async () => {
    const index = `test:index-ttl:${randomId().slice(0, 10)}`;
    await store.indexAdd(index, 'a', 60);
    const first = await store.client.ttl(index);
    assert.ok(first > 55 && first <= 60, `new: ${first}`);
    await store.indexAdd(index, 'b', 3600);
    const longer = await store.client.ttl(index);
    assert.ok(longer > 3590 && longer <= 3600, `extended: ${longer}`);
    await store.indexAdd(index, 'c', 10);
    const kept = await store.client.ttl(index);
    assert.ok(kept > 3590, `not shortened: ${kept}`);
    await store.client.persist(index);
    await store.indexAdd(index, 'd', 60);
    const given = await store.client.ttl(index);
    assert.ok(given > 55 && given <= 60, `a set without a TTL gets one: ${given}`);
    assert.deepEqual((await store.setMembers(index)).sort(), ['a', 'b', 'c', 'd']);
  });

  test('indexAdd (pipelined): the TTL reaches the end of a step past the member (a tenth of its TTL, a minute to a day), written once a step; a set emptied and re-made gets it again', async () => {
    const DAY = 86_400;
    const index = `test:index-ttl-pipelined:${randomId().slice(0, 10)}`;
    const endOfStepAfter = (ttl: number, step: number) => Math.ceil((Math.floor(Date.now() / 1000) + ttl) / step) * step;
    await store.indexAdd(index, 'a', 3600, { pipelined: true });
    const first = await store.client.expiretime(index);
    assert.ok(first >= endOfStepAfter(3600, 360) - 1 && first <= endOfStepAfter(3600, 360), `new: expires ${first}`);
    assert.ok(first - Date.now() / 1000 <= 3600 + 360, 'an hour and at most six minutes');
    // Covered by what this process wrote: SADD alone (a TTL changed behind its back stays as it is).
    await store.client.expire(index, 5000);
    await store.indexAdd(index, 'b', 30, { pipelined: true });
    assert.equal(await store.client.ttl(index), 5000, 'no EXPIRE for a member the set already outlives');
    // Longer than the day: extended, never shortened.
    await store.indexAdd(index, 'c', 3 * DAY, { pipelined: true });
    // Its step is a tenth of three days (7.2 h), so the end of a step past it, whatever the time of day.
    const extended = await store.client.expiretime(index);
    assert.ok(extended >= endOfStepAfter(3 * DAY, (3 * DAY) / 10) - 1 && extended <= endOfStepAfter(3 * DAY, (3 * DAY) / 10), `extended: expires ${extended}`);
    // Emptied by this process (the last member removed, so Redis deleted it): the next add gives it a TTL again.
    for (const member of await store.setMembers(index)) await store.setRemove(index, member);
    assert.equal(await store.client.exists(index), 0);
    await store.indexAdd(index, 'd', 60, { pipelined: true });
    assert.ok((await store.client.ttl(index)) > 0, 'a re-made set has a TTL');
    // Another process (its own memory) finds a set without a TTL: it gives it one.
    await store.client.persist(index);
    const other = new RedisStore(store.client instanceof Cluster ? store.client.duplicate() : store.client.duplicate());
    try {
      await other.ready(5000);
      await other.indexAdd(index, 'e', 60, { pipelined: true });
      assert.ok((await store.client.ttl(index)) > 0, 'a set without a TTL gets one');
    } finally {
      await other.close();
    }
    assert.deepEqual((await store.setMembers(index)).sort(), ['d', 'e']);
  });

  test('advanceCounter sets the TTL it is given', async () => {
    const key = `test:counter-ttl:${randomId().slice(0, 10)}`;
    await store.advanceCounter(key, 1, 90);
    const ttl = await store.client.ttl(key);
    assert.ok(ttl > 85 && ttl <= 90, `TTL ${ttl}`);
  });

  describe('Redis key rules', () => {
    interface Written {
      grants: GrantRecords[];
      secrets: string[];
      sessionId: string;
      uid: string;
    }
    let written: Written;

    before(async () => {
      // A realistic mix: two sign-ins with every grant-bound record, a session, an interaction,
      // a pushed request, a device code with its user code, and a record without an expiry.
      const a = adapters(store);
      const grants = [await seedGrant(store), await seedGrant(store)];
      const sessionId = randomId();
      const uid = randomId();
      await a.session.upsert(sessionId, { jti: sessionId, uid, kind: 'Session', accountId: 'acct-1', authorizations: {} }, 14 * DAY);
      const interactionId = randomId();
      // oidc-provider's interaction names the browser's session id as `session.cookie`.
      await a.interaction.upsert(interactionId, { jti: interactionId, kind: 'Interaction', uid: interactionId, params: { client_id: 'app' }, session: { accountId: 'acct-1', uid, cookie: sessionId } }, 3600);
      const parId = randomId();
      await a.par.upsert(parId, { jti: parId, kind: 'PushedAuthorizationRequest', request: 'x' }, 60);
      const deviceId = randomId();
      const userCode = 'WXYZ-BCDF';
      await a.device.upsert(deviceId, { jti: deviceId, kind: 'DeviceCode', userCode, clientId: 'tv' }, 600);
      const noExpiry = tokenId(grants[0]!.grantId);
      await a.access.upsert(noExpiry, { jti: noExpiry, kind: 'AccessToken', grantId: grants[0]!.grantId }, 0);
      const secrets = [
        ...grants.flatMap((g) => [g.codeId, g.accessId, g.refreshId, g.grantId]),
        noExpiry, sessionId, uid, interactionId, parId, deviceId, userCode,
      ];
      written = { grants, secrets, sessionId, uid };
    });

    async function allKeys(pattern: string): Promise<string[]> {
      const found: string[] = [];
      // On a cluster each master holds its share of the keys: scan every one.
      for (const node of store.client instanceof Cluster ? store.client.nodes('master') : [store.client]) {
        let cursor = '0';
        do {
          const [next, batch] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
          cursor = next;
          found.push(...batch);
        } while (cursor !== '0');
      }
      return found;
    }

    test('every key of an oidc model or an index has a TTL', async () => {
      const found = await allKeys('lk:{*');
      assert.ok(found.length >= 20, `found ${found.length} keys`);
      for (const key of found) {
        const ttl = await store.client.ttl(key);
        assert.ok(ttl > 0, `${key} has TTL ${ttl}`);
      }
      const session = await store.client.ttl(keys.model('Session', written.sessionId));
      assert.ok(session > 14 * DAY - 5 && session <= 14 * DAY);
      assert.ok((await store.client.ttl(keys.sessionUid(written.uid))) > 14 * DAY - 5);
    });

    test('an index lives as long as its longest-lived member, no shorter, no longer', async () => {
      for (const g of written.grants) {
        const index = keys.grantIndex(g.grantId);
        const members = await store.client.smembers(index);
        assert.ok(members.length >= 4, `${index} lists ${members.length}`);
        const indexTtl = await store.client.ttl(index);
        const memberTtls = await Promise.all(members.map((m) => store.client.ttl(m)));
        for (const [i, ttl] of memberTtls.entries()) assert.ok(indexTtl >= ttl, `index ${indexTtl} s < ${members[i]} ${ttl} s`);
        assert.ok(indexTtl <= Math.max(...memberTtls) + 1, 'an index does not outlive what it lists');
      }
    });

    test("a client's list of client-credentials tokens lives to the end of the clock hour its longest-lived token ends in, never shorter; holds digests, not tokens", async () => {
      const cc = new (createAdapterClass(store, CLIENTS))('ClientCredentials');
      const clientId = `machine-${randomId().slice(0, 8)}`;
      const list = keys.clientTokens(clientId, Math.floor(Date.now() / (DAY * 1000)));
      const issue = async (ttl: number) => {
        const id = randomId();
        await cc.upsert(id, { jti: id, kind: 'ClientCredentials', iat: epoch(), exp: epoch() + ttl, clientId, aud: 'https://api.example' }, ttl);
        return id;
      };
      const endOfHour = (ttl: number) => Math.ceil((epoch() + ttl) / 3600) * 3600 - epoch();
      const within = async (ttl: number) => {
        const listTtl = await store.client.ttl(list);
        assert.ok(listTtl >= ttl - 2 && listTtl <= endOfHour(ttl) + 2, `list TTL ${listTtl} for a longest token of ${ttl} s`);
      };
      const first = await issue(600);
      assert.equal(await store.client.type(list), 'list');
      assert.equal(await store.client.object('ENCODING', list), 'quicklist', 'compact: listpacks of members');
      await within(600);
      const long = await issue(7200);
      await within(7200);
      await issue(10);
      await within(7200);
      const members = await store.client.lrange(list, 0, -1);
      assert.equal(members.length, 3);
      assert.deepEqual(members.slice(0, 2), [digest(first), digest(long)]);
      for (const m of members) assert.equal(m.length, 27);
      assert.equal(await store.client.ttl(keys.model('ClientCredentials', long)), 7200, 'the record keeps its own TTL');
      // A list deleted meanwhile (its client deleted, or Redis lost it) gets a TTL again from its next append.
      await store.client.del(list);
      await issue(60);
      await within(60);
    });

    test("an account's session and grant indexes live as long as their longest-lived member", async () => {
      const sessions = keys.accountSessions('acct-1');
      const grants = keys.accountGrants('acct-1');
      assert.ok((await store.client.smembers(sessions)).includes(keys.model('Session', written.sessionId)));
      const listed = await store.client.smembers(grants);
      for (const g of written.grants) assert.ok(listed.includes(keys.grantIndex(g.grantId)));
      // At least the member's lifetime, at most a day more (their TTL is written once a day, to the end of a step of a day).
      const sessionTtl = await store.client.ttl(sessions);
      assert.ok(sessionTtl > 14 * DAY - 5 && sessionTtl <= 15 * DAY + 1, `sessions index TTL ${sessionTtl}`);
      const grantTtl = await store.client.ttl(grants);
      assert.ok(grantTtl > 30 * DAY - 5 && grantTtl <= 31 * DAY + 1, `grants index TTL ${grantTtl}`);
    });

    test('no key name carries a token, code, session id, uid or user code', async () => {
      const found = await allKeys('lk:*');
      for (const key of found) {
        for (const secret of written.secrets) {
          assert.ok(!key.includes(secret), `${key} contains ${secret}`);
          // Nor any long piece of one (a token id's first 16 characters are its grant's public tag).
          const random = secret.length > 40 ? secret.slice(-32) : secret;
          for (let i = 0; i + 12 <= random.length; i += 1) assert.ok(!key.includes(random.slice(i, i + 12)), `${key} contains part of a secret`);
        }
      }
    });

    test('no stored value holds a session id (the session cookie), whatever its type', async () => {
      const values = await Promise.all((await allKeys('lk:*')).map((key) => valueOf(key)));
      assert.ok(values.some((v) => v.includes(keys.model('Session', written.sessionId))), 'the dump reads the indexes');
      for (const value of values) assert.ok(!value.includes(written.sessionId), `a stored value holds the session id: ${value.slice(0, 200)}`);
    });

    /** Everything stored under a key, as text: strings, hashes, sets, sorted sets, lists and streams. */
    async function valueOf(key: string): Promise<string> {
      const type = await store.client.type(key);
      if (type === 'string') return (await store.client.get(key)) ?? '';
      if (type === 'hash') return JSON.stringify(await store.client.hgetall(key));
      if (type === 'set') return JSON.stringify(await store.client.smembers(key));
      if (type === 'zset') return JSON.stringify(await store.client.zrange(key, '0', '-1'));
      if (type === 'list') return JSON.stringify(await store.client.lrange(key, '0', '-1'));
      if (type === 'stream') return JSON.stringify(await store.client.xrange(key, '-', '+'));
      return '';
    }

    test('all keys of one grant hash to one cluster slot, and grants are spread', async () => {
      const slots = [];
      for (const g of written.grants) {
        const grantKeys = [
          keys.grantIndex(g.grantId),
          keys.model('Grant', g.grantId),
          keys.model('AuthorizationCode', g.codeId),
          keys.model('AccessToken', g.accessId),
          keys.model('RefreshToken', g.refreshId),
          ...(await store.client.smembers(keys.grantIndex(g.grantId))),
        ];
        const tags = new Set(grantKeys.map(hashedPart));
        assert.equal(tags.size, 1, `one hash tag per grant, got ${[...tags].join(', ')}`);
        assert.equal(new Set(grantKeys.map(keySlot)).size, 1);
        slots.push(keySlot(grantKeys[0]!));
      }
      assert.notEqual(hashedPart(keys.grantIndex(written.grants[0]!.grantId)), hashedPart(keys.grantIndex(written.grants[1]!.grantId)));
      assert.equal(keySlot('123456789'), 12739, 'the slot function matches Redis Cluster');
    });

    if (backend === 'Redis Cluster') {
      test('on the cluster: the slot function agrees with CLUSTER KEYSLOT, and the records are spread over every master', async () => {
        const cluster = store.client as Cluster;
        const grantKeys = written.grants.flatMap((g) => [keys.grantIndex(g.grantId), keys.model('RefreshToken', g.refreshId)]);
        for (const key of grantKeys) assert.equal(await cluster.cluster('KEYSLOT', key), keySlot(key), key);
        const masters = cluster.nodes('master');
        assert.equal(masters.length, 3);
        const sizes = await Promise.all(masters.map((node) => node.dbsize()));
        assert.ok(sizes.every((n) => n > 0), `keys per master: ${sizes.join(', ')}`);
      });
    }
  });
});

describe('RedisStore when Redis is away', () => {
  const timeoutMs = 300;

  /** Runs a call that must fail fast with StorageUnavailable, and says how long it took. */
  async function failsFast(name: string, call: () => Promise<unknown>) {
    const started = performance.now();
    await assert.rejects(call(), (err) => {
      assert.ok(err instanceof StorageUnavailable, `${name}: rejected with ${String(err)}`);
      assert.equal(err.error, 'temporarily_unavailable');
      assert.equal(err.status, 503);
      return true;
    });
    const took = performance.now() - started;
    assert.ok(took < 2000, `${name} took ${Math.round(took)} ms`);
  }

  function everyCall(store: Store) {
    const a = adapters(store);
    const grantId = randomId();
    const id = tokenId(grantId);
    return {
      get: () => store.get('test:x'),
      set: () => store.set('test:x', 'v', { ttl: 5 }),
      setIfAbsent: () => store.set('test:y', 'v', { ifAbsent: true }),
      del: () => store.del('test:x'),
      setAdd: () => store.setAdd('test:s', 'm'),
      setMembers: () => store.setMembers('test:s'),
      putModel: () => store.putModel(keys.model('AccessToken', id), '{}', 60, keys.grantIndex(grantId)),
      getModel: () => store.getModel(keys.model('AccessToken', id)),
      consumeModel: () => store.consumeModel(keys.model('AuthorizationCode', id), keys.grantIndex(grantId), 1),
      deleteIndexed: () => store.deleteIndexed(keys.grantIndex(grantId)),
      ping: () => store.ping(),
      'adapter.upsert': () => a.access.upsert(id, { jti: id, grantId }, 60),
      'adapter.find': () => a.access.find(id),
      'adapter.consume': () => a.code.consume(id),
      'adapter.revokeByGrantId': () => a.grant.revokeByGrantId(grantId),
    };
  }

  test('a store whose Redis never answered: ready() and every call reject with StorageUnavailable, quietly', async () => {
    const port = await freePort(); // nothing listens there
    const store = new RedisStore(connectRedis(`redis://127.0.0.1:${port}`, timeoutMs));
    // Connection errors surface through the calls, not as ioredis' "Unhandled error event" on stderr.
    const printed: string[] = [];
    const consoleError = console.error;
    console.error = (...args: unknown[]) => void printed.push(args.map(String).join(' '));
    try {
      await failsFast('ready', () => store.ready(500));
      for (const [name, call] of Object.entries(everyCall(store))) await failsFast(name, call);
    } finally {
      console.error = consoleError;
      await store.close();
    }
    assert.deepEqual(printed.filter((line) => line.includes('ioredis')), []);
  });

  test('a call that failed during an outage is not replayed when Redis comes back', async () => {
    const redis = await startRedis({ ownServer: true });
    const store = new RedisStore(connectRedis(redis.url, timeoutMs));
    const admin = connectRedis(redis.url, 5000);
    try {
      await store.ready(5000);
      await new RedisStore(admin).ready(5000);
      const a = adapters(store);
      const grantId = randomId();
      const codeId = tokenId(grantId);
      // Redis stops answering with these calls in flight; their callers get StorageUnavailable (a 503)...
      await admin.call('CLIENT', 'PAUSE', '5000', 'ALL');
      await failsFast('set', () => store.set('test:ghost', 'v'));
      await failsFast('upsert', () => a.code.upsert(codeId, { jti: codeId, grantId, kind: 'AuthorizationCode' }, 60));
      // ...then the connection drops and Redis comes back (empty: no persistence).
      await redis.stop();
      await redis.restart();
      const deadline = Date.now() + 10_000;
      while (!(await store.ping().then(() => true, () => false))) {
        if (Date.now() > deadline) throw new Error('the store did not recover within 10 s');
        await new Promise((r) => setTimeout(r, 50));
      }
      await store.ping(); // a round trip after anything ioredis might have resent on reconnect
      assert.equal(await store.get('test:ghost'), null, 'a write reported as failed took effect later');
      assert.equal(await a.code.find(codeId), undefined, 'an upsert reported as failed took effect later');
    } finally {
      admin.disconnect();
      await store.close();
      await redis.dispose();
    }
  });

  test('a store whose Redis stops: fails fast while it is down, recovers by itself after', async () => {
    const redis = await startRedis({ ownServer: true });
    const store = new RedisStore(connectRedis(redis.url, timeoutMs));
    try {
      await store.ready(5000);
      const Adapter = createAdapterClass(store, { find: async () => undefined });
      const grant = new Adapter('Grant');
      await grant.upsert('g1', { jti: 'g1', kind: 'Grant' }, 60);

      await redis.stop();
      for (const [name, call] of Object.entries(everyCall(store))) await failsFast(name, call);
      // Many at once, too: none hangs, none succeeds.
      const started = performance.now();
      const settled = await Promise.allSettled(Array.from({ length: 50 }, () => grant.find('g1')));
      assert.ok(settled.every((s) => s.status === 'rejected' && s.reason instanceof StorageUnavailable));
      assert.ok(performance.now() - started < 2000);

      await redis.restart();
      const deadline = Date.now() + 10_000;
      for (;;) {
        try {
          await store.ping();
          break;
        } catch (err) {
          assert.ok(err instanceof StorageUnavailable);
          if (Date.now() > deadline) throw new Error('the store did not recover within 10 s of Redis coming back');
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      // Scripts work again (the restarted server has an empty script cache).
      const grantId = randomId();
      const id = tokenId(grantId);
      const code = new Adapter('AuthorizationCode');
      await code.upsert(id, { jti: id, grantId, kind: 'AuthorizationCode' }, 60);
      await code.consume(id);
      await assert.rejects(code.consume(id), isInvalidGrant);
    } finally {
      await store.close();
      await redis.dispose();
    }
  });

  test('a Redis that accepts but does not answer: calls time out with StorageUnavailable', async () => {
    const redis = await startRedis({ ownServer: true });
    const store = new RedisStore(connectRedis(redis.url, timeoutMs));
    const admin = connectRedis(redis.url, 5000);
    try {
      await store.ready(5000);
      await new RedisStore(admin).ready(5000);
      await store.set('test:paused', 'v');
      await admin.call('CLIENT', 'PAUSE', '1500', 'ALL');
      await failsFast('get while paused', () => store.get('test:paused'));
      await failsFast('consume while paused', () => adapters(store).code.consume(tokenId('g')));
      // Once Redis answers again, so does the store (late replies do not confuse later calls).
      const deadline = Date.now() + 10_000;
      for (;;) {
        const value = await store.get('test:paused').catch((err) => {
          assert.ok(err instanceof StorageUnavailable);
          return undefined;
        });
        if (value !== undefined) {
          assert.equal(value, 'v');
          break;
        }
        if (Date.now() > deadline) throw new Error('the store did not answer again within 10 s');
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(await store.set('test:after', 'w'), true);
      assert.equal(await store.get('test:after'), 'w');
      assert.equal(await store.get('test:paused'), 'v');
    } finally {
      admin.disconnect();
      await store.close();
      await redis.dispose();
    }
  });

  test('availability transitions are reported once each: a stop and a restart, and a Redis that refuses only writes', async () => {
    const redis = await startRedis({ ownServer: true });
    const store = new RedisStore(connectRedis(redis.url, timeoutMs));
    const admin = connectRedis(redis.url, 5000);
    const seen: boolean[] = [];
    store.onAvailabilityChange((available) => seen.push(available));
    const until = async (what: string, done: () => boolean | Promise<boolean>) => {
      const deadline = Date.now() + 10_000;
      while (!(await done())) {
        if (Date.now() > deadline) throw new Error(`not ${what} within 10 s`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    try {
      await store.ready(5000);
      await new RedisStore(admin).ready(5000);
      assert.deepEqual(seen, []);

      await redis.stop();
      for (let i = 0; i < 5; i += 1) await assert.rejects(store.get('test:x'), StorageUnavailable);
      await redis.restart();
      await until('back', () => store.ping().then(() => true, () => false));
      for (let i = 0; i < 5; i += 1) await store.get('test:x');
      assert.deepEqual(seen, [false, true], 'one down, one up');
      // The test's own connection reconnects on its own schedule; it must be back before it sends CONFIG.
      await until('admin back', () => admin.status === 'ready');

      // Full under noeviction: writes fail with OOM while reads succeed. That is one outage, not a flap per request.
      await admin.call('CONFIG', 'SET', 'maxmemory', '1');
      for (let i = 0; i < 10; i += 1) {
        await assert.rejects(store.set('test:full', 'v'), StorageUnavailable);
        await store.get('test:x');
      }
      assert.deepEqual(seen, [false, true, false]);
      await admin.call('CONFIG', 'SET', 'maxmemory', '0');
      await until('recovered', async () => {
        await store.set('test:full', 'v').catch(() => {});
        return seen.length === 4;
      });
      assert.deepEqual(seen, [false, true, false, true]);

      await store.close();
      assert.deepEqual(seen, [false, true, false, true], 'closing on purpose is not an outage');
    } finally {
      admin.disconnect();
      await store.close();
      await redis.dispose();
    }
  });
});
