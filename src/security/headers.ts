import type { Middleware } from 'koa';
import { brandImageSources, type Brand } from '../brand.ts';
import { contentSecurityPolicy } from '../views.ts';

/** Security headers on every response; pages may widen `form-action` and `img-src` (views.ts). */
export function securityHeaders(brand?: Brand): Middleware {
  const csp = contentSecurityPolicy([], brand ? brandImageSources(brand) : []);
  return async (ctx, next) => {
    ctx.set('Content-Security-Policy', csp);
    ctx.set('X-Content-Type-Options', 'nosniff');
    // Not `no-referrer`: under it browsers send `Origin: null` on our own form posts, which the
    // same-origin check (same-origin.ts) must refuse. `same-origin` still tells other sites nothing.
    ctx.set('Referrer-Policy', 'same-origin');
    ctx.set('X-Frame-Options', 'DENY');
    ctx.set('Cross-Origin-Opener-Policy', 'same-origin');
    if (ctx.secure) ctx.set('Strict-Transport-Security', 'max-age=31536000');
    await next();
  };
}
