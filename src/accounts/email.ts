import { normalizeEmail, type Account, type Accounts } from './accounts.ts';
import { EmailLinks, passwordStamp } from './email-links.ts';
import { audit } from '../observability/audit.ts';
import type { Logger } from '../observability/logger.ts';
import { digest } from '../storage/keys.ts';
import { createLimiter, type Limiter } from '../storage/limiters.ts';
import type { Store } from '../storage/store.ts';
import type { Locale } from '../i18n/locale.ts';
import { RateLimiterRes } from 'rate-limiter-flexible';
import { addressChangeNoticeMail, changeAddressMail, passwordResetMail, securityNoticeMail, verifyAddressMail, type SecurityEvent } from '../mail/messages.ts';
import type { MailQueue } from '../mail/queue.ts';

export interface EmailSettings {
  /** EMAIL: off sends nothing and offers no emailed link. */
  on: boolean;
  issuer: string;
  resetTtlSeconds: number;
  verifyTtlSeconds: number;
  perAddressPerHour: number;
}

/** The email settings of the configuration (the server's and the CLI's alike). */
export function emailSettings(config: { EMAIL: string; PASSWORD_RESET_TTL_SECONDS: number; EMAIL_VERIFICATION_TTL_SECONDS: number; EMAIL_LINKS_PER_ADDRESS_PER_HOUR: number }): Omit<EmailSettings, 'issuer'> {
  return { on: config.EMAIL === 'on', resetTtlSeconds: config.PASSWORD_RESET_TTL_SECONDS, verifyTtlSeconds: config.EMAIL_VERIFICATION_TTL_SECONDS, perAddressPerHour: config.EMAIL_LINKS_PER_ADDRESS_PER_HOUR };
}

/**
 * What Latchkey sends, and the links in it: every message is queued (mail/queue.ts), never sent on the
 * request, and every link is single use (accounts/email-links.ts). Pages call this; it decides what
 * goes to whom and writes the audit events (never with a link or its token).
 */
export class Email {
  readonly on: boolean;
  readonly links: EmailLinks;
  readonly settings: EmailSettings;
  readonly #queue: MailQueue;
  readonly #accounts: Accounts;
  readonly #logger: Logger;
  readonly #perAddress: Limiter;
  constructor(deps: { store: Store; queue: MailQueue; accounts: Accounts; logger: Logger; links: EmailLinks; settings: EmailSettings }) {
    this.on = deps.settings.on;
    this.settings = deps.settings;
    this.links = deps.links;
    this.#queue = deps.queue;
    this.#accounts = deps.accounts;
    this.#logger = deps.logger;
    this.#perAddress = createLimiter(deps.store, { keyPrefix: 'lk:email-links:address', points: deps.settings.perAddressPerHour, duration: 3600 });
  }

  #url(path: string, token: string) {
    return `${this.settings.issuer}${path}?token=${token}`;
  }

  /** Whether this address may be sent one more link this hour (counted per digest of the address). */
  addressAllows(email: string): Promise<boolean> {
    return this.#addressAllows(email);
  }

  async #addressAllows(email: string): Promise<boolean> {
    try {
      await this.#perAddress.consume(digest(`email:${email}`));
      return true;
    } catch (err) {
      if (err instanceof RateLimiterRes) return false;
      throw err;
    }
  }

  /**
   * "Forgot your password?": a link for an enabled account with this address. Whoever asks gets the
   * same answer, so for an address nobody has (or one over its hourly budget) a no-op is queued
   * instead — the same lookups and writes, and nothing is sent. The mail is in `locale`, the language of the page it was asked on.
   */
  async requestPasswordReset(typed: string, ip: string, locale?: Locale): Promise<void> {
    const email = normalizeEmail(typed);
    const account = await this.#accounts.findByEmail(email);
    const allowed = await this.#addressAllows(email);
    if (!account || account.disabled || !allowed) {
      if (account && !allowed) audit(this.#logger, 'password_reset_requested', { accountId: account.id, ip, sent: false, reason: 'address_limit' }, 'password reset asked for too often: nothing sent');
      await this.#queue.enqueue('password-reset', undefined);
      return;
    }
    await this.#queueReset(account, locale);
    audit(this.#logger, 'password_reset_requested', { accountId: account.id, ip, sent: true }, 'password reset link sent');
  }

  /**
   * The normal reset mail, asked for by an operator for this account (they audit it, as its actor).
   * False when the address is over its hourly budget. In the account's language.
   */
  async sendPasswordReset(account: Account): Promise<boolean> {
    if (!(await this.#addressAllows(account.email))) return false;
    await this.#queueReset(account);
    return true;
  }

  async #queueReset(account: Account, locale = account.locale): Promise<void> {
    const token = await this.links.issue('password-reset', { accountId: account.id, email: account.email, stamp: passwordStamp(account.passwordHash) }, this.settings.resetTtlSeconds);
    await this.#queue.enqueue('password-reset', passwordResetMail(account.email, this.#url('/password/reset', token), this.settings.resetTtlSeconds, locale));
  }

  /** A link that proves the account's current address, in the account's language. False when over the hourly budget. */
  async sendVerification(account: Account, source: string): Promise<boolean> {
    if (!(await this.#addressAllows(account.email))) return false;
    const token = await this.links.issue('verify-email', { accountId: account.id, email: account.email }, this.settings.verifyTtlSeconds);
    await this.#queue.enqueue('verify-email', verifyAddressMail(account.email, this.#url('/email/verify', token), this.settings.verifyTtlSeconds, account.locale));
    audit(this.#logger, 'email_verification_sent', { accountId: account.id, source }, 'address verification link sent');
    return true;
  }

  /**
   * A change of address: a link to the new address confirms it (nothing changes before), and the old
   * address hears of it with a link that cancels it, both in the account's language. False when over the hourly budget.
   */
  async requestAddressChange(account: Account, to: string, source: string): Promise<boolean> {
    if (!(await this.#addressAllows(to))) return false;
    const ttl = this.settings.verifyTtlSeconds;
    const change = await this.links.issueWithRef('change-email', { accountId: account.id, email: to, data: { from: account.email } }, ttl);
    const report = await this.links.issue('report-change', { accountId: account.id, email: account.email, data: { change: change.ref, to } }, ttl);
    await this.#queue.enqueue('change-email', changeAddressMail(to, account.email, this.#url('/email/change', change.token), ttl, account.locale));
    await this.#queue.enqueue('change-email-notice', addressChangeNoticeMail(account.email, to, this.#url('/email/report', report), ttl, account.locale));
    audit(this.#logger, 'email_change_requested', { accountId: account.id, source }, 'address change asked for: waiting for the new address to confirm');
    return true;
  }

  /**
   * A security notice to the account's address, in the account's language. Never fails the change it reports: that change is
   * made already, so a storage failure here is logged, not answered.
   */
  async notify(account: Pick<Account, 'email' | 'locale'>, event: SecurityEvent, to: string = account.email, options: { byAdministrator?: boolean } = {}): Promise<void> {
    if (!this.on) return;
    try {
      await this.#queue.enqueue(`notice:${event}`, securityNoticeMail(to, event, new Date(), `${this.settings.issuer}/password/forgot`, options.byAdministrator === true, account.locale));
    } catch (err) {
      this.#logger.warn({ event: undefined, notice: event, reason: err instanceof Error ? err.message : String(err) }, 'security notice not queued');
    }
  }
}
