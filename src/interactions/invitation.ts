import Router from '@koa/router';
import type { Context } from 'koa';
import type { Invitations } from '../accounts/invitations.ts';
import { audit } from '../observability/audit.ts';
import { formBody } from '../security/form-body.ts';
import { sameOriginForms } from '../security/same-origin.ts';
import { digest } from '../storage/keys.ts';
import { newAccountForm, type NewAccountDeps } from './new-account.ts';
import { LINK_GONE, linkScope, tokenOf, type EmailLinkDeps } from './password-reset.ts';

/**
 * /invitation: the page an invitation's link opens. Opening it shows the address with a password form
 * and a "Create a passkey instead" one (mail scanners open links too, so nothing is used up); the post
 * creates the account, its address verified, and sends the person to a normal sign-in on /account —
 * where MFA_POLICY=required has a password's owner set up a second step like anyone else (a passkey
 * with user verification is both).
 */
export function invitationRoutes(deps: Pick<EmailLinkDeps, 'views' | 'csrf' | 'logger' | 'issuer'> & NewAccountDeps & { invitations: Invitations }) {
  const { views, csrf, logger, invitations } = deps;
  const router = new Router();
  const form = formBody();
  const sameOrigin = sameOriginForms(deps.issuer, views, 'the form expired; open the link from your email again');
  const newAccount = newAccountForm(deps);

  function gone(ctx: Context) {
    ctx.status = 400;
    views.render(ctx, 'email-link', { title: 'Link expired', heading: 'Link expired', error: LINK_GONE, lines: ['Ask your administrator to send the invitation again.'] });
  }

  const page = (ctx: Context, token: string, invitation: { email: string; name?: string; accountId?: string }, error?: string) =>
    newAccount.render(ctx, { title: 'Accept your invitation', heading: 'Accept your invitation', action: '/invitation', token, email: invitation.email, ...(invitation.name ? { name: invitation.name } : {}), ...(invitation.accountId ? { accountId: invitation.accountId } : {}), ...(error ? { error } : {}) });

  router.get('/invitation', async (ctx) => {
    const token = tokenOf(ctx);
    const invitation = await invitations.opened(token);
    if (!invitation) return gone(ctx);
    await page(ctx, token as string, invitation);
  });

  router.post('/invitation', sameOrigin, form, async (ctx) => {
    const token = tokenOf(ctx);
    const body = ctx.request.body as Record<string, unknown>;
    const invitation = await invitations.opened(token);
    if (!invitation || !csrf.verify(linkScope(token as string), body._csrf)) return gone(ctx);
    const chosen = await newAccount.chosen(ctx, token as string, invitation.email);
    if ('error' in chosen) {
      ctx.status = 400;
      return page(ctx, token as string, invitation, chosen.error);
    }
    const account = await newAccount.create(chosen.credential, invitation.accountId, () => invitations.accept(token, chosen.credential));
    if (!account) return gone(ctx);
    audit(logger, 'invitation_accepted', { accountId: account.id, emailDigest: digest(account.email), ip: ctx.ip, with: chosen.how }, 'invitation accepted: account created');
    await newAccount.welcome(ctx, account, chosen.how);
  });

  return router;
}
