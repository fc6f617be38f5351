import { normalizeEmail, type Account, type Accounts } from '../../accounts/accounts.ts';
import type { Factor } from './factor.ts';

export type PasswordInput = { email: string; password: string };

/** Email and password. Unknown, disabled and wrong answer alike (accounts.authenticate): one reason, `wrong`. */
export function passwordFactor(accounts: Accounts): Factor<PasswordInput, { account: Account }> {
  return {
    name: 'password',
    subject: ({ email }) => ({ key: normalizeEmail(email) }),
    async verify({ email, password }) {
      const account = email && password ? await accounts.authenticate(email, password) : undefined;
      return account ? { ok: true, account } : { ok: false, reason: 'wrong' };
    },
    // The sign-in itself is audited where it finishes (signin_succeeded), with the factors it took.
    succeeded: () => ({}),
    failed: (reason, _input, _subject, ip) => ({
      metric: { counter: 'signInFailures', labels: { reason } },
      audit: { event: 'signin_failed', fields: { factor: 'password', reason, ip }, msg: 'sign-in refused' },
    }),
  };
}
