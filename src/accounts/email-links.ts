import { randomBytes } from 'node:crypto';
import { digest, keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';

/**
 * Single-use links sent by email: password resets, address verification and changes, and whatever
 * else is proved by reading one's mail (invitations, sign-up). The link carries 256 random bits; the
 * store keeps only a digest of them as the key name, with the record as the one member of a set that
 * expires with the link. Using one is `setRemove` of that member: of any number of concurrent uses,
 * on any node, exactly one removes it.
 */
export type LinkPurpose = 'password-reset' | 'verify-email' | 'change-email' | 'report-change' | 'invitation' | 'sign-up';

export interface EmailLink {
  purpose: LinkPurpose;
  accountId: string;
  /** The address the link was sent to. */
  email: string;
  /** Epoch ms: refused from then on (the key expires then too). */
  expiresAt: number;
  /** What must still hold when it is used (e.g. a digest of the password hash: a reset link dies with the password it was sent for). */
  stamp?: string;
  /** Purpose-specific fields (e.g. the new address of a change). No secrets. */
  data?: Record<string, string>;
}

const TOKEN = /^[A-Za-z0-9_-]{43}$/;

/** A stamp that changes whenever the password does (a digest: the hash itself never leaves the account record). */
export function passwordStamp(passwordHash: string): string {
  return digest(`password-stamp:${passwordHash}`);
}

export class EmailLinks {
  readonly #store: Store;
  readonly #now: () => number;
  constructor(store: Store, now: () => number = Date.now) {
    this.#store = store;
    this.#now = now;
  }

  /** Stores a link and returns its token (for the URL only: never logged, never stored). */
  async issue(purpose: LinkPurpose, fields: Omit<EmailLink, 'purpose' | 'expiresAt'>, ttlSeconds: number): Promise<string> {
    return (await this.issueWithRef(purpose, fields, ttlSeconds)).token;
  }

  /** As `issue`, with `ref`: a name for the link that is not its token (its digest), to `cancel` it by. */
  async issueWithRef(purpose: LinkPurpose, fields: Omit<EmailLink, 'purpose' | 'expiresAt'>, ttlSeconds: number): Promise<{ token: string; ref: string }> {
    const token = randomBytes(32).toString('base64url');
    const link: EmailLink = { purpose, ...fields, expiresAt: this.#now() + ttlSeconds * 1000 };
    await this.#store.indexAdd(keys.emailLink(token), JSON.stringify(link), ttlSeconds);
    return { token, ref: digest(token) };
  }

  /** Makes a link unusable by its `ref` (e.g. an address change its old address reported). */
  async cancel(ref: string): Promise<void> {
    if (/^[A-Za-z0-9_-]{27}$/.test(ref)) await this.#store.del(keys.emailLinkByRef(ref));
  }

  /** The link, if it exists, is of this purpose and has not expired; uses nothing up (a page may show it). */
  async peek(purpose: LinkPurpose, token: unknown): Promise<EmailLink | undefined> {
    return (await this.#read(purpose, token))?.link;
  }

  /** Uses the link up: resolves it for exactly one caller, undefined for every other (and for unknown, expired or other-purpose links). */
  async consume(purpose: LinkPurpose, token: unknown): Promise<EmailLink | undefined> {
    const found = await this.#read(purpose, token);
    if (!found) return undefined;
    return (await this.#store.setRemove(keys.emailLink(token as string), found.raw)) ? found.link : undefined;
  }

  async #read(purpose: LinkPurpose, token: unknown): Promise<{ raw: string; link: EmailLink } | undefined> {
    if (typeof token !== 'string' || !TOKEN.test(token)) return undefined;
    const [raw] = await this.#store.setMembers(keys.emailLink(token));
    if (!raw) return undefined;
    const link = JSON.parse(raw) as EmailLink;
    if (link.purpose !== purpose || link.expiresAt <= this.#now()) return undefined;
    return { raw, link };
  }
}
