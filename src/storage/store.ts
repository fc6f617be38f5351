/**
 * The small storage interface everything else is built on. Two implementations:
 * `RedisStore` (production, shared by every node) and `MemoryStore` (the embedded store that lets
 * one command start a working server). Both pass the same contract suite (test/storage.contract.test.ts).
 *
 * Keys are chosen by the callers (see keys.ts); a key's `{hash tag}` keeps what must change together
 * in one Redis Cluster slot, so every multi-key operation here stays inside one slot.
 */
/** `repeated`: consumed before, within the grace window given to `consumeModel` (nothing revoked). */
export type ConsumeResult = 'consumed' | 'missing' | 'reused' | 'repeated';

/** What the console's overview shows of the store: Redis' memory as INFO reports it (bytes; maxMemory 0: no limit), or the embedded store's key count. */
export type StoreInfo = { kind: 'redis'; usedMemory: number; maxMemory: number } | { kind: 'memory'; keys: number };

/** A record a refresh token's rotation writes (the new refresh token, the access token). */
export interface RotatedRecord {
  key: string;
  payload: string;
  ttl: number;
  consumable: boolean;
}

/**
 * How `putModel` treats the index. Default: extend its TTL to the record's and drop a few members that
 * expired. `outlives`: the caller knows the index lives longer than this record (its grant's does), so
 * it is only added to. `owner`: the record is the grant itself (whose expiry never moves): a new index
 * gets its TTL, an existing one already lives at least as long.
 */
export interface PutModelOptions {
  consumable?: boolean;
  index?: 'outlives' | 'owner';
}

/** What a `take` leaves in the record's place: a tombstone saying it was taken (e.g. an answered interaction). */
export interface TakeLeaving {
  leave: string;
  ttl: number;
}

export interface StoredModel {
  payload: string;
  /** Epoch seconds at which it was consumed, when it was. */
  consumed?: number;
}

export interface Store {
  readonly kind: 'redis' | 'memory';

  get(key: string): Promise<string | null>;
  /**
   * Sends the reads of string keys a request will need, now and together (read-ahead.ts): one MGET on
   * one Redis, a GET each in parallel on a cluster (the keys' slots differ), a snapshot in the embedded
   * store. Within the request's scope (`withReadAhead`) the next `get` of such a key, or `getModel` of a
   * record not taken (with its consumed mark), answers what it held then, once; a write of the key through
   * this store in the request drops that answer (the read goes to the store). A key that holds no
   * string reads as absent. Outside a scope it reads nothing.
   */
  readAhead(keys: string[]): void;
  /** Sets a value; with `ifAbsent` only when the key does not exist. Returns whether it was written. */
  set(key: string, value: string, options?: { ttl?: number; ifAbsent?: boolean }): Promise<boolean>;
  del(...keys: string[]): Promise<number>;
  setAdd(key: string, member: string): Promise<void>;
  /** Removes a member; resolves true only for the one caller that removed it (single use, atomically). */
  setRemove(key: string, member: string): Promise<boolean>;
  setMembers(key: string): Promise<string[]>;
  /**
   * Raises a numeric counter, atomically: sets `key` to `value` (with a TTL in seconds) only when it is
   * absent or holds a smaller number. Resolves whether it did. Of two callers with the same value, exactly
   * one wins — e.g. the last accepted TOTP time step, so a code cannot be accepted twice across nodes.
   */
  advanceCounter(key: string, value: number, ttl: number): Promise<boolean>;
  /**
   * `advanceCounter` for a caller that read the counter below `value` a moment ago: in Redis one plain
   * `SET … GET` instead of a script. Should another caller have raised it to `value` or beyond meanwhile,
   * the answer is false and a higher number is put back (`advanceCounter`).
   */
  advanceCounterSeen(key: string, value: number, ttl: number): Promise<boolean>;
  /**
   * Compare-and-set on one key: writes `value` only when the key still holds exactly `expected` (its
   * TTL, if any, is kept; `ttl` seconds replaces it). Resolves whether it did; false when another writer
   * changed or deleted it since `expected` was read. A read-modify-write loops on this instead of losing
   * a concurrent write.
   */
  replaceIf(key: string, expected: string, value: string, options?: { ttl?: number }): Promise<boolean>;

  /**
   * Writes an oidc-provider model record with a TTL; adds it to `indexKey` (its grant) when given.
   * `consumable: false` (records never consumed: access tokens, sessions, grants…) stores the bare
   * payload; a consumable record also carries its consumed mark (in Redis: `<consumed-at>|<payload>`).
   * Read it back with the same option.
   */
  putModel(key: string, payload: string, ttl: number, indexKey?: string, options?: PutModelOptions): Promise<void>;
  /**
   * Writes records of one grant whose index outlives them all (`putModel` with `index: 'outlives'`, for
   * several records at once): in Redis one pipeline of a SET per record, one SADD and one EXPIRE NX.
   * With `holder` (a record the index lists as long as it lives: the grant's own), one SADD that also names
   * it and no EXPIRE: the SADD adds the holder back only to an index that a revocation deleted meanwhile.
   * Then, if the holder is gone too (the grant was revoked), the records and the index are deleted and the
   * answer is false; if not, the index gets its TTL (EXPIRE NX). True otherwise.
   */
  putIndexed(records: RotatedRecord[], indexKey: string, holder?: string): Promise<boolean>;
  /**
   * Reads a record; `take` (records never consumed only) deletes it in the same command (GETDEL), or with
   * `leave` puts that record in its place for `ttl` seconds (SET … GET), whether or not there was one.
   */
  getModel(key: string, options?: { consumable?: boolean; take?: boolean | TakeLeaving }): Promise<StoredModel | null>;
  /**
   * Marks a model consumed, atomically. The second consumer of one record gets 'reused', and then
   * everything listed in `indexKey` (the whole grant) is deleted in the same atomic step — unless it
   * comes within `graceSeconds` of the first consumption: then 'repeated', and nothing is deleted.
   * `asRead`: the record's payload as read in the same request (a consumable record never changes but
   * for its mark), which lets Redis mark it in one command.
   */
  consumeModel(key: string, indexKey: string | undefined, now: number, graceSeconds?: number, asRead?: string): Promise<ConsumeResult>;
  /**
   * A refresh token's rotation in one atomic step: consumes `presented` (whose record holds `payload`,
   * read in the same request) exactly as `consumeModel` does with `indexKey`, and only when that answers
   * 'consumed', writes `records` and adds them to `indexKey`. The index's TTL is extended to `indexTtl`
   * when given; otherwise the caller knows the grant's index outlives every record (no TTL read). Unlike
   * `putModel`, it does not look for expired members of the index.
   */
  rotateModel(presented: { key: string; payload: string }, indexKey: string, records: RotatedRecord[], now: number, options?: { graceSeconds?: number; indexTtl?: number }): Promise<ConsumeResult>;
  /** Deletes what an index lists (only the records of `model`, when given), and the index once empty. */
  deleteIndexed(indexKey: string, model?: string): Promise<void>;
  /**
   * Adds a member to an index set of one key and extends the set's TTL to at least `ttl` seconds, so the
   * index lives as long as its longest-lived member and no longer (e.g. an account's sessions and grants).
   * `pipelined`: in Redis as plain commands (SADD, EXPIREAT GT, and EXPIREAT NX for a set without a TTL)
   * rather than one script: fewer commands for Redis to run, one more sent. The TTL then reaches to the
   * end of a step of a tenth of `ttl` (a minute to a day) and is written once a step per process: the
   * other adds of the step send SADD alone (a set emptied by another process meanwhile may be re-created
   * without a TTL until that process's next step; its members still expire).
   */
  indexAdd(key: string, member: string, ttl: number, options?: { pipelined?: boolean }): Promise<void>;
  /**
   * Writes a record that no grant lists (not consumable: a client-credentials token) and appends `member`
   * to the list at `listKey` (an index read whole, e.g. a client's tokens of one day), in one round trip.
   * The list's TTL is extended to cover the record, rounded up to the end of a clock hour (so most
   * appends leave it alone), and never shortened. A list costs about its members' length in memory, where
   * a set of strings costs some 70 B more per member.
   */
  putListed(key: string, payload: string, ttl: number, listKey: string, member: string): Promise<void>;
  /** The members of a list (LRANGE 0 -1), oldest first. */
  listMembers(key: string): Promise<string[]>;

  /** How many members a set has (SCARD). */
  setCount(key: string): Promise<number>;

  /**
   * Sorted sets (one key each, so cluster-safe): the paging indexes of accounts and clients (members
   * compared as UTF-8 bytes, all with score 0) and the current lockouts (scored by their end, epoch ms).
   */
  sortedAdd(key: string, member: string, score?: number): Promise<void>;
  /** Resolves whether the member was there. */
  sortedRemove(key: string, member: string): Promise<boolean>;
  sortedCount(key: string): Promise<number>;
  /**
   * Up to `limit` members in byte order (ZRANGE BYLEX), strictly after `after` when given, and only those
   * starting with `prefix` when given: a page of an index without reading the rest of it.
   */
  sortedRangeByLex(key: string, options: { after?: string; prefix?: string; limit: number }): Promise<string[]>;
  /** Up to `limit` members whose score is at least `min`, lowest score first. */
  sortedRangeByScore(key: string, min: number, limit: number): Promise<string[]>;
  /** Removes the members whose score is at most `max` (e.g. lockouts that ended). */
  sortedRemoveByScore(key: string, max: number): Promise<void>;

  /**
   * Appends one entry to a stream capped at about `maxLength` entries (XADD MAXLEN ~: Redis trims whole
   * nodes, so it may hold up to ~100 more; the embedded store trims exactly). Resolves the entry's id
   * (`<epoch ms>-<sequence>`).
   */
  streamAdd(key: string, entry: string, maxLength: number): Promise<string>;
  /**
   * Up to `count` entries, newest first, with ids from `end` down to `start` (inclusive; `(id` excludes
   * it; `+` and `-` are the ends), as XREVRANGE.
   */
  streamRevRange(key: string, end: string, start: string, count: number): Promise<{ id: string; entry: string }[]>;
  streamLength(key: string): Promise<number>;

  /**
   * Counters in buckets: each bucket a hash (one key), listed in `index` (a sorted set) by its score. Adds
   * every increment, indexes its bucket, gives buckets and index `ttl` seconds and drops index entries
   * scored below `dropBelow` — one round trip. Callers keep the buckets in the index's slot ({hash tag}).
   */
  countersAdd(index: string, increments: { bucket: string; score: number; field: string; by: number }[], ttl: number, dropBelow: number): Promise<void>;
  /** Up to `limit` indexed buckets scored from `max` down to `min` (inclusive), highest first, each with its counters. */
  countersRevRange(index: string, max: number, min: number, limit: number): Promise<{ bucket: string; score: number; counters: Record<string, number> }[]>;

  /**
   * Calls `listener` on each change of availability: false when the store stopped answering (a call
   * failed with StorageUnavailable, or the connection closed), true when it answers again. Once per
   * transition, never once per call. Stores that cannot become unavailable need not implement it.
   */
  onAvailabilityChange?(listener: (available: boolean, reason?: string) => void): void;

  /**
   * Appends to a queue of one key (a list), keeping at most `maxLength` items (the oldest go) and
   * extending its TTL to `ttl` seconds, so a queue no process drains does not grow without end.
   */
  queuePush(key: string, value: string, maxLength: number, ttl: number): Promise<void>;
  /** Takes the oldest item of a queue; each item goes to exactly one caller, on every node. Null when empty. */
  queueTake(key: string): Promise<string | null>;

  /** Tells every process on this store that something changed (e.g. a client), so caches drop it. */
  publish(channel: string, message: string): Promise<void>;
  /**
   * Listens to a channel. `onReset` is called when messages may have been missed (the subscription
   * connection was lost and is back), so a cache can drop everything. Returns a function that stops.
   */
  subscribe(channel: string, onMessage: (message: string) => void, onReset: () => void): Promise<() => Promise<void>>;

  /** Resolves when the store answers within its deadline; rejects with StorageUnavailable otherwise. */
  ping(): Promise<void>;
  info(): Promise<StoreInfo>;
  close(): Promise<void>;
}

/**
 * Thrown when the store does not answer in time or is unreachable. It carries an OAuth-shaped error
 * so that oidc-provider renders it as `503 temporarily_unavailable` instead of a 500; app.ts adds
 * `Retry-After`. Never a success, never a hang.
 */
export class StorageUnavailable extends Error {
  readonly status = 503;
  readonly statusCode = 503;
  readonly expose = true;
  readonly error = 'temporarily_unavailable';
  readonly error_description = 'the service is temporarily unavailable, try again shortly';
  constructor(cause?: unknown) {
    super('temporarily_unavailable', { cause });
    this.name = 'StorageUnavailable';
  }
}

export const RETRY_AFTER_SECONDS = 2;
