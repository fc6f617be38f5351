import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { AccountError, type Account, type Accounts } from '../accounts/accounts.ts';
import { audit } from '../observability/audit.ts';
import type { Logger } from '../observability/logger.ts';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';

/**
 * How an install without an admin gets its first one: a one-time setup link printed at start (the
 * /setup page, setup-page.ts), or the bootstrap settings for automation. Both end with an admin that
 * has a password only; the console's sign-in then makes them set up a second factor before they get in.
 * Neither works once any admin exists: checked when used, not only at start.
 */
const SETUP_TOKEN = /^[A-Za-z0-9_-]{43}$/;
/** Two links of two starts used at the same moment must not make two first admins. */
const CLAIM_KEY = 'lk:setup:claim';
const CLAIM_TTL_SECONDS = 60;
const ACCOUNTS_PER_PAGE = 200;

/** The link is used, expired, never existed, or an admin exists by now. */
export class SetupLinkDead extends Error {}

/** The bootstrap settings cannot make the admin: the boot stops with this line (it never holds the password). */
export class BootstrapRefused extends Error {}

export interface FirstAdminDeps {
  store: Store;
  accounts: Accounts;
  logger: Logger;
  linkTtlSeconds: number;
  /** Epoch ms; tests inject one to expire a link without waiting. */
  now?: () => number;
}

export class FirstAdmin {
  readonly #deps: FirstAdminDeps;
  readonly #now: () => number;
  /** Once an admin has been seen it is not looked for again: admins are not expected to go back to none. */
  #adminSeen = false;

  constructor(deps: FirstAdminDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
  }

  get linkTtlSeconds(): number {
    return this.#deps.linkTtlSeconds;
  }

  /** Whether any account has the admin role (a disabled one too: the CLI can enable it again). */
  async adminExists(): Promise<boolean> {
    if (this.#adminSeen) return true;
    let after: string | undefined;
    do {
      const page = await this.#deps.accounts.page({ limit: ACCOUNTS_PER_PAGE, ...(after ? { after } : {}) });
      if (page.accounts.some((a) => a.admin === true)) return (this.#adminSeen = true);
      after = page.last;
    } while (after);
    return false;
  }

  /** A new setup link's token, or undefined when an admin exists. Only its digest is stored. */
  async issueLink(): Promise<string | undefined> {
    if (await this.adminExists()) return undefined;
    const token = randomBytes(32).toString('base64url');
    const ttl = this.#deps.linkTtlSeconds;
    await this.#deps.store.set(keys.setupLink(token), JSON.stringify({ expiresAt: this.#now() + ttl * 1000 }), { ttl });
    return token;
  }

  /** Whether the link may be shown: it exists, has not expired, and there is still no admin. */
  async linkValid(token: string): Promise<boolean> {
    if (!SETUP_TOKEN.test(token)) return false;
    const raw = await this.#deps.store.get(keys.setupLink(token));
    if (!raw) return false;
    const { expiresAt } = JSON.parse(raw) as { expiresAt: number };
    return this.#now() < expiresAt && !(await this.adminExists());
  }

  /**
   * Creates the first admin with the link, which is used up: of two posts of one link only one gets it.
   * A refused password or email (AccountError) leaves the link as it was, so the person can try again.
   */
  async complete(token: string, input: { email: string; password: string }): Promise<Account> {
    const { store, accounts, logger } = this.#deps;
    if (!(await this.linkValid(token))) throw new SetupLinkDead();
    await accounts.checkPassword(input.password, input.email.trim().toLowerCase());
    const key = keys.setupLink(token);
    const record = await store.get(key);
    if (!record || (await store.del(key)) !== 1) throw new SetupLinkDead();
    if (!(await store.set(CLAIM_KEY, '1', { ttl: CLAIM_TTL_SECONDS, ifAbsent: true }))) throw new SetupLinkDead();
    let account: Account;
    try {
      account = await accounts.create({ email: input.email, password: input.password, admin: true });
    } catch (err) {
      await store.del(CLAIM_KEY);
      // The same link again for the next attempt, for what is left of its time.
      const left = Math.ceil(((JSON.parse(record) as { expiresAt: number }).expiresAt - this.#now()) / 1000);
      if (err instanceof AccountError && left > 0) await store.set(key, record, { ttl: left, ifAbsent: true });
      throw err;
    }
    this.#adminSeen = true;
    audit(logger, 'admin_setup_completed', { accountId: account.id }, 'the first admin was created with a setup link');
    return account;
  }

  /**
   * ADMIN_BOOTSTRAP_EMAIL + ADMIN_BOOTSTRAP_PASSWORD_FILE: the first admin without a browser. Does nothing
   * once an admin exists (every start, every worker may call it).
   */
  async bootstrap(email: string, passwordFile: string): Promise<Account | undefined> {
    const { accounts, logger } = this.#deps;
    if (await this.adminExists()) return undefined;
    let password: string;
    try {
      // One trailing line break, as `echo` and editors leave it, is not part of the password.
      password = (await readFile(passwordFile, 'utf8')).replace(/\r?\n$/, '');
    } catch (err) {
      throw new BootstrapRefused(`ADMIN_BOOTSTRAP_PASSWORD_FILE cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    const existing = await accounts.findByEmail(email);
    if (existing) {
      if (existing.admin) return undefined;
      throw new BootstrapRefused(new AccountError('bootstrap_email_not_admin', { params: { email: existing.email } }).message);
    }
    let account: Account;
    try {
      account = await accounts.create({ email, password, admin: true });
    } catch (err) {
      // Another worker of this start made it a moment ago.
      if (err instanceof AccountError && err.code === 'account_exists' && (await accounts.findByEmail(email))?.admin) return undefined;
      if (err instanceof AccountError) throw new BootstrapRefused(`ADMIN_BOOTSTRAP_${err.field === 'email' ? 'EMAIL' : 'PASSWORD_FILE'}: ${err.message}`);
      throw err;
    }
    this.#adminSeen = true;
    audit(logger, 'admin_bootstrapped', { accountId: account.id }, 'the first admin was created from ADMIN_BOOTSTRAP_EMAIL and ADMIN_BOOTSTRAP_PASSWORD_FILE');
    return account;
  }
}
