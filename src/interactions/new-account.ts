import type { Context } from 'koa';
import type { RegistrationResponseJSON } from '@simplewebauthn/server';
import { AccountError, type Account, type Accounts } from '../accounts/accounts.ts';
import { parseCredentialResponse, type Passkeys } from '../accounts/passkeys.ts';
import type { SecondFactor } from '../accounts/second-factor.ts';
import type { Credential } from '../accounts/sign-up.ts';
import type { Csrf } from '../security/csrf.ts';
import type { Views } from '../views.ts';
import { linkScope } from './password-reset.ts';

export interface NewAccountDeps {
  accounts: Accounts;
  views: Views;
  csrf: Csrf;
  passkeys: Passkeys;
  passkeyMode: 'off' | 'optional' | 'preferred';
  secondFactor: SecondFactor;
  mfaRequired: boolean;
}

export interface NewAccountPage {
  title: string;
  heading: string;
  /** Where both forms post (the link's page). */
  action: string;
  token: string;
  email: string;
  name?: string;
  /** The id the account will have: a passkey is made for it. Without one, only a password is offered. */
  accountId?: string;
  error?: string;
}

/**
 * The page a link that makes an account opens (/invitation, /signup/finish): a password, or a passkey
 * made right there (passkey-only accounts are fine: a passkey with user verification is both factors).
 * Both forms post to the link's page with its token, CSRF bound to the link; the passkey's challenge is
 * kept under the link's digest too, so a response made for another link is refused.
 */
export function newAccountForm(deps: NewAccountDeps) {
  const { accounts, views, csrf, passkeys, passkeyMode, secondFactor, mfaRequired } = deps;

  async function render(ctx: Context, page: NewAccountPage) {
    const { token, email, name, accountId } = page;
    const passkey = passkeyMode !== 'off' && accountId
      ? { kind: 'register', action: page.action, options: await passkeys.registrationOptions({ id: accountId, email, ...(name ? { name } : {}) }, linkScope(token)), label: 'Create a passkey instead', secondary: passkeyMode !== 'preferred', hidden: { token } }
      : undefined;
    views.render(ctx, 'new-account', { ...page, csrf: csrf.token(linkScope(token)), mfaRequired, passkey });
  }

  /**
   * The credential the post chose: a passkey (`response`, verified against this link's challenge; it
   * uses the challenge up) or a password (checked by the one password rule). Nothing is stored yet.
   */
  async function chosen(ctx: Context, token: string, email: string): Promise<{ credential: Credential; how: 'password' | 'passkey' } | { error: string }> {
    const body = ctx.request.body as Record<string, unknown>;
    if (typeof body.response === 'string' && body.response !== '') {
      const response = passkeyMode === 'off' ? undefined : parseCredentialResponse<RegistrationResponseJSON>(body.response);
      const checked = response ? await passkeys.verifyNew(linkScope(token), response, typeof body.name === 'string' ? body.name : '') : undefined;
      if (!checked?.ok) return { error: 'The passkey was not created. Try again, or set a password.' };
      return { credential: { passkey: checked.passkey }, how: 'passkey' };
    }
    const password = typeof body.new_password === 'string' ? body.new_password : '';
    try {
      await accounts.checkPassword(password, email);
    } catch (err) {
      if (!(err instanceof AccountError)) throw err;
      return { error: `The password is not accepted: ${err.message}.` };
    }
    return { credential: { password }, how: 'password' };
  }

  /** Makes the account with the chosen credential; a passkey's id is claimed first and freed when no account came of it. */
  async function create(credential: Credential, accountId: string | undefined, make: () => Promise<Account | undefined>): Promise<Account | undefined> {
    if (!('passkey' in credential)) return make();
    if (!accountId || !(await passkeys.claim(credential.passkey.id, accountId))) return undefined;
    let account: Account | undefined;
    try {
      account = await make();
    } finally {
      if (!account) await passkeys.release(credential.passkey.id);
    }
    return account;
  }

  /**
   * The answer once the account exists: sign in. A passkey-only account gets its recovery codes here,
   * once (its passkey is the first factor: losing it must not lock the person out).
   */
  async function welcome(ctx: Context, account: Account, how: 'password' | 'passkey') {
    if (how === 'passkey') {
      const codes = await secondFactor.issueRecoveryCodesIfNone(account.id);
      return views.render(ctx, 'recovery-codes', { title: 'Account created', codes, created: account.email, continueHref: '/account' });
    }
    views.render(ctx, 'email-link', {
      title: 'Account created',
      heading: 'Welcome',
      notice: `Your account ${account.email} is ready. Sign in with your new password${mfaRequired ? '; you will then set up a second step' : ''}.`,
      link: { href: '/account', label: 'Sign in' },
    });
  }

  return { render, chosen, create, welcome };
}
