import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { freePort, startRedis, type TestRedis } from './helpers/redis.ts';

/**
 * SIGTERM, as `docker stop` sends it, to a real `node src/main.ts`: it stops accepting connections,
 * lets the requests in flight finish (at most 10 s), closes Redis and exits 0.
 */
let redis: TestRedis;

before(async () => {
  redis = await startRedis();
});

after(async () => {
  await redis?.dispose();
});

interface Running {
  child: ChildProcess;
  port: number;
  lines: Record<string, unknown>[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  waitFor(msg: RegExp, timeoutMs?: number): Promise<void>;
}

async function startLatchkey(): Promise<Running> {
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('REDIS_') && k !== 'NODE_ENV') env[k] = v;
  Object.assign(env, { PORT: String(port), HOST: '127.0.0.1', NODE_ENV: 'test', LOG_FORMAT: 'json', REDIS_URL: redis.url });
  const child = spawn(process.execPath, ['src/main.ts'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Record<string, unknown>[] = [];
  const waiters: (() => void)[] = [];
  let buffered = '';
  child.stdout!.on('data', (chunk) => {
    buffered += String(chunk);
    const parts = buffered.split('\n');
    buffered = parts.pop()!;
    for (const line of parts) if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
    for (const wake of waiters.splice(0)) wake();
  });
  child.stderr!.resume();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, at: performance.now() })),
  );
  const waitFor = async (msg: RegExp, timeoutMs = 10_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!lines.some((l) => msg.test(String(l.msg)))) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no log line ${msg} (got ${lines.map((l) => l.msg).join(' | ')})`);
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
  };
  await waitFor(/is listening/);
  return { child, port, lines, exited, waitFor };
}

/** A request whose headers are sent and whose body is not: the server has it in flight until we finish it. */
async function startSlowRequest(port: number): Promise<{ socket: Socket; finish(): Promise<string> }> {
  const body = 'grant_type=client_credentials&scope=api%3Aread';
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.write(
    'POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n' +
      `Authorization: Basic ${Buffer.from('nobody:wrong').toString('base64')}\r\nContent-Length: ${body.length}\r\n\r\n` +
      body.slice(0, 10),
  );
  let response = '';
  socket.on('data', (d) => (response += String(d)));
  const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return {
    socket,
    async finish() {
      socket.write(body.slice(10));
      // Complete once the JSON body has arrived (the server may keep or close the connection).
      const deadline = Date.now() + 5000;
      while (!/\r\n\r\n[\s\S]*\}/.test(response) && Date.now() < deadline) {
        await Promise.race([ended, new Promise((r) => setTimeout(r, 20))]);
      }
      return response;
    },
  };
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

test('SIGTERM: stops accepting, finishes the request in flight, closes Redis, exits 0', async () => {
  const running = await startLatchkey();
  const slow = await startSlowRequest(running.port);
  await new Promise((r) => setTimeout(r, 200)); // the server has read the headers and waits for the body
  running.child.kill('SIGTERM');
  await running.waitFor(/shutting down/);
  let closed = false;
  for (let i = 0; i < 20 && !closed; i += 1) {
    closed = await refused(running.port);
    if (!closed) await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(closed, true, 'no new connection is accepted while draining');
  assert.equal(running.child.exitCode, null, 'it waits for the request in flight');

  const response = await slow.finish();
  assert.match(response, /^HTTP\/1\.1 401 /, `the request in flight got its answer: ${response.slice(0, 200)}`);
  assert.match(response, /"error":"invalid_client"/);
  const answeredAt = performance.now();

  // The client keeps its (keep-alive) connection open: the server closes it once the answer is sent.
  const { code, signal, at } = await running.exited;
  slow.socket.destroy();
  assert.equal(signal, null);
  assert.equal(code, 0);
  assert.ok(at - answeredAt < 3000, `exited ${Math.round(at - answeredAt)} ms after the last answer`);
  const msgs = running.lines.map((l) => l.msg);
  assert.ok(msgs.indexOf('stopped') > msgs.indexOf('shutting down: draining requests'));
  assert.ok(running.lines.every((l) => l.event !== 'storage_unavailable'), 'closing Redis on purpose is not an outage');
});

test('SIGTERM: a request that never finishes is cut off after 10 s, and the process still exits 0', async () => {
  const running = await startLatchkey();
  const slow = await startSlowRequest(running.port);
  await new Promise((r) => setTimeout(r, 200));
  const sent = performance.now();
  running.child.kill('SIGTERM');
  const { code, at } = await running.exited;
  slow.socket.destroy();
  assert.equal(code, 0);
  const took = at - sent;
  assert.ok(took >= 9000 && took < 13_000, `exited after ${Math.round(took)} ms`);
  assert.ok(running.lines.some((l) => /did not finish in 10 s/.test(String(l.msg))));
});
