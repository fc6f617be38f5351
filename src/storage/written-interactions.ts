import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import type { Store } from './store.ts';

/**
 * The interaction records this process wrote last, each under a random write id that the redirect to its
 * page carries (`/interaction/<uid>?v=<write id>`): the page a step redirects to renders from what the step
 * just wrote instead of reading it back from Redis (two reads per password + TOTP sign-in).
 *
 * Only pages are rendered from here, and only for the write id in their address: every form's POST reads
 * the interaction from the store, so nothing is decided on a copy. Another process's later write of the
 * same interaction (two tabs on two processes) is not seen here: such a page shows the step as this
 * process left it, and its form, posted, is answered from the store. A page addressed without a write id,
 * or one this process does not hold (another process wrote it; it was forgotten), is read from the store.
 */
export class WrittenInteractions {
  readonly #entries = new Map<string, { raw: string; writeId: string; until: number }>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Records what was written under `key` (its TTL in seconds); returns the write id its page's address carries. */
  remember(key: string, raw: string, ttlSeconds: number): string {
    const writeId = randomBytes(9).toString('base64url');
    this.#entries.delete(key);
    // Bounded: a page shown later than this, or after many other sign-ins, is read from the store.
    if (this.#entries.size >= MAX_ENTRIES) this.#entries.delete(this.#entries.keys().next().value!);
    this.#entries.set(key, { raw, writeId, until: this.#now() + Math.min(ttlSeconds * 1000, KEPT_MS) });
    return writeId;
  }

  /** What this process last wrote under `key`, if that write is `writeId` and still current. */
  read(key: string, writeId: string): string | undefined {
    const entry = this.#entries.get(key);
    if (!entry || entry.writeId !== writeId) return undefined;
    if (entry.until <= this.#now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.raw;
  }

  /** The write id of this process's last write of `key` (for the address of its page), if it holds one. */
  writeIdOf(key: string): string | undefined {
    const entry = this.#entries.get(key);
    return entry && entry.until > this.#now() ? entry.writeId : undefined;
  }

  /** The record was taken or deleted: its page is read from the store again. */
  forget(key: string): void {
    this.#entries.delete(key);
  }
}

/** Records kept at most (about 1–2 KB each). */
const MAX_ENTRIES = 5000;
/** How long a write is kept for its page: the redirect follows at once; a page reloaded later reads the store. */
const KEPT_MS = 10 * 60_000;

const ofStore = new WeakMap<Store, WrittenInteractions>();

/** The one memory of a store's interactions in this process, shared by the adapter and the sign-in steps. */
export function writtenInteractions(store: Store): WrittenInteractions {
  let memory = ofStore.get(store);
  if (!memory) ofStore.set(store, (memory = new WrittenInteractions()));
  return memory;
}

/** Set around a page request (GET) that names a write id (`?v=`): the one write its interaction may be read from. */
export const pageWriteId = new AsyncLocalStorage<string>();

/** `path` with the write id of its interaction's last write by this process, when it holds one. */
export function withWriteId(path: string, memory: WrittenInteractions, key: string): string {
  const writeId = memory.writeIdOf(key);
  return writeId ? `${path}?v=${writeId}` : path;
}
