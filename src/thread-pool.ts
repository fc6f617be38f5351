import { randomFill } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';

/**
 * How far libuv's thread pool runs below the event loop (a nice value, as `nice -n 5`). The pool does a
 * serving process's bulk work — argon2id, ID tokens' RSA signatures, log writes — and the event loop
 * hands it that work and answers every request. With more runnable threads than CPUs (the pool has 4,
 * busy at once under load), an even share starves the loop: requests wait for it while the CPU signs.
 * At nice 5 the kernel lets the loop run first when they compete and changes nothing when a CPU is free;
 * refreshes served ~7 % more per second on 2 CPUs (docs/scaling.md), password sign-ins the same.
 */
export const POOL_NICE = 5;

/**
 * Starts the pool (its threads start with its first job) and lowers its threads to POOL_NICE; Linux only
 * (elsewhere, or where the system refuses, the pool keeps the loop's priority). Returns how many it lowered.
 */
export async function lowerThreadPoolPriority(nice = POOL_NICE): Promise<number> {
  if (process.platform !== 'linux') return 0;
  await new Promise<void>((resolve) => randomFill(Buffer.alloc(1), () => resolve()));
  let tasks: string[];
  try {
    tasks = readdirSync('/proc/self/task');
  } catch {
    return 0; // no /proc (a sandbox): the pool keeps its priority
  }
  let lowered = 0;
  for (const task of tasks) {
    const tid = Number(task);
    try {
      if (readFileSync(`/proc/self/task/${task}/comm`, 'utf8').trim() !== 'libuv-worker' || getPriority(tid) >= nice) continue;
      // On Linux a thread's id names that thread alone to setpriority.
      setPriority(tid, nice);
      lowered += 1;
    } catch {
      // A thread gone meanwhile, or a sandbox that refuses: that thread keeps its priority.
    }
  }
  return lowered;
}
