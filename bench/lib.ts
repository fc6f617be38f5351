import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import type { Redis } from 'ioredis';
import { drive, type Request } from './driver.ts';

/**
 * The measuring kit: processes under test, their CPU from /proc, Redis counters, and one load run
 * (bench/driver.ts, or any driver that returns a `Load`) turned into a `Sample`.
 */
export const ROOT = new URL('..', import.meta.url).pathname;
const TICK = 100; // USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s on Linux

export interface Proc {
  name: string;
  pid: number;
  url: string;
  child: ChildProcess;
  stop: () => Promise<void>;
}

/**
 * Starts `node <script>` with `env` and waits until `readyPath` answers 200. Its stdout (Latchkey's JSON
 * log) goes to a file in the temporary directory, deleted when it stops; if it exits on its own, the
 * tail of that file and of stderr is printed.
 */
export async function startProc(name: string, script: string, port: number, env: Record<string, string>, readyPath: string): Promise<Proc> {
  const logFile = join(tmpdir(), `latchkey-bench-${process.pid}-${port}.log`);
  const out = openSync(logFile, 'w');
  const child = spawn(process.execPath, [script], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', PORT: String(port), ...env },
    stdio: ['ignore', out, 'pipe'],
  });
  closeSync(out);
  let stderr = '';
  child.stderr!.on('data', (d) => {
    stderr = (stderr + String(d)).slice(-4000);
  });
  let stopping = false;
  const tail = () => `${stderr}\n${readFileSync(logFile, 'utf8').slice(-3000)}`;
  child.once('exit', (code, signal) => {
    if (!stopping) console.error(`${name} exited on its own (${code ?? signal}); last output:\n${tail()}`);
  });
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    stopping = true;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(logFile, { force: true });
  };
  for (let i = 0; i < 300; i += 1) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}: ${tail()}`);
    try {
      const res = await fetch(url + readyPath, { signal: AbortSignal.timeout(1000) });
      await res.body?.cancel();
      if (res.status === 200) return { name, pid: child.pid!, url, child, stop };
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  await stop();
  throw new Error(`${name} did not become ready: ${tail()}`);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A process's CPU (user + system), or with `tid` one of its threads'. */
function ownCpu(pid: number, tid?: string): { ppid: number; cpu: number } | undefined {
  try {
    const stat = readFileSync(tid ? `/proc/${pid}/task/${tid}/stat` : `/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(fields[1]), cpu: (Number(fields[11]) + Number(fields[12])) / TICK };
  } catch {
    return undefined; // gone
  }
}

/** CPU seconds (user + system) a process and its children (node:cluster workers) have used so far. */
export function cpuSeconds(pid: number): number {
  const own = ownCpu(pid);
  if (!own) throw new Error(`process ${pid} is gone (see its last output above)`);
  let total = own.cpu;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === pid) continue;
    const p = ownCpu(Number(entry));
    if (p?.ppid === pid) total += cpuSeconds(Number(entry));
  }
  return total;
}

/**
 * A process's CPU seconds by thread role, its node:cluster workers' included. Node 24 names its threads:
 * `MainThread` runs JavaScript, `libuv-worker` are libuv's thread pool (argon2id verifies, WebCrypto jobs,
 * asynchronous file writes), and the rest are V8's helpers (`V8Worker`: GC, compilation) and small fry.
 * `total` is the process's own count, which keeps the CPU of threads that have ended.
 */
export interface ThreadCpu {
  total: number;
  main: number;
  pool: number;
}

export function threadCpu(pid: number): ThreadCpu {
  const own = ownCpu(pid);
  if (!own) throw new Error(`process ${pid} is gone (see its last output above)`);
  const out: ThreadCpu = { total: own.cpu, main: 0, pool: 0 };
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let comm: string;
    let cpu: number | undefined;
    try {
      comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      cpu = ownCpu(pid, tid)?.cpu;
    } catch {
      continue; // ended meanwhile
    }
    if (cpu === undefined) continue;
    if (Number(tid) === pid) out.main += cpu;
    else if (comm === 'libuv-worker') out.pool += cpu;
  }
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === pid) continue;
    if (ownCpu(Number(entry))?.ppid !== pid) continue;
    const child = threadCpu(Number(entry));
    out.total += child.total;
    out.main += child.main;
    out.pool += child.pool;
  }
  return out;
}

export function rssBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
  return Number(line?.split(/\s+/)[1] ?? 0) * 1024;
}

/** CPU seconds the whole machine has been busy (every core, every process). */
function machineBusySeconds(): number {
  const [, user, nice, system, , , irq, softirq, steal] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.split(/\s+/).map(Number);
  return (user! + nice! + system! + irq! + softirq! + steal!) / TICK;
}

export async function redisInfo(redis: Redis, section: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const line of (await redis.info(section)).split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

/** Calls per command since the start of Redis (commands run inside Lua scripts included). */
async function commandCalls(redis: Redis): Promise<Map<string, number>> {
  const calls = new Map<string, number>();
  for (const [key, value] of Object.entries(await redisInfo(redis, 'commandstats'))) {
    const cmd = key.replace(/^cmdstat_/, '');
    if (cmd === 'info') continue; // the bench's own probes
    calls.set(cmd, Number(/calls=(\d+)/.exec(value)?.[1] ?? 0));
  }
  return calls;
}

export async function usedMemory(redis: Redis): Promise<number> {
  return Number((await redisInfo(redis, 'memory')).used_memory);
}

/** What a load driver reports: completed requests (or flows), their time, latency and answers. */
export interface Load {
  count: number;
  /** Requests sent, those still in flight at the end included (the single-request drivers' runs). */
  sent?: number;
  seconds: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  status: Record<string, number>;
}

export interface Sample extends Load {
  rps: number;
  /** Server CPU per request (the process and its workers), µs. */
  cpuUs: number;
  /** Of which the JavaScript threads' (`MainThread`), and libuv's thread pools' (`libuv-worker`), µs. */
  mainCpuUs: number;
  poolCpuUs: number;
  redisCpuUs: number;
  /** Redis commands per request, by command. */
  redisCmds: Record<string, number>;
  redisCmdsTotal: number;
  /** Redis used_memory change per request, bytes. */
  memPerReq: number;
  /** CPU the rest of the machine used during the run (other people's tests…), in cores. */
  otherCores: number;
}

export interface Watch {
  pid: number;
  redis: Redis;
  redisPid: number;
}

/** Runs `load` and measures around it: server and Redis CPU, Redis commands and memory, the machine's other load. */
export async function measure(watch: Watch, load: () => Promise<Load>): Promise<Sample> {
  const before = { cpu: threadCpu(watch.pid), rcpu: cpuSeconds(watch.redisPid), calls: await commandCalls(watch.redis), mem: await usedMemory(watch.redis) };
  const machine0 = machineBusySeconds();
  const self0 = process.cpuUsage();
  const started = performance.now();
  const result = await load();
  const wall = (performance.now() - started) / 1000;
  const self = process.cpuUsage(self0);
  const machine = machineBusySeconds() - machine0;
  const after = threadCpu(watch.pid);
  const cpu = after.total - before.cpu.total;
  const rcpu = cpuSeconds(watch.redisPid) - before.rcpu;
  const calls = await commandCalls(watch.redis);
  const mem = (await usedMemory(watch.redis)) - before.mem;
  // Per request that reached the server: those in flight when a run stops (one per connection) were served too.
  const n = Math.max(1, result.sent ?? result.count);
  const redisCmds: Record<string, number> = {};
  let redisCmdsTotal = 0;
  for (const [cmd, total] of calls) {
    const delta = total - (before.calls.get(cmd) ?? 0);
    if (delta > 0) {
      redisCmds[cmd] = delta / n;
      redisCmdsTotal += delta / n;
    }
  }
  const ours = cpu + rcpu + (self.user + self.system) / 1e6;
  return {
    ...result,
    rps: result.count / result.seconds,
    cpuUs: (cpu / n) * 1e6,
    mainCpuUs: ((after.main - before.cpu.main) / n) * 1e6,
    poolCpuUs: ((after.pool - before.cpu.pool) / n) * 1e6,
    redisCpuUs: (rcpu / n) * 1e6,
    redisCmds,
    redisCmdsTotal,
    memPerReq: mem / n,
    otherCores: Math.max(0, machine - ours) / wall,
  };
}

export interface CannonOptions {
  connections: number;
  /** Seconds; or `amount`: that many requests, however long they take. */
  duration?: number;
  amount?: number;
  /** Requests a second, all connections together (autocannon's overallRate). */
  rate?: number;
  /** Seconds an answer may take before it counts as an error and its connection is replaced (default 10). */
  timeout?: number;
}

/** One load run against `url` with one request shape, by bench/driver.ts (half of autocannon's CPU per request or less, see docs/benchmarks.md). */
export function cannon(url: string, request: Request, options: CannonOptions): Promise<Load> {
  return drive(url, request, options);
}

/** The same run by autocannon, the driver before bench/driver.ts: to compare the two (bench/driver.test.ts, profile.ts --driver autocannon). */
export async function autocannonLoad(url: string, request: Request, options: CannonOptions): Promise<Load> {
  const r = await autocannon({
    url,
    connections: options.connections,
    ...(options.amount ? { amount: options.amount } : { duration: options.duration }),
    ...(options.rate ? { overallRate: Math.max(1, Math.round(options.rate)) } : {}),
    timeout: options.timeout ?? 10,
    requests: [request],
  });
  const status: Record<string, number> = {};
  for (const [code, { count }] of Object.entries(r.statusCodeStats)) status[code] = count;
  return { count: r.requests.total, sent: r.requests.sent, seconds: r.duration, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors + r.timeouts, status };
}

/** Latency percentiles (ms) of a list of durations. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length === 0 ? 0 : s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function basic(id: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

export const FORM = 'application/x-www-form-urlencoded';

/** The kind of a Latchkey key: the model of `lk:{tag}:Model:…`, or the prefix of the others. */
export function keyType(key: string): string {
  const tagged = /^lk:\{[^}]*\}:(.+)$/.exec(key);
  if (!tagged) return key.split(':').slice(0, 2).join(':');
  const parts = tagged[1]!.split(':');
  if (parts[0] === 'grant') return 'grant index';
  return parts[0] === 'Session' && parts[1] === 'uid' ? 'Session uid index' : parts[0]!;
}
