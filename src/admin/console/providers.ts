import type { Context } from 'koa';
import { Refusal } from '../../problems.ts';
import { bodyOf, confirmed, done, fieldErrors, notFound, render, text, unlessGone, whoOf, type Kit } from './kit.ts';

/** The admin API's fields (and zod's paths) → the form's fields, so every refusal sits next to its input. */
const FIELDS: Record<string, string> = {
  id: 'id', preset: 'preset', tenant: 'tenant', name: 'name', issuer: 'issuer', client_id: 'client_id', client_secret: 'client_secret', scope: 'scope', display: 'display',
  allowed_domains: 'allowed_domains', 'claims.name': 'claim_name', 'claims.email': 'claim_email', 'claims.email_verified': 'claim_email_verified',
  authorization_endpoint: 'authorization_endpoint', token_endpoint: 'token_endpoint', api_base: 'api_base',
};
const WORDS: Record<string, string> = {
  'id:empty': 'Give it a short name: lower-case letters, digits or dashes, such as acme.',
  'client_id:empty': 'The client id the provider gave Latchkey.',
  'client_id:required': 'The client id the provider gave Latchkey.',
  'client_secret:empty': 'The client secret the provider gave Latchkey.',
  'client_secret:required': 'The client secret the provider gave Latchkey.',
  'allowed_domains:invalid_field': 'Domain names only, separated by spaces, such as acme.com.',
};
const PRESET_WORDS: Record<string, string> = { oidc: 'OpenID Connect', google: 'Google', entra: 'Microsoft Entra ID', github: 'GitHub' };
const CHANGED_WORDS: Record<string, string> = {
  name: 'button name', display: 'display', create_accounts: 'account creation', allowed_domains: 'allowed domains', claims: 'claim mapping', trusted_for_email: 'trusted for addresses',
  require_mfa: 'second factor', client_id: 'client id', client_secret: 'client secret', scope: 'scope', issuer: 'issuer',
  authorization_endpoint: 'authorization endpoint', token_endpoint: 'token endpoint', api_base: 'API base',
};

type Values = Record<string, string | boolean>;

/** What the form sent, as typed (shown again on a refusal; never the secret). */
function valuesOf(body: Record<string, unknown>): Values {
  const t = (name: string, max = 2000) => text(body, name, max).trim();
  return {
    id: t('id', 100), preset: t('preset', 20), tenant: t('tenant', 200), name: t('name', 200), issuer: t('issuer'), client_id: t('client_id', 600), scope: t('scope'),
    display: t('display', 10), allowed_domains: t('allowed_domains', 5000), claim_name: t('claim_name', 200), claim_email: t('claim_email', 200), claim_email_verified: t('claim_email_verified', 200),
    authorization_endpoint: t('authorization_endpoint'), token_endpoint: t('token_endpoint'), api_base: t('api_base'),
    create_accounts: body.create_accounts === 'on', trusted_for_email: body.trusted_for_email === 'on', require_mfa: body.require_mfa === 'on',
  };
}

/** The admin API body of the settings both forms share; empty text boxes are left out (the preset's value stays). */
function settingsOf(v: Values, body: Record<string, unknown>, preset: string) {
  const given = (name: string) => (typeof v[name] === 'string' && v[name] !== '' ? { [name]: v[name] } : {});
  const claims = { ...(v.claim_name ? { name: v.claim_name } : {}), ...(v.claim_email ? { email: v.claim_email } : {}), ...(v.claim_email_verified ? { email_verified: v.claim_email_verified } : {}) };
  const secret = text(body, 'client_secret', 2100);
  return {
    ...given('name'), ...given('issuer'), ...given('client_id'), ...given('scope'), ...given('display'),
    ...(secret !== '' ? { client_secret: secret } : {}),
    create_accounts: v.create_accounts, trusted_for_email: v.trusted_for_email, require_mfa: v.require_mfa,
    allowed_domains: String(v.allowed_domains).split(/[\s,]+/).filter(Boolean),
    ...(Object.keys(claims).length ? { claims } : {}),
    ...(preset === 'github' ? { ...given('authorization_endpoint'), ...given('token_endpoint'), ...given('api_base') } : {}),
  };
}

/** A provider's settings as the edit form shows them (the secret never). */
function valuesOfProvider(p: Awaited<ReturnType<Kit['ops']['provider']>>): Values {
  return {
    name: p.name, issuer: p.issuer, client_id: p.client_id, scope: p.scope, display: p.display, allowed_domains: p.allowed_domains.join(' '),
    claim_name: p.claims.name, claim_email: p.claims.email, claim_email_verified: p.claims.email_verified,
    authorization_endpoint: p.authorization_endpoint ?? '', token_endpoint: p.token_endpoint ?? '', api_base: p.api_base ?? '',
    create_accounts: p.create_accounts, trusted_for_email: p.trusted_for_email, require_mfa: p.require_mfa,
  };
}

const statusOf = (err: unknown) => (err instanceof Refusal && (err.status === 409 || err.status === 404) ? err.status : 400);

/** Sign-in providers (upstream OpenID Connect, Google, Entra ID, GitHub): list → detail with every setting → removal, and a new one. */
export function providersScreen(kit: Kit) {
  const { router, ops, admin, post } = kit;

  router.get('/providers', admin, async (ctx) => {
    render(kit, ctx, 'providers', { title: 'Sign-in providers', providers: await ops.providers(), presets: PRESET_WORDS });
  });

  const newForm = (ctx: Context, values: Values, errors: Record<string, string> = {}) => render(kit, ctx, 'provider-new', { title: 'New sign-in provider', values, errors, presets: PRESET_WORDS });

  router.get('/providers/new', admin, (ctx) => {
    const preset = typeof ctx.query.preset === 'string' && ctx.query.preset in PRESET_WORDS ? ctx.query.preset : 'oidc';
    newForm(ctx, { preset, id: preset === 'oidc' ? '' : preset, display: 'button', require_mfa: true });
  });

  router.post('/providers', ...post, async (ctx) => {
    const body = bodyOf(ctx);
    const values = valuesOf(body);
    const preset = String(values.preset);
    try {
      const { provider } = await ops.addProvider(whoOf(ctx).actor, {
        id: values.id, preset, ...(preset === 'entra' && values.tenant ? { tenant: values.tenant } : {}), ...settingsOf(values, body, preset),
        // A new provider needs its client id and secret: left empty, the schema says so next to the field.
        ...(values.client_id ? {} : { client_id: '' }), ...(text(body, 'client_secret', 1) ? {} : { client_secret: '' }),
      });
      done(ctx, `/admin/providers/${encodeURIComponent(provider.id)}`, `${provider.name} added. Its client secret is sealed and will not be shown again. Register ${kit.issuer}/upstream/callback as its redirect URI.`);
    } catch (err) {
      const errors = fieldErrors(err, FIELDS, 'form', WORDS);
      if (!errors) throw err;
      ctx.status = statusOf(err);
      newForm(ctx, values, errors);
    }
  });

  async function providerPage(ctx: Context, id: string, extra: Record<string, unknown> = {}) {
    const provider = await unlessGone(ops.provider(id));
    if (!provider) return notFound(kit, ctx, 'That sign-in provider');
    render(kit, ctx, 'provider', { title: provider.name, provider, presets: PRESET_WORDS, callback: `${kit.issuer}/upstream/callback`, values: valuesOfProvider(provider), errors: {}, ...extra });
  }

  router.get('/providers/:id', admin, (ctx) => providerPage(ctx, ctx.params.id!));

  router.post('/providers/:id/settings', ...post, async (ctx) => {
    const id = ctx.params.id!;
    const current = await unlessGone(ops.provider(id));
    if (!current) return notFound(kit, ctx, 'That sign-in provider');
    const body = bodyOf(ctx);
    const values = valuesOf(body);
    try {
      const { changed } = await ops.updateProvider(whoOf(ctx).actor, id, settingsOf(values, body, current.preset));
      // The form sends every setting: the flash names those whose value is new.
      const sent = settingsOf(values, body, current.preset) as Record<string, unknown>;
      const before = current as Record<string, unknown>;
      const unchanged = (name: string) => JSON.stringify(name === 'claims' ? { ...current.claims, ...(sent.claims as object) } : sent[name]) === JSON.stringify(before[name]);
      const really = changed.filter((c) => c === 'client_secret' || !unchanged(c));
      done(ctx, `/admin/providers/${encodeURIComponent(id)}`, really.length ? `Settings saved: ${really.map((c) => CHANGED_WORDS[c] ?? c).join(', ')}.${really.includes('client_secret') ? ' The new secret is sealed and will not be shown again.' : ''}` : 'Nothing changed.');
    } catch (err) {
      const errors = fieldErrors(err, FIELDS, 'settings', WORDS);
      if (!errors) throw err;
      if (err instanceof Refusal && err.status === 404) return notFound(kit, ctx, 'That sign-in provider');
      ctx.status = statusOf(err);
      await providerPage(ctx, id, { values, errors });
    }
  });

  router.post('/providers/:id/remove', ...post, async (ctx) => {
    const id = ctx.params.id!;
    if (!confirmed(ctx)) {
      ctx.status = 400;
      return providerPage(ctx, id, { errors: { remove: 'Tick the box to confirm the removal.' } });
    }
    if ((await unlessGone(ops.removeProvider(whoOf(ctx).actor, id))) === undefined) return notFound(kit, ctx, 'That sign-in provider');
    done(ctx, '/admin/providers', `Sign-in provider ${id} removed: people no longer see it.`);
  });
}
