import Router from '@koa/router';
import type { Context } from 'koa';
import type { default as Provider, InteractionResults } from 'oidc-provider';
import { AccountError, normalizeEmail, type Account, type Accounts } from '../accounts/accounts.ts';
import { passkeysOf, type Passkeys } from '../accounts/passkeys.ts';
import { readConsent, rememberConsent, type Consent } from '../accounts/connected-apps.ts';
import { SecondFactor } from '../accounts/second-factor.ts';
import { audit } from '../observability/audit.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import { formTargets } from '../oidc/provider.ts';
import { appAskedForConsent } from '../signin/consent.ts';
import type { Csrf } from '../security/csrf.ts';
import type { Lockout } from '../security/lockout.ts';
import { sameOriginForms } from '../security/same-origin.ts';
import type { Store } from '../storage/store.ts';
import type { Views } from '../views.ts';
import { mfaDemanded, passkeyAmr, type MfaPolicy } from '../signin/policy.ts';
import { FactorChecks } from '../signin/factors/factor-checks.ts';
import { formBody } from '../security/form-body.ts';
import { guard, transition, type AccountFacts, type EventType, type SignInEvent, type SignInState } from '../signin/machine.ts';
import { SignInSteps, type SignInStep } from '../signin/steps.ts';
import { MESSAGES, REFUSALS } from '../signin/messages.ts';
import { renderDeviceRequest } from './device-request.ts';
import { scopeInWords } from '../signin/scope-words.ts';

/**
 * The sign-in pages. The transitions are the pure state machine of signin/machine.ts; these routes
 * only turn a request into an event (after verifying what the person sent) and the outcome into an
 * answer. Each reads the interaction from oidc-provider first (its cookie binds it to this browser),
 * and every route lists its guards in order.
 */
export interface InteractionDeps {
  provider: Provider;
  accounts: Accounts;
  store: Store;
  views: Views;
  csrf: Csrf;
  secondFactor: SecondFactor;
  passkeys: Passkeys;
  /** PASSKEYS: `off` offers none; `preferred` puts the passkey first. */
  passkeyMode: 'off' | 'optional' | 'preferred';
  lockout: Lockout;
  mfaPolicy: MfaPolicy;
  metrics: Metrics;
  logger: Logger;
  /** The issuer URL: the one origin our forms may be posted from. */
  issuer: string;
}

/** What each scope lets the app do, in words, for the consent pages. */
function describeScopes(scopes: string[]): string[] {
  return scopes.map(scopeInWords);
}

type Details = Awaited<ReturnType<Provider['interactionDetails']>>;

export function interactionRoutes({ provider, accounts, store, views, csrf, secondFactor, passkeys, passkeyMode, lockout, mfaPolicy, metrics, logger, issuer }: InteractionDeps) {
  const router = new Router({ prefix: '/interaction/:uid' });
  const form = formBody();
  const FORM_EXPIRED = 'the form expired; go back to the application and start again';
  const sameOrigin = sameOriginForms(issuer, views, FORM_EXPIRED);
  const steps = new SignInSteps(store);

  /** A 400 that our error handler shows to the person as is. */
  function refuse(message: string): never {
    throw Object.assign(new Error(message), { status: 400, expose: true });
  }

  async function details(ctx: Context): Promise<Details> {
    // The interaction the browser's cookie holds; the machine's guard checks it is the one the path names.
    return provider.interactionDetails(ctx.req, ctx.res);
  }

  const requireCsrf = async (ctx: Context, next: () => Promise<unknown>) => {
    const body = ctx.request.body as Record<string, unknown> | undefined;
    if (!csrf.verify(ctx.params.uid!, body?._csrf)) {
      ctx.status = 403;
      views.renderError(ctx, { error: 'invalid_request', error_description: FORM_EXPIRED });
      return;
    }
    await next();
  };

  /**
   * Hands oidc-provider the result of the step and sends the browser back to it. This is
   * `provider.interactionResult` on the interaction this request already loaded and checked against
   * its cookie (`details`), saving the two or three reads that it would repeat.
   */
  async function finish(ctx: Context, d: Details, result: InteractionResults, merge: boolean) {
    d.result = merge && !('error' in result) ? { ...d.lastSubmission, ...result } : result;
    await d.save(d.exp - Math.floor(Date.now() / 1000));
    ctx.status = 303;
    ctx.redirect(d.returnTo);
  }

  async function clientOf(d: Details) {
    return provider.Client.find(String(d.params.client_id));
  }

  async function renderLogin(ctx: Context, d: Details, clientName: string | undefined, extra: Record<string, unknown> = {}) {
    // A passwordless sign-in: any passkey of this site, its challenge bound to this interaction.
    const passkey = passkeyMode === 'off'
      ? undefined
      : { kind: 'sign-in', action: `/interaction/${d.uid}/passkey`, options: await passkeys.authenticationOptions(d.uid), autofill: true, label: 'Sign in with a passkey', secondary: passkeyMode !== 'preferred' };
    views.render(ctx, 'login', { uid: d.uid, csrf: csrf.token(d.uid), clientName, title: 'Sign in', passkey, ...extra }, formTargets(d.params.redirect_uri));
  }

  /** What this person allowed this client before (remembered consent). */
  async function rememberedConsent(d: Details): Promise<Consent | undefined> {
    return readConsent(store, String(d.session?.accountId), String(d.params.client_id));
  }

  /** Every scope of the request (oidc-provider keeps only those the client may ask for). */
  function requestedScopes(d: Details): string[] {
    return [...new Set(String(d.params.scope ?? '').split(' ').filter(Boolean))];
  }

  function missingScopes(d: Details): string[] {
    const det = d.prompt.details as { missingOIDCScope?: string[]; missingResourceScopes?: Record<string, string[]> };
    return [...(det.missingOIDCScope ?? []), ...Object.values(det.missingResourceScopes ?? {}).flat()];
  }

  /** `via`: the person allowed it on the consent page, or it needed no asking (a first-party client, scopes granted before). */
  async function grantConsent(ctx: Context, d: Details, via: 'consent_page' | 'first_party' | 'remembered', remembered?: Consent, firstParty = via === 'first_party') {
    const det = d.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
    const grant = d.grantId
      ? await provider.Grant.find(d.grantId)
      : new provider.Grant({ accountId: d.session!.accountId, clientId: String(d.params.client_id) });
    if (!grant) refuse('the grant of this sign-in is gone; start again');
    if (det.missingOIDCScope) grant.addOIDCScope(det.missingOIDCScope.join(' '));
    if (det.missingOIDCClaims) grant.addOIDCClaims(det.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(det.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
    const scopes = missingScopes(d);
    // The grant and the remembered consent are independent writes: sent together. A first-party client
    // is never asked, so nothing is remembered for it (no year-long record per visit of the account page).
    // Listed on /account as a connected app (accounts/connected-apps.ts), used now.
    const remember = async () => {
      if (firstParty) return;
      await rememberConsent(store, String(d.session!.accountId), String(d.params.client_id), remembered ?? (await rememberedConsent(d)), scopes);
    };
    const [grantId] = await Promise.all([grant.save(), remember()]);
    await finish(ctx, d, { consent: { grantId } }, true);
    audit(logger, 'consent_granted', { accountId: String(d.session!.accountId), clientId: String(d.params.client_id), scopes, via }, 'consent granted');
  }

  const checks = new FactorChecks({ accounts, secondFactor, passkeys, lockout, metrics, logger });

  // ---- the steps' pages ----

  function pageData(d: Details, extra: Record<string, unknown>) {
    return { uid: d.uid, csrf: csrf.token(d.uid), ...extra };
  }

  /** 429 with Retry-After on the form post; the page says to try again later (RFC 6585 §4). */
  function locked(ctx: Context, retryAfterSeconds: number) {
    ctx.status = 429;
    ctx.set('Retry-After', String(retryAfterSeconds));
    return MESSAGES.locked;
  }

  async function renderStep(ctx: Context, d: Details, step: SignInStep, extra: Record<string, unknown> = {}) {
    const targets = formTargets(d.params.redirect_uri);
    if (step.name === 'second-factor') {
      if (extra.recovery) return views.render(ctx, 'recovery', pageData(d, { title: 'Two-step verification', ...extra }), targets);
      const account = await accounts.find(step.accountId);
      if (!account) refuse('this account is gone; start again');
      const passkey = usesPasskeys(account)
        ? { kind: 'verify', action: `/interaction/${d.uid}/mfa/passkey`, options: await passkeys.authenticationOptions(d.uid, account), label: 'Use your passkey' }
        : undefined;
      return views.render(ctx, 'second-factor', pageData(d, { title: 'Two-step verification', totp: SecondFactor.isEnrolled(account), passkey, ...extra }), targets);
    }
    if (step.name === 'recovery-codes') {
      // Shown once, in the answer to the enrollment post; a reload only offers to continue.
      return views.render(ctx, 'recovery-codes', pageData(d, { title: 'Save your recovery codes', codes: undefined, ...extra }), targets);
    }
    const account = await accounts.find(step.accountId);
    if (!account) refuse('this account is gone; start again');
    let provisioning = step.pending ? await secondFactor.provisioningOf(account, step.pending) : undefined;
    if (!provisioning) {
      // The first view of the step, or the pending enrollment expired: a new secret, a new QR code.
      const started = await secondFactor.startEnrollment(account);
      await steps.set(d.uid, { ...step, pending: started.pending }, d.exp);
      if (step.pending) extra = { error: MESSAGES.enrollmentExpired, ...extra };
      provisioning = started;
    }
    const passkey = passkeyMode === 'off'
      ? undefined
      : { kind: 'register', action: `/interaction/${d.uid}/enroll/passkey`, options: await passkeys.registrationOptions(account, d.uid), label: 'Create a passkey' };
    views.render(
      ctx,
      'enroll',
      pageData(d, {
        title: 'Set up two-step verification',
        email: account.email,
        passkey,
        qr: `data:image/svg+xml;base64,${Buffer.from(provisioning.qrSvg).toString('base64')}`,
        secret: provisioning.secret,
        ...extra,
      }),
      targets,
    );
  }

  // ---- the state machine (signin/machine.ts): requests become events, outcomes become answers ----

  function machineInput(ctx: Context, d: Details, state: SignInState) {
    return { interaction: { uid: d.uid, prompt: d.prompt.name, expiresAt: d.exp }, postedFor: String(ctx.params.uid), now: Date.now() / 1000, state };
  }

  /** The interaction and its state, when it takes `event` now; anything else is refused before anything is verified. */
  async function at<T extends EventType>(ctx: Context, event: T): Promise<{ d: Details; state: SignInState }> {
    const d = await details(ctx);
    const state: SignInState = (await steps.get(d.uid)) ?? { name: 'login' };
    const refused = guard(machineInput(ctx, d, state), event);
    if (refused) refuse(REFUSALS[refused]);
    return { d, state };
  }

  /** The state as a step record, when it is the one `event` needs (`at` has checked the name). */
  function stepOf<N extends SignInStep['name']>(state: SignInState, name: N): Extract<SignInStep, { name: N }> {
    if (state.name !== name) refuse(REFUSALS['out-of-order']);
    return state as Extract<SignInStep, { name: N }>;
  }

  /**
   * Carries out the machine's outcome: a new step (303 to it, post/redirect/get, or — recovery codes —
   * shown in this answer, the only time they exist), the finished sign-in, or the cancellation.
   */
  async function apply(ctx: Context, d: Details, state: SignInState, event: SignInEvent, shown: { recoveryCodes?: string[] } = {}) {
    const outcome = transition({ ...machineInput(ctx, d, state), event });
    if (outcome.kind === 'refused') refuse(REFUSALS[outcome.reason]);
    if (outcome.kind === 'cancelled') {
      // `login` is the state of an interaction without a step record: nothing to clear.
      if (state.name !== 'login') await steps.clear(d.uid);
      return finish(ctx, d, { error: 'access_denied', error_description: 'the person declined' }, false);
    }
    if (outcome.kind === 'signed-in') {
      const { login } = outcome;
      // The step record and the interaction's result: independent writes, sent together.
      await Promise.all([state.name === 'login' ? undefined : steps.clear(d.uid), finish(ctx, d, { login }, false)]);
      audit(logger, 'signin_succeeded', { accountId: login.accountId, clientId: String(d.params.client_id), acr: login.acr, amr: login.amr, ip: ctx.ip }, 'signed in');
      return;
    }
    await steps.set(d.uid, outcome.step, d.exp);
    if (outcome.step.name === 'recovery-codes' && shown.recoveryCodes) return renderStep(ctx, d, outcome.step, { codes: shown.recoveryCodes });
    ctx.status = 303;
    ctx.redirect(`/interaction/${d.uid}`);
  }

  /** Whether this account's passkeys are offered (none while PASSKEYS=off). */
  function usesPasskeys(account: Account): boolean {
    return passkeyMode !== 'off' && passkeysOf(account).length > 0;
  }

  /** What the machine needs to know about an account after its password (or when its factors changed). */
  async function factsOf(d: Details, account: Account): Promise<{ account: AccountFacts; factorDemanded: boolean }> {
    const facts = { id: account.id, subject: normalizeEmail(account.email), hasTotp: SecondFactor.isEnrolled(account), hasPasskey: usesPasskeys(account) };
    return { account: facts, factorDemanded: !facts.hasTotp && mfaDemanded(mfaPolicy, await clientOf(d), d.params) };
  }

  /** The factor changed under this sign-in (an operator reset it, another tab enrolled): decide again. */
  async function factorChanged(ctx: Context, d: Details, state: SignInState, accountId: string) {
    const account = await accounts.find(accountId);
    if (!account || account.disabled) refuse('this account cannot sign in; go back to the application and start again');
    await apply(ctx, d, state, { type: 'factor-changed', ...(await factsOf(d, account)) });
  }

  // ---- routes: each lists its guards in order ----

  router.get('/', async (ctx) => {
    const d = await details(ctx);
    if (d.uid !== ctx.params.uid) refuse(REFUSALS['other-interaction']);
    const client = await clientOf(d);
    if (!client) refuse('unknown client');
    if (d.prompt.name === 'login') {
      const step = await steps.get(d.uid);
      return step ? renderStep(ctx, d, step) : renderLogin(ctx, d, client.clientName);
    }
    if (d.prompt.name === 'consent' && d.deviceCode) return renderDeviceRequest(ctx, { provider, accounts, views, csrf }, d, client, describeScopes);
    if (d.prompt.name === 'consent') {
      // Only the scopes not granted before are listed (README: asked again only for new scopes); none for
      // first-party clients. prompt=consent from the app shows the page to every client, with every scope asked for.
      const firstParty = client.first_party === true;
      const remembered = firstParty ? undefined : await rememberedConsent(d);
      const ask = appAskedForConsent(d.params) ? requestedScopes(d) : firstParty ? [] : missingScopes(d).filter((s) => !remembered?.scopes.includes(s));
      if (ask.length === 0) return firstParty ? grantConsent(ctx, d, 'first_party') : grantConsent(ctx, d, 'remembered', remembered);
      const account = await accounts.find(String(d.session?.accountId));
      views.render(
        ctx,
        'consent',
        {
          uid: d.uid,
          csrf: csrf.token(d.uid),
          title: 'Allow access',
          clientName: client.clientName ?? client.clientId,
          email: account?.email,
          items: ask.map(scopeInWords),
        },
        formTargets(d.params.redirect_uri),
      );
      return;
    }
    refuse(`unsupported step ${d.prompt.name}`);
  });

  router.post('/login', sameOrigin, form, requireCsrf, async (ctx) => {
    const { d, state } = await at(ctx, 'password-ok');
    const body = ctx.request.body as Record<string, unknown>;
    const email = typeof body.email === 'string' ? body.email.slice(0, 254) : '';
    const password = typeof body.password === 'string' ? body.password : '';
    const checked = await checks.password(email, password, ctx.ip);
    if (checked.status !== 'ok') {
      const client = await clientOf(d);
      // 200, not 401: a 401 needs a WWW-Authenticate challenge (RFC 9110 §15.5.2), and browsers log 4xx pages as console errors.
      ctx.status = 200;
      const error = checked.status === 'locked' ? locked(ctx, checked.retryAfterSeconds) : MESSAGES.wrongPassword;
      return renderLogin(ctx, d, client?.clientName, { error, email });
    }
    await apply(ctx, d, state, { type: 'password-ok', ...(await factsOf(d, checked.account)) });
  });

  /** Passkey routes exist only while PASSKEYS is not `off`. */
  const passkeysOn = async (ctx: Context, next: () => Promise<unknown>) => {
    if (passkeyMode === 'off') refuse('passkeys are turned off on this server');
    await next();
  };

  // A passwordless sign-in: a discoverable passkey with user verification, nothing else.
  router.post('/passkey', passkeysOn, sameOrigin, form, requireCsrf, async (ctx) => {
    const { d, state } = await at(ctx, 'passkey-signed-in');
    const checked = await checks.passkey(d.uid, (ctx.request.body as Record<string, unknown>).response, ctx.ip);
    if (checked.status === 'ok') return apply(ctx, d, state, { type: 'passkey-signed-in', accountId: checked.account.id, amr: passkeyAmr({ deviceType: checked.passkey.deviceType, userVerified: checked.userVerified }) });
    const client = await clientOf(d);
    const error = checked.status === 'locked' ? locked(ctx, checked.retryAfterSeconds) : checked.reason === 'not-verified' ? MESSAGES.passkeyNotVerified : MESSAGES.passkeyRefused;
    await renderLogin(ctx, d, client?.clientName, { error });
  });

  router.post('/mfa/passkey', passkeysOn, sameOrigin, form, requireCsrf, async (ctx) => {
    const { d, state } = await at(ctx, 'passkey-ok');
    const step = stepOf(state, 'second-factor');
    const checked = await checks.passkey(d.uid, (ctx.request.body as Record<string, unknown>).response, ctx.ip, { id: step.accountId, email: step.subject });
    if (checked.status === 'ok') return apply(ctx, d, state, { type: 'passkey-ok', accountId: checked.account.id, amr: passkeyAmr({ deviceType: checked.passkey.deviceType, userVerified: checked.userVerified }, true) });
    const error = checked.status === 'locked' ? locked(ctx, checked.retryAfterSeconds) : MESSAGES.passkeyRefused;
    await renderStep(ctx, d, step, { error });
  });

  router.post('/enroll/passkey', passkeysOn, sameOrigin, form, requireCsrf, async (ctx) => {
    const { d, state } = await at(ctx, 'passkey-enrolled');
    const step = stepOf(state, 'enroll');
    const body = ctx.request.body as Record<string, unknown>;
    const checked = await checks.registerPasskey({ id: step.accountId, email: step.subject }, d.uid, body.response, body.name, ctx.ip, 'signin');
    if (checked.status !== 'ok') {
      const error = checked.status === 'locked' ? locked(ctx, checked.retryAfterSeconds) : MESSAGES.passkeyNotCreated;
      return renderStep(ctx, d, step, { error });
    }
    // The first factor: its recovery codes, shown once in this answer.
    const recoveryCodes = await secondFactor.issueRecoveryCodesIfNone(step.accountId);
    const amr = passkeyAmr({ deviceType: checked.passkey.deviceType, userVerified: checked.userVerified }, true);
    await apply(ctx, d, state, { type: 'passkey-enrolled', accountId: step.accountId, amr }, { recoveryCodes });
  });

  router.get('/recovery', async (ctx) => {
    const { d, state } = await at(ctx, 'code-ok');
    await renderStep(ctx, d, stepOf(state, 'second-factor'), { recovery: true });
  });

  router.post('/mfa', sameOrigin, form, requireCsrf, async (ctx) => {
    const { d, state } = await at(ctx, 'code-ok');
    const step = stepOf(state, 'second-factor');
    const code = String((ctx.request.body as Record<string, unknown>).code ?? '').slice(0, 64);
    const checked = await checks.secondFactor({ id: step.accountId, email: step.subject }, { totp: code }, ctx.ip);
    if (checked.status === 'ok') return apply(ctx, d, state, { type: 'code-ok', accountId: step.accountId });
    if (checked.status === 'failed' && checked.reason === 'not-enrolled') return factorChanged(ctx, d, state, step.accountId);
    const error = checked.status === 'locked' ? locked(ctx, checked.retryAfterSeconds) : checked.reason === 'replayed' ? MESSAGES.usedCode : MESSAGES.wrongCode;
    await renderStep(ctx, d, step, { error });
  });

  router.post('/recovery', sameOrigin, form, requireCsrf, async (ctx) => {
    const { d, state } = await at(ctx, 'code-ok');
    const step = stepOf(state, 'second-factor');
    const code = String((ctx.request.body as Record<string, unknown>).recovery_code ?? '').slice(0, 64);
    const checked = await checks.secondFactor({ id: step.accountId, email: step.subject }, { recoveryCode: code }, ctx.ip);
    if (checked.status === 'ok') return apply(ctx, d, state, { type: 'code-ok', accountId: step.accountId });
    if (checked.status === 'failed' && checked.reason === 'not-enrolled') return factorChanged(ctx, d, state, step.accountId);
    const error = checked.status === 'locked' ? locked(ctx, checked.retryAfterSeconds) : MESSAGES.wrongRecoveryCode;
    await renderStep(ctx, d, step, { error, recovery: true });
  });

  router.post('/enroll', sameOrigin, form, requireCsrf, async (ctx) => {
    const { d, state } = await at(ctx, 'totp-enrolled');
    const step = stepOf(state, 'enroll');
    const code = String((ctx.request.body as Record<string, unknown>).code ?? '').slice(0, 64);
    let checked;
    try {
      checked = await checks.enroll({ id: step.accountId, email: step.subject }, step.pending ?? '', code, ctx.ip);
    } catch (err) {
      // Enrolled meanwhile (another tab): go on with that factor.
      if (!(err instanceof AccountError)) throw err;
      return factorChanged(ctx, d, state, step.accountId);
    }
    if (checked.status === 'ok') return apply(ctx, d, state, { type: 'totp-enrolled', accountId: step.accountId }, { recoveryCodes: checked.recoveryCodes });
    const error = checked.status === 'locked' ? locked(ctx, checked.retryAfterSeconds) : checked.reason === 'expired' ? MESSAGES.enrollmentExpired : MESSAGES.wrongCode;
    await renderStep(ctx, d, step, { error });
  });

  router.post('/saved', sameOrigin, form, requireCsrf, async (ctx) => {
    const { d, state } = await at(ctx, 'codes-saved');
    await apply(ctx, d, state, { type: 'codes-saved' });
  });

  router.post('/consent', sameOrigin, form, requireCsrf, async (ctx) => {
    const d = await details(ctx);
    if (d.uid !== ctx.params.uid) refuse(REFUSALS['other-interaction']);
    if (d.prompt.name !== 'consent') refuse('this sign-in step is already done');
    await grantConsent(ctx, d, 'consent_page', undefined, (await clientOf(d))?.first_party === true);
  });

  router.post('/abort', sameOrigin, form, requireCsrf, async (ctx) => {
    const { d, state } = await at(ctx, 'cancel');
    await apply(ctx, d, state, { type: 'cancel' });
  });

  return router;
}
