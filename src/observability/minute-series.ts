import type { Counter } from 'prom-client';
import type { Metrics } from './metrics.ts';

/**
 * The console's "last hour" charts: every minute, the totals of a few counters this process keeps
 * (src/observability/metrics.ts) are read and what each grew by since the last reading is kept, the
 * last 60 minutes of it, in memory. Nothing is stored and nothing reads the activity log. With
 * WORKERS>1 each worker samples its own counters, so a page shows the worker that served it.
 */
export const SERIES = ['signIns', 'signInFailures', 'tokensIssued', 'introspections'] as const;
export type SeriesName = (typeof SERIES)[number];

export const MINUTES = 60;
const MINUTE_MS = 60_000;

export interface MinutePoint {
  /** When the minute ended (epoch ms). */
  at: number;
  counts: Record<SeriesName, number>;
}

export interface MinuteSeriesOptions {
  /** Each series' current total; a total lower than the last one means the counter started again. */
  read: () => Promise<Record<SeriesName, number>>;
  now?: () => number;
}

export class MinuteSeries {
  readonly #read: MinuteSeriesOptions['read'];
  readonly #now: () => number;
  /** Oldest first, at most MINUTES. */
  readonly #points: MinutePoint[] = [];
  #last: Record<SeriesName, number> | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: MinuteSeriesOptions) {
    this.#read = options.read;
    this.#now = options.now ?? Date.now;
  }

  /** Reads the totals now: the first reading is the baseline, each later one adds a minute. */
  async sample(): Promise<void> {
    const totals = await this.#read();
    const last = this.#last;
    this.#last = totals;
    if (!last) return;
    const counts = {} as Record<SeriesName, number>;
    // A total below the last one: the counter was reset, so all of it is new since then.
    for (const name of SERIES) counts[name] = totals[name] >= last[name] ? totals[name] - last[name] : totals[name];
    this.#points.push({ at: this.#now(), counts });
    if (this.#points.length > MINUTES) this.#points.splice(0, this.#points.length - MINUTES);
  }

  /** The kept minutes, oldest first. */
  points(): MinutePoint[] {
    return this.#points.map((p) => ({ at: p.at, counts: { ...p.counts } }));
  }

  /** Samples every minute until `stop`; the timer never keeps the process alive. */
  start(intervalMs = MINUTE_MS): void {
    if (this.#timer) return;
    void this.sample().catch(() => {});
    this.#timer = setInterval(() => void this.sample().catch(() => {}), intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/** The sum of a counter's values over all its labels. */
async function total(counter: Counter): Promise<number> {
  return (await counter.get()).values.reduce((sum, v) => sum + v.value, 0);
}

/** The series of one app's metrics: successful sign-ins, refused passwords and codes, tokens issued (each token), introspections. */
export function minuteSeriesOf(metrics: Metrics, now?: () => number): MinuteSeries {
  return new MinuteSeries({
    ...(now ? { now } : {}),
    read: async () => ({
      signIns: await total(metrics.signIns),
      signInFailures: (await total(metrics.signInFailures)) + (await total(metrics.secondFactorFailures)),
      tokensIssued: await total(metrics.tokensIssued),
      introspections: await total(metrics.introspections),
    }),
  });
}
