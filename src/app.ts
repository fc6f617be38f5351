import { randomUUID } from 'node:crypto';
import type { RequestListener } from 'node:http';
import { readFileSync } from 'node:fs';
import Router from '@koa/router';
import Koa, { type Context, type Middleware } from 'koa';
import type Provider from 'oidc-provider';
import { Accounts } from './accounts/accounts.ts';
import { passwordRuleOf } from './accounts/password-rule.ts';
import { Passkeys } from './accounts/passkeys.ts';
import { watchAppUse } from './accounts/connected-apps.ts';
import { adminApiNotFound, adminApiRoutes, ensureAdminApi } from './admin/api.ts';
import { ensureCliClient } from './admin/cli-client.ts';
import { consoleRoutes, ensureConsoleClient } from './admin/console.ts';
import { FirstAdmin } from './admin/first-admin.ts';
import { setupRoutes } from './admin/setup-page.ts';
import { Operations } from './admin/operations.ts';
import { validateClientMetadata } from './cli/client-metadata.ts';
import { ActivityLog, recordActivity } from './observability/activity.ts';
import { SecondFactor } from './accounts/second-factor.ts';
import { accountRoutes, ensureAccountPageClient } from './interactions/account-page.ts';
import type { Config } from './config.ts';
import { interactionRoutes } from './interactions/routes.ts';
import { audit } from './observability/audit.ts';
import { withoutRedaction, type Logger } from './observability/logger.ts';
import { instrumentStore, Metrics, routeOf } from './observability/metrics.ts';
import { minuteSeriesOf } from './observability/minute-series.ts';
import { recordRefreshReuse, recordTokenResponse, watchProvider } from './observability/provider-events.ts';
import { formPostAsGet } from './oidc/form-post-endpoints.ts';
import { startLogoutDelivery, type LogoutDeliveryOptions } from './oidc/backchannel-logout.ts';
import { backchannelTargetRules } from './oidc/backchannel-targets.ts';
import { deviceFlowEdges } from './oidc/device-flow.ts';
import { deviceGrantNotAllowedIsUnauthorizedClient } from './oidc/provider-wording.ts';
import { installEdge, type EdgeEntry } from './edge.ts';
import { createProvider, tokenBelongsTo } from './oidc/provider.ts';
import { leanFront } from './oidc/lean-path.ts';
import { Registry } from './oidc/registry.ts';
import { demoRoutes, ensureDemo, type DemoSetup } from './demo/demo.ts';
import { CLIENT_AUTH_ROUTES, countFailedClientAuthentication } from './security/client-auth-throttle.ts';
import { Csrf } from './security/csrf.ts';
import { Lockout, lockoutOptions, lockoutSettings, type LockoutEvent, type LockoutEventName, type LockoutScope } from './security/lockout.ts';
import { loadSecretBox } from './security/secret-box.ts';
import { securityHeaderList, securityHeaders } from './security/headers.ts';
import { pinIssuerOrigin } from './security/issuer-origin.ts';
import { sameOriginForms } from './security/same-origin.ts';
import { withReadAhead } from './storage/read-ahead.ts';
import type { RedisStore } from './storage/redis-store.ts';
import { RETRY_AFTER_SECONDS, StorageUnavailable, type Store } from './storage/store.ts';
import { Views } from './views.ts';
import { brandOf, brandStyle, LOGO_PATH, logoRoutes, type Brand } from './brand.ts';
import { EmailLinks } from './accounts/email-links.ts';
import { Email, emailSettings } from './accounts/email.ts';
import { outboxRoutes } from './mail/outbox-page.ts';
import { languageSwitchRoutes } from './i18n/language-switch.ts';
import type { Locale } from './i18n/locale.ts';
import { MailQueue, startMailDelivery, type MailDeliveryOptions } from './mail/queue.ts';
import { Outbox, smtpTransport, type MailTransport } from './mail/transport.ts';
import { emailAddressRoutes } from './interactions/email-address.ts';
import { passwordResetRoutes } from './interactions/password-reset.ts';
import { invitationRoutes } from './interactions/invitation.ts';
import { Invitations } from './accounts/invitations.ts';
import { SignUp } from './accounts/sign-up.ts';
import { signUpRoutes } from './interactions/sign-up.ts';
import { UpstreamProviders } from './upstream/providers.ts';
import { upstreamRoutes } from './upstream/routes.ts';
import { recordSessionUpstream } from './upstream/session-idp.ts';

export interface AppDeps {
  config: Config;
  store: Store;
  logger: Logger;
  /** The clock of time-based codes (TOTP); tests inject one to sign in many times without waiting. */
  totpClock?: () => number;
  /** The clock of refresh-token grace windows; tests inject one to pass a window without waiting. */
  clock?: () => number;
  /** Back-channel logout delivery: deadline and retry waits (defaults 5 s; 1 s, 4 s). */
  logoutDelivery?: Pick<LogoutDeliveryOptions, 'timeoutMs' | 'retryDelaysMs' | 'pollMs' | 'resolve'>;
  /**
   * Mail delivery: retry waits and polling (tests shorten them), the transport instead of SMTP_URL's,
   * and `outboxPage` to serve /dev/outbox outside development (tests only).
   */
  mail?: Pick<MailDeliveryOptions, 'retryDelaysMs' | 'pollMs'> & { transport?: MailTransport; outboxPage?: boolean };
}

declare module 'koa' {
  /** Set first on every request (requestContext): the id in X-Request-Id and on the request's log lines. */
  interface DefaultState {
    requestId?: string;
  }
}

/**
 * Composes the server: oidc-provider is itself a Koa app, and our middleware and routes are
 * mounted in front of its own routes (provider.use), so cookies, keys and proxy trust are shared.
 */
export async function createApp({ config, store: rawStore, logger, totpClock, clock, logoutDelivery, mail }: AppDeps) {
  const metrics = new Metrics();
  if (rawStore.kind === 'redis' && 'client' in rawStore) metrics.watchRedisClient((rawStore as RedisStore).client);
  const store = instrumentStore(rawStore, metrics);
  // Every audit event also goes to the activity log (admin API), without the request waiting for it.
  const activity = new ActivityLog(store, {
    maxEvents: config.ADMIN_ACTIVITY_MAX,
    maxAnonymousEvents: config.ADMIN_ACTIVITY_ANONYMOUS_MAX,
    tokenCountDays: config.ADMIN_ACTIVITY_TOKEN_COUNT_DAYS,
    onAppendFailure: () => metrics.activityAppendFailures.inc(),
    ...(clock ? { now: clock } : {}),
  });
  recordActivity(logger, activity);
  // After the activity log's own listener, so the outage's first line is not sent to the Redis that is away.
  watchStorageAvailability(rawStore, logger);
  const accounts = new Accounts(store, { passwordRule: passwordRuleOf(config, logger) });
  const backchannelTargets = backchannelTargetRules(config);
  const registry = new Registry(store, { cache: true, backchannelTargets, ...(clock ? { clock } : {}) });
  // Records written before the paging indexes existed (a no-op once they are complete).
  await accounts.backfillIndex();
  await registry.backfillIndex();
  const stopWatchingRegistry = await registry.watch();
  const brand = brandOf(config);
  const views = new Views(brand);
  const accountPageClientId = await ensureAccountPageClient({ store, registry, issuer: config.ISSUER });
  const consoleClientId = await ensureConsoleClient({ store, registry, issuer: config.ISSUER });
  await ensureAdminApi({ store, registry, issuer: config.ISSUER });
  await ensureCliClient(registry);
  const box = await loadSecretBox(store, config.SECRETS_KEY);
  // People (passwords, TOTP and recovery codes) and clients (secrets at the token endpoints) are
  // counted apart: a misconfigured service behind an IP must not lock people out from that IP.
  // A lockout's subject is what was typed (people type passwords into the email field): the log names
  // the account or client by id when it exists, else by a keyed digest of what was typed.
  const personOf = async (typed: string) => {
    const account = await accounts.findByEmail(typed).catch(() => undefined);
    return account ? { accountId: account.id } : { emailDigest: box.digest(typed, 'lockout-email') };
  };
  const lockouts = lockoutSettings(config);
  // The lockouts' clock: their records' times and how long "not locked" is remembered.
  const lockoutClock = clock ? { now: clock } : {};
  const lockout = new Lockout(store, { ...lockoutOptions('signin', lockouts), ...lockoutClock, onEvent: auditLockout(logger, metrics, 'signin', personOf), describe: personOf });
  // A client's "account" is its id at one IP (client-auth-throttle.ts).
  const clientSourceOf = async (source: string) => {
    const at = source.lastIndexOf('@');
    const [typed, ip] = [source.slice(0, at), source.slice(at + 1)];
    return (await registry.findClient(typed).catch(() => undefined)) ? { clientId: typed, ip } : { clientIdDigest: box.digest(typed, 'lockout-client'), ip };
  };
  const clientLockout = new Lockout(store, {
    ...lockoutOptions('client', lockouts),
    rememberSubjectKeys: true,
    ...lockoutClock,
    onEvent: auditLockout(logger, metrics, 'client', clientSourceOf),
    describe: clientSourceOf,
  });
  // Wrong device user codes (RFC 8628 §5.1), per client IP: its "account" is the IP too (device-flow.ts).
  const deviceLockout = new Lockout(store, {
    ...lockoutOptions('device', lockouts),
    ...lockoutClock,
    onEvent: auditLockout(logger, metrics, 'device', async (source) => ({ ip: source.slice(source.lastIndexOf('@') + 1) })),
  });
  const { provider, cookieKeys, stopFollowingKeys, edge: answers } = await createProvider({
    config,
    store,
    accounts,
    registry,
    views,
    clientLockout,
    accountPageClientId,
    box,
    ...(clock ? { clock } : {}),
    deviceFlow: { lockout: deviceLockout, logger, metrics },
    consoleClientId,
    onSigningKeysError: (reason) => logger.error({ reason }, 'stored signing keys could not be used: still signing with the previous ones'),
    onConsentGranted: (event) => {
      audit(logger, 'consent_granted', { ...event }, 'consent granted');
      // Connected apps' "last used" (`appUse`, below: sign-ins start once the app serves).
      appUse.usedBySignIn(event.accountId, event.clientId);
    },
    // Only its jti is remembered until it expires: the other tokens of its grant stay.
    onJwtRevoked: (event) => audit(logger, 'token_revoked', { ...event, grantTokensRevoked: false }, 'token revoked'),
    onIntrospectionThrottled: (event) => audit(logger, 'introspection_throttled', { ...event }, `introspections of inactive tokens refused for ${event.retryAfterSeconds} s`),
  });
  const csrf = new Csrf(cookieKeys[0]!);
  const secondFactor = new SecondFactor({ store, accounts, box, issuer: new URL(config.ISSUER).host, ...(totpClock ? { now: totpClock } : {}) });
  const passkeys = new Passkeys({ store, accounts, rpId: config.WEBAUTHN_RP_ID, rpName: new URL(config.ISSUER).host, origins: config.WEBAUTHN_ORIGINS, sign: (value) => box.digest(value, 'passkey challenge') });
  const stopWatchingLockouts = await Lockout.watch(store, [lockout, clientLockout, deviceLockout]);

  watchProvider(provider, logger, metrics);
  // "Last used" of connected apps (/account); a failure only leaves that date older.
  const appUse = watchAppUse(provider, store, (err) => logger.debug({ err }, 'could not record when an app was last used'), clock);
  const stopLogoutDelivery = await startLogoutDelivery({ provider, store, logger, metrics, targets: backchannelTargets, ...logoutDelivery });

  // Health and metrics: on the main port, unless METRICS_PORT moves them to `opsApp` (main.ts listens).
  const opsRouter = opsRoutes(store, metrics);
  const opsApp = new Koa();
  opsApp.use(opsRouter.routes());

  // Email: queued in the store, sent by every server (mail/queue.ts). Without SMTP_URL (never in
  // production with EMAIL=on: config.ts refuses it) mail goes to an outbox in this process.
  const outbox = !mail?.transport && !config.SMTP_URL ? new Outbox() : undefined;
  const transport: MailTransport = mail?.transport ?? (config.SMTP_URL ? smtpTransport(config.SMTP_URL) : outbox!);
  const mailQueue = new MailQueue(store, box, clock, brand);
  const emailLinks = new EmailLinks(store, clock);
  const email = new Email({
    store, queue: mailQueue, accounts, logger, links: emailLinks,
    settings: { ...emailSettings(config), issuer: config.ISSUER },
  });
  const stopMailDelivery = config.EMAIL === 'on'
    ? await startMailDelivery({ queue: mailQueue, store, transport, from: config.MAIL_FROM, logger, metrics, ...(clock ? { now: clock } : {}), ...(mail?.retryDelaysMs ? { retryDelaysMs: mail.retryDelaysMs } : {}), ...(mail?.pollMs ? { pollMs: mail.pollMs } : {}) })
    : async () => transport.close();
  const outboxPage = outbox && config.EMAIL === 'on' && (config.NODE_ENV === 'development' || mail?.outboxPage) ? outbox : undefined;
  if (outboxPage) logger.info(`no SMTP_URL: mail is kept in this process and listed at ${config.ISSUER}/dev/outbox`);
  const invitations = new Invitations({ store, accounts, links: emailLinks, queue: mailQueue, issuer: config.ISSUER, ttlSeconds: config.INVITATION_TTL_SECONDS, ...(clock ? { now: clock } : {}) });
  const linkDeps = { accounts, store, views, csrf, email, logger, issuer: config.ISSUER, perIpPerHour: config.EMAIL_LINKS_PER_IP_PER_HOUR };
  // Pages whose link makes an account: a password or a passkey made there.
  const newAccountDeps = { passkeys, passkeyMode: config.PASSKEYS, secondFactor, mfaRequired: config.MFA_POLICY === 'required' };
  const signUp = new SignUp({ accounts, links: emailLinks, queue: mailQueue, email, logger, issuer: config.ISSUER, mode: config.SIGNUP, domains: config.SIGNUP_ALLOWED_DOMAINS ?? [], ttlSeconds: config.EMAIL_VERIFICATION_TTL_SECONDS });

  // Upstream providers (upstream/): "Continue with …" on the sign-in page, every `button` one and a `hint` one the request names.
  // The sign-in page lists them on every render: cached like clients, dropped on the registry's change messages.
  const upstreamProviders = new UpstreamProviders(store, box, { cache: true, ...(clock ? { now: clock } : {}) });
  registry.onChange(() => upstreamProviders.forget());
  const upstreamButtons = async (params: Record<string, unknown>) =>
    (await upstreamProviders.list()).filter((p) => p.display === 'button' || params.upstream === p.id).map((p) => ({ id: p.id, name: p.name }));
  const signIn = { provider, accounts, store, views, csrf, secondFactor, passkeys, passkeyMode: config.PASSKEYS, lockout, mfaPolicy: config.MFA_POLICY, metrics, logger, issuer: config.ISSUER, email, signUpOffered: signUp.offered, registry, upstreamButtons };
  // The admin API: the same operations as the CLI, behind this server's own access tokens.
  // The overview's last hour: this process's counters, read once a minute.
  const minuteSeries = minuteSeriesOf(metrics);
  minuteSeries.start();
  const ops = new Operations({
    store, registry, accounts, logger, validateClient: validateClientMetadata, issuer: config.ISSUER, lockouts, minuteSeries, passkeyMode: config.PASSKEYS,
    invitations: { ttlSeconds: config.INVITATION_TTL_SECONDS, emailOn: config.EMAIL === 'on' },
    email: emailSettings(config),
    brand,
    ...(config.SECRETS_KEY ? { secretsKey: config.SECRETS_KEY } : {}),
    ...(config.SIGNING_KEYS_FILE ? { signingKeysFile: config.SIGNING_KEYS_FILE } : {}),
  });
  // The first-run demo app (/demo) and its account: development only, never in production or tests,
  // and one process only (several workers would race to create it).
  const demo: DemoSetup | undefined = config.NODE_ENV === 'development' && config.WORKERS === 1 ? await ensureDemo({ store, registry, accounts, issuer: config.ISSUER }) : undefined;

  // The first admin: a one-time setup link (serve.ts prints it) or the bootstrap settings.
  const firstAdmin = new FirstAdmin({ store, accounts, logger, linkTtlSeconds: config.SETUP_LINK_TTL_SECONDS, ...(clock ? { now: clock } : {}) });

  const only = (...routes: string[]) => new Set(routes);
  // A signed-in person's pick of language is their account's too: the notices mailed later speak it.
  const rememberPickedLocale = async (ctx: Context, locale: Locale) => {
    try {
      const session = await provider.Session.get(ctx);
      if (session.accountId) await accounts.rememberLocale(session.accountId, locale);
    } catch (err) {
      logger.warn({ reason: err instanceof Error ? err.message : String(err) }, 'language not remembered');
    }
  };

  // The edge, in the order a request meets it; oidc-provider's own routes come after the last entry.
  // The request context comes first, so the request line, the metrics and the error handling see the
  // answer the client gets, after every rewrite below. Each entry says where it acts (`paths`,
  // `oidcRoutes`; neither: every request), and a request meets only the entries of its path (edge.ts).
  const edge: EdgeEntry[] = [
    { name: 'requestContext', does: 'request id, one log line and metrics per request, our errors as clear answers, a styled 404 page for browsers, Retry-After on 503', middleware: requestContext(logger, views, metrics) },
    { name: 'pinIssuerOrigin', does: "host and protocol pinned to ISSUER's (421 never; another Host is answered)", middleware: pinIssuerOrigin(config.ISSUER) },
    { name: 'securityHeaders', does: 'security headers on every answer', middleware: securityHeaders(brand) },
    { name: 'cacheablePublicMetadata', does: 'Cache-Control: public, 5 min on discovery and the key set', oidcRoutes: only('discovery', 'jwks'), middleware: answers.cacheablePublicMetadata },
    { name: 'missingClientAuthIsInvalidClient', does: "no client authentication at all is 401 invalid_client (recognises oidc-provider's wording)", oidcRoutes: CLIENT_AUTH_ROUTES, middleware: answers.missingClientAuthIsInvalidClient },
    { name: 'inactiveIntrospectionLimit', does: 'answers active: false per API credential: INTROSPECTION_INACTIVE_PER_MINUTE, then 429', oidcRoutes: only('introspection'), middleware: answers.inactiveIntrospectionLimit },
    { name: 'revocationAnswersJson', does: 'revocation answers {} rather than an empty body', oidcRoutes: only('revocation'), middleware: answers.revocationAnswersJson },
    { name: 'jwtIntrospectionAndRevocation', does: 'JWT access tokens introspected and revoked by us, under the same policy', oidcRoutes: only('introspection', 'revocation'), middleware: answers.jwtIntrospectionAndRevocation },
    { name: 'tokenReadAhead', does: "a code's or refresh token's grant and account read in one command once it is read (storage/read-ahead.ts)", oidcRoutes: only('token'), middleware: ((_ctx, next) => withReadAhead(next)) as Middleware },
    { name: 'clearerErrors', does: "unauthorized_client for a grant type the client lacks, DPoP and API-token descriptions (recognises oidc-provider's wording)", oidcRoutes: only('token', 'userinfo'), middleware: answers.clearerErrors },
    { name: 'discoveryListsApiScopes', does: 'the API scopes (not --private-scopes ones) in scopes_supported', oidcRoutes: only('discovery'), middleware: answers.discoveryListsApiScopes },
    { name: 'staticRoutes', does: "/static: the stylesheet (with the brand's colours) and the passkey, console, account and recovery-code scripts", paths: ['/static/*'], middleware: staticRoutes(brand).routes() },
    { name: 'logoRoutes', does: '/static/logo: the BRAND_LOGO file, as an image only', paths: [LOGO_PATH], middleware: brand.logo?.file ? logoRoutes(brand).routes() : undefined },
    { name: 'languageSwitch', does: "/language: the pages' language switch (a cookie), back to the same-site page", paths: ['/language'], middleware: languageSwitchRoutes({ remember: rememberPickedLocale }).routes() },
    { name: 'opsRoutes', does: '/metrics, /healthz, /readyz (on METRICS_PORT instead when it is set)', paths: ['/metrics', '/healthz', '/readyz'], middleware: config.METRICS_PORT === undefined ? opsRouter.routes() : undefined },
    { name: 'countFailedClientAuthentication', does: 'each 401 invalid_client counted per client id at the IP (CLIENT_AUTH_*) and per IP (LOCKOUT_IP_*); the refusal (429) is the throttledClientAuthentication bend', oidcRoutes: CLIENT_AUTH_ROUTES, middleware: countFailedClientAuthentication(clientLockout) },
    { name: 'deviceFlowEdges', does: 'code entry: same origin, wrong codes per IP (DEVICE_CODE_*, 429); prefilled code; interval and slow_down', oidcRoutes: only('code_verification', 'device_authorization', 'token'), middleware: deviceFlowEdges({ store, views, lockout: deviceLockout, logger }, config.ISSUER, provider.pathFor('code_verification')) },
    { name: 'deviceGrantNotAllowedIsUnauthorizedClient', does: "a client without the device grant hears unauthorized_client (recognises oidc-provider's wording)", oidcRoutes: only('device_authorization'), middleware: deviceGrantNotAllowedIsUnauthorizedClient },
    { name: 'interactionRoutes', does: '/interaction/:uid/*: same origin, CSRF, sign-in lockout (LOCKOUT_*) on every factor', paths: ['/interaction/*'], middleware: interactionRoutes(signIn).routes() },
    { name: 'accountRoutes', does: '/account: same origin, CSRF, sign-in lockout on every proof', paths: ['/account/*'], middleware: accountRoutes({ ...signIn, registry, clientId: accountPageClientId, sudoSeconds: config.ACCOUNT_SUDO_SECONDS, rpId: config.WEBAUTHN_RP_ID, ...(clock ? { clock } : {}) }).routes() },
    { name: 'passwordResetRoutes', does: '/password/forgot, /password/reset: same origin; links asked for per IP (EMAIL_LINKS_PER_IP_PER_HOUR, 429) and per address (EMAIL_LINKS_PER_ADDRESS_PER_HOUR, same answer); CSRF bound to the link', paths: ['/password/forgot', '/password/reset'], middleware: passwordResetRoutes(linkDeps).routes() },
    { name: 'emailAddressRoutes', does: '/email/verify, /email/change, /email/report: same origin, CSRF bound to the link; a link is used up by the post only', paths: ['/email/verify', '/email/change', '/email/report'], middleware: emailAddressRoutes(linkDeps).routes() },
    { name: 'invitationRoutes', does: '/invitation: same origin, CSRF bound to the link; the post uses the link up and creates the account (a password or a passkey)', paths: ['/invitation'], middleware: invitationRoutes({ ...linkDeps, ...newAccountDeps, invitations }).routes() },
    { name: 'signUpRoutes', does: '/signup, /signup/finish (SIGNUP=domains|open only): same origin; links asked for per IP (EMAIL_LINKS_PER_IP_PER_HOUR, 429) and per address (EMAIL_LINKS_PER_ADDRESS_PER_HOUR, same answer); the finish form bound to its link (CSRF)', paths: ['/signup/*'], middleware: signUp.offered ? signUpRoutes({ ...linkDeps, ...newAccountDeps, signUp, ttlSeconds: config.EMAIL_VERIFICATION_TTL_SECONDS }).routes() : undefined },
    { name: 'sameOriginLogout', does: "oidc-provider's sign-out confirmation refused from another site; the signed-out page told which app asked", oidcRoutes: only('end_session_confirm'), middleware: sameOriginLogout(provider, views, config.ISSUER) },
    { name: 'formPostAsGet', does: 'POST /auth and /session/end: 303 to the GET of the same parameters', oidcRoutes: only('authorization', 'end_session'), middleware: formPostAsGet(provider) },
    { name: 'adminApiRoutes', does: '/admin/api/v1: per IP (ADMIN_API_IP_PER_MINUTE), then bearer token, then per token (ADMIN_API_TOKEN_PER_MINUTE); DPoP; MFA sign-in', paths: ['/admin/api/*'], middleware: adminApiRoutes({ provider, store, registry, accounts, ops, activity, issuer: config.ISSUER, limits: { perIpPerMinute: config.ADMIN_API_IP_PER_MINUTE, perTokenPerMinute: config.ADMIN_API_TOKEN_PER_MINUTE } }).routes() },
    { name: 'adminApiNotFound', does: 'anything else under /admin/api/v1: problem+json 404', paths: ['/admin/api/v1/*'], middleware: adminApiNotFound },
    { name: 'consoleRoutes', does: '/admin: admins signed in with a second factor; same origin, CSRF', paths: ['/admin/*'], middleware: consoleRoutes({ provider, accounts, store, views, csrf, ops, activity, secondFactor, issuer: config.ISSUER, clientId: consoleClientId, logger, adminExists: () => firstAdmin.adminExists() }).routes() },
    { name: 'setupRoutes', does: '/setup/:token: the one-time link that creates the first admin; same origin, CSRF', paths: ['/setup/*'], middleware: setupRoutes({ firstAdmin, views, csrf, issuer: config.ISSUER }).routes() },
    { name: 'devOutbox', does: '/dev/outbox: mail kept in this process (development without SMTP_URL only)', paths: ['/dev/outbox'], middleware: outboxPage ? outboxRoutes(outboxPage, views).routes() : undefined },
    { name: 'demoRoutes', does: '/demo: the first-run app (development only)', paths: ['/demo/*'], middleware: demo ? demoRoutes({ issuer: config.ISSUER, clientId: demo.clientId, email: demo.email, views }).routes() : undefined },
    { name: 'upstreamRoutes', does: '/interaction/:uid/upstream*, /upstream/callback, /account/providers: sign-in through an upstream provider, linking from the account page; state single use, deadline UPSTREAM_TIMEOUT_MS; linking confirmed with a factor (sign-in lockout), same origin, CSRF', paths: ['/interaction/*', '/upstream/callback', '/account/providers/*'], middleware: upstreamRoutes({ ...signIn, providers: upstreamProviders, box, timeoutMs: config.UPSTREAM_TIMEOUT_MS, sudoSeconds: config.ACCOUNT_SUDO_SECONDS, ...(clock ? { clock } : {}) }).routes() },
    { name: 'upstreamSessionRecord', does: 'the upstream provider of a sign-in kept with its session (the idp claim)', oidcRoutes: only('resume'), middleware: recordSessionUpstream(store) },
  ];
  const edgeDispatch = installEdge(provider, edge);

  // The request listener: the app, with the lean path in front of it (LEAN_PATH): the common machine
  // requests answered before a Koa context is made, with the edge's headers, request line and metrics.
  const appCallback = provider.callback();
  const appListener: RequestListener = (req, res) => void appCallback(req, res);
  const requestLog = withoutRedaction(logger);
  const handler: RequestListener = config.LEAN_PATH === 'on'
    ? leanFront({
        provider, registry, clientLockout, tokenBelongsTo,
        commonHeaders: securityHeaderList(brand, new URL(config.ISSUER).protocol === 'https:'),
        onTokenIssued: ({ requestId, clientId, grantType, accountId, body }) => {
          recordTokenResponse(logger, metrics, { requestId, body, clientId, accountId, grantType });
          if (accountId) appUse.used(accountId, clientId);
        },
        onRefreshReused: ({ clientId }) => recordRefreshReuse(logger, metrics, { route: 'token', clientId, error_description: 'grant request is invalid' }),
        onAnswered: ({ requestId, route, body, seconds }) => {
          metrics.leanAnswers.inc({ route });
          metrics.observeAnswer(route, 'POST', 200, seconds, route === 'introspection' ? (body.active === true ? 'active' : 'inactive') : undefined);
          requestLog.info({ requestId, method: 'POST', route, status: 200, durationMs: Math.round(seconds * 10_000) / 10 }, 'request');
        },
      }, appListener)
    : appListener;

  /** Ends what the app holds open besides the store (the change subscriptions). */
  const close = async () => {
    minuteSeries.stop();
    await stopWatchingRegistry();
    await stopWatchingLockouts();
    await stopFollowingKeys();
    await stopLogoutDelivery();
    await stopMailDelivery();
    // This minute's aggregated refusals and the tokens counted since the last write, before the store closes.
    await activity.flush();
  };
  return { app: provider, handler, provider, accounts, registry, metrics, minuteSeries, opsApp, demo, firstAdmin, secondFactor, passkeys, lockout, clientLockout, deviceLockout, ops, activity, edge, edgeDispatch, email, mailQueue, outbox: outboxPage, close };
}

/**
 * oidc-provider's sign-out confirmation form is refused from another site, as ours are (security/same-origin.ts).
 * Signing out of everything, oidc-provider leaves the app out of the signed-out page's address: it is put
 * back (the app that asked, from the session's logout state), so that page can offer to sign in again.
 */
function sameOriginLogout(provider: Provider, views: Views, issuer: string): Middleware {
  const confirm = provider.pathFor('end_session_confirm');
  const success = provider.pathFor('end_session_success');
  const sameOrigin = sameOriginForms(issuer, views, 'the sign-out form expired; sign out from the application again');
  return async (ctx, next) => {
    if (ctx.method !== 'POST' || ctx.path !== confirm) {
      await next();
      return;
    }
    const session = await provider.Session.get(ctx);
    const clientId = (session.state as { clientId?: unknown } | undefined)?.clientId;
    await sameOrigin(ctx, next);
    const location = ctx.response.get('Location');
    if (typeof clientId !== 'string' || !location) return;
    const to = new URL(location, issuer);
    if (to.origin === new URL(issuer).origin && to.pathname === success && !to.searchParams.has('client_id')) {
      to.searchParams.set('client_id', clientId);
      ctx.set('Location', to.href);
    }
  };
}

/**
 * Lockouts and their end as audit events (stable `event` names) and counters. `nameOf` says who an
 * account-kind subject is without repeating what was typed; an IP is logged as it is.
 */
const LOCKED_WHAT: Record<LockoutScope, string> = { signin: 'sign-in', client: 'client authentication', device: 'device code entry' };

function auditLockout(logger: Logger, metrics: Metrics, scope: LockoutScope, nameOf: (typed: string) => Promise<Record<string, string | undefined>>) {
  return async (name: LockoutEventName, data: LockoutEvent) => {
    const { id, ...rest } = data;
    const fields = { scope, ...rest, ...(data.subject === 'ip' ? { ip: id } : await nameOf(id)) };
    if (name === 'lockout.started') {
      metrics.lockouts.inc({ scope, subject: data.subject });
      audit(logger, 'lockout_started', fields, `${LOCKED_WHAT[scope]} locked for ${data.seconds} s after repeated failures`);
    } else {
      audit(logger, 'lockout_ended', fields, `${LOCKED_WHAT[scope]} lockout ended (${data.reason})`);
    }
  };
}

/** Logs each storage outage and recovery once, with stable `event` names (not once per failed request). */
function watchStorageAvailability(store: Store, logger: Logger) {
  let downSince = 0;
  store.onAvailabilityChange?.((available, reason) => {
    if (!available) {
      downSince = Date.now();
      audit(logger, 'storage_unavailable', { reason }, 'storage unavailable: requests that need it answer 503 until it is back');
    } else {
      audit(logger, 'storage_recovered', { downMs: downSince ? Date.now() - downSince : undefined }, 'storage answers again');
    }
  });
}

/**
 * Request id, one log line per request (route pattern, never the path's ids, the query or the body),
 * request metrics, and errors of our own routes turned into clear answers.
 */
function requestContext(logger: Logger, views: Views, metrics: Metrics): Middleware {
  // The request line holds fixed fields only (never a query string, body or header).
  const requestLog = withoutRedaction(logger);
  return async (ctx, next) => {
    const requestId = randomUUID();
    ctx.state.requestId = requestId;
    ctx.set('X-Request-Id', requestId);
    const started = performance.now();
    try {
      await next();
    } catch (err) {
      renderFailure(ctx, err, views, logger);
    }
    // A path nobody answered: a page in the sign-in pages' look for a browser (Koa's is plain text).
    if (ctx.status === 404 && ctx.body == null && ctx.accepts('json', 'html') === 'html') {
      ctx.status = 404;
      views.render(ctx, 'not-found', { title: 'Page not found' });
    }
    if (ctx.status === 503) ctx.set('Retry-After', String(RETRY_AFTER_SECONDS));
    // oidc-provider renders its own 5xx (`server_error`): name the request id there too, as ours do.
    const body = ctx.body as Record<string, unknown> | null | undefined;
    if (ctx.status >= 500 && body && typeof body === 'object' && !Buffer.isBuffer(body) && typeof body.error === 'string' && !('request_id' in body)) {
      ctx.body = { ...body, request_id: requestId };
    }
    const ms = performance.now() - started;
    const route = routeOf(ctx);
    metrics.observeRequest(ctx, route, ms / 1000);
    requestLog.info({ requestId, method: ctx.method, route, status: ctx.status, durationMs: Math.round(ms * 10) / 10 }, 'request');
  };
}

function renderFailure(ctx: Context, err: unknown, views: Views, logger: Logger) {
  const e = err as { status?: number; statusCode?: number; expose?: boolean; error?: string; error_description?: string; message?: string };
  let status = e.statusCode ?? e.status ?? 500;
  let out: { error: string; error_description?: string };
  if (err instanceof StorageUnavailable) {
    out = { error: err.error, error_description: err.error_description };
    // The outage itself is logged once (storage_unavailable); each request only at debug level.
    logger.debug({ requestId: ctx.state.requestId }, 'storage unavailable');
  } else if (status < 500 && e.expose !== false) {
    // oidc-provider errors carry an OAuth code; Koa's ctx.throw only a message.
    out = e.error && e.error !== e.message ? { error: e.error, error_description: e.error_description } : { error: e.error ?? 'invalid_request', error_description: e.error_description ?? e.message };
    if (status === 413) out = { error: 'invalid_request', error_description: 'the request body is too large' };
  } else {
    status = 500;
    out = { error: 'server_error' };
    logger.error({ err, requestId: ctx.state.requestId }, 'unhandled error');
  }
  ctx.status = status;
  if (ctx.accepts('json', 'html') === 'html') views.renderError(ctx, out);
  else ctx.body = { ...out, ...(status >= 500 ? { request_id: ctx.state.requestId } : {}) };
}

/** Our stylesheet and the two scripts of the passkey forms (read once; served from here, never a CDN). */
function staticRoutes(brand: Brand) {
  const files: [string, string, URL][] = [
    ['/static/style.css', 'text/css', new URL('../views/style.css', import.meta.url)],
    ['/static/passkey.js', 'text/javascript', new URL('../views/passkey.js', import.meta.url)],
    // The console's one script (copy buttons); every page works without it.
    ['/static/console.js', 'text/javascript', new URL('../views/console.js', import.meta.url)],
    ['/static/account.js', 'text/javascript', new URL('../views/account.js', import.meta.url)],
    ['/static/recovery-codes.js', 'text/javascript', new URL('../views/recovery-codes.js', import.meta.url)],
    ['/static/webauthn.js', 'text/javascript', new URL('../dist/bundle/index.umd.min.js', import.meta.resolve('@simplewebauthn/browser'))],
  ];
  const router = new Router();
  for (const [path, type, file] of files) {
    // The brand's colours are appended: the pages' CSP allows no inline style.
    const body = path === '/static/style.css' ? Buffer.concat([readFileSync(file), Buffer.from(brandStyle(brand))]) : readFileSync(file);
    router.get(path, (ctx) => {
      ctx.type = type;
      ctx.set('Cache-Control', 'public, max-age=3600');
      ctx.body = body;
    });
  }
  return router;
}

/** Liveness, readiness and Prometheus metrics. */
function opsRoutes(store: Store, metrics: Metrics) {
  const router = new Router();
  router.get('/metrics', async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    try {
      const text = await metrics.text();
      ctx.set('Content-Type', metrics.contentType);
      ctx.body = text;
    } catch {
      // With WORKERS>1 the sum comes from the primary; without it, no partial answer.
      ctx.status = 503;
      ctx.body = { error: 'temporarily_unavailable', error_description: 'the metrics of every worker could not be gathered' };
    }
  });
  router.get('/healthz', (ctx) => {
    ctx.body = { status: 'ok' };
  });
  router.get('/readyz', async (ctx) => {
    try {
      await store.ping();
      ctx.body = { status: 'ready' };
    } catch {
      ctx.status = 503;
      ctx.body = { status: 'unavailable', reason: 'storage does not answer' };
    }
  });
  return router;
}
