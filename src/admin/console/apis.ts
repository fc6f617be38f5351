import type { Context } from 'koa';
import { Refusal } from '../../problems.ts';
import { parseInput, resourceCreate, resourceUpdate, scopeDescriptionsOfLines } from '../inputs.ts';
import { bodyOf, confirmed, done, fieldErrors, notFound, render, text, unlessGone, whoOf, type Kit } from './kit.ts';

const API_FIELDS = { uri: 'uri', scope: 'scope', ttl: 'ttl', token_format: 'token_format', scope_descriptions: 'scope_descriptions' };
const API_WORDS = {
  'uri:empty': 'Give the API its identifier, an absolute URI such as https://api.example.com.',
  'scope:empty': 'Name at least one scope, such as api:read.',
  'token_format:token_format_unknown': 'Choose opaque or JWT.',
  'ttl:ttl_range': 'A whole number of seconds between 60 and 86400.',
  'scope_descriptions:scope_description_form': 'Write one line per scope: the scope, =, then what it lets an app do.',
};
/** Operations' names of what changed, as the flash says them. */
const CHANGED_WORDS: Record<string, string> = { scopes: 'scopes', tokenFormat: 'token format', ttl: 'token lifetime', privateScopes: 'discovery listing', scopeDescriptions: 'scope descriptions' };

/** The descriptions box: one `scope = text` line per line (the CLI's `--scope-description` form). */
const descriptionLines = (value: string) => value.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
/** An API's descriptions as the box shows them: a line for every scope, empty after `=` where it has none. */
const descriptionsBox = (scopes: string[], descriptions: Record<string, string>) => scopes.map((s) => `${s} = ${Object.hasOwn(descriptions, s) ? descriptions[s] : ''}`.trimEnd()).join('\n');
/** A whole number of seconds as typed, or NaN (refused by the schema with the console's words). */
const secondsOf = (value: string) => (/^\d{1,6}$/.test(value) ? Number(value) : NaN);

/** APIs (resource servers): list → detail → deletion, and a new API. */
export function apisScreen(kit: Kit) {
  const { router, ops, admin, post } = kit;

  router.get('/apis', admin, async (ctx) => {
    render(kit, ctx, 'apis', { title: 'APIs', resources: await ops.resources() });
  });

  const apiForm = (ctx: Context, values: Record<string, string>, errors: Record<string, string> = {}) => render(kit, ctx, 'api-new', { title: 'New API', values, errors });

  router.get('/apis/new', admin, (ctx) => apiForm(ctx, { token_format: 'opaque', ttl: '3600' }));

  router.post('/apis', ...post, async (ctx) => {
    const body = bodyOf(ctx);
    const values = { uri: text(body, 'uri').trim(), scope: text(body, 'scope').trim(), token_format: text(body, 'token_format', 10), ttl: text(body, 'ttl', 10).trim(), scope_descriptions: text(body, 'scope_descriptions', 20000) };
    try {
      const input = parseInput(resourceCreate, { uri: values.uri, scope: values.scope, token_format: values.token_format, ttl: secondsOf(values.ttl), scope_descriptions: scopeDescriptionsOfLines(descriptionLines(values.scope_descriptions)) });
      const created = await ops.createResource(whoOf(ctx).actor, { uri: input.uri, scope: input.scope, tokenFormat: input.token_format, ttl: input.ttl, scopeDescriptions: input.scope_descriptions });
      render(kit, ctx, 'secret', {
        title: 'API created', heading: `${created.resource.resource} is ready`, clientId: created.resource.client_id, secret: created.client_secret,
        explain: 'The API uses this client id and secret to introspect the access tokens it receives.', back: `/admin/apis/${encodeURIComponent(created.resource.resource)}`,
      });
    } catch (err) {
      const problems = fieldErrors(err, API_FIELDS, 'form', API_WORDS);
      if (!problems) throw err;
      ctx.status = err instanceof Refusal && err.status === 409 ? 409 : 400;
      apiForm(ctx, values, problems);
    }
  });

  async function apiPage(ctx: Context, uri: string, extra: Record<string, unknown> = {}) {
    const resource = (await ops.resources()).find((r) => r.resource === uri);
    if (!resource) return notFound(kit, ctx, 'That API');
    const values = { scope: resource.scope, token_format: resource.token_format, ttl: String(resource.ttl), scope_descriptions: descriptionsBox(resource.scope.split(' '), resource.scope_descriptions) };
    render(kit, ctx, 'api', { title: uri, resource, values, errors: {}, ...extra });
  }

  router.get('/apis/:uri', admin, (ctx) => apiPage(ctx, ctx.params.uri!));

  router.post('/apis/:uri/settings', ...post, async (ctx) => {
    const uri = ctx.params.uri!;
    const resource = (await ops.resources()).find((r) => r.resource === uri);
    if (!resource) return notFound(kit, ctx, 'That API');
    const body = bodyOf(ctx);
    const values = { scope: text(body, 'scope').trim(), token_format: text(body, 'token_format', 10), ttl: text(body, 'ttl', 10).trim(), scope_descriptions: text(body, 'scope_descriptions', 20000) };
    try {
      // The box holds every description: one left out (of a scope that stays) is removed.
      const typed = scopeDescriptionsOfLines(descriptionLines(values.scope_descriptions)) ?? {};
      const staying = values.scope.split(/\s+/);
      const dropped = Object.keys(resource.scope_descriptions).filter((s) => staying.includes(s) && !Object.hasOwn(typed, s));
      const descriptions = { ...Object.fromEntries(dropped.map((s) => [s, null])), ...typed };
      const input = parseInput(resourceUpdate, { scope: values.scope, token_format: values.token_format, ttl: secondsOf(values.ttl), scope_descriptions: descriptions });
      const { changed } = await ops.updateResource(whoOf(ctx).actor, uri, { scope: input.scope, tokenFormat: input.token_format, ttl: input.ttl, scopeDescriptions: input.scope_descriptions });
      done(ctx, `/admin/apis/${encodeURIComponent(uri)}`, changed.length ? `Settings saved: ${changed.map((c) => CHANGED_WORDS[c] ?? c).join(', ')}.` : 'Nothing changed.');
    } catch (err) {
      const problems = fieldErrors(err, API_FIELDS, 'settings', API_WORDS);
      if (!problems) throw err;
      if (err instanceof Refusal && err.status === 404) return notFound(kit, ctx, 'That API');
      ctx.status = err instanceof Refusal && err.status === 409 ? 409 : 400;
      await apiPage(ctx, uri, { values, errors: problems });
    }
  });

  router.post('/apis/:uri/delete', ...post, async (ctx) => {
    const uri = ctx.params.uri!;
    if (!confirmed(ctx)) {
      ctx.status = 400;
      return apiPage(ctx, uri, { errors: { delete: 'Tick the box to confirm the deletion.' } });
    }
    if ((await unlessGone(ops.deleteResource(whoOf(ctx).actor, uri))) === undefined) return notFound(kit, ctx, 'That API');
    done(ctx, '/admin/apis', `${uri} deleted.`);
  });
}
