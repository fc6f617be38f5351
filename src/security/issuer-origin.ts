import type { Middleware } from 'koa';

/** `GET http://other.example/path HTTP/1.1`: a request target in absolute form (RFC 9112 §3.2.2). */
const ABSOLUTE_FORM = /^https?:\/\//i;

/**
 * Koa and oidc-provider build every URL they publish or check (discovery, form actions, the `htu`
 * of DPoP proofs, redirects) from the request's host and protocol. Both are pinned to ISSUER's,
 * whatever `Host`, `X-Forwarded-Host`, `X-Forwarded-Proto` or an absolute request target say. A
 * request naming another host is answered with the issuer's URLs rather than refused, so that health
 * checks on 127.0.0.1 keep working; and cookies are `Secure` exactly when ISSUER is https.
 */
export function pinIssuerOrigin(issuer: string): Middleware {
  const { host, protocol } = new URL(issuer);
  const pinned = { host: { value: host }, protocol: { value: protocol.slice(0, -1) } };
  // Pinned once on the app's request prototype (every ctx.request inherits from it), not on each request.
  const pinnedPrototypes = new WeakSet<object>();
  return async (ctx, next) => {
    const prototype = Object.getPrototypeOf(ctx.request) as object;
    if (!pinnedPrototypes.has(prototype)) {
      Object.defineProperties(prototype, pinned);
      pinnedPrototypes.add(prototype);
    }
    if (ABSOLUTE_FORM.test(ctx.originalUrl)) {
      const target = URL.parse(ctx.originalUrl);
      if (!target) return ctx.throw(400, 'the request target is not a valid URL');
      ctx.url = ctx.originalUrl = ctx.request.originalUrl = target.pathname + target.search;
    }
    await next();
  };
}
