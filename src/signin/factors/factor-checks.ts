import type { Account, Accounts } from '../../accounts/accounts.ts';
import type { Passkeys, StoredPasskey } from '../../accounts/passkeys.ts';
import type { SecondFactor } from '../../accounts/second-factor.ts';
import type { Logger } from '../../observability/logger.ts';
import type { Metrics } from '../../observability/metrics.ts';
import type { Lockout } from '../../security/lockout.ts';
import { FactorCheck, type Checked, type Factor, type Subject } from './factor.ts';
import { passkeyEnrolmentFactor, passkeyFactor } from './passkey.ts';
import { passwordFactor } from './password.ts';
import { recoveryCodeFactor } from './recovery-code.ts';
import { totpEnrolmentFactor, totpFactor } from './totp.ts';

export type { Checked } from './factor.ts';
export type SecondFactorInput = { totp: string } | { recoveryCode: string };

/**
 * The factors this server knows, each behind the one generic check (factor.ts): what the sign-in pages
 * and the account page call. A new factor is a file of factors/ and `check(itsFactor, input, ip)`.
 */
export class FactorChecks {
  readonly #check: FactorCheck;
  readonly #factors;

  constructor(deps: { accounts: Accounts; secondFactor: SecondFactor; passkeys: Passkeys; lockout: Lockout; metrics: Metrics; logger: Logger }) {
    this.#check = new FactorCheck(deps);
    this.#factors = {
      password: passwordFactor(deps.accounts),
      totp: totpFactor(deps.secondFactor),
      recoveryCode: recoveryCodeFactor(deps.secondFactor),
      totpEnrolment: totpEnrolmentFactor(deps.secondFactor),
      passkey: passkeyFactor(deps.passkeys),
      passkeyEnrolment: passkeyEnrolmentFactor(deps.passkeys),
    };
  }

  check<I, P extends object, S extends Subject>(factor: Factor<I, P, S>, input: I, ip: string): Promise<Checked<P>> {
    return this.#check.check(factor, input, ip);
  }

  password(email: string, password: string, ip: string): Promise<Checked<{ account: Account }>> {
    return this.check(this.#factors.password, { email, password }, ip);
  }

  /** A TOTP code (accepted once) or a recovery code (each works once) of an enrolled account. */
  secondFactor(account: Pick<Account, 'id' | 'email'>, input: SecondFactorInput, ip: string): Promise<Checked<{ recoveryCodesLeft?: number }>> {
    return 'totp' in input ? this.check(this.#factors.totp, { account, code: input.totp }, ip) : this.check(this.#factors.recoveryCode, { account, code: input.recoveryCode }, ip);
  }

  enroll(account: Pick<Account, 'id' | 'email'>, pending: string, code: string, ip: string, options: { replace?: boolean } = {}): Promise<Checked<{ recoveryCodes: string[] }>> {
    return this.check(this.#factors.totpEnrolment, { account, pending, code, ...options }, ip);
  }

  passkey(scope: string, raw: unknown, ip: string, account?: Pick<Account, 'id' | 'email'>, as: 'second_factor' | 'proof' = 'second_factor'): Promise<Checked<{ account: Account; passkey: StoredPasskey; userVerified: boolean }>> {
    return this.check(this.#factors.passkey, { scope, raw, ...(account ? { account } : {}), as }, ip);
  }

  registerPasskey(account: Pick<Account, 'id' | 'email'>, scope: string, raw: unknown, name: unknown, ip: string, source: 'signin' | 'account_page'): Promise<Checked<{ passkey: StoredPasskey; userVerified: boolean }>> {
    return this.check(this.#factors.passkeyEnrolment, { account, scope, raw, name, source }, ip);
  }
}
