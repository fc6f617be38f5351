import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';

/**
 * The account page's "sudo mode" (as GitHub's): once a person has proved who they are in a session,
 * changes to their sign-in need no proof for a few minutes. Held server-side, by the session's uid
 * (never a flag the browser could set), so it ends with the session and belongs to no other one.
 * `until` decides (the injected clock), the key's TTL only cleans up.
 */
export class SudoMode {
  readonly #store: Store;
  readonly #seconds: number;
  readonly #now: () => number;

  constructor(store: Store, seconds: number, now: () => number = Date.now) {
    this.#store = store;
    this.#seconds = seconds;
    this.#now = now;
  }

  /** Starts (or extends) sudo mode for this session; returns until when it lasts (epoch ms). */
  async start(sessionUid: string, accountId: string): Promise<number> {
    const until = this.#now() + this.#seconds * 1000;
    await this.#store.set(keys.accountSudo(sessionUid), JSON.stringify({ accountId, until }), { ttl: this.#seconds });
    return until;
  }

  /** Until when this session may change things without proof (epoch ms), or undefined when it may not. */
  async until(sessionUid: string, accountId: string): Promise<number | undefined> {
    const raw = await this.#store.get(keys.accountSudo(sessionUid));
    if (!raw) return undefined;
    const held = JSON.parse(raw) as { accountId?: unknown; until?: unknown };
    return held.accountId === accountId && typeof held.until === 'number' && held.until > this.#now() ? held.until : undefined;
  }

  async end(sessionUid: string): Promise<void> {
    await this.#store.del(keys.accountSudo(sessionUid));
  }
}
