import { Readable } from 'node:stream';
import type { Context } from 'koa';
import type { ActivityFilter, ActivityLog } from '../../observability/activity.ts';
import { AUDIT_EVENTS } from '../../observability/audit.ts';
import { badCursor, PAGE, render, unlessGone, type Kit } from './kit.ts';

const ACTIVITY_CURSOR = /^\d{1,15}-\d{1,15}$/;

/** Activity: the audit events, filtered, a page at a time, and their export. */
export function activityScreen(kit: Kit, activity: ActivityLog) {
  const { router, ops, admin, views } = kit;

  function activityFilter(ctx: Context): { filter: ActivityFilter; values: Record<'event' | 'person' | 'client' | 'from' | 'to', string>; errors: Record<string, string> } {
    const q = (name: string) => (typeof ctx.query[name] === 'string' ? ctx.query[name].trim().slice(0, 254) : '');
    const values = { event: q('event'), person: q('person'), client: q('client'), from: q('from'), to: q('to') };
    const errors: Record<string, string> = {};
    const filter: ActivityFilter = {};
    if (values.event) {
      if ((AUDIT_EVENTS as readonly string[]).includes(values.event)) filter.events = [values.event];
      else errors.event = 'Choose an event from the list.';
    }
    if (values.client) filter.clientId = values.client;
    for (const name of ['from', 'to'] as const) {
      if (!values[name]) continue;
      // datetime-local sends no zone: the console speaks UTC, as the times it shows.
      const ms = Date.parse(/[zZ]|[+-]\d\d:\d\d$/.test(values[name]) ? values[name] : `${values[name]}Z`);
      if (Number.isFinite(ms)) filter[name] = ms;
      else errors[name] = 'A date and time, such as 2026-01-31T09:00 (UTC).';
    }
    return { filter, values, errors };
  }

  /** The person filter takes an email or an account id. */
  async function personFilter(filter: ActivityFilter, person: string) {
    if (!person) return true;
    const account = await unlessGone(ops.findUser(person));
    if (account) filter.accountId = account.id;
    return account !== undefined;
  }

  router.get('/activity', admin, async (ctx) => {
    if (badCursor(kit, ctx, ACTIVITY_CURSOR)) return;
    const { filter, values, errors } = activityFilter(ctx);
    if (!(await personFilter(filter, values.person))) errors.person = 'No user with that email or id.';
    const search = new URLSearchParams(Object.entries(values).filter(([, v]) => v)).toString();
    if (Object.keys(errors).length) {
      ctx.status = 400;
      return render(kit, ctx, 'activity', { title: 'Activity', events: [], values, errors, eventNames: AUDIT_EVENTS, search });
    }
    const page = await activity.query(filter, { cursor: ctx.query.cursor as string | undefined, limit: PAGE });
    render(kit, ctx, 'activity', { title: 'Activity', events: page.events.map(describeEvent), next: page.next, values, errors, eventNames: AUDIT_EVENTS, search });
  });

  router.get('/activity.jsonl', admin, async (ctx) => {
    const { filter, values, errors } = activityFilter(ctx);
    if (!(await personFilter(filter, values.person))) errors.person = 'no user with that email or id';
    if (Object.keys(errors).length) {
      ctx.status = 400;
      return views.renderError(ctx, { error: 'invalid_request', error_description: Object.values(errors).join(' ') });
    }
    ctx.set('Cache-Control', 'no-store');
    ctx.type = 'application/jsonl';
    ctx.set('Content-Disposition', 'attachment; filename="latchkey-activity.jsonl"');
    ctx.body = Readable.from(activity.exportLines(filter));
  });
}

/** One line per event for the activity table: who, what, and the fields besides. */
function describeEvent(e: Record<string, unknown>) {
  const { id: _id, time, event, msg, actor, source, accountId, clientId, ...rest } = e;
  const by = actor as { accountId?: string; clientId?: string; kind?: string } | undefined;
  return {
    time: String(time).replace('T', ' ').slice(0, 19), event, msg, accountId, clientId,
    actor: by?.accountId ? { href: `/admin/users/${encodeURIComponent(by.accountId)}`, label: 'an admin' } : { label: by ? by.clientId ?? by.kind : source },
    details: Object.entries(rest).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' '),
  };
}
