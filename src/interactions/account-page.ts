import Router from '@koa/router';
import type { Context } from 'koa';
import { AccountError, hasFactor, isEmailAddress, isEmailVerified, normalizeEmail, type Account } from '../accounts/accounts.ts';
import { authenticatorName, passkeysOf } from '../accounts/passkeys.ts';
import { consentRevokedEvent, listConnectedApps, revokeConnectedApp, type ConnectedApp } from '../accounts/connected-apps.ts';
import { SecondFactor } from '../accounts/second-factor.ts';
import { browserInWords, factorsInWords, handleOfSessionId, liveSessions } from '../accounts/sessions.ts';
import { SudoMode } from '../accounts/sudo-mode.ts';
import { audit } from '../observability/audit.ts';
import { ensureOwnClient, ownSignInUrl, type Registry } from '../oidc/registry.ts';
import { keys } from '../storage/keys.ts';
import { endAccountSession, revokeAccountSessions } from '../storage/oidc-adapter.ts';
import { sameOriginForms } from '../security/same-origin.ts';
import { FactorChecks, type Checked } from '../signin/factors/factor-checks.ts';
import type { Store } from '../storage/store.ts';
import { formBody } from '../security/form-body.ts';
import { MESSAGES } from '../signin/messages.ts';
import type { InteractionDeps } from './routes.ts';
import { describeScopes, type ScopeDescriptions } from '../signin/scope-words.ts';
import { formatDay, formatMoment, translator } from '../i18n/catalogue.ts';
import { localeOfRequest, type Locale } from '../i18n/locale.ts';

/**
 * `/account`: a signed-in person's profile, sign-in and security, connected apps and sessions.
 *
 * Who is signed in is oidc-provider's own session (its `_session` cookie, read with Session.get). A
 * person without one is sent through the ordinary sign-in — password, second factor, enrollment when
 * needed — as a first-party public client of this server (PKCE, redirect back to /account/callback),
 * so there is one sign-in flow with one lockout, and nothing here creates sessions by hand. The
 * callback needs no code redemption: the session the flow created is what this page uses.
 *
 * Changes to how the person signs in need "sudo mode" (accounts/sudo-mode.ts): the current password
 * and a current code, or one of their passkeys with user verification, proved once in this session and
 * counted by the lockout, then good for ACCOUNT_SUDO_SECONDS. Removing the last factor and changing the
 * address ask again every time. Forms are plain posts with a CSRF token bound to the session, so the
 * page works without JavaScript. A post that worked answers 303 with a one-minute flash (never a secret),
 * except those showing a new secret (recovery codes, a new authenticator's key), which are the post's
 * answer; one that did not is the page with a 4xx and the error next to the form that failed.
 */
export interface AccountPageDeps extends InteractionDeps {
  /** The page's own client (ensureAccountPageClient). */
  clientId: string;
  /** Names the connected apps. */
  registry: Pick<Registry, 'findClient' | 'scopeDescription'>;
  /** ACCOUNT_SUDO_SECONDS. */
  sudoSeconds: number;
  /** WEBAUTHN_RP_ID: named in the WebAuthn Signal API calls that keep the person's device in sync. */
  rpId: string;
  /** Sudo mode's clock; tests inject one to pass its end without waiting. */
  clock?: () => number;
}

/** `2026-12-07 09:14 UTC` (English keeps the ISO-like form) or `7. Dezember 2026, 09:14 UTC`, with the ISO value for `<time datetime>`. */
function when(locale: Locale, epochMs: number | undefined): { text: string; iso: string } | undefined {
  if (epochMs === undefined) return undefined;
  const iso = new Date(epochMs).toISOString();
  return { text: locale === 'en' ? `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC` : formatMoment(locale, epochMs), iso };
}

function day(locale: Locale, epochMs: number | undefined): string {
  if (epochMs === undefined) return translator(locale)('time.unknown');
  return locale === 'en' ? new Date(epochMs).toISOString().slice(0, 10) : formatDay(locale, epochMs);
}

/** A connected app as the page shows it: its scopes in the consent page's words. */
async function appView(locale: Locale, app: ConnectedApp, registry: ScopeDescriptions) {
  return { clientId: app.clientId, name: app.name, scopes: await describeScopes(registry, app.scopes), grantedAt: day(locale, app.grantedAt), lastUsedAt: day(locale, app.lastUsedAt) };
}

/** What the page says after a post: a sentence, and for an error the form it belongs next to. */
interface Flash {
  notice?: string;
  error?: string;
  /** The form (and anchor) the sentence belongs to. */
  form?: string;
}

const FLASH = 'lk_account_flash';
const FLASH_MS = 60_000;
const HANDLE = /^[A-Za-z0-9_-]{22}$/;

export function accountRoutes(deps: AccountPageDeps) {
  const { provider, accounts, store, views, csrf, secondFactor, passkeys, passkeyMode, mfaPolicy, issuer, clientId, email } = deps;
  const checks = new FactorChecks(deps);
  const sudo = new SudoMode(store, deps.sudoSeconds, deps.clock);
  const callback = `${issuer}/account/callback`;
  const router = new Router({ prefix: '/account' });
  const form = formBody();
  const FORM_EXPIRED = 'the form expired; open your account page again';
  const PASSKEY_NOT_ACCEPTED = 'The passkey was not accepted. Try again, or use your password and code.';
  const CONFIRM_FIRST = 'Confirm it’s you first: your confirmation ran out.';
  const sameOrigin = sameOriginForms(issuer, views, FORM_EXPIRED);

  interface Signed {
    account: Account & { id: string };
    /** oidc-provider's session id: the one session a password or authenticator change keeps. */
    sessionId: string;
    /** This browser's session among the person's sessions (accounts/sessions.ts). */
    handle: string;
    /** What sudo mode is bound to. */
    sessionUid: string;
    csrfScope: string;
  }

  async function signedIn(ctx: Context): Promise<Signed | undefined> {
    const session = await provider.Session.get(ctx);
    if (!session.accountId) return undefined;
    const account = await accounts.find(session.accountId);
    if (!account || account.disabled) return undefined;
    const sessionUid = session.uid ?? session.jti;
    return { account, sessionId: session.jti, handle: handleOfSessionId(session.jti), sessionUid, csrfScope: `account:${session.uid ?? session.accountId}` };
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

  /** A post is answered with 303 back to the page (at the section that was used), so a reload never sends it again. */
  function back(ctx: Context, flash: Flash, to = '/account') {
    const anchor = flash.form ? `#${sectionOf(flash.form)}` : '';
    ctx.cookies.set(FLASH, Buffer.from(JSON.stringify({ ...flash, at: Date.now() })).toString('base64url'), { signed: true, httpOnly: true, sameSite: 'lax', path: '/account', maxAge: FLASH_MS, overwrite: true });
    ctx.status = 303;
    ctx.redirect(`${to}${anchor}`);
  }

  /**
   * A post's answer: what worked is a 303 with the sentence (the flash); what did not is the page
   * itself with a 4xx and the error next to the form that failed.
   */
  async function answer(ctx: Context, who: Signed, flash: Flash, status = 400) {
    if (!flash.error) return back(ctx, flash);
    ctx.status = status;
    await renderAccount(ctx, who, flash);
  }

  /** The flash left by the post before, once; empty when none, forged or stale. */
  function takeFlash(ctx: Context): Flash {
    const value = ctx.cookies.get(FLASH, { signed: true });
    if (value === undefined) return {};
    ctx.cookies.set(FLASH, null, { signed: true, path: '/account', overwrite: true });
    try {
      const { notice, error, form: which, at } = JSON.parse(Buffer.from(value, 'base64url').toString()) as Record<string, unknown>;
      if (typeof at !== 'number' || Date.now() - at > FLASH_MS) return {};
      const text = (v: unknown) => (typeof v === 'string' ? v.slice(0, 500) : undefined);
      return { notice: text(notice), error: text(error), form: text(which) };
    } catch {
      return {};
    }
  }

  /** The page section a form lives in: where the answer to its post scrolls to. */
  function sectionOf(which: string): string {
    if (which === 'email' || which === 'email-verify') return 'profile';
    if (which.startsWith('passkey')) return 'passkeys';
    if (which === 'apps') return 'connected-apps';
    if (which === 'sessions') return 'sessions';
    return 'security';
  }

  async function renderAccount(ctx: Context, who: Signed, flash: Flash) {
    const { account } = who;
    const enrolled = SecondFactor.isEnrolled(account);
    const ownPasskeys = passkeysOf(account);
    const sudoUntil = await sudo.until(who.sessionUid, account.id);
    const live = await liveSessions(store, account.id);
    const names = new Map<string, string>();
    await Promise.all([...new Set(live.flatMap((s) => s.clients))].map(async (id) => {
      if (id === clientId) return;
      const name = (await deps.registry.findClient(id))?.client_name;
      names.set(id, typeof name === 'string' && name ? name : id);
    }));
    // The factor that is the account's last: removing it asks again, whatever sudo mode says.
    const lastFactor = (enrolled ? 1 : 0) + ownPasskeys.length === 1;
    const { locale } = localeOfRequest(ctx);
    views.render(ctx, 'account', {
      title: 'Your account',
      csrf: csrf.token(who.csrfScope),
      flash,
      email: account.email,
      emailVerified: isEmailVerified(account),
      emailOn: email.on,
      name: account.name,
      enrolled,
      hasFactor: hasFactor(account),
      lastFactor,
      mayRemoveLast: mfaPolicy !== 'required',
      enrolledAt: enrolled ? day(locale, account.mfa.enrolledAt) : undefined,
      recoveryLeft: hasFactor(account) ? await secondFactor.recoveryCodesLeft(account) : 0,
      passkeysOn: passkeyMode !== 'off',
      passkeys: ownPasskeys.map((p) => ({ id: p.id, name: p.name, authenticator: authenticatorName(p.aaguid), created: day(locale, p.createdAt), lastUsed: p.lastUsedAt ? day(locale, p.lastUsedAt) : undefined })),
      apps: await Promise.all((await listConnectedApps(store, deps.registry, account.id)).map((app) => appView(locale, app, deps.registry))),
      sudo: sudoUntil === undefined ? undefined : when(locale, sudoUntil),
      sudoMinutes: Math.round(deps.sudoSeconds / 60),
      // This browser first, then the others, newest sign-in first.
      sessions: [...live.filter((s) => s.handle === who.handle), ...live.filter((s) => s.handle !== who.handle)].map((s) => ({
        handle: s.handle, current: s.handle === who.handle, browser: browserInWords(s.browser, locale), ip: s.ip, signedIn: when(locale, s.loginTs === undefined ? undefined : s.loginTs * 1000),
        factors: factorsInWords(s.amr, locale), apps: s.clients.flatMap((c) => (names.has(c) ? [names.get(c)!] : [])),
      })),
      // One challenge per render, for this session, used up by whichever form a passkey proves first.
      passkeyProof: passkeyProves(account) ? await passkeys.authenticationOptions(who.csrfScope, account, 'required') : undefined,
      passkeyScript: passkeyProves(account),
      // The WebAuthn Signal API (views/account.js): the device learns which passkeys still count and the current name.
      signals: passkeyMode === 'off' ? undefined : {
        rpId: deps.rpId, userId: Buffer.from(account.id).toString('base64url'), credentialIds: ownPasskeys.map((p) => p.id), name: account.email, displayName: account.name ?? account.email,
      },
    });
  }

  /** Whether a passkey assertion can stand in for password and code: one of the person's own passkeys. */
  function passkeyProves(account: Account): boolean {
    return passkeyMode !== 'off' && passkeysOf(account).length > 0;
  }

  interface Problem {
    error: string;
    /** Locked out: answered 429 with Retry-After, not redirected. */
    retryAfterSeconds?: number;
  }

  /**
   * The proof sudo mode (and each ask-again action) needs: the current password and a current code
   * (TOTP or recovery code), or instead an assertion of one of the person's passkeys with user
   * verification (something held and something known or are, at once). An account without a factor
   * (MFA_POLICY=optional) proves the password only. A success starts (or extends) sudo mode.
   */
  async function proof(ctx: Context, who: Signed): Promise<Problem | undefined> {
    const problem = await proofProblem(ctx, who);
    if (!problem) await sudo.start(who.sessionUid, who.account.id);
    return problem;
  }

  async function proofProblem(ctx: Context, who: Signed): Promise<Problem | undefined> {
    const body = ctx.request.body as Record<string, unknown>;
    if (typeof body.passkey_response === 'string' && body.passkey_response !== '') {
      if (!passkeyProves(who.account)) return { error: PASSKEY_NOT_ACCEPTED };
      const checked = await checks.passkey(who.csrfScope, body.passkey_response, ctx.ip, who.account, 'proof');
      if (checked.status === 'locked') return { error: MESSAGES.locked, retryAfterSeconds: checked.retryAfterSeconds };
      return checked.status === 'ok' ? undefined : { error: PASSKEY_NOT_ACCEPTED };
    }
    const password = typeof body.current_password === 'string' ? body.current_password : '';
    const code = typeof body.code === 'string' ? body.code.slice(0, 64) : '';
    const pwd = await checks.password(who.account.email, password, ctx.ip);
    if (pwd.status === 'locked') return { error: MESSAGES.locked, retryAfterSeconds: pwd.retryAfterSeconds };
    if (pwd.status !== 'ok' || pwd.account.id !== who.account.id) return { error: 'Your current password is not right.' };
    if (!hasFactor(who.account)) return undefined;
    // Passkeys only: the code is a recovery code (there is no app to take a code from).
    const input = who.account.mfa && /^[\d\s-]+$/.test(code) ? { totp: code } : { recoveryCode: code };
    const second: Checked = await checks.secondFactor(who.account, input, ctx.ip);
    if (second.status === 'locked') return { error: MESSAGES.locked, retryAfterSeconds: second.retryAfterSeconds };
    if (second.status !== 'ok') return { error: second.reason === 'replayed' ? MESSAGES.usedCode : 'That code is not right. Enter the current code from your authenticator app.' };
    return undefined;
  }

  /** A failed proof next to its form: 303 with the sentence, or the page itself with 429 while locked. */
  async function refuse(ctx: Context, who: Signed, which: string, problem: Problem) {
    if (problem.retryAfterSeconds === undefined) return answer(ctx, who, { error: problem.error, form: which });
    ctx.status = 429;
    ctx.set('Retry-After', String(problem.retryAfterSeconds));
    await renderAccount(ctx, who, { error: problem.error, form: which });
  }

  /** In sudo mode, or the answer (back to the proof form) is given. */
  async function inSudo(ctx: Context, who: Signed): Promise<boolean> {
    if ((await sudo.until(who.sessionUid, who.account.id)) !== undefined) return true;
    await answer(ctx, who, { error: CONFIRM_FIRST, form: 'sudo' }, 403);
    return false;
  }

  async function showRecoveryCodes(ctx: Context, who: Signed, codes: string[]) {
    views.render(ctx, 'recovery-codes', { title: 'Save your recovery codes', csrf: csrf.token(who.csrfScope), codes, email: who.account.email, action: '/account/saved', confirmSaved: true });
  }

  router.get('/', async (ctx) => {
    const who = await signedIn(ctx);
    if (!who) return toSignIn(ctx);
    await renderAccount(ctx, who, takeFlash(ctx));
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

  // ---- sudo mode: prove once, then change things for a few minutes ----

  router.post('/sudo', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    const problem = await proof(ctx, who);
    if (problem) return refuse(ctx, who, 'sudo', problem);
    audit(deps.logger, 'account_sudo_started', { accountId: who.account.id, seconds: deps.sudoSeconds, source: 'account_page' }, 'proved who they are on the account page');
    await answer(ctx, who, { notice: `Thanks — for the next ${Math.round(deps.sudoSeconds / 60)} minutes you can change how you sign in without proving it again.`, form: 'security' });
  });

  router.post('/saved', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    await answer(ctx, who, { notice: 'Your recovery codes are saved. Each one works once.', form: 'recovery' });
  });

  router.post('/recovery-codes', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who || !(await inSudo(ctx, who))) return;
    if (!hasFactor(who.account)) return answer(ctx, who, { error: 'Set up two-step verification first.', form: 'recovery' });
    const codes = await secondFactor.regenerateRecoveryCodes(who.account.id);
    audit(deps.logger, 'recovery_codes_regenerated', { accountId: who.account.id, count: codes.length, source: 'account_page' }, 'new recovery codes; the old ones stopped working');
    await email.notify(who.account, 'recovery-codes');
    await showRecoveryCodes(ctx, who, codes);
  });

  // ---- the authenticator app ----

  // Replace (or set up) the authenticator: in sudo mode, then the new app's code.
  router.post('/authenticator', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who || !(await inSudo(ctx, who))) return;
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
    if (!provisioning) return answer(ctx, who, { error: 'The setup took too long. Start again.', form: 'authenticator' });
    let checked;
    try {
      checked = await checks.enroll(who.account, pending, code, ctx.ip, { replace: true });
    } catch (err) {
      if (err instanceof AccountError) return answer(ctx, who, { error: 'The setup did not finish. Start again.', form: 'authenticator' });
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
    // The new key stays on screen while the person retries: this page is the post's answer.
    if (checked.status === 'locked') {
      ctx.status = 429;
      ctx.set('Retry-After', String(checked.retryAfterSeconds));
    }
    const error = checked.status === 'locked' ? MESSAGES.locked : checked.reason === 'expired' ? 'The setup took too long. Start again.' : MESSAGES.wrongCode;
    renderEnroll(ctx, who, pending, provisioning, error);
  });

  // Removing the app: in sudo mode, or — when it is the last factor — with a fresh proof in the form.
  router.post('/authenticator/remove', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    if (!SecondFactor.isEnrolled(who.account)) return answer(ctx, who, { error: 'There is no authenticator app to remove.', form: 'authenticator' });
    const last = passkeysOf(who.account).length === 0;
    if (last && mfaPolicy === 'required') return answer(ctx, who, { error: 'This is your only second factor, and this server requires one: add a passkey first.', form: 'authenticator' });
    if (last) {
      const problem = await proof(ctx, who);
      if (problem) return refuse(ctx, who, 'authenticator', problem);
    } else if (!(await inSudo(ctx, who))) return;
    await secondFactor.removeAuthenticator(who.account.id);
    const ended = await revokeAccountSessions(store, who.account.id, { keepSessionId: who.sessionId });
    audit(deps.logger, 'second_factor_removed', { accountId: who.account.id, reason: 'removed', source: 'account_page', ...ended }, 'authenticator removed; other sessions ended');
    await email.notify(who.account, 'authenticator-removed');
    await answer(ctx, who, { notice: 'Your authenticator app was removed. You were signed out everywhere else.', form: 'authenticator' });
  });

  // ---- passkeys ----

  // The challenge is issued only in sudo mode, for this session, once.
  router.get('/passkeys/new', async (ctx) => {
    const who = await signedIn(ctx);
    if (!who) return toSignIn(ctx);
    if (passkeyMode === 'off') return answer(ctx, who, { error: 'Passkeys are turned off on this server.', form: 'passkeys' });
    if (!(await inSudo(ctx, who))) return;
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
    if (checked.status === 'locked') return refuse(ctx, who, 'passkeys', { error: MESSAGES.locked, retryAfterSeconds: checked.retryAfterSeconds });
    if (checked.status !== 'ok') return answer(ctx, who, { error: 'The passkey was not created. Start again.', form: 'passkeys' });
    await email.notify(who.account, 'passkey-added');
    const codes = await secondFactor.issueRecoveryCodesIfNone(who.account.id);
    if (codes.length) return showRecoveryCodes(ctx, who, codes);
    await answer(ctx, who, { notice: `Your passkey “${checked.passkey.name}” was added.`, form: 'passkeys' });
  });

  router.post('/passkeys/rename', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    const body = ctx.request.body as Record<string, unknown>;
    const target = passkeysOf(who.account).find((p) => p.id === body.passkey_id);
    if (!target) return answer(ctx, who, { error: 'That passkey is not yours, or it was removed.', form: 'passkeys' });
    if (!(await inSudo(ctx, who))) return;
    const renamed = await passkeys.rename(who.account.id, target.id, typeof body.name === 'string' ? body.name : '');
    audit(deps.logger, 'passkey_renamed', { accountId: who.account.id, source: 'account_page' }, 'passkey renamed');
    await answer(ctx, who, { notice: `Renamed to “${renamed.name}”.`, form: 'passkeys' });
  });

  // Removing a passkey: in sudo mode, or — when it is the last factor — with a fresh proof in the form.
  router.post('/passkeys/remove', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    const body = ctx.request.body as Record<string, unknown>;
    const target = passkeysOf(who.account).find((p) => p.id === body.passkey_id);
    if (!target) return answer(ctx, who, { error: 'That passkey is not yours, or it was removed.', form: 'passkeys' });
    const which = `passkey:${target.id}`;
    const last = !SecondFactor.isEnrolled(who.account) && passkeysOf(who.account).length === 1;
    if (last && mfaPolicy === 'required') return answer(ctx, who, { error: 'This is your only second factor, and this server requires one: add another passkey or an authenticator app first.', form: which });
    if (last) {
      const problem = await proof(ctx, who);
      if (problem) return refuse(ctx, who, which, problem);
    } else if (!(await inSudo(ctx, who))) return;
    await passkeys.remove(who.account.id, target.id);
    if (last) await secondFactor.dropRecoveryCodesWithoutFactor(who.account.id);
    // Whoever signed in with it is signed out; this browser stays.
    const ended = await revokeAccountSessions(store, who.account.id, { keepSessionId: who.sessionId });
    deps.metrics.passkeys.inc({ event: 'removed', detail: 'account_page' });
    audit(deps.logger, 'passkey_removed', { accountId: who.account.id, count: 1, source: 'account_page', ...ended }, 'passkey removed; other sessions ended');
    await email.notify(who.account, 'passkey-removed');
    // The page it lands on tells the device which passkeys still count (signalAllAcceptedCredentials).
    await answer(ctx, who, { notice: `The passkey “${target.name}” was removed. You were signed out everywhere else. Your device was asked to forget it too.`, form: 'passkeys' });
  });

  // ---- password ----

  router.post('/password', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who || !(await inSudo(ctx, who))) return;
    const body = ctx.request.body as Record<string, unknown>;
    const next = typeof body.new_password === 'string' ? body.new_password : '';
    try {
      await accounts.checkPassword(next, who.account.email);
    } catch (err) {
      if (err instanceof AccountError) return answer(ctx, who, { error: `The new password is not accepted: ${err.message}.`, form: 'password' });
      throw err;
    }
    await accounts.setPassword(who.account.id, next);
    // Whoever knew the old password is signed out and their tokens die; this browser stays signed in.
    const ended = await revokeAccountSessions(store, who.account.id, { keepSessionId: who.sessionId });
    audit(deps.logger, 'password_changed', { accountId: who.account.id, source: 'account_page', ...ended }, 'password changed on the account page; other sessions ended');
    await email.notify(who.account, 'password-changed');
    await answer(ctx, who, { notice: 'Your password was changed. You were signed out everywhere else.', form: 'password' });
  });

  // ---- the address: proved by a link sent to it ----

  // Sending a link to the account's own address needs no proof: it changes nothing until it is followed.
  router.post('/email/verify', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    if (!email.on) return answer(ctx, who, { error: 'This server sends no email.', form: 'email-verify' });
    if (isEmailVerified(who.account)) return answer(ctx, who, { notice: 'Your address is confirmed already.', form: 'email-verify' });
    const sent = await email.sendVerification(who.account, 'account_page');
    await answer(ctx, who, sent ? { notice: `A link is on its way to ${who.account.email}. Open it to confirm your address.`, form: 'email-verify' } : { error: 'Several links were sent to this address within the hour. Try again later.', form: 'email-verify' });
  });

  // A new address takes effect only when a link sent to it is followed; the old address is told, with a way to cancel.
  // It asks for proof every time, sudo mode or not: the address is how an account is recovered.
  router.post('/email', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    if (!email.on) return answer(ctx, who, { error: 'This server sends no email: ask your administrator to change your address.', form: 'email' });
    const raw = (ctx.request.body as Record<string, unknown>).new_email;
    const next = typeof raw === 'string' ? normalizeEmail(raw.slice(0, 300)) : '';
    if (!isEmailAddress(next)) return answer(ctx, who, { error: 'Enter the new address, e.g. name@example.com.', form: 'email' });
    if (next === who.account.email) return answer(ctx, who, { error: 'That is your current address.', form: 'email' });
    const problem = await proof(ctx, who);
    if (problem) return refuse(ctx, who, 'email', problem);
    // Whether the address belongs to someone else is told only when the link is followed (by its reader).
    const sent = await email.requestAddressChange(who.account, next, 'account_page');
    await answer(ctx, who, sent ? { notice: `A link is on its way to ${next}. Your address changes when you open it; until then you sign in with ${who.account.email}.`, form: 'email' } : { error: 'Several links were sent to that address within the hour. Try again later.', form: 'email' });
  });

  // ---- connected apps and sessions: taking access away needs no proof ----

  router.post('/apps/remove', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    const clientId = (ctx.request.body as Record<string, unknown>).client_id;
    const revoked = typeof clientId === 'string' && clientId.length <= 200 ? await revokeConnectedApp(store, who.account.id, clientId) : undefined;
    if (!revoked) return answer(ctx, who, { error: 'That app has no access to your account.', form: 'apps' });
    const name = (await deps.registry.findClient(revoked.clientId))?.client_name;
    const { event, fields, msg } = consentRevokedEvent(who.account.id, revoked, 'account_page');
    audit(deps.logger, event, fields, msg);
    await answer(ctx, who, { notice: `${typeof name === 'string' && name ? name : revoked.clientId} no longer has access to your account; it asks again if you sign in to it.`, form: 'apps' });
  });

  /** Ends this browser's session: the record goes (its apps are told), and sudo mode with it. */
  async function signOutHere(ctx: Context, who: Signed) {
    const ended = await endAccountSession(store, who.account.id, who.handle);
    await sudo.end(who.sessionUid);
    audit(deps.logger, 'session_ended', { accountId: who.account.id, session: who.handle, grants: ended?.grants ?? 0, source: 'account_page' }, 'signed out of this browser');
    ctx.status = 303;
    ctx.redirect('/account/signed-out');
  }

  router.post('/sessions/end', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    const handle = (ctx.request.body as Record<string, unknown>).session;
    if (handle === who.handle) return signOutHere(ctx, who);
    const ended = typeof handle === 'string' && HANDLE.test(handle) ? await endAccountSession(store, who.account.id, handle) : undefined;
    if (!ended) return answer(ctx, who, { error: 'That session has ended already.', form: 'sessions' });
    audit(deps.logger, 'session_ended', { accountId: who.account.id, session: handle, grants: ended.grants, source: 'account_page' }, 'a session was ended');
    await answer(ctx, who, { notice: 'That session was ended: the browser is signed out, and the apps signed in with it lost their access.', form: 'sessions' });
  });

  router.post('/sign-out', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (who) await signOutHere(ctx, who);
  });

  // Sign out everywhere asks once, on a page of its own that says what it ends.
  router.get('/sign-out-everywhere', async (ctx) => {
    const who = await signedIn(ctx);
    if (!who) return toSignIn(ctx);
    const sessions = (await liveSessions(store, who.account.id)).length;
    views.render(ctx, 'account-sign-out-everywhere', { title: 'Sign out everywhere?', csrf: csrf.token(who.csrfScope), sessions });
  });

  router.post('/sign-out-everywhere', sameOrigin, form, async (ctx) => {
    const who = await guardPost(ctx);
    if (!who) return;
    if ((ctx.request.body as Record<string, unknown>).confirm !== 'yes') {
      ctx.status = 303;
      return ctx.redirect('/account/sign-out-everywhere');
    }
    const { sessions, grants } = await revokeAccountSessions(store, who.account.id);
    await sudo.end(who.sessionUid);
    audit(deps.logger, 'sessions_revoked', { accountId: who.account.id, sessions, grants, source: 'account_page' }, 'signed out everywhere');
    ctx.status = 303;
    ctx.redirect('/account/signed-out?everywhere=1');
  });

  router.get('/signed-out', (ctx) => {
    views.render(ctx, 'logged-out', { title: 'Signed out', everywhere: ctx.query.everywhere === '1' });
  });

  return router;
}

/** The page's own client (registry.ts `ensureOwnClient`). */
export function ensureAccountPageClient(deps: { store: Store; registry: Registry; issuer: string }): Promise<string> {
  return ensureOwnClient(deps, { key: keys.accountPageClient, name: 'Your Latchkey account', callbackPath: '/account/callback' });
}
