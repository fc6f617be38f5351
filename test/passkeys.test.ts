import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Accounts } from '../src/accounts/accounts.ts';
import { Passkeys, parseCredentialResponse } from '../src/accounts/passkeys.ts';
import { SecondFactor } from '../src/accounts/second-factor.ts';
import { SecretBox } from '../src/security/secret-box.ts';
import { keys } from '../src/storage/keys.ts';
import { MemoryStore } from '../src/storage/memory-store.ts';
import { connectCluster, connectRedis, RedisStore } from '../src/storage/redis-store.ts';
import type { Store } from '../src/storage/store.ts';
import { startRedisCluster, type TestCluster } from './helpers/redis-cluster.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { SoftAuthenticator } from './helpers/soft-authenticator.ts';

/**
 * Passkey storage and verification (src/accounts/passkeys.ts) with a software authenticator, on the
 * embedded store, one Redis and a 3-master Redis Cluster: registration, passwordless and second-factor
 * assertions, single-use challenges bound to their interaction, RP id and origin, the signature
 * counter, the credential index, removal.
 */
const ORIGIN = 'https://login.example';
const RP_ID = 'login.example';

function suite(name: string, open: () => Promise<{ store: Store; dispose: () => Promise<void> }>) {
  describe(name, () => {
    let store: Store;
    let dispose: () => Promise<void>;
    let accounts: Accounts;
    let passkeys: Passkeys;
    let n = 0;

    before(async () => {
      ({ store, dispose } = await open());
      accounts = new Accounts(store);
      passkeys = new Passkeys({ store, accounts, rpId: RP_ID, rpName: RP_ID, origins: [ORIGIN] });
    });
    after(() => dispose());

    async function personWithPasskey(device = new SoftAuthenticator({ origin: ORIGIN })) {
      n += 1;
      const account = await accounts.create({ email: `p${n}-${Date.now()}@example.org`, password: 'correct horse battery staple' });
      const scope = `enroll-${n}`;
      const registered = await passkeys.register(account.id, scope, device.create(await passkeys.registrationOptions(account, scope)), 'My laptop');
      assert.ok(registered.ok, JSON.stringify(registered));
      return { account, device, passkey: registered.passkey };
    }

    test('registers a passkey: stored on the account, found from its credential id in one lookup', async () => {
      const { account, passkey } = await personWithPasskey();
      const stored = (await accounts.find(account.id))!.passkeys!;
      assert.equal(stored.length, 1);
      assert.equal(stored[0]!.name, 'My laptop');
      assert.equal(stored[0]!.counter, 1);
      assert.equal(await store.get(keys.passkeyCredential(passkey.id)), account.id);
      assert.equal((await passkeys.ownerOf(passkey.id))?.id, account.id);
    });

    test('signs in without a password with user verification; the counter moves on', async () => {
      const { account, device, passkey } = await personWithPasskey();
      const used = await passkeys.authenticate('signin-a', device.get(await passkeys.authenticationOptions('signin-a')), { requireUserVerification: true });
      assert.ok(used.ok, JSON.stringify(used));
      assert.equal(used.account.id, account.id);
      assert.equal(used.userVerified, true);
      const stored = (await accounts.find(account.id))!.passkeys!.find((p) => p.id === passkey.id)!;
      assert.equal(stored.counter, 2);
      assert.ok(stored.lastUsedAt);
    });

    test('a challenge works once, and only for the interaction it was issued to', async () => {
      const { device } = await personWithPasskey();
      const options = await passkeys.authenticationOptions('signin-b');
      const response = device.get(options);
      assert.deepEqual(await passkeys.authenticate('signin-other', response, { requireUserVerification: true }), { ok: false, reason: 'challenge' }, 'another interaction');
      assert.ok((await passkeys.authenticate('signin-b', response, { requireUserVerification: true })).ok);
      assert.deepEqual(await passkeys.authenticate('signin-b', response, { requireUserVerification: true }), { ok: false, reason: 'challenge' }, 'replayed');
    });

    test('a challenge is used up by a failed attempt too', async () => {
      const { device } = await personWithPasskey();
      const options = await passkeys.authenticationOptions('signin-c');
      const bad = device.get(options, { origin: 'https://evil.example' });
      assert.deepEqual(await passkeys.authenticate('signin-c', bad, { requireUserVerification: true }), { ok: false, reason: 'invalid' });
      assert.deepEqual(await passkeys.authenticate('signin-c', device.get(options), { requireUserVerification: true }), { ok: false, reason: 'challenge' });
    });

    test('another origin (another port) and another RP id are refused', async () => {
      const { device } = await personWithPasskey();
      const o1 = await passkeys.authenticationOptions('signin-d');
      assert.deepEqual(await passkeys.authenticate('signin-d', device.get(o1, { origin: 'https://login.example:8443' }), { requireUserVerification: true }), { ok: false, reason: 'invalid' });
      const o2 = await passkeys.authenticationOptions('signin-d');
      assert.deepEqual(await passkeys.authenticate('signin-d', device.get({ ...o2, rpId: 'evil.example' }), { requireUserVerification: true }), { ok: false, reason: 'invalid' });
    });

    test('without user verification: refused for a passwordless sign-in, accepted as a second factor', async () => {
      const { account, device } = await personWithPasskey(new SoftAuthenticator({ origin: ORIGIN, userVerification: false }));
      const o1 = await passkeys.authenticationOptions('signin-e');
      assert.deepEqual(await passkeys.authenticate('signin-e', device.get(o1), { requireUserVerification: true }), { ok: false, reason: 'not-verified' });
      const o2 = await passkeys.authenticationOptions('signin-e', (await accounts.find(account.id)));
      assert.deepEqual(o2.allowCredentials?.map((c) => c.id), [...device.keys.keys()]);
      const used = await passkeys.authenticate('signin-e', device.get(o2), { accountId: account.id, requireUserVerification: false });
      assert.ok(used.ok && used.userVerified === false);
    });

    test("as a second factor, another account's passkey does not count", async () => {
      const { device } = await personWithPasskey();
      const { account: other } = await personWithPasskey();
      const options = await passkeys.authenticationOptions('signin-f');
      assert.deepEqual(await passkeys.authenticate('signin-f', device.get(options), { accountId: other.id, requireUserVerification: false }), { ok: false, reason: 'unknown' });
    });

    test('a signature counter that goes backwards is refused; an authenticator without one (0) is fine', async () => {
      const { device } = await personWithPasskey();
      const o1 = await passkeys.authenticationOptions('signin-g');
      assert.ok((await passkeys.authenticate('signin-g', device.get(o1, { counter: 10 }), { requireUserVerification: true })).ok);
      const o2 = await passkeys.authenticationOptions('signin-g');
      assert.deepEqual(await passkeys.authenticate('signin-g', device.get(o2, { counter: 5 }), { requireUserVerification: true }), { ok: false, reason: 'counter' });

      const { device: noCounter } = await personWithPasskey(new SoftAuthenticator({ origin: ORIGIN, counts: false }));
      for (let i = 0; i < 2; i += 1) {
        const o = await passkeys.authenticationOptions('signin-g');
        assert.ok((await passkeys.authenticate('signin-g', noCounter.get(o), { requireUserVerification: true })).ok, `use ${i + 1} with counter 0`);
      }
    });

    test('a removed passkey is refused, and its index entry is gone', async () => {
      const { account, device, passkey } = await personWithPasskey();
      assert.equal((await passkeys.remove(account.id, passkey.id)).length, 1);
      assert.equal(await store.get(keys.passkeyCredential(passkey.id)), null);
      assert.equal((await accounts.find(account.id))!.passkeys, undefined);
      const options = await passkeys.authenticationOptions('signin-h');
      assert.deepEqual(await passkeys.authenticate('signin-h', device.get(options), { requireUserVerification: true }), { ok: false, reason: 'unregistered' }, 'no account holds it: the sign-in page tells the device to forget it');
    });

    test('renames, keeping the name short and printable', async () => {
      const { account, passkey } = await personWithPasskey();
      const renamed = await passkeys.rename(account.id, passkey.id, `  Work\u0000 key ${'x'.repeat(100)}`);
      assert.equal(renamed.name, `Work key ${'x'.repeat(51)}`);
    });

    test('a credential id registers once', async () => {
      const { account, device } = await personWithPasskey();
      const options = await passkeys.registrationOptions((await accounts.find(account.id))!, 'enroll-again');
      const response = device.create(options);
      const [id] = [...device.keys.keys()].slice(-1);
      await store.set(keys.passkeyCredential(id!), 'someone-else');
      assert.deepEqual(await passkeys.register(account.id, 'enroll-again', response, 'dup'), { ok: false, reason: 'exists' });
    });

    test('recovery codes come with the first factor, a passkey; reset-mfa removes passkeys and codes', async () => {
      const { account, passkey } = await personWithPasskey();
      const factor = new SecondFactor({ store, accounts, box: new SecretBox(Buffer.alloc(32, 7)), issuer: RP_ID });
      const codes = await factor.issueRecoveryCodesIfNone(account.id);
      assert.equal(codes.length, 10);
      assert.deepEqual(await factor.issueRecoveryCodesIfNone(account.id), [], 'issued once');
      assert.ok((await factor.verifySecondFactor(account.id, { recoveryCode: codes[0]! })).ok, 'a recovery code of a passkey-only account works');
      assert.equal(await factor.resetMfa(account.id), true);
      const after = (await accounts.find(account.id))!;
      assert.equal(after.passkeys, undefined);
      assert.equal(after.recovery, undefined);
      assert.equal(await store.get(keys.passkeyCredential(passkey.id)), null);
    });

    test('malformed responses are refused without a throw', () => {
      for (const text of [undefined, '', 'x', '{}', '{"id":"a b","type":"public-key","response":{}}', JSON.stringify({ id: 'abc', type: 'other', response: {} }), 'a'.repeat(20_000)]) {
        assert.equal(parseCredentialResponse(text), undefined, String(text).slice(0, 40));
      }
    });
  });
}

suite('Passkeys on the embedded store', async () => ({ store: new MemoryStore(), dispose: async () => {} }));

let redis: TestRedis | undefined;
suite('Passkeys on Redis', async () => {
  redis = await startRedis();
  const store = new RedisStore(connectRedis(redis.url, 1000));
  await store.ready(5000);
  return { store, dispose: async () => { await store.close(); await redis?.dispose(); } };
});

let cluster: TestCluster | undefined;
suite('Passkeys on a 3-master Redis Cluster', async () => {
  cluster = await startRedisCluster();
  const store = new RedisStore(connectCluster(cluster.ports.map((port) => ({ host: '127.0.0.1', port })), 1000));
  await store.ready(5000);
  return { store, dispose: async () => { await store.close(); await cluster?.dispose(); } };
});
