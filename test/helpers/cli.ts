import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import { run } from '../../src/cli/main.ts';

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The `latchkey` CLI, run in this process through its entry `run` (src/cli/main.ts), or as a child process
 * when `script` names what to start (bin/latchkey.js, or `npm` for `npm run -s latchkey`: the real binary). Its environment is the test's
 * without any REDIS_* setting (nor those in `without`), plus `env`; a variable given as '' is left out.
 */
export function runCli(args: string[], options: { env?: Record<string, string>; stdin?: string; script?: string; without?: string[] } = {}): Promise<CliRun> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('REDIS_') && !options.without?.includes(k)) env[k] = v;
  for (const [k, v] of Object.entries(options.env ?? {})) if (v === '') delete env[k];
  else env[k] = v;
  if (!options.script) return runInProcess(args, env, options.stdin ?? '');
  // `npm`: `npm run -s latchkey -- …`, as a checkout runs it.
  const child = options.script === 'npm' ? spawn('npm', ['run', '-s', 'latchkey', '--', ...args], { env, stdio: 'pipe' }) : spawn(process.execPath, [options.script, ...args], { env, stdio: 'pipe' });
  child.stdin.end(options.stdin ?? '');
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

async function runInProcess(args: string[], env: NodeJS.ProcessEnv, stdin: string): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const code = await run(args, {
    env,
    stdin: Readable.from(stdin ? [Buffer.from(stdin)] : []),
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
  });
  return { code, stdout, stderr };
}
