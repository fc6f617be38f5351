import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Metrics } from '../src/observability/metrics.ts';
import { MINUTES, MinuteSeries, minuteSeriesOf, type SeriesName } from '../src/observability/minute-series.ts';

/**
 * The overview's per-minute series: each sample keeps what every counter grew by since the last one,
 * the last 60 minutes of it; a counter that started again counts from zero. Ticked by hand, no timers.
 */
const zero: Record<SeriesName, number> = { signIns: 0, signInFailures: 0, tokensIssued: 0, introspections: 0 };

function ticking() {
  let clock = 1_000_000;
  const totals = { ...zero };
  const series = new MinuteSeries({ read: () => Promise.resolve({ ...totals }), now: () => clock });
  const tick = async () => {
    clock += 60_000;
    await series.sample();
  };
  return { series, totals, tick, at: () => clock };
}

describe('minute series', () => {
  test('the first sample is the baseline; each later one keeps the growth since the one before, with its time', async () => {
    const { series, totals, tick, at } = ticking();
    totals.signIns = 7; // before the baseline: not part of any minute
    await tick();
    assert.deepEqual(series.points(), []);
    totals.signIns = 10;
    totals.tokensIssued = 4;
    await tick();
    totals.signIns = 11;
    totals.signInFailures = 2;
    totals.introspections = 5;
    await tick();
    await tick();
    const points = series.points();
    assert.deepEqual(points.map((p) => p.counts), [
      { signIns: 3, signInFailures: 0, tokensIssued: 4, introspections: 0 },
      { signIns: 1, signInFailures: 2, tokensIssued: 0, introspections: 5 },
      { ...zero },
    ]);
    assert.equal(points.at(-1)!.at, at());
    assert.equal(points[0]!.at, at() - 2 * 60_000);
  });

  test('keeps only the last 60 minutes, oldest first', async () => {
    const { series, totals, tick } = ticking();
    await tick();
    for (let minute = 1; minute <= MINUTES + 15; minute += 1) {
      totals.tokensIssued += minute; // minute n issues n tokens
      await tick();
    }
    const kept = series.points().map((p) => p.counts.tokensIssued);
    assert.equal(kept.length, MINUTES);
    assert.deepEqual(kept, Array.from({ length: MINUTES }, (_, i) => 16 + i));
  });

  test('a counter that went down was reset: its whole new total is that minute\'s count, never a negative one', async () => {
    const { series, totals, tick } = ticking();
    totals.signInFailures = 50;
    await tick();
    totals.signInFailures = 3;
    await tick();
    totals.signInFailures = 5;
    await tick();
    assert.deepEqual(series.points().map((p) => p.counts.signInFailures), [3, 2]);
  });

  test('reads a server\'s own counters: sign-ins, refused passwords and codes together, every token issued, introspections', async () => {
    const metrics = new Metrics();
    const series = minuteSeriesOf(metrics, () => 0);
    await series.sample();
    metrics.signIns.inc();
    metrics.signIns.inc();
    metrics.signInFailures.inc({ reason: 'wrong' });
    metrics.secondFactorFailures.inc({ method: 'totp', reason: 'invalid' });
    metrics.tokensIssued.inc({ grant_type: 'authorization_code', token: 'access_token' });
    metrics.tokensIssued.inc({ grant_type: 'authorization_code', token: 'id_token' });
    metrics.tokensIssued.inc({ grant_type: 'client_credentials', token: 'access_token' });
    metrics.introspections.inc({ result: 'active' });
    await series.sample();
    assert.deepEqual(series.points().map((p) => p.counts), [{ signIns: 2, signInFailures: 2, tokensIssued: 3, introspections: 1 }]);
  });
});
