import { execSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import {
  adminReadRequest, adminTokens, deviceCodes, devicePollRequest, introspectionRequest, isActive, newFlowStats, RefreshChains, revocationRequest, signIn, signInLoad, times,
  tokenPool, tokenRequest, type FlowStats, type Server,
} from './flows.ts';
import type { Request } from './driver.ts';
import { configDocs } from '../src/config.ts';
import { DEVICE_CODE_TTL_SECONDS } from '../src/oidc/device-flow.ts';
import { cannon, keyType, median, measure, ROOT, sleep, threadCpu, usedMemory, type Load, type Proc, type Sample } from './lib.ts';
import { hashPassword, verifyPassword } from '../src/accounts/passwords.ts';
import { runSoak } from './soak.ts';
import { startWorld, type World } from './world.ts';

/**
 * `npm run bench [-- --duration 5 --rounds 3 --connections 32 --warmup 3]` measures Latchkey against
 * its baselines, alternately in one run, and writes bench/RESULTS.md.
 * `npm run bench -- --soak SECONDS` runs mixed traffic instead (bench/soak.ts, bench/SOAK.md).
 *
 * Run time with the defaults: 25 targets (Latchkey 11 rows, raw oidc-provider 7, all cores 4, floors 3;
 * `--lean-off` adds 2) × (3 s warm-up + 3 × 5 s) = 450 s of load, plus 0.5 s of settling before each of
 * the 100 runs = 500 s; set-up (1,500 TOTP and 50 passkey enrolments, registrations, probes) and the
 * pools made before runs (revocation: a run's worth of tokens each run; device codes: 7 s' worth, once)
 * add about 2 minutes on 2 quiet cores: about 10–11 minutes in all. RESULTS.md gives the measured time.
 */
const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '32' },
    warmup: { type: 'string', default: '3' },
    // Enough that no flow waits for a person free in the current step at ~50 sign-ins/s (see the TOTP notes).
    'totp-users': { type: 'string', default: '1500' },
    'passkey-users': { type: 'string', default: '50' },
    /** Only the scenarios whose name contains this (no all-cores target, no memory probe, no RESULTS.md): e.g. `--only "complete sign-in with"`. */
    only: { type: 'string' },
    /** With --only: also Latchkey on all cores (WORKERS=2), where its rows have one. */
    'all-cores': { type: 'boolean', default: false },
    /** Also Latchkey with LEAN_PATH=off (everything through oidc-provider), for tokens and introspection. */
    'lean-off': { type: 'boolean', default: false },
    soak: { type: 'string' },
  },
});
const opts = { duration: Number(values.duration), rounds: Number(values.rounds), connections: Number(values.connections), warmup: Number(values.warmup), totpUsers: Number(values['totp-users']), passkeyUsers: Number(values['passkey-users']) };
for (const [k, v] of Object.entries(opts)) if (!(v > 0)) throw new Error(`--${k} must be a positive number`);
const command = `${process.env.npm_lifecycle_event === 'bench' ? 'npm run bench' : 'node bench/run.ts'}${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;

export function machineLines(): string[] {
  const cpu = /model name\s*:\s*(.+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown';
  const version = (pkg: string) => (JSON.parse(readFileSync(`${ROOT}node_modules/${pkg}/package.json`, 'utf8')) as { version: string }).version;
  let git = 'unknown';
  try {
    git = execSync('git rev-parse --short HEAD', { cwd: ROOT }).toString().trim();
    if (execSync("git status --porcelain -- . ':!bench/RESULTS.md' ':!bench/SOAK.md'", { cwd: ROOT }).toString().trim()) git += ' plus uncommitted changes in the work tree';
  } catch {
    // not a checkout
  }
  return [
    `- Command: \`${command}\``,
    `- Date: ${new Date().toISOString()}`,
    `- Machine: ${availableParallelism()} CPUs (nproc), ${cpu}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM; load average at start ${loadavg().map((l) => l.toFixed(2)).join(' ')}`,
    `- Node ${process.version}, oidc-provider ${version('oidc-provider')}, koa ${version('koa')}, ioredis ${version('ioredis')}, ${execSync('redis-server --version').toString().trim().split(' ').slice(0, 3).join(' ')}; code: ${git}`,
  ];
}

const TOKEN = 'client_credentials token';
const JWT_TOKEN = 'client_credentials token, JWT access token (Latchkey ES256, raw oidc-provider RS256)';
const INTROSPECTION = 'introspection of an active token';
const JWT_INTROSPECTION = 'introspection of an active JWT access token';
const REFRESH = 'refresh-token grant (rotating)';
const REVOCATION = 'revocation of an access token (RFC 7009)';
const DEVICE_POLL = 'device-flow polling (authorization_pending)';
const ADMIN_READS = 'admin API reads';
const SIGN_IN = 'complete sign-in, password only';
const SIGN_IN_TOTP = 'complete sign-in with TOTP';
const SIGN_IN_PASSKEY = 'complete sign-in with a passkey alone';
const ALL_CORES = (workers: number) => `Latchkey, all cores (WORKERS=${workers})`;
const LEAN_OFF = 'Latchkey, LEAN_PATH=off';

interface Notes {
  chains: Map<string, RefreshChains>;
  /** Counters of the warm-up are not results: each resets its own. */
  resets: (() => void)[];
}

/** What every answer of a row must be; `wrong` counts the others (a run's first one kept, without token values). */
interface Check {
  what: string;
  ok: (status: number, body: string) => boolean;
  wrong: number;
  first?: string;
}

/** `request` with every answer held against `check`. */
function checked(request: Request, check: Check): Request {
  const inner = request.onResponse;
  return {
    ...request,
    onResponse: (status, body, context) => {
      if (!check.ok(status, body)) {
        check.wrong += 1;
        // A 200 may carry a token: only the status then.
        check.first ??= status === 200 ? '200 of another shape' : `${status} ${body.slice(0, 160)}`;
      }
      inner?.(status, body, context);
    },
  };
}

interface Entry {
  scenario: string;
  target: string;
  latchkey: boolean;
  proc: Proc;
  /** Runs before each run of `seconds`, outside the measurement (pools, chains). */
  prepare?: (seconds: number) => Promise<void>;
  load: (seconds: number) => Promise<Load>;
  /** Runs after each run, outside the measurement (checks of what the run did). */
  after?: () => Promise<void>;
  samples: Sample[];
  /** The rate of this entry's last run (warm-up included), to size the next run's pool. */
  lastRps?: number;
  check?: Check;
  /** A line for the report about this entry's run (pools, starvation, checks made afterwards). */
  note?: () => string;
  flows?: FlowStats;
}

const json = (body: string): Record<string, unknown> | undefined => {
  try {
    return JSON.parse(body) as Record<string, unknown>;
  } catch {
    return undefined;
  }
};
/** A bearer token's shape: an opaque one is one base64url string, a JWT three. */
const accessTokenShape = (jwt: boolean) => (status: number, body: string) => {
  const b = json(body);
  return status === 200 && typeof b?.access_token === 'string' && b.token_type === 'Bearer' && b.access_token.split('.').length === (jwt ? 3 : 1);
};
const activeShape = (status: number, body: string) => status === 200 && json(body)?.active === true;

/** Requests a run of `seconds` may send, from the entry's last rate (or `guess` /s before any), with room. */
const expected = (e: Entry, seconds: number, guess: number) => Math.ceil((e.lastRps ?? guess) * seconds * 1.5);

function entries(world: World, connections: number, notes: Notes): Entry[] {
  const out: Entry[] = [];
  const all = world.latchkeyAllCores;
  const leanOff = world.latchkeyLeanOff;
  type Target = Server & { proc: Proc };
  const servers: [string, Target][] = [
    ['Latchkey', world.latchkey],
    ...(world.raw ? [['raw oidc-provider (memory)', world.raw] as [string, Target]] : []),
    ...(all ? [[ALL_CORES(all.workers), all] as [string, Target]] : []),
    ...(leanOff ? [[LEAN_OFF, leanOff] as [string, Target]] : []),
  ];
  const ac = (url: string, request: Request, check: Check) => (duration: number) => cannon(url, checked(request, check), { connections, duration });
  for (const [target, server] of servers) {
    const latchkey = target.startsWith('Latchkey');
    const raw = !latchkey;
    const allCores = server === all;
    const lean = server === leanOff;
    const add = (e: Omit<Entry, 'target' | 'latchkey' | 'proc' | 'samples'>): Entry => {
      const entry: Entry = { target, latchkey, proc: server.proc, samples: [], ...e };
      out.push(entry);
      return entry;
    };
    const tokenCheck = (jwt: boolean): Check => ({ what: `200 with a Bearer ${jwt ? 'JWT' : 'opaque'} access token`, ok: accessTokenShape(jwt), wrong: 0 });
    let check = tokenCheck(false);
    add({ scenario: TOKEN, check, load: ac(server.url, tokenRequest(server), check) });
    if (!allCores && !lean) {
      check = tokenCheck(true);
      add({ scenario: JWT_TOKEN, check, load: ac(server.url, tokenRequest(server, undefined, true), check) });
    }
    // A fresh pool before each run: raw oidc-provider's memory adapter forgets the oldest records.
    const introspection = (scenario: string, jwt: boolean) => {
      const pool: string[] = [];
      const c: Check = { what: '200 with `"active":true`', ok: activeShape, wrong: 0 };
      add({
        scenario,
        check: c,
        prepare: async () => {
          pool.length = 0;
          pool.push(...(await tokenPool(server, 200, jwt)));
        },
        load: ac(server.url, introspectionRequest(server, pool, jwt ? server.jwtApi : server.api), c),
      });
    };
    introspection(INTROSPECTION, false);
    // oidc-provider does not store JWT access tokens and cannot introspect them: Latchkey only.
    if (latchkey && !allCores && !lean) introspection(JWT_INTROSPECTION, true);
    if (lean) continue; // LEAN_PATH=off: tokens and introspection only.
    const signIns = (scenario: string, mode: 'password' | 'totp' | 'passkey') => {
      const flows = newFlowStats();
      add({
        scenario,
        flows,
        load: async (seconds) => {
          const { load, stats, firstError } = await signInLoad(server, { seconds, concurrency: connections, totp: mode === 'totp', passkey: mode === 'passkey' });
          for (const k of ['flows', 'httpRequests', 'consentForms', 'totpCodes', 'waits'] as const) flows[k] += stats[k];
          if (firstError) console.error(`  ${target} sign-in error: ${firstError}`);
          return load;
        },
      });
    };
    if (allCores) {
      // The all-cores targets are for tokens and introspection; sign-ins are shown beside them because
      // production runs a worker per CPU.
      signIns(SIGN_IN_TOTP, 'totp');
      signIns(SIGN_IN_PASSKEY, 'passkey');
      continue;
    }
    const chains = new RefreshChains(server);
    notes.chains.set(target, chains);
    const setupFlows = newFlowStats();
    check = { what: '200 with a new refresh token', ok: (status, body) => status === 200 && typeof json(body)?.refresh_token === 'string', wrong: 0 };
    add({
      scenario: REFRESH,
      check,
      prepare: async () => {
        if (raw) chains.tokens.length = 0; // its records may have left the memory adapter's LRU in between
        await chains.topUp(2 * connections, setupFlows);
      },
      load: ac(server.url, chains.request(), check),
    });
    // Revocation: each request revokes a token of its own, made just before the run (none used twice).
    {
      const queue: string[] = [];
      const seen = { starved: 0, revoked: [] as string[] };
      let pooled = 0;
      let stillActive = 0;
      let checkedAfter = 0;
      const c: Check = { what: '200 with an empty body (Latchkey: `{}`)', ok: (status, body) => status === 200 && (body === '' || body === '{}'), wrong: 0 };
      const request = checked(revocationRequest(server, queue, seen), c);
      const e: Entry = add({
        scenario: REVOCATION,
        check: c,
        prepare: async (seconds) => {
          queue.length = 0;
          seen.revoked.length = 0;
          // As many as the last run's rate revokes in `seconds` (the warm-up guesses).
          const n = Math.max(10 * connections, Math.ceil((e.lastRps ?? 2000) * seconds));
          queue.push(...(await tokenPool(server, n)));
          pooled += n;
        },
        // The run ends when the pool is used up, so no request goes without a token of its own.
        load: () => cannon(server.url, request, { connections, amount: queue.length }),
        // Revoked means inactive: 10 of the run's revoked tokens introspected afterwards.
        after: async () => {
          for (const token of seen.revoked.slice(-10)) {
            checkedAfter += 1;
            if (await isActive(server, token)) stillActive += 1;
          }
        },
        note: () => `${target}: ${f0(pooled)} tokens made before the runs and revoked, ${f0(seen.starved)} requests without a token of their own (sent a made-up one), ${f0(stillActive)} of ${f0(checkedAfter)} revoked tokens still active when introspected after their run`,
      });
      notes.resets.push(() => {
        seen.starved = 0;
        stillActive = 0;
        checkedAfter = 0;
        pooled = 0;
      });
    }
    // Device-flow polling: pending codes, each polled again only after the interval (5 s) has passed,
    // as a device that waits between polls does; raw oidc-provider has no interval, so a small pool.
    {
      const pool: string[] = [];
      const born = new Map<string, number>();
      const dropped = new Set<string>();
      let made = 0;
      let droppedTotal = 0;
      const c: Check = { what: '400 with `"error":"authorization_pending"`', ok: (status, body) => status === 400 && json(body)?.error === 'authorization_pending', wrong: 0 };
      const e: Entry = add({
        scenario: DEVICE_POLL,
        check: c,
        prepare: async (seconds) => {
          // Codes live 10 minutes: a run uses none that could expire during it.
          const oldest = Date.now() - (DEVICE_CODE_TTL_SECONDS - 60 - seconds) * 1000;
          const live = raw ? [] : pool.filter((code) => born.get(code)! > oldest);
          // A code comes back after pool ÷ rate seconds: at least 7 s at the last run's rate.
          const want = raw ? 500 : Math.max(2000, Math.ceil((e.lastRps ?? 2000) * 7));
          const fresh = live.length < want ? await deviceCodes(server, want - live.length) : [];
          const now = Date.now();
          for (const code of fresh) born.set(code, now);
          made += fresh.length;
          pool.length = 0;
          pool.push(...live, ...fresh);
        },
        load: ac(server.url, devicePollRequest(server, pool, dropped), c),
        after: async () => {
          // A code answered otherwise (slow_down: polled too soon) is done with: its interval grew.
          droppedTotal += dropped.size;
          const keep = pool.filter((code) => !dropped.has(code));
          pool.length = 0;
          pool.push(...keep);
          dropped.clear();
        },
        note: () => raw
          ? `${target}: a fresh pool of 500 pending codes before each run, polled in turn (oidc-provider keeps no interval: it answers authorization_pending however often a code is polled); ${f0(made)} codes made`
          : `${target}: a pool of pending codes, each polled again only after about 7 s (the interval is 5 s; sooner is \`slow_down\`), sized from the last run's rate; ${f0(made)} codes made, ${f0(droppedTotal)} dropped after another answer`,
      });
      notes.resets.push(() => {
        droppedTotal = 0;
      });
    }
    if (latchkey) {
      // Admin API reads with a fresh pool of admin tokens per run: at most 1,000 requests a token, below
      // the per-token limit (ADMIN_API_TOKEN_PER_MINUTE, 1,200 a minute).
      const tokens: string[] = [];
      const userId = server.users[0]!.id!;
      const c: Check = {
        what: `200 with the client list, or the person (\`"id"\` theirs)`,
        ok: (status, body) => status === 200 && (Array.isArray(json(body)?.clients) || json(body)?.id === userId),
        wrong: 0,
      };
      const e: Entry = add({
        scenario: ADMIN_READS,
        check: c,
        prepare: async (seconds) => {
          tokens.length = 0;
          tokens.push(...(await adminTokens(server, Math.max(20, Math.ceil(expected(e, seconds, 3000) / 1000)))));
        },
        load: ac(server.url, adminReadRequest(server, tokens, userId), c),
      });
    }
    signIns(SIGN_IN, 'password');
    if (latchkey) signIns(SIGN_IN_TOTP, 'totp');
    if (latchkey) signIns(SIGN_IN_PASSKEY, 'passkey');
  }
  // A B A B within each scenario: order by scenario, keeping Latchkey first.
  const order = [...new Set(out.map((e) => e.scenario))];
  out.sort((a, b) => order.indexOf(a.scenario) - order.indexOf(b.scenario));
  for (const floor of world.floors) {
    const check: Check = { what: '200', ok: (status) => status === 200, wrong: 0 };
    out.push({ scenario: 'floors', target: floor.name, latchkey: false, proc: floor.proc, samples: [], check, load: ac(floor.proc.url, { method: floor.method, path: floor.path }, check) });
  }
  return out;
}

/** MEMORY USAGE summed over the keys matching `pattern`, and their number. */
async function usageOf(redis: World['redis'], pattern: string): Promise<{ keys: number; bytes: number }> {
  let keys = 0;
  let bytes = 0;
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    const usage = await Promise.all(found.map((k) => redis.call('MEMORY', 'USAGE', k, 'SAMPLES', '0') as Promise<number | null>));
    keys += found.length;
    bytes += usage.reduce<number>((n, u) => n + (u ?? 0), 0);
  } while (cursor !== '0');
  return { keys, bytes };
}

/**
 * What a client-credentials token adds to Redis, everything included (its record, the client's index
 * of its tokens, the activity log's entry or count), then what a sign-in adds: used_memory on a fresh
 * Latchkey, and MEMORY USAGE of the parts.
 */
const TOKEN_PARTS = {
  'its record (ClientCredentials)': 'lk:{*}:ClientCredentials:*',
  "the client's index of its tokens (lk:client-token-digests)": 'lk:client-token-digests:*',
  'the activity log (lk:activity streams)': 'lk:activity*',
  'per-minute token counts (lk:{activity-tokens})': 'lk:{activity-tokens}:*',
} as const;

async function memoryProbe(world: World) {
  const { redis, latchkey } = world;
  const dbsize = () => redis.dbsize();
  const parts = async () => Object.fromEntries(await Promise.all(Object.entries(TOKEN_PARTS).map(async ([name, pattern]) => [name, await usageOf(redis, pattern)] as const)));
  const m0 = await usedMemory(redis);
  const k0 = await dbsize();
  const h0 = await keySpaceTables(redis);
  const p0 = await parts();
  const tokens = 5000;
  const t0 = Date.now();
  await tokenPool(latchkey, tokens);
  const tokenSeconds = (Date.now() - t0) / 1000;
  const m1 = await usedMemory(redis);
  const k1 = await dbsize();
  const h1 = await keySpaceTables(redis);
  const p1 = await parts();
  const signIns = 100;
  const stats = newFlowStats();
  await times(signIns, 4, () => signIn(latchkey, stats));
  const m2 = await usedMemory(redis);
  const k2 = await dbsize();
  // MEMORY USAGE of every record, grouped by kind.
  const byType = new Map<string, { n: number; bytes: number }>();
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', 'lk:*', 'COUNT', 1000);
    cursor = next;
    const usage = await Promise.all(found.map((k) => redis.call('MEMORY', 'USAGE', k, 'SAMPLES', '0') as Promise<number | null>));
    found.forEach((k, i) => {
      const t = keyType(k);
      const cur = byType.get(t) ?? { n: 0, bytes: 0 };
      byType.set(t, { n: cur.n + 1, bytes: cur.bytes + (usage[i] ?? 0) });
    });
  } while (cursor !== '0');
  const tokenParts = Object.keys(TOKEN_PARTS).map((name) => ({ name, keys: p1[name]!.keys - p0[name]!.keys, bytesPerToken: (p1[name]!.bytes - p0[name]!.bytes) / tokens, keysAfter: p1[name]!.keys, bytesAfter: p1[name]!.bytes }));
  // The key space's tables grow by doubling: a probe that crosses a power of two would be charged the
  // whole new table, one that does not would be charged none of it. Each new key is charged the tables'
  // average bytes per key after the probe instead (their entries and buckets, at the fill they have then).
  const tables = { before: h0, after: h1, perKey: h1 / k1 };
  const perToken = (m1 - m0 - (h1 - h0) + tables.perKey * (k1 - k0)) / tokens;
  return { tokens, tokenSeconds, perToken, tables, usedMemoryPerToken: (m1 - m0) / tokens, tokenParts, keysPerToken: (k1 - k0) / tokens, signIns, perSignIn: (m2 - m1) / signIns, keysPerSignIn: (k2 - k1) / signIns, byType };
}

/** Bytes of the key space's hash tables (main and expires, entries and buckets) of db 0: MEMORY STATS. */
async function keySpaceTables(redis: World['redis']): Promise<number> {
  const stats = (await redis.call('MEMORY', 'STATS')) as unknown[];
  const db = stats[stats.indexOf('db.0') + 1] as unknown[] | undefined;
  if (!db) return 0;
  const field = (name: string) => Number(db[db.indexOf(name) + 1] ?? 0);
  return field('overhead.hashtable.main') + field('overhead.hashtable.expires');
}

const f0 = (n: number) => Math.round(n).toLocaleString('en-US');
const f1 = (n: number) => n.toFixed(1);
const f2 = (n: number) => n.toFixed(2);

interface Timing {
  /** Seconds of the whole run, start to report. */
  total: number;
  /** Seconds spent inside measured and warm-up runs (load generation only). */
  load: number;
}

function report(world: World, list: Entry[], memory: Awaited<ReturnType<typeof memoryProbe>>, notes: Notes, machine: string[], argon2: Awaited<ReturnType<typeof argon2Probe>>, timing: Timing): string {
  const rps = (e: Entry) => median(e.samples.map((s) => s.rps));
  const p99Of = (e: Entry) => median(e.samples.map((s) => s.p99));
  const sum = (e: Entry, f: (s: Sample) => number) => e.samples.reduce((n, s) => n + f(s), 0);
  // Totals over all rounds for per-request figures (CPU, Redis), medians for rates and latency.
  const perReq = (e: Entry, f: (s: Sample) => number) => sum(e, (s) => f(s) * s.count) / Math.max(1, sum(e, (s) => s.count));
  const floors = list.filter((e) => e.scenario === 'floors');
  const find = (scenario: string, target: (t: string) => boolean) => list.find((e) => e.scenario === scenario && target(e.target));
  const raw = (scenario: string) => find(scenario, (t) => t.startsWith('raw'));
  const lkOf = (scenario: string) => find(scenario, (t) => t === 'Latchkey');
  const allOf = (scenario: string) => find(scenario, (t) => t.startsWith('Latchkey, all cores'));
  const leanOffOf = (scenario: string) => find(scenario, (t) => t === LEAN_OFF);
  const unexpected = (e: Entry) => (e.check ? e.check.wrong : sum(e, (s) => s.non2xx));
  const settle = 0.5 * list.length * (opts.rounds + 1);
  const lines = [
    '# Latchkey benchmark results',
    '',
    'Written by `npm run bench` (bench/run.ts). Every number below was measured in this run; nothing is copied from elsewhere.',
    '',
    ...machine,
    `- Load: the bench's own driver (bench/driver.ts: keep-alive HTTP/1.1 over node:net, one request in flight per connection, a fixed request encoded once, the answer's status line and framing read and its body handed to the row's check) with ${opts.connections} connections from the bench process, on the same CPUs as the servers (sign-ins: ${opts.connections} concurrent flows over node:http keep-alive connections), ${opts.warmup} s warm-up per target, then ${opts.rounds} rounds of ${opts.duration} s, targets alternating within each round (A B A B …). Rates, p50 and p99 are medians of the rounds; CPU and Redis figures are totals over all rounds divided by the requests. Every answer is held against what its row expects (status and shape, named in its section); "unexpected" counts the others.`,
    `- Run time: ${list.length} targets × (${opts.warmup} s warm-up + ${opts.rounds} × ${opts.duration} s) = ${f0(list.length * (opts.warmup + opts.rounds * opts.duration))} s of load, plus 0.5 s of settling before each run (${f0(settle)} s); the rest is set-up (registrations, ${f0(world.latchkey.totpUsers.length)} TOTP and ${f0(world.latchkey.passkeyUsers?.length ?? 0)} passkey enrolments through the pages, the memory and argon2id probes) and the pools made before runs: ${f1(timing.total / 60)} min in all, ${f0(timing.load)} s of it under load.`,
    `- Processes: a private redis-server; Latchkey (\`node src/main.ts\`, NODE_ENV=production, REDIS_URL, LOG_LEVEL=info JSON logs to a temporary file, metrics on)${world.latchkeyLeanOff ? ', and a second one with LEAN_PATH=off (everything through oidc-provider)' : ''}; raw oidc-provider 9 with its own in-memory adapter, given room for 50,000 records instead of 1,000 (bench/baselines/raw-oidc-provider.ts); Koa + ioredis and bare node:http floors (bench/baselines/). Everything on 127.0.0.1, everything on the same ${availableParallelism()} CPUs as the load generator.`,
    `- Load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(' ')}. "other load" is the CPU the rest of the machine used during the runs (other people's tests and builds), in cores: it perturbs every number here.`,
    '',
    '## Summary',
    '',
    `| scenario | Latchkey (1 process) /s | raw oidc-provider /s | Latchkey ÷ raw | ${floors.map((f) => `÷ ${f.target}`).join(' | ')} | Latchkey p99 ms | raw p99 ms |`,
    `|---|---|---|---|${floors.map(() => '---|').join('')}---|---|`,
  ];
  const scenarios = [...new Set(list.map((e) => e.scenario))].filter((s) => s !== 'floors');
  for (const scenario of scenarios) {
    const lk = lkOf(scenario)!;
    const r = raw(scenario);
    lines.push(`| ${scenario} | ${f0(rps(lk))} | ${r ? f0(rps(r)) : '–'} | ${r ? f2(rps(lk) / rps(r)) + '×' : '–'} | ${floors.map((fl) => (lk.flows ? '–' : f2(rps(lk) / rps(fl)) + '×')).join(' | ')} | ${f1(p99Of(lk))} | ${r ? f1(p99Of(r)) : '–'} |`);
  }
  lines.push(
    '',
    'Latchkey runs with WORKERS=1 (one process) unless its row says all cores; server CPU counts a process and its workers.',
    'Sign-in rates count complete sign-ins (several HTTP requests each, see below): no ratio to the single-request floors.',
    'No raw oidc-provider counterpart: JWT introspection (oidc-provider does not store JWT access tokens and refuses them at introspection), the admin API, TOTP and passkeys.',
    '',
  );
  const leanRows = [TOKEN, INTROSPECTION].filter((sc) => leanOffOf(sc));
  if (leanRows.length) {
    lines.push(`With LEAN_PATH=off (one process, everything through oidc-provider): ${leanRows.map((sc) => `${sc} ${f0(rps(leanOffOf(sc)!))}/s, p99 ${f1(p99Of(leanOffOf(sc)!))} ms (Latchkey ÷ it: ${f2(rps(lkOf(sc)!) / rps(leanOffOf(sc)!))}×)`).join('; ')}.`, '');
  }

  // ---- the targets of issue 23 ----
  const yes = (ok: boolean) => (ok ? 'met' : '**not met**');
  const ratioToRaw = (sc: string) => rps(lkOf(sc)!) / rps(raw(sc)!);
  const getFloor = floors.find((f) => f.target === 'Koa + ioredis, one GET');
  const tokenTotal = memory.perToken;
  // What the server sends on timers, not per request: the activity log's token counts (one script a write, whose
  // one ZREMRANGEBYSCORE counts the writes) and the logout queue's RPOP.
  const timerCmds = (s: Sample) => ['hincrby', 'zadd', 'expire', 'zremrangebyscore', 'rpop'].reduce((n, c) => n + (s.redisCmds[c] ?? 0), s.redisCmds.zremrangebyscore ?? 0);
  const refreshTimerCmds = perReq(lkOf(REFRESH)!, timerCmds);
  const refreshCmds = perReq(lkOf(REFRESH)!, (s) => s.redisCmdsTotal) - refreshTimerCmds;
  const totp = lkOf(SIGN_IN_TOTP)!;
  const totpCmds = perReq(totp, (s) => s.redisCmdsTotal);
  const totpCpuMs = perReq(totp, (s) => s.cpuUs) / 1000;
  // Measured per thread: everything but libuv's pool, where argon2id runs; then the pool's other work, from the passkey row.
  const totpPoolMs = perReq(totp, (s) => s.poolCpuUs) / 1000;
  const totpOutsidePoolMs = totpCpuMs - totpPoolMs;
  const passkeyRow = lkOf(SIGN_IN_PASSKEY);
  const passkeyPoolMs = passkeyRow ? perReq(passkeyRow, (s) => s.poolCpuUs) / 1000 : 0;
  const outsideArgon = totpOutsidePoolMs + passkeyPoolMs;
  const subtracted = totpCpuMs - argon2.cpuMs;
  const p99Rows = [TOKEN, INTROSPECTION, REFRESH].map((sc) => ({ sc, lk: p99Of(lkOf(sc)!), raw: p99Of(raw(sc)!) }));
  lines.push(
    `Against the targets of issue 23 (the thresholds are the issue's; the values are this run's, ${opts.connections} connections${opts.connections === 32 ? '' : ': the p99 target is at 32'}):`,
    '',
    `- client_credentials tokens ≥ 1.2× raw oidc-provider: ${f2(ratioToRaw(TOKEN))}× (${f0(rps(lkOf(TOKEN)!))}/s against ${f0(rps(raw(TOKEN)!))}/s) — ${yes(ratioToRaw(TOKEN) >= 1.2)}. JWT access tokens, for comparison: ${f2(ratioToRaw(JWT_TOKEN))}× (Latchkey signs ES256, raw oidc-provider RS256).`,
    `- introspection ≥ 1.5× raw oidc-provider: ${f2(ratioToRaw(INTROSPECTION))}× (${f0(rps(lkOf(INTROSPECTION)!))}/s against ${f0(rps(raw(INTROSPECTION)!))}/s) — ${yes(ratioToRaw(INTROSPECTION) >= 1.5)}`,
    getFloor
      ? `- introspection ≥ 0.5× the Koa + ioredis one-GET floor: ${f2(rps(lkOf(INTROSPECTION)!) / rps(getFloor))}× (against ${f0(rps(getFloor))}/s) — ${yes(rps(lkOf(INTROSPECTION)!) / rps(getFloor) >= 0.5)}`
      : '- introspection ≥ 0.5× the Koa + ioredis one-GET floor: not measured',
    `- refresh ≥ 1.2× raw oidc-provider: ${f2(ratioToRaw(REFRESH))}× (${f0(rps(lkOf(REFRESH)!))}/s against ${f0(rps(raw(REFRESH)!))}/s) — ${yes(ratioToRaw(REFRESH) >= 1.2)}`,
    `- p99 no higher than raw oidc-provider's: ${p99Rows.map((r) => `${r.sc} ${f1(r.lk)} ms against ${f1(r.raw)} ms — ${yes(r.lk <= r.raw)}`).join('; ')}. For comparison, the other rows with both: ${[JWT_TOKEN, REVOCATION, DEVICE_POLL, SIGN_IN].map((sc) => `${sc} ${f1(p99Of(lkOf(sc)!))} ms against ${f1(p99Of(raw(sc)!))} ms`).join('; ')}.`,
    ...[TOKEN, INTROSPECTION].map((sc) => {
      const a = allOf(sc);
      if (!a) return `- all cores, ${sc} ≥ 1.5× raw oidc-provider: not measured`;
      const r = rps(a) / rps(raw(sc)!);
      return `- all cores, ${sc} ≥ 1.5× raw oidc-provider: ${a.target} ${f0(rps(a))}/s = ${f2(r)}× — ${yes(r >= 1.5)}`;
    }),
    `- ≤ 400 bytes of Redis per client-credentials token, everything included: ${f0(tokenTotal)} bytes of used_memory per token — ${yes(tokenTotal <= 400)}. Of it, by MEMORY USAGE: ${memory.tokenParts.map((p) => `${p.name} ${f0(p.bytesPerToken)}`).join(', ')} (see "Redis memory per stored object").`,
    `- ≤ 8 Redis commands per refresh: ${f2(refreshCmds)} — ${yes(refreshCmds <= 8)} (besides ${f2(refreshTimerCmds)} per refresh sent on timers: the activity log's token counts, the logout queue)`,
    `- ≤ 25 Redis commands per complete password + TOTP sign-in: ${f2(totpCmds)} — ${yes(totpCmds <= 25)} (${f1(totp.flows!.httpRequests / Math.max(1, totp.flows!.flows))} HTTP requests each, the code's redemption at /token included)`,
    `- ≤ 2.5 ms of server CPU per password + TOTP sign-in outside argon2id: ${f2(outsideArgon)} ms — ${yes(outsideArgon <= 2.5)}. Measured per thread over the TOTP row's sign-ins, from /proc/<pid>/task/*/stat (user + system) and /proc/<pid>/task/*/comm: ${f2(totpCpuMs)} ms of server CPU per sign-in, of which ${f2(totpPoolMs)} ms on libuv's thread pool (the \`libuv-worker\` threads, where @node-rs/argon2 verifies) and ${f2(totpOutsidePoolMs)} ms on every other thread (${f2(perReq(totp, (s) => s.mainCpuUs) / 1000)} ms the JavaScript thread, the rest V8's GC and compiler threads). The pool also runs a sign-in's other asynchronous work — the ID token's signature (jose signs with WebCrypto, whose jobs run there) and the log's asynchronous file writes — which is counted as outside argon2id: ${f2(passkeyPoolMs)} ms, the pool's CPU per passkey-alone sign-in (the same signature and log, no argon2id; it also checks a WebAuthn signature there, so this counts a little more than a TOTP sign-in's share).`,
    `  Cross-check, the old way: ${f2(totpCpuMs)} ms − ${f2(argon2.cpuMs)} ms for one argon2id verify measured in the bench process before the load (${f2(argon2.poolMs)} ms of it on its pool; OWASP parameters, as Latchkey runs it: ${f1(argon2.wallMs)} ms wall) = ${f2(subtracted)} ms; the verify caps sign-ins at ${f0(argon2.ceiling)}/s on ${availableParallelism()} CPUs before any HTTP, Redis or load generation.`,
    '',
    'Earlier targets (issue 5), for reference:',
    '',
    `- complete sign-ins with TOTP ≥ 100/s: ${f1(rps(totp))}/s${allOf(SIGN_IN_TOTP) ? ` (all cores: ${f1(rps(allOf(SIGN_IN_TOTP)!))}/s)` : ''} — ${yes(Math.max(rps(totp), allOf(SIGN_IN_TOTP) ? rps(allOf(SIGN_IN_TOTP)!) : 0) >= 100)}`,
    `- complete sign-ins with a passkey alone ≥ 3× those with TOTP: ${f1(rps(lkOf(SIGN_IN_PASSKEY)!))}/s, ${f1(rps(lkOf(SIGN_IN_PASSKEY)!) / rps(totp))}× — ${yes(rps(lkOf(SIGN_IN_PASSKEY)!) >= 3 * rps(totp))}`,
    '',
  );

  for (const scenario of [...scenarios, 'floors']) {
    lines.push(`## ${scenario}`, '');
    lines.push('| server | /s (median) | rounds /s | p50 ms | p99 ms | server CPU µs/req | Redis CPU µs/req | Redis cmds/req | Redis mem Δ B/req | unexpected | errors | other load (cores) |');
    lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
    const rows = list.filter((x) => x.scenario === scenario);
    for (const e of rows) {
      lines.push(
        `| ${e.target} | ${f0(rps(e))} | ${e.samples.map((s) => f0(s.rps)).join(', ')} | ${f1(median(e.samples.map((s) => s.p50)))} | ${f1(p99Of(e))} | ${f0(perReq(e, (s) => s.cpuUs))} | ${f0(perReq(e, (s) => s.redisCpuUs))} | ${f2(perReq(e, (s) => s.redisCmdsTotal))} | ${f0(perReq(e, (s) => s.memPerReq))} | ${f0(unexpected(e))} | ${f0(sum(e, (s) => s.errors))} | ${f2(median(e.samples.map((s) => s.otherCores)))} |`,
      );
    }
    lines.push('');
    const check = rows.find((e) => e.check)?.check;
    lines.push(check ? `- Every answer checked: ${check.what}${scenario === 'floors' ? '' : ' (the same for every server of this row)'}.` : '- Every answer checked by the flow: each step must show the page it expects and end with the code redeemed at /token; "unexpected" counts non-2xx/3xx answers, "errors" sign-ins that did not finish.');
    for (const e of rows.filter((x) => x.check?.first)) lines.push(`- First unexpected answer, ${e.target}: ${e.check!.first}`);
    for (const e of rows.filter((x) => x.latchkey || x.target.startsWith('Koa'))) {
      const cmds = new Map<string, number>();
      for (const s of e.samples) for (const [c, v] of Object.entries(s.redisCmds)) cmds.set(c, (cmds.get(c) ?? 0) + v * s.count);
      const total = sum(e, (s) => s.count);
      const text = [...cmds].sort((a, b) => b[1] - a[1]).map(([c, v]) => `${c} ${f2(v / total)}`).join(', ');
      lines.push(`- Redis commands per request, ${e.target} (commands run inside Lua scripts counted too): ${text || 'none'}`);
    }
    for (const e of rows.filter((x) => x.samples.some((s) => s.non2xx > 0))) {
      const merged: Record<string, number> = {};
      for (const s of e.samples) for (const [code, n] of Object.entries(s.status)) merged[code] = (merged[code] ?? 0) + n;
      lines.push(`- Status codes, ${e.target}: ${Object.entries(merged).map(([c, n]) => `${c}×${f0(n)}`).join(', ')}`);
    }
    for (const e of rows.filter((x) => x.note)) lines.push(`- ${e.note!()}.`);
    if (scenario === INTROSPECTION) lines.push("- Each request introspects the next token of a pool of 200 client-credentials tokens made just before the run, with the API's own credentials.");
    if (scenario === JWT_INTROSPECTION) lines.push("- As above, with 200 JWT access tokens (ES256) for the API that takes them, introspected with that API's credentials: a signature verified and one Redis read (has it been revoked?).");
    if (scenario === TOKEN && leanOffOf(TOKEN)) lines.push('- Latchkey, LEAN_PATH=off: a Latchkey like the first (one process, the same Redis) with the lean path off, so every request goes through oidc-provider.');
    if (scenario === REFRESH) {
      lines.push(
        `- Measured on rotating chains: before each run, complete sign-ins (not measured) top the queue up to ${2 * opts.connections} live refresh tokens; each request takes one and puts back the rotated token from its answer, so every request is a real single-use refresh. A request in flight when a run ends loses its chain. Requests that found the queue empty (sent with a dead token): ${[...notes.chains].map(([t, c]) => `${t} ${c.starved}`).join(', ')}.`,
        '- raw oidc-provider\'s chains are started afresh before each of its runs (other rows may have pushed them out of its memory adapter). Latchkey keeps every rotated (consumed) refresh token until its own expiry (14 days) to detect reuse, which is what "Redis mem Δ" shows.',
      );
    }
    if (scenario === REVOCATION) lines.push('- Each request revokes (RFC 7009, the machine client, `token_type_hint=access_token`) one opaque client-credentials token of its own, made just before the run for this run only: none is revoked twice, none had been forgotten by raw oidc-provider\'s memory adapter. A run lasts until its pool is used up (as many tokens as the last run revoked in its time), so its length varies a little around the others\'. A revoked token\'s record is deleted: "Redis mem Δ" stays flat.');
    if (scenario === DEVICE_POLL) lines.push('- Each request is a device polling the token endpoint (`grant_type=urn:ietf:params:oauth:grant-type:device_code`, a public client) with a code nobody has approved yet. Latchkey answers `slow_down` to a code polled sooner than its interval (RFC 8628 §3.5), which is why its pool is large.');
    if (scenario === ADMIN_READS) lines.push(`- GET /admin/api/v1/clients (the first page: up to 50 clients) and GET /admin/api/v1/users/:id (one bench person, with factors) in turn, each with an access token of a client with scope latchkey:admin:read, from a pool made before each run (at most 1,000 requests a token: the per-token limit is 1,200 a minute). No raw oidc-provider counterpart.`);
    if (scenario === SIGN_IN || scenario === SIGN_IN_TOTP || scenario === SIGN_IN_PASSKEY) {
      for (const e of rows) {
        const fl = e.flows!;
        const per = (n: number) => f1(n / Math.max(1, fl.flows));
        lines.push(`- ${e.target}: ${per(fl.httpRequests)} HTTP requests per sign-in (every redirect followed); consent form posted in ${f0(fl.consentForms)} of ${f0(fl.flows)} sign-ins${scenario === SIGN_IN_TOTP ? `; ${per(fl.totpCodes)} TOTP codes per sign-in; ${f0(fl.waits)} waits for a person free to answer in the current 30 s step (not counted in latency)` : ''}. Latency and CPU are per complete sign-in.`);
      }
    }
    if (scenario === SIGN_IN) {
      lines.push(
        `- Latchkey: GET /auth → login page → POST email + password (argon2id verify, OWASP parameters) → code → POST /token. A person's consent is remembered per app: after the first sign-in of each of the ${world.latchkey.users.length} password-only bench users, the grant is made as the sign-in resumes and the code follows the password directly, with no consent step. Each sign-in starts without cookies (a new session). MFA_POLICY=optional, so people without a second factor sign in with a password alone.`,
        '- raw oidc-provider: its bench interaction handler logs in and consents without a page, a form or a password, so the ratio shows what the pages and argon2id cost.',
      );
    }
    if (scenario === SIGN_IN_TOTP) {
      lines.push(
        `- Latchkey (and all cores, with the same people): as above, plus the TOTP page: the code of the current step, computed from the secret each of ${f0(world.latchkey.totpUsers.length)} bench people got by enrolling through the enrollment page (key read from the page, first code, recovery codes "saved") before the measurements. An account accepts one code per 30 s step, so a person signs in at most once per step: sustaining N sign-ins/s takes about 30·N people (\`--totp-users\`); when all have answered in the current step, a flow waits for the next one.`,
        '- No baseline: raw oidc-provider has no second factor. Compare with the password-only rows above.',
      );
    }
    if (scenario === SIGN_IN_PASSKEY) {
      lines.push(
        `- Latchkey (and all cores, with the same people and device): GET /auth → login page (its passkey form carries a challenge bound to the interaction) → POST the assertion of a discoverable passkey with user verification (no password, no argon2) → code (consent remembered: no consent step) → POST /token. The ${f0(world.latchkey.passkeyUsers?.length ?? 0)} bench people enrolled a passkey through the enrolment page before the measurements; their device is a software authenticator in the bench process (test/helpers/soft-authenticator.ts: P-256 keys, real signatures), whose signing is load-generator work. A person may sign in with a passkey any number of times a minute, so no waits.`,
        '- No baseline: raw oidc-provider has no passkeys. Compare with the TOTP row above, in the same run.',
      );
    }
    lines.push('');
  }
  lines.push('## Redis memory per stored object (Latchkey)', '');
  lines.push(
    `Measured before the load runs (after the registrations and the enrolments): \`INFO memory\` used_memory before and after ${f0(memory.tokens)} client-credentials tokens (issued in ${f1(memory.tokenSeconds)} s), then ${f0(memory.signIns)} complete password sign-ins (each with its code redeemed).`,
    '',
    `- One client-credentials token, everything included: **${f0(memory.perToken)} bytes** of used_memory, ${f2(memory.keysPerToken)} keys, with its share of the key space's tables (main and expires) at their average per key after the probe, ${f0(memory.tables.perKey)} bytes (MEMORY STATS; they grow by doubling, so the probe's raw used_memory change, ${f0(memory.usedMemoryPerToken)} bytes per token here, is charged a whole new table when it crosses a power of two and none when it does not: ${f0(memory.tables.before)} → ${f0(memory.tables.after)} bytes in this probe). By MEMORY USAGE of the keys each part adds to or grows:`,
    ...memory.tokenParts.map((p) => `  - ${p.name}: ${f0(p.bytesPerToken)} bytes per token (${f0(p.keysAfter)} keys, ${f0(p.bytesAfter)} bytes after the probe)`),
    `  - the rest, which MEMORY USAGE of a key leaves out (the key's share of the key space's tables, its expiry entry, the allocator's rounding): ${f0(memory.perToken - memory.tokenParts.reduce((n, p) => n + p.bytesPerToken, 0))} bytes per token`,
    '  A per-minute count costs the same for one token as for thousands: the probe issues its tokens within a minute or two, so its share per token is small here and larger for a client that takes a token now and then.',
    `- One sign-in (session, grant, refresh and access tokens, the consumed authorization code kept until its 60 s expiry, indexes): **${f0(memory.perSignIn)} bytes**, ${f2(memory.keysPerSignIn)} keys.`,
    '',
    '`MEMORY USAGE` of every key afterwards, by kind (the sign-in records include those of the enrolments):',
    '',
    '| kind | keys | average bytes |',
    '|---|---|---|',
  );
  for (const [type, { n, bytes }] of [...memory.byType].sort((a, b) => b[1].n - a[1].n)) lines.push(`| ${type} | ${f0(n)} | ${f0(bytes / n)} |`);
  const avg = (t: string) => {
    const v = memory.byType.get(t);
    return v ? v.bytes / v.n : 0;
  };
  const grantKinds = ['Session', 'Session uid index', 'Grant', 'grant index', 'AccessToken', 'RefreshToken'];
  lines.push('', `One person's grant with its refresh and access tokens and session (${grantKinds.join(' + ')}, averages above): **${f0(grantKinds.reduce((n, t) => n + avg(t), 0))} bytes**; plus ${f0(avg('AuthorizationCode'))} bytes for the consumed code during its first minute.`, '');
  return lines.join('\n');
}

/**
 * What one argon2id verify costs here, as Latchkey runs it (src/accounts/passwords.ts: @node-rs/argon2,
 * OWASP m=19 MiB, t=2, p=1): CPU of this process (its thread pool included) over sequential verifies,
 * before any load. Every password sign-in pays it once, so it bounds sign-ins/s by itself.
 */
async function argon2Probe() {
  const password = 'correct horse battery staple';
  const stored = await hashPassword(password);
  for (let i = 0; i < 5; i += 1) await verifyPassword(stored, password);
  const n = 40;
  const cpu0 = process.cpuUsage();
  const pool0 = threadCpu(process.pid).pool;
  const t0 = performance.now();
  for (let i = 0; i < n; i += 1) await verifyPassword(stored, password);
  const cpu = process.cpuUsage(cpu0);
  const cpuMs = (cpu.user + cpu.system) / 1000 / n;
  return { cpuMs, poolMs: ((threadCpu(process.pid).pool - pool0) * 1000) / n, wallMs: (performance.now() - t0) / n, ceiling: (availableParallelism() * 1000) / cpuMs };
}

async function bench() {
  const started = performance.now();
  const machine = machineLines();
  const only = values.only;
  // A partial run (--only) starts what its rows need: the baselines (cheap), people enrolled only for their rows.
  const wants = (scenario: string) => !only || scenario.includes(only);
  // LEAN_PATH=off only where the setting exists: an unknown variable is ignored, and the row would measure the lean path.
  const leanOff = values['lean-off'] === true && 'LEAN_PATH' in configDocs;
  if (values['lean-off'] && !leanOff) console.warn('--lean-off: this Latchkey has no LEAN_PATH setting (src/config.ts); the LEAN_PATH=off rows are left out');
  const totpCount = wants(SIGN_IN_TOTP) ? opts.totpUsers : 0;
  const passkeyCount = wants(SIGN_IN_PASSKEY) ? opts.passkeyUsers : 0;
  console.log(`starting Redis, Latchkey${leanOff ? ' (and one with LEAN_PATH=off)' : ''} and the baselines…`);
  if (totpCount) console.log(`(and ${totpCount} people enrolled in TOTP through the sign-in pages)`);
  if (passkeyCount) console.log(`(and ${passkeyCount} people who enrolled a passkey the same way)`);
  const world = await startWorld({ baselines: true, users: 4, totpUsers: totpCount, passkeyUsers: passkeyCount, allCores: !only || values['all-cores'] === true, leanOff });
  const stopOnSignal = () => void world.stop().then(() => process.exit(130));
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  try {
    const memory = only ? undefined : (console.log('measuring Redis memory per stored object…'), await memoryProbe(world));
    const argon2 = await argon2Probe();
    const notes: Notes = { chains: new Map(), resets: [] };
    const list = entries(world, opts.connections, notes).filter((e) => wants(e.scenario));
    let loadSeconds = 0;
    const runOnce = async (e: Entry, seconds: number) => {
      await e.prepare?.(seconds);
      await sleep(500); // let the previous run's last requests finish outside this measurement
      const t0 = performance.now();
      const s = await measure(world.watch(e.proc), () => e.load(seconds));
      loadSeconds += (performance.now() - t0) / 1000;
      e.lastRps = s.rps;
      await e.after?.();
      console.log(`  ${e.scenario} · ${e.target}: ${f0(s.rps)}/s p50 ${f1(s.p50)} ms p99 ${f1(s.p99)} ms, ${f0(s.cpuUs)} µs CPU (${f0(s.poolCpuUs)} on the thread pool), ${f2(s.redisCmdsTotal)} Redis cmds, unexpected ${e.check ? e.check.wrong : s.non2xx}${e.scenario === SIGN_IN_TOTP ? `, ${e.flows?.waits ?? 0} waits so far` : ''}`);
      return s;
    };
    console.log(`${list.length} targets × (${opts.warmup} s warm-up + ${opts.rounds} × ${opts.duration} s) = ${f0(list.length * (opts.warmup + opts.rounds * opts.duration))} s of load, plus pools and settling`);
    console.log(`warm-up (${opts.warmup} s each)…`);
    for (const e of list) await runOnce(e, opts.warmup);
    // Counters of the warm-up are not results.
    for (const c of notes.chains.values()) c.starved = 0;
    for (const reset of notes.resets) reset();
    for (const e of list) {
      if (e.flows) Object.assign(e.flows, newFlowStats());
      if (e.check) {
        e.check.wrong = 0;
        delete e.check.first;
      }
    }
    for (let round = 1; round <= opts.rounds; round += 1) {
      console.log(`round ${round} of ${opts.rounds} (${opts.duration} s each)…`);
      for (const e of list) e.samples.push(await runOnce(e, opts.duration));
    }
    if (!memory) {
      // A partial run: medians and checks on stdout; RESULTS.md keeps the full run.
      for (const e of list) {
        console.log(`${e.scenario} · ${e.target}: ${f1(median(e.samples.map((x) => x.rps)))}/s (median of ${opts.rounds} rounds), unexpected answers ${e.check ? e.check.wrong : e.samples.reduce((n, x) => n + x.non2xx, 0)}${e.check?.first ? ` (first: ${e.check.first})` : ''}`);
        if (e.note) console.log(`  ${e.note()}`);
      }
      console.log(`${f1((performance.now() - started) / 60_000)} min in all, ${f0(loadSeconds)} s under load`);
      return;
    }
    const text = report(world, list, memory, notes, machine, argon2, { total: (performance.now() - started) / 1000, load: loadSeconds });
    writeFileSync(new URL('RESULTS.md', import.meta.url), text);
    console.log(`\n${text}\nwritten to bench/RESULTS.md`);
  } finally {
    await world.stop();
  }
}

if (values.soak !== undefined) await runSoak(Number(values.soak), opts.connections, machineLines());
else await bench();
