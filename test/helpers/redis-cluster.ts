import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './redis.ts';

const run = promisify(execFile);

export interface TestCluster {
  /** `127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`, as REDIS_CLUSTER_NODES takes it. */
  nodes: string;
  ports: number[];
  /** The environment that points Latchkey at this cluster. */
  env: Record<string, string>;
  dispose(): Promise<void>;
}

async function redisCli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 10_000 });
  return stdout;
}

async function waitFor(what: string, check: () => Promise<boolean>, children: ChildProcess[], timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dead = children.find((c) => c.exitCode !== null);
    if (dead) throw new Error(`redis-server exited with ${dead.exitCode} while waiting for ${what}`);
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A private 3-master Redis Cluster (no replicas) on free 127.0.0.1 ports, for one test file: three
 * `redis-server --cluster-enabled yes`, joined with `redis-cli --cluster create`, ready once every
 * node reports `cluster_state:ok`. Nothing is persisted; `dispose` stops the servers and deletes
 * their directory.
 */
export async function startRedisCluster(): Promise<TestCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-cluster-'));
  const ports: number[] = [];
  while (ports.length < 3) {
    const port = await freePort();
    // The cluster bus listens on port + 10000: both must be free (and distinct between nodes).
    if (port + 10000 > 65535 || ports.includes(port) || ports.includes(port + 10000) || ports.some((p) => p + 10000 === port)) continue;
    if ((await freePortIs(port + 10000)) === false) continue;
    ports.push(port);
  }
  const children: ChildProcess[] = [];
  const dispose = async () => {
    await Promise.all(children.map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const port of ports) {
      const nodeDir = join(dir, String(port));
      mkdirSync(nodeDir);
      const child = spawn('redis-server', [
        '--port', String(port), '--bind', '127.0.0.1', '--dir', nodeDir, '--save', '', '--appendonly', 'no',
        '--cluster-enabled', 'yes', '--cluster-config-file', join(nodeDir, 'nodes.conf'), '--cluster-node-timeout', '5000',
      ], { stdio: 'ignore' });
      children.push(child);
    }
    for (const port of ports) await waitFor(`node ${port}`, async () => (await redisCli(port, 'PING')).trim() === 'PONG', children);
    await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { timeout: 30_000 });
    for (const port of ports) {
      await waitFor(`cluster_state:ok on ${port}`, async () => /cluster_state:ok/.test(await redisCli(port, 'CLUSTER', 'INFO')), children);
    }
  } catch (err) {
    await dispose();
    throw err;
  }
  const nodes = ports.map((p) => `127.0.0.1:${p}`).join(',');
  return { nodes, ports, env: { REDIS_CLUSTER_NODES: nodes }, dispose };
}

async function freePortIs(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}
