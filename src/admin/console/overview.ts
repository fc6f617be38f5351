import { MINUTES } from '../../observability/minute-series.ts';
import { KEY_ROTATION_DAYS, type AttentionItem, type Operations } from '../operations.ts';
import { render, type Kit } from './kit.ts';

/** Overview: is it healthy? The last hour per minute, the store, the signing keys, and what needs the operator. */
export function overviewScreen(kit: Kit) {
  kit.router.get('/', kit.admin, async (ctx) => {
    const overview = await kit.ops.overview();
    render(kit, ctx, 'overview', {
      title: 'Overview',
      storageUp: overview.store.up,
      store: storeInWords(overview.store),
      charts: charts(overview.minutes),
      keys: overview.signing_keys,
      attention: overview.attention.map(attentionInWords),
      rotationDays: KEY_ROTATION_DAYS,
    });
  });
}

type Overview = Awaited<ReturnType<Operations['overview']>>;

const CHARTS = [
  { name: 'signIns', title: 'Sign-ins', hint: 'Sign-ins that finished.', href: '/admin/activity?event=signin_succeeded' },
  { name: 'signInFailures', title: 'Failures', hint: 'Refused passwords and second-factor codes.', href: '/admin/activity?event=signin_failed' },
  { name: 'tokensIssued', title: 'Tokens issued', hint: 'Access, refresh and ID tokens from the token endpoint.', href: '/admin/activity?event=token_issued' },
  { name: 'introspections', title: 'Introspections', hint: 'Token introspection requests from APIs.', href: undefined },
] as const;

/** The chart's drawing box (SVG user units; CSS scales it). */
const WIDTH = 240;
const HEIGHT = 48;

/**
 * One sparkline per series: a polyline over the kept minutes, the newest at the right edge, each minute
 * one step of WIDTH / (MINUTES - 1). Numbers only reach the page; eta escapes them all the same.
 */
function charts(minutes: Overview['minutes']) {
  return CHARTS.map((c) => {
    const values = minutes.map((m) => m[c.name]);
    const total = values.reduce((a, b) => a + b, 0);
    const max = Math.max(0, ...values);
    const step = WIDTH / (MINUTES - 1);
    const start = WIDTH - (values.length - 1) * step;
    const points = values.map((v, i) => `${round(start + i * step)},${round(HEIGHT - 2 - (max === 0 ? 0 : (v / max) * (HEIGHT - 4)))}`).join(' ');
    const last = values.at(-1) ?? 0;
    const label = values.length === 0
      ? `${c.title} per minute: nothing measured yet`
      : `${c.title} per minute over the last ${values.length} ${values.length === 1 ? 'minute' : 'minutes'}: ${total} in all, at most ${max} in a minute, ${last} in the last minute`;
    return { ...c, values, total, max, last, points, label, width: WIDTH, height: HEIGHT };
  });
}

const round = (n: number) => Math.round(n * 10) / 10;

function bytes(n: number) {
  const units = ['bytes', 'KB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

function storeInWords(store: Overview['store']) {
  if (!store.info) return { name: store.kind === 'redis' ? 'Redis' : 'Embedded store', detail: 'Does not answer.' };
  if (store.info.kind === 'memory') return { name: 'Embedded store', detail: `${store.info.keys} keys in this process's memory; nothing survives a restart.` };
  const { usedMemory, maxMemory } = store.info;
  const detail = maxMemory > 0
    ? `${bytes(usedMemory)} used of ${bytes(maxMemory)} (${Math.round((usedMemory / maxMemory) * 100)} %).`
    : `${bytes(usedMemory)} used; no maxmemory limit set.`;
  return { name: 'Redis', detail };
}

function attentionInWords(item: AttentionItem): { text: string; href?: string; link?: string } {
  switch (item.kind) {
    case 'admin_without_second_factor':
      return { text: `${item.email} is an admin without a second factor.`, href: `/admin/users/${encodeURIComponent(item.id)}`, link: 'See the account' };
    case 'admins_not_all_checked':
      return { text: `Only the first ${item.checked} accounts were checked for admins without a second factor.`, href: '/admin/users', link: 'See the users' };
    case 'signing_key_due':
      return { text: `The current signing key ${item.kid} is ${item.age_days} days old: due for rotation.`, href: '/admin/keys', link: 'Rotate on the Keys page' };
    case 'embedded_store':
      return { text: 'The embedded store is in use: nothing survives a restart, and several servers cannot share it. Set REDIS_URL.' };
    case 'storage_down':
      return { text: 'Storage does not answer.' };
  }
}
