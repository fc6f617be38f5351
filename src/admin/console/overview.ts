import type { ActivityLog } from '../../observability/activity.ts';
import { render, type Kit } from './kit.ts';

/** Overview: does storage answer, and the last hour's numbers. */
export function overviewScreen(kit: Kit, activity: ActivityLog) {
  kit.router.get('/', kit.admin, async (ctx) => {
    const storageUp = await kit.ops.storageAnswers();
    const counts = storageUp ? await recentCounts(activity) : undefined;
    render(kit, ctx, 'overview', { title: 'Overview', storageUp, counts });
  });
}

/** The Overview's numbers, counted from the activity log's last hour. */
async function recentCounts(activity: ActivityLog) {
  const now = Date.now();
  const counted = { token_issued: 0, signin_succeeded: 0, signin_failed: 0, second_factor_failed: 0, lockout_started: 0 };
  const lastFive = { token_issued: 0, signin_succeeded: 0 };
  let cursor: string | undefined;
  // At most 50 pages: past that, the numbers say "at least".
  let pages = 0;
  do {
    const page = await activity.query({ events: Object.keys(counted), from: now - 60 * 60_000 }, { cursor, limit: 100 });
    for (const e of page.events) {
      const name = e.event as keyof typeof counted;
      // Refusals are aggregated: one entry per source and minute, with a count (observability/activity.ts).
      counted[name] += typeof e.count === 'number' ? e.count : 1;
      if ((name === 'token_issued' || name === 'signin_succeeded') && Date.parse(e.time) >= now - 5 * 60_000) lastFive[name] += 1;
    }
    cursor = page.next;
    pages += 1;
  } while (cursor && pages < 50);
  const perMinute = (n: number) => Math.round((n / 5) * 10) / 10;
  return {
    tokensPerMinute: perMinute(lastFive.token_issued),
    signInsPerMinute: perMinute(lastFive.signin_succeeded),
    failures: counted.signin_failed + counted.second_factor_failed,
    lockouts: counted.lockout_started,
    incomplete: cursor !== undefined,
  };
}
