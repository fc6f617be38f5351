import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort } from './redis.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** One JSON log line of the server. */
export type LogLine = Record<string, unknown> & { msg?: string; event?: string; worker?: number; route?: string; status?: number };

export interface LatchkeyProcess {
  child: ChildProcess;
  port: number;
  url: string;
  /** Every JSON line written on stdout so far. */
  lines: LogLine[];
  /** Everything written on stderr so far (what is printed for people, outside the log). */
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  /** Resolves when `count` lines match (checked at each line written, no polling); rejects at the deadline or if the process exits first. */
  waitForLine(match: RegExp | ((line: LogLine) => boolean), options?: { count?: number; timeoutMs?: number }): Promise<void>;
  /** SIGTERM, then the exit. */
  stop(): Promise<void>;
}

/**
 * A Latchkey server process of its own, `node src/main.ts`, as production runs it: JSON logs on stdout,
 * NODE_ENV=test, no REDIS_* from the test's own environment unless given. Resolves once it listens
 * (every worker, with WORKERS > 1).
 */
export async function spawnLatchkey(env: Record<string, string> = {}, options: { port?: number } = {}): Promise<LatchkeyProcess> {
  const port = options.port ?? (await freePort());
  const childEnv: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('REDIS_') && k !== 'NODE_ENV') childEnv[k] = v;
  Object.assign(childEnv, { PORT: String(port), HOST: '127.0.0.1', NODE_ENV: 'test', LOG_FORMAT: 'json', WORKERS: '1', ...env });
  const child = spawn(process.execPath, ['src/main.ts'], { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: LogLine[] = [];
  const listeners = new Set<() => void>();
  let buffered = '';
  child.stdout.on('data', (chunk) => {
    const parts = (buffered + String(chunk)).split('\n');
    buffered = parts.pop()!;
    for (const line of parts) if (line.trim().startsWith('{')) lines.push(JSON.parse(line) as LogLine);
    for (const listener of [...listeners]) listener();
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += String(chunk)));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.once('exit', (code, signal) => {
      resolve({ code, signal, at: performance.now() });
      for (const listener of [...listeners]) listener();
    }),
  );

  const waitForLine: LatchkeyProcess['waitForLine'] = (match, { count = 1, timeoutMs = 15_000 } = {}) => {
    const test = typeof match === 'function' ? match : (l: LogLine) => match.test(String(l.msg));
    return new Promise<void>((resolve, reject) => {
      const check = () => {
        if (lines.filter(test).length >= count) done();
        else if (child.exitCode !== null || child.signalCode !== null) done(new Error(`exited before the log line ${String(match)} (got ${lines.map((l) => l.msg).join(' | ')})`));
      };
      const timer = setTimeout(() => done(new Error(`no log line ${String(match)} within ${timeoutMs} ms (got ${lines.map((l) => l.msg).join(' | ')})`)), timeoutMs);
      const done = (err?: Error) => {
        clearTimeout(timer);
        listeners.delete(check);
        if (err) reject(err);
        else resolve();
      };
      listeners.add(check);
      check();
    });
  };

  const workers = Number(env.WORKERS ?? '1');
  // A guard against a hang, not a speed check: a loaded machine starts several workers slowly. A start
  // that fails leaves no process behind (it would keep the test file from ending).
  await waitForLine(/is listening/, { count: workers, timeoutMs: 60_000 }).catch(async (err: unknown) => {
    child.kill('SIGKILL');
    await exited;
    throw err;
  });
  return {
    child,
    port,
    url: `http://127.0.0.1:${port}`,
    lines,
    stderr: () => stderr,
    exited,
    waitForLine,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * `node src/main.ts` run to its exit (a boot that is refused): its output and exit code. Killed after
 * `timeoutMs`. `dropFromEnv`: variables of this process not to hand on (so only `vars` configure it).
 */
export async function runLatchkeyToExit(vars: Record<string, string>, { dropFromEnv = [] as string[], timeoutMs = 15_000 } = {}) {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !dropFromEnv.includes(k)) env[k] = v;
  const child = spawn(process.execPath, ['src/main.ts'], { cwd: ROOT, env: { ...env, ...vars }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += String(d)));
  child.stderr.on('data', (d) => (stderr += String(d)));
  const started = performance.now();
  const killer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  clearTimeout(killer);
  return { code, stdout, stderr, ms: performance.now() - started };
}
