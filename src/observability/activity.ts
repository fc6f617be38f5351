import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';
import type { AuditEvent } from './audit.ts';
import { SECRET_FIELDS, type Logger } from './logger.ts';

/**
 * The activity log: every audit event, also kept in a capped Redis stream (`lk:activity`, XADD MAXLEN ~)
 * for the admin API to filter, page and export. Appends are fire-and-forget — a request never waits for
 * them nor fails because of them; failures are counted (`onAppendFailure`). Audit fields are secret-free
 * by contract (audit.ts); fields named like a secret are still replaced, as the logger's redaction does.
 *
 * What anyone can cause without signing in (refused client authentications and sign-ins, lockouts of
 * names that exist nowhere) goes to a second stream with its own cap (`lk:activity:anonymous`), so a flood
 * can only roll over its own kind, never admin changes or security events; the refusals are also
 * aggregated, one entry per source and minute with a `count`. Reads merge the two streams by id.
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

/** Refusals an anonymous caller can repeat at will: one entry per source and minute, with a count. */
const AGGREGATED: ReadonlySet<AuditEvent> = new Set<AuditEvent>(['client_authentication_failed', 'signin_failed']);
/** The fields that say where a refusal came from and whom it named (never what was typed). */
const SOURCE_FIELDS = ['ip', 'clientId', 'accountId', 'factor', 'route'] as const;
const MINUTE_MS = 60_000;
/** Sources held in memory before they are written early: a flood from many addresses stays bounded. */
const MAX_PENDING_SOURCES = 10_000;

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
  #storageDown = false;
  failures = 0;

  constructor(store: Store, options: { maxEvents: number; maxAnonymousEvents?: number; onAppendFailure?: () => void; now?: () => number }) {
    this.#store = store;
    this.#maxEvents = options.maxEvents;
    this.#maxAnonymous = options.maxAnonymousEvents ?? options.maxEvents;
    this.#now = options.now ?? Date.now;
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
    const write = this.#store
      .streamAdd(key, JSON.stringify(entry), maxLength)
      .catch(() => {
        this.failures += 1;
        this.#onAppendFailure();
      })
      .finally(() => this.#pending.delete(write));
    this.#pending.add(write);
  }

  /**
   * Resolves once every append so far has been written or counted as failed (the CLI, before it exits;
   * the server, when it closes): this minute's aggregates are written as they stand.
   */
  async flush(): Promise<void> {
    this.#writeAggregates(() => true);
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
    for await (const { id, entry } of this.#newestFirst(end, start)) {
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

  /** Both streams' entries from `end` down to `start`, merged newest first (read BATCH at a time each). */
  async *#newestFirst(end: string, start: string): AsyncGenerator<{ id: string; entry: string }> {
    const streams = [keys.activity, keys.activityAnonymous].map((key) => ({ key, end, buffer: [] as { id: string; entry: string }[], done: false }));
    for (;;) {
      for (const s of streams) {
        if (s.buffer.length || s.done) continue;
        s.buffer = await this.#store.streamRevRange(s.key, s.end, start, BATCH);
        if (s.buffer.length < BATCH) s.done = true;
        if (s.buffer.length) s.end = `(${s.buffer.at(-1)!.id}`;
      }
      let newest: (typeof streams)[number] | undefined;
      for (const s of streams) if (s.buffer.length && (!newest || compareIds(s.buffer[0]!.id, newest.buffer[0]!.id) > 0)) newest = s;
      if (!newest) return;
      yield newest.buffer.shift()!;
    }
  }
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
