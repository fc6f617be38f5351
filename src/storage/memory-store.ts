import { EventEmitter } from 'node:events';
import { dropReadAhead, keysToReadAhead, sameTag, takeReadAhead } from './read-ahead.ts';
import type { ConsumeResult, RotatedRecord, Store, StoredModel, StoreInfo, TakeLeaving } from './store.ts';

/** A sorted set: members with scores; `byLex` is the members in UTF-8 byte order, rebuilt after a change. */
class SortedSet {
  readonly scores = new Map<string, number>();
  byLex?: string[];
}

/** A stream: entries in id order and the last id's parts. */
class Stream {
  readonly entries: { id: string; ms: number; seq: number; entry: string }[] = [];
}

/** A hash of counters (HINCRBY). */
class Counters {
  readonly fields = new Map<string, number>();
}

type Value = string | Set<string> | SortedSet | Stream | Counters | { p: string; c?: number } | string[];

const byBytes = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

/** A stream id bound as XREVRANGE takes it: `-`, `+`, `<ms>[-<seq>]`, with `(` for exclusive. */
function streamBound(bound: string, end: boolean): { ms: number; seq: number; exclusive: boolean } {
  if (bound === '-') return { ms: -Infinity, seq: 0, exclusive: false };
  if (bound === '+') return { ms: Infinity, seq: 0, exclusive: false };
  const exclusive = bound.startsWith('(');
  const [ms, seq] = bound.replace(/^\(/, '').split('-');
  return { ms: Number(ms), seq: seq === undefined ? (end ? Infinity : 0) : Number(seq), exclusive };
}
/** A model record (putModel): its payload and, once consumed, when. */
function isModel(value: Value | undefined | null): value is { p: string; c?: number } {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Set) && 'p' in value;
}

interface Entry {
  value: Value;
  expiresAt?: number;
}

/**
 * The embedded store: the same semantics as RedisStore, inside the process. It keeps nothing across
 * restarts and is not shared between processes, so production refuses it (config.ts).
 * `now` is injectable so expiry is testable without sleeping.
 */
export class MemoryStore implements Store {
  readonly kind = 'memory';
  readonly #data = new Map<string, Entry>();
  readonly #now: () => number;
  readonly #sweeper: NodeJS.Timeout;

  constructor(options: { now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
    this.#sweeper = setInterval(() => this.#sweep(), 60_000).unref();
  }

  #sweep() {
    const now = this.#now();
    for (const [key, entry] of this.#data) if (entry.expiresAt !== undefined && entry.expiresAt <= now) this.#data.delete(key);
  }

  #entry(key: string): Entry | undefined {
    const entry = this.#data.get(key);
    if (entry?.expiresAt !== undefined && entry.expiresAt <= this.#now()) {
      this.#data.delete(key);
      return undefined;
    }
    return entry;
  }

  #expiry(ttl?: number) {
    return ttl ? this.#now() + ttl * 1000 : undefined;
  }

  async get(key: string) {
    const ahead = takeReadAhead<Value | null>(this, key);
    const value = ahead ? await ahead : this.#entry(key)?.value;
    return typeof value === 'string' ? value : null;
  }

  /** A snapshot of each key's value now (a model record's payload, never its consumed mark), as Redis would answer an MGET sent now. */
  readAhead(keys: string[]) {
    const ahead = keysToReadAhead(this, keys);
    for (const key of ahead?.fresh ?? []) {
      const value = this.#entry(key)?.value;
      const snapshot = typeof value === 'string' ? value : isModel(value) ? { p: value.p, ...(value.c === undefined ? {} : { c: value.c }) } : undefined;
      // `null`, not undefined: a key absent then stays absent for its reader, whatever was written since by others.
      ahead!.record(key, Promise.resolve(snapshot ?? null));
    }
  }

  async set(key: string, value: string, options: { ttl?: number; ifAbsent?: boolean } = {}) {
    dropReadAhead(this, [key]);
    if (options.ifAbsent && this.#entry(key)) return false;
    this.#data.set(key, { value, expiresAt: this.#expiry(options.ttl) });
    return true;
  }

  async del(...keys: string[]) {
    dropReadAhead(this, keys);
    let n = 0;
    for (const key of keys) if (this.#entry(key) && this.#data.delete(key)) n += 1;
    return n;
  }

  #set(key: string, create: boolean): Set<string> | undefined {
    const value = this.#entry(key)?.value;
    if (value instanceof Set) return value;
    if (!create) return undefined;
    const set = new Set<string>();
    this.#data.set(key, { value: set });
    return set;
  }

  async setAdd(key: string, member: string) {
    this.#set(key, true)!.add(member);
  }

  async setRemove(key: string, member: string) {
    const set = this.#set(key, false);
    const removed = set?.delete(member) ?? false;
    if (set?.size === 0) this.#data.delete(key);
    return removed;
  }

  async setMembers(key: string) {
    return [...(this.#set(key, false) ?? [])];
  }

  async setCount(key: string) {
    return this.#set(key, false)?.size ?? 0;
  }

  #sorted(key: string, create: boolean): SortedSet | undefined {
    const value = this.#entry(key)?.value;
    if (value instanceof SortedSet) return value;
    if (!create) return undefined;
    const sorted = new SortedSet();
    this.#data.set(key, { value: sorted });
    return sorted;
  }

  async sortedAdd(key: string, member: string, score = 0) {
    const sorted = this.#sorted(key, true)!;
    if (!sorted.scores.has(member)) sorted.byLex = undefined;
    sorted.scores.set(member, score);
  }

  async sortedRemove(key: string, member: string) {
    const sorted = this.#sorted(key, false);
    const removed = sorted?.scores.delete(member) ?? false;
    if (removed) sorted!.byLex = undefined;
    if (sorted?.scores.size === 0) this.#data.delete(key);
    return removed;
  }

  async sortedCount(key: string) {
    return this.#sorted(key, false)?.scores.size ?? 0;
  }

  async sortedRangeByLex(key: string, options: { after?: string; prefix?: string; limit: number }) {
    const sorted = this.#sorted(key, false);
    if (!sorted) return [];
    sorted.byLex ??= [...sorted.scores.keys()].sort(byBytes);
    const { after, prefix, limit } = options;
    const out: string[] = [];
    for (const member of sorted.byLex) {
      if (out.length >= limit) break;
      if (after !== undefined && byBytes(member, after) <= 0) continue;
      if (prefix !== undefined && byBytes(member, prefix) < 0) continue;
      if (prefix !== undefined && !member.startsWith(prefix)) break;
      out.push(member);
    }
    return out;
  }

  async sortedRangeByScore(key: string, min: number, limit: number) {
    const sorted = this.#sorted(key, false);
    if (!sorted) return [];
    return [...sorted.scores]
      .filter(([, score]) => score >= min)
      .sort(([a, x], [b, y]) => x - y || byBytes(a, b))
      .slice(0, limit)
      .map(([member]) => member);
  }

  async sortedRemoveByScore(key: string, max: number) {
    const sorted = this.#sorted(key, false);
    if (!sorted) return;
    for (const [member, score] of sorted.scores) if (score <= max) sorted.scores.delete(member);
    sorted.byLex = undefined;
    if (sorted.scores.size === 0) this.#data.delete(key);
  }

  async streamAdd(key: string, entry: string, maxLength: number) {
    let stream = this.#entry(key)?.value;
    if (!(stream instanceof Stream)) {
      stream = new Stream();
      this.#data.set(key, { value: stream });
    }
    const { entries } = stream;
    const last = entries.at(-1);
    const now = this.#now();
    const ms = last && last.ms >= now ? last.ms : now;
    const seq = last && last.ms === ms ? last.seq + 1 : 0;
    entries.push({ id: `${ms}-${seq}`, ms, seq, entry });
    if (entries.length > maxLength) entries.splice(0, entries.length - maxLength);
    return `${ms}-${seq}`;
  }

  async streamRevRange(key: string, end: string, start: string, count: number) {
    const stream = this.#entry(key)?.value;
    if (!(stream instanceof Stream)) return [];
    const hi = streamBound(end, true);
    const lo = streamBound(start, false);
    const cmp = (e: { ms: number; seq: number }, b: { ms: number; seq: number }) => e.ms - b.ms || e.seq - b.seq;
    const out: { id: string; entry: string }[] = [];
    for (let i = stream.entries.length - 1; i >= 0 && out.length < count; i -= 1) {
      const e = stream.entries[i]!;
      const toEnd = cmp(e, hi);
      if (toEnd > 0 || (hi.exclusive && toEnd === 0)) continue;
      const toStart = cmp(e, lo);
      if (toStart < 0 || (lo.exclusive && toStart === 0)) break;
      out.push({ id: e.id, entry: e.entry });
    }
    return out;
  }

  async streamLength(key: string) {
    const stream = this.#entry(key)?.value;
    return stream instanceof Stream ? stream.entries.length : 0;
  }

  async countersAdd(index: string, increments: { bucket: string; score: number; field: string; by: number }[], ttl: number, dropBelow: number) {
    if (!increments.length) return;
    const sorted = this.#sorted(index, true)!;
    for (const { bucket, score, field, by } of increments) {
      let counters = this.#entry(bucket)?.value;
      if (!(counters instanceof Counters)) this.#data.set(bucket, { value: (counters = new Counters()) });
      counters.fields.set(field, (counters.fields.get(field) ?? 0) + by);
      this.#data.get(bucket)!.expiresAt = this.#expiry(ttl);
      if (!sorted.scores.has(bucket)) sorted.byLex = undefined;
      sorted.scores.set(bucket, score);
    }
    for (const [member, score] of sorted.scores) if (score < dropBelow) sorted.scores.delete(member);
    sorted.byLex = undefined;
    this.#data.get(index)!.expiresAt = this.#expiry(ttl);
  }

  async countersRevRange(index: string, max: number, min: number, limit: number) {
    const sorted = this.#sorted(index, false);
    if (!sorted) return [];
    return [...sorted.scores]
      .filter(([, score]) => score >= min && score <= max)
      .sort(([a, sa], [b, sb]) => sb - sa || byBytes(b, a))
      .slice(0, limit)
      .map(([bucket, score]) => {
        const counters = this.#entry(bucket)?.value;
        return { bucket, score, counters: counters instanceof Counters ? Object.fromEntries(counters.fields) : {} };
      });
  }

  async advanceCounter(key: string, value: number, ttl: number) {
    if (!Number.isSafeInteger(value) || !Number.isInteger(ttl) || ttl <= 0) throw new TypeError('advanceCounter needs an integer value and a positive integer ttl');
    dropReadAhead(this, [key]);
    // No await between the read and the write: atomic within the process, like the Lua script in Redis.
    const current = this.#entry(key)?.value;
    if (typeof current === 'string' && Number(current) >= value) return false;
    this.#data.set(key, { value: String(value), expiresAt: this.#expiry(ttl) });
    return true;
  }

  advanceCounterSeen(key: string, value: number, ttl: number) {
    return this.advanceCounter(key, value, ttl);
  }

  async replaceIf(key: string, expected: string, value: string, options: { ttl?: number } = {}) {
    dropReadAhead(this, [key]);
    // No await between the read and the write: atomic within the process, like the Lua script in Redis.
    const entry = this.#entry(key);
    if (entry?.value !== expected) return false;
    entry.value = value;
    if (options.ttl !== undefined) entry.expiresAt = this.#expiry(options.ttl);
    return true;
  }

  async putModel(key: string, payload: string, ttl: number, indexKey?: string) {
    dropReadAhead(this, [key]);
    const expiresAt = this.#expiry(ttl);
    this.#data.set(key, { value: { p: payload }, expiresAt });
    if (indexKey) {
      const index = this.#set(indexKey, true)!;
      // Forget members that expired (the Redis script checks four at random per write; here all are cheap to check).
      for (const member of index) if (!this.#entry(member)) index.delete(member);
      index.add(key);
      const entry = this.#data.get(indexKey)!;
      entry.expiresAt = Math.max(entry.expiresAt ?? 0, expiresAt ?? 0); // an index never outlives what it lists
    }
  }

  async putIndexed(records: RotatedRecord[], indexKey: string, holder?: string) {
    const lost = holder !== undefined && records.length > 0 && !this.#set(indexKey, false)?.has(holder);
    if (lost && !this.#entry(holder)) return false; // revoked meanwhile: nothing written
    for (const r of records) await this.putModel(r.key, r.payload, r.ttl, indexKey);
    if (lost) this.#set(indexKey, true)!.add(holder);
    return true;
  }

  async indexAdd(key: string, member: string, ttl: number) {
    this.#set(key, true)!.add(member);
    const entry = this.#data.get(key)!;
    entry.expiresAt = Math.max(entry.expiresAt ?? 0, this.#expiry(ttl) ?? 0); // as long as its longest-lived member
  }

  async putListed(key: string, payload: string, ttl: number, listKey: string, member: string) {
    dropReadAhead(this, [key]);
    this.#data.set(key, { value: { p: payload }, expiresAt: this.#expiry(ttl) });
    const entry = this.#entry(listKey);
    const list = Array.isArray(entry?.value) ? entry.value : [];
    list.push(member);
    // To the end of the clock hour in which the record ends, as RedisStore does; never shortened.
    const until = Math.ceil((this.#now() + ttl * 1000) / 3_600_000) * 3_600_000;
    this.#data.set(listKey, { value: list, expiresAt: Math.max(entry?.expiresAt ?? 0, until) });
  }

  async listMembers(key: string) {
    const value = this.#entry(key)?.value;
    return Array.isArray(value) ? [...value] : [];
  }

  async getModel(key: string, options: { consumable?: boolean; take?: boolean | TakeLeaving } = {}): Promise<StoredModel | null> {
    const { take } = options;
    // Read ahead: only a plain read (a take is read now).
    const ahead = !take ? takeReadAhead<Value | null>(this, key) : undefined;
    if (take) dropReadAhead(this, [key]);
    const value = ahead ? await ahead : this.#entry(key)?.value;
    if (typeof take === 'object' && options.consumable === false) this.#data.set(key, { value: { p: take.leave }, expiresAt: this.#expiry(take.ttl) });
    if (!value || typeof value === 'string' || Array.isArray(value) || value instanceof Set || !('p' in value)) return null;
    if (take === true && options.consumable === false) this.#data.delete(key);
    return value.c === undefined ? { payload: value.p } : { payload: value.p, consumed: value.c };
  }

  async consumeModel(key: string, indexKey: string | undefined, now: number, graceSeconds = 0): Promise<ConsumeResult> {
    // A reuse deletes the grant's records (its hash tag's), which this does not name.
    dropReadAhead(this, sameTag(key));
    return this.#consume(key, indexKey, now, graceSeconds);
  }

  #consume(key: string, indexKey: string | undefined, now: number, graceSeconds: number): ConsumeResult {
    const value = this.#entry(key)?.value;
    if (!value || typeof value === 'string' || Array.isArray(value) || value instanceof Set || !('p' in value)) return 'missing';
    if (value.c === undefined) {
      value.c = now;
      return 'consumed';
    }
    if (graceSeconds > 0 && now - value.c <= graceSeconds) return 'repeated';
    if (indexKey) this.#deleteIndexed(indexKey);
    return 'reused';
  }

  async rotateModel(presented: { key: string; payload: string }, indexKey: string, records: RotatedRecord[], now: number, options: { graceSeconds?: number; indexTtl?: number } = {}): Promise<ConsumeResult> {
    dropReadAhead(this);
    // No await before the writes: atomic within the process, like the Lua script in Redis.
    const consumed = this.#consume(presented.key, indexKey, now, options.graceSeconds ?? 0);
    if (consumed !== 'consumed') return consumed;
    const index = this.#set(indexKey, true)!;
    for (const { key, payload, ttl } of records) {
      this.#data.set(key, { value: { p: payload }, expiresAt: this.#expiry(ttl) });
      index.add(key);
    }
    const entry = this.#data.get(indexKey)!;
    if (options.indexTtl) entry.expiresAt = Math.max(entry.expiresAt ?? 0, this.#expiry(options.indexTtl) ?? 0);
    return 'consumed';
  }

  async deleteIndexed(indexKey: string, model?: string) {
    dropReadAhead(this);
    this.#deleteIndexed(indexKey, model);
  }

  #deleteIndexed(indexKey: string, model?: string) {
    const index = this.#set(indexKey, false);
    for (const key of index ?? []) {
      if (model && !key.includes(`:${model}:`)) continue;
      this.#data.delete(key);
      index!.delete(key);
    }
    if (index?.size === 0) this.#data.delete(indexKey);
  }

  async queuePush(key: string, value: string, maxLength: number, ttl: number) {
    const entry = this.#entry(key);
    const queue = Array.isArray(entry?.value) ? entry.value : [];
    queue.push(value);
    if (queue.length > maxLength) queue.splice(0, queue.length - maxLength);
    this.#data.set(key, { value: queue, expiresAt: Math.max(entry?.expiresAt ?? 0, this.#expiry(ttl) ?? 0) });
  }

  async queueTake(key: string) {
    const value = this.#entry(key)?.value;
    if (!Array.isArray(value)) return null;
    const item = value.shift() ?? null;
    if (value.length === 0) this.#data.delete(key);
    return item;
  }

  readonly #channels = new EventEmitter();

  async publish(channel: string, message: string) {
    this.#channels.emit(channel, message);
  }

  async subscribe(channel: string, onMessage: (message: string) => void, _onReset: () => void) {
    this.#channels.on(channel, onMessage);
    return async () => void this.#channels.off(channel, onMessage);
  }

  async ping() {}

  async info(): Promise<StoreInfo> {
    return { kind: 'memory', keys: [...this.#data.keys()].filter((key) => this.#entry(key) !== undefined).length };
  }

  async close() {
    clearInterval(this.#sweeper);
    this.#data.clear();
  }

  /** Test helper: the number of live keys (for "nothing leaks" checks). */
  size() {
    this.#sweep();
    return this.#data.size;
  }
}
