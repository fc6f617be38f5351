import Router from '@koa/router';
import type { Context } from 'koa';
import { Refusal } from '../problems.ts';
import type { Csrf } from '../security/csrf.ts';
import { formBody } from '../security/form-body.ts';
import { sameOriginForms } from '../security/same-origin.ts';
import type { Views } from '../views.ts';
import { SetupLinkDead, type FirstAdmin } from './first-admin.ts';

const FORM_EXPIRED = 'the setup form expired; open the setup link again';

/**
 * `/setup/:token`: the page of the one-time setup link (first-admin.ts). The token is checked before
 * anything is shown; a link that is used, expired or unknown, or any link once an admin exists, is a 404.
 * The post: same origin, a CSRF token bound to the link, a urlencoded body.
 */
export function setupRoutes(deps: { firstAdmin: FirstAdmin; views: Views; csrf: Csrf; issuer: string }) {
  const { firstAdmin, views, csrf, issuer } = deps;
  const router = new Router({ prefix: '/setup' });
  const scope = (token: string) => `setup:${token}`;

  const dead = (ctx: Context) => {
    ctx.status = 404;
    views.render(ctx, 'setup', { title: 'Setup link not valid', state: 'dead' });
  };
  const form = (ctx: Context, token: string, data: { email?: string; error?: string } = {}) =>
    views.render(ctx, 'setup', { title: 'Create the first admin', state: 'form', token, csrf: csrf.token(scope(token)), ...data });

  router.get('/:token', async (ctx) => {
    const { token } = ctx.params as { token: string };
    if (!(await firstAdmin.linkValid(token))) return dead(ctx);
    form(ctx, token);
  });

  router.post('/:token', sameOriginForms(issuer, views, FORM_EXPIRED), formBody(), async (ctx) => {
    const { token } = ctx.params as { token: string };
    if (!(await firstAdmin.linkValid(token))) return dead(ctx);
    const body = (ctx.request.body ?? {}) as Record<string, unknown>;
    if (!csrf.verify(scope(token), body._csrf)) {
      ctx.status = 403;
      return views.renderError(ctx, { error: 'invalid_request', error_description: FORM_EXPIRED });
    }
    const email = typeof body.email === 'string' ? body.email : '';
    const password = typeof body.password === 'string' ? body.password : '';
    if (!email.trim() || !password) {
      ctx.status = 400;
      return form(ctx, token, { email, error: 'Enter an email address and a password.' });
    }
    try {
      const account = await firstAdmin.complete(token, { email, password });
      views.render(ctx, 'setup', { title: 'The first admin is ready', state: 'done', email: account.email });
    } catch (err) {
      if (err instanceof SetupLinkDead) return dead(ctx);
      if (!(err instanceof Refusal)) throw err;
      ctx.status = err.status;
      form(ctx, token, { email, error: err.message.charAt(0).toUpperCase() + err.message.slice(1) });
    }
  });
  return router;
}
