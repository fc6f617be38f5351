import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import type Provider from 'oidc-provider';
import type { Accounts } from '../accounts/accounts.ts';
import type { SecondFactor } from '../accounts/second-factor.ts';
import { formBody } from '../security/form-body.ts';
import { ACR_MFA } from '../signin/policy.ts';
import type { ActivityLog } from '../observability/activity.ts';
import { ensureOwnClient, ownSignInUrl, type Registry } from '../oidc/registry.ts';
import type { Csrf } from '../security/csrf.ts';
import { sameOriginForms } from '../security/same-origin.ts';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';
import type { Views } from '../views.ts';
import { activityScreen } from './console/activity.ts';
import { apisScreen } from './console/apis.ts';
import { appsScreen } from './console/apps.ts';
import { keysScreen } from './console/keys.ts';
import { failed, notFound, problem, redirect, unlessGone, type Admin, type Kit } from './console/kit.ts';
import type { Logger } from '../observability/logger.ts';
import { overviewScreen } from './console/overview.ts';
import { providersScreen } from './console/providers.ts';
import { usersScreen } from './console/users.ts';
import type { Operations } from './operations.ts';

/**
 * The admin console (`/admin`): server-rendered pages over src/admin/operations.ts, the module the
 * admin API and the CLI call, so the console can do nothing the API cannot. Each screen is a file in
 * src/admin/console/ and reads and writes only through Operations; this file signs the admin in.
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
  /** Where a console page's unexpected failure is logged, with the request id its page shows. */
  logger: Logger;
  /** Whether any admin exists: without one, /admin explains how to make the first instead of asking to sign in. */
  adminExists?: () => Promise<boolean>;
}

const FORM_EXPIRED = 'the form expired; open the admin console again';

export function consoleRoutes(deps: ConsoleDeps) {
  const { provider, views, csrf, ops, activity, issuer, clientId } = deps;
  const callback = `${issuer}/admin/callback`;
  const router = new Router({ prefix: '/admin' });
  const sameOrigin = sameOriginForms(issuer, views, FORM_EXPIRED);

  function toSignIn(ctx: Context, stepUp: boolean) {
    ctx.status = 303;
    ctx.redirect(ownSignInUrl(issuer, clientId, callback, { acr_values: ACR_MFA, ...(stepUp ? { prompt: 'login' } : {}) }));
  }

  /** The signed-in admin, or the answer is given: sign in, step up, or 403. */
  const admin: Middleware = async (ctx, next) => {
    const session = await provider.Session.get(ctx);
    const account = session.accountId && !session.accountId.includes('@') ? await unlessGone(ops.findUser(session.accountId)) : undefined;
    if (!account && deps.adminExists && !(await deps.adminExists())) return views.render(ctx, 'admin/no-admin', { title: 'No admin yet' });
    if (!account || account.disabled) return toSignIn(ctx, false);
    if (session.acr !== ACR_MFA) return toSignIn(ctx, true);
    if (account.admin !== true) {
      ctx.status = 403;
      return views.render(ctx, 'admin/forbidden', { title: 'Not an admin', email: account.email });
    }
    const who: Admin = { account, actor: { kind: 'account', accountId: account.id }, csrfScope: `admin:${session.uid ?? account.id}` };
    ctx.state.admin = who;
    if (ctx.method === 'POST' && !csrf.verify(who.csrfScope, (ctx.request.body as Record<string, unknown> | undefined)?._csrf)) {
      return problem(kit, ctx, 403, 'Form expired', 'The form expired; open the admin console again.');
    }
    await next();
  };

  router.get('/callback', async (ctx) => {
    if (typeof ctx.query.error === 'string') {
      ctx.status = 400;
      return views.renderError(ctx, { error: ctx.query.error === 'access_denied' ? 'access_denied' : 'invalid_request', error_description: 'the sign-in did not finish' });
    }
    redirect(ctx, '/admin');
  });

  const kit: Kit = { router, ops, views, csrf, admin, post: [sameOrigin, formBody(), admin], embedded: deps.store.kind === 'memory', issuer };
  // First: a failure anywhere below (the guard's session read included) is a page inside the console's layout.
  router.use(async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      failed(kit, ctx, err, deps.logger);
    }
  });
  overviewScreen(kit);
  appsScreen(kit);
  apisScreen(kit);
  usersScreen(kit);
  providersScreen(kit);
  activityScreen(kit, activity);
  keysScreen(kit);
  // Last: any other console address is a 404 inside the console's layout.
  router.get('/{*rest}', admin, (ctx) => notFound(kit, ctx, 'That page'));
  return router;
}

/** The page's own client (registry.ts `ensureOwnClient`). */
export function ensureConsoleClient(deps: { store: Store; registry: Registry; issuer: string }): Promise<string> {
  return ensureOwnClient(deps, { key: keys.adminConsoleClient, name: 'Latchkey console', callbackPath: '/admin/callback' });
}
