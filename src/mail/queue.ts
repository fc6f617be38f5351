import { randomUUID } from 'node:crypto';
import { audit } from '../observability/audit.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { SecretBox } from '../security/secret-box.ts';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';
import type { MailTransport } from './transport.ts';
import type { Letter } from './messages.ts';
import { brandOf, DEFAULT_ACCENT, DEFAULT_BRAND_NAME, type Brand } from '../brand.ts';
import { singleDrain } from '../storage/single-drain.ts';

/**
 * Mail waits in the store, and every server sends from it, so a request never waits on a mail server
 * and nothing queued is lost when a server restarts. The queue is a sorted set of message ids scored by
 * when each is due; each message is its own record, sealed under SECRETS_KEY (it holds single-use
 * links). A server takes a due message by claiming its lease (set-if-absent, `LEASE_SECONDS`), sends
 * it, and only then removes it: a server that dies while sending leaves it in the queue, and another
 * sends it once the lease has expired — at least once, so a message may, rarely, arrive twice.
 */
export interface Mail {
  to: string;
  subject: string;
  text: string;
  html: string;
}

interface QueuedMessage {
  /** The Mail, sealed; absent for the no-op queued for an address nobody has (same work, nothing sent). */
  sealed?: string;
  attempts: number;
  dueAt: number;
  /** What kind of message, for the failure line (never the address or the content). */
  kind: string;
}

export const MAIL_CHANNEL = 'lk:changes:mail';
/** A message nobody could send in 3 days is dropped with its record. */
const MESSAGE_TTL_SECONDS = 3 * 24 * 60 * 60;
const LEASE_SECONDS = 120;

export class MailQueue {
  readonly #store: Store;
  readonly #box: SecretBox;
  readonly #now: () => number;
  readonly #brand: Brand;
  /** `brand`: whose name, colours and logo the letters are written in (BRAND_*). */
  constructor(store: Store, box: SecretBox, now: () => number = Date.now, brand: Brand = brandOf({ BRAND_NAME: DEFAULT_BRAND_NAME, BRAND_ACCENT: DEFAULT_ACCENT, ISSUER: '' })) {
    this.#store = store;
    this.#box = box;
    this.#now = now;
    this.#brand = brand;
  }

  /** Queues a letter, written now in the brand (`undefined`: the same writes, and nothing is ever sent). Resolves once stored. */
  async enqueue(kind: string, letter: Letter | undefined): Promise<void> {
    const mail = letter?.(this.#brand);
    const id = randomUUID();
    const message: QueuedMessage = { kind, attempts: 0, dueAt: this.#now(), ...(mail ? { sealed: this.#box.seal(JSON.stringify(mail), `mail:${id}`) } : { sealed: undefined }) };
    await this.#store.set(keys.mailMessage(id), JSON.stringify(message), { ttl: MESSAGE_TTL_SECONDS });
    await this.#store.sortedAdd(keys.mailQueue, id, message.dueAt);
    await this.#store.publish(MAIL_CHANNEL, 'queued');
  }

  /** How many messages wait (sent or not yet due). */
  pending(): Promise<number> {
    return this.#store.sortedCount(keys.mailQueue);
  }

  /** Up to `limit` ids, earliest due first. */
  ids(limit: number): Promise<string[]> {
    return this.#store.sortedRangeByScore(keys.mailQueue, 0, limit);
  }

  async read(id: string): Promise<QueuedMessage | undefined> {
    const raw = await this.#store.get(keys.mailMessage(id));
    return raw ? (JSON.parse(raw) as QueuedMessage) : undefined;
  }

  open(id: string, message: QueuedMessage): Mail | undefined {
    return message.sealed ? (JSON.parse(this.#box.open(message.sealed, `mail:${id}`)) as Mail) : undefined;
  }

  claim(id: string): Promise<boolean> {
    return this.#store.set(keys.mailLease(id), '1', { ttl: LEASE_SECONDS, ifAbsent: true });
  }

  /** Gives a claimed message back unsent (another server already dealt with it). */
  async release(id: string): Promise<void> {
    await this.#store.del(keys.mailLease(id));
  }

  async done(id: string): Promise<void> {
    await this.#store.sortedRemove(keys.mailQueue, id);
    await this.#store.del(keys.mailMessage(id), keys.mailLease(id));
  }

  async retryAt(id: string, message: QueuedMessage, dueAt: number): Promise<void> {
    await this.#store.set(keys.mailMessage(id), JSON.stringify({ ...message, attempts: message.attempts + 1, dueAt }), { ttl: MESSAGE_TTL_SECONDS });
    await this.#store.sortedAdd(keys.mailQueue, id, dueAt);
    await this.#store.del(keys.mailLease(id));
  }
}

export interface MailDeliveryOptions {
  queue: MailQueue;
  store: Store;
  transport: MailTransport;
  from: string;
  logger: Logger;
  metrics: Metrics;
  now?: () => number;
  /** Waits before the second, third… try: one retry per entry, then the message is dropped and `mail_failed` logged. */
  retryDelaysMs?: number[];
  /** How often each server looks for due messages besides being told (retries come due this way). */
  pollMs?: number;
}

export const DEFAULT_RETRY_DELAYS_MS = [10_000, 60_000, 5 * 60_000, 15 * 60_000, 60 * 60_000, 3 * 60 * 60_000];

/** Sends due messages on every server: when told a message was queued, after a lost subscription, and every `pollMs`. */
export async function startMailDelivery(options: MailDeliveryOptions): Promise<() => Promise<void>> {
  const { queue, store, transport, from, logger, metrics, now = Date.now, retryDelaysMs = DEFAULT_RETRY_DELAYS_MS, pollMs = 5000 } = options;
  let stopped = false;

  async function sendDue() {
    for (const id of await queue.ids(50)) {
      if (stopped) return;
      const message = await queue.read(id);
      if (!message) {
        await store.sortedRemove(keys.mailQueue, id);
        continue;
      }
      if (message.dueAt > now()) break;
      if (!(await queue.claim(id))) continue;
      // Read again under the lease: another server may have sent it (or put it off for a retry) between
      // the read above and the claim, and released its lease as it did.
      const current = await queue.read(id);
      if (!current || current.dueAt > now() || current.attempts !== message.attempts) {
        await queue.release(id);
        continue;
      }
      const mail = queue.open(id, current);
      if (!mail) {
        metrics.mail.inc({ outcome: 'discarded' });
        await queue.done(id);
        continue;
      }
      try {
        await transport.send({ from, ...mail });
        metrics.mail.inc({ outcome: 'sent' });
        await queue.done(id);
      } catch (err) {
        // The server's answer or the network error, never the message: it holds a link.
        const reason = err instanceof Error ? `${(err as { code?: string }).code ?? err.name}${(err as { responseCode?: number }).responseCode ? ` ${(err as { responseCode?: number }).responseCode}` : ''}` : 'unknown';
        const delay = retryDelaysMs[current.attempts];
        if (delay === undefined) {
          metrics.mail.inc({ outcome: 'failed' });
          audit(logger, 'mail_failed', { kind: current.kind, attempts: current.attempts + 1, reason }, 'mail dropped after every retry');
          await queue.done(id);
        } else {
          metrics.mail.inc({ outcome: 'retried' });
          logger.warn({ kind: current.kind, attempt: current.attempts + 1, reason, retryInMs: delay }, 'mail not sent: will retry');
          await queue.retryAt(id, current, now() + delay);
        }
      }
    }
  }

  const { drain, settled } = singleDrain(
    () => sendDue().catch((err) => logger.warn({ reason: err instanceof Error ? err.message : String(err) }, 'mail queue not read: will try again')),
    () => stopped,
  );

  const unsubscribe = await store.subscribe(MAIL_CHANNEL, () => void drain(), () => void drain());
  const timer = setInterval(() => void drain(), pollMs).unref();
  void drain();
  return async () => {
    stopped = true;
    clearInterval(timer);
    await unsubscribe();
    await settled();
    transport.close();
  };
}
