import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createLogger } from '../src/observability/logger.ts';
import { Metrics } from '../src/observability/metrics.ts';
import { Lockout } from '../src/security/lockout.ts';
import { FactorCheck, type Factor } from '../src/signin/factors/factor.ts';
import { MemoryStore } from '../src/storage/memory-store.ts';

/**
 * The one generic check behind every factor (src/signin/factors/factor.ts): a factor says whose attempt
 * it is and how to verify; the check asks the lockout first, verifies, counts, and writes the metric and
 * the audit event once. A made-up factor (a code sent by email) shows that a new one is a Factor value
 * and nothing else.
 */
type EmailedCode = { email: string; code: string };

function setup() {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'info', format: 'json', destination: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });
  const metrics = new Metrics();
  const lockout = new Lockout(new MemoryStore(), { now: () => 1_800_000_000_000 });
  const verified: string[] = [];
  const emailedCode: Factor<EmailedCode, { email: string }> = {
    name: 'totp',
    subject: ({ email }) => ({ key: email.toLowerCase() }),
    async verify({ email, code }) {
      verified.push(code);
      return code === '424242' ? { ok: true, email } : { ok: false, reason: 'invalid' };
    },
    succeeded: ({ email }) => ({ audit: { event: 'second_factor_succeeded', fields: { accountId: email, method: 'email_code' }, msg: 'second factor accepted' } }),
    failed: (reason, { email }) => ({
      metric: { counter: 'secondFactorFailures', labels: { method: 'email_code', reason } },
      audit: { event: 'second_factor_failed', fields: { accountId: email, method: 'email_code', reason }, msg: 'second factor refused' },
    }),
  };
  return { check: new FactorCheck({ lockout, metrics, logger }), emailedCode, lines, metrics, verified };
}

const failuresOf = async (metrics: Metrics, reason: string) =>
  (await metrics.secondFactorFailures.get()).values.find((v) => v.labels.method === 'email_code' && v.labels.reason === reason)?.value ?? 0;

describe('the generic factor check', () => {
  test('a right answer passes with what the factor proved, and is audited once, without the code', async () => {
    const { check, emailedCode, lines } = setup();
    assert.deepEqual(await check.check(emailedCode, { email: 'Ada@example.org', code: '424242' }, '192.0.2.1'), { status: 'ok', email: 'Ada@example.org' });
    const events = lines.filter((l) => l.event === 'second_factor_succeeded');
    assert.equal(events.length, 1);
    assert.equal(events[0]!.method, 'email_code');
    assert.ok(!JSON.stringify(lines).includes('424242'), 'the code is in no log line');
  });

  test('wrong answers are counted and audited with their reason, then the lockout refuses without verifying', async () => {
    const { check, emailedCode, lines, metrics, verified } = setup();
    const attempt = (code: string) => check.check(emailedCode, { email: 'ada@example.org', code }, '192.0.2.1');
    let failed = 0;
    for (let result = await attempt('000000'); result.status === 'failed'; result = await attempt('000000')) {
      assert.deepEqual(result, { status: 'failed', reason: 'invalid' });
      failed += 1;
    }
    assert.ok(failed >= 3, `${failed} failures before the lockout`);
    assert.equal(await failuresOf(metrics, 'invalid'), failed);
    const right = await attempt('424242');
    assert.equal(right.status, 'locked', 'the right code is refused while locked');
    assert.ok(right.status === 'locked' && right.retryAfterSeconds > 0);
    // The attempt that reaches the threshold was verified (and answered locked); the right code after it was not.
    assert.equal(verified.length, failed + 1, 'nothing is verified while locked');
    assert.equal(await failuresOf(metrics, 'locked'), 2);
    assert.equal(lines.filter((l) => l.event === 'second_factor_failed' && l.reason === 'locked').length, 2);
  });
});
