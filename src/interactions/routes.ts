import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import type { Accounts } from '../accounts/accounts.ts';
import { formTargets } from '../oidc/provider.ts';
import { OIDC_SCOPES } from '../oidc/registry.ts';
import type { Csrf } from '../security/csrf.ts';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';
import type { Views } from '../views.ts';

/**
 * The sign-in flow as a small state machine: login → consent → done. Each step reads the
 * interaction from oidc-provider, and every route lists its guards in order.
 */
export interface InteractionDeps {
  provider: Provider;
  accounts: Accounts;
  store: Store;
  views: Views;
  csrf: Csrf;
}

const SCOPE_WORDS: Record<string, string> = {
  openid: 'Know who you are',
  profile: 'See your name',
  email: 'See your email address',
  offline_access: 'Stay connected while you are away, until you sign out or revoke it',
};

const CONSENT_TTL = 365 * 24 * 60 * 60;

type Details = Awaited<ReturnType<Provider['interactionDetails']>>;

export function interactionRoutes({ provider, accounts, store, views, csrf }: InteractionDeps) {
  const router = new Router({ prefix: '/interaction/:uid' });
  const form = bodyParser({ enableTypes: ['form'], formLimit: '16kb', encoding: 'utf-8' });

  /** A 400 that our error handler shows to the person as is. */
  function refuse(message: string): never {
    throw Object.assign(new Error(message), { status: 400, expose: true });
  }

  async function details(ctx: Context): Promise<Details> {
    const found = await provider.interactionDetails(ctx.req, ctx.res);
    if (found.uid !== ctx.params.uid) refuse('interaction mismatch');
    return found;
  }

  const requireCsrf = async (ctx: Context, next: () => Promise<unknown>) => {
    const body = ctx.request.body as Record<string, unknown> | undefined;
    if (!csrf.verify(ctx.params.uid!, body?._csrf)) {
      ctx.status = 403;
      views.renderError(ctx, { error: 'invalid_request', error_description: 'the form expired; go back to the application and start again' });
      return;
    }
    await next();
  };

  async function finish(ctx: Context, result: Record<string, unknown>, merge: boolean) {
    const to = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: merge });
    ctx.status = 303;
    ctx.redirect(to);
  }

  async function clientOf(d: Details) {
    return provider.Client.find(String(d.params.client_id));
  }

  function renderLogin(ctx: Context, d: Details, clientName: string | undefined, extra: Record<string, unknown> = {}) {
    views.render(ctx, 'login', { uid: d.uid, csrf: csrf.token(d.uid), clientName, title: 'Sign in', ...extra }, formTargets(d.params.redirect_uri));
  }

  /** The scopes to ask about: none for first-party clients, and none this person granted before. */
  async function scopesToAsk(d: Details, firstParty: boolean, missing: string[]) {
    if (firstParty) return [];
    const remembered = await store.get(keys.consent(String(d.session?.accountId), String(d.params.client_id)));
    const granted = new Set(remembered ? (JSON.parse(remembered) as string[]) : []);
    return missing.filter((s) => !granted.has(s));
  }

  function missingScopes(d: Details): string[] {
    const det = d.prompt.details as { missingOIDCScope?: string[]; missingResourceScopes?: Record<string, string[]> };
    return [...(det.missingOIDCScope ?? []), ...Object.values(det.missingResourceScopes ?? {}).flat()];
  }

  async function grantConsent(ctx: Context, d: Details) {
    const det = d.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
    const grant = d.grantId
      ? await provider.Grant.find(d.grantId)
      : new provider.Grant({ accountId: d.session!.accountId, clientId: String(d.params.client_id) });
    if (!grant) refuse('the grant of this sign-in is gone; start again');
    if (det.missingOIDCScope) grant.addOIDCScope(det.missingOIDCScope.join(' '));
    if (det.missingOIDCClaims) grant.addOIDCClaims(det.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(det.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
    const grantId = await grant.save();
    const key = keys.consent(String(d.session!.accountId), String(d.params.client_id));
    const before = await store.get(key);
    const all = new Set([...(before ? (JSON.parse(before) as string[]) : []), ...missingScopes(d)]);
    await store.set(key, JSON.stringify([...all]), { ttl: CONSENT_TTL });
    await finish(ctx, { consent: { grantId } }, true);
  }

  router.get('/', async (ctx) => {
    const d = await details(ctx);
    const client = await clientOf(d);
    if (!client) refuse('unknown client');
    if (d.prompt.name === 'login') return renderLogin(ctx, d, client.clientName);
    if (d.prompt.name === 'consent') {
      // Only the scopes not granted before are listed (README: asked again only for new scopes).
      const ask = await scopesToAsk(d, client.first_party === true, missingScopes(d));
      if (ask.length === 0) return grantConsent(ctx, d);
      const account = await accounts.find(String(d.session?.accountId));
      views.render(
        ctx,
        'consent',
        {
          uid: d.uid,
          csrf: csrf.token(d.uid),
          title: 'Allow access',
          clientName: client.clientName ?? client.clientId,
          email: account?.email,
          items: ask.map((s) => SCOPE_WORDS[s] ?? (OIDC_SCOPES.has(s) ? s : `Use the API with permission “${s}”`)),
        },
        formTargets(d.params.redirect_uri),
      );
      return;
    }
    refuse(`unsupported step ${d.prompt.name}`);
  });

  router.post('/login', form, requireCsrf, async (ctx) => {
    const d = await details(ctx);
    if (d.prompt.name !== 'login') refuse('this sign-in step is already done');
    const body = ctx.request.body as Record<string, unknown>;
    const email = typeof body.email === 'string' ? body.email.slice(0, 254) : '';
    const password = typeof body.password === 'string' ? body.password : '';
    const account = email && password ? await accounts.authenticate(email, password) : undefined;
    if (!account) {
      const client = await clientOf(d);
      // 200, not 401: a 401 needs a WWW-Authenticate challenge (RFC 9110 §15.5.2), and browsers log 4xx pages as console errors.
      ctx.status = 200;
      return renderLogin(ctx, d, client?.clientName, { error: 'Wrong email or password.', email });
    }
    await finish(ctx, { login: { accountId: account.id, amr: ['pwd'] } }, false);
  });

  router.post('/consent', form, requireCsrf, async (ctx) => {
    const d = await details(ctx);
    if (d.prompt.name !== 'consent') refuse('this sign-in step is already done');
    await grantConsent(ctx, d);
  });

  router.post('/abort', form, requireCsrf, async (ctx) => {
    await details(ctx);
    await finish(ctx, { error: 'access_denied', error_description: 'the person declined' }, false);
  });

  return router;
}
