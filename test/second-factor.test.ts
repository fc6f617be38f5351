/**
 * The second factor of an account: enrollment only after a right code, TOTP sign-in codes accepted
 * once, recovery codes single use and regenerated as a set, secrets encrypted at rest. One suite body,
 * run on the embedded store and on a real Redis (where "two parallel submissions, one success" counts).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Accounts } from '../src/accounts/accounts.ts';
import { generateRecoveryCodes, normalizeRecoveryCode, RECOVERY_CODE_COUNT } from '../src/accounts/recovery-codes.ts';
import { SecondFactor } from '../src/accounts/second-factor.ts';
import { totpCodeAt } from '../src/accounts/totp.ts';
import { SecretBox } from '../src/security/secret-box.ts';
import { keys } from '../src/storage/keys.ts';
import { MemoryStore } from '../src/storage/memory-store.ts';
import type { RedisStore } from '../src/storage/redis-store.ts';
import type { Store } from '../src/storage/store.ts';
import { useRedisStore } from './helpers/redis.ts';

const STEP_START = 1_800_000_000_000 - (1_800_000_000_000 % 30_000);

describe('recovery codes', () => {
  test('10 codes of 10 characters from an unambiguous alphabet, all different', () => {
    const codes = generateRecoveryCodes();
    assert.equal(codes.length, RECOVERY_CODE_COUNT);
    assert.equal(RECOVERY_CODE_COUNT, 10);
    for (const code of codes) assert.match(code, /^[0-9a-hjkmnp-tv-z]{5}-[0-9a-hjkmnp-tv-z]{5}$/);
    assert.equal(new Set(codes).size, codes.length);
    const many = new Set(Array.from({ length: 200 }, () => generateRecoveryCodes()).flat());
    assert.equal(many.size, 2000, 'no repeats in 2000 codes (50 bits each)');
  });

  test('what people type is forgiven: case, spaces, dashes, look-alike letters', () => {
    assert.equal(normalizeRecoveryCode('ABCDE-FGH0J'), 'abcdefgh0j');
    assert.equal(normalizeRecoveryCode(' abcde fgh0j '), 'abcdefgh0j');
    assert.equal(normalizeRecoveryCode('abcdefghOj'), 'abcdefgh0j', 'O is 0');
    assert.equal(normalizeRecoveryCode('abcdefghIL'), 'abcdefgh11', 'I and L are 1');
    assert.equal(normalizeRecoveryCode('abcde-fgh0'), undefined, 'too short');
    assert.equal(normalizeRecoveryCode('abcde-fgh0ju'), undefined, 'too long');
    assert.equal(normalizeRecoveryCode('abcde-fgh0u'), undefined, 'u is not in the alphabet');
  });
});

function suite(name: string, getStore: () => Store) {
  describe(name, () => {
    const clock = { t: STEP_START };
    let accounts: Accounts;
    let factor: SecondFactor;

    before(() => {
      accounts = new Accounts(getStore());
      factor = new SecondFactor({ store: getStore(), accounts, box: new SecretBox(randomBytes(32)), issuer: 'id.example.com', now: () => clock.t });
    });

    async function person() {
      return accounts.create({ email: `p-${randomBytes(6).toString('hex')}@example.org`, password: 'correct horse battery staple' });
    }

    /** An enrolled account, its secret and its recovery codes; the clock moves on a step after enrolling. */
    async function enrolled() {
      const account = await person();
      const started = await factor.startEnrollment(account);
      const secret = started.secret.replaceAll(' ', '');
      const result = await factor.enroll(account.id, started.pending, await totpCodeAt(secret, clock.t));
      assert.ok(result.ok);
      clock.t += 30_000;
      return { account, secret, recoveryCodes: result.recoveryCodes };
    }

    test('enrollment: QR code and key shown; a wrong code does not enroll; the right one does, once', async () => {
      const account = await person();
      const started = await factor.startEnrollment(account);
      assert.match(started.qrSvg, /^<svg/);
      assert.equal(new URL(started.uri).searchParams.get('issuer'), 'id.example.com');
      assert.ok(decodeURIComponent(started.uri).includes(account.email));
      const secret = started.secret.replaceAll(' ', '');
      assert.ok(!started.pending.includes(secret), 'the pending enrollment is sealed');

      const right = await totpCodeAt(secret, clock.t);
      const wrong = String((Number(right) + 1) % 1_000_000).padStart(6, '0');
      assert.deepEqual(await factor.enroll(account.id, started.pending, wrong), { ok: false, reason: 'invalid' });
      assert.equal((await accounts.find(account.id))!.mfa, undefined, 'a wrong code enrolls nothing');
      assert.deepEqual(await factor.verifySecondFactor(account.id, { totp: right }), { ok: false, reason: 'not-enrolled' });

      const result = await factor.enroll(account.id, started.pending, right);
      assert.ok(result.ok);
      assert.equal(result.recoveryCodes.length, 10);
      const stored = (await accounts.find(account.id))!;
      assert.ok(SecondFactor.isEnrolled(stored));
      assert.equal(stored.mfa.enrolledAt, clock.t);
      assert.equal(await factor.recoveryCodesLeft(stored), 10);

      // Nothing readable at rest: not the secret, not a recovery code.
      const raw = (await getStore().get(keys.account(account.id)))!;
      assert.ok(!raw.includes(secret), 'the TOTP secret is not stored in clear');
      const digests = await getStore().setMembers(keys.recoveryCodes(account.id, stored.mfa.recovery!.generation));
      assert.equal(digests.length, 10);
      for (const code of result.recoveryCodes) {
        assert.ok(!raw.includes(code) && !raw.includes(normalizeRecoveryCode(code)!));
        assert.ok(!digests.some((d) => d.includes(normalizeRecoveryCode(code)!)));
      }

      await assert.rejects(factor.enroll(account.id, started.pending, right), /already has a second factor/);
      assert.deepEqual(await factor.enroll(account.id, started.pending, right, { replace: true }), { ok: false, reason: 'replayed' }, 'a pending enrollment activates once');
      assert.deepEqual(await factor.verifySecondFactor(account.id, { totp: right }), { ok: false, reason: 'replayed' }, 'the enrollment code cannot also sign in');
      clock.t += 30_000;
      assert.deepEqual(await factor.verifySecondFactor(account.id, { totp: await totpCodeAt(secret, clock.t) }), { ok: true, method: 'totp' });
    });

    test('enrollment: a pending value expires, and belongs to its account only', async () => {
      const account = await person();
      const other = await person();
      const started = await factor.startEnrollment(account);
      const code = await totpCodeAt(started.secret.replaceAll(' ', ''), clock.t);
      assert.deepEqual(await factor.enroll(other.id, started.pending, code), { ok: false, reason: 'expired' }, 'sealed for another account');
      assert.deepEqual(await factor.enroll(account.id, 'garbage', code), { ok: false, reason: 'expired' });
      clock.t += 15 * 60 * 1000;
      assert.deepEqual(await factor.enroll(account.id, started.pending, await totpCodeAt(started.secret.replaceAll(' ', ''), clock.t)), { ok: false, reason: 'expired' });
    });

    test('enrolling over an existing factor needs `replace`; replacing keeps the account on the new secret only', async () => {
      const { account, secret: oldSecret, recoveryCodes: oldCodes } = await enrolled();
      const started = await factor.startEnrollment(account);
      const newSecret = started.secret.replaceAll(' ', '');
      // The person just proved the old factor with this step's code...
      assert.equal((await factor.verifySecondFactor(account.id, { totp: await totpCodeAt(oldSecret, clock.t) })).ok, true);
      await assert.rejects(factor.enroll(account.id, started.pending, await totpCodeAt(newSecret, clock.t)), /already has a second factor/);
      // ...and the new app's code of the same step still activates the replacement.
      const replaced = await factor.enroll(account.id, started.pending, await totpCodeAt(newSecret, clock.t), { replace: true });
      assert.ok(replaced.ok);
      clock.t += 30_000;
      assert.deepEqual(await factor.verifySecondFactor(account.id, { totp: await totpCodeAt(oldSecret, clock.t) }), { ok: false, reason: 'invalid' });
      assert.equal((await factor.verifySecondFactor(account.id, { totp: await totpCodeAt(newSecret, clock.t) })).ok, true);
      assert.deepEqual(await factor.verifySecondFactor(account.id, { recoveryCode: oldCodes[0]! }), { ok: false, reason: 'invalid' }, 'old recovery codes died with the old factor');
      assert.equal((await factor.verifySecondFactor(account.id, { recoveryCode: replaced.recoveryCodes[0]! })).ok, true);
    });

    test('TOTP sign-in: accepted once, older steps refused after', async () => {
      const { account, secret } = await enrolled();
      const code = await totpCodeAt(secret, clock.t);
      assert.deepEqual(await factor.verifySecondFactor(account.id, { totp: code }), { ok: true, method: 'totp' });
      assert.deepEqual(await factor.verifySecondFactor(account.id, { totp: code }), { ok: false, reason: 'replayed' });
      assert.deepEqual(await factor.verifySecondFactor(account.id, { totp: await totpCodeAt(secret, clock.t - 30_000) }), { ok: false, reason: 'replayed' });
      assert.deepEqual(await factor.verifySecondFactor(account.id, { totp: '000000' === code ? '000001' : '000000' }), { ok: false, reason: 'invalid' });
    });

    test('recovery codes: each works once; what is typed is forgiven; unknown codes fail', async () => {
      const { account, recoveryCodes } = await enrolled();
      assert.deepEqual(await factor.verifySecondFactor(account.id, { recoveryCode: recoveryCodes[3]! }), { ok: true, method: 'recovery', recoveryCodesLeft: 9 });
      assert.deepEqual(await factor.verifySecondFactor(account.id, { recoveryCode: recoveryCodes[3]! }), { ok: false, reason: 'invalid' }, 'the second use');
      assert.deepEqual(await factor.verifySecondFactor(account.id, { recoveryCode: ` ${recoveryCodes[4]!.toUpperCase().replace('-', ' ')} ` }), { ok: true, method: 'recovery', recoveryCodesLeft: 8 });
      assert.deepEqual(await factor.verifySecondFactor(account.id, { recoveryCode: generateRecoveryCodes(1)[0]! }), { ok: false, reason: 'invalid' });
      assert.deepEqual(await factor.verifySecondFactor(account.id, { recoveryCode: 'nonsense' }), { ok: false, reason: 'invalid' });
      const other = await enrolled();
      assert.deepEqual(await factor.verifySecondFactor(account.id, { recoveryCode: other.recoveryCodes[0]! }), { ok: false, reason: 'invalid' }, "another account's code");
      assert.equal(await factor.recoveryCodesLeft((await accounts.find(account.id))!), 8);
    });

    test('regenerating recovery codes invalidates the whole old set', async () => {
      const { account, recoveryCodes: old } = await enrolled();
      assert.equal((await factor.verifySecondFactor(account.id, { recoveryCode: old[0]! })).ok, true);
      const before = (await accounts.find(account.id))!.mfa!.recovery!;
      const fresh = await factor.regenerateRecoveryCodes(account.id);
      assert.equal(fresh.length, 10);
      assert.equal(fresh.filter((c) => old.includes(c)).length, 0);
      for (const code of old) assert.deepEqual(await factor.verifySecondFactor(account.id, { recoveryCode: code }), { ok: false, reason: 'invalid' });
      assert.deepEqual(await getStore().setMembers(keys.recoveryCodes(account.id, before.generation)), [], 'the old set is deleted');
      assert.equal(await factor.recoveryCodesLeft((await accounts.find(account.id))!), 10);
      assert.equal((await factor.verifySecondFactor(account.id, { recoveryCode: fresh[9]! })).ok, true);
      await assert.rejects(factor.regenerateRecoveryCodes((await person()).id), /no second factor/);
    });

    test('resetMfa removes the factor and its codes; the person enrolls again', async () => {
      const { account, secret, recoveryCodes } = await enrolled();
      const generation = (await accounts.find(account.id))!.mfa!.recovery!.generation;
      assert.equal(await factor.resetMfa(account.id), true);
      assert.equal(await factor.resetMfa(account.id), false, 'nothing left to reset');
      assert.equal((await accounts.find(account.id))!.mfa, undefined);
      assert.deepEqual(await getStore().setMembers(keys.recoveryCodes(account.id, generation)), []);
      assert.deepEqual(await factor.verifySecondFactor(account.id, { totp: await totpCodeAt(secret, clock.t) }), { ok: false, reason: 'not-enrolled' });
      assert.deepEqual(await factor.verifySecondFactor(account.id, { recoveryCode: recoveryCodes[0]! }), { ok: false, reason: 'not-enrolled' });
      const again = await factor.startEnrollment(account);
      assert.ok((await factor.enroll(account.id, again.pending, await totpCodeAt(again.secret.replaceAll(' ', ''), clock.t))).ok);
    });

    test('deleting an account deletes its second-factor records', async () => {
      const { account } = await enrolled();
      await factor.verifySecondFactor(account.id, { totp: '123456' });
      const generation = (await accounts.find(account.id))!.mfa!.recovery!.generation;
      await accounts.delete(account.id);
      assert.deepEqual(await getStore().setMembers(keys.recoveryCodes(account.id, generation)), []);
      assert.equal(await getStore().get(keys.totpLastStep(account.id)), null);
    });

    test('two parallel submissions of the same TOTP code: exactly one success', async () => {
      for (let round = 0; round < 5; round += 1) {
        const { account, secret } = await enrolled();
        const code = await totpCodeAt(secret, clock.t);
        const results = await Promise.all([
          factor.verifySecondFactor(account.id, { totp: code }),
          factor.verifySecondFactor(account.id, { totp: code }),
        ]);
        assert.equal(results.filter((r) => r.ok).length, 1, JSON.stringify(results));
      }
    });

    test('two parallel uses of one recovery code: exactly one success', async () => {
      const { account, recoveryCodes } = await enrolled();
      for (const code of recoveryCodes.slice(0, 5)) {
        const results = await Promise.all([
          factor.verifySecondFactor(account.id, { recoveryCode: code }),
          factor.verifySecondFactor(account.id, { recoveryCode: code }),
        ]);
        assert.equal(results.filter((r) => r.ok).length, 1, JSON.stringify(results));
      }
      assert.equal(await factor.recoveryCodesLeft((await accounts.find(account.id))!), 5);
    });

    test('two parallel activations of one pending enrollment: one success', async () => {
      const account = await person();
      const started = await factor.startEnrollment(account);
      const code = await totpCodeAt(started.secret.replaceAll(' ', ''), clock.t);
      const results = await Promise.all([factor.enroll(account.id, started.pending, code), factor.enroll(account.id, started.pending, code)]);
      assert.equal(results.filter((r) => r.ok).length, 1, JSON.stringify(results));
    });
  });
}

describe('second factor', () => {
  const memory = new MemoryStore();
  after(() => memory.close());
  suite('on the embedded store', () => memory);

  let store: RedisStore;
  useRedisStore((setup) => ({ store } = setup));
  suite('on Redis (integration)', () => store);
});
