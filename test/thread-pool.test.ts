import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { spawnLatchkey } from './helpers/process.ts';
import { POOL_NICE } from '../src/thread-pool.ts';

/** Each thread of a process: its name and nice value (/proc/<pid>/task/<tid>/stat, field 19). */
function threads(pid: number): { tid: number; name: string; nice: number }[] {
  return readdirSync(`/proc/${pid}/task`).map((task) => {
    const stat = readFileSync(`/proc/${pid}/task/${task}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { tid: Number(task), name: readFileSync(`/proc/${pid}/task/${task}/comm`, 'utf8').trim(), nice: Number(fields[16]) };
  });
}

test('a serving process runs its thread pool below its event loop: argon2id and signatures never starve the requests', async () => {
  const running = await spawnLatchkey();
  try {
    const pid = running.child.pid!;
    const all = threads(pid);
    const pool = all.filter((t) => t.name === 'libuv-worker');
    assert.ok(pool.length >= 1, `the pool started (threads: ${all.map((t) => t.name).join(', ')})`);
    for (const t of pool) assert.equal(t.nice, POOL_NICE, `pool thread ${t.tid}`);
    assert.equal(all.find((t) => t.tid === pid)?.nice, 0, 'the event loop keeps its priority');
    assert.equal((await fetch(`${running.url}/.well-known/openid-configuration`)).status, 200);
  } finally {
    await running.stop();
  }
});
