import type { RouterContext, RouterMiddleware } from '@koa/router';
import type { Context } from 'koa';
import { DEVICE_CODE_GRANT, redirectUriProblem, type GrantType } from '../../oidc/registry.ts';
import { Refusal } from '../../problems.ts';
import { clientChangesOfBody, clientCreate, clientInputOfBody, clientUpdate, parseInput, secretRotate } from '../inputs.ts';
import { snippetsOf } from './integrate.ts';
import { badCursor, bodyOf, confirmed, done, fieldErrors, lines, notFound, PAGE, render, text, unlessGone, when, whoOf, type Kit } from './kit.ts';

/**
 * The kinds of application the wizard makes, each with its safe defaults (RFC 9700, RFC 8252, RFC 8628):
 * the grants, how it authenticates (`choice`: the form asks), what its redirect URIs may be, and the
 * scopes it starts with. Step 1 lists them, step 2 asks only what the kind needs.
 */
interface Kind {
  title: string;
  line: string;
  grants: GrantType[];
  method: 'client_secret_basic' | 'none' | 'choice';
  native?: boolean;
  /** `web`: back to a web address; `native`: a loopback port or the app's own scheme; absent: no browser comes back. */
  redirects?: 'web' | 'native';
  redirectDefault?: string;
  /** People sign in through it (first party, second factor apply). */
  people: boolean;
  /** Its scopes are chosen from the APIs' (a machine asks for no person's data). */
  apiScopes?: boolean;
  scope: string;
}

export const KINDS: Record<string, Kind> = {
  web: {
    title: 'Web app', line: 'Runs on a server that keeps a secret: signs people in and refreshes their tokens (code flow, PKCE).',
    grants: ['authorization_code', 'refresh_token'], method: 'client_secret_basic', redirects: 'web', people: true, scope: 'openid profile email offline_access',
  },
  spa: {
    title: 'Single-page app', line: 'Runs in the browser and cannot keep a secret: public, with PKCE.',
    grants: ['authorization_code'], method: 'none', redirects: 'web', people: true, scope: 'openid profile email',
  },
  native: {
    title: 'Native, desktop or CLI app', line: 'Installed on a device: public, with PKCE, back to a loopback port or its own URI scheme (RFC 8252).',
    grants: ['authorization_code', 'refresh_token'], method: 'none', native: true, redirects: 'native', redirectDefault: 'http://127.0.0.1/callback', people: true, scope: 'openid profile email offline_access',
  },
  device: {
    title: 'Device (TV, CLI)', line: 'Has no browser or keyboard: the person approves a code on another screen (device flow, RFC 8628).',
    grants: [DEVICE_CODE_GRANT, 'refresh_token'], method: 'choice', people: true, scope: 'openid profile email offline_access',
  },
  machine: {
    title: 'Machine to machine', line: 'A service with no people: gets tokens for your APIs with its secret (client credentials).',
    grants: ['client_credentials'], method: 'client_secret_basic', people: false, apiScopes: true, scope: '',
  },
};
const kindOf = (id: string) => (Object.hasOwn(KINDS, id) ? KINDS[id] : undefined);

/** The new-application form's fields for the admin API's (src/admin/inputs.ts), and its own words for a missing value. */
const APP_FIELDS = { client_name: 'name', grant_types: 'form', native: 'form', token_endpoint_auth_method: 'secret', redirect_uris: 'redirect_uris', scope: 'scope' };
const APP_WORDS = {
  'client_name:empty': 'Give the application a name: people see it when they sign in.',
  'scope:empty': 'Name at least one scope, such as openid.',
};
const MACHINE_WORDS = { ...APP_WORDS, 'scope:empty': 'Choose at least one API scope: a machine gets tokens for APIs only.' };

/** Every value a form field sent (a repeated field is an array), strings only. */
const many = (body: Record<string, unknown>, name: string) => (Array.isArray(body[name]) ? body[name] : [body[name]]).filter((v): v is string => typeof v === 'string').slice(0, 200);

/**
 * The redirect URIs' problems as the kind sees them, all at once (the registry stops at its first):
 * none given, the registry's own rules for each, and a single-page app's need of a web address.
 */
function redirectProblems(kind: Kind, uris: string[]): string | undefined {
  if (!uris.length) return 'Name at least one redirect URI: where people come back after signing in.';
  for (const uri of uris) {
    const problem = redirectUriProblem(uri, 'redirect_uris', kind.method === 'none');
    if (problem) return fieldErrors(problem, { redirect_uris: 'redirect_uris' })?.redirect_uris;
    if (kind.redirects === 'web' && kind.method === 'none' && !/^https?:/i.test(uri)) return 'A single-page app comes back to a web address: https, or http://localhost while developing. For an app\'s own URI scheme, choose a native app.';
  }
  return undefined;
}

/** The settings form's fields (views/admin/app.eta), and the admin API's field each one is. */
const SETTINGS = ['name', 'redirect_uris', 'post_logout_redirect_uris', 'scope', 'first_party', 'token_endpoint_auth_method', 'require_mfa', 'require_par', 'pkce', 'refresh_grace', 'backchannel_logout_uri'] as const;
const SETTING_FIELDS = {
  client_name: 'name', redirect_uris: 'redirect_uris', post_logout_redirect_uris: 'post_logout_redirect_uris', scope: 'scope', first_party: 'first_party', require_mfa: 'require_mfa',
  require_pushed_authorization_requests: 'require_par', pkce: 'pkce', refresh_grace_seconds: 'refresh_grace', backchannel_logout_uri: 'backchannel_logout_uri',
  // Grants are not on the form: a refusal of them comes from a change of the authentication method (a public machine).
  token_endpoint_auth_method: 'token_endpoint_auth_method', grant_types: 'token_endpoint_auth_method',
};
/** Operations' names of what changed, as the flash says them. */
const CHANGED_WORDS: Record<string, string> = {
  name: 'name', redirectUris: 'redirect URIs', postLogoutRedirectUris: 'post-logout redirect URIs', scope: 'scopes', firstParty: 'first party', public: 'authentication method', secretIn: 'authentication method', requireMfa: 'second factor',
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

  const appForm = async (ctx: Context, kindId: string, values: Record<string, string>, errors: Record<string, string> = {}) => {
    const kind = kindOf(kindId)!;
    // A machine's scopes are the APIs' (the admin API's too: automation may be a machine).
    const apis = kind.apiScopes ? (await ops.resources()).map((r) => ({ uri: r.resource, scopes: r.scope.split(' ') })) : [];
    render(kit, ctx, 'app-new', { title: `New application: ${kind.title}`, kindId, kind, apis, values, errors });
  };

  // Step 1: the kind. Each card is a link to its form, so no script is needed.
  router.get('/apps/new', admin, (ctx) => render(kit, ctx, 'app-kinds', { title: 'New application', kinds: Object.entries(KINDS).map(([id, k]) => ({ id, ...k })) }));

  // Step 2: only what the kind needs, its safe defaults filled in.
  router.get('/apps/new/:kind', admin, async (ctx) => {
    const kind = kindOf(ctx.params.kind!);
    if (!kind) return notFound(kit, ctx, 'That kind of application');
    await appForm(ctx, ctx.params.kind!, { scope: kind.scope, redirect_uris: kind.redirectDefault ?? '', secret: 'none' });
  });

  router.post('/apps', ...post, async (ctx) => {
    const body = bodyOf(ctx);
    const kindId = text(body, 'kind', 20);
    const kind = kindOf(kindId);
    if (!kind) {
      ctx.status = 400;
      return render(kit, ctx, 'app-kinds', { title: 'New application', kinds: Object.entries(KINDS).map(([id, k]) => ({ id, ...k })), error: 'Choose what kind of application it is.' });
    }
    const scopes = many(body, 'scopes');
    const values = {
      name: text(body, 'name', 200).trim(), redirect_uris: text(body, 'redirect_uris', 20000), scope: kind.apiScopes ? scopes.join(' ') : text(body, 'scope').trim(),
      first_party: text(body, 'first_party', 3), require_mfa: text(body, 'require_mfa', 3), secret: text(body, 'secret', 40),
    };
    const method = kind.method === 'choice' ? values.secret : kind.method;
    const uris = kind.redirects ? lines(values.redirect_uris) : [];
    // The kind's fields mapped onto the operation's input, and the redirect URIs checked with them: every error at once.
    const errors: Record<string, string> = {};
    let input;
    try {
      input = parseInput(clientCreate, {
        client_name: values.name, grant_types: kind.grants, scope: values.scope, token_endpoint_auth_method: method,
        ...(kind.native ? { native: true } : {}), ...(kind.redirects ? { redirect_uris: uris } : {}),
        ...(kind.people ? { first_party: values.first_party === 'on', require_mfa: values.require_mfa === 'on' } : {}),
      });
    } catch (err) {
      const found = fieldErrors(err, APP_FIELDS, 'form', kind.apiScopes ? MACHINE_WORDS : APP_WORDS);
      if (!found) throw err;
      Object.assign(errors, found);
    }
    const uriProblem = kind.redirects ? redirectProblems(kind, uris) : undefined;
    if (uriProblem) errors.redirect_uris ??= uriProblem;
    if (Object.keys(errors).length || !input) {
      ctx.status = 400;
      return appForm(ctx, kindId, values, errors);
    }
    try {
      const created = await ops.createClient(whoOf(ctx).actor, clientInputOfBody(input));
      const base = `/admin/apps/${encodeURIComponent(created.client.client_id)}`;
      render(kit, ctx, 'secret', { title: 'Application created', heading: `${created.client.client_name} is ready`, clientId: created.client.client_id, secret: created.client_secret, back: base, integrate: `${base}#integrate` });
    } catch (err) {
      const problems = fieldErrors(err, APP_FIELDS);
      if (!problems) throw err;
      ctx.status = 400;
      await appForm(ctx, kindId, values, problems);
    }
  });

  async function appPage(ctx: Context, id: string, extra: Record<string, unknown> = {}) {
    const client = await unlessGone(ops.client(id));
    if (!client || (await ops.isOwnClient(client))) return notFound(kit, ctx, 'That application');
    const values = {
      name: client.client_name ?? '', redirect_uris: client.redirect_uris.join('\n'), post_logout_redirect_uris: client.post_logout_redirect_uris.join('\n'), scope: client.scope,
      first_party: client.first_party ? 'on' : '', token_endpoint_auth_method: String(client.token_endpoint_auth_method ?? 'client_secret_basic'),
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
    const people = interactive || client.grant_types.includes(DEVICE_CODE_GRANT);
    const grace = values.refresh_grace!.trim();
    try {
      const input = parseInput(clientUpdate, {
        client_name: values.name, scope: values.scope, require_mfa: values.require_mfa === 'on',
        ...(people ? { first_party: values.first_party === 'on' } : {}),
        // A native app is public whatever is sent; left out, the method stays.
        ...(!client.native && values.token_endpoint_auth_method ? { token_endpoint_auth_method: values.token_endpoint_auth_method } : {}),
        ...(interactive ? {
          redirect_uris: lines(values.redirect_uris!), post_logout_redirect_uris: lines(values.post_logout_redirect_uris!),
          require_pushed_authorization_requests: values.require_par === 'on', backchannel_logout_uri: values.backchannel_logout_uri!.trim() || null,
          ...(client.public ? {} : { pkce: values.pkce }),
        } : {}),
        ...(client.grant_types.includes('refresh_token') ? { refresh_grace_seconds: grace === '' ? 0 : /^\d{1,9}$/.test(grace) ? Number(grace) : NaN } : {}),
      });
      const updated = await ops.updateClient(whoOf(ctx).actor, id, clientChangesOfBody(input));
      const base = `/admin/apps/${encodeURIComponent(id)}`;
      const saved = `Settings saved: ${[...new Set(updated.changed.map((c) => CHANGED_WORDS[c] ?? c))].join(', ')}.`;
      // Made confidential: its new secret is this answer's, shown once (never in a flash).
      if (updated.client_secret) {
        return render(kit, ctx, 'secret', { title: 'New secret', heading: 'New client secret', clientId: id, secret: updated.client_secret, explain: `${saved} ${updated.client.client_name ?? id} now authenticates with a secret (${updated.client.token_endpoint_auth_method}).`, back: base, integrate: `${base}#integrate` });
      }
      const lost = client.public === false && updated.client.public ? ' It is public now: its secret no longer exists.' : '';
      done(ctx, base, updated.changed.length ? `${saved}${lost}` : 'Nothing changed.');
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
