import { RateLimiterRes } from 'rate-limiter-flexible';
import type { Config } from '../config.ts';
import { digest, keys } from '../storage/keys.ts';
import { createLimiter, type Limiter } from '../storage/limiters.ts';
import { readAheadSentAt } from '../storage/read-ahead.ts';
import { StorageUnavailable, type Store } from '../storage/store.ts';

/**
 * Brute-force protection for sign-in factors.
 *
 * - Failures are counted per factor (password, TOTP, recovery code: separate buckets, so many wrong
 *   codes do not hide behind one right password) and per subject: the account and the client IP.
 *   The counters are rate-limiter-flexible limiters, in Redis when the store is Redis (shared by every
 *   node and surviving new sign-in attempts), in memory with the embedded store.
 * - `maxFailures` consecutive failures lock the subject — every factor of it — for a time that grows
 *   with each lockout in `historySeconds` (1 min, 5 min, 15 min, 1 h by default). While locked, even the
 *   right password or code is refused: callers `check` before verifying anything.
 * - A success resets the account's counter of that factor (not the IP's: an attacker's own account
 *   must not wash an IP clean).
 *
 * The lock records and their growth are ours (kept in the Store, timed by the injected clock, so the
 * schedule and expiry are tested without sleeping); the counting is the library's.
 */
export type Factor = 'password' | 'totp' | 'recovery' | 'passkey';
export const FACTORS: readonly Factor[] = ['password', 'totp', 'recovery', 'passkey'];

export interface Attempt {
  factor: Factor;
  /**
   * Who the attempt is for: one stable name per person at every step. Use the normalized email: it
   * exists before the account is known, so an unknown account is throttled exactly like a known one.
   */
  account: string;
  /** The client IP, when known. */
  ip?: string;
}

export type Verdict = { allowed: true } | { allowed: false; retryAfterSeconds: number };

export type LockoutEventName = 'lockout.started' | 'lockout.ended';
export interface LockoutEvent {
  subject: 'account' | 'ip';
  /** The account name or IP, as the caller gave it (audit logs need to say who). */
  id: string;
  /** The factor whose failures started it (started only). */
  factor?: Factor;
  /** Which lockout in the current history this is (1, 2, …). */
  lockouts: number;
  /** How long it lasts (started only). */
  seconds?: number;
  /** Why it ended (ended only): its time ran out, or an operator unlocked it. */
  reason?: 'expired' | 'unlocked';
}

export interface Threshold {
  /** Consecutive failures that start a lockout. */
  maxFailures: number;
  /** A failure is forgotten this long after the first one of its run. */
  windowSeconds: number;
}

export interface LockoutOptions {
  now?: () => number;
  /** Awaited, so the audit line is written before the attempt is answered. */
  onEvent?: (name: LockoutEventName, data: LockoutEvent) => unknown;
  /** 10 in a day: far below the 100 consecutive failures NIST SP 800-63B §5.2.2 allows. */
  account?: Threshold;
  /** One IP can be many people (NAT, a company proxy): a higher bar, over a shorter window. It still stops
   * one source spraying passwords over many accounts, which per-account counting cannot see. */
  ip?: Threshold;
  /** Lockout durations in seconds, by how many lockouts came before; the last one repeats. */
  schedule?: number[];
  /** How long a lockout counts towards the next one's length, after it ends. */
  historySeconds?: number;
  /**
   * Keeps this instance's counters and lock records apart from another's on the same store (e.g.
   * `client` for client authentication at the token endpoints, whose "account" is a client id): a
   * misbehaving service behind an IP must not lock people's sign-ins from that IP.
   */
  namespace?: string;
  /**
   * Who an account-kind subject is, for the list of current lockouts (admin API): e.g. the account's id,
   * or a keyed digest of what was typed. Never what was typed itself: people type passwords into the email field.
   */
  describe?: (typed: string) => Promise<Record<string, string | undefined>>;
  /**
   * Remember subject keys (digests) in memory: for subjects that are never secrets and come back on every
   * request (client ids and IPs at the token endpoints), never for what people type.
   */
  rememberSubjectKeys?: boolean;
}

/**
 * What a lockout guards: people's sign-ins, client authentication at the token endpoints, device user
 * codes. Each kind counts apart (its own namespace of counters and lock records): a misbehaving service
 * behind an IP must not lock people's sign-ins from that IP.
 */
export const LOCKOUT_SCOPES = ['signin', 'client', 'device'] as const;
export type LockoutScope = (typeof LOCKOUT_SCOPES)[number];
const SCOPE_NAMESPACES: Record<LockoutScope, string | undefined> = { signin: undefined, client: 'client', device: 'device' };

/** Each kind's thresholds: its "account" (a person, a client id at an IP, a code-entering IP) and the IP. */
export type LockoutSettings = Record<LockoutScope, { account: Threshold; ip: Threshold }>;

/** The config schema's defaults (src/config.ts); also what a Lockout without thresholds uses. */
export const DEFAULT_LOCKOUTS: LockoutSettings = {
  signin: { account: { maxFailures: 10, windowSeconds: 24 * 60 * 60 }, ip: { maxFailures: 50, windowSeconds: 60 * 60 } },
  client: { account: { maxFailures: 10, windowSeconds: 60 * 60 }, ip: { maxFailures: 50, windowSeconds: 60 * 60 } },
  device: { account: { maxFailures: 10, windowSeconds: 60 * 60 }, ip: { maxFailures: 50, windowSeconds: 60 * 60 } },
};

/** The configuration's lockout settings (src/config.ts), by name: the CLI reads these too. */
export const LOCKOUT_SETTING_NAMES = [
  'LOCKOUT_ACCOUNT_MAX_FAILURES', 'LOCKOUT_ACCOUNT_WINDOW_SECONDS', 'LOCKOUT_IP_MAX_FAILURES', 'LOCKOUT_IP_WINDOW_SECONDS',
  'CLIENT_AUTH_MAX_FAILURES', 'CLIENT_AUTH_WINDOW_SECONDS', 'DEVICE_CODE_MAX_FAILURES', 'DEVICE_CODE_WINDOW_SECONDS',
] as const;
type LockoutConfig = Pick<Config, (typeof LOCKOUT_SETTING_NAMES)[number]>;

/** The settings of every kind, from the configuration: the server, the CLI and the admin API read the same. */
export function lockoutSettings(config: LockoutConfig): LockoutSettings {
  // One IP threshold for every kind, each counted apart.
  const ip = { maxFailures: config.LOCKOUT_IP_MAX_FAILURES, windowSeconds: config.LOCKOUT_IP_WINDOW_SECONDS };
  return {
    signin: { account: { maxFailures: config.LOCKOUT_ACCOUNT_MAX_FAILURES, windowSeconds: config.LOCKOUT_ACCOUNT_WINDOW_SECONDS }, ip },
    client: { account: { maxFailures: config.CLIENT_AUTH_MAX_FAILURES, windowSeconds: config.CLIENT_AUTH_WINDOW_SECONDS }, ip },
    device: { account: { maxFailures: config.DEVICE_CODE_MAX_FAILURES, windowSeconds: config.DEVICE_CODE_WINDOW_SECONDS }, ip },
  };
}

/** The scope of a subject key (from `Lockout.current`), or undefined when it is not one. */
export function lockoutScopeOf(key: string): LockoutScope | undefined {
  const m = /^(?:(client|device)-)?(?:account|ip)-[A-Za-z0-9_-]{27}$/.exec(key);
  return m ? ((m[1] as LockoutScope | undefined) ?? 'signin') : undefined;
}

/**
 * The options of the Lockout that owns a kind's keys: its namespace and thresholds. Every Lockout of one
 * kind is built from these, so an operator's unlock finds the counters the server counts in.
 */
export function lockoutOptions(scope: LockoutScope, settings: LockoutSettings = DEFAULT_LOCKOUTS): Pick<LockoutOptions, 'namespace' | 'account' | 'ip'> {
  const namespace = SCOPE_NAMESPACES[scope];
  return { ...(namespace ? { namespace } : {}), account: settings[scope].account, ip: settings[scope].ip };
}

/** A lockout in force, as the admin API lists it (never what was typed: the subject key is a digest). */
export interface CurrentLockout {
  /** The subject key: what `Lockout.unlockKey` takes. */
  key: string;
  scope: LockoutScope;
  subject: 'account' | 'ip';
  until: string;
  lockouts: number;
  [who: string]: unknown;
}

export const DEFAULT_SCHEDULE = [60, 300, 900, 3600];

/** Announces the subject key of each lockout that starts, so that every server drops it from its cache. */
export const LOCKOUT_CHANGES = 'lk:changes:lockout';
/** A safety net under the messages: a "not locked" answer is reused for at most this long. */
const CLEAN_TTL_MS = 30_000;
const CLEAN_MAX_ENTRIES = 50_000;

interface LockRecord {
  /** Epoch ms (injected clock). */
  until: number;
  lockouts: number;
  /** Who it is (LockoutOptions.describe, or the IP), for the list of current lockouts. */
  who?: Record<string, string | undefined>;
}

type Subject = { kind: 'account' | 'ip'; id: string; key: string };

export type AttemptResult =
  | { status: 'ok' }
  | { status: 'failed' }
  | { status: 'locked'; retryAfterSeconds: number };

export class Lockout {
  readonly #store: Store;
  readonly #now: () => number;
  readonly #onEvent: NonNullable<LockoutOptions['onEvent']>;
  readonly #thresholds: Record<Subject['kind'], Threshold>;
  readonly #schedule: number[];
  readonly #historyMs: number;
  readonly #limiters = new Map<string, Limiter>();
  readonly #namespace: string;
  readonly #describe?: LockoutOptions['describe'];
  /**
   * Subjects this server saw unlocked, and until when (injected clock) it may say so without asking
   * storage: the check before every client authentication and sign-in step then costs no round trip.
   * Kept only while `watch` listens, since a lockout started by another server must reach us.
   */
  readonly #clean = new Map<string, number>();
  /**
   * Account subjects whose counter of a factor (`<factor>:<key>`) this server reset and no failure has
   * touched since, as heard on LOCKOUT_CHANGES: a right answer then has nothing to reset (no DEL per step).
   */
  readonly #noFailures = new Set<string>();
  readonly #keys = new Map<string, string>();
  #rememberKeys = false;
  #watching = false;
  /** Bumped by every drop, so that an answer read before a drop is not cached after it. */
  #generation = 0;
  /** When the last drop happened (performance.now()): an answer read ahead before it (Store.readAhead) is not cached. */
  #droppedAt = 0;

  constructor(store: Store, options: LockoutOptions = {}) {
    this.#store = store;
    this.#now = options.now ?? Date.now;
    this.#onEvent = options.onEvent ?? (() => {});
    this.#thresholds = {
      account: options.account ?? DEFAULT_LOCKOUTS.signin.account,
      ip: options.ip ?? DEFAULT_LOCKOUTS.signin.ip,
    };
    this.#schedule = options.schedule ?? DEFAULT_SCHEDULE;
    this.#historyMs = (options.historySeconds ?? 24 * 60 * 60) * 1000;
    this.#namespace = options.namespace ? `${options.namespace}-` : '';
    if (options.describe) this.#describe = options.describe;
    this.#rememberKeys = options.rememberSubjectKeys === true;
    if (this.#thresholds.account.maxFailures > 100) throw new RangeError('NIST SP 800-63B caps consecutive failures at 100');
    if (this.#schedule.length === 0 || this.#schedule.some((s) => !Number.isInteger(s) || s <= 0)) throw new RangeError('the schedule needs positive whole seconds');
    // One limiter per factor and kind of subject: separate buckets, separate key prefixes.
    for (const factor of FACTORS) {
      for (const kind of ['account', 'ip'] as const) {
        const { maxFailures: points, windowSeconds: duration } = this.#thresholds[kind];
        const keyPrefix = `lk:failures:${this.#namespace}${factor}:${kind}`;
        this.#limiters.set(`${factor}:${kind}`, createLimiter(store, { keyPrefix, points, duration }));
      }
    }
  }

  #subjects(attempt: Pick<Attempt, 'account' | 'ip'>): Subject[] {
    const subjects: Subject[] = [{ kind: 'account', id: attempt.account, key: this.#keyOf('account', attempt.account) }];
    if (attempt.ip) subjects.push({ kind: 'ip', id: attempt.ip, key: this.#keyOf('ip', attempt.ip) });
    return subjects;
  }

  /** A subject's key (a digest), remembered for the few subjects that come back on every request (machine clients, their IPs). */
  #keyOf(kind: Subject['kind'], id: string): string {
    if (!this.#rememberKeys) return `${this.#namespace}${kind}-${digest(id)}`;
    const known = this.#keys.get(`${kind}\n${id}`);
    if (known !== undefined) return known;
    if (this.#keys.size >= CLEAN_MAX_ENTRIES) this.#keys.clear();
    const key = `${this.#namespace}${kind}-${digest(id)}`;
    this.#keys.set(`${kind}\n${id}`, key);
    return key;
  }

  /** Library calls reject with a RateLimiterRes when over the limit (never for penalty/delete) or an Error. */
  async #limit<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (err instanceof RateLimiterRes || err instanceof StorageUnavailable) throw err;
      throw new StorageUnavailable(err); // fail closed: no verdict means no sign-in
    }
  }

  async #record(subject: Subject): Promise<LockRecord | undefined> {
    const raw = await this.#store.get(keys.lockout(subject.key));
    return raw ? (JSON.parse(raw) as LockRecord) : undefined;
  }

  /** Seconds left of the subject's lockout, or 0; notices (once) that an expired one has ended. */
  async #lockedFor(subject: Subject): Promise<number> {
    if (this.#knownClean(subject.key, this.#now())) return 0;
    const generation = this.#generation;
    const readAheadAt = readAheadSentAt(keys.lockout(subject.key));
    const record = await this.#record(subject);
    const left = record ? record.until - this.#now() : 0;
    if (left > 0) return Math.ceil(left / 1000);
    if (record) {
      // Several nodes may notice at once: the end is reported by the one that marks it.
      const first = await this.#store.set(`${keys.lockout(subject.key)}:ended:${record.until}`, '1', { ifAbsent: true, ttl: Math.ceil(this.#historyMs / 1000) });
      if (first) await this.#onEvent('lockout.ended', { subject: subject.kind, id: subject.id, lockouts: record.lockouts, reason: 'expired' });
    }
    if (this.#watching && generation === this.#generation && (readAheadAt === undefined || this.#droppedAt < readAheadAt)) {
      if (this.#clean.size >= CLEAN_MAX_ENTRIES) this.#clean.clear();
      this.#clean.set(subject.key, this.#now() + CLEAN_TTL_MS);
    }
    return 0;
  }

  /** Drops one subject (by its key) from the "not locked" cache, or all of them. */
  forget(subjectKey?: string): void {
    this.#generation += 1;
    this.#droppedAt = performance.now();
    if (subjectKey === undefined) {
      this.#clean.clear();
      this.#noFailures.clear();
      return;
    }
    this.#clean.delete(subjectKey);
    for (const factor of FACTORS) this.#noFailures.delete(`${factor}:${subjectKey}`);
  }

  /**
   * Lets the given lockouts answer "not locked" from memory, for as long as this server hears about
   * every lockout that starts anywhere (LOCKOUT_CHANGES on the store); when the subscription was
   * interrupted, everything is dropped. Returns a function that stops listening (and caching).
   */
  static async watch(store: Store, lockouts: Lockout[]): Promise<() => Promise<void>> {
    const stop = await store.subscribe(
      LOCKOUT_CHANGES,
      (key) => lockouts.forEach((l) => l.forget(key)),
      () => lockouts.forEach((l) => l.forget()),
    );
    for (const l of lockouts) l.#watching = true;
    return async () => {
      for (const l of lockouts) {
        l.#watching = false;
        l.forget();
      }
      await stop();
    };
  }

  /** Whether an attempt may be verified at all. Call it first: a locked subject is refused even when right. */
  async check(attempt: Pick<Attempt, 'account' | 'ip'>): Promise<Verdict> {
    const waits = await Promise.all(this.#subjects(attempt).map((s) => this.#lockedFor(s)));
    const retryAfterSeconds = Math.max(0, ...waits);
    return retryAfterSeconds > 0 ? { allowed: false, retryAfterSeconds } : { allowed: true };
  }

  /**
   * Whether memory alone says `check` would allow the attempt (every subject seen unlocked, while
   * `watch` listens); false means "ask `check`". Synchronous: the hot paths' cache hit costs no promise.
   */
  knownUnlocked(attempt: Pick<Attempt, 'account' | 'ip'>): boolean {
    const now = this.#now();
    if (!this.#knownClean(this.#keyOf('account', attempt.account), now)) return false;
    return !attempt.ip || this.#knownClean(this.#keyOf('ip', attempt.ip), now);
  }

  /** Whether memory says the subject is not locked (seen so lately, while `watch` listens for lockouts). */
  #knownClean(subjectKey: string, now: number): boolean {
    return this.#watching && (this.#clean.get(subjectKey) ?? 0) > now;
  }

  /**
   * The lock records `check` would read from storage for this attempt (not those memory answers), for a
   * caller that reads them ahead with its other keys in one command (Store.readAhead).
   */
  recordKeysToRead(attempt: Pick<Attempt, 'account' | 'ip'>): string[] {
    const now = this.#now();
    return this.#subjects(attempt).filter((s) => !this.#knownClean(s.key, now)).map((s) => keys.lockout(s.key));
  }

  /** Counts a failed attempt; may start a lockout. Answers whether further attempts are allowed now. */
  async recordFailure(attempt: Attempt): Promise<Verdict> {
    for (const subject of this.#subjects(attempt)) {
      const limiter = this.#limiters.get(`${attempt.factor}:${subject.kind}`)!;
      const counted = await this.#limit(() => limiter.penalty(subject.key, 1));
      // Every server that skips resetting this account's counters (#noFailures) must hear of the failure.
      if (subject.kind === 'account') {
        this.forget(subject.key);
        if (this.#watching) await this.#store.publish(LOCKOUT_CHANGES, subject.key);
      }
      // Each count is seen by one caller only (atomic increment), so exactly one of many parallel failures
      // starts the lockout. Every multiple, not just the first: should starting one fail (storage away),
      // the run of failures still ends in a lockout.
      if (counted.consumedPoints % this.#thresholds[subject.kind].maxFailures === 0) {
        await this.#startLockout(subject, attempt.factor);
        // The next run of failures starts from zero once this lockout is over.
        await this.#limit(() => limiter.delete(subject.key));
      }
    }
    return this.check(attempt);
  }

  async #startLockout(subject: Subject, factor: Factor) {
    const now = this.#now();
    const previous = await this.#record(subject);
    const lockouts = previous && now - previous.until < this.#historyMs ? previous.lockouts + 1 : 1;
    const seconds = this.#schedule[Math.min(lockouts, this.#schedule.length) - 1]!;
    const who = subject.kind === 'ip' ? { ip: subject.id } : await this.#describe?.(subject.id).catch(() => undefined);
    const record: LockRecord = { until: now + seconds * 1000, lockouts, ...(who ? { who } : {}) };
    await this.#store.set(keys.lockout(subject.key), JSON.stringify(record), { ttl: seconds + Math.ceil(this.#historyMs / 1000) });
    await this.#store.sortedAdd(keys.lockouts, subject.key, record.until);
    this.forget(subject.key);
    await this.#store.publish(LOCKOUT_CHANGES, subject.key);
    await this.#onEvent('lockout.started', { subject: subject.kind, id: subject.id, factor, lockouts, seconds });
  }

  /** The failures of one factor counted now against the attempt's account and IP (the admin's and the tests' view). */
  async failures(attempt: Attempt): Promise<{ account: number; ip: number }> {
    const counts = { account: 0, ip: 0 };
    for (const subject of this.#subjects(attempt)) {
      const res = await this.#limit(() => this.#limiters.get(`${attempt.factor}:${subject.kind}`)!.get(subject.key));
      counts[subject.kind] = res?.consumedPoints ?? 0;
    }
    return counts;
  }

  /** A right answer: the account's failures of this factor are forgotten. */
  async recordSuccess(attempt: Attempt): Promise<void> {
    const [account] = this.#subjects(attempt);
    const known = `${attempt.factor}:${account!.key}`;
    if (this.#watching && this.#noFailures.has(known)) return;
    const generation = this.#generation;
    await this.#limit(() => this.#limiters.get(`${attempt.factor}:account`)!.delete(account!.key));
    if (this.#watching && generation === this.#generation) {
      if (this.#noFailures.size >= CLEAN_MAX_ENTRIES) this.#noFailures.clear();
      this.#noFailures.add(known);
    }
  }

  /**
   * Check, verify, record: the whole guard around one factor. `verify` is not called while locked; its
   * `not-counted` is a failure that counts against nobody (it says nothing about anyone's secret).
   */
  async attempt(attempt: Attempt, verify: () => Promise<boolean | 'not-counted'>): Promise<AttemptResult> {
    const before = await this.check(attempt);
    if (!before.allowed) return { status: 'locked', retryAfterSeconds: before.retryAfterSeconds };
    const verdict = await verify();
    if (verdict === 'not-counted') return { status: 'failed' };
    if (verdict) {
      await this.recordSuccess(attempt);
      return { status: 'ok' };
    }
    const after = await this.recordFailure(attempt);
    return after.allowed ? { status: 'failed' } : { status: 'locked', retryAfterSeconds: after.retryAfterSeconds };
  }

  /** Ends an account's (or IP's) lockout and forgets its failures and history: the operator's `user unlock`. */
  async unlock(target: { account: string } | { ip: string }): Promise<boolean> {
    const [subject] = 'account' in target ? this.#subjects({ account: target.account }) : [{ kind: 'ip' as const, id: target.ip, key: `${this.#namespace}ip-${digest(target.ip)}` }];
    return this.#unlock(subject!);
  }

  /**
   * The same, by subject key (from `Lockout.current`): the admin API unlocks what it listed without
   * knowing what was typed. False when the key is not one of this instance's namespace.
   */
  async unlockKey(key: string): Promise<boolean> {
    const m = new RegExp(`^${this.#namespace}(account|ip)-[A-Za-z0-9_-]{27}$`).exec(key);
    if (!m) return false;
    const record = await this.#record({ kind: m[1] as 'account' | 'ip', id: key, key });
    return this.#unlock({ kind: m[1] as 'account' | 'ip', id: record?.who?.ip ?? record?.who?.accountId ?? key, key });
  }

  async #unlock(subject: Subject): Promise<boolean> {
    const record = await this.#record(subject);
    await this.#store.del(keys.lockout(subject.key));
    await this.#store.sortedRemove(keys.lockouts, subject.key);
    this.forget(subject.key);
    for (const factor of FACTORS) await this.#limit(() => this.#limiters.get(`${factor}:${subject.kind}`)!.delete(subject.key));
    const wasLocked = record !== undefined && record.until > this.#now();
    if (wasLocked) await this.#onEvent('lockout.ended', { subject: subject.kind, id: subject.id, lockouts: record.lockouts, reason: 'unlocked' });
    return wasLocked;
  }

  /** Lockouts in force now, of every namespace, soonest to end first (at most `limit`); ended ones leave the list. */
  static async current(store: Store, options: { now?: number; limit: number }): Promise<CurrentLockout[]> {
    const now = options.now ?? Date.now();
    await store.sortedRemoveByScore(keys.lockouts, now);
    const subjectKeys = await store.sortedRangeByScore(keys.lockouts, now + 1, options.limit);
    const records = await Promise.all(subjectKeys.map(async (key) => ({ key, raw: await store.get(keys.lockout(key)) })));
    return records.flatMap(({ key, raw }) => {
      if (!raw) return [];
      const record = JSON.parse(raw) as LockRecord;
      if (record.until <= now) return [];
      const scope = lockoutScopeOf(key);
      if (!scope) return [];
      const subject = /(?:^|-)(account|ip)-/.exec(key)![1] as 'account' | 'ip';
      return [{ ...record.who, key, scope, subject, until: new Date(record.until).toISOString(), lockouts: record.lockouts }];
    });
  }
}
