import { Readable } from 'node:stream';
import type { Context } from 'koa';
import type { ActivityEvent, ActivityFilter, ActivityLog } from '../../observability/activity.ts';
import { AUDIT_EVENTS } from '../../observability/audit.ts';
import { badCursor, notFound, PAGE, render, unlessGone, when, type Kit } from './kit.ts';
import type { Operations } from '../operations.ts';

/** An event field as text: strings as they are, anything else as JSON. */
const fieldText = (v: unknown): string => (typeof v === 'string' ? v : (JSON.stringify(v) ?? String(v)));

const ACTIVITY_CURSOR = /^\d{1,15}-\d{1,15}$/;

/** The activity filter's groups: the kinds of event an operator looks for together. */
export const EVENT_GROUPS: Record<string, { label: string; events: string[] }> = {
  signins: { label: 'Sign-ins', events: ['signin_succeeded', 'second_factor_succeeded', 'passkey_used', 'session_ended', 'sessions_revoked'] },
  failures: { label: 'Failures and lockouts', events: ['signin_failed', 'second_factor_failed', 'lockout_started', 'lockout_ended', 'client_authentication_failed', 'refresh_token_reuse_detected', 'introspection_throttled'] },
  admin: {
    label: 'Admin changes',
    events: ['client_created', 'client_updated', 'client_deleted', 'client_secret_rotated', 'client_old_secret_revoked', 'resource_created', 'resource_updated', 'resource_deleted', 'user_created', 'user_disabled', 'user_enabled', 'user_deleted', 'user_unlocked', 'signing_keys_rotated', 'admin_granted', 'admin_revoked', 'admin_bootstrapped', 'admin_setup_completed'],
  },
  tokens: { label: 'Tokens', events: ['token_issued', 'token_revoked', 'consent_granted', 'consent_revoked', 'device_approved', 'device_denied'] },
};

type Values = { groups: string[]; events: string[]; person: string; client: string; from: string; to: string };

/** Activity: the audit events, filtered, a page at a time, with names instead of ids; one event in full; the export. */
export function activityScreen(kit: Kit, activity: ActivityLog) {
  const { router, ops, admin, views } = kit;

  function activityFilter(ctx: Context): { filter: ActivityFilter; values: Values; errors: Record<string, string> } {
    const q = (name: string) => (typeof ctx.query[name] === 'string' ? (ctx.query[name]).trim().slice(0, 254) : '');
    // Several kinds at once: `event` and `group` repeat.
    const many = (name: string) => ([] as unknown[]).concat(ctx.query[name] ?? []).filter((v): v is string => typeof v === 'string' && v !== '').slice(0, AUDIT_EVENTS.length);
    const values: Values = { groups: many('group'), events: many('event'), person: q('person'), client: q('client'), from: q('from'), to: q('to') };
    const errors: Record<string, string> = {};
    const filter: ActivityFilter = {};
    if (values.events.some((e) => !(AUDIT_EVENTS as readonly string[]).includes(e))) errors.event = 'Choose events from the list.';
    if (values.groups.some((g) => !EVENT_GROUPS[g])) errors.group = 'Choose groups from the list.';
    const kinds = new Set([...values.groups.flatMap((g) => EVENT_GROUPS[g]?.events ?? []), ...values.events]);
    if (kinds.size) filter.events = [...kinds];
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

  const searchOf = (values: Values) => {
    const search = new URLSearchParams();
    for (const g of values.groups) search.append('group', g);
    for (const e of values.events) search.append('event', e);
    for (const name of ['person', 'client', 'from', 'to'] as const) if (values[name]) search.append(name, values[name]);
    return search.toString();
  };
  const screen = { title: 'Activity', groups: Object.entries(EVENT_GROUPS).map(([value, g]) => ({ value, label: g.label })), eventNames: AUDIT_EVENTS };

  router.get('/activity', admin, async (ctx) => {
    if (badCursor(kit, ctx, ACTIVITY_CURSOR)) return;
    const { filter, values, errors } = activityFilter(ctx);
    if (!(await personFilter(filter, values.person))) errors.person = 'No user with that email or id.';
    const search = searchOf(values);
    if (Object.keys(errors).length) {
      ctx.status = 400;
      return render(kit, ctx, 'activity', { ...screen, events: [], values, errors, search });
    }
    const page = await activity.query(filter, { cursor: ctx.query.cursor as string | undefined, limit: PAGE });
    const names = new Names(ops);
    const events = await Promise.all(page.events.map((e) => describeEvent(e, names)));
    render(kit, ctx, 'activity', { ...screen, events, next: page.next, values, errors, search });
  });

  router.get('/activity/:id', admin, async (ctx) => {
    const id = ctx.params.id!;
    if (!ACTIVITY_CURSOR.test(id)) return notFound(kit, ctx, 'That event');
    const ms = Number(id.split('-')[0]);
    // The two streams (signed-in and anonymous) can hold the same id: every event under it is shown.
    const found = (await activity.query({ from: ms, to: ms }, { limit: 100 })).events.filter((e) => e.id === id);
    if (!found.length) return notFound(kit, ctx, 'That event (it may have aged out of the log)');
    const names = new Names(ops);
    const events = await Promise.all(found.map(async (e) => ({ ...(await describeEvent(e, names)), fields: Object.entries(e).filter(([k]) => k !== 'id').map(([k, v]) => [k, fieldText(v)]) })));
    render(kit, ctx, 'activity-event', { title: `Event ${id}`, id, events });
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

/** People's emails and apps' names for one page render, each looked up once through Operations. */
class Names {
  readonly #ops: Operations;
  readonly #people = new Map<string, Promise<string>>();
  readonly #apps = new Map<string, Promise<string>>();

  constructor(ops: Operations) {
    this.#ops = ops;
  }

  person(id: string): Promise<string> {
    let name = this.#people.get(id);
    if (!name) this.#people.set(id, (name = unlessGone(this.#ops.findUser(id)).then((a) => a?.email ?? `${id} (deleted)`, () => id)));
    return name;
  }

  app(id: string): Promise<string> {
    let name = this.#apps.get(id);
    if (!name) this.#apps.set(id, (name = unlessGone(this.#ops.client(id)).then((c) => (c ? c.client_name ?? id : `${id} (deleted)`), () => id)));
    return name;
  }
}

const link = (kind: 'users' | 'apps', id: string, label: string) => ({ href: `/admin/${kind}/${encodeURIComponent(id)}`, label });

/** One line per event for the activity table: when, what, about whom and which app, by whom, and the fields besides. */
async function describeEvent(e: ActivityEvent, names: Names) {
  const { id, time, event, msg, actor, source, accountId, clientId, ...rest } = e;
  const by = actor as { accountId?: string; clientId?: string; kind?: string } | undefined;
  const str = (v: unknown) => (typeof v === 'string' && v ? v : undefined);
  const person = str(accountId);
  const app = str(clientId);
  const appLink = app ? link('apps', app, await names.app(app)) : undefined;
  // Tokens are counted per app and minute: "<app> got 1,204 tokens between 10:00 and 10:01 UTC".
  if (event === 'token_issued' && typeof rest.count === 'number') {
    const { count, minute, until, ...others } = rest;
    const hhmm = (v: unknown) => (typeof v === 'string' ? v.slice(11, 16) : '?');
    return {
      id, time: when(time), event, subject: appLink ?? { label: 'An unknown app' }, app: appLink,
      msg: `got ${count.toLocaleString('en')} token${count === 1 ? '' : 's'} between ${hhmm(minute)} and ${hhmm(until)} UTC`,
      actor: { label: '' },
      details: Object.entries(others).map(([k, v]) => `${k}=${fieldText(v)}`).join(' '),
    };
  }
  return {
    id, time: when(time), event, msg,
    person: person ? link('users', person, await names.person(person)) : undefined,
    app: appLink,
    actor: by?.accountId ? link('users', by.accountId, await names.person(by.accountId)) : by?.clientId ? { label: await names.app(by.clientId) } : { label: by?.kind ?? (typeof source === 'string' ? source : '') },
    details: Object.entries(rest).map(([k, v]) => `${k}=${fieldText(v)}`).join(' '),
  };
}
