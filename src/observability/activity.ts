import { hash } from 'node:crypto';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';
import type { AuditEvent } from './audit.ts';
import { SECRET_FIELDS, type Logger } from './logger.ts';

/**
 * The activity log: every audit event (but two that another entry tells: `toldByAnotherEntry`), also kept
 * in a capped Redis stream (`lk:activity`, XADD MAXLEN ~) for the admin API to filter, page and export.
 * Appends are fire-and-forget — a request never waits for them nor fails because of them; failures are
 * counted (`onAppendFailure`). Audit fields are secret-free
 * by contract (audit.ts); fields named like a secret are still replaced, as the logger's redaction does.
 *
 * What anyone can cause without signing in (refused client authentications and sign-ins, lockouts of
 * names that exist nowhere) goes to a second stream with its own cap (`lk:activity:anonymous`), so a flood
 * can only roll over its own kind, never admin changes or security events; the refusals are also
 * aggregated, one entry per source and minute with a `count`. Reads merge the two streams by id.
 *
 * Tokens issued are counted, never appended one by one: per app, grant type and minute in memory (no Redis
 * work on the token path), written every TOKEN_WRITE_MS as one script into a hash per minute (`keys.tokenCounts`),
 * kept `tokenCountDays`. Reads show each count as a `token_issued` entry with `count`, `minute` and `until`, under
 * a stream-shaped id (the minute's start, a sequence from a digest of app and grant type). A clean stop writes
 * what is counted (`flush`); a crash loses at most the last TOKEN_WRITE_MS of counts. The log line of each token stays.
 */
export interface ActivityEvent {
  /** The stream id (`<epoch ms>-<sequence>`): the paging cursor. */
  id: string;
  time: string;
  event: AuditEvent;
  msg: string;
  [field: string]: unknown;
}

export interface ActivityFilter {
  /** One or more event names. */
  events?: string[];
  /** Events about this account, or made by it (an admin's changes). */
  accountId?: string;
  /** Events about this client, or made by it (an automation client's changes). */
  clientId?: string;
  /** Epoch ms, inclusive. */
  from?: number;
  to?: number;
}

const SECRET_NAMES = new Set(SECRET_FIELDS);
/** Entries read per round trip while filtering, and at most per page: a rare filter still answers quickly, with a cursor to go on. */
const BATCH = 200;
const MAX_SCANNED_PER_PAGE = 5000;

/** The latest time a stream id can name here (epoch ms): JavaScript's last date, far inside Redis' 64 bits. */
const MAX_TIME = 8.64e15;

const ACTIVITY = Symbol.for('latchkey.activity');

/**
 * Log lines the stream does not repeat, because the entry of the step they are part of says the same: a
 * TOTP code accepted (the sign-in it completes is `signin_succeeded` with `otp` in its `amr`; the account
 * page's proof is `account_sudo_started`) and a remembered consent used by a sign-in (`signin_succeeded`
 * names the app). One stream entry fewer each per sign-in; their log lines stay. A recovery code's
 * acceptance (and the codes left) and every consent given on the page are still entries.
 */
function toldByAnotherEntry(event: AuditEvent, fields: Record<string, unknown>): boolean {
  return (event === 'second_factor_succeeded' && fields.method === 'totp') || (event === 'consent_granted' && fields.via === 'remembered');
}

/** Refusals an anonymous caller can repeat at will: one entry per source and minute, with a count. */
const AGGREGATED: ReadonlySet<AuditEvent> = new Set<AuditEvent>(['client_authentication_failed', 'signin_failed']);
/** The fields that say where a refusal came from and whom it named (never what was typed). */
const SOURCE_FIELDS = ['ip', 'clientId', 'accountId', 'factor', 'route'] as const;
const MINUTE_MS = 60_000;
/** Sources held in memory before they are written early: a flood from many addresses stays bounded. */
const MAX_PENDING_SOURCES = 10_000;
/** How often counted tokens are written: what a crash can lose, against one Redis script per interval and process. */
const TOKEN_WRITE_MS = 250;
/** Minutes of token counts read per round trip while paging. */
const MINUTES_PER_READ = 60;
const DAY_MINUTES = 1440;

/** Whether an event is noise an anonymous caller can make: it may only roll over other such noise. */
function anonymous(event: AuditEvent, fields: Record<string, unknown>): boolean {
  if (AGGREGATED.has(event)) return true;
  // A lockout of a name no account or client has (only its keyed digest is logged).
  return (event === 'lockout_started' || event === 'lockout_ended') && (fields.emailDigest !== undefined || fields.clientIdDigest !== undefined);
}

interface Aggregate {
  minute: number;
  entry: Record<string, unknown>;
  count: number;
}

/** Makes `audit(logger, …)` — and audits on the logger's children — append to `activity` too. */
export function recordActivity(logger: Logger, activity: ActivityLog): void {
  (logger as CarriesActivity)[ACTIVITY] = activity;
}

/** A logger that `recordActivity` gave a log: it carries it under a symbol only this module knows. */
type CarriesActivity = Logger & { [ACTIVITY]?: ActivityLog };

/** Child loggers are prototype-linked to their parent (pino), so they find the parent's log. */
export function activityOf(logger: Logger): ActivityLog | undefined {
  return (logger as CarriesActivity)[ACTIVITY];
}

function clean(value: unknown): unknown {
  if (value instanceof Error) return { message: value.message };
  return value;
}

export class ActivityLog {
  readonly #store: Store;
  readonly #maxEvents: number;
  readonly #onAppendFailure: () => void;
  readonly #maxAnonymous: number;
  readonly #now: () => number;
  readonly #pending = new Set<Promise<unknown>>();
  /** Refusals of the current minute by source, written when their minute is over (or on flush). */
  readonly #aggregates = new Map<string, Aggregate>();
  #sweeper: NodeJS.Timeout | undefined;
  /** Tokens issued since the last write, by JSON `[minute, client id, grant type]`. */
  readonly #tokenCounts = new Map<string, number>();
  #tokenWriter: NodeJS.Timeout | undefined;
  readonly #tokenCountDays: number;
  #storageDown = false;
  failures = 0;

  constructor(store: Store, options: { maxEvents: number; maxAnonymousEvents?: number; tokenCountDays?: number; onAppendFailure?: () => void; now?: () => number }) {
    this.#store = store;
    this.#maxEvents = options.maxEvents;
    this.#maxAnonymous = options.maxAnonymousEvents ?? options.maxEvents;
    this.#now = options.now ?? Date.now;
    this.#tokenCountDays = options.tokenCountDays ?? 14;
    this.#onAppendFailure = options.onAppendFailure ?? (() => {});
    // During an outage appends are dropped (and counted), not sent: each would hold the connection for a
    // whole command deadline in front of the requests that are being answered 503.
    store.onAvailabilityChange?.((available) => (this.#storageDown = !available));
  }

  append(event: AuditEvent, fields: Record<string, unknown>, msg: string): void {
    if (this.#storageDown) {
      this.failures += 1;
      this.#onAppendFailure();
      return;
    }
    if (event === 'token_issued') return this.#countToken(fields);
    if (toldByAnotherEntry(event, fields)) return;
    const entry: Record<string, unknown> = { event, msg };
    for (const [name, value] of Object.entries(fields)) entry[name] = SECRET_NAMES.has(name) ? '[redacted]' : clean(value);
    if (AGGREGATED.has(event)) this.#aggregate(event, entry);
    else if (anonymous(event, fields)) this.#write(keys.activityAnonymous, entry, this.#maxAnonymous);
    else this.#write(keys.activity, entry, this.#maxEvents);
  }

  /** Counts a refusal into its source's entry of this minute; the previous minute's entry is written first. */
  #aggregate(event: AuditEvent, entry: Record<string, unknown>): void {
    const minute = Math.floor(this.#now() / MINUTE_MS);
    const source = JSON.stringify([event, ...SOURCE_FIELDS.map((name) => entry[name] ?? null)]);
    const current = this.#aggregates.get(source);
    if (current?.minute === minute) {
      current.count += 1;
      return;
    }
    if (current) this.#writeAggregate(source, current);
    if (this.#aggregates.size >= MAX_PENDING_SOURCES) this.#writeAggregates(() => true);
    this.#aggregates.set(source, { minute, entry, count: 1 });
    // Entries of a minute that is over are written within 15 s, also when their source went quiet.
    this.#sweeper ??= setInterval(() => this.writeFinishedMinutes(), 15_000).unref();
  }

  /** The token path: one map update; the write follows within TOKEN_WRITE_MS. */
  #countToken(fields: Record<string, unknown>): void {
    const source = JSON.stringify([Math.floor(this.#now() / MINUTE_MS), fields.clientId ?? null, fields.grantType ?? null]);
    this.#tokenCounts.set(source, (this.#tokenCounts.get(source) ?? 0) + 1);
    if (this.#tokenCounts.size >= MAX_PENDING_SOURCES) this.writeTokenCounts();
    else this.#tokenWriter ??= setTimeout(() => this.writeTokenCounts(), TOKEN_WRITE_MS).unref();
  }

  /** Adds the tokens counted since the last write to their minutes in Redis, in one script (a timer calls it; tests too). */
  writeTokenCounts(): void {
    clearTimeout(this.#tokenWriter);
    this.#tokenWriter = undefined;
    if (!this.#tokenCounts.size) return;
    const increments = [...this.#tokenCounts].map(([source, by]) => {
      const [minute, clientId, grantType] = JSON.parse(source) as [number, unknown, unknown];
      return { bucket: keys.tokenCounts(minute), score: minute, field: JSON.stringify([clientId, grantType]), by };
    });
    this.#tokenCounts.clear();
    const retention = this.#tokenCountDays * DAY_MINUTES;
    // A minute is kept `retention` after it ends (the TTL is renewed by each write to it).
    this.#track(this.#store.countersAdd(keys.tokenCountMinutes, increments, (retention + 1) * 60, Math.floor(this.#now() / MINUTE_MS) - retention));
  }

  /** Writes the aggregates of minutes that are over (a timer calls it; tests with their own clock too). */
  writeFinishedMinutes(): void {
    const minute = Math.floor(this.#now() / MINUTE_MS);
    this.#writeAggregates((a) => a.minute < minute);
  }

  #writeAggregates(which: (a: Aggregate) => boolean): void {
    for (const [source, aggregate] of this.#aggregates) if (which(aggregate)) this.#writeAggregate(source, aggregate);
    if (this.#aggregates.size === 0 && this.#sweeper) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  }

  #writeAggregate(source: string, { minute, entry, count }: Aggregate): void {
    this.#aggregates.delete(source);
    this.#write(keys.activityAnonymous, { ...entry, count, minute: new Date(minute * MINUTE_MS).toISOString() }, this.#maxAnonymous);
  }

  #write(key: string, entry: Record<string, unknown>, maxLength: number): void {
    this.#track(this.#store.streamAdd(key, JSON.stringify(entry), maxLength));
  }

  /** Keeps a write until it settles (for `flush`); a failure is counted, never thrown. */
  #track(written: Promise<unknown>): void {
    const write = written
      .catch(() => {
        this.failures += 1;
        this.#onAppendFailure();
      })
      .finally(() => this.#pending.delete(write));
    this.#pending.add(write);
  }

  /**
   * Resolves once every append so far has been written or counted as failed (the CLI, before it exits;
   * the server, when it closes): this minute's aggregates and the tokens counted so far are written as they stand.
   */
  async flush(): Promise<void> {
    this.#writeAggregates(() => true);
    this.writeTokenCounts();
    await Promise.all([...this.#pending]);
  }

  /** Every event the filter matches, newest first, as JSON lines a page at a time (an export streams them). */
  async *exportLines(filter: ActivityFilter): AsyncGenerator<string> {
    let cursor: string | undefined;
    do {
      const page = await this.query(filter, { cursor, limit: 100 });
      if (page.events.length) yield page.events.map((e) => `${JSON.stringify(e)}\n`).join('');
      cursor = page.next;
    } while (cursor);
  }

  /**
   * Newest first, after `cursor` (an id from the previous page). `next` is where to go on: present while
   * older entries may match, including when a page stopped after scanning MAX_SCANNED_PER_PAGE entries.
   */
  async query(filter: ActivityFilter, page: { cursor?: string; limit: number }): Promise<{ events: ActivityEvent[]; next?: string }> {
    const events: ActivityEvent[] = [];
    // Stream ids are unsigned 64-bit: Redis refuses a bound outside them (or an exclusive `(0-0`) with an error, not an empty range.
    if (page.cursor !== undefined && !/^\d{1,15}-\d{1,15}$/.test(page.cursor)) return { events };
    if (page.cursor !== undefined && /^0+-0+$/.test(page.cursor)) return { events };
    if ((filter.to !== undefined && filter.to < 0) || (filter.from !== undefined && filter.from > MAX_TIME)) return { events };
    const to = filter.to !== undefined && filter.to <= MAX_TIME ? filter.to : undefined;
    const end = page.cursor ? `(${page.cursor}` : to !== undefined ? String(Math.floor(to)) : '+';
    const start = filter.from !== undefined && filter.from > 0 ? String(Math.floor(filter.from)) : '-';
    let scanned = 0;
    let last: string | undefined;
    // Token counts only where they can match: they name an app and a grant type, never a person.
    const counts = filter.accountId === undefined && (!filter.events?.length || filter.events.includes('token_issued'));
    for await (const { id, entry } of this.#newestFirst(end, start, counts)) {
      // A page ends between two ids, never inside one (the two streams can hold the same id): the cursor is exclusive.
      if (last !== undefined && id !== last && (events.length >= page.limit || scanned >= MAX_SCANNED_PER_PAGE)) return { events, next: last };
      scanned += 1;
      last = id;
      // A cursor from before `to`'s page may point past it: `to` still bounds the answer.
      if (filter.to !== undefined && Number(id.split('-')[0]) > filter.to) continue;
      const event = parse(id, entry);
      if (event && matches(event, filter)) events.push(event);
    }
    return { events };
  }

  /** Both streams' entries (and the token counts, with `counts`) from `end` down to `start`, merged newest first. */
  async *#newestFirst(end: string, start: string, counts: boolean): AsyncGenerator<{ id: string; entry: string }> {
    const sources = [keys.activity, keys.activityAnonymous].map((key) => {
      let from = end;
      return async () => {
        const rows = await this.#store.streamRevRange(key, from, start, BATCH);
        if (rows.length) from = `(${rows.at(-1)!.id}`;
        return { rows, done: rows.length < BATCH };
      };
    });
    if (counts) sources.push(this.#tokenCountRows(end, start));
    const streams = sources.map((read) => ({ read, buffer: [] as { id: string; entry: string }[], done: false }));
    for (;;) {
      for (const s of streams) {
        while (!s.buffer.length && !s.done) ({ rows: s.buffer, done: s.done } = await s.read());
      }
      let newest: (typeof streams)[number] | undefined;
      for (const s of streams) if (s.buffer.length && (!newest || compareIds(s.buffer[0]!.id, newest.buffer[0]!.id) > 0)) newest = s;
      if (!newest) return;
      yield newest.buffer.shift()!;
    }
  }

  /** The token counts of the minutes from `end` down to `start` (stream bounds), as entries, MINUTES_PER_READ minutes a read. */
  #tokenCountRows(end: string, start: string): () => Promise<{ rows: { id: string; entry: string }[]; done: boolean }> {
    const bound = end === '+' ? undefined : end.replace(/^\(/, '');
    const below = (id: string) => bound === undefined || (end.startsWith('(') ? compareIds(id, bound) < 0 : Number(id.split('-')[0]) <= Number(bound.split('-')[0]));
    let max = bound === undefined ? Infinity : Math.floor(Number(bound.split('-')[0]) / MINUTE_MS);
    const min = start === '-' ? -Infinity : Math.ceil(Number(start) / MINUTE_MS);
    return async () => {
      if (max < min) return { rows: [], done: true };
      const minutes = await this.#store.countersRevRange(keys.tokenCountMinutes, max, min, MINUTES_PER_READ);
      if (minutes.length) max = minutes.at(-1)!.score - 1;
      const rows = minutes.flatMap(({ score: minute, counters }) => Object.entries(counters).map(([field, count]) => {
        const [clientId, grantType] = JSON.parse(field) as [unknown, unknown];
        const entry = { event: 'token_issued', msg: 'tokens issued', clientId, grantType, count, minute: new Date(minute * MINUTE_MS).toISOString(), until: new Date((minute + 1) * MINUTE_MS).toISOString() };
        return { id: `${minute * MINUTE_MS}-${countSequence(field)}`, entry: JSON.stringify(entry) };
      })).filter((row) => below(row.id));
      rows.sort((a, b) => compareIds(b.id, a.id));
      return { rows, done: minutes.length < MINUTES_PER_READ };
    };
  }
}

/** A count's sequence within its minute: from a digest of its app and grant type, so the same row keeps its id on every read. */
function countSequence(field: string): number {
  return parseInt(hash('sha256', field, 'hex').slice(0, 12), 16);
}

/** Stream ids (`<ms>-<seq>`) in order. */
function compareIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(Number) as [number, number];
  const [bm, bs] = b.split('-').map(Number) as [number, number];
  return am - bm || as - bs;
}

function parse(id: string, entry: string): ActivityEvent | undefined {
  try {
    const fields = JSON.parse(entry) as Record<string, unknown>;
    return { id, time: new Date(Number(id.split('-')[0])).toISOString(), ...fields } as ActivityEvent;
  } catch {
    return undefined;
  }
}

function matches(e: ActivityEvent, filter: ActivityFilter): boolean {
  const actor = (e.actor ?? {}) as { accountId?: unknown; clientId?: unknown };
  if (filter.events?.length && !filter.events.includes(e.event)) return false;
  if (filter.accountId !== undefined && e.accountId !== filter.accountId && actor.accountId !== filter.accountId) return false;
  if (filter.clientId !== undefined && e.clientId !== filter.clientId && actor.clientId !== filter.clientId) return false;
  return true;
}
