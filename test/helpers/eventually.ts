import assert from 'node:assert/strict';

/**
 * Polls, bounded, until `check` holds: for changes that reach another process asynchronously (pub/sub,
 * a queue, a log line) and have no event of their own to await. Fails with `what` when it never holds.
 */
export async function eventually(check: () => boolean | Promise<boolean>, what: string, { timeoutMs = 5000, everyMs = 20 } = {}): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) assert.fail(`never: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
