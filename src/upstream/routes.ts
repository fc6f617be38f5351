import { randomBytes } from 'node:crypto';
import Router from '@koa/router';
import type { Context } from 'koa';
import { hasFactor, normalizeEmail, type Account } from '../accounts/accounts.ts';
import { passkeysOf } from '../accounts/passkeys.ts';
import { SudoMode } from '../accounts/sudo-mode.ts';
import { SecondFactor } from '../accounts/second-factor.ts';
import { FactorChecks } from '../signin/factors/factor-checks.ts';
import { formBody } from '../security/form-body.ts';
import { sameOriginForms } from '../security/same-origin.ts';
import { interactionFlow, type Details, type InteractionDeps } from '../interactions/flow.ts';
import { formatDay } from '../i18n/catalogue.ts';
import { localeOfRequest } from '../i18n/locale.ts';
import { audit } from '../observability/audit.ts';
import { formTargets } from '../oidc/provider.ts';
import type { SecretBox } from '../security/secret-box.ts';
import { mfaDemanded } from '../signin/policy.ts';
import { MESSAGES } from '../signin/messages.ts';
import { keys } from '../storage/keys.ts';
import { UpstreamClient, UpstreamFailure, type PendingChecks, type UpstreamPerson } from './client.ts';
import { lastWayIn, passwordKnown, unsetPasswordMark, UpstreamIdentities } from './identities.ts';
import type { UpstreamProvider, UpstreamProviders } from './providers.ts';

export interface UpstreamDeps extends InteractionDeps {
  providers: UpstreamProviders;
  box: SecretBox;
  /** UPSTREAM_TIMEOUT_MS: the deadline of every request to an upstream. */
  timeoutMs: number;
  /** ACCOUNT_SUDO_SECONDS: /account/providers changes need the account page's sudo mode. */
  sudoSeconds: number;
  /** Tests inject one: sudo mode's end, and the time an upstream's ID token is checked against. */
  clock?: () => number;
}

/** How long an upstream has to send the browser back (the `state` record's life). */
const STATE_TTL_SECONDS = 600;

/** What a person reads when an upstream sign-in did not complete; each page links back to the sign-in. */
const PROBLEMS = {
  unavailable: { status: 200, text: '{name} did not answer in time. Try again in a moment, or sign in another way.' },
  denied: { status: 200, text: 'The sign-in at {name} was cancelled or refused there. You can try again or sign in another way.' },
  invalid: { status: 400, text: 'The answer from {name} could not be accepted (it did not match this sign-in, or it expired). Start the sign-in with {name} again.' },
  replayed: { status: 400, text: 'This answer from {name} was already used. Start the sign-in with {name} again.' },
  unknown_state: { status: 400, text: 'This answer does not belong to a sign-in in progress here (it may have expired). Go back to the application and sign in again.' },
  unknown_provider: { status: 400, text: 'This sign-in provider is not (or no longer) offered here.' },
  account_exists: { status: 200, text: 'An account with the address {email} already exists. Sign in to it the usual way, then link {name} from your account page (/account).' },
  no_account: { status: 200, text: 'There is no account here for your {name} identity, and this server does not create accounts through {name}. Ask your administrator for an invitation.' },
  domain_refused: { status: 200, text: 'Accounts are created through {name} only for verified addresses of {domains}.' },
  no_address: { status: 200, text: '{name} did not give a verified email address, which a new account needs.' },
  account_disabled: { status: 200, text: 'The account linked to this {name} identity cannot sign in.' },
} as const;
type ProblemKind = keyof typeof PROBLEMS;

interface PendingState extends PendingChecks {
  /** The interaction of a sign-in; empty when the person links from /account. */
  uid: string;
  provider: string;
  /** Linking from /account: the account and the session (uid) that asked; `confirm`: a re-authentication for sudo mode, not a link. */
  account?: { id: string; session: string; confirm?: boolean };
}

interface PendingLink {
  provider: string;
  accountId: string;
  person: UpstreamPerson;
}

/**
 * Sign-in through an upstream provider, inside an interaction:
 *
 *   GET /interaction/:uid/upstream/:provider   the state (single use, 10 min) kept sealed; 303 to the upstream
 *   GET /upstream/callback                     the one redirect URI: finds the interaction by `state`, 303 into it
 *   GET /interaction/:uid/upstream-callback    (the interaction cookie is sent here) state used up, code exchanged, checked
 *   GET|POST /interaction/:uid/upstream-link   confirm linking to the existing account of a verified, trusted address
 *
 * The identity (iss, sub) finds the account; an address never does, except through the confirmed link.
 */
export function upstreamRoutes(deps: UpstreamDeps) {
  const { providers, store, accounts, views, csrf, logger, issuer, box } = deps;
  const flow = interactionFlow(deps);
  const { sameOrigin, form, requireCsrf } = flow.guards;
  const identities = new UpstreamIdentities(store);
  const client = new UpstreamClient({ providers, redirectUri: `${issuer}/upstream/callback`, timeoutMs: deps.timeoutMs, ...(deps.clock ? { clock: deps.clock } : {}) });
  const router = new Router();

  function problem(ctx: Context, kind: ProblemKind, params: { name?: string; email?: string; domains?: string; uid?: string } = {}) {
    const { status, text } = PROBLEMS[kind];
    ctx.status = status;
    const words: Record<string, string | undefined> = { name: params.name, email: params.email, domains: params.domains };
    const message = text.replace(/\{(\w+)\}/g, (_, k: string) => words[k] ?? 'the provider');
    views.render(ctx, 'upstream-problem', { title: 'Sign-in did not complete', message, back: params.uid ? `/interaction/${params.uid}` : undefined, account: kind === 'account_exists' });
  }

  function failed(ctx: Context, provider: string | undefined, reason: string, code?: string) {
    audit(logger, 'upstream_signin_failed', { provider, reason, ...(code ? { detail: code } : {}), ip: ctx.ip }, 'upstream sign-in refused');
  }

  async function pendingOf(state: string): Promise<PendingState | undefined> {
    if (!state || state.length > 200) return undefined;
    const sealed = await store.get(keys.upstreamState(state));
    if (!sealed) return undefined;
    try {
      return JSON.parse(box.open(sealed, keys.upstreamState(state))) as PendingState;
    } catch {
      return undefined;
    }
  }

  router.get('/interaction/:uid/upstream/:provider', async (ctx) => {
    const { d } = await flow.at(ctx, 'upstream-ok');
    const provider = await providers.find(ctx.params.provider!);
    if (!provider) return problem(ctx, 'unknown_provider', { uid: d.uid });
    let started;
    try {
      started = await client.start(provider);
    } catch (err) {
      const failure = err instanceof UpstreamFailure ? err : new UpstreamFailure('unavailable', 'start');
      failed(ctx, provider.id, failure.kind, failure.code);
      return problem(ctx, failure.kind, { name: provider.name, uid: d.uid });
    }
    const pending: PendingState = { uid: d.uid, provider: provider.id, ...started.checks };
    const key = keys.upstreamState(started.checks.state);
    await store.set(key, box.seal(JSON.stringify(pending), key), { ttl: STATE_TTL_SECONDS });
    ctx.status = 303;
    ctx.redirect(started.url.href);
  });

  router.get('/upstream/callback', async (ctx) => {
    const state = typeof ctx.query.state === 'string' ? ctx.query.state : '';
    const pending = await pendingOf(state);
    if (!pending) {
      failed(ctx, undefined, 'unknown_state');
      return problem(ctx, 'unknown_state');
    }
    if (await store.get(keys.upstreamStateUsed(state))) {
      failed(ctx, pending.provider, 'replayed');
      return problem(ctx, 'replayed', { name: (await providers.find(pending.provider))?.name, uid: pending.uid });
    }
    // Into the interaction's path, where the browser sends its interaction cookie (or back to /account).
    ctx.status = 303;
    ctx.redirect(pending.account ? `/account/providers/callback?${ctx.querystring}` : `/interaction/${pending.uid}/upstream-callback?${ctx.querystring}`);
  });

  router.get('/interaction/:uid/upstream-callback', async (ctx) => {
    const { d, state } = await flow.at(ctx, 'upstream-ok');
    const stateParam = typeof ctx.query.state === 'string' ? ctx.query.state : '';
    const pending = await pendingOf(stateParam);
    if (!pending || pending.uid !== d.uid) {
      failed(ctx, pending?.provider, 'unknown_state');
      return problem(ctx, 'invalid', { uid: d.uid });
    }
    const provider = await providers.find(pending.provider);
    if (!provider) return problem(ctx, 'unknown_provider', { uid: d.uid });
    // One answer per state, on every node: whoever marks it first is the one taken.
    if (!(await store.set(keys.upstreamStateUsed(stateParam), '1', { ifAbsent: true, ttl: STATE_TTL_SECONDS }))) {
      failed(ctx, provider.id, 'replayed');
      return problem(ctx, 'replayed', { name: provider.name, uid: d.uid });
    }
    let person: UpstreamPerson;
    try {
      person = await client.finish(provider, ctx.querystring, pending);
    } catch (err) {
      const failure = err instanceof UpstreamFailure ? err : new UpstreamFailure('invalid', 'unexpected');
      if (!(err instanceof UpstreamFailure)) logger.warn({ err, provider: provider.id }, 'upstream sign-in failed unexpectedly');
      failed(ctx, provider.id, failure.kind, failure.code);
      return problem(ctx, failure.kind, { name: provider.name, uid: d.uid });
    }
    await decide(ctx, d, state, provider, person);
  });

  /** The identity is known, or an account must be created, or linked after a confirmation, or neither. */
  async function decide(ctx: Context, d: Details, state: Parameters<typeof flow.apply>[2], provider: UpstreamProvider, person: UpstreamPerson) {
    const linked = await identities.find(person.iss, person.sub);
    if (linked) {
      const account = await accounts.find(linked.accountId);
      if (!account || account.disabled) {
        failed(ctx, provider.id, 'account_disabled');
        return problem(ctx, 'account_disabled', { name: provider.name, uid: d.uid });
      }
      return signIn(ctx, d, state, provider, person, account);
    }
    const email = person.email ? normalizeEmail(person.email) : undefined;
    const existing = email ? await accounts.findByEmail(email) : undefined;
    if (existing) {
      // The one way an address leads to an account: verified upstream, trusted by the operator, confirmed by the person.
      if (person.emailVerified && provider.trustedForEmail && !existing.disabled) {
        const link: PendingLink = { provider: provider.id, accountId: existing.id, person };
        await store.set(keys.upstreamPendingLink(d.uid), JSON.stringify(link), { ttl: Math.max(1, d.exp - Math.floor(Date.now() / 1000)) });
        ctx.status = 303;
        return ctx.redirect(`/interaction/${d.uid}/upstream-link`);
      }
      failed(ctx, provider.id, 'account_exists_unlinked');
      return problem(ctx, 'account_exists', { name: provider.name, email, uid: d.uid });
    }
    if (!provider.createAccounts) {
      failed(ctx, provider.id, 'no_account');
      return problem(ctx, 'no_account', { name: provider.name, uid: d.uid });
    }
    if (!email || (provider.allowedDomains.length > 0 && !person.emailVerified)) {
      failed(ctx, provider.id, 'no_address');
      return problem(ctx, 'no_address', { name: provider.name, uid: d.uid });
    }
    if (provider.allowedDomains.length > 0 && !provider.allowedDomains.includes(email.slice(email.lastIndexOf('@') + 1))) {
      failed(ctx, provider.id, 'domain_refused');
      return problem(ctx, 'domain_refused', { name: provider.name, domains: provider.allowedDomains.join(', '), uid: d.uid });
    }
    // A password nobody knows: the person signs in through the upstream (or sets one with a reset link).
    const account = await accounts.create({ email, ...(person.name ? { name: person.name } : {}), password: randomBytes(32).toString('base64url'), emailVerified: person.emailVerified && provider.trustedForEmail });
    await linkIdentity(ctx, account, provider, person, 'created', unsetPasswordMark(account));
    audit(logger, 'user_created', { accountId: account.id, via: 'upstream', provider: provider.id }, 'account created through an upstream provider');
    return signIn(ctx, d, state, provider, person, account);
  }

  async function linkIdentity(ctx: Context, account: Account, provider: UpstreamProvider, person: UpstreamPerson, via: 'created' | 'signin', unsetPassword?: string) {
    const ok = await identities.link({ accountId: account.id, provider: provider.id, iss: person.iss, sub: person.sub, ...(person.email ? { email: normalizeEmail(person.email) } : {}), linkedAt: Date.now(), via, ...(unsetPassword ? { unsetPassword } : {}) });
    if (!ok) flow.refuse('this identity was just linked to an account; start again');
    audit(logger, 'upstream_linked', { accountId: account.id, provider: provider.id, via, ip: ctx.ip }, 'upstream identity linked');
  }

  async function signIn(ctx: Context, d: Details, state: Parameters<typeof flow.apply>[2], provider: UpstreamProvider, person: UpstreamPerson, account: Account) {
    const { account: facts } = await flow.factsOf(d, account);
    // The provider's require_mfa, the client's or the request's; MFA_POLICY is about passwords.
    const factorDemanded = provider.requireMfa || mfaDemanded('optional', await flow.clientOf(d), d.params);
    await identities.touch(person.iss, person.sub, Date.now());
    audit(logger, 'upstream_signin', { accountId: account.id, provider: provider.id, clientId: String(d.params.client_id), upstreamAcr: person.acr, upstreamAmr: person.amr, secondFactor: factorDemanded, ip: ctx.ip }, 'signed in through an upstream provider');
    await flow.apply(ctx, d, state, { type: 'upstream-ok', account: facts, factorDemanded, provider: provider.id });
  }

  async function pendingLink(uid: string): Promise<PendingLink | undefined> {
    const raw = await store.get(keys.upstreamPendingLink(uid));
    return raw ? (JSON.parse(raw) as PendingLink) : undefined;
  }

  async function renderLink(ctx: Context, d: Details, link: PendingLink, provider: UpstreamProvider, account: Account, error?: string) {
    // One of the account's own passkeys, with user verification, proves it as its password does (the challenge is this interaction's).
    const passkey = deps.passkeyMode !== 'off' && passkeysOf(account).length
      ? { kind: 'verify', action: `/interaction/${d.uid}/upstream-link`, options: await deps.passkeys.authenticationOptions(d.uid, account, 'required'), label: 'Use a passkey of this account', secondary: true }
      : undefined;
    views.render(ctx, 'upstream-link', {
      title: `Link ${provider.name}`, uid: d.uid, csrf: csrf.token(d.uid), provider: provider.name, email: account.email, totp: SecondFactor.isEnrolled(account), passkey, error,
    }, formTargets(d.params.redirect_uri));
  }

  async function linkContext(ctx: Context) {
    const at = await flow.at(ctx, 'upstream-ok');
    const link = await pendingLink(at.d.uid);
    const provider = link ? await providers.find(link.provider) : undefined;
    const account = link ? await accounts.find(link.accountId) : undefined;
    if (!link || !provider || !account || account.disabled) return flow.refuse('nothing to link here; go back to the sign-in page');
    return { ...at, link, provider, account };
  }

  router.get('/interaction/:uid/upstream-link', async (ctx) => {
    const { d, link, provider, account } = await linkContext(ctx);
    await renderLink(ctx, d, link, provider, account);
  });

  /** The person proves the existing account is theirs with one of its factors: its password, or a code of its authenticator. */
  router.post('/interaction/:uid/upstream-link', sameOrigin, form, requireCsrf, async (ctx) => {
    const { d, state, link, provider, account } = await linkContext(ctx);
    const body = ctx.request.body as Record<string, unknown>;
    const withPasskey = typeof body.response === 'string' && body.response !== '';
    const checked = withPasskey
      ? await flow.checks.passkey(d.uid, body.response, ctx.ip, account, 'proof')
      : typeof body.code === 'string' && body.code
        ? await flow.checks.secondFactor(account, { totp: body.code.slice(0, 20) }, ctx.ip)
        : await flow.checks.password(account.email, typeof body.password === 'string' ? body.password : '', ctx.ip);
    if (checked.status !== 'ok') {
      const error = checked.status === 'locked' ? flow.locked(ctx, checked.retryAfterSeconds) : withPasskey ? MESSAGES.passkeyRefused : typeof body.code === 'string' && body.code ? MESSAGES.wrongCode : MESSAGES.wrongPassword;
      return renderLink(ctx, d, link, provider, account, error);
    }
    // The password factor proves an address's account; make sure it is still the one this link named.
    if ('account' in checked && checked.account.id !== account.id) flow.refuse('nothing to link here; go back to the sign-in page');
    await store.del(keys.upstreamPendingLink(d.uid));
    await linkIdentity(ctx, account, provider, link.person, 'signin');
    await signIn(ctx, d, state, provider, link.person, account);
  });

  accountLinks(router, { ...deps, client, identities, pendingOf, failed, problem });
  return router;
}

/**
 * Linking from /account (the way (a)): the person is signed in here and in the account page's
 * sudo mode (the same proof as every other sign-in change there), then goes through the provider; the
 * identity it answers with is linked to this account, unless it belongs to another. An account an
 * upstream created has no password its owner knows: it enters sudo mode by signing in through its
 * upstream again (prompt=login, max_age=0), plus its code when it has a second factor. Unlinking never
 * removes the last way in (identities.ts lastWayIn).
 */
function accountLinks(
  router: Router,
  deps: UpstreamDeps & {
    client: UpstreamClient;
    identities: UpstreamIdentities;
    pendingOf: (state: string) => Promise<PendingState | undefined>;
    failed: (ctx: Context, provider: string | undefined, reason: string, code?: string) => void;
    problem: (ctx: Context, kind: ProblemKind, params?: { name?: string; email?: string; domains?: string; uid?: string }) => void;
  },
) {
  const { provider: oidc, providers, accounts, store, views, csrf, logger, box, client, identities, pendingOf, failed, problem, issuer } = deps;
  const checks = new FactorChecks(deps);
  const form = formBody();
  const sameOrigin = sameOriginForms(issuer, views, 'the form expired; open your account page again');

  const sudo = new SudoMode(store, deps.sudoSeconds, deps.clock);
  // A registered passkey is a way in of its own, unless PASSKEYS is off (then it signs nobody in).
  const passkeysOn = deps.passkeyMode !== 'off';

  async function signedIn(ctx: Context) {
    const session = await oidc.Session.get(ctx);
    const account = session.accountId ? await accounts.find(session.accountId) : undefined;
    if (!account || account.disabled) return undefined;
    // As the account page binds sudo mode: the session's uid.
    const uid = session.uid ?? session.jti;
    return { account, session: uid, scope: `account-upstream:${uid}` };
  }

  async function render(ctx: Context, who: NonNullable<Awaited<ReturnType<typeof signedIn>>>, error?: string, notice?: string) {
    const all = await providers.list();
    const linked = await identities.ofAccount(who.account.id);
    const nameOf = (id: string) => all.find((p) => p.id === id)?.name ?? id;
    const known = passwordKnown(who.account, linked);
    // The linked day as the account page writes its days: ISO in English, the locale's own form otherwise.
    const { locale } = localeOfRequest(ctx);
    views.render(ctx, 'account-providers', {
      title: 'Sign-in providers', csrf: csrf.token(who.scope), error, notice,
      sudo: (await sudo.until(who.session, who.account.id)) !== undefined, passwordKnown: known, code: hasFactor(who.account),
      // Without a password they know, the person confirms through an upstream already linked (still offered).
      confirmWith: known ? [] : linked.filter((i) => all.some((p) => p.id === i.provider)).map((i) => ({ id: i.provider, name: nameOf(i.provider) })),
      linked: linked.map((i) => ({ provider: i.provider, name: nameOf(i.provider), email: i.email, linked: locale === 'en' ? new Date(i.linkedAt).toISOString().slice(0, 10) : formatDay(locale, i.linkedAt), last: lastWayIn(who.account, linked, linked.filter((o) => o.provider === i.provider), passkeysOn) })),
      available: all.filter((p) => !linked.some((i) => i.provider === p.id)).map((p) => ({ id: p.id, name: p.name })),
    // The link form's answer redirects to the provider: CSP form-action must allow its origin.
    }, all.flatMap((p) => [...formTargets(p.issuer), ...formTargets(p.endpoints?.authorization)]));
  }

  async function guard(ctx: Context) {
    const who = await signedIn(ctx);
    if (!who) {
      ctx.status = 303;
      ctx.redirect('/account');
      return undefined;
    }
    const body = ctx.request.body as Record<string, unknown>;
    if (!csrf.verify(who.scope, body._csrf)) {
      ctx.status = 403;
      views.renderError(ctx, { error: 'invalid_request', error_description: 'the form expired; open your account page again' });
      return undefined;
    }
    return { who, body };
  }

  /** Signed in, right CSRF token and in the account page's sudo mode: what a link or an unlink needs. */
  async function proven(ctx: Context) {
    const ok = await guard(ctx);
    if (!ok) return undefined;
    if ((await sudo.until(ok.who.session, ok.who.account.id)) === undefined) {
      ctx.status = 403;
      await render(ctx, ok.who, 'Confirm it’s you first: your confirmation ran out, or you have not given it yet.');
      return undefined;
    }
    return ok;
  }

  /** Starts an upstream round trip for this session: a link, or a re-authentication for sudo mode. */
  async function toUpstream(ctx: Context, who: NonNullable<Awaited<ReturnType<typeof signedIn>>>, provider: UpstreamProvider, confirm: boolean) {
    let started;
    try {
      started = await client.start(provider, confirm ? { prompt: 'login', max_age: '0' } : {});
    } catch (err) {
      const failure = err instanceof UpstreamFailure ? err : new UpstreamFailure('unavailable', 'start');
      failed(ctx, provider.id, failure.kind, failure.code);
      return render(ctx, who, `${provider.name} did not answer in time. Try again in a moment.`);
    }
    const pending: PendingState = { uid: '', provider: provider.id, account: { id: who.account.id, session: who.session, ...(confirm ? { confirm: true } : {}) }, ...started.checks };
    const key = keys.upstreamState(started.checks.state);
    await store.set(key, box.seal(JSON.stringify(pending), key), { ttl: STATE_TTL_SECONDS });
    ctx.status = 303;
    ctx.redirect(started.url.href);
  }

  router.get('/account/providers', async (ctx) => {
    const who = await signedIn(ctx);
    if (!who) {
      ctx.status = 303;
      return ctx.redirect('/account');
    }
    await render(ctx, who);
  });

  router.post('/account/providers/link', sameOrigin, form, async (ctx) => {
    const ok = await proven(ctx);
    if (!ok) return;
    const provider = await providers.find((typeof ok.body.provider === 'string' ? ok.body.provider : ''));
    if (!provider) return render(ctx, ok.who, 'This provider is not offered here.');
    await toUpstream(ctx, ok.who, provider, false);
  });

  /**
   * Sudo mode for an account whose password nobody knows: sign in again at an upstream already linked to
   * it (a fresh sign-in there: prompt=login, max_age=0), and its current code first when it has a factor.
   */
  router.post('/account/providers/confirm', sameOrigin, form, async (ctx) => {
    const ok = await guard(ctx);
    if (!ok) return;
    const { who, body } = ok;
    const linked = await identities.ofAccount(who.account.id);
    const id = typeof body.provider === 'string' ? body.provider : '';
    const provider = linked.some((i) => i.provider === id) ? await providers.find(id) : undefined;
    if (passwordKnown(who.account, linked) || !provider) {
      ctx.status = 400;
      return render(ctx, who, 'Confirm it’s you on your account page, with your password.');
    }
    if (hasFactor(who.account)) {
      const code = typeof body.code === 'string' ? body.code.slice(0, 64) : '';
      const input = who.account.mfa && /^[\d\s-]+$/.test(code) ? { totp: code } : { recoveryCode: code };
      const second = await checks.secondFactor(who.account, input, ctx.ip);
      if (second.status !== 'ok') {
        ctx.status = second.status === 'locked' ? 429 : 400;
        return render(ctx, who, second.status === 'locked' ? MESSAGES.locked : 'That code is not right. Enter the current code from your authenticator app.');
      }
    }
    await toUpstream(ctx, who, provider, true);
  });

  router.get('/account/providers/callback', async (ctx) => {
    const who = await signedIn(ctx);
    const state = typeof ctx.query.state === 'string' ? ctx.query.state : '';
    const pending = await pendingOf(state);
    // Only the session that asked: a link answer carried to another browser links nothing.
    if (!who || !pending?.account || pending.account.id !== who.account.id || pending.account.session !== who.session) {
      failed(ctx, pending?.provider, 'unknown_state');
      return problem(ctx, 'unknown_state');
    }
    const provider = await providers.find(pending.provider);
    if (!provider) return problem(ctx, 'unknown_provider');
    if (!(await store.set(keys.upstreamStateUsed(state), '1', { ifAbsent: true, ttl: STATE_TTL_SECONDS }))) {
      failed(ctx, provider.id, 'replayed');
      return render(ctx, who, `This answer from ${provider.name} was already used.`);
    }
    let person: UpstreamPerson;
    const confirming = pending.account.confirm === true;
    try {
      person = await client.finish(provider, ctx.querystring, pending, confirming ? { maxAge: 0 } : {});
    } catch (err) {
      const failure = err instanceof UpstreamFailure ? err : new UpstreamFailure('invalid', 'unexpected');
      failed(ctx, provider.id, failure.kind, failure.code);
      return render(ctx, who, `${confirming ? 'Confirming with' : 'Linking'} ${provider.name} did not complete (${failure.kind === 'denied' ? 'cancelled there' : failure.kind === 'unavailable' ? 'it did not answer in time' : 'its answer could not be accepted'}).`);
    }
    const existing = await identities.find(person.iss, person.sub);
    if (confirming) {
      // The upstream identity that signs in to this account, freshly signed in: the proof sudo mode takes.
      if (existing?.accountId !== who.account.id) {
        failed(ctx, provider.id, 'confirm_other_identity');
        return render(ctx, who, `That ${provider.name} identity is not the one linked to your account.`);
      }
      await sudo.start(who.session, who.account.id);
      audit(logger, 'account_sudo_started', { accountId: who.account.id, seconds: deps.sudoSeconds, source: 'upstream', provider: provider.id }, 'proved who they are through an upstream provider');
      return render(ctx, who, undefined, `Thanks — for the next ${Math.round(deps.sudoSeconds / 60)} minutes you can change how you sign in without proving it again.`);
    }
    if (existing && existing.accountId !== who.account.id) {
      failed(ctx, provider.id, 'linked_elsewhere');
      return render(ctx, who, `That ${provider.name} identity is linked to another account.`);
    }
    if (!existing) {
      await identities.link({ accountId: who.account.id, provider: provider.id, iss: person.iss, sub: person.sub, ...(person.email ? { email: normalizeEmail(person.email) } : {}), linkedAt: Date.now(), via: 'account_page' });
      audit(logger, 'upstream_linked', { accountId: who.account.id, provider: provider.id, via: 'account_page', ip: ctx.ip }, 'upstream identity linked');
    }
    ctx.status = 303;
    ctx.redirect('/account/providers');
  });

  router.post('/account/providers/unlink', sameOrigin, form, async (ctx) => {
    const ok = await proven(ctx);
    if (!ok) return;
    const id = (typeof ok.body.provider === 'string' ? ok.body.provider : '');
    const all = await identities.ofAccount(ok.who.account.id);
    const linked = all.filter((i) => i.provider === id);
    if (linked.length && lastWayIn(ok.who.account, all, linked, passkeysOn)) {
      ctx.status = 409;
      return render(ctx, ok.who, 'This is how you sign in: set a password first ("Forgot your password?" on the sign-in page) or add a passkey on your account page, then unlink it.');
    }
    for (const identity of linked) await identities.unlink(ok.who.account.id, identity.iss, identity.sub);
    if (linked.length) audit(logger, 'upstream_unlinked', { accountId: ok.who.account.id, provider: id, identities: linked.length, source: 'account_page', ip: ctx.ip }, 'upstream identity unlinked');
    ctx.status = 303;
    ctx.redirect('/account/providers');
  });
}
