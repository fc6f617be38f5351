import Router from '@koa/router';
import type { Context } from 'koa';
import type { default as Provider, InteractionResults } from 'oidc-provider';
import { AccountError, type Account, type Accounts } from '../accounts/accounts.ts';
import { SecondFactor } from '../accounts/second-factor.ts';
import { audit } from '../observability/audit.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import { appAskedForConsent, formTargets } from '../oidc/provider.ts';
import { OIDC_SCOPES } from '../oidc/registry.ts';
import type { Csrf } from '../security/csrf.ts';
import type { Lockout } from '../security/lockout.ts';
import { sameOriginForms } from '../security/same-origin.ts';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';
import type { Views } from '../views.ts';
import { loginResult, mfaDemanded, type MfaPolicy } from './mfa-policy.ts';
import { FactorChecks } from './factor-checks.ts';
import { formBody } from './form-body.ts';
import { SignInSteps, type SignInStep, type StepName } from './sign-in-steps.ts';

/**
 * The sign-in flow as a small state machine (sign-in-steps.ts): login → second-factor (→ enroll →
 * recovery-codes) → consent → done. Each step reads the interaction from oidc-provider first (its
 * cookie binds it to this browser), and every route lists its guards in order.
 */
export interface InteractionDeps {
  provider: Provider;
  accounts: Accounts;
  store: Store;
  views: Views;
  csrf: Csrf;
  secondFactor: SecondFactor;
  lockout: Lockout;
  mfaPolicy: MfaPolicy;
  metrics: Metrics;
  logger: Logger;
  /** The issuer URL: the one origin our forms may be posted from. */
  issuer: string;
}

/** What a person reads: the same for a wrong password and an unknown account, locked or not. */
export const MESSAGES = {
  wrongPassword: 'Wrong email or password.',
  locked: 'Too many failed attempts. Try again later.',
  wrongCode: 'That code is not right. Enter the current code from your authenticator app.',
  usedCode: 'That code was already used. Wait for the next code in your authenticator app.',
  wrongRecoveryCode: 'That recovery code is not right, or it was already used.',
  enrollmentExpired: 'The setup took too long. Scan the new QR code and enter the code it shows.',
} as const;

const SCOPE_WORDS: Record<string, string> = {
  openid: 'Know who you are',
  profile: 'See your name',
  email: 'See your email address',
  offline_access: 'Stay connected while you are away, until you sign out or revoke it',
};

const CONSENT_TTL = 365 * 24 * 60 * 60;

type Details = Awaited<ReturnType<Provider['interactionDetails']>>;

export function interactionRoutes({ provider, accounts, store, views, csrf, secondFactor, lockout, mfaPolicy, metrics, logger, issuer }: InteractionDeps) {
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
    const found = await provider.interactionDetails(ctx.req, ctx.res);
    if (found.uid !== ctx.params.uid) refuse('interaction mismatch');
    return found;
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

  function renderLogin(ctx: Context, d: Details, clientName: string | undefined, extra: Record<string, unknown> = {}) {
    views.render(ctx, 'login', { uid: d.uid, csrf: csrf.token(d.uid), clientName, title: 'Sign in', ...extra }, formTargets(d.params.redirect_uri));
  }

  /** What this person allowed this client before (remembered consent). */
  async function rememberedScopes(d: Details): Promise<string[]> {
    const remembered = await store.get(keys.consent(String(d.session?.accountId), String(d.params.client_id)));
    return remembered ? (JSON.parse(remembered) as string[]) : [];
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
  async function grantConsent(ctx: Context, d: Details, via: 'consent_page' | 'first_party' | 'remembered', remembered?: string[], firstParty = via === 'first_party') {
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
    const remember = async () => {
      if (firstParty) return;
      const all = new Set([...(remembered ?? (await rememberedScopes(d))), ...scopes]);
      await store.set(keys.consent(String(d.session!.accountId), String(d.params.client_id)), JSON.stringify([...all]), { ttl: CONSENT_TTL });
    };
    const [grantId] = await Promise.all([grant.save(), remember()]);
    await finish(ctx, d, { consent: { grantId } }, true);
    audit(logger, 'consent_granted', { accountId: String(d.session!.accountId), clientId: String(d.params.client_id), scopes, via }, 'consent granted');
  }

  const checks = new FactorChecks({ accounts, secondFactor, lockout, metrics, logger });

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
      const template = extra.recovery ? 'recovery' : 'second-factor';
      return views.render(ctx, template, pageData(d, { title: 'Two-step verification', ...extra }), targets);
    }
    if (step.name === 'recovery-codes') {
      // Shown once, in the answer to the enrollment post; a reload only offers to continue.
      return views.render(ctx, 'recovery-codes', pageData(d, { title: 'Save your recovery codes', codes: undefined, ...extra }), targets);
    }
    const account = await accounts.find(step.accountId);
    if (!account) refuse('this account is gone; start again');
    let provisioning = await secondFactor.provisioningOf(account, step.pending);
    if (!provisioning) {
      // The pending enrollment expired: a new secret, a new QR code.
      const started = await secondFactor.startEnrollment(account);
      await steps.set(d.uid, { ...step, pending: started.pending }, d.exp);
      provisioning = started;
      extra = { error: MESSAGES.enrollmentExpired, ...extra };
    }
    views.render(
      ctx,
      'enroll',
      pageData(d, {
        title: 'Set up two-step verification',
        email: account.email,
        qr: `data:image/svg+xml;base64,${Buffer.from(provisioning.qrSvg).toString('base64')}`,
        secret: provisioning.secret,
        ...extra,
      }),
      targets,
    );
  }

  /** The step of this interaction, when it is the expected one; anything else is a stale form. */
  async function requireStep<N extends StepName>(d: Details, name: N): Promise<Extract<SignInStep, { name: N }>> {
    if (d.prompt.name !== 'login') refuse('this sign-in step is already done');
    const step = await steps.get(d.uid);
    if (step?.name !== name) refuse('this sign-in step is not the current one; go back to the application and start again');
    return step as Extract<SignInStep, { name: N }>;
  }

  // ---- transitions ----

  /** After the password: the second factor, its enrollment, or — when none is needed — done. */
  async function afterPassword(ctx: Context, d: Details, account: Account) {
    const subject = account.email;
    if (SecondFactor.isEnrolled(account)) {
      await steps.set(d.uid, { name: 'second-factor', accountId: account.id, subject }, d.exp);
    } else if (mfaDemanded(mfaPolicy, await clientOf(d), d.params)) {
      const started = await secondFactor.startEnrollment(account);
      await steps.set(d.uid, { name: 'enroll', accountId: account.id, subject, pending: started.pending }, d.exp);
    } else {
      return signedIn(ctx, d, account.id, false);
    }
    // Post/redirect/get: a reload shows the step again instead of re-posting the password.
    ctx.status = 303;
    ctx.redirect(`/interaction/${d.uid}`);
  }

  async function signedIn(ctx: Context, d: Details, accountId: string, withSecondFactor: boolean) {
    const login = loginResult(accountId, withSecondFactor);
    // The step record and the interaction's result: independent writes, sent together.
    await Promise.all([steps.clear(d.uid), finish(ctx, d, { login }, false)]);
    audit(logger, 'signin_succeeded', { accountId, clientId: String(d.params.client_id), acr: login.acr, amr: login.amr, ip: ctx.ip }, 'signed in');
  }

  // ---- routes: each lists its guards in order ----

  router.get('/', async (ctx) => {
    const d = await details(ctx);
    const client = await clientOf(d);
    if (!client) refuse('unknown client');
    if (d.prompt.name === 'login') {
      const step = await steps.get(d.uid);
      return step ? renderStep(ctx, d, step) : renderLogin(ctx, d, client.clientName);
    }
    if (d.prompt.name === 'consent') {
      // Only the scopes not granted before are listed (README: asked again only for new scopes); none for
      // first-party clients. prompt=consent from the app shows the page to every client, with every scope asked for.
      const firstParty = client.first_party === true;
      const remembered = firstParty ? [] : await rememberedScopes(d);
      const ask = appAskedForConsent(d.params) ? requestedScopes(d) : firstParty ? [] : missingScopes(d).filter((s) => !remembered.includes(s));
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
          items: ask.map((s) => SCOPE_WORDS[s] ?? (OIDC_SCOPES.has(s) ? s : `Use the API with permission “${s}”`)),
        },
        formTargets(d.params.redirect_uri),
      );
      return;
    }
    refuse(`unsupported step ${d.prompt.name}`);
  });

  router.post('/login', sameOrigin, form, requireCsrf, async (ctx) => {
    const d = await details(ctx);
    if (d.prompt.name !== 'login') refuse('this sign-in step is already done');
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
    await afterPassword(ctx, d, checked.account);
  });

  router.get('/recovery', async (ctx) => {
    const d = await details(ctx);
    const step = await requireStep(d, 'second-factor');
    await renderStep(ctx, d, step, { recovery: true });
  });

  router.post('/mfa', sameOrigin, form, requireCsrf, async (ctx) => {
    const d = await details(ctx);
    const step = await requireStep(d, 'second-factor');
    const code = String((ctx.request.body as Record<string, unknown>).code ?? '').slice(0, 64);
    const checked = await checks.secondFactor({ id: step.accountId, email: step.subject }, { totp: code }, ctx.ip);
    if (checked.status === 'ok') return signedIn(ctx, d, step.accountId, true);
    if (checked.status === 'failed' && checked.reason === 'not-enrolled') return restartAfterReset(ctx, d, step.accountId);
    const error = checked.status === 'locked' ? locked(ctx, checked.retryAfterSeconds) : checked.reason === 'replayed' ? MESSAGES.usedCode : MESSAGES.wrongCode;
    await renderStep(ctx, d, step, { error });
  });

  router.post('/recovery', sameOrigin, form, requireCsrf, async (ctx) => {
    const d = await details(ctx);
    const step = await requireStep(d, 'second-factor');
    const code = String((ctx.request.body as Record<string, unknown>).recovery_code ?? '').slice(0, 64);
    const checked = await checks.secondFactor({ id: step.accountId, email: step.subject }, { recoveryCode: code }, ctx.ip);
    if (checked.status === 'ok') return signedIn(ctx, d, step.accountId, true);
    if (checked.status === 'failed' && checked.reason === 'not-enrolled') return restartAfterReset(ctx, d, step.accountId);
    const error = checked.status === 'locked' ? locked(ctx, checked.retryAfterSeconds) : MESSAGES.wrongRecoveryCode;
    await renderStep(ctx, d, step, { error, recovery: true });
  });

  router.post('/enroll', sameOrigin, form, requireCsrf, async (ctx) => {
    const d = await details(ctx);
    const step = await requireStep(d, 'enroll');
    const code = String((ctx.request.body as Record<string, unknown>).code ?? '').slice(0, 64);
    let checked;
    try {
      checked = await checks.enroll({ id: step.accountId, email: step.subject }, step.pending, code, ctx.ip);
    } catch (err) {
      // Enrolled meanwhile (another tab): go on with that factor.
      if (!(err instanceof AccountError)) throw err;
      return restartAfterReset(ctx, d, step.accountId);
    }
    if (checked.status === 'ok') {
      await steps.set(d.uid, { name: 'recovery-codes', accountId: step.accountId, subject: step.subject }, d.exp);
      return renderStep(ctx, d, { name: 'recovery-codes', accountId: step.accountId, subject: step.subject }, { codes: checked.recoveryCodes });
    }
    const error = checked.status === 'locked' ? locked(ctx, checked.retryAfterSeconds) : checked.reason === 'expired' ? MESSAGES.enrollmentExpired : MESSAGES.wrongCode;
    await renderStep(ctx, d, step, { error });
  });

  router.post('/saved', sameOrigin, form, requireCsrf, async (ctx) => {
    const d = await details(ctx);
    const step = await requireStep(d, 'recovery-codes');
    await signedIn(ctx, d, step.accountId, true);
  });

  /** The factor changed under this sign-in (an operator reset it, another tab enrolled): decide again. */
  async function restartAfterReset(ctx: Context, d: Details, accountId: string) {
    const account = await accounts.find(accountId);
    if (!account || account.disabled) refuse('this account cannot sign in; go back to the application and start again');
    await afterPassword(ctx, d, account);
  }

  router.post('/consent', sameOrigin, form, requireCsrf, async (ctx) => {
    const d = await details(ctx);
    if (d.prompt.name !== 'consent') refuse('this sign-in step is already done');
    await grantConsent(ctx, d, 'consent_page', undefined, (await clientOf(d))?.first_party === true);
  });

  router.post('/abort', sameOrigin, form, requireCsrf, async (ctx) => {
    const d = await details(ctx);
    await steps.clear(d.uid);
    await finish(ctx, d, { error: 'access_denied', error_description: 'the person declined' }, false);
  });

  return router;
}
