import Router from '@koa/router';
import type { Context } from 'koa';
import { safeBack, setLocaleCookie } from '../views.ts';
import { supportedLocale, type Locale } from './locale.ts';

export interface LanguageSwitchOptions {
  /** Keeps the pick on the signed-in person's account too, so the mail that follows speaks it; never fails the switch. */
  remember?: (ctx: Context, locale: Locale) => Promise<void>;
}

/** GET /language?to=de&back=/account: the switch on every page keeps the person's pick in a cookie, then goes back (same site only). */
export function languageSwitchRoutes(options: LanguageSwitchOptions = {}) {
  const router = new Router();
  router.get('/language', async (ctx) => {
    const locale = supportedLocale(ctx.query.to);
    if (locale) {
      setLocaleCookie(ctx, locale);
      await options.remember?.(ctx, locale);
    }
    ctx.set('Cache-Control', 'no-store');
    ctx.status = 303;
    ctx.redirect(safeBack(ctx.query.back));
  });
  return router;
}
