import { Redis } from 'ioredis';

/**
 * What the differential tests (lean path on and off) share: two Redis holding the same data, and a
 * seeded random draw, so a failing corpus is the same corpus on the next run.
 */

/** Every key of `from` copied into `to` with its TTL (DUMP/RESTORE): the second server starts where the first is. */
export async function copyRedis(from: string, to: string): Promise<void> {
  const [a, b] = [new Redis(from), new Redis(to)];
  for (const key of await a.keys('*')) {
    const [dump, pttl] = await Promise.all([a.dumpBuffer(key), a.pttl(key)]);
    if (dump) await b.restore(key, pttl > 0 ? pttl : 0, dump, 'REPLACE');
  }
  a.disconnect();
  b.disconnect();
}

/** A seeded random number generator in [0, 1) (a linear congruential one): the same draws for the same seed. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** What a server recorded of a run besides its answers: the lines, counters and counts a differential test compares. */
export interface Recorded {
  /** The request lines (method, route, status), in order. */
  requestLines: unknown[];
  /** Every other log line (audit events), without times and ids, sorted. */
  audit: string[];
  /** The named counters, by name and labels (`latchkey_<name>`), the lean path's own left out. */
  metrics: Record<string, number>;
  /** The lean path's answers (`latchkey_lean_path_answers_total`), by route. */
  leanAnswers: Record<string, number>;
  /** The activity log's per-minute token counts, summed by field. */
  tokenCounts: Record<string, number>;
}

/** What `server` logged since `logsFrom`, its counters named in `counters`, and the token counts in `redisUrl`. */
export async function recorded(server: { logs: Record<string, unknown>[]; app: { metrics: { text(): Promise<string> } } }, logsFrom: number, redisUrl: string, counters: string[]): Promise<Recorded> {
  const logs = server.logs.slice(logsFrom);
  const requestLines = logs.filter((l) => l.msg === 'request').map(({ method, route, status }) => ({ method, route, status }));
  const audit = logs.filter((l) => l.msg !== 'request').map(({ time: _t, requestId: _r, pid: _p, hostname: _h, ...rest }) => JSON.stringify(rest)).sort();
  const metrics: Record<string, number> = {};
  const leanAnswers: Record<string, number> = {};
  const counter = new RegExp(`^latchkey_(${[...counters, 'lean_path_answers_total'].join('|')})(\\{[^}]*\\})? (\\d+)`);
  for (const line of (await server.app.metrics.text()).split('\n')) {
    const m = counter.exec(line);
    if (!m) continue;
    const route = /route="([^"]*)"/.exec(m[2] ?? '')?.[1] ?? '';
    if (m[1] === 'lean_path_answers_total') leanAnswers[route] = (leanAnswers[route] ?? 0) + Number(m[3]);
    else metrics[`latchkey_${m[1]}${m[2] ?? ''}`] = Number(m[3]);
  }
  const r = new Redis(redisUrl);
  const tokenCounts: Record<string, number> = {};
  for (const key of await r.keys('lk:{activity-tokens}:minute:*')) {
    for (const [field, count] of Object.entries(await r.hgetall(key))) tokenCounts[field] = (tokenCounts[field] ?? 0) + Number(count);
  }
  r.disconnect();
  return { requestLines, audit, metrics, leanAnswers, tokenCounts };
}

/**
 * The token records (`AccessToken`, `RefreshToken`) in `redisUrl`, by grant tag and model, each as stored with
 * what differs by nature made plain: the consumed mark's time, and `iat` and `exp` (as the lifetime between
 * them). Members keep their order: the format is compared, not only the values.
 */
export async function tokenRecords(redisUrl: string): Promise<Record<string, string[]>> {
  const r = new Redis(redisUrl);
  const out: Record<string, string[]> = {};
  try {
    for (const key of await r.keys('lk:{*}:*Token:*')) {
      const m = /^lk:\{([^}]+)\}:(AccessToken|RefreshToken):/.exec(key);
      const stored = m ? await r.get(key) : null;
      if (!m || stored === null) continue;
      const bar = m[2] === 'RefreshToken' ? stored.indexOf('|') : -1;
      const payload = JSON.parse(stored.slice(bar + 1)) as { iat: number; exp: number };
      const plain = JSON.stringify(payload, (k, v: unknown) => (k === 'iat' ? '<iat>' : k === 'exp' ? `<iat + ${payload.exp - payload.iat}>` : v));
      (out[`${m[1]} ${m[2]}`] ??= []).push(`${bar > 0 ? 'consumed|' : ''}${plain}`);
    }
  } finally {
    r.disconnect();
  }
  for (const list of Object.values(out)) list.sort();
  return out;
}
