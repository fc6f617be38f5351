import { randomBytes } from 'node:crypto';
import { SecretBoxError, type SecretBox } from '../security/secret-box.ts';
import { digest, keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';
import { AccountError, hasFactor, recoveryOf, type Account, type AccountMfa, type Accounts, type RecoverySet } from './accounts.ts';
import { generateRecoveryCodes, generateRecoverySalt, normalizeRecoveryCode, recoveryCodeDigest } from './recovery-codes.ts';
import { generateTotpSecret, totpProvisioning, TotpVerifier, type TotpProvisioning } from './totp.ts';

/**
 * A person's second factor: a TOTP authenticator plus single-use recovery codes.
 *
 * - Enrollment is two steps: `startEnrollment` makes a secret and what the page shows (QR code, key as
 *   text) and a sealed `pending` value for the caller to keep (in the interaction); `enroll` activates
 *   the factor only after a correct code from the app, and returns the recovery codes to show once.
 * - The TOTP secret is stored sealed (AES-256-GCM, SECRETS_KEY) and bound to the account id.
 * - Recovery codes are stored as salted digests in a set per generation; using one removes it atomically,
 *   regenerating switches the account to a new generation and deletes the old set.
 *
 * Who may call what (fresh proof of the current factor before replacing it, lockout around every
 * verification) is the caller's policy: see security/lockout.ts.
 */
export type SecondFactorMethod = 'totp' | 'recovery';

export type SecondFactorResult =
  | { ok: true; method: SecondFactorMethod; recoveryCodesLeft?: number }
  | { ok: false; reason: 'not-enrolled' | 'invalid' | 'replayed' };

export type EnrollResult = { ok: true; recoveryCodes: string[] } | { ok: false; reason: 'invalid' | 'replayed' | 'expired' };

export interface Enrollment extends TotpProvisioning {
  /** The new secret, sealed for this account with an expiry: give it back to `enroll`. */
  pending: string;
}

/** An enrollment page left open longer than this has to start again. */
const ENROLLMENT_TTL_MS = 15 * 60 * 1000;

const secretContext = (accountId: string) => `totp-secret:${accountId}`;
const enrollmentContext = (accountId: string) => `totp-enrollment:${accountId}`;

export class SecondFactor {
  readonly #store: Store;
  readonly #accounts: Accounts;
  readonly #box: SecretBox;
  readonly #issuer: string;
  readonly #now: () => number;
  readonly #totp: TotpVerifier;

  /** `issuer` is the name authenticator apps show next to the account (e.g. the issuer's host name). */
  constructor(options: { store: Store; accounts: Accounts; box: SecretBox; issuer: string; now?: () => number }) {
    this.#store = options.store;
    this.#accounts = options.accounts;
    this.#box = options.box;
    this.#issuer = options.issuer;
    this.#now = options.now ?? Date.now;
    this.#totp = new TotpVerifier(options.store, { now: this.#now });
  }

  static isEnrolled(account: Account): account is Account & { mfa: AccountMfa } {
    return account.mfa !== undefined;
  }

  async #account(accountId: string): Promise<Account> {
    const account = await this.#accounts.find(accountId);
    if (!account) throw new AccountError('account_not_found', { params: { id: accountId } });
    return account;
  }

  async startEnrollment(account: Account): Promise<Enrollment> {
    const secret = generateTotpSecret();
    const provisioning = await totpProvisioning({ issuer: this.#issuer, accountName: account.email, secret });
    const pending = this.#box.seal(JSON.stringify({ secret, exp: this.#now() + ENROLLMENT_TTL_MS }), enrollmentContext(account.id));
    return { ...provisioning, pending };
  }

  /**
   * What the enrollment page shows again for a pending enrollment (after a wrong code, or a reload),
   * or undefined when it expired or was not made for this account: start a new one then.
   */
  async provisioningOf(account: Account, pending: string): Promise<TotpProvisioning | undefined> {
    try {
      const opened = JSON.parse(this.#box.open(pending, enrollmentContext(account.id))) as { secret: string; exp: number };
      if (opened.exp <= this.#now()) return undefined;
      return await totpProvisioning({ issuer: this.#issuer, accountName: account.email, secret: opened.secret });
    } catch (err) {
      if (err instanceof SecretBoxError || err instanceof SyntaxError) return undefined;
      throw err;
    }
  }

  /**
   * Activates the pending factor when `code` is right (a wrong code changes nothing). Refuses to
   * replace an enrolled factor unless `replace` is set (the caller has checked a fresh proof of it).
   * Returns the new recovery codes: the only time they exist in clear.
   */
  async enroll(accountId: string, pending: string, code: string, options: { replace?: boolean } = {}): Promise<EnrollResult> {
    let secret: string;
    try {
      const opened = JSON.parse(this.#box.open(pending, enrollmentContext(accountId))) as { secret: string; exp: number };
      if (opened.exp <= this.#now()) return { ok: false, reason: 'expired' };
      secret = opened.secret;
    } catch (err) {
      if (err instanceof SecretBoxError || err instanceof SyntaxError) return { ok: false, reason: 'expired' };
      throw err;
    }
    const account = await this.#account(accountId);
    if (account.mfa && !options.replace) throw new AccountError('second_factor_exists');
    const step = await this.#totp.check(secret, code);
    if (step === undefined) return { ok: false, reason: 'invalid' };
    // A pending enrollment activates once. Its code is checked against the new secret without the
    // account's last-step guard (when replacing, the old factor's code of this very step was just
    // accepted as proof); the step is then recorded so the same code cannot also sign in.
    const claimed = await this.#store.set(keys.totpEnrollmentUsed(digest(pending)), '1', { ifAbsent: true, ttl: ENROLLMENT_TTL_MS / 1000 });
    if (!claimed) return { ok: false, reason: 'replayed' };
    await this.#totp.markAccepted(accountId, step);

    // Recovery codes are issued with the first factor; replacing the app issues new ones (as before passkeys),
    // adding an app beside passkeys keeps theirs.
    const keep = !account.mfa && account.recovery ? account.recovery : undefined;
    const fresh = keep ? undefined : await this.#newRecoverySet(accountId);
    let previous: RecoverySet | undefined;
    await this.#accounts.update(accountId, (a) => {
      previous = fresh ? recoveryOf(a) : undefined;
      a.mfa = { secretEnc: this.#box.seal(secret, secretContext(accountId)), enrolledAt: this.#now(), recovery: fresh?.recovery ?? a.recovery ?? keep };
      delete a.recovery;
    });
    if (previous) await this.#store.del(keys.recoveryCodes(accountId, previous.generation));
    return { ok: true, recoveryCodes: fresh?.codes ?? [] };
  }

  /**
   * The recovery codes of a first factor that is not an app (a passkey): a new set when the account has
   * none, else nothing — codes are issued once, when the first factor is set up.
   */
  async issueRecoveryCodesIfNone(accountId: string): Promise<string[]> {
    if (recoveryOf(await this.#account(accountId))) return [];
    const { codes, recovery } = await this.#newRecoverySet(accountId);
    let issued = false;
    await this.#accounts.update(accountId, (a) => {
      issued = !recoveryOf(a);
      if (issued) a.recovery = recovery;
    });
    if (!issued) await this.#store.del(keys.recoveryCodes(accountId, recovery.generation));
    return issued ? codes : [];
  }

  /** Drops the recovery codes of an account left without any factor (its last passkey removed). */
  async dropRecoveryCodesWithoutFactor(accountId: string): Promise<void> {
    let dropped: RecoverySet | undefined;
    await this.#accounts.update(accountId, (a) => {
      if (hasFactor(a)) return;
      dropped = a.recovery;
      delete a.recovery;
    });
    if (dropped) await this.#store.del(keys.recoveryCodes(accountId, dropped.generation));
  }

  /** Removes every factor (the app, the passkeys) and the recovery codes: the person enrolls again at their next sign-in. */
  async resetMfa(accountId: string): Promise<boolean> {
    let previous: Account | undefined;
    await this.#accounts.update(accountId, (a) => {
      previous = structuredClone(a);
      delete a.mfa;
      delete a.passkeys;
      delete a.recovery;
    });
    const recovery = previous && recoveryOf(previous);
    await this.#store.del(...(recovery ? [keys.recoveryCodes(accountId, recovery.generation)] : []), ...(previous?.passkeys ?? []).map((p) => keys.passkeyCredential(p.id)));
    await this.#totp.forget(accountId);
    return previous !== undefined && hasFactor(previous);
  }

  /**
   * Removes the authenticator app. Passkeys left keep the recovery codes (moved beside them); with no
   * factor left they are dropped. Returns false when there was no app. The caller decides whether the
   * app may go (the last factor under MFA_POLICY=required may not).
   */
  async removeAuthenticator(accountId: string): Promise<boolean> {
    let removed: AccountMfa | undefined;
    let kept = false;
    await this.#accounts.update(accountId, (a) => {
      removed = a.mfa;
      if (!a.mfa) return;
      kept = (a.passkeys?.length ?? 0) > 0;
      if (kept && a.mfa.recovery) a.recovery = a.mfa.recovery;
      delete a.mfa;
    });
    if (!removed) return false;
    if (!kept && removed.recovery) await this.#store.del(keys.recoveryCodes(accountId, removed.recovery.generation));
    await this.#totp.forget(accountId);
    return true;
  }

  /** A new set of recovery codes; the old set stops working at once. Returns the codes to show once. */
  async regenerateRecoveryCodes(accountId: string): Promise<string[]> {
    const account = await this.#account(accountId);
    if (!hasFactor(account)) throw new AccountError('second_factor_missing');
    const { codes, recovery } = await this.#newRecoverySet(accountId);
    let previous: RecoverySet | undefined;
    await this.#accounts.update(accountId, (a) => {
      if (!hasFactor(a)) throw new AccountError('second_factor_missing');
      previous = recoveryOf(a);
      if (a.mfa) a.mfa.recovery = recovery;
      else a.recovery = recovery;
    });
    if (previous) await this.#store.del(keys.recoveryCodes(accountId, previous.generation));
    return codes;
  }

  async recoveryCodesLeft(account: Account): Promise<number> {
    const recovery = recoveryOf(account);
    return recovery ? (await this.#store.setMembers(keys.recoveryCodes(account.id, recovery.generation))).length : 0;
  }

  /** Writes a new generation of digests under a new key; the account points at it once the caller saves it. */
  async #newRecoverySet(accountId: string) {
    const codes = generateRecoveryCodes();
    const recovery = { generation: randomBytes(9).toString('base64url'), salt: generateRecoverySalt(), createdAt: this.#now() };
    const key = keys.recoveryCodes(accountId, recovery.generation);
    await Promise.all(codes.map((code) => this.#store.setAdd(key, recoveryCodeDigest(recovery.salt, normalizeRecoveryCode(code)!))));
    return { codes, recovery };
  }

  /**
   * Checks a TOTP code or a recovery code. A TOTP code is accepted once (and no older step after it);
   * a recovery code is used up by the one caller that removes it.
   */
  async verifySecondFactor(accountId: string, input: { totp: string } | { recoveryCode: string }): Promise<SecondFactorResult> {
    const account = await this.#accounts.find(accountId);
    if (!account || !hasFactor(account)) return { ok: false, reason: 'not-enrolled' };
    if ('totp' in input) {
      // Passkeys only: no app to take a code from.
      if (!account.mfa) return { ok: false, reason: 'invalid' };
      const secret = this.#box.open(account.mfa.secretEnc, secretContext(account.id));
      const checked = await this.#totp.verify(account.id, secret, input.totp);
      return checked.ok ? { ok: true, method: 'totp' } : { ok: false, reason: checked.reason };
    }
    const recovery = recoveryOf(account);
    const code = normalizeRecoveryCode(input.recoveryCode);
    if (!recovery || !code) return { ok: false, reason: 'invalid' };
    const used = await this.#store.setRemove(keys.recoveryCodes(account.id, recovery.generation), recoveryCodeDigest(recovery.salt, code));
    if (!used) return { ok: false, reason: 'invalid' };
    return { ok: true, method: 'recovery', recoveryCodesLeft: await this.recoveryCodesLeft(account) };
  }
}
