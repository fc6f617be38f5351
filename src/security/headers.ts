import type { Middleware } from 'koa';
import { brandImageSources, type Brand } from '../brand.ts';
import { contentSecurityPolicy } from '../views.ts';

/**
 * The security headers of every answer, in order; pages may widen `form-action` and `img-src` (views.ts).
 * `secure`: the request came over https (ISSUER's protocol, issuer-origin.ts), which adds HSTS.
 */
export function securityHeaderList(brand: Brand | undefined, secure: boolean): [string, string][] {
  return [
    ['Content-Security-Policy', contentSecurityPolicy([], brand ? brandImageSources(brand) : [])],
    ['X-Content-Type-Options', 'nosniff'],
    // Not `no-referrer`: under it browsers send `Origin: null` on our own form posts, which the
    // same-origin check (same-origin.ts) must refuse. `same-origin` still tells other sites nothing.
    ['Referrer-Policy', 'same-origin'],
    ['X-Frame-Options', 'DENY'],
    ['Cross-Origin-Opener-Policy', 'same-origin'],
    ...(secure ? [['Strict-Transport-Security', 'max-age=31536000'] as [string, string]] : []),
  ];
}

/** Security headers on every response (`securityHeaderList`). */
export function securityHeaders(brand?: Brand): Middleware {
  const [plain, secure] = [securityHeaderList(brand, false), securityHeaderList(brand, true)];
  return async (ctx, next) => {
    for (const [name, value] of ctx.secure ? secure : plain) ctx.set(name, value);
    await next();
  };
}
