import { Readable } from 'node:stream';
import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import type Provider from 'oidc-provider';
import { AccountError, recoveryOf, type Account, type Accounts } from '../accounts/accounts.ts';
import { SecondFactor } from '../accounts/second-factor.ts';
import { CliError } from '../cli/output.ts';
import { formBody } from '../security/form-body.ts';
import { ACR_MFA } from '../signin/policy.ts';
import type { ActivityFilter, ActivityLog } from '../observability/activity.ts';
import { AUDIT_EVENTS } from '../observability/audit.ts';
import { ensureOwnClient, ownSignInUrl, RegistryError, type GrantType, type Registry } from '../oidc/registry.ts';
import type { Csrf } from '../security/csrf.ts';
import { sameOriginForms } from '../security/same-origin.ts';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';
import type { Views } from '../views.ts';
import { OperationError, userView, type Actor, type Operations } from './operations.ts';

/**
 * The admin console (`/admin`): server-rendered pages over src/admin/operations.ts, the module the
 * admin API and the CLI call, so the console can do nothing the API cannot.
 *
 * Like the account page, it is a first-party public client of this server: who is signed in is
 * oidc-provider's own session, reached through the ordinary sign-in. Only an enabled account with the
 * admin role whose session used a second factor (acr urn:latchkey:mfa) gets in; a session with a
 * password alone is sent through sign-in again, asking for the second factor (step-up).
 * Every post: same origin, a CSRF token bound to the session, a urlencoded body.
 */
export interface ConsoleDeps {
  provider: Provider;
  accounts: Accounts;
  store: Store;
  views: Views;
  csrf: Csrf;
  ops: Operations;
  activity: ActivityLog;
  secondFactor: SecondFactor;
  issuer: string;
  clientId: string;
}

const PAGE = 25;
const FORM_EXPIRED = 'the form expired; open the admin console again';
const CURSOR = /^[A-Za-z0-9_-]{1,1024}$/;
const ACTIVITY_CURSOR = /^\d{1,15}-\d{1,15}$/;

/** A client's kind on the form, and the grants it means. */
const KINDS: Record<string, { grants: GrantType[]; public: boolean }> = {
  web: { grants: ['authorization_code', 'refresh_token'], public: false },
  spa: { grants: ['authorization_code'], public: true },
  machine: { grants: ['client_credentials'], public: false },
};

interface Admin {
  account: Account;
  actor: Actor;
  csrfScope: string;
}

/** A refusal as the form shows it: next to the field it is about, in the form's words (not CLI flags). */
function fieldError(err: unknown, fields: Record<string, RegExp>): { field: string; message: string } | undefined {
  if (!(err instanceof RegistryError || err instanceof AccountError || err instanceof OperationError || err instanceof CliError)) return undefined;
  const message = err.message.replace(/--([a-z-]+)/g, (_m, flag: string) => flag.replaceAll('-', ' '));
  const field = Object.entries(fields).find(([, pattern]) => pattern.test(err.message))?.[0] ?? 'form';
  return { field, message: message.charAt(0).toUpperCase() + message.slice(1) };
}

const text = (body: Record<string, unknown>, name: string, max = 2000) => (typeof body[name] === 'string' ? (body[name] as string).slice(0, max) : '');
const lines = (value: string) => value.split(/\s+/).map((l) => l.trim()).filter(Boolean);

export function consoleRoutes(deps: ConsoleDeps) {
  const { provider, accounts, views, csrf, ops, activity, store, issuer, clientId } = deps;
  const callback = `${issuer}/admin/callback`;
  const router = new Router({ prefix: '/admin' });
  const form = formBody();
  const sameOrigin = sameOriginForms(issuer, views, FORM_EXPIRED);

  function render(ctx: Context, who: Admin, view: string, data: Record<string, unknown>) {
    // The page showing a secret loads the copy button's script (same origin only, as every page's CSP allows).
    views.render(ctx, `admin/${view}`, { csrf: csrf.token(who.csrfScope), me: who.account.email, path: ctx.path, ...data });
  }

  function notFound(ctx: Context, what: string) {
    ctx.status = 404;
    views.renderError(ctx, { error: 'invalid_request', error_description: `${what} does not exist (any more)` });
  }

  function toSignIn(ctx: Context, stepUp: boolean) {
    ctx.status = 303;
    ctx.redirect(ownSignInUrl(issuer, clientId, callback, { acr_values: ACR_MFA, ...(stepUp ? { prompt: 'login' } : {}) }));
  }

  /** The signed-in admin, or the answer is given: sign in, step up, or 403. */
  const admin: Middleware = async (ctx, next) => {
    const session = await provider.Session.get(ctx as never);
    const account = session.accountId ? await accounts.find(session.accountId) : undefined;
    if (!account || account.disabled) return toSignIn(ctx, false);
    if (session.acr !== ACR_MFA) return toSignIn(ctx, true);
    if (account.admin !== true) {
      ctx.status = 403;
      return views.render(ctx, 'admin/forbidden', { title: 'Not an admin', email: account.email });
    }
    const who: Admin = { account, actor: { kind: 'account', accountId: account.id }, csrfScope: `admin:${session.uid ?? account.id}` };
    ctx.state.admin = who;
    if (ctx.method === 'POST' && !csrf.verify(who.csrfScope, (ctx.request.body as Record<string, unknown> | undefined)?._csrf)) {
      ctx.status = 403;
      return views.renderError(ctx, { error: 'invalid_request', error_description: FORM_EXPIRED });
    }
    await next();
  };
  const post = [sameOrigin, form, admin];
  const whoOf = (ctx: Context) => ctx.state.admin as Admin;
  const bodyOf = (ctx: Context) => (ctx.request.body ?? {}) as Record<string, unknown>;
  const redirect = (ctx: Context, to: string) => {
    ctx.status = 303;
    ctx.redirect(to);
  };
  const badCursor = (ctx: Context, pattern = CURSOR) => {
    const value = ctx.query.cursor;
    if (value === undefined || (typeof value === 'string' && pattern.test(value))) return false;
    ctx.status = 400;
    views.renderError(ctx, { error: 'invalid_request', error_description: 'that page link is not valid; start from the first page' });
    return true;
  };

  router.get('/callback', async (ctx) => {
    if (typeof ctx.query.error === 'string') {
      ctx.status = 400;
      return views.renderError(ctx, { error: ctx.query.error === 'access_denied' ? 'access_denied' : 'invalid_request', error_description: 'the sign-in did not finish' });
    }
    redirect(ctx, '/admin');
  });

  // ---- Overview ----

  router.get('/', admin, async (ctx) => {
    const storageUp = await store.ping().then(() => true, () => false);
    const counts = storageUp ? await recentCounts(activity) : undefined;
    render(ctx, whoOf(ctx), 'overview', { title: 'Overview', storageUp, counts });
  });

  // ---- Applications ----

  /** This server's own clients (the console, the account page, the APIs' introspection clients) are not managed here. */
  async function builtIn(client: { client_id: string; resource_server?: string }) {
    return client.client_id === clientId || client.resource_server !== undefined || client.client_id === (await store.get(keys.accountPageClient));
  }

  router.get('/apps', admin, async (ctx) => {
    if (badCursor(ctx)) return;
    const page = await ops.clientPage({ cursor: ctx.query.cursor as string | undefined, limit: PAGE });
    const shown = [];
    for (const client of page.clients) if (!(await builtIn(client))) shown.push(client);
    render(ctx, whoOf(ctx), 'apps', { title: 'Applications', clients: shown, next: page.next });
  });

  const appForm = (ctx: Context, values: Record<string, string>, errors: Record<string, string> = {}) =>
    render(ctx, whoOf(ctx), 'app-new', { title: 'New application', values, errors });

  router.get('/apps/new', admin, async (ctx) => appForm(ctx, { kind: 'web', scope: 'openid profile email' }));

  router.post('/apps', ...post, async (ctx) => {
    const body = bodyOf(ctx);
    const values = { name: text(body, 'name', 200).trim(), kind: text(body, 'kind', 20), redirect_uris: text(body, 'redirect_uris'), scope: text(body, 'scope').trim(), first_party: text(body, 'first_party', 3), require_mfa: text(body, 'require_mfa', 3) };
    const errors: Record<string, string> = {};
    if (!values.name) errors.name = 'Give the application a name: people see it when they sign in.';
    const kind = KINDS[values.kind];
    if (!kind) errors.kind = 'Choose what kind of application it is.';
    if (!values.scope) errors.scope = 'Name at least one scope, such as openid.';
    if (Object.keys(errors).length || !kind) {
      ctx.status = 400;
      return appForm(ctx, values, errors);
    }
    try {
      const created = await ops.createClient(whoOf(ctx).actor, {
        name: values.name, grants: kind.grants, public: kind.public, scope: values.scope,
        ...(kind.grants.includes('authorization_code') ? { redirectUris: lines(values.redirect_uris) } : {}),
        firstParty: values.first_party === 'on', requireMfa: values.require_mfa === 'on',
      });
      render(ctx, whoOf(ctx), 'secret', { title: 'Application created', heading: `${created.client.client_name} is ready`, clientId: created.client.client_id, secret: created.client_secret, back: `/admin/apps/${encodeURIComponent(created.client.client_id)}` });
    } catch (err) {
      const problem = fieldError(err, { redirect_uris: /redirect/i, scope: /scope/i, kind: /grant|public|native|client_credentials/i, name: /name/i });
      if (!problem) throw err;
      ctx.status = 400;
      appForm(ctx, values, { [problem.field]: problem.message });
    }
  });

  async function appPage(ctx: Context, id: string, extra: Record<string, unknown> = {}) {
    const client = await ops.client(id).catch((err: unknown) => (err instanceof OperationError ? undefined : Promise.reject(err)));
    if (!client || (await builtIn(client))) return notFound(ctx, 'That application');
    render(ctx, whoOf(ctx), 'app', { title: client.client_name ?? client.client_id, client, errors: {}, ...extra });
  }

  router.get('/apps/:id', admin, (ctx) => appPage(ctx, ctx.params.id!));

  const manageable: Middleware = async (ctx, next) => {
    const client = await ops.client(ctx.params.id!).catch((err: unknown) => (err instanceof OperationError ? undefined : Promise.reject(err)));
    if (!client || (await builtIn(client))) return notFound(ctx, 'That application');
    await next();
  };

  router.post('/apps/:id/redirect-uris', ...post, manageable, async (ctx) => {
    const value = text(bodyOf(ctx), 'redirect_uris');
    try {
      await ops.updateClient(whoOf(ctx).actor, ctx.params.id!, { redirectUris: lines(value) });
      await appPage(ctx, ctx.params.id!, { notice: 'Redirect URIs saved.' });
    } catch (err) {
      if (err instanceof OperationError && err.status === 404) return notFound(ctx, 'That application');
      const problem = fieldError(err, { redirect_uris: /./ });
      if (!problem) throw err;
      ctx.status = 400;
      await appPage(ctx, ctx.params.id!, { errors: { redirect_uris: problem.message }, redirectValue: value });
    }
  });

  /** A destructive post names what it destroys; without the box ticked, nothing happens. */
  function confirmed(ctx: Context): boolean {
    return bodyOf(ctx).confirm === 'yes';
  }

  router.post('/apps/:id/secret', ...post, manageable, async (ctx) => {
    const id = ctx.params.id!;
    if (!confirmed(ctx)) {
      ctx.status = 400;
      return appPage(ctx, id, { errors: { rotate: 'Tick the box to confirm: the current secret stops working at once.' } });
    }
    try {
      const rotated = await ops.rotateClientSecret(whoOf(ctx).actor, id);
      render(ctx, whoOf(ctx), 'secret', { title: 'New secret', heading: 'New client secret', clientId: id, secret: rotated.client_secret, back: `/admin/apps/${encodeURIComponent(id)}` });
    } catch (err) {
      if (err instanceof OperationError && err.status === 404) return notFound(ctx, 'That application');
      const problem = fieldError(err, {});
      if (!problem) throw err;
      ctx.status = 400;
      await appPage(ctx, id, { errors: { rotate: problem.message } });
    }
  });

  router.post('/apps/:id/delete', ...post, manageable, async (ctx) => {
    const id = ctx.params.id!;
    if (!confirmed(ctx)) {
      ctx.status = 400;
      return appPage(ctx, id, { errors: { delete: 'Tick the box to confirm the deletion.' } });
    }
    try {
      await ops.deleteClient(whoOf(ctx).actor, id);
      redirect(ctx, '/admin/apps');
    } catch (err) {
      if (err instanceof OperationError && err.status === 404) return notFound(ctx, 'That application');
      const problem = fieldError(err, {});
      if (!problem) throw err;
      ctx.status = 400;
      await appPage(ctx, id, { errors: { delete: problem.message } });
    }
  });

  // ---- APIs ----

  router.get('/apis', admin, async (ctx) => {
    render(ctx, whoOf(ctx), 'apis', { title: 'APIs', resources: await ops.resources() });
  });

  const apiForm = (ctx: Context, values: Record<string, string>, errors: Record<string, string> = {}) =>
    render(ctx, whoOf(ctx), 'api-new', { title: 'New API', values, errors });

  router.get('/apis/new', admin, (ctx) => apiForm(ctx, { token_format: 'opaque', ttl: '3600' }));

  router.post('/apis', ...post, async (ctx) => {
    const body = bodyOf(ctx);
    const values = { uri: text(body, 'uri').trim(), scope: text(body, 'scope').trim(), token_format: text(body, 'token_format', 10), ttl: text(body, 'ttl', 10).trim() };
    const ttl = Number(values.ttl);
    const errors: Record<string, string> = {};
    if (!values.uri) errors.uri = 'Give the API its identifier, an absolute URI such as https://api.example.com.';
    if (!values.scope) errors.scope = 'Name at least one scope, such as api:read.';
    if (values.token_format !== 'opaque' && values.token_format !== 'jwt') errors.token_format = 'Choose opaque or JWT.';
    if (!/^\d{1,6}$/.test(values.ttl) || ttl < 60 || ttl > 86400) errors.ttl = 'A whole number of seconds between 60 and 86400.';
    if (Object.keys(errors).length) {
      ctx.status = 400;
      return apiForm(ctx, values, errors);
    }
    try {
      const created = await ops.createResource(whoOf(ctx).actor, { uri: values.uri, scope: values.scope, tokenFormat: values.token_format as 'opaque' | 'jwt', ttl });
      render(ctx, whoOf(ctx), 'secret', {
        title: 'API created', heading: `${created.resource.resource} is ready`, clientId: created.resource.client_id, secret: created.client_secret,
        explain: 'The API uses this client id and secret to introspect the access tokens it receives.', back: `/admin/apis/${encodeURIComponent(created.resource.resource)}`,
      });
    } catch (err) {
      const problem = fieldError(err, { uri: /uri|already exists/i, scope: /scope/i, ttl: /ttl/i, token_format: /token.format/i });
      if (!problem) throw err;
      ctx.status = err instanceof OperationError && err.status === 409 ? 409 : 400;
      apiForm(ctx, values, { [problem.field]: problem.message });
    }
  });

  async function apiPage(ctx: Context, uri: string, extra: Record<string, unknown> = {}) {
    const resource = (await ops.resources()).find((r) => r.resource === uri);
    if (!resource) return notFound(ctx, 'That API');
    render(ctx, whoOf(ctx), 'api', { title: uri, resource, errors: {}, ...extra });
  }

  router.get('/apis/:uri', admin, (ctx) => apiPage(ctx, ctx.params.uri!));

  router.post('/apis/:uri/delete', ...post, async (ctx) => {
    const uri = ctx.params.uri!;
    if (!confirmed(ctx)) {
      ctx.status = 400;
      return apiPage(ctx, uri, { errors: { delete: 'Tick the box to confirm the deletion.' } });
    }
    try {
      await ops.deleteResource(whoOf(ctx).actor, uri);
      redirect(ctx, '/admin/apis');
    } catch (err) {
      if (err instanceof OperationError && err.status === 404) return notFound(ctx, 'That API');
      throw err;
    }
  });

  // ---- Users ----

  router.get('/users', admin, async (ctx) => {
    if (badCursor(ctx)) return;
    const q = typeof ctx.query.q === 'string' ? ctx.query.q.trim().slice(0, 254) : '';
    const page = await ops.userPage({ cursor: ctx.query.cursor as string | undefined, limit: PAGE, ...(q ? { emailPrefix: q } : {}) });
    render(ctx, whoOf(ctx), 'users', { title: 'Users', users: page.users, next: page.next, q });
  });

  async function userPage(ctx: Context, id: string, extra: Record<string, unknown> = {}) {
    const account = await accounts.find(id);
    if (!account) return notFound(ctx, 'That user');
    // Factors as `user show` lists them: the app and every passkey; recovery codes come with either.
    const [{ sessions }, recoveryLeft, lockouts, { factors }] = await Promise.all([
      ops.userSessions(account.id),
      deps.secondFactor.recoveryCodesLeft(account),
      ops.lockouts(),
      ops.user(account.id),
    ]);
    // Connected apps: the apps this person granted access to (remembered consent), as on their account page.
    const apps = (await ops.connectedApps(account.id)).apps.map((a) => ({ id: a.client_id, name: a.name ?? a.client_id, scope: a.scope, granted: (a.granted ?? '').slice(0, 10), lastUsed: (a.last_used ?? '').slice(0, 10) }));
    render(ctx, whoOf(ctx), 'user', {
      title: account.email, user: userView(account), self: account.id === whoOf(ctx).account.id,
      factors: factors.map((f) => ({ ...f, created: f.created.slice(0, 10), lastUsed: 'last_used' in f && f.last_used ? f.last_used.slice(0, 10) : undefined })),
      hasRecovery: recoveryOf(account) !== undefined, recoveryLeft,
      sessions, apps, locked: lockouts.some((l) => (l as { accountId?: string }).accountId === account.id), errors: {}, ...extra,
    });
  }

  router.get('/users/:id', admin, (ctx) => userPage(ctx, ctx.params.id!));

  /** The person actions: each a form on the user's page; those that end something need the box ticked. */
  const ACTIONS: Record<string, { confirm: boolean; run: (actor: Actor, id: string, body: Record<string, unknown>) => Promise<unknown>; done: string }> = {
    disable: { confirm: true, run: (a, id) => ops.setUserDisabled(a, id, true), done: 'Disabled and signed out everywhere.' },
    enable: { confirm: true, run: (a, id) => ops.setUserDisabled(a, id, false), done: 'Enabled: they can sign in again.' },
    'reset-mfa': { confirm: true, run: (a, id) => ops.resetUserMfa(a, id), done: 'Second factor removed: they set one up at their next sign-in.' },
    unlock: { confirm: false, run: (a, id) => ops.unlockUser(a, id), done: 'Unlocked: failed attempts forgotten.' },
    'revoke-sessions': { confirm: true, run: (a, id) => ops.revokeUserSessions(a, id), done: 'Signed out everywhere.' },
    'grant-admin': { confirm: true, run: (a, id) => ops.setUserAdmin(a, id, true), done: 'Now an admin.' },
    'revoke-admin': { confirm: true, run: (a, id) => ops.setUserAdmin(a, id, false), done: 'No longer an admin.' },
    password: { confirm: false, run: (a, id, body) => ops.setUserPassword(a, id, text(body, 'password', 1024)), done: 'Password set; they were signed out everywhere.' },
    'revoke-app': { confirm: false, run: (a, id, body) => ops.revokeConnectedApp(a, id, text(body, 'client_id', 200)), done: 'Access removed: the app\'s tokens were revoked and it asks for consent at the next sign-in.' },
  };

  router.post('/users/:id/:action', ...post, async (ctx) => {
    const action = ACTIONS[ctx.params.action!];
    if (!action) return notFound(ctx, 'That action');
    const id = ctx.params.id!;
    const who = whoOf(ctx);
    const refuse = (message: string) => {
      ctx.status = 400;
      return userPage(ctx, id, { errors: { [ctx.params.action!]: message } });
    };
    if (!(await accounts.find(id))) return notFound(ctx, 'That user');
    if (action.confirm && !confirmed(ctx)) return refuse('Tick the box to confirm.');
    // An admin cannot lock themself out of the console by mistake; another admin can.
    if (id === who.account.id && ['disable', 'revoke-admin'].includes(ctx.params.action!)) return refuse('You cannot do this to your own account; ask another admin.');
    try {
      await action.run(who.actor, id, bodyOf(ctx));
    } catch (err) {
      const problem = fieldError(err, {});
      if (!problem) throw err;
      return refuse(problem.message);
    }
    await userPage(ctx, id, { notice: action.done });
  });

  // ---- Activity ----

  function activityFilter(ctx: Context): { filter: ActivityFilter; values: Record<'event' | 'person' | 'client' | 'from' | 'to', string>; errors: Record<string, string> } {
    const q = (name: string) => (typeof ctx.query[name] === 'string' ? (ctx.query[name] as string).trim().slice(0, 254) : '');
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
    const account = person.includes('@') ? await accounts.findByEmail(person) : await accounts.find(person);
    if (account) filter.accountId = account.id;
    return account !== undefined;
  }

  router.get('/activity', admin, async (ctx) => {
    if (badCursor(ctx, ACTIVITY_CURSOR)) return;
    const { filter, values, errors } = activityFilter(ctx);
    if (!(await personFilter(filter, values.person))) errors.person = 'No user with that email or id.';
    const search = new URLSearchParams(Object.entries(values).filter(([, v]) => v)).toString();
    if (Object.keys(errors).length) {
      ctx.status = 400;
      return render(ctx, whoOf(ctx), 'activity', { title: 'Activity', events: [], values, errors, eventNames: AUDIT_EVENTS, search });
    }
    const page = await activity.query(filter, { cursor: ctx.query.cursor as string | undefined, limit: PAGE });
    render(ctx, whoOf(ctx), 'activity', { title: 'Activity', events: page.events.map(describeEvent), next: page.next, values, errors, eventNames: AUDIT_EVENTS, search });
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

  // ---- Keys ----

  async function keysPage(ctx: Context, extra: Record<string, unknown> = {}) {
    render(ctx, whoOf(ctx), 'keys', { title: 'Signing keys', keys: await ops.signingKeys(), errors: {}, ...extra });
  }

  router.get('/keys', admin, (ctx) => keysPage(ctx));

  router.post('/keys/rotate', ...post, async (ctx) => {
    if (!confirmed(ctx)) {
      ctx.status = 400;
      return keysPage(ctx, { errors: { rotate: 'Tick the box to confirm the rotation.' } });
    }
    try {
      await ops.rotateSigningKeys(whoOf(ctx).actor);
    } catch (err) {
      if (!(err instanceof OperationError)) throw err;
      ctx.status = err.status;
      return keysPage(ctx, { errors: { rotate: err.message } });
    }
    await keysPage(ctx, { notice: 'Rotated: a new key signs from now on; the previous one still verifies until it retires.' });
  });

  return router;
}

/** One line per event for the activity table: who, what, and the fields besides. */
function describeEvent(e: Record<string, unknown>) {
  const { id: _id, time, event, msg, actor, source, accountId, clientId, ...rest } = e;
  const by = actor as { accountId?: string; clientId?: string; kind?: string } | undefined;
  return {
    time: String(time).replace('T', ' ').slice(0, 19), event, msg, accountId, clientId,
    actor: by?.accountId ? { href: `/admin/users/${encodeURIComponent(by.accountId)}`, label: 'an admin' } : { label: by ? by.clientId ?? by.kind : source },
    details: Object.entries(rest).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(' '),
  };
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

/** The page's own client (registry.ts `ensureOwnClient`). */
export function ensureConsoleClient(deps: { store: Store; registry: Registry; issuer: string }): Promise<string> {
  return ensureOwnClient(deps, { key: keys.adminConsoleClient, name: 'Latchkey console', callbackPath: '/admin/callback' });
}
