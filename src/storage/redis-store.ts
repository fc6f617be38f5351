import { Redis, Cluster, type RedisOptions } from 'ioredis';
import { dropReadAhead, keysToReadAhead, sameTag, takeReadAhead } from './read-ahead.ts';
import { StorageUnavailable, type ConsumeResult, type PutModelOptions, type RotatedRecord, type Store, type StoredModel, type StoreInfo, type TakeLeaving } from './store.ts';

// All keys of one script call share a hash tag (keys.ts), so each script is Redis Cluster safe.
// `#!lua` (Redis 7): a script with flags is refused up front when Redis is out of memory under
// `noeviction`; without them Redis checks only the first write, here a DEL, and lets it grow past maxmemory.
// A record is one string (`SET` replaces whatever a key held, a hash of an earlier version too); a
// consumable one is `<consumed-at>|<payload>`, nothing before the bar until it is consumed (CONSUMED_MARK).
const PUT_MODEL = `#!lua
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if KEYS[2] then
  -- Forget members that expired: four picked at random per write, so that an index stays within
  -- about 4/3 of its live members at a bounded cost per write (a full scan made a refresh of a long
  -- chain cost over 50 commands). A refresh token's rotation (ROTATE_REFRESH) does not prune.
  local members = redis.call('SRANDMEMBER', KEYS[2], 4)
  for i = 1, #members do
    if redis.call('EXISTS', members[i]) == 0 then redis.call('SREM', KEYS[2], members[i]) end
  end
  redis.call('SADD', KEYS[2], KEYS[1])
  if redis.call('TTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
end
return 1`;

// A consumed record's first mark, or nil when it is unconsumed. `stored`: the string, or the reply of
// reading a key that holds a hash (`p` payload, `c` consumed-at: the layout of earlier versions).
const CONSUMED_AT = `
local function consumedAt(stored)
  local bar = string.find(stored, '|', 1, true)
  if not bar or bar == 1 then return nil end
  return tonumber(string.sub(stored, 1, bar - 1))
end
local function revokeGrant(index)
  if not index then return end
  local members = redis.call('SMEMBERS', index)
  for i = 1, #members do redis.call('DEL', members[i]) end
  redis.call('DEL', index)
end
`;

// ARGV[1]: now, ARGV[2]: the grace window in seconds; a second consumer within it after the first is told so (3).
const CONSUME_MODEL = `${CONSUMED_AT}
local now, grace = tonumber(ARGV[1]), tonumber(ARGV[2]) or 0
local stored = redis.pcall('GET', KEYS[1])
local first
if type(stored) == 'table' then
  -- A hash of an earlier version.
  if redis.call('HSETNX', KEYS[1], 'c', ARGV[1]) == 1 then return 1 end
  first = tonumber(redis.call('HGET', KEYS[1], 'c'))
elseif not stored then
  return 0
else
  first = consumedAt(stored)
  if not first then
    redis.call('SET', KEYS[1], ARGV[1] .. stored, 'KEEPTTL')
    return 1
  end
end
if grace > 0 and now - first <= grace then return 3 end
revokeGrant(KEYS[2])
return 2`;

// A refresh token's rotation, one atomic step: KEYS[1] the presented token, KEYS[2] its grant's index,
// KEYS[3..] the new records. ARGV: now, grace, the presented token's record as consumed (read in the
// same request: a refresh token's record never changes but for its mark), the index's TTL to extend to
// (0: the grant's outlives every new record), then each new record's value and TTL. SET … XX GET marks
// the token and tells whether it existed and was unconsumed in one command; only then are the new
// records written and indexed. A repeat within the grace window puts the first mark back (3); reuse
// revokes the grant (2); a token gone meanwhile (revoked) writes nothing (0).
const ROTATE_REFRESH = `#!lua
${CONSUMED_AT}
local now, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
local stored = redis.pcall('SET', KEYS[1], ARGV[3], 'XX', 'KEEPTTL', 'GET')
local first
if type(stored) == 'table' then
  if redis.call('HSETNX', KEYS[1], 'c', ARGV[1]) == 0 then first = tonumber(redis.call('HGET', KEYS[1], 'c')) end
elseif not stored then
  return 0
else
  first = consumedAt(stored)
end
if first then
  if grace > 0 and now - first <= grace then
    if type(stored) == 'string' then redis.call('SET', KEYS[1], stored, 'KEEPTTL') end
    return 3
  end
  revokeGrant(KEYS[2])
  return 2
end
for i = 3, #KEYS do redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'EX', ARGV[2 * i]) end
redis.call('SADD', KEYS[2], unpack(KEYS, 3))
if ARGV[4] ~= '0' and redis.call('TTL', KEYS[2]) < tonumber(ARGV[4]) then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
return 1`;

// With ARGV[1], only members whose key names that model (':<Model>:'); the index keeps the rest.
const DELETE_INDEXED = `
local members = redis.call('SMEMBERS', KEYS[1])
local n = 0
for i = 1, #members do
  if not ARGV[1] or string.find(members[i], ARGV[1], 1, true) then
    redis.call('DEL', members[i])
    redis.call('SREM', KEYS[1], members[i])
    n = n + 1
  end
end
if redis.call('SCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end
return n`;

// A single key: set it to ARGV[1] (with TTL ARGV[2]) unless it already holds a number >= ARGV[1].
// One command when it advances (SET … GET writes and tells what was there); a counter that was already as
// high is put back, inside the script, so no other caller ever sees the lower value (its TTL then runs
// from now: a refused replay only keeps the guard a little longer).
const ADVANCE_COUNTER = `
local before = redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'GET')
local current = tonumber(before)
if current and current >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], before, 'KEEPTTL')
  return 0
end
return 1`;

// One key: compare-and-set (GET returns false for a missing key, which never equals a string).
const REPLACE_IF = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] then redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) else redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') end
return 1`;

// One key: add a member to an index set and extend its TTL to at least ARGV[2] (never shorten it).
const INDEX_ADD = `
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1`;

// A record no grant lists and its entry in a list index (Store.putListed). KEYS[1] the list, KEYS[2] the
// record — absent on a cluster, where it lives in another slot and its SET is sent beside the script.
// ARGV: the member, the list's TTL, '1' when that TTL may have to grow, the record's value and TTL. A new
// list gets its TTL; an existing one only when asked, and only upwards (GT).
const PUT_LISTED = `#!lua
if KEYS[2] then redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[5]) end
if redis.call('RPUSH', KEYS[1], ARGV[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
elseif ARGV[3] == '1' then
  redis.call('EXPIRE', KEYS[1], ARGV[2], 'GT')
end
return 1`;

/** A list index's TTL covers its records to the end of a clock hour: one TTL change per list and hour, not one per append. */
const LIST_EXPIRY_STEP = 3600;
/**
 * Pipelined index sets (indexAdd) live to the end of a step of a tenth of their member's TTL (a minute at
 * least, a day at most, counted from the epoch): their TTL is written once a step per process, and they
 * outlive what they list by at most that step (a day for a 30-day grant, six minutes for an hour's).
 */
const indexExpiryStep = (ttl: number) => Math.min(86_400, Math.max(60, Math.floor(ttl / 10)));

// One key: push, trim to the newest ARGV[2] items, extend the TTL to at least ARGV[3] (a queue, see Store.queuePush).
const QUEUE_PUSH = `
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1`;

// KEYS[1] the index, KEYS[2..] the buckets; ARGV: ttl, drop-below score, then per increment its bucket's
// KEYS position, score, field and amount (Store.countersAdd).
const COUNTERS_ADD = `
for i = 3, #ARGV, 4 do
  local bucket = KEYS[tonumber(ARGV[i])]
  redis.call('HINCRBY', bucket, ARGV[i + 2], ARGV[i + 3])
  redis.call('ZADD', KEYS[1], ARGV[i + 1], bucket)
end
for i = 2, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1`;

type Client = Redis | Cluster;

/** A consumable record as stored: `<consumed-at>|<payload>`, nothing before the bar until consumed. */
function parseConsumable(stored: string): StoredModel {
  const bar = stored.indexOf('|');
  if (bar < 0) return { payload: stored };
  const payload = stored.slice(bar + 1);
  return bar === 0 ? { payload } : { payload, consumed: Number(stored.slice(0, bar)) };
}

/** A pipeline's replies: the first error thrown, as a single command's would be. */
function execPipeline(replies: [Error | null, unknown][] | null): void {
  for (const [err] of replies ?? []) if (err) throw err;
}

function consumeResult(reply: number): ConsumeResult {
  return reply === 1 ? 'consumed' : reply === 2 ? 'reused' : reply === 3 ? 'repeated' : 'missing';
}

/** How long calls must succeed without an availability failure before a recovery is reported (ioredis 'ready' reports one at once). */
const RECOVERY_HOLD_MS = 2000;

interface Scripts {
  lkPutModel(...args: (string | number)[]): Promise<number>;
  lkConsumeModel(...args: (string | number)[]): Promise<number>;
  lkRotateRefresh(...args: (string | number)[]): Promise<number>;
  lkDeleteIndexed(...args: (string | number)[]): Promise<number>;
  lkAdvanceCounter(...args: (string | number)[]): Promise<number>;
  lkIndexAdd(...args: (string | number)[]): Promise<number>;
  lkReplaceIf(...args: (string | number)[]): Promise<number>;
  lkQueuePush(...args: (string | number)[]): Promise<number>;
  lkPutListed(...args: (string | number)[]): Promise<number>;
  lkCountersAdd(...args: (string | number)[]): Promise<number>;
}

/**
 * Replies that mean "Redis cannot serve right now", as opposed to a bug in a command. OOM: a full
 * Redis with `maxmemory-policy noeviction` (docs/scaling.md) refuses writes rather than evicting grants.
 */
const UNAVAILABLE_REPLY = /^(LOADING|BUSY|CLUSTERDOWN|TRYAGAIN|MASTERDOWN|READONLY|NOREPLICAS|MISCONF|OOM)/;

function isUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return true;
  if (err.name === 'ReplyError') return UNAVAILABLE_REPLY.test(err.message);
  return true; // connection refused or closed, offline, command timed out, retries exhausted
}

/**
 * Connection options that fail fast: ioredis's defaults queue commands while disconnected and retry them,
 * so a request could hang for many seconds during an outage instead of answering 503.
 */
export function redisOptions(timeoutMs: number): RedisOptions {
  return {
    enableOfflineQueue: false,
    // A command that was in flight when the connection dropped has already failed for its caller
    // (503, by `commandTimeout`): it must not be replayed behind their back once Redis is back.
    // ioredis' default resends it, so a "failed" consume or write would still take effect later.
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 1,
    commandTimeout: timeoutMs,
    connectTimeout: Math.max(timeoutMs, 2000),
    retryStrategy: (attempt) => Math.min(50 * attempt, 1000),
    enableAutoPipelining: true,
  };
}

export function connectRedis(url: string, timeoutMs: number, password?: string): Redis {
  return new Redis(url, { ...redisOptions(timeoutMs), ...(password ? { password } : {}) });
}

export interface HostPort {
  host: string;
  port: number;
}

/**
 * A Redis Cluster client with the same fail-fast behaviour: no offline queue at the cluster level (a
 * command for a slot whose node is not connected fails at once), and the per-connection deadline,
 * retry and no-replay options of `redisOptions` on every node connection. Every multi-key command
 * and script of RedisStore stays inside one hash slot (keys.ts), so none is refused with CROSSSLOT.
 */
export function connectCluster(nodes: HostPort[], timeoutMs: number, password?: string): Cluster {
  const { enableOfflineQueue: _queue, retryStrategy, enableAutoPipelining: _pipelining, ...perNode } = redisOptions(timeoutMs);
  return new Cluster(nodes, {
    enableOfflineQueue: false,
    // Off: ioredis groups auto-pipelined commands by the node of their first key, and mis-groups our
    // scripts (their first argument is the key count), failing concurrent writes to different slots.
    enableAutoPipelining: false,
    clusterRetryStrategy: (attempt) => retryStrategy?.(attempt) ?? 1000,
    slotsRefreshTimeout: Math.max(timeoutMs, 1000),
    redisOptions: { ...perNode, ...(password ? { password } : {}) },
  });
}

/**
 * A client of the master that the Sentinels name `name`; after a failover it reconnects to the new
 * master (commands meanwhile fail fast, as with a single Redis). `password` is the master's, not
 * the Sentinels'.
 */
export function connectSentinel(sentinels: HostPort[], name: string, timeoutMs: number, password?: string): Redis {
  return new Redis({
    ...redisOptions(timeoutMs),
    sentinels,
    name,
    sentinelCommandTimeout: Math.max(timeoutMs, 1000),
    ...(password ? { password } : {}),
  });
}

export class RedisStore implements Store {
  readonly kind = 'redis';
  readonly client: Client;
  readonly #scripts: Scripts;
  // Availability as seen from the connection and from call outcomes, reported once per transition.
  #available = true;
  #closing = false;
  #lastFailure = 0;
  readonly #availabilityListeners: ((available: boolean, reason?: string) => void)[] = [];
  /**
   * Until when (epoch s) this process has made each list index live (putListed), so that an append asks
   * for a longer TTL only when its record outlives that. A list deleted meanwhile is re-created by the
   * append, which then sets its TTL whatever this says.
   */
  readonly #listExpiry = new Map<string, number>();
  /**
   * Until when (epoch s) this process has made each pipelined index set live (indexAdd), rounded up to a
   * step (`indexExpiryStep`): an add whose member that covers sends SADD alone, so a person's or a day's
   * index costs one EXPIRE a day instead of one per sign-in. Forgotten when this process removes a member
   * (the set may have emptied, and Redis deleted it). A set emptied by another process comes back from
   * SADD without a TTL; the next add after this memory lapses (a step, a day at most) gives it one again
   * (EXPIRE NX), and its members expire on their own meanwhile.
   */
  readonly #indexExpiry = new Map<string, number>();

  constructor(client: Client) {
    this.client = client;
    // Connection errors reach callers as StorageUnavailable; without a listener ioredis prints every
    // failed reconnect attempt to stderr ("Unhandled error event"), outside the JSON log.
    client.on('error', () => {});
    client.defineCommand('lkPutModel', { lua: PUT_MODEL });
    client.defineCommand('lkConsumeModel', { lua: CONSUME_MODEL });
    client.defineCommand('lkRotateRefresh', { lua: ROTATE_REFRESH });
    client.defineCommand('lkDeleteIndexed', { lua: DELETE_INDEXED, numberOfKeys: 1 });
    client.defineCommand('lkAdvanceCounter', { lua: ADVANCE_COUNTER, numberOfKeys: 1 });
    client.defineCommand('lkIndexAdd', { lua: INDEX_ADD, numberOfKeys: 1 });
    client.defineCommand('lkReplaceIf', { lua: REPLACE_IF, numberOfKeys: 1 });
    client.defineCommand('lkQueuePush', { lua: QUEUE_PUSH, numberOfKeys: 1 });
    client.defineCommand('lkPutListed', { lua: PUT_LISTED });
    client.defineCommand('lkCountersAdd', { lua: COUNTERS_ADD });
    // defineCommand above added the scripts as methods, which ioredis's types cannot know.
    this.#scripts = client as Client & Scripts;
    client.on('ready', () => this.#setAvailable(true));
    client.on('close', () => this.#setAvailable(false, 'connection to Redis closed'));
  }

  onAvailabilityChange(listener: (available: boolean, reason?: string) => void): void {
    this.#availabilityListeners.push(listener);
  }

  #setAvailable(available: boolean, reason?: string) {
    if (this.#closing || available === this.#available) return;
    this.#available = available;
    for (const listener of this.#availabilityListeners) listener(available, reason);
  }

  /** Resolves once connected; rejects with StorageUnavailable after `timeoutMs`. */
  async ready(timeoutMs: number): Promise<void> {
    if (this.client.status === 'ready') return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new StorageUnavailable(new Error(`Redis not ready after ${timeoutMs} ms`)));
      }, timeoutMs);
      const onReady = () => {
        cleanup();
        resolve();
      };
      const cleanup = () => {
        clearTimeout(timer);
        this.client.off('ready', onReady);
      };
      this.client.on('ready', onReady);
    });
  }

  async #call<T>(run: () => Promise<T>): Promise<T> {
    try {
      const result = await run();
      // Back once calls succeed and none has failed for a while: a Redis that refuses only writes (OOM,
      // READONLY) while reads succeed stays "down" instead of flapping once per request.
      if (!this.#available && performance.now() - this.#lastFailure >= RECOVERY_HOLD_MS) this.#setAvailable(true);
      return result;
    } catch (err) {
      if (isUnavailable(err)) {
        this.#lastFailure = performance.now();
        this.#setAvailable(false, err instanceof Error ? err.message : 'Redis is unavailable');
        throw new StorageUnavailable(err);
      }
      throw err;
    }
  }

  get(key: string) {
    return takeReadAhead<string | null>(this, key) ?? this.#call(() => this.client.get(key));
  }

  readAhead(keys: string[]) {
    const ahead = keysToReadAhead(this, keys);
    if (!ahead?.fresh.length) return;
    const { fresh, record } = ahead;
    // On a cluster the keys live in different slots: one MGET would be refused (CROSSSLOT).
    if (this.client instanceof Cluster || fresh.length === 1) {
      // A key that holds no string (a hash of an earlier version) reads as absent, as in an MGET.
      const string = (key: string) => this.client.get(key).catch((err: unknown) => {
        if (err instanceof Error && err.message.startsWith('WRONGTYPE')) return null;
        throw err;
      });
      for (const key of fresh) record(key, this.#call(() => string(key)));
      return;
    }
    // MGET answers nil for a key that holds no string (GET would fail with WRONGTYPE): absent, as in the embedded store.
    const answers = this.#call(() => this.client.mget(fresh));
    fresh.forEach((key, i) => record(key, answers.then((values) => values[i] ?? null)));
  }

  set(key: string, value: string, options: { ttl?: number; ifAbsent?: boolean } = {}) {
    dropReadAhead(this, [key]);
    return this.#call(async () => {
      const { ttl, ifAbsent } = options;
      let reply: string | null;
      if (ttl && ifAbsent) reply = await this.client.set(key, value, 'EX', ttl, 'NX');
      else if (ttl) reply = await this.client.set(key, value, 'EX', ttl);
      else if (ifAbsent) reply = await this.client.set(key, value, 'NX');
      else reply = await this.client.set(key, value);
      return reply === 'OK';
    });
  }

  del(...keys: string[]) {
    if (keys.length === 0) return Promise.resolve(0);
    dropReadAhead(this, keys);
    for (const key of keys) this.#indexExpiry.delete(key);
    // One DEL per key: keys of different records may live in different cluster slots.
    return this.#call(async () => (await Promise.all(keys.map((k) => this.client.del(k)))).reduce((a, b) => a + b, 0));
  }

  setAdd(key: string, member: string) {
    return this.#call(async () => void (await this.client.sadd(key, member)));
  }

  setRemove(key: string, member: string) {
    this.#indexExpiry.delete(key);
    return this.#call(async () => (await this.client.srem(key, member)) === 1);
  }

  setMembers(key: string) {
    return this.#call(() => this.client.smembers(key));
  }

  setCount(key: string) {
    return this.#call(() => this.client.scard(key));
  }

  sortedAdd(key: string, member: string, score = 0) {
    return this.#call(async () => void (await this.client.zadd(key, score, member)));
  }

  sortedRemove(key: string, member: string) {
    return this.#call(async () => (await this.client.zrem(key, member)) === 1);
  }

  sortedCount(key: string) {
    return this.#call(() => this.client.zcard(key));
  }

  sortedRangeByLex(key: string, options: { after?: string; prefix?: string; limit: number }) {
    const { after, prefix, limit } = options;
    const start = after !== undefined && (prefix === undefined || after >= prefix) ? `(${after}` : prefix !== undefined ? `[${prefix}` : '-';
    // 0xff never occurs in UTF-8: every member starting with the prefix sorts before prefix + 0xff.
    const end = prefix !== undefined ? Buffer.concat([Buffer.from(`[${prefix}`), Buffer.from([0xff])]) : '+';
    return this.#call(() => this.client.zrangebylex(key, start, end, 'LIMIT', 0, limit));
  }

  sortedRangeByScore(key: string, min: number, limit: number) {
    return this.#call(() => this.client.zrangebyscore(key, min, '+inf', 'LIMIT', 0, limit));
  }

  sortedRemoveByScore(key: string, max: number) {
    return this.#call(async () => void (await this.client.zremrangebyscore(key, '-inf', max)));
  }

  streamAdd(key: string, entry: string, maxLength: number) {
    return this.#call(async () => (await this.client.xadd(key, 'MAXLEN', '~', maxLength, '*', 'e', entry))!);
  }

  streamRevRange(key: string, end: string, start: string, count: number) {
    return this.#call(async () => {
      const rows = await this.client.xrevrange(key, end, start, 'COUNT', count);
      return rows.map(([id, fields]) => ({ id, entry: fields[fields.indexOf('e') + 1] ?? '{}' }));
    });
  }

  streamLength(key: string) {
    return this.#call(() => this.client.xlen(key));
  }

  countersAdd(index: string, increments: { bucket: string; score: number; field: string; by: number }[], ttl: number, dropBelow: number) {
    if (!increments.length) return Promise.resolve();
    const buckets = [...new Set(increments.map((i) => i.bucket))];
    const args = increments.flatMap((i) => [buckets.indexOf(i.bucket) + 2, i.score, i.field, i.by]);
    return this.#call(async () => void (await this.#scripts.lkCountersAdd(buckets.length + 1, index, ...buckets, ttl, dropBelow, ...args)));
  }

  countersRevRange(index: string, max: number, min: number, limit: number) {
    return this.#call(async () => {
      const bound = (n: number) => (Number.isFinite(n) ? n : n > 0 ? '+inf' : '-inf');
      const rows = await this.client.zrevrangebyscore(index, bound(max), bound(min), 'WITHSCORES', 'LIMIT', 0, limit);
      const buckets: { bucket: string; score: number }[] = [];
      for (let i = 0; i < rows.length; i += 2) buckets.push({ bucket: rows[i]!, score: Number(rows[i + 1]) });
      if (!buckets.length) return [];
      // The buckets share the index's slot: one pipeline, also on a cluster.
      const replies = (await this.client.pipeline(buckets.map((b) => ['hgetall', b.bucket])).exec()) ?? [];
      return buckets.map((b, i) => {
        const [err, fields] = replies[i] ?? [null, {}];
        if (err) throw err;
        const counters: Record<string, number> = {};
        for (const [field, n] of Object.entries((fields ?? {}) as Record<string, string>)) counters[field] = Number(n);
        return { ...b, counters };
      });
    });
  }

  advanceCounter(key: string, value: number, ttl: number) {
    if (!Number.isSafeInteger(value) || !Number.isInteger(ttl) || ttl <= 0) {
      return Promise.reject(new TypeError('advanceCounter needs an integer value and a positive integer ttl'));
    }
    dropReadAhead(this, [key]);
    return this.#call(async () => (await this.#scripts.lkAdvanceCounter(key, value, ttl)) === 1);
  }

  advanceCounterSeen(key: string, value: number, ttl: number) {
    if (!Number.isSafeInteger(value) || !Number.isInteger(ttl) || ttl <= 0) {
      return Promise.reject(new TypeError('advanceCounterSeen needs an integer value and a positive integer ttl'));
    }
    dropReadAhead(this, [key]);
    return this.#call(async () => {
      const before = await this.client.set(key, String(value), 'EX', ttl, 'GET');
      if (before === null || !(Number(before) >= value)) return true;
      // Raised meanwhile by another caller: never lower it (the script keeps the higher of the two).
      if (Number(before) > value) await this.#scripts.lkAdvanceCounter(key, before, ttl);
      return false;
    });
  }

  replaceIf(key: string, expected: string, value: string, options: { ttl?: number } = {}) {
    if (options.ttl !== undefined && (!Number.isInteger(options.ttl) || options.ttl <= 0)) return Promise.reject(new TypeError('replaceIf needs a positive integer ttl'));
    dropReadAhead(this, [key]);
    const args = options.ttl === undefined ? [key, expected, value] : [key, expected, value, options.ttl];
    return this.#call(async () => (await this.#scripts.lkReplaceIf(...args)) === 1);
  }

  putModel(key: string, payload: string, ttl: number, indexKey?: string, options: PutModelOptions = {}) {
    dropReadAhead(this, [key]);
    const value = options.consumable === false ? payload : `|${payload}`;
    // A record of no grant (a client-credentials token): one SET replaces whatever was there.
    if (!indexKey) return this.#call(async () => void (await this.client.set(key, value, 'EX', ttl)));
    if (options.index === 'outlives') {
      // The grant's index already lives longer: no TTL to read, no script (same slot: one pipeline, also on a
      // cluster). NX only gives a TTL to an index that a revocation deleted meanwhile and this SADD made again.
      return this.#call(async () => execPipeline(await this.client.pipeline().set(key, value, 'EX', ttl).sadd(indexKey, key).expire(indexKey, ttl, 'NX').exec()));
    }
    if (options.index === 'owner') {
      // The grant itself: its first save gives its new index its TTL (NX). A grant's expiry never moves and
      // nothing extends an index below it, so a later save of the grant finds its index living long enough.
      return this.#call(async () => execPipeline(await this.client.pipeline().set(key, value, 'EX', ttl).sadd(indexKey, key).expire(indexKey, ttl, 'NX').exec()));
    }
    return this.#call(async () => void (await this.#scripts.lkPutModel(2, key, indexKey, value, ttl)));
  }

  putIndexed(records: RotatedRecord[], indexKey: string, holder?: string) {
    if (!records.length) return Promise.resolve(true);
    dropReadAhead(this, records.map((r) => r.key));
    const pipeline = this.client.pipeline();
    for (const r of records) pipeline.set(r.key, r.consumable ? `|${r.payload}` : r.payload, 'EX', r.ttl);
    const ttl = Math.max(...records.map((r) => r.ttl));
    const members = records.map((r) => r.key);
    // Same slot as the records (the grant's tag): one pipeline, also on a cluster. NX as in putModel's `outlives`.
    if (holder === undefined) {
      pipeline.sadd(indexKey, ...members).expire(indexKey, ttl, 'NX');
      return this.#call(async () => (execPipeline(await pipeline.exec()), true));
    }
    // The holder is listed while the index lives: SADD adds it back only to an index a revocation deleted
    // meanwhile, and only then is anything more sent (new records always count as added).
    pipeline.sadd(indexKey, holder, ...members);
    return this.#call(async () => {
      const replies = await pipeline.exec();
      execPipeline(replies);
      if (Number(replies?.at(-1)?.[1]) <= members.length) return true;
      if (await this.client.exists(holder)) {
        await this.client.expire(indexKey, ttl, 'NX');
        return true;
      }
      await this.client.del(indexKey, ...members);
      return false;
    });
  }

  getModel(key: string, options: { consumable?: boolean; take?: boolean | TakeLeaving } = {}): Promise<StoredModel | null> {
    // Read ahead: only a plain read (a take is read now).
    const ahead = !options.take ? takeReadAhead<string | null>(this, key) : undefined;
    if (ahead && options.consumable === false) return ahead.then((payload) => (payload == null ? null : { payload }));
    // A consumable record as stored, with its mark; nil is read again (MGET answers nil for a hash of an earlier version too).
    if (ahead) return ahead.then((stored) => (stored == null ? this.getModel(key, options) : parseConsumable(stored)));
    if (options.take) dropReadAhead(this, [key]);
    return this.#call(async (): Promise<StoredModel | null> => {
      if (options.consumable === false) {
        const { take } = options;
        const payload = typeof take === 'object' ? await this.client.set(key, take.leave, 'EX', take.ttl, 'GET') : take ? await this.client.getdel(key) : await this.client.get(key);
        return payload == null ? null : { payload };
      }
      let stored: string | null;
      try {
        stored = await this.client.get(key);
      } catch (err) {
        if (!(err instanceof Error && err.message.startsWith('WRONGTYPE'))) throw err;
        // A hash written by an earlier version: `p` payload, `c` consumed-at.
        const [payload, consumed] = await this.client.hmget(key, 'p', 'c');
        if (payload == null) return null;
        return consumed == null ? { payload } : { payload, consumed: Number(consumed) };
      }
      return stored == null ? null : parseConsumable(stored);
    });
  }

  consumeModel(key: string, indexKey: string | undefined, now: number, graceSeconds = 0, asRead?: string) {
    // A reuse deletes the grant's records (its hash tag's), which this does not name.
    dropReadAhead(this, sameTag(key));
    if (asRead !== undefined && graceSeconds === 0) return this.#consumeAsRead(key, indexKey, now, asRead);
    const keys = indexKey ? [key, indexKey] : [key];
    return this.#call(async (): Promise<ConsumeResult> => consumeResult(await this.#scripts.lkConsumeModel(keys.length, ...keys, now, graceSeconds)));
  }

  /**
   * One command: SET … XX KEEPTTL GET puts our mark on the record as read and says what it held, so of
   * parallel consumers exactly one sees it unmarked. Whoever sees a mark revokes the grant, as the script does.
   */
  #consumeAsRead(key: string, indexKey: string | undefined, now: number, asRead: string) {
    return this.#call(async (): Promise<ConsumeResult> => {
      let before: string | null;
      try {
        before = await this.client.set(key, `${now}|${asRead}`, 'KEEPTTL', 'XX', 'GET');
      } catch (err) {
        // A hash of an earlier version: the script reads and marks it.
        if (!(err instanceof Error && err.message.startsWith('WRONGTYPE'))) throw err;
        const keys = indexKey ? [key, indexKey] : [key];
        return consumeResult(await this.#scripts.lkConsumeModel(keys.length, ...keys, now, 0));
      }
      if (before == null) return 'missing';
      if (parseConsumable(before).consumed === undefined) return 'consumed';
      if (indexKey) await this.#scripts.lkDeleteIndexed(indexKey);
      return 'reused';
    });
  }

  rotateModel(presented: { key: string; payload: string }, indexKey: string, records: RotatedRecord[], now: number, options: { graceSeconds?: number; indexTtl?: number } = {}) {
    dropReadAhead(this);
    const args = records.flatMap((r) => [r.consumable ? `|${r.payload}` : r.payload, r.ttl]);
    return this.#call(async (): Promise<ConsumeResult> =>
      consumeResult(await this.#scripts.lkRotateRefresh(2 + records.length, presented.key, indexKey, ...records.map((r) => r.key), now, options.graceSeconds ?? 0, `${now}|${presented.payload}`, options.indexTtl ?? 0, ...args)),
    );
  }

  deleteIndexed(indexKey: string, model?: string) {
    dropReadAhead(this);
    this.#indexExpiry.delete(indexKey);
    const args = model ? [indexKey, `:${model}:`] : [indexKey];
    return this.#call(async () => void (await this.#scripts.lkDeleteIndexed(...args)));
  }

  indexAdd(key: string, member: string, ttl: number, options: { pipelined?: boolean } = {}) {
    if (!Number.isInteger(ttl) || ttl <= 0) return Promise.reject(new TypeError('indexAdd needs a positive integer ttl'));
    if (!options.pipelined) return this.#call(async () => void (await this.#scripts.lkIndexAdd(key, member, ttl)));
    const now = Math.floor(Date.now() / 1000);
    if ((this.#indexExpiry.get(key) ?? 0) >= now + ttl) return this.#call(async () => void (await this.client.sadd(key, member)));
    const step = indexExpiryStep(ttl);
    const until = Math.ceil((now + ttl) / step) * step;
    return this.#call(async () => {
      // GT only ever lengthens a TTL; it leaves a set that has none (a new one) as it is: NX then gives it one.
      const replies = await this.client.pipeline().sadd(key, member).expireat(key, until, 'GT').exec();
      execPipeline(replies);
      if (replies?.[1]?.[1] === 0) await this.client.expireat(key, until, 'NX');
      // Bounded: forgetting only costs an EXPIRE more.
      if (this.#indexExpiry.size >= 50_000) this.#indexExpiry.clear();
      this.#indexExpiry.set(key, until);
    });
  }

  putListed(key: string, payload: string, ttl: number, listKey: string, member: string) {
    dropReadAhead(this, [key]);
    const now = Math.floor(Date.now() / 1000);
    const until = Math.ceil((now + ttl) / LIST_EXPIRY_STEP) * LIST_EXPIRY_STEP;
    const grow = (this.#listExpiry.get(listKey) ?? 0) < until ? '1' : '0';
    const remember = () => {
      // Lists are one per client and day: a process that serves very many clients forgets and asks again.
      if (this.#listExpiry.size >= 10_000) this.#listExpiry.clear();
      if ((this.#listExpiry.get(listKey) ?? 0) < until) this.#listExpiry.set(listKey, until);
    };
    return this.#call(async () => {
      if (this.client instanceof Cluster) {
        await Promise.all([this.client.set(key, payload, 'EX', ttl), this.#scripts.lkPutListed(1, listKey, member, until - now, grow)]);
      } else {
        await this.#scripts.lkPutListed(2, listKey, key, member, until - now, grow, payload, ttl);
      }
      remember();
    });
  }

  listMembers(key: string) {
    return this.#call(() => this.client.lrange(key, 0, -1));
  }

  queuePush(key: string, value: string, maxLength: number, ttl: number) {
    return this.#call(async () => void (await this.#scripts.lkQueuePush(key, value, maxLength, ttl)));
  }

  queueTake(key: string) {
    return this.#call(() => this.client.rpop(key));
  }

  publish(channel: string, message: string) {
    return this.#call(async () => void (await this.client.publish(channel, message)));
  }

  /** A connection of its own (a subscribed connection can do nothing else); ioredis resubscribes after a reconnect. */
  async subscribe(channel: string, onMessage: (message: string) => void, onReset: () => void) {
    // Queue the SUBSCRIBE until connected (the command connection fails fast instead).
    const subscriber: Client =
      this.client instanceof Cluster ? this.client.duplicate(undefined, { enableOfflineQueue: true }) : this.client.duplicate({ enableOfflineQueue: true });
    subscriber.on('error', () => {});
    let connectedBefore = false;
    subscriber.on('ready', () => {
      // Messages published while we were away are lost: whatever was cached may be stale.
      if (connectedBefore) onReset();
      connectedBefore = true;
    });
    subscriber.on('message', (ch: string, message: string) => {
      if (ch === channel) onMessage(message);
    });
    await this.#call(() => subscriber.subscribe(channel));
    return async () => {
      await subscriber.quit().catch(() => subscriber.disconnect());
    };
  }

  ping() {
    return this.#call(async () => void (await this.client.ping()));
  }

  /** INFO memory of the node that answers (on a Cluster: any one master). */
  info(): Promise<StoreInfo> {
    return this.#call(async () => {
      const text = await this.client.info('memory');
      const field = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(text)?.[1] ?? 0);
      return { kind: 'redis' as const, usedMemory: field('used_memory'), maxMemory: field('maxmemory') };
    });
  }

  async close() {
    this.#closing = true;
    await this.client.quit().catch(() => this.client.disconnect());
  }
}
