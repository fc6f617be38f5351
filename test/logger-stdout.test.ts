import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';

/**
 * The server's log goes to standard output off the event loop (observability/logger.ts): lines logged
 * just before the process exits, as on a crash, must still all be there, whole and in order.
 */
function run(exit: string): Promise<{ code: number | null; lines: string[] }> {
  const script = `
    import { createLogger } from './src/observability/logger.ts';
    const logger = createLogger({ level: 'info', format: 'json' });
    for (let i = 0; i < 2000; i += 1) logger.info({ i, filler: 'x'.repeat(200) }, 'line');
    logger.fatal({ event: 'process_crashed' }, 'exiting');
    ${exit}
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, lines: out.split('\n').filter(Boolean) })));
}

describe('log lines on standard output', () => {
  for (const [how, exit] of [
    ['process.exit(1) right after logging', 'process.exit(1);'],
    ['an uncaught exception right after logging', "throw new Error('boom');"],
  ] as const) {
    it(`${how}: every line written, whole, in order`, async () => {
      const { code, lines } = await run(exit);
      assert.equal(code, 1);
      const parsed = lines.map((l) => JSON.parse(l) as { i?: number; event?: string });
      assert.equal(parsed.length, 2001);
      assert.deepEqual(parsed.slice(0, 2000).map((p) => p.i), Array.from({ length: 2000 }, (_, i) => i));
      assert.equal(parsed.at(-1)!.event, 'process_crashed');
    });
  }
});

describe('a quiet server', () => {
  it('a single line, with nothing after it, reaches standard output while the process runs on', { timeout: 10_000 }, async () => {
    // Lines are written in batches (logger.ts): one line alone must not wait for more to come.
    const script = `
      import { createLogger } from './src/observability/logger.ts';
      const logger = createLogger({ level: 'info', format: 'json' });
      logger.info({ event: 'alone' }, 'one line');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.setEncoding('utf8').on('data', (d: string) => {
          out += d;
          if (out.includes('\n')) resolve(out);
        });
        child.on('close', () => reject(new Error(`exited before writing the line: ${out}`)));
      });
      assert.equal((JSON.parse(line) as { event: string }).event, 'alone');
    } finally {
      child.kill();
    }
  });
});
