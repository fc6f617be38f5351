import type { Account } from '../../accounts/accounts.ts';
import type { SecondFactor } from '../../accounts/second-factor.ts';
import type { Factor, Report } from './factor.ts';

type Who = Pick<Account, 'id' | 'email'>;

/** A failed second-factor code (TOTP, recovery code, enrolment), as every one of them reports it. */
export function codeRefused(method: 'totp' | 'recovery' | 'enroll', account: Who, reason: string): Report {
  return {
    metric: { counter: 'secondFactorFailures', labels: { method, reason } },
    // The method as audit events name it (`recovery_code`); metrics keep their shorter label (`recovery`).
    audit: { event: 'second_factor_failed', fields: { accountId: account.id, method: method === 'recovery' ? 'recovery_code' : method, reason }, msg: 'second factor refused' },
  };
}

/** A code from the authenticator app of an enrolled account, accepted once (its time step is remembered). */
export function totpFactor(secondFactor: SecondFactor): Factor<{ account: Who; code: string }, { recoveryCodesLeft?: number }> {
  return {
    name: 'totp',
    subject: ({ account }) => ({ key: account.email }),
    async verify({ account, code }) {
      const verified = await secondFactor.verifySecondFactor(account.id, { totp: code });
      if (!verified.ok) return verified;
      return { ok: true, ...(verified.recoveryCodesLeft !== undefined ? { recoveryCodesLeft: verified.recoveryCodesLeft } : {}) };
    },
    succeeded: ({ recoveryCodesLeft }, { account }) => ({
      audit: { event: 'second_factor_succeeded', fields: { accountId: account.id, method: 'totp', ...(recoveryCodesLeft !== undefined ? { recoveryCodesLeft } : {}) }, msg: 'second factor accepted' },
    }),
    failed: (reason, { account }) => codeRefused('totp', account, reason),
  };
}

export type TotpEnrolment = { account: Who; pending: string; code: string; replace?: boolean };

/** Activates a pending enrolment with a code from the new authenticator (counted as a TOTP attempt); its recovery codes come with it. */
export function totpEnrolmentFactor(secondFactor: SecondFactor): Factor<TotpEnrolment, { recoveryCodes: string[] }> {
  return {
    name: 'totp',
    subject: ({ account }) => ({ key: account.email }),
    verify: ({ account, pending, code, replace }) => secondFactor.enroll(account.id, pending, code, { replace: replace === true }),
    succeeded: (_, { account, replace }) => ({ audit: { event: 'second_factor_enrolled', fields: { accountId: account.id, replaced: replace === true }, msg: 'second factor enrolled' } }),
    failed: (reason, { account }) => codeRefused('enroll', account, reason),
  };
}
