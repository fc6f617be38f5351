import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { RateLimiterRes } from 'rate-limiter-flexible';
import { AccountError, type Accounts } from '../accounts/accounts.ts';
import { passwordStamp, type EmailLink } from '../accounts/email-links.ts';
import type { Email } from '../accounts/email.ts';
import { audit } from '../observability/audit.ts';
import type { Logger } from '../observability/logger.ts';
import type { Csrf } from '../security/csrf.ts';
import { formBody } from '../security/form-body.ts';
import { sameOriginForms } from '../security/same-origin.ts';
import { digest } from '../storage/keys.ts';
import { createLimiter } from '../storage/limiters.ts';
import { revokeAccountSessions } from '../storage/oidc-adapter.ts';
import type { Store } from '../storage/store.ts';
import type { Views } from '../views.ts';
import { localeOfRequest } from '../i18n/locale.ts';

export interface EmailLinkDeps {
  accounts: Accounts;
  store: Store;
  views: Views;
  csrf: Csrf;
  email: Email;
  logger: Logger;
  issuer: string;
  /** EMAIL_LINKS_PER_IP_PER_HOUR. */
  perIpPerHour: number;
}

export const LINK_GONE = 'This link has expired or was already used.';

/** Link requests per client IP: past the budget a 429 (it says nothing about any address). */
export function perIpLimit(deps: Pick<EmailLinkDeps, 'store' | 'views' | 'perIpPerHour'>): Middleware {
  const limiter = createLimiter(deps.store, { keyPrefix: 'lk:email-links:ip', points: deps.perIpPerHour, duration: 3600 });
  return async (ctx, next) => {
    try {
      await limiter.consume(ctx.ip);
    } catch (err) {
      if (!(err instanceof RateLimiterRes)) throw err;
      ctx.status = 429;
      ctx.set('Retry-After', String(Math.ceil(err.msBeforeNext / 1000)));
      return deps.views.render(ctx, 'email-link', { title: 'Too many requests', heading: 'Too many requests', lines: ['Too many links were asked for from your network. Try again later.'] });
    }
    await next();
  };
}

/** The link's token as posted or in the query; never logged. */
export function tokenOf(ctx: Context): unknown {
  return ctx.method === 'POST' ? (ctx.request.body as Record<string, unknown> | undefined)?.token : ctx.query.token;
}

/** A form on a link's page is bound to that link: its CSRF scope is the link's digest. */
export const linkScope = (token: string) => `email-link:${digest(token)}`;

/**
 * "Forgot your password?" (/password/forgot) and the page its link opens (/password/reset). The reset
 * sets a password through the one password rule and ends every session and grant of the account, as a
 * password change does; it signs nobody in, so the second factor is still asked at the next sign-in.
 */
export function passwordResetRoutes(deps: EmailLinkDeps) {
  const { accounts, store, views, csrf, email, logger } = deps;
  const router = new Router({ prefix: '/password' });
  const form = formBody();
  const sameOrigin = sameOriginForms(deps.issuer, views, 'the form expired; open the link from your email again');
  const limit = perIpLimit(deps);
  const ttlMinutes = Math.round(email.settings.resetTtlSeconds / 60);
  const ttl = `${ttlMinutes} minutes`;

  function gone(ctx: Context) {
    ctx.status = 400;
    views.render(ctx, 'email-link', { title: 'Link expired', heading: 'Link expired', error: LINK_GONE, link: { href: '/password/forgot', label: 'Send me a new link' } });
  }

  // With email off there is no link to send: the page says who can help (the sign-in page links here too).
  router.get('/forgot', (ctx) => {
    if (!email.on) return views.render(ctx, 'email-link', { title: 'Forgot your password?', heading: 'Forgot your password?', lines: ['Ask your administrator: they can set a new password for your account from the admin console or the latchkey command.'] });
    views.render(ctx, 'forgot-password', { title: 'Forgot your password?', ttlMinutes });
  });

  // Cross-site posts are refused (sameOrigin): there is no session yet to bind a CSRF token to.
  router.post('/forgot', sameOrigin, form, limit, async (ctx) => {
    if (!email.on) return gone(ctx);
    const body = ctx.request.body as Record<string, unknown>;
    const typed = typeof body.email === 'string' ? body.email.slice(0, 254).trim() : '';
    if (!typed) {
      ctx.status = 400;
      return views.render(ctx, 'forgot-password', { title: 'Forgot your password?', ttlMinutes, error: 'Enter the address you sign in with.' });
    }
    // The mail speaks the language of the page it was asked on.
    await email.requestPasswordReset(typed, ctx.ip, localeOfRequest(ctx).locale);
    // The same answer whether or not the address has an account.
    views.render(ctx, 'email-link', {
      title: 'Check your email',
      heading: 'Check your email',
      lines: [`If ${typed} belongs to an account, a link to choose a new password is on its way. It works once, for ${ttl}.`, 'Nothing there? Look in your spam folder, or ask your administrator.'],
    });
  });

  /** A link an operator handed over (admin/operations.ts) works with EMAIL off too, and proves no address. */
  const handedOver = (link: EmailLink) => link.data?.handover === 'yes';

  async function usable(token: unknown): Promise<EmailLink | undefined> {
    const link = await email.links.peek('password-reset', token);
    if (!link || (!email.on && !handedOver(link))) return undefined;
    const account = await accounts.find(link.accountId);
    return account && !account.disabled && passwordStamp(account.passwordHash) === link.stamp ? link : undefined;
  }

  function page(ctx: Context, token: string, link: EmailLink, error?: string) {
    views.render(ctx, 'reset-password', { title: 'Choose a new password', email: link.email, token, csrf: csrf.token(linkScope(token)), ...(error ? { error } : {}) });
  }

  // Showing the page uses nothing up: mail scanners open links, people do not always finish.
  router.get('/reset', async (ctx) => {
    const token = tokenOf(ctx);
    const link = await usable(token);
    if (!link) return gone(ctx);
    page(ctx, token as string, link);
  });

  router.post('/reset', sameOrigin, form, async (ctx) => {
    const token = tokenOf(ctx);
    const body = ctx.request.body as Record<string, unknown>;
    const link = await usable(token);
    if (!link) return gone(ctx);
    if (!csrf.verify(linkScope(token as string), body._csrf)) return gone(ctx);
    const password = typeof body.new_password === 'string' ? body.new_password : '';
    try {
      await accounts.checkPassword(password, link.email);
    } catch (err) {
      if (!(err instanceof AccountError)) throw err;
      ctx.status = 400;
      return page(ctx, token as string, link, `The new password is not accepted: ${err.message}.`);
    }
    // Exactly one use, however many race here; the stamp check inside the write refuses a link whose password changed meanwhile.
    if (!(await email.links.consume('password-reset', token))) return gone(ctx);
    let account;
    try {
      account = await accounts.setPassword(link.accountId, password, { unless: (a) => (passwordStamp(a.passwordHash) === link.stamp && !a.disabled ? undefined : 'changed'), ...(handedOver(link) ? {} : { verifiesEmail: link.email }) });
    } catch (err) {
      if (err instanceof AccountError) return gone(ctx);
      throw err;
    }
    const ended = await revokeAccountSessions(store, account.id);
    if (handedOver(link)) {
      // The person sets the password the operator asked them to: nothing to warn them of.
      audit(logger, 'password_reset', { accountId: account.id, ip: ctx.ip, handover: true, ...ended }, 'password set with a link an operator handed over; every session ended');
    } else {
      audit(logger, 'password_reset', { accountId: account.id, ip: ctx.ip, ...ended }, 'password reset by an emailed link; every session ended');
      await email.notify(account, 'password-reset');
    }
    views.render(ctx, 'email-link', {
      title: 'Password changed',
      heading: 'Password changed',
      notice: 'Your new password is set. You were signed out everywhere; sign in again with it (and your second step, if you have one).',
      link: { href: '/account', label: 'Sign in to your account' },
    });
  });

  return router;
}
