import type { Middleware } from 'koa';
import type Provider from 'oidc-provider';
import { formBody } from '../security/form-body.ts';

/**
 * OIDC Core §3.1.2.1 and RP-Initiated Logout §2: the authorization and end-session endpoints MUST accept
 * POST. oidc-provider's own POST routes (`enableHttpPostMethods`) need SameSite=None cookies, which we
 * refuse; so a form POST there is answered with a 303 to the GET of the same parameters. A browser
 * follows it as a top-level GET navigation, which carries our SameSite=Lax cookies like any link from
 * the app; what happens next is exactly what the GET does.
 */
// The parameters travel back in a URL: a body larger than this would not fit in the request line.
const FORM_LIMIT = '8kb';
const FORM_TYPE = 'application/x-www-form-urlencoded';

export function formPostAsGet(provider: Provider): Middleware {
  const paths = new Set([provider.pathFor('authorization'), provider.pathFor('end_session')]);
  const parse = formBody(FORM_LIMIT);
  return async (ctx, next) => {
    if (ctx.method !== 'POST' || !paths.has(ctx.path)) {
      await next();
      return;
    }
    if (!ctx.is(FORM_TYPE)) ctx.throw(400, `the request must be a form (${FORM_TYPE})`);
    await parse(ctx, async () => {});
    // The raw body, not the parsed one: parameters keep their order, repeats and exact text.
    const query = new URLSearchParams((ctx.request as { rawBody?: string }).rawBody ?? '').toString();
    ctx.set('Cache-Control', 'no-store');
    ctx.status = 303;
    ctx.redirect(query ? `${ctx.path}?${query}` : ctx.path);
  };
}
