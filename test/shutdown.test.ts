import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { eventually } from './helpers/eventually.ts';
import { spawnLatchkey } from './helpers/process.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';

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

/**
 * A request whose headers are sent and whose body is not: the server has it in flight until we finish it.
 * `Expect: 100-continue` makes the server say when it has read the headers (Node answers `100 Continue`
 * before it hands the request on), so the test waits for that answer, not for a guessed delay.
 */
async function startSlowRequest(port: number): Promise<{ socket: Socket; finish(): Promise<string> }> {
  const body = 'grant_type=client_credentials&scope=api%3Aread';
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let response = '';
  const arrived: (() => void)[] = [];
  socket.on('data', (d) => {
    response += String(d);
    for (const wake of arrived.splice(0)) wake();
  });
  socket.once('close', () => {
    for (const wake of arrived.splice(0)) wake();
  });
  /** Resolves once the response so far matches, or the connection closed. */
  const until = async (pattern: RegExp) => {
    while (!pattern.test(response) && !socket.closed) await new Promise<void>((wake) => arrived.push(wake));
  };
  socket.write(
    'POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\n' +
      `Authorization: Basic ${Buffer.from('nobody:wrong').toString('base64')}\r\nContent-Length: ${body.length}\r\n\r\n`,
  );
  await until(/^HTTP\/1\.1 100 Continue\r\n\r\n/);
  return {
    socket,
    async finish() {
      socket.write(body);
      // Complete once the JSON body has arrived (the server may keep or close the connection).
      await until(/\r\n\r\nHTTP\/1\.1 [\s\S]*\r\n\r\n[\s\S]*\}/);
      return response.replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, '');
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
  const running = await spawnLatchkey({ REDIS_URL: redis.url });
  const slow = await startSlowRequest(running.port);
  running.child.kill('SIGTERM');
  await running.waitForLine(/shutting down/);
  await eventually(() => refused(running.port), 'no new connection is accepted while draining', { timeoutMs: 1000 });
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
  const running = await spawnLatchkey({ REDIS_URL: redis.url });
  const slow = await startSlowRequest(running.port);
  const sent = performance.now();
  running.child.kill('SIGTERM');
  const { code, at } = await running.exited;
  slow.socket.destroy();
  assert.equal(code, 0);
  const took = at - sent;
  assert.ok(took >= 9000 && took < 13_000, `exited after ${Math.round(took)} ms`);
  assert.ok(running.lines.some((l) => /did not finish in 10 s/.test(String(l.msg))));
});
