import { execSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import {
  clientCredentialsToken, introspectionRequest, newFlowStats, RefreshChains, signIn, signInLoad, times, tokenRequest,
  type FlowStats, type Server,
} from './flows.ts';
import { cannon, keyType, median, measure, ROOT, sleep, usedMemory, type Load, type Proc, type Sample } from './lib.ts';
import { hashPassword, verifyPassword } from '../src/accounts/passwords.ts';
import { runSoak } from './soak.ts';
import { startWorld, type World } from './world.ts';

/**
 * `npm run bench [-- --duration 5 --rounds 3 --connections 32 --warmup 3]` measures Latchkey against
 * its baselines, alternately in one run, and writes bench/RESULTS.md.
 * `npm run bench -- --soak SECONDS` runs mixed traffic instead (bench/soak.ts, bench/SOAK.md).
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
    /** Only the scenarios whose name contains this (no baselines, no all-cores target, no RESULTS.md): e.g. `--only "complete sign-in with"`. */
    only: { type: 'string' },
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
    `- Node ${process.version}, oidc-provider ${version('oidc-provider')}, koa ${version('koa')}, ioredis ${version('ioredis')}, autocannon ${version('autocannon')}, ${execSync('redis-server --version').toString().trim().split(' ').slice(0, 3).join(' ')}; code: ${git}`,
  ];
}

const SIGN_IN = 'complete sign-in, password only';
const JWT_TOKEN = 'client_credentials token, JWT access token (Latchkey ES256, raw oidc-provider RS256)';
const ALL_CORES = (workers: number) => `Latchkey, all cores (WORKERS=${workers})`;
const SIGN_IN_TOTP = 'complete sign-in with TOTP';
const SIGN_IN_PASSKEY = 'complete sign-in with a passkey alone';

interface Entry {
  scenario: string;
  target: string;
  latchkey: boolean;
  proc: Proc;
  /** Runs before each run, outside the measurement (pools, chains). */
  prepare?: () => Promise<void>;
  load: (seconds: number) => Promise<Load>;
  samples: Sample[];
  flows?: FlowStats;
}

interface Notes {
  inactive: Map<string, { inactive: number }>;
  chains: Map<string, RefreshChains>;
}

function entries(world: World, connections: number, notes: Notes): Entry[] {
  const out: Entry[] = [];
  const all = world.latchkeyAllCores;
  const servers: [string, Server & { proc: Proc }][] = [['Latchkey', world.latchkey], ...(world.raw ? [['raw oidc-provider (memory)', world.raw] as [string, Server & { proc: Proc }]] : []), ...(all ? [[ALL_CORES(all.workers), all] as [string, Server & { proc: Proc }]] : [])];
  const ac = (url: string, request: Parameters<typeof cannon>[1]) => (duration: number) => cannon(url, request, { connections, duration });
  for (const [target, server] of servers) {
    const latchkey = target.startsWith('Latchkey');
    const base = { target, latchkey, proc: server.proc };
    const allCores = server === all;
    out.push({ ...base, samples: [], scenario: 'client_credentials token', load: ac(server.url, tokenRequest(server)) });
    if (!allCores) out.push({ ...base, samples: [], scenario: JWT_TOKEN, load: ac(server.url, tokenRequest(server, undefined, true)) });
    // A fresh pool before each run: raw oidc-provider's memory adapter keeps only 1,000 records (LRU).
    const pool: string[] = [];
    const check = { inactive: 0 };
    notes.inactive.set(target, check);
    const introspect = introspectionRequest(server, pool);
    introspect.onResponse = (status, body) => {
      if (status === 200 && !body.includes('"active":true')) check.inactive += 1;
    };
    out.push({
      ...base,
      samples: [],
      scenario: 'introspection of an active token',
      prepare: async () => {
        pool.length = 0;
        pool.push(...(await times(200, 16, () => clientCredentialsToken(server))));
      },
      load: ac(server.url, introspect),
    });
    const signIns = (scenario: string, mode: 'password' | 'totp' | 'passkey') => {
      const flows = newFlowStats();
      out.push({
        ...base,
        samples: [],
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
      // The all-cores target of issue 5 is for tokens and introspection; sign-ins are shown beside them
      // because production runs a worker per CPU.
      signIns(SIGN_IN_TOTP, 'totp');
      signIns(SIGN_IN_PASSKEY, 'passkey');
      continue;
    }
    const chains = new RefreshChains(server);
    notes.chains.set(target, chains);
    const setupFlows = newFlowStats();
    out.push({
      ...base,
      samples: [],
      scenario: 'refresh-token grant (rotating)',
      prepare: async () => {
        if (!latchkey) chains.tokens.length = 0; // evicted from the LRU by the runs in between
        await chains.topUp(2 * connections, setupFlows);
      },
      load: ac(server.url, chains.request()),
    });
    signIns(SIGN_IN, 'password');
    if (latchkey) signIns(SIGN_IN_TOTP, 'totp');
    if (latchkey) signIns(SIGN_IN_PASSKEY, 'passkey');
  }
  // A B A B within each scenario: order by scenario, keeping Latchkey first.
  const order = [...new Set(out.map((e) => e.scenario))];
  out.sort((a, b) => order.indexOf(a.scenario) - order.indexOf(b.scenario));
  for (const floor of world.floors) {
    out.push({ scenario: 'floors', target: floor.name, latchkey: false, proc: floor.proc, samples: [], load: ac(floor.proc.url, { method: floor.method, path: floor.path }) });
  }
  return out;
}

/** Redis memory per stored object, measured on a fresh Latchkey: client-credentials tokens, then sign-ins. */
async function memoryProbe(world: World) {
  const { redis, latchkey } = world;
  const dbsize = () => redis.dbsize();
  // The activity log (one entry per audit event, `token_issued` included) is capped at ADMIN_ACTIVITY_MAX
  // entries: a bounded cost, measured apart from the records that grow with the tokens.
  const activity = async () => Number((await redis.call('MEMORY', 'USAGE', 'lk:activity', 'SAMPLES', '0')) ?? 0);
  const m0 = await usedMemory(redis);
  const k0 = await dbsize();
  const a0 = await activity();
  const tokens = 5000;
  await times(tokens, 16, () => clientCredentialsToken(latchkey));
  const m1 = await usedMemory(redis);
  const k1 = await dbsize();
  const a1 = await activity();
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
  return { tokens, perToken: (m1 - m0) / tokens, activityPerToken: (a1 - a0) / tokens, keysPerToken: (k1 - k0) / tokens, signIns, perSignIn: (m2 - m1) / signIns, keysPerSignIn: (k2 - k1) / signIns, byType };
}

const f0 = (n: number) => Math.round(n).toLocaleString('en-US');
const f1 = (n: number) => n.toFixed(1);
const f2 = (n: number) => n.toFixed(2);

function report(world: World, list: Entry[], memory: Awaited<ReturnType<typeof memoryProbe>>, notes: Notes, machine: string[], argon2: Awaited<ReturnType<typeof argon2Probe>>): string {
  const rps = (e: Entry) => median(e.samples.map((s) => s.rps));
  const sum = (e: Entry, f: (s: Sample) => number) => e.samples.reduce((n, s) => n + f(s), 0);
  // Totals over all rounds for per-request figures (CPU, Redis), medians for rates and latency.
  const perReq = (e: Entry, f: (s: Sample) => number) => sum(e, (s) => f(s) * s.count) / Math.max(1, sum(e, (s) => s.count));
  const floors = list.filter((e) => e.scenario === 'floors');
  const raw = (scenario: string) => list.find((e) => e.scenario === scenario && e.target.startsWith('raw'));
  const lines = [
    '# Latchkey benchmark results',
    '',
    'Written by `npm run bench` (bench/run.ts). Every number below was measured in this run; nothing is copied from elsewhere.',
    '',
    ...machine,
    `- Load: autocannon ${opts.connections} connections from the bench process (sign-ins: ${opts.connections} concurrent flows over node:http keep-alive connections), ${opts.warmup} s warm-up per target, then ${opts.rounds} rounds of ${opts.duration} s, targets alternating within each round (A B A B …). Rates, p50 and p99 are medians of the rounds; CPU and Redis figures are totals over all rounds divided by the requests.`,
    `- Processes: a private redis-server; Latchkey (\`node src/main.ts\`, NODE_ENV=production, REDIS_URL, LOG_LEVEL=info JSON logs to a temporary file, metrics on); raw oidc-provider 9 with its default in-memory adapter (bench/baselines/raw-oidc-provider.ts); Koa + ioredis and bare node:http floors (bench/baselines/). Everything on 127.0.0.1, everything on the same ${availableParallelism()} CPUs as the load generator.`,
    `- Load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(' ')}. "other load" is the CPU the rest of the machine used during the runs (other people's tests and builds), in cores: it perturbs every number here.`,
    '',
    '## Summary',
    '',
    `| scenario | Latchkey (1 process) /s | raw oidc-provider /s | Latchkey ÷ raw | ${floors.map((f) => `÷ ${f.target}`).join(' | ')} | Latchkey p99 ms |`,
    `|---|---|---|---|${floors.map(() => '---|').join('')}---|`,
  ];
  const scenarios = [...new Set(list.map((e) => e.scenario))].filter((s) => s !== 'floors');
  for (const scenario of scenarios) {
    const lk = list.find((e) => e.scenario === scenario && e.target === 'Latchkey')!;
    const r = raw(scenario);
    lines.push(`| ${scenario} | ${f0(rps(lk))} | ${r ? f0(rps(r)) : '–'} | ${r ? f2(rps(lk) / rps(r)) + '×' : '–'} | ${floors.map((fl) => (lk.flows ? '–' : f2(rps(lk) / rps(fl)) + '×')).join(' | ')} | ${f1(median(lk.samples.map((s) => s.p99)))} |`);
  }
  lines.push('', 'Latchkey runs with WORKERS=1 (one process) unless its row says all cores; server CPU counts a process and its workers.', 'Sign-in rates count complete sign-ins (several HTTP requests each, see below): no ratio to the single-request floors.', '');
  const lkOf = (scenario: string) => list.find((e) => e.scenario === scenario && e.target === 'Latchkey')!;
  const allOf = (scenario: string) => list.find((e) => e.scenario === scenario && e.target.startsWith('Latchkey, all cores'));
  const ratio = (scenario: string) => rps(lkOf(scenario)) / rps(raw(scenario)!);
  const p99 = (scenario: string) => median(lkOf(scenario).samples.map((s) => s.p99));
  const yes = (ok: boolean) => (ok ? 'met' : '**not met**');
  const cc = memory.byType.get('ClientCredentials');
  const ccUsage = cc ? cc.bytes / cc.n : 0;
  lines.push(
    'Against the targets of issue 5 (the thresholds are the issue\'s; the values are this run\'s):',
    '',
    `- client_credentials ≥ 1.0× raw oidc-provider: ${f2(ratio('client_credentials token'))}× — ${yes(ratio('client_credentials token') >= 1)}; p99 ≤ 10 ms: ${f1(p99('client_credentials token'))} ms — ${yes(p99('client_credentials token') <= 10)}`,
    `- introspection ≥ 1.0× raw oidc-provider: ${f2(ratio('introspection of an active token'))}× — ${yes(ratio('introspection of an active token') >= 1)}; p99 ≤ 10 ms: ${f1(p99('introspection of an active token'))} ms — ${yes(p99('introspection of an active token') <= 10)}`,
    ...['client_credentials token', 'introspection of an active token'].map((sc) => {
      const a = allOf(sc);
      if (!a) return `- all cores: not measured for ${sc}`;
      const r = rps(a) / rps(raw(sc)!);
      return `- all cores, ${sc} ≥ 1.3× raw oidc-provider: ${a.target} ${f0(rps(a))}/s = ${f2(r)}× — ${yes(r >= 1.3)}`;
    }),
    `- complete sign-ins with TOTP ≥ 100/s: ${f1(rps(lkOf(SIGN_IN_TOTP)))}/s${allOf(SIGN_IN_TOTP) ? ` (all cores: ${f1(rps(allOf(SIGN_IN_TOTP)!))}/s)` : ''} — ${yes(Math.max(rps(lkOf(SIGN_IN_TOTP)), allOf(SIGN_IN_TOTP) ? rps(allOf(SIGN_IN_TOTP)!) : 0) >= 100)}. One argon2id verify (OWASP parameters, as Latchkey runs it) costs ${f1(argon2.cpuMs)} ms of CPU here (${f1(argon2.wallMs)} ms wall), measured before the load: password hashing alone caps sign-ins at ${f0(argon2.ceiling)}/s on ${availableParallelism()} CPUs, before any HTTP, Redis or the load generator's own work.`,
    `- complete sign-ins with a passkey alone ≥ 3× those with TOTP, in the same run: ${f1(rps(lkOf(SIGN_IN_PASSKEY)))}/s, ${f1(rps(lkOf(SIGN_IN_PASSKEY)) / rps(lkOf(SIGN_IN_TOTP)))}× — ${yes(rps(lkOf(SIGN_IN_PASSKEY)) >= 3 * rps(lkOf(SIGN_IN_TOTP)))}${allOf(SIGN_IN_PASSKEY) && allOf(SIGN_IN_TOTP) ? ` (all cores: ${f1(rps(allOf(SIGN_IN_PASSKEY)!))}/s against ${f1(rps(allOf(SIGN_IN_TOTP)!))}/s, ${f1(rps(allOf(SIGN_IN_PASSKEY)!) / rps(allOf(SIGN_IN_TOTP)!))}×)` : ''}. No argon2 on that path: the sign-in page, one ES256 signature verified, the code, the token. With one process, passkey sign-ins are bound by its one JavaScript thread, while argon2id runs on libuv's pool beside it.`,
    `- ≤ 400 bytes of Redis per client-credentials token: ${f0(memory.perToken - memory.activityPerToken)} bytes of used_memory for the token's record (${f0(ccUsage)} bytes average MEMORY USAGE of its key) — ${yes(memory.perToken - memory.activityPerToken <= 400)}. Its \`token_issued\` entry in the activity log adds ${f0(memory.activityPerToken)} bytes until the log holds ADMIN_ACTIVITY_MAX entries (default 100,000: about ${f0((memory.activityPerToken * 100_000) / 1e6)} MB), then none: the oldest entry goes (${f0(memory.perToken)} bytes of used_memory per token in all while the log grows).`,
    '',
  );
  for (const scenario of [...scenarios, 'floors']) {
    lines.push(`## ${scenario}`, '');
    lines.push('| server | /s (median) | rounds /s | p50 ms | p99 ms | server CPU µs/req | Redis CPU µs/req | Redis cmds/req | Redis mem Δ B/req | non-2xx | errors | other load (cores) |');
    lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const e of list.filter((x) => x.scenario === scenario)) {
      lines.push(
        `| ${e.target} | ${f0(rps(e))} | ${e.samples.map((s) => f0(s.rps)).join(', ')} | ${f1(median(e.samples.map((s) => s.p50)))} | ${f1(median(e.samples.map((s) => s.p99)))} | ${f0(perReq(e, (s) => s.cpuUs))} | ${f0(perReq(e, (s) => s.redisCpuUs))} | ${f2(perReq(e, (s) => s.redisCmdsTotal))} | ${f0(perReq(e, (s) => s.memPerReq))} | ${f0(sum(e, (s) => s.non2xx))} | ${f0(sum(e, (s) => s.errors))} | ${f2(median(e.samples.map((s) => s.otherCores)))} |`,
      );
    }
    lines.push('');
    for (const e of list.filter((x) => x.scenario === scenario && (x.latchkey || x.target.startsWith('Koa')))) {
      const cmds = new Map<string, number>();
      for (const s of e.samples) for (const [c, v] of Object.entries(s.redisCmds)) cmds.set(c, (cmds.get(c) ?? 0) + v * s.count);
      const total = sum(e, (s) => s.count);
      const text = [...cmds].sort((a, b) => b[1] - a[1]).map(([c, v]) => `${c} ${f2(v / total)}`).join(', ');
      lines.push(`- Redis commands per request, ${e.target} (commands run inside Lua scripts counted too): ${text || 'none'}`);
    }
    const statuses = list.filter((x) => x.scenario === scenario && x.samples.some((s) => s.non2xx > 0));
    for (const e of statuses) {
      const merged: Record<string, number> = {};
      for (const s of e.samples) for (const [code, n] of Object.entries(s.status)) merged[code] = (merged[code] ?? 0) + n;
      lines.push(`- Status codes, ${e.target}: ${Object.entries(merged).map(([c, n]) => `${c}×${f0(n)}`).join(', ')}`);
    }
    if (scenario.startsWith('introspection')) {
      lines.push(`- Each request introspects the next token of a pool of 200 client-credentials tokens created just before the run, with the API's own credentials. Answers that were not \`"active":true\`: ${[...notes.inactive].map(([t, c]) => `${t} ${c.inactive}`).join(', ')}.`);
    }
    if (scenario.startsWith('refresh')) {
      lines.push(
        `- Measured with autocannon on rotating chains: before each run, complete sign-ins (not measured) top the queue up to ${2 * opts.connections} live refresh tokens; each request takes one and puts back the rotated token from its answer, so every request is a real single-use refresh. A request in flight when a run ends loses its chain. Requests that found the queue empty (sent with a dead token): ${[...notes.chains].map(([t, c]) => `${t} ${c.starved}`).join(', ')}.`,
        '- raw oidc-provider\'s memory adapter keeps 1,000 records (LRU): its chains are started afresh before each of its runs. Latchkey keeps every rotated (consumed) refresh token until its own expiry (14 days) to detect reuse, which is what "Redis mem Δ" shows.',
      );
    }
    if (scenario === SIGN_IN || scenario === SIGN_IN_TOTP || scenario === SIGN_IN_PASSKEY) {
      for (const e of list.filter((x) => x.scenario === scenario)) {
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
    `Measured before the load runs (after the registrations and the TOTP enrollments): \`INFO memory\` used_memory before and after ${f0(memory.tokens)} client-credentials tokens, then ${f0(memory.signIns)} complete password sign-ins (each with its code redeemed).`,
    '',
    `- One client-credentials token: **${f0(memory.perToken - memory.activityPerToken)} bytes** of used_memory for its record, ${f2(memory.keysPerToken)} keys; plus ${f0(memory.activityPerToken)} bytes for its \`token_issued\` entry in the activity log while that log is below its cap (ADMIN_ACTIVITY_MAX entries).`,
    `- One sign-in (session, grant, refresh and access tokens, the consumed authorization code kept until its 60 s expiry, indexes): **${f0(memory.perSignIn)} bytes**, ${f2(memory.keysPerSignIn)} keys.`,
    '',
    '`MEMORY USAGE` of every key afterwards, by kind (the sign-in records include those of the TOTP enrollments):',
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
  const t0 = performance.now();
  for (let i = 0; i < n; i += 1) await verifyPassword(stored, password);
  const cpu = process.cpuUsage(cpu0);
  const cpuMs = (cpu.user + cpu.system) / 1000 / n;
  return { cpuMs, wallMs: (performance.now() - t0) / n, ceiling: (availableParallelism() * 1000) / cpuMs };
}

async function bench() {
  const machine = machineLines();
  console.log(`starting Redis, Latchkey and the baselines…`);
  console.log(`(and ${opts.totpUsers} people enrolled in TOTP through the sign-in pages)`);
  const only = values.only;
  console.log(`(and ${opts.passkeyUsers} people who enrolled a passkey the same way)`);
  const world = await startWorld({ baselines: !only, users: 4, totpUsers: opts.totpUsers, passkeyUsers: opts.passkeyUsers, allCores: !only });
  const stopOnSignal = () => void world.stop().then(() => process.exit(130));
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  try {
    const memory = only ? undefined : (console.log('measuring Redis memory per stored object…'), await memoryProbe(world));
    const argon2 = await argon2Probe();
    const notes: Notes = { inactive: new Map(), chains: new Map() };
    const list = entries(world, opts.connections, notes).filter((e) => !only || e.scenario.includes(only));
    const runOnce = async (e: Entry, seconds: number) => {
      await e.prepare?.();
      await sleep(500); // let the previous run's last requests finish outside this measurement
      const s = await measure(world.watch(e.proc), () => e.load(seconds));
      console.log(`  ${e.scenario} · ${e.target}: ${f0(s.rps)}/s p50 ${f1(s.p50)} ms p99 ${f1(s.p99)} ms, ${f0(s.cpuUs)} µs CPU, ${f2(s.redisCmdsTotal)} Redis cmds, non-2xx ${s.non2xx}${e.scenario === SIGN_IN_TOTP ? `, ${e.flows?.waits ?? 0} waits so far` : ''}`);
      return s;
    };
    console.log(`warm-up (${opts.warmup} s each)…`);
    for (const e of list) await runOnce(e, opts.warmup);
    // Counters of the warm-up are not results.
    for (const c of notes.inactive.values()) c.inactive = 0;
    for (const c of notes.chains.values()) c.starved = 0;
    for (const e of list) if (e.flows) Object.assign(e.flows, newFlowStats());
    for (let round = 1; round <= opts.rounds; round += 1) {
      console.log(`round ${round} of ${opts.rounds} (${opts.duration} s each)…`);
      for (const e of list) e.samples.push(await runOnce(e, opts.duration));
    }
    if (!memory) {
      // A partial run: the medians and the passkey/TOTP ratio on stdout; RESULTS.md keeps the full run.
      const rate = (scenario: string) => median(list.find((e) => e.scenario === scenario && e.target === 'Latchkey')?.samples.map((x) => x.rps) ?? [0]);
      for (const scenario of new Set(list.map((e) => e.scenario))) console.log(`${scenario}: ${f1(rate(scenario))}/s (median of ${opts.rounds} rounds)`);
      console.log(`passkey alone / TOTP: ${f1(rate(SIGN_IN_PASSKEY) / rate(SIGN_IN_TOTP))}×`);
      return;
    }
    const text = report(world, list, memory, notes, machine, argon2);
    writeFileSync(new URL('RESULTS.md', import.meta.url), text);
    console.log(`\n${text}\nwritten to bench/RESULTS.md`);
  } finally {
    await world.stop();
  }
}

if (values.soak !== undefined) await runSoak(Number(values.soak), opts.connections, machineLines());
else await bench();
