import { totpCodeAt, TOTP_PERIOD_SECONDS } from '../../src/accounts/totp.ts';

/**
 * TOTP codes for tests that sign in, under the default MFA_POLICY=required.
 *
 * A code is accepted once per account, and no older step after it, so signing one person in many
 * times within 30 s needs a clock that moves. Servers started by startServer (in this process) use
 * `totpClock` for their time-based codes; each sign-in moves it one step on and computes the code for
 * that step — deterministic, no sleeping, no step-boundary races (the server checks the same clock,
 * ± one step). For a server that does not use it, codes are computed from the real clock: the current
 * step, or the next when the current one ends within 2 s (accepted too: ± one step).
 */
const STEP_MS = TOTP_PERIOD_SECONDS * 1000;

export const totpClock = {
  offsetMs: 0,
  now: () => Date.now() + totpClock.offsetMs,
};

/** Issuers (origins) of servers that run on `totpClock`. */
const onTestClock = new Set<string>();

export function useTestClock(issuer: string): void {
  onTestClock.add(new URL(issuer).origin);
}

/** The TOTP secrets of test people, by email: learned at enrollment, used at later sign-ins. */
export const totpSecrets = new Map<string, string>();

/** Strips the spaces of the key as the enrollment page shows it. */
export function keyFromPage(text: string): string {
  return text.replace(/\s+/g, '').toUpperCase();
}

/** The test-clock time of the last code handed out: the next one must be at least one step later. */
let lastCodeAt = -Infinity;

/** A code a server will accept now, newer than any code of this secret accepted before. */
export async function nextTotpCode(issuer: string, secret: string): Promise<string> {
  if (onTestClock.has(new URL(issuer).origin)) {
    totpClock.offsetMs += STEP_MS;
    // A test that moved Date ahead (mock timers) and back could otherwise land in the step it used last.
    if (totpClock.now() < lastCodeAt + STEP_MS) totpClock.offsetMs += lastCodeAt + STEP_MS - totpClock.now();
    lastCodeAt = totpClock.now();
    return totpCodeAt(secret, lastCodeAt);
  }
  const now = Date.now();
  return totpCodeAt(secret, STEP_MS - (now % STEP_MS) < 2000 ? now + STEP_MS : now);
}

/** A code for the current step (enrollment: nothing was accepted before). */
export async function currentTotpCode(issuer: string, secret: string): Promise<string> {
  if (onTestClock.has(new URL(issuer).origin)) {
    lastCodeAt = Math.max(lastCodeAt, totpClock.now());
    return totpCodeAt(secret, totpClock.now());
  }
  return nextTotpCode(issuer, secret);
}

/** Six digits that are not the code of this moment (± one step). */
export async function wrongTotpCode(issuer: string, secret: string): Promise<string> {
  const now = onTestClock.has(new URL(issuer).origin) ? totpClock.now() : Date.now();
  const near = new Set(await Promise.all([-1, 0, 1].map((k) => totpCodeAt(secret, now + k * STEP_MS))));
  for (let n = 0; ; n += 1) {
    const candidate = String((Number([...near][0]) + 111_111 * (n + 1)) % 1_000_000).padStart(6, '0');
    if (!near.has(candidate)) return candidate;
  }
}
