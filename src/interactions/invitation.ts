import Router from '@koa/router';
import type { Context } from 'koa';
import { AccountError } from '../accounts/accounts.ts';
import type { Invitations } from '../accounts/invitations.ts';
import { audit } from '../observability/audit.ts';
import { formBody } from '../security/form-body.ts';
import { sameOriginForms } from '../security/same-origin.ts';
import { digest } from '../storage/keys.ts';
import { LINK_GONE, linkScope, tokenOf, type EmailLinkDeps } from './password-reset.ts';

/**
 * /invitation: the page an invitation's link opens. Opening it shows the address and a password form
 * (mail scanners open links too, so nothing is used up); the post creates the account, its address
 * verified, and sends the person to a normal sign-in on /account — where MFA_POLICY=required has them
 * set up a second step like anyone else.
 */
export function invitationRoutes(deps: Pick<EmailLinkDeps, 'views' | 'csrf' | 'logger' | 'issuer'> & { invitations: Invitations; mfaRequired: boolean }) {
  const { views, csrf, logger, invitations } = deps;
  const router = new Router();
  const form = formBody();
  const sameOrigin = sameOriginForms(deps.issuer, views, 'the form expired; open the link from your email again');

  function gone(ctx: Context) {
    ctx.status = 400;
    views.render(ctx, 'email-link', { title: 'Link expired', heading: 'Link expired', error: LINK_GONE, lines: ['Ask your administrator to send the invitation again.'] });
  }

  function page(ctx: Context, token: string, email: string, error?: string) {
    views.render(ctx, 'invitation', { title: 'Accept your invitation', email, token, csrf: csrf.token(linkScope(token)), mfaRequired: deps.mfaRequired, ...(error ? { error } : {}) });
  }

  router.get('/invitation', async (ctx) => {
    const token = tokenOf(ctx);
    const invitation = await invitations.opened(token);
    if (!invitation) return gone(ctx);
    page(ctx, token as string, invitation.email);
  });

  router.post('/invitation', sameOrigin, form, async (ctx) => {
    const token = tokenOf(ctx);
    const body = ctx.request.body as Record<string, unknown>;
    const invitation = await invitations.opened(token);
    if (!invitation || !csrf.verify(linkScope(token as string), body._csrf)) return gone(ctx);
    const password = typeof body.new_password === 'string' ? body.new_password : '';
    let account;
    try {
      account = await invitations.accept(token, password);
    } catch (err) {
      if (!(err instanceof AccountError)) throw err;
      ctx.status = 400;
      return page(ctx, token as string, invitation.email, `The password is not accepted: ${err.message}.`);
    }
    if (!account) return gone(ctx);
    audit(logger, 'invitation_accepted', { accountId: account.id, emailDigest: digest(account.email), ip: ctx.ip }, 'invitation accepted: account created');
    views.render(ctx, 'email-link', {
      title: 'Account created',
      heading: 'Welcome',
      notice: `Your account ${account.email} is ready. Sign in with your new password${deps.mfaRequired ? '; you will then set up a second step' : ''}.`,
      link: { href: '/account', label: 'Sign in' },
    });
  });

  return router;
}
