import { randomUUID } from 'node:crypto';
import { normalizeEmail, isEmailAddress, AccountError, type Account, type Accounts } from './accounts.ts';
import type { Credential } from './sign-up.ts';
import type { EmailLinks } from './email-links.ts';
import { invitationMail } from '../mail/messages.ts';
import type { MailQueue } from '../mail/queue.ts';
import { Refusal } from '../problems.ts';
import { digest, keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';
import type { Locale } from '../i18n/locale.ts';

/** A pending invitation as stored (no token: only the digest of its link, to know which link is the live one). */
export interface Invitation {
  email: string;
  name?: string;
  admin?: boolean;
  /** Epoch ms. */
  invitedAt: number;
  expiresAt: number;
  /** The digest of the live link's token (EmailLinks `ref`): a revoked or re-sent invitation's old link no longer matches. */
  linkRef: string;
  /** The language of its mail: the inviting admin's page's (absent: English); a re-sent link keeps it. */
  locale?: Locale;
}

export interface InvitationsDeps {
  store: Store;
  accounts: Accounts;
  links: EmailLinks;
  queue: MailQueue;
  issuer: string;
  /** INVITATION_TTL_SECONDS: the invitation and its link expire together. */
  ttlSeconds: number;
  now?: () => number;
}

/**
 * Invitations: an operator names an address, the person gets a single-use link (accounts/email-links.ts)
 * and creates their account from it. The invitation record (by a digest of the address) remembers who
 * is invited and which link is live; revoking deletes it and cancels the link, re-sending issues a new
 * link and cancels the old one. Accepting needs both the link (used up) and the record naming it.
 */
export class Invitations {
  readonly #d: InvitationsDeps;
  readonly #now: () => number;
  constructor(deps: InvitationsDeps) {
    this.#d = deps;
    this.#now = deps.now ?? Date.now;
  }

  /** Invites an address no account has; inviting it again replaces the pending invitation (its old link dies). */
  async invite(input: { email: string; name?: string; admin?: boolean }, locale?: Locale): Promise<Invitation> {
    const email = normalizeEmail(input.email);
    if (!isEmailAddress(email)) throw new AccountError('email_invalid', { field: 'email', params: { email: JSON.stringify(input.email) } });
    if (await this.#d.accounts.findByEmail(email)) throw new AccountError('account_exists', { field: 'email', params: { email } });
    const previous = await this.find(email);
    return this.#send({ email, ...(input.name ? { name: input.name } : {}), ...(input.admin ? { admin: true } : {}), ...(locale ? { locale } : {}) }, previous);
  }

  /** A new link for a pending invitation (the old one stops working), with a fresh lifetime. */
  async resend(typed: string): Promise<Invitation> {
    const previous = await this.#pending(typed);
    const { email, name, admin, locale } = previous;
    return this.#send({ email, ...(name ? { name } : {}), ...(admin ? { admin } : {}), ...(locale ? { locale } : {}) }, previous);
  }

  async revoke(typed: string): Promise<Invitation> {
    const invitation = await this.#pending(typed);
    await this.#d.links.cancel(invitation.linkRef);
    await this.#forget(invitation.email);
    return invitation;
  }

  /** Pending invitations, earliest expiry first; entries whose record expired are dropped from the index. */
  async list(): Promise<Invitation[]> {
    const found: Invitation[] = [];
    for (const email of await this.#d.store.setMembers(keys.invitations)) {
      const invitation = await this.find(email);
      if (invitation) found.push(invitation);
      else await this.#d.store.setRemove(keys.invitations, email);
    }
    return found.sort((a, b) => a.expiresAt - b.expiresAt);
  }

  async find(email: string): Promise<Invitation | undefined> {
    const raw = await this.#d.store.get(keys.invitation(normalizeEmail(email)));
    const invitation = raw ? (JSON.parse(raw) as Invitation) : undefined;
    return invitation && invitation.expiresAt > this.#now() ? invitation : undefined;
  }

  /**
   * The invitation a link opens, if the link is live and still the invitation's; uses nothing up.
   * `accountId`: the id the account will have (a passkey made on the page is bound to it); absent on links sent before it was chosen ahead.
   */
  async opened(token: unknown): Promise<(Invitation & { accountId?: string }) | undefined> {
    const link = await this.#d.links.peek('invitation', token);
    if (!link) return undefined;
    const invitation = await this.find(link.email);
    return invitation && invitation.linkRef === digest(token as string) ? { ...invitation, ...(link.accountId ? { accountId: link.accountId } : {}) } : undefined;
  }

  /**
   * Creates the invited account with this password or passkey, its address verified (the link was read
   * from it). Undefined when the link is gone, used, revoked or replaced, or the address got an account
   * meanwhile. A password is checked first (AccountError), so a refused one leaves the link usable.
   */
  async accept(token: unknown, chosen: Credential): Promise<Account | undefined> {
    const invitation = await this.opened(token);
    if (!invitation) return undefined;
    if ('password' in chosen) await this.#d.accounts.checkPassword(chosen.password, invitation.email);
    if (!(await this.#d.links.consume('invitation', token))) return undefined;
    // Revoked or re-sent between the check and the use: the record no longer names this link.
    const current = await this.find(invitation.email);
    if (!current || current.linkRef !== invitation.linkRef) return undefined;
    await this.#forget(invitation.email);
    try {
      return await this.#d.accounts.create({ ...(invitation.accountId ? { id: invitation.accountId } : {}), email: invitation.email, ...chosen, emailVerified: true, ...(invitation.name ? { name: invitation.name } : {}), ...(invitation.admin ? { admin: true } : {}) });
    } catch (err) {
      if (err instanceof Refusal && err.code === 'account_exists') return undefined;
      throw err;
    }
  }

  async #pending(typed: string): Promise<Invitation> {
    const invitation = await this.find(typed);
    if (!invitation) throw new Refusal('invitation_not_found', { field: 'email', params: { email: normalizeEmail(typed) } });
    return invitation;
  }

  async #send(who: Pick<Invitation, 'email' | 'name' | 'admin' | 'locale'>, previous: Invitation | undefined): Promise<Invitation> {
    const { store, links, queue, issuer, ttlSeconds } = this.#d;
    // The account's id is chosen now: a passkey made on the invitation's page is bound to it.
    const { token, ref } = await links.issueWithRef('invitation', { accountId: randomUUID(), email: who.email }, ttlSeconds);
    const now = this.#now();
    const invitation: Invitation = { ...who, invitedAt: now, expiresAt: now + ttlSeconds * 1000, linkRef: ref };
    await store.set(keys.invitation(who.email), JSON.stringify(invitation), { ttl: ttlSeconds });
    await store.indexAdd(keys.invitations, who.email, ttlSeconds);
    if (previous) await links.cancel(previous.linkRef);
    await queue.enqueue('invitation', invitationMail(who.email, `${issuer}/invitation?token=${token}`, ttlSeconds, who.name, who.locale));
    return invitation;
  }

  async #forget(email: string): Promise<void> {
    await this.#d.store.del(keys.invitation(email));
    await this.#d.store.setRemove(keys.invitations, email);
  }
}
