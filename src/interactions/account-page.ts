import Router from '@koa/router';
import type { Context } from 'koa';
import { AccountError, hasFactor, isEmailAddress, isEmailVerified, normalizeEmail, type Account } from '../accounts/accounts.ts';
import { authenticatorName, passkeysOf } from '../accounts/passkeys.ts';
import { consentRevokedEvent, listConnectedApps, revokeConnectedApp, type ConnectedApp } from '../accounts/connected-apps.ts';
import { SecondFactor } from '../accounts/second-factor.ts';
import { audit } from '../observability/audit.ts';
import { ensureOwnClient, ownSignInUrl, type Registry } from '../oidc/registry.ts';
import { keys } from '../storage/keys.ts';
import { revokeAccountSessions } from '../storage/oidc-adapter.ts';
import { sameOriginForms } from '../security/same-origin.ts';
import { FactorChecks, type Checked } from '../signin/factors/factor-checks.ts';
import type { Store } from '../storage/store.ts';
import { formBody } from '../security/form-body.ts';
import { MESSAGES } from '../signin/messages.ts';
import type { InteractionDeps } from './routes.ts';
import { describeScopes, type ScopeDescriptions } from '../signin/scope-words.ts';

/**
 * `/account`: a signed-in person's second factor and recovery codes, and what they can change.
 *
 * Who is signed in is oidc-provider's own session (its `_session` cookie, read with Session.get). A
 * person without one is sent through the ordinary sign-in — password, second factor, enrollment when
 * needed — as a first-party public client of this server (PKCE, redirect back to /account/callback),
 * so there is one sign-in flow with one lockout, and nothing here creates sessions by hand. The
 * callback needs no code redemption: the session the flow created is what this page uses.
 *
 * Every change (new recovery codes, another authenticator, a new password) needs the current password
 * AND a current code, or one of the person's passkeys with user verification, counted by the lockout:
 * a stolen session alone cannot swap the factor. Forms are
 * plain posts with a CSRF token bound to the session, so the page works without JavaScript.
 */
export interface AccountPageDeps extends InteractionDeps {
  /** The page's own client (ensureAccountPageClient). */
  clientId: string;
  /** Names the connected apps. */
  registry: Pick<Registry, 'findClient' | 'scopeDescription'>;
}

const day = (epochMs: number | undefined) => (epochMs === undefined ? 'unknown' : new Date(epochMs).toISOString().slice(0, 10));

/** A connected app as the page shows it: its scopes in the consent page's words. */
async function appView(app: ConnectedApp, registry: ScopeDescriptions) {
  return { clientId: app.clientId, name: app.name, scopes: await describeScopes(registry, app.scopes), grantedAt: day(app.grantedAt), lastUsedAt: day(app.lastUsedAt) };
}

export function accountRoutes(deps: AccountPageDeps) {
  const { provider, accounts, store, views, csrf, secondFactor, passkeys, passkeyMode, mfaPolicy, issuer, clientId, email } = deps;
  const checks = new FactorChecks(deps);
  const callback = `${issuer}/account/callback`;
  const router = new Router({ prefix: '/account' });
  const form = formBody();
  const FORM_EXPIRED = 'the form expired; open your account page again';
  const PASSKEY_NOT_ACCEPTED = 'The passkey was not accepted. Try again, or use your password and code.';
  const sameOrigin = sameOriginForms(issuer, views, FORM_EXPIRED);

  interface Signed {
    account: Account & { id: string };
    /** oidc-provider's session id: the one session a password or authenticator change keeps. */
    sessionId: string;
    csrfScope: string;
  }

  async function signedIn(ctx: Context): Promise<Signed | undefined> {
    const session = await provider.Session.get(ctx);
    if (!session.accountId) return undefined;
    const account = await accounts.find(session.accountId);
    if (!account || account.disabled) return undefined;
    return { account, sessionId: session.jti, csrfScope: `account:${session.uid ?? session.accountId}` };
  }

  function toSignIn(ctx: Context) {
    ctx.status = 303;
    ctx.redirect(ownSignInUrl(issuer, clientId, callback));
  }

  /** Signed in and the form's CSRF token right, or the answer is already given. */
  async function guardPost(ctx: Context): Promise<Signed | undefined> {
    const who = await signedIn(ctx);
    if (!who) {
      toSignIn(ctx);
      return undefined;
    }
    const body = ctx.request.body as Record<string, unknown> | undefined;
    if (!csrf.verify(who.csrfScope, body?._csrf)) {
      ctx.status = 403;
      views.renderError(ctx, { error: 'invalid_request', error_description: FORM_EXPIRED });
      return undefined;
    }
    return who;
  }

  async function renderAccount(ctx: Context, who: Signed, extra: Record<string, unknown> = {}) {
    const { account } = who;
    const enrolled = SecondFactor.isEnrolled(account);
    const day = (ms: number | undefined) => (ms ? new Date(ms).toISOString().slice(0, 10) : undefined);
    views.render(ctx, 'account', {
      title: 'Your account',
      csrf: csrf.token(who.csrfScope),
      email: account.email,
      emailVerified: isEmailVerified(account),
      emailOn: email.on,
      name: account.name,
      enrolled,
      hasFactor: hasFactor(account),
      enrolledAt: enrolled ? day(account.mfa.enrolledAt) : undefined,
      recoveryLeft: hasFactor(account) ? await secondFactor.recoveryCodesLeft(account) : 0,
      passkeysOn: passkeyMode !== 'off',
      passkeys: passkeysOf(account).map((p) => ({ id: p.id, name: p.name, authenticator: authenticatorName(p.aaguid), created: day(p.createdAt), lastUsed: day(p.lastUsedAt) })),
      apps: await Promise.all((await listConnectedApps(store, deps.registry, account.id)).map((app) => appView(app, deps.registry))),
      // One challenge per render, for this session, used up by whichever form a passkey proves first.
      passkeyProof: passkeyProves(account) ? await passkeys.authenticationOptions(who.csrfScope, account, 'required') : undefined,
      passkeyScript: passkeyProves(account),
      ...extra,
    });
  }

  /** Whether a passkey assertion can stand in for password and code: one of the person's own passkeys. */
  function passkeyProves(account: Account): boolean {
    return passkeyMode !== 'off' && passkeysOf(account).length > 0;
  }

  /**
   * The fresh proof every change needs: the current password and a current code (TOTP or recovery
   * code), or instead an assertion of one of the person's passkeys with user verification (something
   * held and something known or are, at once). An account without a factor (MFA_POLICY=optional)
   * proves the password only.
   */
  async function proof(ctx: Context, who: Signed): Promise<string | undefined> {
    const body = ctx.request.body as Record<string, unknown>;
    if (typeof body.passkey_response === 'string' && body.passkey_response !== '') {
      if (!passkeyProves(who.account)) return PASSKEY_NOT_ACCEPTED;
      const checked = await checks.passkey(who.csrfScope, body.passkey_response, ctx.ip, who.account, 'proof');
      if (checked.status === 'locked') return lockedMessage(ctx, checked.retryAfterSeconds);
      return checked.status === 'ok' ? undefined : PASSKEY_NOT_ACCEPTED;
    }
    const password = typeof body.current_password === 'string' ? body.current_password : '';
    const code = typeof body.code === 'string' ? body.code.slice(0, 64) : '';
    const pwd = await checks.password(who.account.email, password, ctx.ip);
    if (pwd.status === 'locked') return lockedMessage(ctx, pwd.retryAfterSeconds);
    if (pwd.status !== 'ok' || pwd.account.id !== who.account.id) return 'Your current password is not right.';
    // Passkeys only: the proof is a recovery code (there is no app to take a code from).
    if (!hasFactor(who.account)) return undefined;
    const input = who.account.mfa && /^[\d\s-]+$/.test(code) ? { totp: code } : { recoveryCode: code };
    const second: Checked = await checks.secondFactor(who.account, input, ctx.ip);
    if (second.status === 'locked') return lockedMessage(ctx, second.retryAfterSeconds);
    if (second.status !== 'ok') return second.reason === 'replayed' ? MESSAGES.usedCode : 'That code is not right. Enter the current code from your authenticator app.';
    return undefined;
  }

  function lockedMessage(ctx: Context, retryAfterSeconds: number) {
    ctx.status = 429;
    ctx.set('Retry-After', String(retryAfterSeconds));
    return MESSAGES.locked;
  }

  async function showRecoveryCodes(ctx: Context, who: Signed, codes: string[]) {
    views.render(ctx, 'recovery-codes', { title: 'Save your recovery codes', csrf: csrf.token(who.csrfScope), codes, action: '/account/saved' });
  }

  router.get('/', async (ctx) => {
    const who = await signedIn(ctx);
    if (!who) return toSignIn(ctx);
    await renderAccount(ctx, who);
  });

  // Back from the sign-in flow: the session exists now (or the person cancelled).
  router.get('/callback', async (ctx) => {
    if (typeof ctx.query.error === 'string') {
      ctx.status = 400;
      return views.renderError(ctx, { error: ctx.query.error === 'access_denied' ? 'access_denied' : 'invalid_request', error_description: 'the sign-in did not finish' });
    }
    ctx.status = 303;
    ctx.redirect('/account');
  });

  router.post('/saved', sameOrigin, form, async (ctx) => {
    if (!(await guardPost(ctx))) return;
    ctx.status = 303;
    ctx.redirect('/account');
  });

  router.post('/recovery-codes', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    if (!hasFactor(who.account)) return renderAccount(ctx, who, { error: 'Set up two-step verification first.' });
    const problem = await proof(ctx, who);
    if (problem) return renderAccount(ctx, who, { error: problem });
    const codes = await secondFactor.regenerateRecoveryCodes(who.account.id);
    audit(deps.logger, 'recovery_codes_regenerated', { accountId: who.account.id, count: codes.length, source: 'account_page' }, 'new recovery codes; the old ones stopped working');
    await email.notify(who.account, 'recovery-codes');
    await showRecoveryCodes(ctx, who, codes);
  });

  // Replace (or, under MFA_POLICY=optional, set up) the authenticator: proof first, then the new app's code.
  router.post('/authenticator', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    const problem = await proof(ctx, who);
    if (problem) return renderAccount(ctx, who, { error: problem });
    const started = await secondFactor.startEnrollment(who.account);
    renderEnroll(ctx, who, started.pending, started);
  });

  function renderEnroll(ctx: Context, who: Signed, pending: string, provisioning: { qrSvg: string; secret: string }, error?: string) {
    views.render(ctx, 'enroll', {
      title: 'Set up two-step verification',
      csrf: csrf.token(who.csrfScope),
      email: who.account.email,
      qr: `data:image/svg+xml;base64,${Buffer.from(provisioning.qrSvg).toString('base64')}`,
      secret: provisioning.secret,
      action: '/account/authenticator/confirm',
      // The pending enrollment is sealed (AES-256-GCM, bound to this account, 15 minutes) and activates once:
      // holding it is the proof just given. The browser cannot read the secret in it.
      extraFields: [{ name: 'pending', value: pending }],
      error,
    });
  }

  router.post('/authenticator/confirm', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    const body = ctx.request.body as Record<string, unknown>;
    const pending = typeof body.pending === 'string' ? body.pending : '';
    const code = typeof body.code === 'string' ? body.code.slice(0, 64) : '';
    const provisioning = await secondFactor.provisioningOf(who.account, pending);
    if (!provisioning) return renderAccount(ctx, who, { error: 'The setup took too long. Start again.' });
    let checked;
    try {
      checked = await checks.enroll(who.account, pending, code, ctx.ip, { replace: true });
    } catch (err) {
      if (err instanceof AccountError) return renderAccount(ctx, who, { error: 'The setup did not finish. Start again.' });
      throw err;
    }
    if (checked.status === 'ok') {
      // The new authenticator replaced the old one (under MFA_POLICY=optional there may have been none):
      // whoever signed in with the old one is signed out, this browser excepted.
      if (SecondFactor.isEnrolled(who.account)) {
        const ended = await revokeAccountSessions(store, who.account.id, { keepSessionId: who.sessionId });
        audit(deps.logger, 'second_factor_removed', { accountId: who.account.id, reason: 'replaced', source: 'account_page', ...ended }, 'previous authenticator removed; other sessions ended');
      }
      await email.notify(who.account, SecondFactor.isEnrolled(who.account) ? 'authenticator-removed' : 'authenticator-added');
      return showRecoveryCodes(ctx, who, checked.recoveryCodes);
    }
    const error = checked.status === 'locked' ? lockedMessage(ctx, checked.retryAfterSeconds) : checked.reason === 'expired' ? 'The setup took too long. Start again.' : MESSAGES.wrongCode;
    renderEnroll(ctx, who, pending, provisioning, error);
  });

  // ---- passkeys: proof first, as for every change ----

  router.post('/passkeys', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    if (passkeyMode === 'off') return renderAccount(ctx, who, { error: 'Passkeys are turned off on this server.' });
    const problem = await proof(ctx, who);
    if (problem) return renderAccount(ctx, who, { error: problem });
    // The challenge is issued only after the proof, for this session, once: holding it is the proof just given.
    const options = await passkeys.registrationOptions(who.account, who.csrfScope);
    views.render(ctx, 'passkey-add', {
      title: 'Add a passkey',
      csrf: csrf.token(who.csrfScope),
      email: who.account.email,
      passkey: { kind: 'register', action: '/account/passkeys/confirm', options, label: 'Create a passkey' },
    });
  });

  router.post('/passkeys/confirm', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    const body = ctx.request.body as Record<string, unknown>;
    const checked = await checks.registerPasskey(who.account, who.csrfScope, body.response, body.name, ctx.ip, 'account_page');
    if (checked.status !== 'ok') {
      const error = checked.status === 'locked' ? lockedMessage(ctx, checked.retryAfterSeconds) : 'The passkey was not created. Start again.';
      return renderAccount(ctx, who, { error });
    }
    await email.notify(who.account, 'passkey-added');
    const codes = await secondFactor.issueRecoveryCodesIfNone(who.account.id);
    if (codes.length) return showRecoveryCodes(ctx, who, codes);
    await renderAccount(ctx, { ...who, account: (await accounts.find(who.account.id))! }, { notice: `Your passkey “${checked.passkey.name}” was added.` });
  });

  router.post('/passkeys/rename', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    const body = ctx.request.body as Record<string, unknown>;
    const target = passkeysOf(who.account).find((p) => p.id === body.passkey_id);
    if (!target) return renderAccount(ctx, who, { error: 'That passkey is not yours, or it was removed.' });
    const problem = await proof(ctx, who);
    if (problem) return renderAccount(ctx, who, { error: problem });
    const renamed = await passkeys.rename(who.account.id, target.id, typeof body.name === 'string' ? body.name : '');
    audit(deps.logger, 'passkey_renamed', { accountId: who.account.id, source: 'account_page' }, 'passkey renamed');
    await renderAccount(ctx, { ...who, account: (await accounts.find(who.account.id))! }, { notice: `Renamed to “${renamed.name}”.` });
  });

  router.post('/passkeys/remove', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    const body = ctx.request.body as Record<string, unknown>;
    const target = passkeysOf(who.account).find((p) => p.id === body.passkey_id);
    if (!target) return renderAccount(ctx, who, { error: 'That passkey is not yours, or it was removed.' });
    const last = !SecondFactor.isEnrolled(who.account) && passkeysOf(who.account).length === 1;
    if (last && mfaPolicy === 'required') return renderAccount(ctx, who, { error: 'This is your only second factor, and this server requires one: add another passkey or an authenticator app first.' });
    const problem = await proof(ctx, who);
    if (problem) return renderAccount(ctx, who, { error: problem });
    await passkeys.remove(who.account.id, target.id);
    if (last) await secondFactor.dropRecoveryCodesWithoutFactor(who.account.id);
    // Whoever signed in with it is signed out; this browser stays.
    const ended = await revokeAccountSessions(store, who.account.id, { keepSessionId: who.sessionId });
    deps.metrics.passkeys.inc({ event: 'removed', detail: 'account_page' });
    audit(deps.logger, 'passkey_removed', { accountId: who.account.id, count: 1, source: 'account_page', ...ended }, 'passkey removed; other sessions ended');
    await email.notify(who.account, 'passkey-removed');
    await renderAccount(ctx, { ...who, account: (await accounts.find(who.account.id))! }, { notice: `The passkey “${target.name}” was removed. You were signed out everywhere else.` });
  });

  router.post('/password', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    const body = ctx.request.body as Record<string, unknown>;
    const next = typeof body.new_password === 'string' ? body.new_password : '';
    try {
      await accounts.checkPassword(next, who.account.email);
    } catch (err) {
      if (err instanceof AccountError) return renderAccount(ctx, who, { error: `The new password is not accepted: ${err.message}.` });
      throw err;
    }
    const problem = await proof(ctx, who);
    if (problem) return renderAccount(ctx, who, { error: problem });
    await accounts.setPassword(who.account.id, next);
    // Whoever knew the old password is signed out and their tokens die; this browser stays signed in.
    const ended = await revokeAccountSessions(store, who.account.id, { keepSessionId: who.sessionId });
    audit(deps.logger, 'password_changed', { accountId: who.account.id, source: 'account_page', ...ended }, 'password changed on the account page; other sessions ended');
    await email.notify(who.account, 'password-changed');
    await renderAccount(ctx, who, { notice: 'Your password was changed. You were signed out everywhere else.' });
  });

  // ---- the address: proved by a link sent to it ----

  // Sending a link to the account's own address needs no proof: it changes nothing until it is followed.
  router.post('/email/verify', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    if (!email.on) return renderAccount(ctx, who, { error: 'This server sends no email.' });
    if (isEmailVerified(who.account)) return renderAccount(ctx, who, { notice: 'Your address is confirmed already.' });
    const sent = await email.sendVerification(who.account, 'account_page');
    await renderAccount(ctx, who, sent ? { notice: `A link is on its way to ${who.account.email}. Open it to confirm your address.` } : { error: 'Several links were sent to this address within the hour. Try again later.' });
  });

  // A new address takes effect only when a link sent to it is followed; the old address is told, with a way to cancel.
  router.post('/email', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    if (!email.on) return renderAccount(ctx, who, { error: 'This server sends no email: ask your administrator to change your address.' });
    const raw = (ctx.request.body as Record<string, unknown>).new_email;
    const next = typeof raw === 'string' ? normalizeEmail(raw.slice(0, 300)) : '';
    if (!isEmailAddress(next)) {
      ctx.status = 400;
      return renderAccount(ctx, who, { error: 'Enter the new address, e.g. name@example.com.' });
    }
    if (next === who.account.email) return renderAccount(ctx, who, { error: 'That is your current address.' });
    const problem = await proof(ctx, who);
    if (problem) return renderAccount(ctx, who, { error: problem });
    // Whether the address belongs to someone else is told only when the link is followed (by its reader).
    const sent = await email.requestAddressChange(who.account, next, 'account_page');
    await renderAccount(ctx, who, sent ? { notice: `A link is on its way to ${next}. Your address changes when you open it; until then you sign in with ${who.account.email}.` } : { error: 'Several links were sent to that address within the hour. Try again later.' });
  });

  // Taking an app's access back needs no fresh proof: it only ever removes access.
  router.post('/apps/remove', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    const clientId = (ctx.request.body as Record<string, unknown>).client_id;
    const revoked = typeof clientId === 'string' && clientId.length <= 200 ? await revokeConnectedApp(store, who.account.id, clientId) : undefined;
    if (!revoked) {
      ctx.status = 400;
      return renderAccount(ctx, who, { error: 'That app has no access to your account.' });
    }
    const name = (await deps.registry.findClient(revoked.clientId))?.client_name;
    const { event, fields, msg } = consentRevokedEvent(who.account.id, revoked, 'account_page');
    audit(deps.logger, event, fields, msg);
    await renderAccount(ctx, who, { notice: `${typeof name === 'string' && name ? name : revoked.clientId} no longer has access to your account; it asks again if you sign in to it.` });
  });

  router.post('/sign-out-everywhere', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    const { sessions, grants } = await revokeAccountSessions(store, who.account.id);
    audit(deps.logger, 'sessions_revoked', { accountId: who.account.id, sessions, grants, source: 'account_page' }, 'signed out everywhere');
    views.render(ctx, 'logged-out', { title: 'Signed out', everywhere: true });
  });

  return router;
}

/** The page's own client (registry.ts `ensureOwnClient`). */
export function ensureAccountPageClient(deps: { store: Store; registry: Registry; issuer: string }): Promise<string> {
  return ensureOwnClient(deps, { key: keys.accountPageClient, name: 'Your Latchkey account', callbackPath: '/account/callback' });
}
