import { StorageUnavailable } from '../storage/store.ts';
import type Koa from 'koa';
import { providerRouteOf as oidcRoute } from '../observability/metrics.ts';
import type { Registry } from './registry.ts';

/**
 * Answers of oidc-provider that common client libraries stumble on, made what the RFCs and those
 * libraries expect. Each is a Koa middleware that rewrites a finished answer (no bend of oidc-provider).
 * Rewrites that recognise oidc-provider's wording are bends by another name: provider-wording.ts.
 */
/** RFC 7009 §2.2 says only "200"; strict JSON clients (simple-oauth2) throw on an empty body. */
export async function revocationAnswersJson(ctx: Koa.Context, next: Koa.Next) {
  await next();
  if (oidcRoute(ctx) === 'revocation' && ctx.status === 200 && (ctx.body === '' || ctx.body == null)) ctx.body = {};
}

/**
 * Discovery lists the API scopes (except those of an API created with `--private-scopes`), so clients
 * that check `scopes_supported` before asking (oidc-agent, some SDKs) find them.
 */
export function discoveryListsApiScopes(registry: Registry) {
  // Discovery needs no storage otherwise: during an outage it still answers, with the API scopes last read.
  let lastKnown: string[] = [];
  return async function apiScopesInDiscovery(ctx: Koa.Context, next: Koa.Next) {
    await next();
    const body = ctx.body as { scopes_supported?: unknown } | undefined;
    if (oidcRoute(ctx) !== 'discovery' || ctx.status !== 200 || !Array.isArray(body?.scopes_supported)) return;
    try {
      const apis = await registry.listResources();
      lastKnown = apis.filter((api) => !api.privateScopes).flatMap((api) => api.scopes);
    } catch (err) {
      if (!(err instanceof StorageUnavailable)) throw err;
    }
    const listed: unknown[] = body.scopes_supported;
    body.scopes_supported = [...new Set([...listed, ...lastKnown])];
  };
}
