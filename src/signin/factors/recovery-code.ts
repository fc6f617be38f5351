import type { Account } from '../../accounts/accounts.ts';
import type { SecondFactor } from '../../accounts/second-factor.ts';
import type { Factor } from './factor.ts';
import { codeRefused } from './totp.ts';

/** One of the account's recovery codes: each works once. */
export function recoveryCodeFactor(secondFactor: SecondFactor): Factor<{ account: Pick<Account, 'id' | 'email'>; code: string }, { recoveryCodesLeft?: number }> {
  return {
    name: 'recovery',
    subject: ({ account }) => ({ key: account.email }),
    async verify({ account, code }) {
      const verified = await secondFactor.verifySecondFactor(account.id, { recoveryCode: code });
      if (!verified.ok) return verified;
      return { ok: true, ...(verified.recoveryCodesLeft !== undefined ? { recoveryCodesLeft: verified.recoveryCodesLeft } : {}) };
    },
    succeeded: ({ recoveryCodesLeft }, { account }) => ({
      audit: { event: 'second_factor_succeeded', fields: { accountId: account.id, method: 'recovery_code', ...(recoveryCodesLeft !== undefined ? { recoveryCodesLeft } : {}) }, msg: 'second factor accepted' },
    }),
    failed: (reason, { account }) => codeRefused('recovery', account, reason),
  };
}
