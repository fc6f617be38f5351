/** The bench's per-thread CPU (bench/lib.ts threadCpu): what bench/RESULTS.md's "outside argon2id" figure rests on. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { threadCpu } from '../bench/lib.ts';
import { hashPassword, verifyPassword } from '../src/accounts/passwords.ts';

test('an argon2id verify is counted on libuv’s thread pool, not on the JavaScript thread', async () => {
  const stored = await hashPassword('correct horse battery staple');
  const before = threadCpu(process.pid);
  // Enough verifies (OWASP parameters, 12–30 ms each here) to rise far above /proc's 10 ms ticks.
  for (let i = 0; i < 15; i += 1) assert.equal(await verifyPassword(stored, 'correct horse battery staple'), true);
  const after = threadCpu(process.pid);
  const total = after.total - before.total;
  const pool = after.pool - before.pool;
  const main = after.main - before.main;
  assert.ok(total >= 0.1, `the verifies used CPU (${total} s)`);
  assert.ok(pool >= 0.75 * total, `most of it on the libuv-worker threads: ${pool} s of ${total} s`);
  assert.ok(main <= 0.25 * total, `little on MainThread: ${main} s of ${total} s`);
  assert.ok(after.main + after.pool <= after.total + 0.02, 'the parts never exceed the process’s own count');
});

test('JavaScript work is counted on the JavaScript thread, not on the pool', () => {
  const before = threadCpu(process.pid);
  const started = process.cpuUsage();
  let x = 0;
  while (process.cpuUsage(started).user < 200_000) x += Math.sqrt(x + 1);
  assert.ok(x > 0);
  const after = threadCpu(process.pid);
  const main = after.main - before.main;
  assert.ok(main >= 0.15, `the loop's 0.2 s on MainThread (${main} s)`);
  assert.ok(after.pool - before.pool <= 0.03, `next to nothing on the pool (${after.pool - before.pool} s)`);
});
