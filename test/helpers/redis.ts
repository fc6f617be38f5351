import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { connectRedis, RedisStore } from '../../src/storage/redis-store.ts';

/** A free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface TestRedis {
  url: string;
  port: number;
  /** Stops the server (its data survives in `dir` when persistence is on). */
  stop(): Promise<void>;
  /** Starts it again on the same port and directory. */
  restart(): Promise<void>;
  dispose(): Promise<void>;
}

/** One PING over a raw socket: true once the server answers PONG (no client library timers left behind). */
function pings(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(String(data).startsWith('+PONG')));
  });
}

async function waitUntilUp(port: number, child: ChildProcess) {
  for (let i = 0; i < 200; i += 1) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`);
    if (await pings(port)) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('redis-server did not start');
}

/**
 * A private redis-server on a free port for one test file, torn down after it. Tests never use the
 * machine's own Redis. With REDIS_URL set, that Redis is used instead (and nothing is started).
 */
export async function startRedis(options: { persistence?: boolean; extraArgs?: string[]; ownServer?: boolean } = {}): Promise<TestRedis> {
  // Fault tests stop and pause their Redis: they always get a server of their own.
  if (process.env.REDIS_URL && !options.ownServer) {
    const url = process.env.REDIS_URL;
    return { url, port: Number(new URL(url).port || 6379), stop: async () => {}, restart: async () => {}, dispose: async () => {} };
  }
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-redis-'));
  const args = [
    '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
    '--appendonly', options.persistence ? 'yes' : 'no', '--appendfsync', 'always',
    ...(options.extraArgs ?? []),
  ];
  let child: ChildProcess;
  const start = async () => {
    child = spawn('redis-server', args, { stdio: 'ignore' });
    await waitUntilUp(port, child);
  };
  const stop = async () => {
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop,
    restart: start,
    dispose: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * For a test file or suite: a private Redis (or REDIS_URL) and a RedisStore on it, made before the
 * tests (handed to `receive`) and closed after them.
 */
export function useRedisStore(receive: (setup: { redis: TestRedis; store: RedisStore }) => void, options: Parameters<typeof startRedis>[0] = {}): void {
  let redis: TestRedis | undefined;
  let store: RedisStore | undefined;
  before(async () => {
    redis = await startRedis(options);
    store = new RedisStore(connectRedis(redis.url, 1000));
    await store.ready(5000);
    receive({ redis, store });
  });
  after(async () => {
    await store?.close();
    await redis?.dispose();
  });
}
