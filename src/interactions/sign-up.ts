import Router from '@koa/router';
import type { Context } from 'koa';
import { isEmailAddress, normalizeEmail } from '../accounts/accounts.ts';
import type { SignUp } from '../accounts/sign-up.ts';
import { audit } from '../observability/audit.ts';
import { formBody } from '../security/form-body.ts';
import { sameOriginForms } from '../security/same-origin.ts';
import { digest } from '../storage/keys.ts';
import { localeOfRequest } from '../i18n/locale.ts';
import { newAccountForm, type NewAccountDeps } from './new-account.ts';
import { LINK_GONE, linkScope, perIpLimit, tokenOf, type EmailLinkDeps } from './password-reset.ts';

const MAX_NAME = 100;

/**
 * /signup (SIGNUP=domains|open; not served otherwise): an address and a name; the answer is "check your
 * email" whether or not the address has an account (its owner is mailed instead of the new-account
 * link). /signup/finish is the page the link opens: the password or passkey, then the account exists.
 * Same origin on every post; link requests per IP (EMAIL_LINKS_PER_IP_PER_HOUR, 429); the finish form
 * is bound to its link (CSRF scope), as the other link pages are.
 */
export function signUpRoutes(deps: Pick<EmailLinkDeps, 'views' | 'csrf' | 'logger' | 'issuer' | 'store' | 'perIpPerHour'> & NewAccountDeps & { signUp: SignUp; ttlSeconds: number }) {
  const { views, csrf, logger, signUp } = deps;
  const router = new Router({ prefix: '/signup' });
  const form = formBody();
  const sameOrigin = sameOriginForms(deps.issuer, views, 'the form expired; open the sign-up page again');
  const limit = perIpLimit(deps);
  const newAccount = newAccountForm(deps);
  const ttl = deps.ttlSeconds % 3600 === 0 ? `${deps.ttlSeconds / 3600} hour${deps.ttlSeconds === 3600 ? '' : 's'}` : `${Math.round(deps.ttlSeconds / 60)} minutes`;

  function showForm(ctx: Context, fields: { email?: string; name?: string; error?: string } = {}) {
    views.render(ctx, 'signup', { title: 'Create an account', domains: signUp.domains, ...fields });
  }

  function gone(ctx: Context) {
    ctx.status = 400;
    views.render(ctx, 'email-link', { title: 'Link expired', heading: 'Link expired', error: LINK_GONE, lines: ['If your account was made already, sign in; otherwise ask for a new link.'], link: { href: '/signup', label: 'Start again' } });
  }

  router.get('/', (ctx) => showForm(ctx));

  // No session exists to bind a CSRF token to: cross-site posts are refused by origin (sameOrigin).
  router.post('/', sameOrigin, form, limit, async (ctx) => {
    const body = ctx.request.body as Record<string, unknown>;
    const typed = typeof body.email === 'string' ? body.email.slice(0, 254).trim() : '';
    const name = typeof body.name === 'string' ? body.name.replace(/[\p{Cc}\p{Cf}]/gu, '').trim().slice(0, MAX_NAME) : '';
    const address = normalizeEmail(typed);
    const refuse = (error: string) => {
      ctx.status = 400;
      showForm(ctx, { email: typed, name, error });
    };
    if (!isEmailAddress(address)) return refuse('Enter your email address, e.g. name@example.com.');
    // Which domains may sign up is public (the page lists them): refusing another says nothing about any account.
    if (!signUp.allows(address)) return refuse(`Accounts here are for addresses at ${signUp.domains.join(', ')} only.`);
    await signUp.request(address, name || undefined, ctx.ip, localeOfRequest(ctx).locale);
    // The same answer whether or not the address has an account: its owner learns the rest by mail.
    views.render(ctx, 'email-link', {
      title: 'Check your email',
      heading: 'Check your email',
      lines: [`We sent a message to ${address}. Open the link in it to finish creating your account; it works once, for ${ttl}.`, 'Nothing there? Look in your spam folder. If the address already has an account, the message says how to sign in.'],
    });
  });

  const page = (ctx: Context, token: string, link: { email: string; accountId: string; data?: Record<string, string> }, error?: string) =>
    newAccount.render(ctx, { title: 'Create your account', heading: 'Create your account', action: '/signup/finish', token, email: link.email, accountId: link.accountId, ...(link.data?.name ? { name: link.data.name } : {}), ...(error ? { error } : {}) });

  // Opening the link uses nothing up: mail scanners open links, people do not always finish.
  router.get('/finish', async (ctx) => {
    const token = tokenOf(ctx);
    const link = await signUp.opened(token);
    if (!link) return gone(ctx);
    await page(ctx, token as string, link);
  });

  router.post('/finish', sameOrigin, form, async (ctx) => {
    const token = tokenOf(ctx);
    const body = ctx.request.body as Record<string, unknown>;
    const link = await signUp.opened(token);
    if (!link || !csrf.verify(linkScope(token as string), body._csrf)) return gone(ctx);
    const chosen = await newAccount.chosen(ctx, token as string, link.email);
    if ('error' in chosen) {
      ctx.status = 400;
      return page(ctx, token as string, link, chosen.error);
    }
    const account = await newAccount.create(chosen.credential, link.accountId, () => signUp.finish(token, chosen.credential));
    if (!account) return gone(ctx);
    audit(logger, 'signed_up', { accountId: account.id, emailDigest: digest(account.email), ip: ctx.ip, with: chosen.how }, 'signed up: account created from its mailed link');
    await newAccount.welcome(ctx, account, chosen.how);
  });

  return router;
}
