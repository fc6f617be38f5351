import { randomUUID } from 'node:crypto';
import { Refusal } from '../problems.ts';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';
import type { Locale } from '../i18n/locale.ts';
import type { StoredPasskey } from './passkeys.ts';
import { PasswordRule } from './password-rule.ts';
import { hashPassword, verifyPassword } from './passwords.ts';

export interface Account {
  id: string;
  email: string;
  /**
   * Whether the person proved they read `email` (a link sent to it). Absent on accounts written before
   * addresses were verified: those keep what tokens said of them then (verified, the operator vouched).
   */
  emailVerified?: boolean;
  name?: string;
  passwordHash: string;
  disabled: boolean;
  createdAt: number;
  /** The authenticator app, once enrolled (second-factor.ts), with the recovery codes. */
  mfa?: AccountMfa;
  /** May use the admin console and get tokens for the admin API (admin/). */
  admin?: boolean;
  /** Passkeys (passkeys.ts). */
  passkeys?: StoredPasskey[];
  /** The recovery codes of an account whose first factor was a passkey (with an app, they are `mfa.recovery`). */
  recovery?: RecoverySet;
  /** The language of the pages the person last signed in on: their mail is written in it (absent: English). */
  locale?: Locale;
}

export interface RecoverySet {
  generation: string;
  salt: string;
  createdAt: number;
}

export interface AccountMfa {
  /** The TOTP secret, sealed with SECRETS_KEY (security/secret-box.ts) and bound to the account id. */
  secretEnc: string;
  /** Epoch milliseconds. */
  enrolledAt: number;
  /** The current set of recovery codes; their salted digests are a set at keys.recoveryCodes(id, generation). */
  recovery?: RecoverySet;
}

/** The account's recovery codes, wherever its first factor put them. */
export function recoveryOf(account: Account): RecoverySet | undefined {
  return account.mfa?.recovery ?? account.recovery;
}

/** `email_verified`: proved by a link, or an account from before verification existed (see `emailVerified`). */
export function isEmailVerified(account: Account): boolean {
  return account.emailVerified !== false;
}

/** Whether the account has a second factor: an authenticator app or a passkey. */
export function hasFactor(account: Account): boolean {
  return account.mfa !== undefined || (account.passkeys?.length ?? 0) > 0;
}

/** A refusal a person or operator can act on (src/problems.ts): the CLI exits 2 with it, a page answers 4xx with it (never 500). */
export class AccountError extends Refusal {}

/** Writers that keep losing the compare-and-set give up eventually instead of spinning. */
const MAX_UPDATE_ATTEMPTS = 20;

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

/** A normalized address an account may have. */
export function isEmailAddress(email: string): boolean {
  return EMAIL.test(email) && email.length <= 254;
}

/** An account's entry in the email-ordered index: emails never hold a space, so the id follows one. */
function indexEntry(account: Pick<Account, 'email' | 'id'>): string {
  return `${account.email} ${account.id}`;
}

export class Accounts {
  readonly #store: Store;
  readonly #passwordRule: PasswordRule;
  /** `passwordRule`: the server's and the CLI's come from the configuration (online check); else offline only. */
  constructor(store: Store, options: { passwordRule?: PasswordRule } = {}) {
    this.#store = store;
    this.#passwordRule = options.passwordRule ?? new PasswordRule();
  }

  /** Refuses a password that may not be `email`'s (password-rule.ts): every new password passes here. */
  async checkPassword(password: string, email: string): Promise<void> {
    const problem = await this.#passwordRule.problem(password, email);
    if (problem) throw new AccountError('password_refused', { field: 'password', params: { reason: problem } });
  }

  /** `ahead`: the record's GET, when it was already sent (a refresh reads it with the presented token). */
  async find(id: string): Promise<Account | undefined> {
    if (!/^[0-9a-f-]{36}$/.test(id)) return undefined;
    const raw = await this.#store.get(keys.account(id));
    return raw ? (JSON.parse(raw) as Account) : undefined;
  }

  async findByEmail(email: string): Promise<Account | undefined> {
    const id = await this.#store.get(keys.accountEmail(normalizeEmail(email)));
    return id ? this.find(id) : undefined;
  }

  /**
   * `emailVerified`: a new address is unverified until the person follows a link sent to it, unless the caller has that proof.
   * Either a password or a passkey (passkey-only accounts: `passwordHash` is empty and no password matches it);
   * `id`: chosen ahead (the user handle a passkey was made for), never an existing account's.
   */
  async create(input: { email: string; name?: string; admin?: boolean; emailVerified?: boolean; id?: string } & ({ password: string } | { passkey: StoredPasskey })): Promise<Account> {
    const email = normalizeEmail(input.email);
    if (!isEmailAddress(email)) throw new AccountError('email_invalid', { field: 'email', params: { email: JSON.stringify(input.email) } });
    if ('password' in input) await this.checkPassword(input.password, email);
    const id = input.id && /^[0-9a-f-]{36}$/.test(input.id) ? input.id : randomUUID();
    if (input.id && (await this.#store.get(keys.account(id)))) throw new AccountError('account_exists', { field: 'email', params: { email } });
    const account: Account = {
      id,
      email,
      emailVerified: input.emailVerified ?? false,
      ...(input.name ? { name: input.name } : {}),
      passwordHash: 'password' in input ? await hashPassword(input.password) : '',
      ...('passkey' in input ? { passkeys: [input.passkey] } : {}),
      disabled: false,
      createdAt: Date.now(),
      ...(input.admin ? { admin: true } : {}),
    };
    // Claim the email first: of two concurrent creations only one gets it, and nothing is half-written.
    if (!(await this.#store.set(keys.accountEmail(email), account.id, { ifAbsent: true }))) {
      throw new AccountError('account_exists', { field: 'email', params: { email } });
    }
    try {
      await this.#save(account);
      await this.#store.setAdd(keys.accounts, account.id);
      await this.#store.sortedAdd(keys.accountsByEmail, indexEntry(account));
    } catch (err) {
      await this.#store.del(keys.accountEmail(email), keys.account(account.id)).catch(() => {});
      throw err;
    }
    return account;
  }

  async #save(account: Account) {
    await this.#store.set(keys.account(account.id), JSON.stringify(account));
  }

  /**
   * One page of accounts in email order, after the cursor (the last entry of the previous page), only
   * emails starting with `emailPrefix` when given. Reads `limit` index entries and their records, never more.
   */
  async page(options: { after?: string; emailPrefix?: string; limit: number }): Promise<{ accounts: Account[]; last?: string }> {
    const prefix = options.emailPrefix === undefined ? undefined : normalizeEmail(options.emailPrefix);
    const entries = await this.#store.sortedRangeByLex(keys.accountsByEmail, { after: options.after, prefix, limit: options.limit });
    const found = await Promise.all(entries.map((entry) => this.find(entry.slice(entry.lastIndexOf(' ') + 1))));
    return { accounts: found.filter((a): a is Account => !!a), last: entries.length === options.limit ? entries.at(-1) : undefined };
  }

  /** Indexes accounts written before the index existed (at start: only when the index has fewer entries than the set). */
  async backfillIndex(): Promise<number> {
    if ((await this.#store.sortedCount(keys.accountsByEmail)) >= (await this.#store.setCount(keys.accounts))) return 0;
    let added = 0;
    for (const id of await this.#store.setMembers(keys.accounts)) {
      const account = await this.find(id);
      if (account) {
        await this.#store.sortedAdd(keys.accountsByEmail, indexEntry(account));
        added += 1;
      }
    }
    return added;
  }

  async list(): Promise<Account[]> {
    const ids = await this.#store.setMembers(keys.accounts);
    const accounts = await Promise.all(ids.map((id) => this.find(id)));
    return accounts.filter((a): a is Account => !!a).sort((a, b) => a.createdAt - b.createdAt);
  }

  /**
   * Changes an account without losing a concurrent change: `change` is applied to the record as read,
   * and the write succeeds only if the stored record is still that one (Store.replaceIf); otherwise it
   * is read again and `change` re-applied. `change` is synchronous — slow work (argon2) happens before.
   * `asRead`: the record as the caller just read it, tried first without reading it again (a record
   * changed since only costs the read).
   */
  async update(id: string, change: (account: Account) => void, asRead?: Account): Promise<Account> {
    const key = keys.account(id);
    for (let attempt = 0; attempt < MAX_UPDATE_ATTEMPTS; attempt += 1) {
      const raw = attempt === 0 && asRead?.id === id ? JSON.stringify(asRead) : /^[0-9a-f-]{36}$/.test(id) ? await this.#store.get(key) : null;
      if (!raw) throw new AccountError('account_not_found', { params: { id } });
      const account = JSON.parse(raw) as Account;
      change(account);
      if (await this.#store.replaceIf(key, raw, JSON.stringify(account))) return account;
    }
    throw new AccountError('account_busy', { params: { id } });
  }

  /**
   * Sets a new password (through the one password rule). `unless`: a last check on the record being
   * changed, inside the compare-and-set (e.g. a reset link dies with the password it was sent for);
   * `verifiesEmail`: the change proves this address (a reset link read from it).
   */
  async setPassword(id: string, password: string, options: { unless?: (account: Account) => string | undefined; verifiesEmail?: string } = {}) {
    const current = await this.find(id);
    if (!current) throw new AccountError('account_not_found', { params: { id } });
    await this.checkPassword(password, current.email);
    const passwordHash = await hashPassword(password);
    return this.update(id, (a) => {
      const refusal = options.unless?.(a);
      if (refusal) throw new AccountError('account_changed', { params: { reason: refusal } });
      a.passwordHash = passwordHash;
      if (options.verifiesEmail !== undefined && a.email === options.verifiesEmail) a.emailVerified = true;
    });
  }

  /** Remembers the language the person signed in in, for their mail; no write when it is the same. */
  /** `known`: the account's language as the caller read it in this sign-in; the same one needs no read. */
  async rememberLocale(id: string, locale: Locale, known?: string): Promise<void> {
    if (known === locale) return;
    const current = await this.find(id);
    if (!current || (current.locale ?? 'en') === locale) return;
    await this.update(id, (a) => {
      a.locale = locale;
    }, current);
  }

  /** Marks the address proved, if it is still the account's (the link was sent to `email`). Undefined when it is not. */
  async verifyEmail(id: string, email: string): Promise<Account | undefined> {
    try {
      return await this.update(id, (a) => {
        if (a.email !== email) throw new AccountError('email_changed_since_link');
        a.emailVerified = true;
      });
    } catch (err) {
      if (err instanceof AccountError) return undefined;
      throw err;
    }
  }

  /**
   * Moves an account from one address to another, proved (a link read at the new one) unless `verified`
   * is false (an operator typed it: the person proves it later). The new address is claimed first
   * (set-if-absent), so two accounts never share one; the account changes only if it still has `from`.
   */
  async changeEmail(id: string, from: string, to: string, options: { verified?: boolean } = {}): Promise<Account> {
    const email = normalizeEmail(to);
    if (!isEmailAddress(email)) throw new AccountError('email_invalid', { field: 'email', params: { email: JSON.stringify(to) } });
    if (!(await this.#store.set(keys.accountEmail(email), id, { ifAbsent: true }))) {
      if ((await this.#store.get(keys.accountEmail(email))) !== id) throw new AccountError('account_exists', { field: 'email', params: { email } });
    }
    let account: Account;
    try {
      account = await this.update(id, (a) => {
        if (a.email !== from) throw new AccountError('email_changed_since_link');
        a.email = email;
        a.emailVerified = options.verified ?? true;
      });
    } catch (err) {
      await this.#store.del(keys.accountEmail(email)).catch(() => {});
      throw err;
    }
    await this.#store.del(keys.accountEmail(from));
    await this.#store.sortedRemove(keys.accountsByEmail, indexEntry({ id, email: from }));
    await this.#store.sortedAdd(keys.accountsByEmail, indexEntry(account));
    return account;
  }

  /** `name`: undefined removes it. */
  setName(id: string, name: string | undefined) {
    return this.update(id, (a) => {
      if (name) a.name = name;
      else delete a.name;
    });
  }

  setDisabled(id: string, disabled: boolean) {
    return this.update(id, (a) => {
      a.disabled = disabled;
    });
  }

  setAdmin(id: string, admin: boolean) {
    return this.update(id, (a) => {
      if (admin) a.admin = true;
      else delete a.admin;
    });
  }

  async delete(id: string): Promise<Account> {
    const account = await this.find(id);
    if (!account) throw new AccountError('account_not_found', { params: { id } });
    const recovery = recoveryOf(account);
    await this.#store.del(
      keys.account(id),
      keys.accountEmail(account.email),
      keys.totpLastStep(id),
      ...(recovery ? [keys.recoveryCodes(id, recovery.generation)] : []),
      ...(account.passkeys ?? []).map((p) => keys.passkeyCredential(p.id)),
    );
    await this.#store.setRemove(keys.accounts, id);
    await this.#store.sortedRemove(keys.accountsByEmail, indexEntry(account));
    return account;
  }

  /**
   * Checks an email and password. Unknown, disabled and wrong all answer undefined after the same
   * argon2id work, so the answer and its timing do not tell which.
   */
  async authenticate(email: string, password: string): Promise<Account | undefined> {
    const account = await this.findByEmail(email);
    const ok = await verifyPassword(account?.passwordHash, password);
    return ok && account && !account.disabled ? account : undefined;
  }
}
