import type { Account } from '../accounts/accounts.ts';
import { passkeysOf } from '../accounts/passkeys.ts';
import { digest, keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';

/**
 * Which account an upstream identity signs in to. An identity is its provider's issuer and subject
 * (`iss` + `sub`), never an address: addresses change hands and upstreams let people type them.
 * One identity belongs to one account (claimed with set-if-absent); an account may hold several.
 */
export interface LinkedIdentity {
  accountId: string;
  provider: string;
  iss: string;
  sub: string;
  /** The address the upstream gave when it was linked (shown to the person; never used to find them). */
  email?: string;
  /** Epoch ms. */
  linkedAt: number;
  /** How it came to be linked: the account was created by it, confirmed at sign-in, or linked from /account. */
  via: 'created' | 'signin' | 'account_page';
  /**
   * For `created`: a digest of the random password's hash the account was made with. While the
   * account's hash is still that one, nobody knows its password (passwordKnown).
   */
  unsetPassword?: string;
  /** Epoch ms of the last sign-in through it. */
  lastUsedAt?: number;
}

/** The digest an identity keeps of a password hash nobody knows (never the hash itself). */
export const unsetPasswordMark = (account: Pick<Account, 'passwordHash'>) => digest(`unset-password\n${account.passwordHash}`);

/**
 * Whether the person can sign in with a password: false for an account an upstream created until a
 * password is set (a reset, the console), since the one it was made with is random and told to nobody.
 */
export function passwordKnown(account: Pick<Account, 'passwordHash'>, linked: LinkedIdentity[]): boolean {
  return !linked.some((i) => (i.unsetPassword !== undefined ? i.unsetPassword === unsetPasswordMark(account) : i.via === 'created'));
}

/**
 * Whether unlinking these identities would leave the account no way to sign in: no known password, no
 * other identity, and no passkey it can sign in with alone (`passkeysOn`: PASSKEYS is not `off`).
 */
export function lastWayIn(account: Pick<Account, 'passwordHash' | 'passkeys'>, linked: LinkedIdentity[], removing: LinkedIdentity[], passkeysOn: boolean): boolean {
  const left = linked.filter((i) => !removing.some((r) => r.iss === i.iss && r.sub === i.sub));
  return left.length === 0 && !passwordKnown(account, linked) && !(passkeysOn && passkeysOf(account).length > 0);
}

export class UpstreamIdentities {
  readonly #store: Store;
  constructor(store: Store) {
    this.#store = store;
  }

  async find(iss: string, sub: string): Promise<LinkedIdentity | undefined> {
    const raw = await this.#store.get(keys.upstreamIdentity(iss, sub));
    return raw ? (JSON.parse(raw) as LinkedIdentity) : undefined;
  }

  /** Links the identity to the account; false when it already belongs to one (this one or another). */
  async link(identity: LinkedIdentity): Promise<boolean> {
    if (!(await this.#store.set(keys.upstreamIdentity(identity.iss, identity.sub), JSON.stringify(identity), { ifAbsent: true }))) return false;
    await this.#store.setAdd(keys.accountUpstreams(identity.accountId), digest(`${identity.iss}\n${identity.sub}`));
    return true;
  }

  async ofAccount(accountId: string): Promise<LinkedIdentity[]> {
    const members = await this.#store.setMembers(keys.accountUpstreams(accountId));
    const found = await Promise.all(members.map(async (m) => {
      const raw = await this.#store.get(`lk:upstream-identity:${m}`);
      return raw ? (JSON.parse(raw) as LinkedIdentity) : undefined;
    }));
    return found.filter((i): i is LinkedIdentity => i !== undefined && i.accountId === accountId).sort((a, b) => a.linkedAt - b.linkedAt);
  }

  /** Records a sign-in through it; compare-and-set, so it never brings back an identity unlinked meanwhile. */
  async touch(iss: string, sub: string, at: number): Promise<void> {
    const key = keys.upstreamIdentity(iss, sub);
    const raw = await this.#store.get(key);
    if (raw) await this.#store.replaceIf(key, raw, JSON.stringify({ ...(JSON.parse(raw) as LinkedIdentity), lastUsedAt: at }));
  }

  /** Unlinks one identity of the account (only if it is the account's). */
  async unlink(accountId: string, iss: string, sub: string): Promise<LinkedIdentity | undefined> {
    const found = await this.find(iss, sub);
    if (!found || found.accountId !== accountId) return undefined;
    await this.#store.del(keys.upstreamIdentity(iss, sub));
    await this.#store.setRemove(keys.accountUpstreams(accountId), digest(`${iss}\n${sub}`));
    // The account still has no password anyone knows: the identities left remember it.
    const mark = found.unsetPassword;
    if (mark !== undefined) {
      for (const other of await this.ofAccount(accountId)) {
        if (other.unsetPassword !== undefined) continue;
        const key = keys.upstreamIdentity(other.iss, other.sub);
        const raw = await this.#store.get(key);
        if (raw) await this.#store.replaceIf(key, raw, JSON.stringify({ ...other, unsetPassword: mark }));
      }
    }
    return found;
  }

  /** Everything linked to an account that is being deleted. */
  async unlinkAll(accountId: string): Promise<void> {
    for (const identity of await this.ofAccount(accountId)) await this.unlink(accountId, identity.iss, identity.sub);
  }
}
