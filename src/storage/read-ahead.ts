import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * Reads a request sends before it needs them (`Store.readAhead`): one step's keys are often all known
 * from the request (the interaction in the URL, the email in the form), yet read one after another by
 * modules that know nothing of each other (oidc-provider's adapter, Lockout, Accounts). Read ahead, they
 * leave in one command, and each module's own `get` takes its answer, once.
 *
 * The answers live for one request (`withReadAhead`), per store: never across requests, where another
 * request's write could make them stale.
 */
interface Pending {
  /** What the store read: Redis' reply (string or null), the embedded store's snapshot of the key's value. */
  answer: Promise<unknown>;
  /** When the read was sent (performance.now()): a cache must not keep an answer read before it dropped the key. */
  sentAt: number;
}

const scopes = new AsyncLocalStorage<Map<object, Map<string, Pending>>>();

/** Runs one request's work in its own read-ahead scope; outside one, `Store.readAhead` reads nothing. */
export function withReadAhead<T>(run: () => T): T {
  return scopes.run(new Map(), run);
}

/**
 * The keys of `keys` this request has no answer pending for, at `store`, and a function that records
 * their answers; undefined outside a scope (nothing to read ahead for).
 */
export function keysToReadAhead(store: object, keys: string[]): { fresh: string[]; record: (key: string, answer: Promise<unknown>) => void } | undefined {
  const scope = scopes.getStore();
  if (!scope) return undefined;
  let pending = scope.get(store);
  if (!pending) scope.set(store, (pending = new Map<string, Pending>()));
  const answers = pending;
  const fresh = [...new Set(keys)].filter((key) => !answers.has(key));
  const sentAt = performance.now();
  return {
    fresh,
    record: (key, answer) => {
      // A request refused before it reads a key never awaits its answer: its failure must not go unhandled.
      answer.catch(() => {});
      answers.set(key, { answer, sentAt });
    },
  };
}

/** The answer read ahead for `key` at `store` in this request, once: the next read of the key goes to the store. */
export function takeReadAhead<T>(store: object, key: string): Promise<T> | undefined {
  const pending = scopes.getStore()?.get(store);
  if (!pending?.size) return undefined;
  const read = pending.get(key);
  if (!read) return undefined;
  pending.delete(key);
  return read.answer as Promise<T>;
}

/** A write of these keys (all keys: `undefined`; those a test picks) through `store`: what was read ahead of them is stale. */
export function dropReadAhead(store: object, keys?: string[] | ((key: string) => boolean)): void {
  const pending = scopes.getStore()?.get(store);
  if (!pending?.size) return;
  if (keys === undefined) pending.clear();
  else if (typeof keys === 'function') {
    for (const key of [...pending.keys()]) if (keys(key)) pending.delete(key);
  }
  else for (const key of keys) pending.delete(key);
}

/**
 * The keys of the records that share `key`'s hash tag (`lk:{tag}:…`, one grant's records and index: what
 * consuming one of them may delete), or every key for a key without one.
 */
export function sameTag(key: string): (other: string) => boolean {
  const end = key.indexOf('}');
  if (!key.includes('{') || end < 0) return () => true;
  const prefix = key.slice(0, end + 1);
  return (other) => other.startsWith(prefix);
}

/** When this request sent the read of `key` still waiting to be taken, at any store (performance.now()); undefined when none is. */
export function readAheadSentAt(key: string): number | undefined {
  for (const pending of scopes.getStore()?.values() ?? []) {
    const read = pending.get(key);
    if (read) return read.sentAt;
  }
  return undefined;
}
