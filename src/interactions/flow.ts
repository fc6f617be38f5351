import type { Context } from 'koa';
import type { Email } from '../accounts/email.ts';
import { errors, type default as Provider, type InteractionResults } from 'oidc-provider';
import { normalizeEmail, type Account, type Accounts } from '../accounts/accounts.ts';
import { localeOfRequest } from '../i18n/locale.ts';
import type { AuthenticationResponseJSON } from '@simplewebauthn/server';
import { parseCredentialResponse, passkeysOf, type Passkeys } from '../accounts/passkeys.ts';
import { readConsent, rememberConsent, type Consent } from '../accounts/connected-apps.ts';
import { SecondFactor } from '../accounts/second-factor.ts';
import { audit } from '../observability/audit.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import { formTargets } from '../oidc/provider.ts';
import type { Csrf } from '../security/csrf.ts';
import type { Lockout } from '../security/lockout.ts';
import { sameOriginForms } from '../security/same-origin.ts';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';
import { withWriteId, writtenInteractions } from '../storage/written-interactions.ts';
import type { Views } from '../views.ts';
import { mfaDemanded, type MfaPolicy } from '../signin/policy.ts';
import { FactorChecks } from '../signin/factors/factor-checks.ts';
import { formBody } from '../security/form-body.ts';
import { effectsOf, effectsOfShowing, guard, stateOf, transition, type AccountFacts, type ConsentVia, type FlowEvent, type FlowEventType, type FlowState } from '../signin/machine.ts';
import { SignInSteps, type SignInStep } from '../signin/steps.ts';
import { CONSENT_AS_READ, type ConsentAsRead } from '../signin/consent.ts';
import { readAheadSentAt } from '../storage/read-ahead.ts';
import { WayBack, appHomeOf } from '../signin/way-back.ts';
import { MESSAGES, REFUSALS } from '../signin/messages.ts';
import type { ScopeDescriptions } from '../signin/scope-words.ts';

/** What the interaction routes (and the account page) are built from. */
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
  /** Emailed links and notices (EMAIL=off: `email.on` is false and nothing is sent). */
  email: Email;
  /** SIGNUP=domains|open: the sign-in page links to /signup. */
  signUpOffered?: boolean;
  /** The APIs' scope descriptions, which the consent pages show (the registry). */
  registry: ScopeDescriptions;
  /** The upstream providers offered on this sign-in page (upstream/): "Continue with …". */
  upstreamButtons?: (params: Record<string, unknown>) => Promise<{ id: string; name: string }[]>;
}

export type Details = Awaited<ReturnType<Provider['interactionDetails']>>;
export type Flow = ReturnType<typeof interactionFlow>;

/**
 * What every step's routes share: the interaction as oidc-provider holds it (its cookie binds it to
 * this browser), the guards, and the executor of the machine's outcomes (signin/machine.ts). The step
 * routes (login.ts, second-factor.ts, enroll.ts, consent.ts) only verify what the person sent, turn it
 * into an event, and hand it to `apply`; pages are rendered from what is stored and write nothing.
 */
export function interactionFlow({ provider, accounts, store, views, csrf, secondFactor, passkeys, passkeyMode, lockout, mfaPolicy, metrics, logger, issuer, email, signUpOffered = false, registry, upstreamButtons }: InteractionDeps) {
  const form = formBody();
  const FORM_EXPIRED = 'the form expired; go back to the application and start again';
  const sameOrigin = sameOriginForms(issuer, views, FORM_EXPIRED);
  const steps = new SignInSteps(store);
  const wayBack = new WayBack(store);
  const written = writtenInteractions(store);
  /** The step's page, addressed with what this request wrote of the interaction (it renders from that: written-interactions.ts). */
  const stepPage = (uid: string) => withWriteId(`/interaction/${uid}`, written, keys.model('Interaction', uid));

  /** A 400 that our error handler shows to the person as is. */
  function refuse(message: string): never {
    throw Object.assign(new Error(message), { status: 400, expose: true });
  }

  async function details(ctx: Context): Promise<Details> {
    // The interaction the browser's cookie holds; the machine's guard checks it is the one the path names.
    const d = await provider.interactionDetails(ctx.req, ctx.res);
    // The app's ui_locales picks the language of this sign-in's pages (views.ts).
    ctx.state.uiLocales = d.params.ui_locales;
    return d;
  }

  const requireCsrf = async (ctx: Context, next: () => Promise<unknown>) => {
    const body = ctx.request.body as Record<string, unknown> | undefined;
    if (!csrf.verify(uidInPath(ctx), body?._csrf)) {
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
    // The sign-in origin stays as it is: the resume that takes the interaction marks it answered (signin/way-back.ts).
    await d.save(d.exp - Math.floor(Date.now() / 1000));
    ctx.status = 303;
    ctx.redirect(d.returnTo);
  }

  /**
   * A page of this sign-in whose interaction is gone (answered and used, or expired): for an app we know,
   * a way forward instead of an error — "continue to the app" when this browser is signed in, else
   * "start again" (the same authorization request while the app still waits for it). Anything else: `err`.
   */
  async function wayForward(ctx: Context, err: unknown): Promise<void> {
    if (!(err instanceof errors.SessionNotFound)) throw err;
    const origin = await wayBack.find(ctx, uidInPath(ctx));
    const client = origin ? await provider.Client.find(origin.clientId) : undefined;
    if (!origin || !client) throw err;
    const session = await provider.Session.get(ctx);
    const account = session.accountId ? await accounts.find(session.accountId) : undefined;
    const signedIn = account !== undefined && !account.disabled;
    const home = appHomeOf(client, origin.redirectUri, issuer);
    const clientName = client.clientName ?? client.clientId;
    // Gone, not wrong: 200 with the way forward when signed in; otherwise the attempt did fail (400, as before).
    ctx.status = signedIn ? 200 : 400;
    views.render(ctx, 'way-forward', {
      title: signedIn ? 'You’re signed in' : 'Start again',
      signedIn,
      email: signedIn ? account.email : undefined,
      clientName,
      href: signedIn ? (home ?? origin.restart) : (origin.restart ?? home),
    });
  }

  async function clientOf(d: Details) {
    return provider.Client.find(String(d.params.client_id));
  }

  /** `client`: its name and registered https logo, said and shown at the top ("to continue to …"). */
  async function renderLogin(ctx: Context, d: Details, client: { clientName?: string; logoUri?: string } | undefined, extra: Record<string, unknown> = {}) {
    // A passwordless sign-in: any passkey of this site, its challenge bound to this interaction. After a
    // passkey no account holds, autofill is not armed again: the device would offer the same one, in a loop.
    const unknownCredential = typeof extra.unknownCredential === 'string' ? extra.unknownCredential : undefined;
    const passkey = passkeyMode === 'off'
      ? undefined
      : { kind: 'sign-in', action: `/interaction/${d.uid}/passkey`, options: await passkeys.authenticationOptions(d.uid), autofill: !unknownCredential, unknownCredential, label: 'Sign in with a passkey', secondary: passkeyMode !== 'preferred' };
    const upstreams = upstreamButtons ? await upstreamButtons(d.params) : [];
    views.render(ctx, 'login', { uid: d.uid, csrf: csrf.token(d.uid), clientName: client?.clientName, clientLogo: client?.logoUri, title: 'Sign in', passkey, emailOn: email.on, signUpOffered, upstreams, ...extra }, formTargets(d.params.redirect_uri));
  }

  /** What this person allowed this client before (remembered consent). */
  async function rememberedConsent(d: Details): Promise<Consent | undefined> {
    return readConsent(store, String(d.session?.accountId), String(d.params.client_id));
  }

  /** Every scope of the request (oidc-provider keeps only those the client may ask for). */
  function requestedScopes(d: Details): string[] {
    const scope = d.params.scope;
    return [...new Set((typeof scope === 'string' ? scope : '').split(' ').filter(Boolean))];
  }

  function missingScopes(d: Details): string[] {
    const det = d.prompt.details as { missingOIDCScope?: string[]; missingResourceScopes?: Record<string, string[]> };
    return [...(det.missingOIDCScope ?? []), ...Object.values(det.missingResourceScopes ?? {}).flat()];
  }

  /** The grant of what the consent prompt asks; `firstParty`: nothing is remembered (the client is never asked). */
  async function grantConsent(d: Details, remembered: Consent | undefined, firstParty: boolean): Promise<{ grantId: string; scopes: string[] }> {
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
    return { grantId, scopes };
  }

  const checks = new FactorChecks({ accounts, secondFactor, passkeys, lockout, metrics, logger });

  // ---- the steps' pages: rendered from what is stored, writing nothing ----

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
      // Without a passkey to offer, the page shows what the password step read; the code post reads the account anyway.
      if (step.known && !step.known.hasPasskey) {
        return views.render(ctx, 'second-factor', pageData(d, { title: 'Two-step verification', email: step.known.email, totp: step.known.hasTotp, passkey: undefined, ...extra }), targets);
      }
      const account = await accounts.find(step.accountId);
      if (!account) refuse('this account is gone; start again');
      const passkey = usesPasskeys(account)
        ? { kind: 'verify', action: `/interaction/${d.uid}/mfa/passkey`, options: await passkeys.authenticationOptions(d.uid, account), label: 'Use your passkey', unknownCredential: extra.unknownCredential }
        : undefined;
      return views.render(ctx, 'second-factor', pageData(d, { title: 'Two-step verification', email: account.email, totp: SecondFactor.isEnrolled(account), passkey, ...extra }), targets);
    }
    if (step.name === 'recovery-codes') {
      // Shown once, in the answer to the enrollment post; a reload only offers to continue.
      return views.render(ctx, 'recovery-codes', pageData(d, { title: 'Save your recovery codes', codes: undefined, ...extra }), targets);
    }
    const account = await accounts.find(step.accountId);
    if (!account) refuse('this account is gone; start again');
    // The enrolment offered was started (and kept in the step) by `show` before the page is rendered.
    const provisioning = step.pending ? await secondFactor.provisioningOf(account, step.pending) : undefined;
    if (!provisioning) refuse(MESSAGES.enrollmentExpired);
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

  /**
   * Shows a step's page: first what showing it needs (machine.ts `effectsOfShowing`: the enroll page a
   * TOTP enrolment it can offer, made on its first view or when the previous one expired), then the page.
   */
  async function show(ctx: Context, d: Details, step: SignInStep, extra: Record<string, unknown> = {}) {
    if (step.name === 'enroll') {
      const account = await accounts.find(step.accountId);
      if (!account) refuse('this account is gone; start again');
      const usable = step.pending ? (await secondFactor.provisioningOf(account, step.pending)) !== undefined : false;
      for (const effect of effectsOfShowing(step, usable)) {
        if (effect.type !== 'start-enrolment') continue;
        const started = await secondFactor.startEnrollment(account);
        if (step.pending) extra = { error: MESSAGES.enrollmentExpired, ...extra };
        step = { ...step, pending: started.pending };
        await steps.set(d.uid, step, d.exp);
      }
    }
    return renderStep(ctx, d, step, extra);
  }

  // ---- the state machine (signin/machine.ts): requests become events, outcomes' effects are executed here ----

  function machineInput(ctx: Context, d: Details, state: FlowState) {
    return { interaction: { uid: d.uid, prompt: d.prompt.name, expiresAt: d.exp }, postedFor: uidInPath(ctx), now: Date.now() / 1000, state };
  }

  /** The interaction and its state, when it takes `event` now; anything else is refused before anything is verified. */
  async function at(ctx: Context, event: FlowEventType): Promise<{ d: Details; state: FlowState }> {
    const d = await details(ctx);
    const state = stateOf(d.prompt.name, d.prompt.name === 'login' ? await steps.get(d.uid) : undefined, Boolean(d.deviceCode));
    const refused = guard(machineInput(ctx, d, state), event);
    if (refused) refuse(REFUSALS[refused]);
    return { d, state };
  }

  /**
   * Sends the reads a step's post starts with, together (Store.readAhead: one command on one Redis): the
   * interaction the path names, the account its step named when this process last saw it, and `more`.
   */
  function readAhead(ctx: Context, more: string[] = []): void {
    steps.readAhead(uidInPath(ctx), more);
  }

  /** What the password post reads besides its interaction: the lock records memory does not answer, the account the email names. */
  function passwordReads(email: string, password: string, ip: string): string[] {
    const subject = normalizeEmail(email);
    return [...lockout.recordKeysToRead({ account: subject, ip }), ...(email && password ? [keys.accountEmail(subject)] : [])];
  }

  /** The state as a step record, when it is the one `event` needs (`at` has checked the name). */
  function stepOf<N extends SignInStep['name']>(state: FlowState, name: N): Extract<SignInStep, { name: N }> {
    if (state.name !== name) refuse(REFUSALS['out-of-order']);
    return state as Extract<SignInStep, { name: N }>;
  }

  /**
   * The person's consent to the app, when this post read it ahead with its interaction (steps.ts): handed to
   * the resume in the result (signin/consent.ts `CONSENT_AS_READ`), which then decides on it without reading it again.
   */
  async function consentReadAhead(accountId: string, clientId: string): Promise<{ [CONSENT_AS_READ]?: ConsentAsRead }> {
    const key = keys.consent(accountId, clientId);
    if (readAheadSentAt(key) === undefined) return {};
    return { [CONSENT_AS_READ]: { accountId, clientId, raw: await store.get(key), at: Date.now() } };
  }

  /** What a route hands over with its event: the recovery codes a TOTP enrolment issued, the consent already read. */
  interface Carried {
    recoveryCodes?: string[];
    remembered?: Consent;
  }

  /** Transition, then execute the outcome's effects in order (machine.ts `effectsOf`). */
  async function apply(ctx: Context, d: Details, state: FlowState, event: FlowEvent, carried: Carried = {}) {
    const outcome = transition({ ...machineInput(ctx, d, state), event });
    if (outcome.kind === 'refused') refuse(REFUSALS[outcome.reason]);
    let recoveryCodes = carried.recoveryCodes;
    let consent: { grantId: string; scopes: string[]; via: ConsentVia } | undefined;
    const writes: Promise<unknown>[] = [];
    const effects = effectsOf(state, event, outcome);
    const finishing = effects.some((effect) => effect.type === 'finish');
    for (const effect of effects) {
      switch (effect.type) {
        case 'issue-recovery-codes':
          // The first factor: its recovery codes, shown once in this answer.
          recoveryCodes = await secondFactor.issueRecoveryCodesIfNone(effect.accountId);
          break;
        case 'persist-step':
          await steps.set(d.uid, withKnownAccount(effect.step, event), d.exp);
          break;
        case 'clear-step':
          // A finish saves the interaction without it (steps.ts); otherwise the step is dropped from the record.
          if (!finishing) writes.push(steps.clear(d.uid, d.exp));
          break;
        case 'grant-consent': {
          const firstParty = effect.via === 'first_party' || (effect.via === 'consent_page' && (await clientOf(d))?.first_party === true);
          consent = { ...(await grantConsent(d, carried.remembered, firstParty)), via: effect.via };
          break;
        }
        case 'finish':
          if (effect.result === 'access_denied') {
            await Promise.all([...writes, finish(ctx, d, { error: 'access_denied', error_description: 'the person declined' }, false)]);
          } else if (effect.result === 'login' && outcome.kind === 'signed-in') {
            const { login } = outcome;
            await Promise.all([...writes, finish(ctx, d, { login, ...(await consentReadAhead(login.accountId, String(d.params.client_id))) }, false)]);
            metrics.signIns.inc();
            // The mail that follows (security notices) is written in the language of the pages signed in on.
            const known = 'known' in state ? state.known?.locale : undefined;
            await accounts.rememberLocale(login.accountId, localeOfRequest(ctx).locale, known).catch((err: unknown) => {
              logger.warn({ reason: err instanceof Error ? err.message : String(err) }, 'language not remembered');
            });
            audit(logger, 'signin_succeeded', { accountId: login.accountId, clientId: String(d.params.client_id), acr: login.acr, amr: login.amr, ip: ctx.ip }, 'signed in');
          } else if (effect.result === 'sign-in-again') {
            // The login prompt again for this request; oidc-provider signs the current account out once another signs in.
            const prompts = new Set([...(typeof d.params.prompt === 'string' ? d.params.prompt.split(' ') : []).filter(Boolean), 'login']);
            d.params.prompt = [...prompts].join(' ');
            await finish(ctx, d, {}, false);
          } else if (effect.result === 'consent' && consent) {
            await finish(ctx, d, { consent: { grantId: consent.grantId } }, true);
            audit(logger, 'consent_granted', { accountId: String(d.session!.accountId), clientId: String(d.params.client_id), scopes: consent.scopes, via: consent.via }, 'consent granted');
          }
          break;
        case 'show-recovery-codes':
          if (outcome.kind === 'step' && recoveryCodes) return renderStep(ctx, d, outcome.step, { codes: recoveryCodes });
          ctx.status = 303;
          ctx.redirect(stepPage(d.uid));
          break;
        case 'redirect-to-step':
          ctx.status = 303;
          ctx.redirect(stepPage(d.uid));
          break;
        case 'back-to-sign-in':
          await Promise.all(writes);
          ctx.status = 303;
          ctx.redirect(stepPage(d.uid));
          break;
        case 'start-enrolment':
          break; // only when a page is shown (`show`)
      }
    }
  }

  /** The second-factor step with the account as the password step read it: its page and the finish need no read of their own. */
  function withKnownAccount(step: SignInStep, event: FlowEvent): SignInStep {
    if (step.name !== 'second-factor' || !('account' in event) || event.account.email === undefined) return step;
    const { email, hasTotp, hasPasskey, locale } = event.account;
    return { ...step, known: { email, hasTotp, hasPasskey, locale: locale ?? 'en' } };
  }

  /** Whether this account's passkeys are offered (none while PASSKEYS=off). */
  function usesPasskeys(account: Account): boolean {
    return passkeyMode !== 'off' && passkeysOf(account).length > 0;
  }

  /** What the machine needs to know about an account after its password (or when its factors changed). */
  async function factsOf(d: Details, account: Account): Promise<{ account: AccountFacts; factorDemanded: boolean }> {
    const facts = { id: account.id, subject: normalizeEmail(account.email), hasTotp: SecondFactor.isEnrolled(account), hasPasskey: usesPasskeys(account), email: account.email, locale: account.locale ?? 'en' };
    return { account: facts, factorDemanded: !facts.hasTotp && mfaDemanded(mfaPolicy, await clientOf(d), d.params) };
  }

  /** The factor changed under this sign-in (an operator reset it, another tab enrolled): decide again. */
  async function factorChanged(ctx: Context, d: Details, state: FlowState, accountId: string) {
    const account = await accounts.find(accountId);
    if (!account || account.disabled) refuse('this account cannot sign in; go back to the application and start again');
    await apply(ctx, d, state, { type: 'factor-changed', ...(await factsOf(d, account)) });
  }

  // ---- guards the routes list ----

  /** Passkey routes exist only while PASSKEYS is not `off`. */
  const passkeysOn = async (_ctx: Context, next: () => Promise<unknown>) => {
    if (passkeyMode === 'off') refuse('passkeys are turned off on this server');
    await next();
  };

  return {
    guards: { sameOrigin, form, requireCsrf, passkeysOn },
    provider, accounts, views, csrf, passkeyMode, registry,
    email, checks, details, refuse, clientOf, wayForward, readAhead, passwordReads, at, stepOf, apply, show, renderStep, renderLogin, locked, factsOf, factorChanged,
    rememberedConsent, requestedScopes, missingScopes, steps,
  };
}

/** The credential id of a posted passkey response (already checked by the factor to be base64url), for the Signal API. */
export function credentialIdOf(ctx: Context): string | undefined {
  return parseCredentialResponse<AuthenticationResponseJSON>((ctx.request.body as Record<string, unknown> | undefined)?.response)?.id;
}

/** The interaction uid the URL names: every route here is under /interaction/:uid (Koa types `params` as any). */
function uidInPath(ctx: Context): string {
  return String((ctx.params as Record<string, string>).uid);
}
