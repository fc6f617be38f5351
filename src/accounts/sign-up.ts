import { randomUUID } from 'node:crypto';
import { normalizeEmail, type Account, type Accounts } from './accounts.ts';
import type { EmailLink, EmailLinks } from './email-links.ts';
import type { Email } from './email.ts';
import type { StoredPasskey } from './passkeys.ts';
import { signUpExistingMail, signUpMail } from '../mail/messages.ts';
import type { MailQueue } from '../mail/queue.ts';
import { audit } from '../observability/audit.ts';
import type { Logger } from '../observability/logger.ts';
import { Refusal } from '../problems.ts';
import { digest } from '../storage/keys.ts';
import type { Locale } from '../i18n/locale.ts';

/** SIGNUP: who may create an account by themselves (off and invite-only: nobody; the page is not served). */
export type SignUpMode = 'off' | 'invite-only' | 'domains' | 'open';

export const signUpOffered = (mode: SignUpMode) => mode === 'domains' || mode === 'open';

export interface SignUpDeps {
  accounts: Accounts;
  links: EmailLinks;
  queue: MailQueue;
  email: Email;
  logger: Logger;
  issuer: string;
  mode: SignUpMode;
  /** SIGNUP_ALLOWED_DOMAINS (domains mode). */
  domains: string[];
  /** EMAIL_VERIFICATION_TTL_SECONDS: how long the mailed link works. */
  ttlSeconds: number;
}

/** How the new account will sign in: a password (checked by the one rule) or a passkey made on the page. */
export type Credential = { password: string } | { passkey: StoredPasskey };

/**
 * Sign-up (SIGNUP=domains|open): a person names an address and gets a single-use link at it; the
 * account is made only when that link's page is posted, so an address nobody proved never becomes an
 * account and nothing secret waits in the store meanwhile (the password or passkey is chosen there).
 * The link record holds the address, the name and the id the account will have (a passkey made on the
 * page is bound to it). An address that has an account gets the same answer on the page and a mail
 * telling its owner; per address and per IP budgets are the emailed links' (EMAIL_LINKS_PER_*).
 */
export class SignUp {
  readonly #d: SignUpDeps;
  constructor(deps: SignUpDeps) {
    this.#d = deps;
  }

  get offered(): boolean {
    return signUpOffered(this.#d.mode);
  }

  /** Whether this (normalized, well-formed) address may sign up here: its domain is listed in domains mode. */
  allows(email: string): boolean {
    if (this.#d.mode === 'open') return true;
    if (this.#d.mode !== 'domains') return false;
    return this.#d.domains.includes(email.slice(email.lastIndexOf('@') + 1));
  }

  get domains(): string[] {
    return this.#d.mode === 'domains' ? this.#d.domains : [];
  }

  /**
   * Asks for an account. The caller answers the same whatever happens here: a link to a new address, a
   * "someone tried" mail to an existing one, or nothing past the address's budget (a no-op is queued
   * instead, as for a forgotten password, so the paths cost alike). The mail is in `locale`, the page's language.
   */
  async request(typed: string, name: string | undefined, ip: string, locale?: Locale): Promise<void> {
    const { accounts, links, queue, email, logger, issuer, ttlSeconds } = this.#d;
    const address = normalizeEmail(typed);
    const existing = await accounts.findByEmail(address);
    const emailDigest = digest(address);
    if (!(await email.addressAllows(address))) {
      await queue.enqueue('sign-up', undefined);
      audit(logger, 'signup_requested', { emailDigest, ip, sent: false, reason: 'address_limit' }, 'sign-up asked for too often: nothing sent');
      return;
    }
    if (existing) {
      await queue.enqueue('sign-up-existing', signUpExistingMail(address, `${issuer}/account`, `${issuer}/password/forgot`, locale));
      audit(logger, 'signup_requested', { emailDigest, ip, sent: true, existing: true, accountId: existing.id }, 'sign-up asked for an address that has an account: its owner is told');
      return;
    }
    const token = await links.issue('sign-up', { accountId: randomUUID(), email: address, ...(name ? { data: { name } } : {}) }, ttlSeconds);
    await queue.enqueue('sign-up', signUpMail(address, `${issuer}/signup/finish?token=${token}`, ttlSeconds, locale));
    audit(logger, 'signup_requested', { emailDigest, ip, sent: true }, 'sign-up link sent');
  }

  /** The sign-up a link opens, while it is live and its address still has no account; uses nothing up. */
  async opened(token: unknown): Promise<EmailLink | undefined> {
    if (!this.offered) return undefined;
    const link = await this.#d.links.peek('sign-up', token);
    if (!link || (await this.#d.accounts.findByEmail(link.email))) return undefined;
    return link;
  }

  /**
   * Makes the account, its address verified (the link was read from it), once: undefined when the link
   * is gone or used, or the address got an account meanwhile.
   */
  async finish(token: unknown, credential: Credential): Promise<Account | undefined> {
    const link = await this.#d.links.consume('sign-up', token);
    if (!link) return undefined;
    try {
      return await this.#d.accounts.create({ id: link.accountId, email: link.email, emailVerified: true, ...(link.data?.name ? { name: link.data.name } : {}), ...credential });
    } catch (err) {
      if (err instanceof Refusal && err.code === 'account_exists') return undefined;
      throw err;
    }
  }
}
