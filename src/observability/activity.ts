import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';
import type { AuditEvent } from './audit.ts';
import { SECRET_FIELDS, type Logger } from './logger.ts';

/**
 * The activity log: every audit event, also kept in a capped Redis stream (`lk:activity`, XADD MAXLEN ~)
 * for the admin API to filter, page and export. Appends are fire-and-forget — a request never waits for
 * them nor fails because of them; failures are counted (`onAppendFailure`). Audit fields are secret-free
 * by contract (audit.ts); fields named like a secret are still replaced, as the logger's redaction does.
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

/** Makes `audit(logger, …)` — and audits on the logger's children — append to `activity` too. */
export function recordActivity(logger: Logger, activity: ActivityLog): void {
  (logger as unknown as Record<symbol, ActivityLog>)[ACTIVITY] = activity;
}

/** Child loggers are prototype-linked to their parent (pino), so they find the parent's log. */
export function activityOf(logger: Logger): ActivityLog | undefined {
  return (logger as unknown as Record<symbol, ActivityLog | undefined>)[ACTIVITY];
}

function clean(value: unknown): unknown {
  if (value instanceof Error) return { message: value.message };
  return value;
}

export class ActivityLog {
  readonly #store: Store;
  readonly #maxEvents: number;
  readonly #onAppendFailure: () => void;
  readonly #pending = new Set<Promise<unknown>>();
  #storageDown = false;
  failures = 0;

  constructor(store: Store, options: { maxEvents: number; onAppendFailure?: () => void }) {
    this.#store = store;
    this.#maxEvents = options.maxEvents;
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
    const write = this.#store
      .streamAdd(keys.activity, JSON.stringify(entry), this.#maxEvents)
      .catch(() => {
        this.failures += 1;
        this.#onAppendFailure();
      })
      .finally(() => this.#pending.delete(write));
    this.#pending.add(write);
  }

  /** Resolves once every append so far has been written or counted as failed (the CLI, before it exits). */
  async flush(): Promise<void> {
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
    let end = page.cursor ? `(${page.cursor}` : to !== undefined ? String(Math.floor(to)) : '+';
    const start = filter.from !== undefined && filter.from > 0 ? String(Math.floor(filter.from)) : '-';
    let scanned = 0;
    for (;;) {
      const batch = await this.#store.streamRevRange(keys.activity, end, start, BATCH);
      for (const { id, entry } of batch) {
        scanned += 1;
        // A cursor from before `to`'s page may point past it: `to` still bounds the answer.
        if (filter.to !== undefined && Number(id.split('-')[0]) > filter.to) continue;
        const event = parse(id, entry);
        if (event && matches(event, filter)) {
          events.push(event);
          if (events.length === page.limit) return { events, next: id };
        }
      }
      if (batch.length < BATCH) return { events };
      end = `(${batch.at(-1)!.id}`;
      if (scanned >= MAX_SCANNED_PER_PAGE) return { events, next: batch.at(-1)!.id };
    }
  }
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
