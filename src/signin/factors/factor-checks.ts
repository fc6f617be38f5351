import type { AuthenticationResponseJSON, RegistrationResponseJSON } from '@simplewebauthn/server';
import { normalizeEmail, type Account, type Accounts } from '../../accounts/accounts.ts';
import { parseCredentialResponse, type PasskeyRegistration, type PasskeyUse, type Passkeys, type StoredPasskey } from '../../accounts/passkeys.ts';
import type { SecondFactor } from '../../accounts/second-factor.ts';
import { audit } from '../../observability/audit.ts';
import type { Logger } from '../../observability/logger.ts';
import type { Metrics } from '../../observability/metrics.ts';
import type { Factor, Lockout } from '../../security/lockout.ts';
import { digest } from '../../storage/keys.ts';

/**
 * Every check of something a person knows or holds, wrapped in the lockout: asked first (a locked
 * account or IP is refused even with the right answer, and nothing is verified), counted after, per
 * factor. The sign-in pages and the account page use these and nothing else, so no path skips it.
 *
 * The lockout's account key is the normalized email: it exists before we know whether the account
 * does, so an unknown account is throttled exactly like a known one.
 */
export type Checked<T = object> = ({ status: 'ok' } & T) | { status: 'failed'; reason: string } | { status: 'locked'; retryAfterSeconds: number };

export type SecondFactorInput = { totp: string } | { recoveryCode: string };

export class FactorChecks {
  readonly #accounts: Accounts;
  readonly #secondFactor: SecondFactor;
  readonly #lockout: Lockout;
  readonly #metrics: Metrics;
  readonly #logger: Logger;
  readonly #passkeys: Passkeys;

  constructor(deps: { accounts: Accounts; secondFactor: SecondFactor; passkeys: Passkeys; lockout: Lockout; metrics: Metrics; logger: Logger }) {
    this.#accounts = deps.accounts;
    this.#passkeys = deps.passkeys;
    this.#secondFactor = deps.secondFactor;
    this.#lockout = deps.lockout;
    this.#metrics = deps.metrics;
    this.#logger = deps.logger;
  }

  /** Email and password. Unknown, disabled and wrong answer alike (accounts.authenticate). */
  async password(email: string, password: string, ip: string): Promise<Checked<{ account: Account }>> {
    const subject = normalizeEmail(email);
    let account: Account | undefined;
    const result = await this.#lockout.attempt({ factor: 'password', account: subject, ip }, async () => {
      account = email && password ? await this.#accounts.authenticate(email, password) : undefined;
      return account !== undefined;
    });
    if (result.status === 'ok') return { status: 'ok', account: account! };
    this.#metrics.signInFailures.inc({ reason: result.status === 'locked' ? 'locked' : 'wrong' });
    audit(this.#logger, 'signin_failed', { factor: 'password', reason: result.status === 'locked' ? 'locked' : 'wrong', ip }, 'sign-in refused');
    return result.status === 'locked' ? result : { status: 'failed', reason: 'wrong' };
  }

  /** A TOTP code (accepted once) or a recovery code (each works once) of an enrolled account. */
  async secondFactor(account: Pick<Account, 'id' | 'email'>, input: SecondFactorInput, ip: string): Promise<Checked<{ recoveryCodesLeft?: number }>> {
    const method = 'totp' in input ? 'totp' : 'recovery';
    let reason = 'invalid';
    let left: number | undefined;
    const result = await this.#lockout.attempt({ factor: method, account: account.email, ip }, async () => {
      const verified = await this.#secondFactor.verifySecondFactor(account.id, input);
      if (verified.ok) left = verified.recoveryCodesLeft;
      else reason = verified.reason;
      return verified.ok;
    });
    const outcome = this.#outcome(result, method, account, reason, () => ({ status: 'ok' as const, ...(left !== undefined ? { recoveryCodesLeft: left } : {}) }));
    if (outcome.status === 'ok') {
      audit(this.#logger, 'second_factor_succeeded', { accountId: account.id, method: auditMethod(method), ...(left !== undefined ? { recoveryCodesLeft: left } : {}) }, 'second factor accepted');
    }
    return outcome;
  }

  /** Activates a pending enrollment with a code from the new authenticator (counted as a TOTP attempt). */
  async enroll(account: Pick<Account, 'id' | 'email'>, pending: string, code: string, ip: string, options: { replace?: boolean } = {}): Promise<Checked<{ recoveryCodes: string[] }>> {
    let reason = 'invalid';
    let codes: string[] = [];
    const result = await this.#lockout.attempt({ factor: 'totp', account: account.email, ip }, async () => {
      const enrolled = await this.#secondFactor.enroll(account.id, pending, code, options);
      if (enrolled.ok) codes = enrolled.recoveryCodes;
      else reason = enrolled.reason;
      return enrolled.ok;
    });
    const outcome = this.#outcome(result, 'enroll', account, reason, () => ({ status: 'ok' as const, recoveryCodes: codes }));
    if (outcome.status === 'ok') audit(this.#logger, 'second_factor_enrolled', { accountId: account.id, replaced: options.replace === true }, 'second factor enrolled');
    return outcome;
  }

  /**
   * A passkey assertion answering a challenge issued for `scope`, counted as the `passkey` factor of the
   * passkey's owner (found from the credential id; an unknown credential is its own subject) and of the
   * IP. `account`: only that account's passkeys count — a second factor, or (`as: 'proof'`) the account
   * page's proof, which replaces password and code and so needs user verification; without it, a
   * passwordless sign-in, which needs user verification too.
   */
  async passkey(scope: string, raw: unknown, ip: string, account?: Pick<Account, 'id' | 'email'>, as: 'second_factor' | 'proof' = 'second_factor'): Promise<Checked<{ account: Account; passkey: StoredPasskey; userVerified: boolean }>> {
    const response = parseCredentialResponse<AuthenticationResponseJSON>(raw);
    const found = !account && response ? await this.#passkeys.ownerOf(response.id) : undefined;
    const owner = account ?? found;
    const subject = owner ? normalizeEmail(owner.email) : `passkey:${digest(response?.id ?? `malformed:${ip}`)}`;
    let used = { ok: false, reason: 'malformed' } as PasskeyUse;
    const result = await this.#lockout.attempt({ factor: 'passkey', account: subject, ip }, async () => {
      if (response) used = await this.#passkeys.authenticate(scope, response, { ...(account ? { accountId: account.id } : {}), ...(found ? { owner: found } : {}), requireUserVerification: !account || as === 'proof' });
      return used.ok;
    });
    const how = account ? as : 'passwordless';
    if (result.status === 'ok' && used.ok) {
      this.#metrics.passkeys.inc({ event: 'used', detail: how });
      audit(this.#logger, 'passkey_used', { accountId: used.account.id, as: how, userVerified: used.userVerified, ip }, how === 'proof' ? 'proved who they are with a passkey' : 'signed in with a passkey');
      return { status: 'ok', account: used.account, passkey: used.passkey, userVerified: used.userVerified };
    }
    const reason = result.status === 'locked' ? 'locked' : used.ok ? 'invalid' : used.reason;
    this.#metrics.passkeys.inc({ event: 'failed', detail: reason });
    if (account) audit(this.#logger, 'second_factor_failed', { accountId: account.id, method: 'passkey', reason }, 'second factor refused');
    else audit(this.#logger, 'signin_failed', { factor: 'passkey', reason, ip, ...(owner ? { accountId: owner.id } : {}) }, 'sign-in refused');
    return result.status === 'locked' ? result : { status: 'failed', reason };
  }

  /** A new passkey for `account` (its response to a challenge issued for `scope`), counted as a passkey attempt. */
  async registerPasskey(account: Pick<Account, 'id' | 'email'>, scope: string, raw: unknown, name: unknown, ip: string, source: 'signin' | 'account_page'): Promise<Checked<{ passkey: StoredPasskey; userVerified: boolean }>> {
    const response = parseCredentialResponse<RegistrationResponseJSON>(raw);
    let registered = { ok: false, reason: 'malformed' } as PasskeyRegistration;
    const result = await this.#lockout.attempt({ factor: 'passkey', account: normalizeEmail(account.email), ip }, async () => {
      if (response) registered = await this.#passkeys.register(account.id, scope, response, typeof name === 'string' ? name : '');
      return registered.ok;
    });
    if (result.status === 'ok' && registered.ok) {
      this.#metrics.passkeys.inc({ event: 'registered', detail: source });
      audit(this.#logger, 'passkey_registered', { accountId: account.id, source, deviceType: registered.passkey.deviceType, userVerified: registered.userVerified }, 'passkey registered');
      return { status: 'ok', passkey: registered.passkey, userVerified: registered.userVerified };
    }
    const reason = result.status === 'locked' ? 'locked' : registered.ok ? 'invalid' : registered.reason;
    this.#metrics.passkeys.inc({ event: 'failed', detail: reason });
    audit(this.#logger, 'second_factor_failed', { accountId: account.id, method: 'passkey_registration', reason }, 'passkey registration refused');
    return result.status === 'locked' ? result : { status: 'failed', reason };
  }

  #outcome<T extends object>(result: Awaited<ReturnType<Lockout['attempt']>>, method: Factor | 'enroll', account: Pick<Account, 'id'>, reason: string, ok: () => { status: 'ok' } & T): Checked<T> {
    if (result.status === 'ok') return ok();
    const why = result.status === 'locked' ? 'locked' : reason;
    this.#metrics.secondFactorFailures.inc({ method, reason: why });
    audit(this.#logger, 'second_factor_failed', { accountId: account.id, method: auditMethod(method), reason: why }, 'second factor refused');
    return result.status === 'locked' ? result : { status: 'failed', reason };
  }
}

/** The method as audit events name it (`recovery_code`); metrics keep their shorter label (`recovery`). */
function auditMethod(method: Factor | 'enroll'): string {
  return method === 'recovery' ? 'recovery_code' : method;
}
