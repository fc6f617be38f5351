/**
 * Brute-force lockout. The schedule and expiry are ours and run on an injected clock (no sleeping);
 * the failure counters are rate-limiter-flexible's, in memory for the embedded store and in a real
 * Redis for RedisStore — the same suite runs on both.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Lockout, type Attempt, type LockoutEvent, type LockoutEventName, type LockoutOptions } from '../src/security/lockout.ts';
import { digest, keys } from '../src/storage/keys.ts';
import { MemoryStore } from '../src/storage/memory-store.ts';
import { withReadAhead } from '../src/storage/read-ahead.ts';
import { connectRedis, RedisStore } from '../src/storage/redis-store.ts';
import { StorageUnavailable, type Store } from '../src/storage/store.ts';
import { freePort, useRedisStore, type TestRedis } from './helpers/redis.ts';

const MIN = 60_000;

/** `watched`: as a server runs it, answering "not locked" from its cache while it listens for lockouts. */
function suite(name: string, getStore: () => Store, watched = false) {
  describe(name, () => {
    const stops: (() => Promise<void>)[] = [];
    after(() => Promise.all(stops.map((stop) => stop())));
    /** A lockout on its own clock, recording its audit events. */
    async function setup(options: LockoutOptions = {}) {
      const clock = { t: 1_800_000_000_000 };
      const events: [LockoutEventName, LockoutEvent][] = [];
      const lockout = new Lockout(getStore(), { now: () => clock.t, onEvent: (n, d) => events.push([n, d]), ...options });
      if (watched) stops.push(await Lockout.watch(getStore(), [lockout]));
      const person = `p-${randomBytes(6).toString('hex')}@example.org`;
      const attempt = (factor: Attempt['factor'] = 'password', ip?: string): Attempt => ({ factor, account: person, ...(ip ? { ip } : {}) });
      let verified = 0;
      /** One attempt through the guard; `right` says whether the password/code is right. */
      const tryOnce = (right: boolean, factor: Attempt['factor'] = 'password', ip?: string) =>
        lockout.attempt(attempt(factor, ip), async () => {
          verified += 1;
          return right;
        });
      const fail = async (n: number, factor: Attempt['factor'] = 'password', ip?: string) => {
        const results = [];
        for (let i = 0; i < n; i += 1) results.push(await tryOnce(false, factor, ip));
        return results;
      };
      return { clock, events, lockout, person, attempt, tryOnce, fail, verifiedCount: () => verified };
    }

    test('10 consecutive failures lock the account; while locked even the right password is refused', async () => {
      const s = await setup();
      const first = await s.fail(9);
      assert.ok(first.every((r) => r.status === 'failed'));
      assert.deepEqual(await s.lockout.check(s.attempt()), { allowed: true });
      assert.deepEqual(await s.tryOnce(false), { status: 'locked', retryAfterSeconds: 60 }, 'the 10th failure locks');
      assert.deepEqual(s.events, [['lockout.started', { subject: 'account', id: s.person, factor: 'password', lockouts: 1, seconds: 60 }]]);

      const verifiedBefore = s.verifiedCount();
      assert.deepEqual(await s.tryOnce(true), { status: 'locked', retryAfterSeconds: 60 }, 'the right password, refused');
      assert.equal(s.verifiedCount(), verifiedBefore, 'nothing is even verified while locked');
      assert.deepEqual(await s.tryOnce(true, 'totp'), { status: 'locked', retryAfterSeconds: 60 }, 'every factor of the account is locked');
      s.clock.t += 59_000;
      assert.deepEqual(await s.lockout.check(s.attempt()), { allowed: false, retryAfterSeconds: 1 });
      s.clock.t += 500;
      assert.deepEqual(await s.lockout.check(s.attempt()), { allowed: false, retryAfterSeconds: 1 }, 'rounded up, never 0 while locked');
      s.clock.t += 500;
      assert.deepEqual(await s.tryOnce(true), { status: 'ok' }, 'after 60 s the right password works again');
      assert.deepEqual(s.events[1], ['lockout.ended', { subject: 'account', id: s.person, lockouts: 1, reason: 'expired' }]);
      assert.equal(s.events.length, 2);
      await s.lockout.check(s.attempt());
      assert.equal(s.events.length, 2, 'the end is reported once');
    });

    test('repeated lockouts grow: 1 min, 5 min, 15 min, 1 h, then 1 h again', async () => {
      const s = await setup();
      for (const seconds of [60, 300, 900, 3600, 3600]) {
        const results = await s.fail(10);
        assert.ok(results.slice(0, 9).every((r) => r.status === 'failed'), `before the lockout of ${seconds} s`);
        assert.deepEqual(results[9], { status: 'locked', retryAfterSeconds: seconds });
        s.clock.t += seconds * 1000 - 1;
        assert.equal((await s.lockout.check(s.attempt())).allowed, false);
        s.clock.t += 1;
        assert.equal((await s.lockout.check(s.attempt())).allowed, true);
      }
      const started = s.events.filter(([n]) => n === 'lockout.started').map(([, d]) => [d.lockouts, d.seconds]);
      assert.deepEqual(started, [[1, 60], [2, 300], [3, 900], [4, 3600], [5, 3600]]);
      assert.equal(s.events.filter(([n]) => n === 'lockout.ended').length, 5);
    });

    test('the growth is forgotten a day after the last lockout ended', async () => {
      const s = await setup();
      await s.fail(10);
      s.clock.t += MIN;
      await s.fail(10);
      assert.deepEqual(await s.lockout.check(s.attempt()), { allowed: false, retryAfterSeconds: 300 });
      s.clock.t += 5 * MIN + 24 * 60 * MIN - 1;
      assert.equal((await s.fail(10))[9]!.status, 'locked');
      assert.deepEqual(await s.lockout.check(s.attempt()), { allowed: false, retryAfterSeconds: 900 }, 'within the day: still growing');
      s.clock.t += 15 * MIN + 24 * 60 * MIN;
      assert.deepEqual((await s.fail(10))[9], { status: 'locked', retryAfterSeconds: 60 }, 'a day later: back to 1 min');
    });

    test('a success resets the account counter of that factor', async () => {
      const s = await setup();
      await s.fail(9);
      assert.deepEqual(await s.tryOnce(true), { status: 'ok' });
      assert.ok((await s.fail(9)).every((r) => r.status === 'failed'), '9 more after a success do not lock');
      assert.equal((await s.tryOnce(false)).status, 'locked', 'the 10th consecutive does');
    });

    test('failures are counted per factor: password, TOTP and recovery codes in separate buckets', async () => {
      const s = await setup();
      await s.fail(9, 'password');
      await s.fail(9, 'totp');
      await s.fail(9, 'recovery');
      assert.deepEqual(await s.lockout.check(s.attempt()), { allowed: true }, '27 failures, but no bucket is full');
      // A right password does not wash away the wrong TOTP codes.
      assert.deepEqual(await s.tryOnce(true, 'password'), { status: 'ok' });
      assert.deepEqual(await s.tryOnce(false, 'totp'), { status: 'locked', retryAfterSeconds: 60 });
      assert.equal(s.events[0]![1].factor, 'totp');
      assert.equal((await s.tryOnce(true, 'password')).status, 'locked', 'a TOTP lockout also refuses the password');
    });

    test('an unknown account is throttled like a known one (by the name that was typed)', async () => {
      const s = await setup();
      const ghost = { factor: 'password' as const, account: `nobody-${randomBytes(4).toString('hex')}@example.org` };
      for (let i = 0; i < 9; i += 1) assert.equal((await s.lockout.recordFailure(ghost)).allowed, true);
      assert.deepEqual(await s.lockout.recordFailure(ghost), { allowed: false, retryAfterSeconds: 60 });
    });

    test('per client IP: spraying many accounts from one IP locks the IP, not the accounts', async () => {
      const s = await setup({ ip: { maxFailures: 5, windowSeconds: 3600 } });
      const ip = `203.0.113.${Math.floor(Math.random() * 250)}`;
      const victims = Array.from({ length: 5 }, (_, i) => `v${i}-${randomBytes(4).toString('hex')}@example.org`);
      for (const account of victims.slice(0, 4)) assert.equal((await s.lockout.recordFailure({ factor: 'password', account, ip })).allowed, true);
      assert.deepEqual(await s.lockout.recordFailure({ factor: 'password', account: victims[4]!, ip }), { allowed: false, retryAfterSeconds: 60 });
      assert.deepEqual(s.events.at(-1), ['lockout.started', { subject: 'ip', id: ip, factor: 'password', lockouts: 1, seconds: 60 }]);
      assert.equal((await s.lockout.check({ account: 'someone-else@example.org', ip })).allowed, false, 'anyone from that IP');
      assert.equal((await s.lockout.check({ account: victims[0]!, ip: '198.51.100.7' })).allowed, true, 'the accounts themselves are not locked');
      s.clock.t += MIN;
      assert.equal((await s.lockout.check({ account: victims[0]!, ip })).allowed, true);
    });

    test('an IP counter is not reset by a success (an own account does not wash an IP clean)', async () => {
      const s = await setup({ ip: { maxFailures: 3, windowSeconds: 3600 } });
      const ip = `192.0.2.${Math.floor(Math.random() * 250)}`;
      await s.lockout.recordFailure({ factor: 'password', account: 'a@example.org', ip });
      await s.lockout.recordFailure({ factor: 'password', account: 'b@example.org', ip });
      await s.lockout.recordSuccess({ factor: 'password', account: 'mine@example.org', ip });
      assert.equal((await s.lockout.recordFailure({ factor: 'password', account: 'c@example.org', ip })).allowed, false);
    });

    test('unlock ends a lockout at once and forgets the failures and growth', async () => {
      const s = await setup();
      await s.fail(10);
      assert.equal(await s.lockout.unlock({ account: s.person }), true);
      assert.deepEqual(s.events.at(-1), ['lockout.ended', { subject: 'account', id: s.person, lockouts: 1, reason: 'unlocked' }]);
      assert.deepEqual(await s.tryOnce(true), { status: 'ok' });
      assert.ok((await s.fail(9)).every((r) => r.status === 'failed'));
      assert.deepEqual(await s.tryOnce(false), { status: 'locked', retryAfterSeconds: 60 }, 'the growth starts over');
      assert.equal(await s.lockout.unlock({ account: `free-${randomBytes(4).toString('hex')}` }), false, 'nothing to unlock');
    });

    test('parallel failures: exactly one starts the lockout', async () => {
      const s = await setup();
      await Promise.all(Array.from({ length: 10 }, () => s.lockout.recordFailure(s.attempt())));
      assert.deepEqual(s.events.map(([n, d]) => [n, d.lockouts]), [['lockout.started', 1]]);
      assert.deepEqual(await s.lockout.check(s.attempt()), { allowed: false, retryAfterSeconds: 60 });
      s.clock.t += MIN;
      await Promise.all([s.lockout.check(s.attempt()), s.lockout.check(s.attempt()), s.lockout.check(s.attempt())]);
      assert.equal(s.events.filter(([n]) => n === 'lockout.ended').length, 1, 'its end is reported once');
    });

    test('limits are checked: at most 100 failures (NIST), a sane schedule', () => {
      assert.throws(() => new Lockout(getStore(), { account: { maxFailures: 101, windowSeconds: 60 } }), RangeError);
      assert.throws(() => new Lockout(getStore(), { schedule: [] }), RangeError);
      assert.throws(() => new Lockout(getStore(), { schedule: [60, 0.5] }), RangeError);
    });
  });
}

describe('lockout', () => {
  const memory = new MemoryStore();
  after(() => memory.close());
  suite('on the embedded store', () => memory);
  suite('on the embedded store, with the cache of a server', () => memory, true);

  let redis: TestRedis;
  let store: RedisStore;
  useRedisStore((setup) => ({ redis, store } = setup));
  suite('on Redis', () => store);
  suite('on Redis, with the cache of a server', () => store, true);

  /** Two servers' lockouts on the one Redis, each with its cache and change subscription (as `createApp` sets them up). */
  async function twoServers() {
    const nodeA = new Lockout(store);
    const storeB = new RedisStore(connectRedis(redis.url, 1000));
    const nodeB = new Lockout(storeB);
    const stopA = await Lockout.watch(store, [nodeA]);
    const stopB = await Lockout.watch(storeB, [nodeB]);
    return {
      nodeA,
      nodeB,
      close: async () => {
        await stopA();
        await stopB();
        await storeB.close();
      },
    };
  }

  test('on Redis, a lockout started by one server reaches the cache of another', async () => {
    const account = `cached-${randomBytes(4).toString('hex')}@example.org`;
    const { nodeA, nodeB, close } = await twoServers();
    try {
      assert.equal(nodeB.knownUnlocked({ account, ip: '192.0.2.7' }), false, 'nothing in memory before the first check');
      assert.deepEqual(await nodeB.check({ account, ip: '192.0.2.7' }), { allowed: true }, 'B now holds "not locked" in memory');
      assert.equal(nodeB.knownUnlocked({ account, ip: '192.0.2.7' }), true, 'and says so without a promise');
      assert.equal(nodeB.knownUnlocked({ account, ip: '192.0.2.8' }), false, 'for those subjects only');
      for (let i = 0; i < 9; i += 1) await nodeA.recordFailure({ factor: 'password', account });
      assert.deepEqual(await nodeB.check({ account }), { allowed: true }, 'failures short of a lockout change nothing');
      assert.equal((await nodeA.recordFailure({ factor: 'password', account })).allowed, false, 'A starts the lockout');
      // The announcement travels over pub/sub; B is told within moments (bounded wait, no fixed sleep).
      const deadline = Date.now() + 2000;
      while ((await nodeB.check({ account })).allowed && Date.now() < deadline) await new Promise((r) => setImmediate(r));
      assert.equal((await nodeB.check({ account })).allowed, false, 'B refuses once told');
      assert.equal(nodeB.knownUnlocked({ account, ip: '192.0.2.7' }), false, 'and no longer answers from memory');
    } finally {
      await close();
    }
  });

  test('on Redis, lock records read ahead with a sign-in post: only those memory does not answer; one read before a lockout was announced is not kept as "not locked"', async () => {
    const account = `ahead-${randomBytes(4).toString('hex')}@example.org`;
    const ip = '192.0.2.9';
    const subject = `account-${digest(account)}`;
    const lockout = new Lockout(store);
    const stop = await Lockout.watch(store, [lockout]);
    const otherServer = new RedisStore(connectRedis(redis.url, 1000));
    await otherServer.ready(5000);
    try {
      const toRead = lockout.recordKeysToRead({ account, ip });
      assert.deepEqual(toRead, [keys.lockout(subject), keys.lockout(`ip-${digest(ip)}`)], 'nothing known yet: both');
      const verdict = await withReadAhead(async () => {
        store.readAhead(toRead);
        // Another server locks the account, and its announcement arrives, after the read and before the check.
        await otherServer.set(keys.lockout(subject), JSON.stringify({ until: Date.now() + MIN, lockouts: 1 }), { ttl: 120 });
        lockout.forget(subject);
        return lockout.check({ account, ip });
      });
      assert.deepEqual(verdict, { allowed: true }, 'the answer as read, a moment before the lockout');
      assert.equal(lockout.knownUnlocked({ account }), false, 'but not remembered as "not locked"');
      assert.equal((await lockout.check({ account, ip })).allowed, false, 'the next attempt is refused');
      assert.deepEqual(lockout.recordKeysToRead({ account, ip }), [keys.lockout(subject)], 'the IP, known unlocked, is not read again');
    } finally {
      await stop();
      await otherServer.close();
    }
  });

  test('on Redis, a right answer resets a counter this server knows is clean without a write, and resets it again once a failure anywhere was announced', async () => {
    const account = `clean-${randomBytes(4).toString('hex')}@example.org`;
    const counter = `lk:failures:password:account:account-${digest(account)}`;
    const { nodeA, nodeB, close } = await twoServers();
    try {
      await nodeA.recordSuccess({ factor: 'password', account });
      // A count written behind A's back, with no announcement: A's next success does not touch storage.
      await store.client.set(counter, '1', 'EX', 60);
      await nodeA.recordSuccess({ factor: 'password', account });
      assert.equal(await store.client.get(counter), '1', 'a success after a success sends no DEL');
      await store.client.del(counter);
      // B counts failures and announces them: A's next success resets the count again.
      for (let i = 0; i < 3; i += 1) await nodeB.recordFailure({ factor: 'password', account, ip: '192.0.2.9' });
      assert.equal(Number(await store.client.get(counter)), 3);
      const deadline = Date.now() + 2000;
      while (Date.now() < deadline) {
        await nodeA.recordSuccess({ factor: 'password', account });
        if ((await store.client.exists(counter)) === 0) break;
        await new Promise((r) => setImmediate(r));
      }
      assert.equal(await store.client.exists(counter), 0, 'the failures B announced are reset by A');
      // And every failure still counts towards a lockout, whichever server saw it.
      for (let i = 0; i < 9; i += 1) await (i % 2 ? nodeA : nodeB).recordFailure({ factor: 'password', account });
      assert.equal((await nodeB.recordFailure({ factor: 'password', account })).allowed, false, 'the 10th failure locks');
    } finally {
      await close();
    }
  });

  test('on Redis, "not locked" is answered from memory, and for at most 30 s should an announcement be lost', async () => {
    const clock = { t: 1_800_000_000_000 };
    const lockout = new Lockout(store, { now: () => clock.t });
    const stop = await Lockout.watch(store, [lockout]);
    try {
      const account = `missed-${randomBytes(4).toString('hex')}@example.org`;
      assert.deepEqual(await lockout.check({ account }), { allowed: true });
      // A lock record written behind the cache's back, as if its announcement had been lost.
      const record = { until: clock.t + 3600_000, lockouts: 1 };
      await store.set(keys.lockout(`account-${digest(account)}`), JSON.stringify(record), { ttl: 3600 });
      assert.deepEqual(await lockout.check({ account }), { allowed: true }, 'answered from memory: no storage read');
      assert.equal(lockout.knownUnlocked({ account }), true);
      clock.t += 30_000;
      assert.equal(lockout.knownUnlocked({ account }), false, 'after 30 s memory alone does not answer');
      assert.equal((await lockout.check({ account })).allowed, false, 'after 30 s storage is asked again');
    } finally {
      await stop();
    }
  });

  test('on Redis, failures are counted in Redis: another node (another Lockout) sees them', async () => {
    const account = `shared-${randomBytes(4).toString('hex')}@example.org`;
    const nodeA = new Lockout(store);
    const nodeB = new Lockout(new RedisStore(store.client));
    // This account's own keys, by their exact names: the counter (rate-limiter-flexible's `prefix:key`) and the lock.
    const subject = `account-${digest(account)}`;
    const counter = `lk:failures:password:account:${subject}`;
    for (let i = 0; i < 9; i += 1) await (i % 2 ? nodeA : nodeB).recordFailure({ factor: 'password', account });
    assert.equal(Number(await store.client.get(counter)), 9, 'the failures of both nodes, counted in one Redis key');
    assert.ok((await store.client.ttl(counter)) > 0, 'the counter has a TTL');
    assert.equal((await nodeA.recordFailure({ factor: 'password', account })).allowed, false);
    assert.equal((await nodeB.check({ account })).allowed, false);
    const lock = JSON.parse((await store.client.get(`lk:lockout:${subject}`)) ?? 'null') as { until: number } | null;
    assert.ok(lock && lock.until > Date.now(), 'the lock record is in Redis');
    assert.ok((await store.client.ttl(`lk:lockout:${subject}`)) > 0, 'the lock has a TTL');
    assert.equal(await store.client.exists(counter), 0, 'the next run of failures starts from zero');
    assert.ok(!(await store.client.keys('*')).some((k) => k.includes(account)), 'no email in a key name');
  });

  test('on Redis, a failure window really expires (rate-limiter-flexible TTL, 1 s)', async () => {
    const lockout = new Lockout(store, { account: { maxFailures: 3, windowSeconds: 1 } });
    const account = `window-${randomBytes(4).toString('hex')}`;
    await lockout.recordFailure({ factor: 'totp', account });
    await lockout.recordFailure({ factor: 'totp', account });
    assert.equal(Number(await store.client.get(`lk:failures:totp:account:account-${digest(account)}`)), 2);
    await new Promise((r) => setTimeout(r, 1100)); // the only wait: Redis' own expiry of the window
    assert.equal((await lockout.recordFailure({ factor: 'totp', account })).allowed, true, 'the earlier two were forgotten');
  });

  test('when Redis is unreachable: StorageUnavailable (fail closed, never a silent pass)', async () => {
    const port = await freePort();
    const away = new RedisStore(connectRedis(`redis://127.0.0.1:${port}`, 200));
    try {
      const lockout = new Lockout(away);
      await assert.rejects(lockout.check({ account: 'x' }), StorageUnavailable);
      await assert.rejects(lockout.recordFailure({ factor: 'password', account: 'x' }), StorageUnavailable);
      await assert.rejects(lockout.attempt({ factor: 'password', account: 'x' }, async () => true), StorageUnavailable);
    } finally {
      await away.close();
    }
  });
});
