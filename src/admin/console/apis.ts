import type { Context } from 'koa';
import { Refusal } from '../../problems.ts';
import { parseInput, resourceCreate } from '../inputs.ts';
import { bodyOf, confirmed, done, fieldErrors, notFound, render, text, unlessGone, whoOf, type Kit } from './kit.ts';

const API_FIELDS = { uri: 'uri', scope: 'scope', ttl: 'ttl', token_format: 'token_format' };
const API_WORDS = {
  'uri:empty': 'Give the API its identifier, an absolute URI such as https://api.example.com.',
  'scope:empty': 'Name at least one scope, such as api:read.',
  'token_format:token_format_unknown': 'Choose opaque or JWT.',
  'ttl:ttl_range': 'A whole number of seconds between 60 and 86400.',
};

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
    const values = { uri: text(body, 'uri').trim(), scope: text(body, 'scope').trim(), token_format: text(body, 'token_format', 10), ttl: text(body, 'ttl', 10).trim() };
    try {
      const input = parseInput(resourceCreate, { uri: values.uri, scope: values.scope, token_format: values.token_format, ttl: /^\d{1,6}$/.test(values.ttl) ? Number(values.ttl) : NaN });
      const created = await ops.createResource(whoOf(ctx).actor, { uri: input.uri, scope: input.scope, tokenFormat: input.token_format, ttl: input.ttl });
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
    render(kit, ctx, 'api', { title: uri, resource, errors: {}, ...extra });
  }

  router.get('/apis/:uri', admin, (ctx) => apiPage(ctx, ctx.params.uri!));

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
