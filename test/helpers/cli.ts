import { spawn } from 'node:child_process';

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The `latchkey` CLI as a child process. Its environment is the test's without any REDIS_* setting
 * (nor those in `without`), plus `env`; a variable given as '' is left out.
 */
export function runCli(args: string[], options: { env?: Record<string, string>; stdin?: string; script?: string; without?: string[] } = {}): Promise<CliRun> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('REDIS_') && !options.without?.includes(k)) env[k] = v;
  for (const [k, v] of Object.entries(options.env ?? {})) if (v === '') delete env[k];
  else env[k] = v;
  const child = spawn(process.execPath, [options.script ?? 'src/cli/main.ts', ...args], { env, stdio: 'pipe' });
  child.stdin.end(options.stdin ?? '');
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}
