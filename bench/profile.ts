import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { freePort, startRedis } from '../test/helpers/redis.ts';
import { API_URI, clientCredentialsToken, JWT_API_URI, REDIRECT_URI, introspectionRequest, newFlowStats, passkeyUsers, RefreshChains, registerLatchkey, signInLoad, tokenRequest, totpUsers, type Server } from './flows.ts';
import { autocannonLoad, cannon, cpuSeconds, startProc } from './lib.ts';

/**
 * Where Latchkey spends its CPU on the hot paths: runs it under `node --cpu-prof`, drives one scenario
 * with the bench's load driver (bench/driver.ts), and prints the functions with the most self time (and the files they are in).
 *   node bench/profile.ts [--scenario token|introspection|refresh|signin|totp|passkey] [--seconds 10] [--top 30] [--target latchkey|raw] [--connections 32] [--driver net|autocannon]
 * `LEAN_PATH=off` in the environment turns the server's lean path off, `WORKERS=2` runs it on all cores (with `--plain`); `BENCH_LOG_LEVEL=warn` drops its request lines (what logging costs);
 * `--inclusive REGEXP` lists the functions of the scripts it matches with their callees (default /src/: ours; e.g. `oidc-provider|/src/`).
 * Self times share the main thread's CPU (from /proc) among the samples, so preemption on a busy machine does not smear them.
 * `PROFILE_DIR` names where the profiles go (default: a directory of this run's own). With `--plain`, no profiler: only the rate and the CPU per request of the server and of this process.
 * (`signin`, `totp`, `passkey`: complete sign-ins with a password, password + TOTP, or a passkey alone, 32
 * concurrent flows; per-request figures are per sign-in.
 * `refresh`: the bench's rotating chains (bench/flows.ts `RefreshChains`), 64 started by sign-ins before the run.)
 * The load generator's own CPU (the driver; `--driver autocannon`: the one before it) is printed for every scenario.
 */
/** A process and its node:cluster workers (WORKERS > 1): its children's pids. */
function processTree(pid: number): number[] {
  const children = readdirSync('/proc').filter((e) => /^\d+$/.test(e)).map(Number).filter((p) => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid;
    } catch {
      return false; // it ended
    }
  });
  return [pid, ...children.flatMap(processTree)];
}

/** CPU seconds of the main threads (their JavaScript; not libuv's pool nor V8's helpers) of a process and its workers, in user and kernel mode. */
function mainThreadCpu(pid: number): { user: number; system: number } {
  const total = { user: 0, system: 0 };
  for (const p of processTree(pid)) {
    const stat = readFileSync(`/proc/${p}/task/${p}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    total.user += Number(fields[11]) / 100;
    total.system += Number(fields[12]) / 100;
  }
  return total;
}

/** CPU seconds of each thread of a process and its workers, summed by thread name (`MainThread` is the main thread). */
function threadsCpu(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const p of processTree(pid)) {
    for (const tid of readdirSync(`/proc/${p}/task`)) {
      try {
        const stat = readFileSync(`/proc/${p}/task/${tid}/stat`, 'utf8');
        const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        out.set(name, (out.get(name) ?? 0) + (Number(fields[11]) + Number(fields[12])) / 100);
      } catch {
        // the thread ended
      }
    }
  }
  return out;
}

const { values } = parseArgs({
  options: { plain: { type: 'boolean', default: false }, scenario: { type: 'string', default: 'token' }, seconds: { type: 'string', default: '10' }, target: { type: 'string', default: 'latchkey' }, top: { type: 'string', default: '30' }, connections: { type: 'string', default: '32' }, inclusive: { type: 'string', default: '/src/' }, driver: { type: 'string', default: 'net' } },
});
const dir = process.env.PROFILE_DIR ?? `/tmp/latchkey-profile-${process.pid}`; // per run: other checkouts may profile at the same time
rmSync(dir, { recursive: true, force: true });

const redis = await startRedis({ ownServer: true });
const signIn = ['signin', 'totp', 'passkey'].includes(values.scenario);
const profiling: Record<string, string> = values.plain ? (process.env.SERVER_NODE_OPTIONS ? { NODE_OPTIONS: process.env.SERVER_NODE_OPTIONS } : {}) : { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${dir}${process.env.SERVER_NODE_OPTIONS ? ` ${process.env.SERVER_NODE_OPTIONS}` : ''}` };
const port = await freePort();
// `--target raw`: the same scenario against raw oidc-provider with its memory adapter (bench/baselines/), for comparison.
const { proc, server } = values.target === 'raw'
  ? await (async () => {
    const secret = () => randomBytes(24).toString('base64url');
    const creds = { machine: { id: 'machine', secret: secret() }, api: { id: 'api', secret: secret() }, app: { id: 'app', secret: secret(), redirectUri: REDIRECT_URI }, device: { id: 'device' } };
    const proc = await startProc('raw oidc-provider', 'bench/baselines/raw-oidc-provider.ts', port, {
      ...profiling,
      API_URI, JWT_API_URI, REDIRECT_URI, DEVICE_ID: creds.device.id, MACHINE_ID: creds.machine.id, MACHINE_SECRET: creds.machine.secret,
      API_ID: creds.api.id, API_SECRET: creds.api.secret, APP_ID: creds.app.id, APP_SECRET: creds.app.secret,
    }, '/.well-known/openid-configuration');
    return { proc, server: { ...creds, url: proc.url, users: [{ email: 'none', password: 'none' }], totpUsers: [], promptConsent: true } as Server };
  })()
  : await (async () => {
    const reg = await registerLatchkey(redis.url, { users: signIn || values.scenario === 'refresh' ? 4 : 0 });
    const proc = await startProc(
      'latchkey',
      'src/main.ts',
      port,
      {
        ...profiling,
        REDIS_URL: redis.url,
        NODE_ENV: 'production',
        // `WORKERS=2 node bench/profile.ts --plain …`: all cores (node:cluster); the CPU figures count every worker.
        WORKERS: process.env.WORKERS ?? '1',
        ISSUER: `http://127.0.0.1:${port}`,
        SECRETS_KEY: Buffer.alloc(32, 7).toString('base64'),
        LOG_LEVEL: 'info',
        MFA_POLICY: 'optional',
        // `LEAN_PATH=off node bench/profile.ts …`: the same scenario through oidc-provider alone.
        ...(process.env.LEAN_PATH ? { LEAN_PATH: process.env.LEAN_PATH } : {}),
      },
      '/healthz',
    );
    return { proc, server: { ...reg, url: proc.url, totpUsers: [], promptConsent: false } as Server };
  })();
if (values.scenario === 'totp') server.totpUsers = await totpUsers(server, redis.url, 300, newFlowStats());
if (values.scenario === 'passkey') server.passkeyUsers = await passkeyUsers(server, redis.url, 50, newFlowStats());
const admin = new Redis(redis.url);
let generatorCpu = 0;
/** What the run sends: made (pools, chains) before the CPU counters and the profile's window start. */
const request = values.scenario === 'refresh'
  ? await (async () => {
    const chains = new RefreshChains(server);
    await chains.topUp(64, newFlowStats());
    return chains.request();
  })()
  : values.scenario === 'introspection' ? introspectionRequest(server, await Promise.all(Array.from({ length: 200 }, () => clientCredentialsToken(server)))) : tokenRequest(server);
await admin.config('RESETSTAT');
const serverCpuBefore = cpuSeconds(proc.pid);
const mainThreadBefore = mainThreadCpu(proc.pid);
const threadsBefore = threadsCpu(proc.pid);
// The profile's clock is the monotonic one (µs): only samples inside this window are counted.
const windowStart = Number(process.hrtime.bigint() / 1000n);
const load = await (async () => {
  if (signIn) {
    const before = process.cpuUsage();
    const { load } = await signInLoad(server, { seconds: Number(values.seconds), concurrency: 32, totp: values.scenario === 'totp', passkey: values.scenario === 'passkey' });
    const used = process.cpuUsage(before);
    generatorCpu = used.user + used.system;
    return load;
  }
  const before = process.cpuUsage();
  const load = await (values.driver === 'autocannon' ? autocannonLoad : cannon)(proc.url, request, { duration: Number(values.seconds), connections: Number(values.connections) });
  const used = process.cpuUsage(before);
  generatorCpu = used.user + used.system;
  return load;
})();
const windowEnd = Number(process.hrtime.bigint() / 1000n);
const serverCpu = cpuSeconds(proc.pid) - serverCpuBefore;
const mainThreadAfter = mainThreadCpu(proc.pid);
const serverMainThread = { user: mainThreadAfter.user - mainThreadBefore.user, system: mainThreadAfter.system - mainThreadBefore.system };
const threads = [...threadsCpu(proc.pid)].map(([name, cpu]) => [name, cpu - (threadsBefore.get(name) ?? 0)] as const).filter(([, cpu]) => cpu > 0).sort((a, b) => b[1] - a[1]);
const stats = await admin.info('commandstats');
admin.disconnect();
await proc.stop();
await redis.dispose();

console.log(`${values.scenario}: ${Math.round(load.count / load.seconds)} req/s over ${load.seconds.toFixed(2)} s, p50 ${load.p50.toFixed(1)} ms, p99 ${load.p99.toFixed(1)} ms (${load.count} answered${load.sent ? `, ${load.sent} sent: the rest were in flight when the run stopped` : ''})`);
// Per request that reached the server (bench/lib.ts measure): those in flight at the end were served too.
const served = Math.max(1, load.sent ?? load.count);
const perReq = (seconds: number) => Math.round((seconds * 1e6) / served);
console.log(`server CPU: ${perReq(serverCpu)} µs/req, of which its main thread (JavaScript) ${perReq(serverMainThread.user + serverMainThread.system)} (user ${perReq(serverMainThread.user)}, kernel ${perReq(serverMainThread.system)})`);
console.log(`  by thread: ${threads.map(([name, cpu]) => `${name} ${Math.round((cpu * 1e6) / served)}`).join(', ')}`);
if (generatorCpu) console.log(`load generator (this process) CPU: ${Math.round(generatorCpu / load.count)} µs/req`);
// Redis's own time in each command (commandstats `usec`: inside the command, not its reading and writing of sockets).
console.log(stats.split('\n').filter((l) => l.startsWith('cmdstat_')).map((l) => `  ${l.split(':')[0]!.slice(8)} ${/calls=(\d+)/.exec(l)![1]} (${(Number(/calls=(\d+)/.exec(l)![1]) / served).toFixed(2)}/req, ${(Number(/usec=(\d+)/.exec(l)![1]) / served).toFixed(1)} µs/req)`).join('\n'));

if (values.plain) {
  rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}
interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'))!;
const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { nodes: Node[]; startTime: number; samples: number[]; timeDeltas: number[] };
const self = new Map<number, number>();
const inWindow: [number, number][] = [];
let clock = profile.startTime;
// Each sample weighs the same share of the main thread's CPU (from /proc), not the wall time since the one
// before: a thread preempted on a busy machine takes one late sample, which would otherwise carry the whole
// wait to wherever it stood (a socket write that woke the load generator, a job handed to the pool).
const idle = new Set(profile.nodes.filter((n) => n.callFrame.functionName === '(idle)').map((n) => n.id));
const windowed: number[] = [];
profile.samples.forEach((id, i) => {
  clock += profile.timeDeltas[i] ?? 0;
  if (clock < windowStart || clock > windowEnd || idle.has(id)) return; // set-up (sign-ins, pools), shutdown, waiting
  windowed.push(id);
});
const weight = ((serverMainThread.user + serverMainThread.system) * 1e6) / Math.max(1, windowed.length);
for (const id of windowed) {
  self.set(id, (self.get(id) ?? 0) + weight);
  inWindow.push([id, weight]);
}
const byFunction = new Map<string, number>();
const byFile = new Map<string, number>();
let total = 0;
for (const node of profile.nodes) {
  const t = self.get(node.id) ?? 0;
  total += t;
  const where = node.callFrame.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/src\//, 'src/') || '(native)';
  const name = `${node.callFrame.functionName || '(anonymous)'} ${where}:${node.callFrame.lineNumber + 1}`;
  byFunction.set(name, (byFunction.get(name) ?? 0) + t);
  const pkg = where.startsWith('src/') ? where : where.split('/')[0]!.startsWith('@') ? where.split('/').slice(0, 2).join('/') : where.split('/')[0]!;
  byFile.set(pkg, (byFile.get(pkg) ?? 0) + t);
}
// Inclusive time of our own functions (each counted once per sample): which of them a request's CPU is under.
const parent = new Map<number, Node>();
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node);
// `--inclusive REGEXP`: whose functions to list with their callees (by script URL; default our own, /src/).
const inclusiveOf = new RegExp(values.inclusive);
const inclusive = new Map<string, number>();
for (const [id, t] of inWindow) {
  const seen = new Set<string>();
  for (let node = byId.get(id); node; node = parent.get(node.id)) {
    if (!inclusiveOf.test(node.callFrame.url)) continue;
    const name = `${node.callFrame.functionName || '(anonymous)'} ${node.callFrame.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/src\//, 'src/')}:${node.callFrame.lineNumber + 1}`;
    if (!seen.has(name)) inclusive.set(name, (inclusive.get(name) ?? 0) + t);
    seen.add(name);
  }
}
const top = (m: Map<string, number>, n: number) =>
  [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, t]) => `  ${((100 * t) / total).toFixed(1).padStart(5)}%  ${(t / served).toFixed(1).padStart(6)} µs/req  ${k}`).join('\n');
console.log(`\nself time by package or source file (${windowed.length} samples sharing the main thread's ${(total / 1e6).toFixed(1)} s of CPU):\n${top(byFile, 20)}`);
console.log(`\nself time by function:\n${top(byFunction, Number(values.top))}`);
console.log(`\ntime in functions of ${values.inclusive}, callees included:\n${top(inclusive, Number(values.top))}`);
console.log(`\nthe profile (Chrome DevTools can open it): ${join(dir, file)}`);
