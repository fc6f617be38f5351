import type { Middleware } from 'koa';
import type { Views } from '../views.ts';

/** `Sec-Fetch-Site` values that name another origin: a sibling subdomain is not the issuer either. */
const FOREIGN_FETCH_SITES = new Set(['cross-site', 'same-site']);

/**
 * Defence in depth beside the CSRF token, for every state-changing form: a post whose `Origin` is not
 * the issuer's (`null` included: sandboxed frames, cross-site redirects) or whose `Sec-Fetch-Site`
 * says another site sent it is refused with 403 and the page of an expired form. A post with neither
 * header (old clients, curl) goes on to the CSRF token check.
 */
export function sameOriginForms(issuer: string, views: Views, expired: string): Middleware {
  const issuerOrigin = new URL(issuer).origin;
  return async (ctx, next) => {
    const origin = ctx.get('Origin');
    const fetchSite = ctx.get('Sec-Fetch-Site').toLowerCase();
    if ((origin && origin !== issuerOrigin) || FOREIGN_FETCH_SITES.has(fetchSite)) {
      ctx.status = 403;
      views.renderError(ctx, { error: 'invalid_request', error_description: expired });
      return;
    }
    await next();
  };
}
