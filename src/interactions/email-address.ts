import Router from '@koa/router';
import type { Context } from 'koa';
import { AccountError } from '../accounts/accounts.ts';
import type { EmailLink, LinkPurpose } from '../accounts/email-links.ts';
import { audit } from '../observability/audit.ts';
import { formBody } from '../security/form-body.ts';
import { sameOriginForms } from '../security/same-origin.ts';
import { revokeAccountSessions } from '../storage/oidc-adapter.ts';
import { LINK_GONE, linkScope, tokenOf, type EmailLinkDeps } from './password-reset.ts';

/**
 * The pages the address links open: /email/verify (this address is mine), /email/change (use this
 * new address) and /email/report (the old address says "this was not me"). Opening one shows a
 * button; only the post uses the link up, because mail scanners open links too.
 */
export function emailAddressRoutes(deps: EmailLinkDeps) {
  const { accounts, store, views, csrf, email, logger } = deps;
  const router = new Router({ prefix: '/email' });
  const form = formBody();
  const sameOrigin = sameOriginForms(deps.issuer, views, 'the form expired; open the link from your email again');

  function gone(ctx: Context) {
    ctx.status = 400;
    views.render(ctx, 'email-link', { title: 'Link expired', heading: 'Link expired', error: LINK_GONE, link: { href: '/account', label: 'Go to your account' } });
  }

  interface Landing {
    purpose: LinkPurpose;
    heading: string;
    lines: (link: EmailLink) => string[];
    button: string;
    /** Runs once, for the one post that used the link up; resolves the notice shown, or undefined when the link no longer fits. */
    use: (link: EmailLink, ctx: Context) => Promise<string | undefined>;
  }

  function landing(path: string, l: Landing) {
    router.get(path, async (ctx) => {
      const token = tokenOf(ctx);
      const link = email.on ? await email.links.peek(l.purpose, token) : undefined;
      if (!link) return gone(ctx);
      views.render(ctx, 'email-link', { title: l.heading, heading: l.heading, lines: l.lines(link), action: `/email${path}`, token, csrf: csrf.token(linkScope(token as string)), button: l.button });
    });
    router.post(path, sameOrigin, form, async (ctx) => {
      const token = tokenOf(ctx);
      if (!email.on || typeof token !== 'string' || !csrf.verify(linkScope(token), (ctx.request.body as Record<string, unknown>)._csrf)) return gone(ctx);
      const link = await email.links.consume(l.purpose, token);
      const notice = link ? await l.use(link, ctx) : undefined;
      if (!notice) return gone(ctx);
      views.render(ctx, 'email-link', { title: l.heading, heading: l.heading, notice, link: { href: '/account', label: 'Go to your account' } });
    });
  }

  landing('/verify', {
    purpose: 'verify-email',
    heading: 'Confirm your email address',
    lines: (link) => [`Confirm that ${link.email} is your address.`],
    button: 'Confirm',
    async use(link) {
      const account = await accounts.verifyEmail(link.accountId, link.email);
      if (!account) return undefined;
      audit(logger, 'email_verified', { accountId: account.id, source: 'email_link' }, 'address verified by an emailed link');
      return `${link.email} is confirmed.`;
    },
  });

  landing('/change', {
    purpose: 'change-email',
    heading: 'Confirm your new address',
    lines: (link) => [`Sign in with ${link.email} from now on, instead of ${link.data?.from ?? 'your current address'}.`],
    button: 'Use this address',
    async use(link, ctx) {
      const from = link.data?.from ?? '';
      let account;
      try {
        account = await accounts.changeEmail(link.accountId, from, link.email);
      } catch (err) {
        if (!(err instanceof AccountError)) throw err;
        if (/already exists/.test(err.message)) ctx.status = 409;
        return undefined;
      }
      audit(logger, 'email_changed', { accountId: account.id, source: 'email_link' }, 'address changed after the new one confirmed it');
      await email.notify(account, 'address-changed', from);
      return `You sign in with ${account.email} from now on.`;
    },
  });

  landing('/report', {
    purpose: 'report-change',
    heading: 'This was not me',
    lines: (link) => [`Cancel the change of your address to ${link.data?.to ?? 'another address'}, and sign your account out everywhere?`],
    button: 'Cancel the change and sign out everywhere',
    async use(link) {
      if (link.data?.change) await email.links.cancel(link.data.change);
      const ended = await revokeAccountSessions(store, link.accountId);
      audit(logger, 'email_change_reported', { accountId: link.accountId, ...ended }, 'an address change was reported as not asked for: cancelled, every session ended');
      return 'The change is cancelled and your account is signed out everywhere. Reset your password now, and tell your administrator.';
    },
  });

  return router;
}
