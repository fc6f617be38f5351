import type { RouterContext, RouterMiddleware } from '@koa/router';
import type { Context } from 'koa';
import type { GrantType } from '../../oidc/registry.ts';
import { Refusal } from '../../problems.ts';
import { clientChangesOfBody, clientCreate, clientInputOfBody, clientUpdate, parseInput, secretRotate } from '../inputs.ts';
import { snippetsOf } from './integrate.ts';
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

/** The settings form's fields (views/admin/app.eta), and the admin API's field each one is. */
const SETTINGS = ['name', 'redirect_uris', 'post_logout_redirect_uris', 'scope', 'require_mfa', 'require_par', 'pkce', 'refresh_grace', 'backchannel_logout_uri'] as const;
const SETTING_FIELDS = {
  client_name: 'name', redirect_uris: 'redirect_uris', post_logout_redirect_uris: 'post_logout_redirect_uris', scope: 'scope', require_mfa: 'require_mfa',
  require_pushed_authorization_requests: 'require_par', pkce: 'pkce', refresh_grace_seconds: 'refresh_grace', backchannel_logout_uri: 'backchannel_logout_uri',
};
/** Operations' names of what changed, as the flash says them. */
const CHANGED_WORDS: Record<string, string> = {
  name: 'name', redirectUris: 'redirect URIs', postLogoutRedirectUris: 'post-logout redirect URIs', scope: 'scopes', requireMfa: 'second factor',
  requirePar: 'PAR', pkce: 'PKCE', refreshGrace: 'refresh grace', backchannelLogoutUri: 'back-channel logout URI',
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
    const values = {
      name: client.client_name ?? '', redirect_uris: client.redirect_uris.join('\n'), post_logout_redirect_uris: client.post_logout_redirect_uris.join('\n'), scope: client.scope,
      require_mfa: client.require_mfa ? 'on' : '', require_par: client.require_pushed_authorization_requests ? 'on' : '', pkce: client.pkce,
      refresh_grace: String(client.refresh_grace_seconds), backchannel_logout_uri: client.backchannel_logout_uri ?? '',
    };
    const integrate = { issuer: kit.issuer, discovery: `${kit.issuer}/.well-known/openid-configuration`, snippets: client.grant_types.includes('authorization_code') ? snippetsOf(client, kit.issuer) : [] };
    render(kit, ctx, 'app', { title: client.client_name ?? client.client_id, client, errors: {}, values, integrate, ...extra });
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

  router.post('/apps/:id/settings', ...post, manageable, async (ctx) => {
    const id = ctx.params.id!;
    const client = await ops.client(id);
    const body = bodyOf(ctx);
    const values: Record<string, string> = {};
    for (const name of SETTINGS) values[name] = text(body, name, name.endsWith('uris') ? 20000 : 2000);
    // Every field the client's kind has, mapped onto the admin API's update and checked in one pass.
    const interactive = client.grant_types.includes('authorization_code');
    const grace = values.refresh_grace!.trim();
    try {
      const input = parseInput(clientUpdate, {
        client_name: values.name, scope: values.scope, require_mfa: values.require_mfa === 'on',
        ...(interactive ? {
          redirect_uris: lines(values.redirect_uris!), post_logout_redirect_uris: lines(values.post_logout_redirect_uris!),
          require_pushed_authorization_requests: values.require_par === 'on', backchannel_logout_uri: values.backchannel_logout_uri!.trim() || null,
          ...(client.public ? {} : { pkce: values.pkce }),
        } : {}),
        ...(client.grant_types.includes('refresh_token') ? { refresh_grace_seconds: grace === '' ? 0 : /^\d{1,9}$/.test(grace) ? Number(grace) : NaN } : {}),
      });
      const { changed } = await ops.updateClient(whoOf(ctx).actor, id, clientChangesOfBody(input));
      done(ctx, `/admin/apps/${encodeURIComponent(id)}`, changed.length ? `Settings saved: ${changed.map((c) => CHANGED_WORDS[c] ?? c).join(', ')}.` : 'Nothing changed.');
    } catch (err) {
      if (!(err instanceof Refusal) || err.status === 404) return refused(ctx, err, 'settings');
      ctx.status = 400;
      await appPage(ctx, id, { values, errors: fieldErrors(err, SETTING_FIELDS, 'settings', APP_WORDS) });
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
