import type { RouterContext, RouterMiddleware } from '@koa/router';
import type { Context } from 'koa';
import type { GrantType } from '../../oidc/registry.ts';
import { clientCreate, clientInputOfBody, parseInput, secretRotate } from '../inputs.ts';
import { badCursor, bodyOf, confirmed, done, fieldErrors, lines, notFound, PAGE, render, text, unlessGone, when, whoOf, type Kit } from './kit.ts';

/** A client's kind on the form, and the grants it means. */
const KINDS: Record<string, { grants: GrantType[]; public: boolean }> = {
  web: { grants: ['authorization_code', 'refresh_token'], public: false },
  spa: { grants: ['authorization_code'], public: true },
  machine: { grants: ['client_credentials'], public: false },
};

/** The new-application form's fields for the admin API's (src/admin/inputs.ts), and its own words for a missing value. */
const APP_FIELDS = { client_name: 'name', grant_types: 'kind', native: 'kind', token_endpoint_auth_method: 'kind', redirect_uris: 'redirect_uris', scope: 'scope' };
const APP_WORDS = {
  'client_name:empty': 'Give the application a name: people see it when they sign in.',
  'scope:empty': 'Name at least one scope, such as openid.',
};

/** Applications: list → detail → actions (redirect URIs, secret rotation, deletion). */
export function appsScreen(kit: Kit) {
  const { router, ops, admin, post } = kit;

  router.get('/apps', admin, async (ctx) => {
    if (badCursor(kit, ctx)) return;
    const page = await ops.clientPage({ cursor: ctx.query.cursor as string | undefined, limit: PAGE });
    const shown = [];
    for (const client of page.clients) if (!(await ops.isOwnClient(client))) shown.push(client);
    render(kit, ctx, 'apps', { title: 'Applications', clients: shown, next: page.next });
  });

  const appForm = (ctx: Context, values: Record<string, string>, errors: Record<string, string> = {}) => render(kit, ctx, 'app-new', { title: 'New application', values, errors });

  router.get('/apps/new', admin, async (ctx) => appForm(ctx, { kind: 'web', scope: 'openid profile email' }));

  router.post('/apps', ...post, async (ctx) => {
    const body = bodyOf(ctx);
    const values = { name: text(body, 'name', 200).trim(), kind: text(body, 'kind', 20), redirect_uris: text(body, 'redirect_uris'), scope: text(body, 'scope').trim(), first_party: text(body, 'first_party', 3), require_mfa: text(body, 'require_mfa', 3) };
    // The form's fields mapped onto the operation's input, checked in one pass: every error is shown at once.
    const kind = KINDS[values.kind];
    const errors: Record<string, string> = kind ? {} : { kind: 'Choose what kind of application it is.' };
    let input;
    try {
      input = parseInput(clientCreate, {
        client_name: values.name, grant_types: kind?.grants ?? ['authorization_code'], scope: values.scope,
        ...(kind?.public ? { token_endpoint_auth_method: 'none' } : {}),
        ...((kind?.grants ?? []).includes('authorization_code') ? { redirect_uris: lines(values.redirect_uris) } : {}),
        first_party: values.first_party === 'on', require_mfa: values.require_mfa === 'on',
      });
    } catch (err) {
      const found = fieldErrors(err, APP_FIELDS, 'form', APP_WORDS);
      if (!found) throw err;
      Object.assign(errors, found);
    }
    if (Object.keys(errors).length || !input) {
      ctx.status = 400;
      return appForm(ctx, values, errors);
    }
    try {
      const created = await ops.createClient(whoOf(ctx).actor, clientInputOfBody(input));
      render(kit, ctx, 'secret', { title: 'Application created', heading: `${created.client.client_name} is ready`, clientId: created.client.client_id, secret: created.client_secret, back: `/admin/apps/${encodeURIComponent(created.client.client_id)}` });
    } catch (err) {
      const problems = fieldErrors(err, APP_FIELDS);
      if (!problems) throw err;
      ctx.status = 400;
      appForm(ctx, values, problems);
    }
  });

  async function appPage(ctx: Context, id: string, extra: Record<string, unknown> = {}) {
    const client = await unlessGone(ops.client(id));
    if (!client || (await ops.isOwnClient(client))) return notFound(kit, ctx, 'That application');
    render(kit, ctx, 'app', { title: client.client_name ?? client.client_id, client, errors: {}, ...extra });
  }

  router.get('/apps/:id', admin, (ctx) => appPage(ctx, ctx.params.id!));

  const manageable: RouterMiddleware = async (ctx, next) => {
    const client = await unlessGone(ops.client(ctx.params.id!));
    if (!client || (await ops.isOwnClient(client))) return notFound(kit, ctx, 'That application');
    await next();
  };

  /** A refusal of an action on the page: gone is 404, the rest is shown next to the action's form. */
  async function refused(ctx: RouterContext, err: unknown, action: string, extra: Record<string, unknown> = {}) {
    const problems = fieldErrors(err, {}, action);
    if (!problems) throw err;
    if ((err as { status?: number }).status === 404) return notFound(kit, ctx, 'That application');
    ctx.status = 400;
    await appPage(ctx, ctx.params.id!, { errors: problems, ...extra });
  }

  router.post('/apps/:id/redirect-uris', ...post, manageable, async (ctx) => {
    const value = text(bodyOf(ctx), 'redirect_uris');
    try {
      await ops.updateClient(whoOf(ctx).actor, ctx.params.id!, { redirectUris: lines(value) });
      done(ctx, `/admin/apps/${encodeURIComponent(ctx.params.id!)}`, 'Redirect URIs saved.');
    } catch (err) {
      await refused(ctx, err, 'redirect_uris', { redirectValue: value });
    }
  });

  router.post('/apps/:id/secret', ...post, manageable, async (ctx) => {
    const id = ctx.params.id!;
    const keepOld = text(bodyOf(ctx), 'keep_old', 20);
    if (!confirmed(ctx)) {
      ctx.status = 400;
      return appPage(ctx, id, { keepOld, errors: { rotate: 'Tick the box to confirm.' } });
    }
    try {
      const { keep_old_seconds: seconds } = parseInput(secretRotate, { keep_old_seconds: /^\d{1,9}$/.test(keepOld) ? Number(keepOld) : NaN });
      const rotated = await ops.rotateClientSecret(whoOf(ctx).actor, id, seconds);
      const old = rotated.old_secret_expires ? `The old secret keeps working until ${when(rotated.old_secret_expires)!.text}.` : 'The old secret no longer works.';
      render(kit, ctx, 'secret', { title: 'New secret', heading: 'New client secret', clientId: id, secret: rotated.client_secret, explain: old, back: `/admin/apps/${encodeURIComponent(id)}` });
    } catch (err) {
      await refused(ctx, err, 'rotate', { keepOld });
    }
  });

  router.post('/apps/:id/secret/old/revoke', ...post, manageable, async (ctx) => {
    const id = ctx.params.id!;
    if (!confirmed(ctx)) {
      ctx.status = 400;
      return appPage(ctx, id, { errors: { 'revoke-old': 'Tick the box to confirm.' } });
    }
    try {
      const { old_secret_revoked: revoked } = await ops.revokeOldClientSecret(whoOf(ctx).actor, id);
      done(ctx, `/admin/apps/${encodeURIComponent(id)}`, revoked ? 'The old secret no longer works.' : 'There was no old secret still working.');
    } catch (err) {
      await refused(ctx, err, 'revoke-old');
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
      done(ctx, '/admin/apps', 'Application deleted: its tokens no longer work.');
    } catch (err) {
      await refused(ctx, err, 'delete');
    }
  });
}
