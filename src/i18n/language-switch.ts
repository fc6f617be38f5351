import Router from '@koa/router';
import { safeBack, setLocaleCookie } from '../views.ts';
import { supportedLocale } from './locale.ts';

/** GET /language?to=de&back=/account: the switch on every page keeps the person's pick in a cookie, then goes back (same site only). */
export function languageSwitchRoutes() {
  const router = new Router();
  router.get('/language', (ctx) => {
    const locale = supportedLocale(ctx.query.to);
    if (locale) setLocaleCookie(ctx, locale);
    ctx.set('Cache-Control', 'no-store');
    ctx.status = 303;
    ctx.redirect(safeBack(ctx.query.back));
  });
  return router;
}
