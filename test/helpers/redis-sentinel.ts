import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, startRedis, type TestRedis } from './redis.ts';

const run = promisify(execFile);

export const SENTINEL_MASTER_NAME = 'latchkey';

export interface TestSentinel {
  /** The monitored master (a private redis-server). */
  master: TestRedis;
  sentinelPort: number;
  /** The environment that points Latchkey at this master through the Sentinel. */
  env: Record<string, string>;
  dispose(): Promise<void>;
}

/**
 * A private redis-server and one Sentinel monitoring it (quorum 1), on free 127.0.0.1 ports, for one
 * test file. Debian's `redis-server` package has no `redis-sentinel` binary (that is the
 * `redis-sentinel` package, a symlink to redis-server), so the Sentinel runs as `redis-server <conf>
 * --sentinel`; its configuration file must be writable, Sentinel rewrites it.
 */
export async function startRedisSentinel(): Promise<TestSentinel> {
  const master = await startRedis({ ownServer: true });
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-sentinel-'));
  const sentinelPort = await freePort();
  const conf = join(dir, 'sentinel.conf');
  writeFileSync(conf, [
    `port ${sentinelPort}`,
    'bind 127.0.0.1',
    `dir ${dir}`,
    `sentinel monitor ${SENTINEL_MASTER_NAME} 127.0.0.1 ${master.port} 1`,
    `sentinel down-after-milliseconds ${SENTINEL_MASTER_NAME} 5000`,
    '',
  ].join('\n'));
  const child: ChildProcess = spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' });
  const dispose = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    await master.dispose();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`redis-server --sentinel exited with ${child.exitCode}`);
      const answer = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(sentinelPort), 'SENTINEL', 'get-master-addr-by-name', SENTINEL_MASTER_NAME], { timeout: 5000 })
        .then(({ stdout }) => stdout, () => '');
      if (answer.split('\n').map((l) => l.trim()).includes(String(master.port))) break;
      if (Date.now() > deadline) throw new Error('the Sentinel did not report its master within 10 s');
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (err) {
    await dispose();
    throw err;
  }
  return {
    master,
    sentinelPort,
    env: { REDIS_SENTINELS: `127.0.0.1:${sentinelPort}`, REDIS_SENTINEL_NAME: SENTINEL_MASTER_NAME },
    dispose,
  };
}
