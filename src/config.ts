import { smtpOptionProblem } from './mail/transport.ts';
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { HIBP_URL } from './accounts/password-rule.ts';
import { accentProblem, DEFAULT_ACCENT, DEFAULT_BRAND_NAME, logoProblem } from './brand.ts';
import { DEFAULT_LOCKOUTS } from './security/lockout.ts';
import { parseSecretsKey } from './security/secret-box.ts';

/**
 * The one configuration schema. Every variable, its default and its meaning live here;
 * docs/configuration.md's table is generated from `configDocs` (`npm run docs`) and checked against it by a test.
 */
export const configDocs: Record<string, string> = {
  NODE_ENV: '`development`, `production` or `test`. Production enforces the guardrails (Redis and `SECRETS_KEY` required, https issuer).',
  PORT: 'TCP port to listen on.',
  HOST: 'Interface to bind.',
  ISSUER: 'The public URL of the server (OIDC `iss`).',
  REDIS_URL: 'Redis to keep everything in (`redis://…` or `rediss://…`). Unset: the embedded in-memory store (development only).',
  LOG_LEVEL: 'pino level: `fatal`, `error`, `warn`, `info`, `debug`, `trace` or `silent`.',
  LOG_FORMAT: '`json` (one JSON object per line on stdout) or `pretty` (for people; needs the dev dependency `pino-pretty`). Unset: `pretty` in development on a terminal, `json` otherwise.',
  WORKERS: 'Processes serving requests (node:cluster), all on one port and one Redis. Unset: the number of CPUs in production, 1 otherwise.',
  METRICS_PORT: 'A separate port for `/metrics`, `/healthz` and `/readyz` (then not served on `PORT`). Unset: served on `PORT`.',
  TRUST_PROXY: 'How many proxies in front append to `X-Forwarded-For`: the client address is the one the outermost of them saw. `true` is 1, `false` is 0 (the socket\'s address). URLs and `Secure` cookies follow `ISSUER`, never a forwarded header.',
  REDIS_TIMEOUT_MS: 'Deadline for one Redis command; past it the request fails with 503.',
  REDIS_CLUSTER_NODES: 'A Redis Cluster to keep everything in instead: some of its nodes as `host:port,host:port` (the rest are discovered). Only one of `REDIS_URL`, `REDIS_CLUSTER_NODES` and `REDIS_SENTINELS` may be set.',
  REDIS_SENTINELS: 'A Redis behind Sentinel to keep everything in instead: the Sentinels as `host:port,host:port`; needs `REDIS_SENTINEL_NAME`.',
  REDIS_SENTINEL_NAME: 'The name of the master the Sentinels monitor (`sentinel monitor <name> …`), e.g. `mymaster`.',
  REDIS_PASSWORD: 'Password of the Redis Cluster nodes or of the Sentinel-managed Redis (not of the Sentinels); with `REDIS_URL`, for a URL without one.',
  SIGNING_KEYS_FILE: 'A JSON Web Key Set (private keys) to sign with instead of keys generated and kept in storage.',
  COOKIE_KEYS: 'Comma-separated secrets that sign cookies (first one signs) instead of a key generated and kept in storage, sealed under `SECRETS_KEY`.',
  SECRETS_KEY: '32 random bytes, base64 or hex (`openssl rand -base64 32`), that encrypt TOTP secrets and the stored cookie key at rest (AES-256-GCM). Required in production; unset elsewhere: a key generated and kept in storage.',
  MFA_POLICY: '`required`: every account signs in with a second factor (enrolling at its next sign-in); `optional`: only accounts that enrolled one.',
  UPSTREAM_TIMEOUT_MS: 'The deadline of every request to an upstream sign-in provider (discovery, token, userinfo, GitHub\'s API), in milliseconds; an upstream that is down or slower shows the person a page with a way back (docs/upstream-providers.md).',
  PASSKEYS: '`off`: no passkeys offered (existing ones are kept but not used); `optional`: offered beside the password and the authenticator app; `preferred`: as `optional`, with "Sign in with a passkey" styled as the main button of the sign-in page.',
  WEBAUTHN_RP_ID: 'The WebAuthn relying party id passkeys are bound to: the issuer\'s host name or a registrable suffix of it. Unset: the issuer\'s host name. Changing it orphans existing passkeys.',
  WEBAUTHN_ORIGINS: 'Comma-separated origins a passkey ceremony may come from (`https://login.example.com`). Unset: the issuer\'s origin.',
  PASSWORD_BREACH_CHECK: '`off`: a new password is checked against the list of common passwords shipped with Latchkey (and the email address\'s name) only; `hibp`: also against Have I Been Pwned\'s Pwned Passwords range API, sending only the first 5 hex digits of the password\'s SHA-1. When the API does not answer within 2 s the password is accepted and a warning logged.',
  PASSWORD_BREACH_CHECK_URL: 'The Pwned Passwords range API that `PASSWORD_BREACH_CHECK=hibp` asks (`<url>/range/<5 hex digits>`), e.g. a mirror inside your network.',
  BACKCHANNEL_LOGOUT_ALLOW_PRIVATE: '`true`: back-channel logout URIs may point at loopback, link-local and private addresses (apps on an internal network). Unset or `false`: refused in production (at registration, and at delivery for the address the name resolves to); elsewhere only link-local addresses are refused. The server\'s own origin is always refused.',
  ADMIN_ACTIVITY_MAX: 'How many audit events the activity log (admin API) keeps in Redis, about: the oldest are dropped beyond it. Every event is logged either way.',
  ADMIN_ACTIVITY_ANONYMOUS_MAX: 'How many entries the activity log keeps, about, of what callers cause without signing in (refused client authentications and sign-ins, one entry per source and minute with a count; lockouts of names nobody has). Kept apart from `ADMIN_ACTIVITY_MAX`, so a flood of them never pushes admin changes or security events out.',
  ADMIN_ACTIVITY_TOKEN_COUNT_DAYS: 'How many days the activity log keeps its counts of tokens issued (per app, grant type and minute; tokens are counted, not logged one by one, in the activity log). Each token still has its `token_issued` log line.',
  LOCKOUT_ACCOUNT_MAX_FAILURES: 'Failed sign-in attempts (password, code or passkey, each factor counted apart) of one email address, known or not, that lock its sign-in for 1 min, then 5 min, 15 min and 1 h at each further lockout within a day. At most 100 (NIST SP 800-63B).',
  LOCKOUT_ACCOUNT_WINDOW_SECONDS: 'How long a failed sign-in attempt of an email address counts towards `LOCKOUT_ACCOUNT_MAX_FAILURES`, from the first of its run. A success forgets them.',
  LOCKOUT_IP_MAX_FAILURES: 'Failed attempts from one client address that lock it, counted apart for sign-ins, client authentications and device codes (one address can be many people behind a NAT: keep it well above the per-account limits).',
  LOCKOUT_IP_WINDOW_SECONDS: 'How long a failed attempt counts towards `LOCKOUT_IP_MAX_FAILURES`, from the first of its run.',
  CLIENT_AUTH_MAX_FAILURES: 'Failed client authentications (`401 invalid_client` at the token, introspection, revocation, pushed authorization and device authorization endpoints) of one client id at one address that make that id at that address wait (`429`). Never per client id alone, so nobody can lock a client out from elsewhere. At most 100.',
  CLIENT_AUTH_WINDOW_SECONDS: 'How long a failed client authentication counts towards `CLIENT_AUTH_MAX_FAILURES`.',
  DEVICE_CODE_MAX_FAILURES: 'Device user codes that match nothing, typed from one address, that make the code entry page refuse that address for a while (RFC 8628 §5.1). At most 100.',
  DEVICE_CODE_WINDOW_SECONDS: 'How long a wrong device user code counts towards `DEVICE_CODE_MAX_FAILURES`.',
  ADMIN_API_IP_PER_MINUTE: 'Requests to the admin API per minute from one client address, counted before the access token is looked up; past it `429` with `Retry-After`.',
  ADMIN_API_TOKEN_PER_MINUTE: 'Requests to the admin API per minute with one access token; past it `429` with `Retry-After`.',
  ACCOUNT_SUDO_SECONDS: 'How long a person may change their password, authenticator, passkeys and recovery codes on `/account` after proving who they are once (password and code, or a passkey): "sudo mode", kept server-side for that browser\'s session. Removing the last second factor and changing the address always ask again. 60 to 3600.',
  SETUP_LINK_TTL_SECONDS: 'How long the one-time setup link lasts that a server without an admin prints on its standard error at start (never in the log), to create the first admin. 60 to 86400.',
  ADMIN_BOOTSTRAP_EMAIL: 'The first admin\'s email, created at start when no admin exists (with `ADMIN_BOOTSTRAP_PASSWORD_FILE`); nothing happens once an admin exists. The admin sets up a second factor at the first console sign-in.',
  ADMIN_BOOTSTRAP_PASSWORD_FILE: 'A file holding that admin\'s password (a Docker or Kubernetes secret, say; one trailing line break is ignored), never the password itself in a variable. A password the password rule refuses stops the start.',
  EMAIL: '`on`: email features (forgotten passwords, address verification and changes, security notices); `off`: none, and the sign-in page tells a person who forgot their password to ask the administrator. Unset: `on` when `SMTP_URL` is set or outside production, `off` in production without it. In production `on` needs `SMTP_URL`.',
  SMTP_URL: 'The mail server to send through: `smtp://user:password@host:587` (STARTTLS when offered) or `smtps://…:465` (TLS from the start). Two query options: `?requireTLS=true` (smtp:// refuses to send unless the server offers STARTTLS) and `?name=host.example.com` (the name said in EHLO); any other is refused at start. Unset outside production: mail goes to an in-process outbox listed at `/dev/outbox` (development only).',
  MAIL_FROM: 'The sender of every message, e.g. `Latchkey <no-reply@example.com>`. Unset: `BRAND_NAME <no-reply@` the issuer\'s host name `>`.',
  PASSWORD_RESET_TTL_SECONDS: 'How long a password reset link works (it works once).',
  EMAIL_VERIFICATION_TTL_SECONDS: 'How long a link that verifies an address, or confirms a new one, works (it works once).',
  INVITATION_TTL_SECONDS: 'How long an invitation and its link work (the link works once; a re-sent invitation gets a new link and the old one dies).',
  EMAIL_LINKS_PER_ADDRESS_PER_HOUR: 'Emailed links (password reset, verification) one address may be sent per hour; past it the request is answered as always and nothing is sent.',
  EMAIL_LINKS_PER_IP_PER_HOUR: 'Requests for emailed links per hour from one client address; past it `429` with `Retry-After`.',
  SIGNUP: 'Who may create an account. `off`: nobody but the operator (console, admin API, CLI); `invite-only`: the same, said plainly — only invitations create accounts, no sign-up page; `domains`: anyone with an address at one of `SIGNUP_ALLOWED_DOMAINS`; `open`: anyone with an address. The last two offer "Create an account" on the sign-in page and `/signup`, and need `EMAIL=on`: the account is made only when the person opens the link mailed to the address. Sign-up links count against `EMAIL_LINKS_PER_*` and last `EMAIL_VERIFICATION_TTL_SECONDS`.',
  SIGNUP_ALLOWED_DOMAINS: 'With `SIGNUP=domains`: comma-separated domains whose addresses may sign up (`example.com,example.org`; exact matches, not subdomains). Other addresses are refused on the form.',
  BRAND_NAME: 'The product name people read on every page (titles, the top of each page, the console) and in every mail (subjects, signature), e.g. `Acme Accounts`.',
  BRAND_ACCENT: 'The accent colour of buttons and links, as `#rrggbb`. Refused at start when neither white nor dark text reaches a WCAG contrast of 4.5:1 on it; dark text is used on light colours, and links get a darker shade of a light colour so they read on white.',
  BRAND_LOGO: 'A logo shown beside the product name on every page and in mail: an `https://` URL (its origin, and only it, is added to the pages\' `img-src`), or the path of a PNG, SVG or WebP file of at most 256 KiB, read at start and served at `/static/logo` (an SVG as an image only: sandboxed, no script). Unset: the name alone.',
  LEAN_PATH: '`on`: the common requests at `/token` — `client_credentials` for an API with opaque tokens, and the refresh-token grant of a live, unused, not sender-bound refresh token whose new access token is opaque (no `scope` or `resource`, no grace window) — and introspection of an opaque client-credentials token, by a client sending its secret the way it was registered, without DPoP, are answered in front of oidc-provider, from the same records and with the same answers, at a fraction of the CPU; anything else (reuse, a revoked grant, a disabled account, every refusal) goes to oidc-provider as before. `off`: everything goes to oidc-provider.',
  INTROSPECTION_INACTIVE_PER_MINUTE: 'How many introspections answering `active: false` one API credential may make per minute; past it such answers become `429` with `Retry-After` until the minute is over. Answers `active: true` are never counted nor refused.',
};

/** `TRUST_PROXY`: a number of proxy hops; `true`/`yes` mean one, `false`/`no` none. */
const proxyHops = z
  .string()
  .regex(/^(?:true|false|yes|no|\d{1,2})$/, 'must be the number of proxies in front (0, 1, 2…), or true (one) or false (none)')
  .transform((v) => (v === 'true' || v === 'yes' ? 1 : v === 'false' || v === 'no' ? 0 : Number(v)));

/** `host:port,host:port` (IPv6 in brackets): Redis Cluster nodes or Sentinels. */
const hostPorts = z.string().transform((value, ctx) => {
  const entries = value.split(',').map((entry) => entry.trim()).filter(Boolean);
  const parsed = entries.map((entry) => {
    const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+)):(\d{1,5})$/.exec(entry);
    const port = Number(m?.[3]);
    return m && port >= 1 && port <= 65535 ? { host: (m[1] ?? m[2])!, port } : undefined;
  });
  if (entries.length === 0 || parsed.includes(undefined)) {
    ctx.addIssue({ code: 'custom', message: 'must be host:port entries separated by commas, e.g. redis-1:6379,redis-2:6379' });
    return z.NEVER;
  }
  return parsed as { host: string; port: number }[];
});

/** A name as an address's display name (RFC 5322): as it is when plain, else quoted. */
const displayName = (name: string) => (/^[\p{L}\p{N} .'-]+$/u.test(name) ? name : `"${name.replace(/["\\]/g, '')}"`);

/** A lockout threshold: whole failures, at most `max` (NIST SP 800-63B caps an account's at 100). */
const failures = (max: number) => z.coerce.number().int().min(1).max(max);
/** How long failures count: a second to 30 days. */
const windowSeconds = z.coerce.number().int().min(1).max(30 * 24 * 60 * 60);

const schema = z
  .object({
    NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
    PORT: z.coerce.number().int().min(0).max(65535).default(3000),
    HOST: z.string().min(1).default('0.0.0.0'),
    ISSUER: z
      .url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' })
      .refine((url) => !/[?#]/.test(url), 'must not have a query or fragment (OIDC Core 1.0 §1.2)')
      .optional(),
    REDIS_URL: z.url({ protocol: /^rediss?$/, error: 'must be a redis:// or rediss:// URL' }).optional(),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    LOG_FORMAT: z.enum(['json', 'pretty']).optional(),
    METRICS_PORT: z.coerce.number().int().min(1).max(65535).optional(),
    TRUST_PROXY: proxyHops.default(0),
    REDIS_TIMEOUT_MS: z.coerce.number().int().min(10).max(60000).default(1000),
    REDIS_CLUSTER_NODES: hostPorts.optional(),
    REDIS_SENTINELS: hostPorts.optional(),
    REDIS_SENTINEL_NAME: z.string().regex(/^[A-Za-z0-9._-]+$/, 'must be a Sentinel master name (letters, digits, `.`, `_`, `-`)').optional(),
    REDIS_PASSWORD: z.string().min(1).optional(),
    SIGNING_KEYS_FILE: z.string().min(1).optional(),
    COOKIE_KEYS: z
      .string()
      .transform((s) => s.split(',').map((k) => k.trim()).filter(Boolean))
      .pipe(z.array(z.string().min(32, 'each cookie key needs at least 32 characters')).min(1))
      .optional(),
    SECRETS_KEY: z
      .string()
      .refine((s) => parseSecretsKey(s) !== undefined, 'must be 32 bytes written as base64 or hex (e.g. `openssl rand -base64 32`)')
      .optional(),
    MFA_POLICY: z.enum(['required', 'optional']).default('required'),
    PASSKEYS: z.enum(['off', 'optional', 'preferred']).default('optional'),
    UPSTREAM_TIMEOUT_MS: z.coerce.number().int().min(100).max(60_000).default(10_000),
    WEBAUTHN_RP_ID: z.string().regex(/^(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/, 'must be a lower-case host name, e.g. example.com').optional(),
    WEBAUTHN_ORIGINS: z
      .string()
      .transform((s) => s.split(',').map((o) => o.trim()).filter(Boolean))
      .pipe(z.array(z.url({ protocol: /^https?$/, error: 'each must be an http:// or https:// origin' }).refine((o) => new URL(o).origin === o, 'each must be an origin: scheme, host and port, no path')).min(1))
      .optional(),
    WORKERS: z.coerce.number().int().min(1).max(256).optional(),
    PASSWORD_BREACH_CHECK: z.enum(['off', 'hibp']).default('off'),
    PASSWORD_BREACH_CHECK_URL: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }).default(HIBP_URL),
    ADMIN_ACTIVITY_MAX: z.coerce.number().int().min(10).max(10_000_000).default(100_000),
    BACKCHANNEL_LOGOUT_ALLOW_PRIVATE: z.enum(['true', 'false'], { error: 'must be true or false' }).default('false').transform((v) => v === 'true'),
    ADMIN_ACTIVITY_ANONYMOUS_MAX: z.coerce.number().int().min(10).max(10_000_000).default(20_000),
    ADMIN_ACTIVITY_TOKEN_COUNT_DAYS: z.coerce.number().int().min(1).max(400).default(14),
    INTROSPECTION_INACTIVE_PER_MINUTE: z.coerce.number().int().min(1).max(1_000_000).default(300),
    LEAN_PATH: z.enum(['on', 'off']).default('on'),
    LOCKOUT_ACCOUNT_MAX_FAILURES: failures(100).default(DEFAULT_LOCKOUTS.signin.account.maxFailures),
    LOCKOUT_ACCOUNT_WINDOW_SECONDS: windowSeconds.default(DEFAULT_LOCKOUTS.signin.account.windowSeconds),
    LOCKOUT_IP_MAX_FAILURES: failures(1_000_000).default(DEFAULT_LOCKOUTS.signin.ip.maxFailures),
    LOCKOUT_IP_WINDOW_SECONDS: windowSeconds.default(DEFAULT_LOCKOUTS.signin.ip.windowSeconds),
    CLIENT_AUTH_MAX_FAILURES: failures(100).default(DEFAULT_LOCKOUTS.client.account.maxFailures),
    CLIENT_AUTH_WINDOW_SECONDS: windowSeconds.default(DEFAULT_LOCKOUTS.client.account.windowSeconds),
    DEVICE_CODE_MAX_FAILURES: failures(100).default(DEFAULT_LOCKOUTS.device.account.maxFailures),
    DEVICE_CODE_WINDOW_SECONDS: windowSeconds.default(DEFAULT_LOCKOUTS.device.account.windowSeconds),
    ADMIN_API_IP_PER_MINUTE: z.coerce.number().int().min(1).max(1_000_000).default(60),
    ADMIN_API_TOKEN_PER_MINUTE: z.coerce.number().int().min(1).max(1_000_000).default(1200),
    ACCOUNT_SUDO_SECONDS: z.coerce.number().int().min(60).max(3600).default(300),
    SETUP_LINK_TTL_SECONDS: z.coerce.number().int().min(60).max(86_400).default(3600),
    ADMIN_BOOTSTRAP_EMAIL: z.string().min(3).optional(),
    ADMIN_BOOTSTRAP_PASSWORD_FILE: z.string().min(1).optional(),
    EMAIL: z.enum(['on', 'off']).optional(),
    SMTP_URL: z.url({ protocol: /^smtps?$/, error: 'must be an smtp:// or smtps:// URL' })
      .refine((url) => smtpOptionProblem(url) === undefined, { error: (issue) => smtpOptionProblem(String(issue.input)) ?? 'bad SMTP_URL' })
      .optional(),
    MAIL_FROM: z.string().min(3).max(320).regex(/@/, 'must be an address, e.g. Latchkey <no-reply@example.com>').optional(),
    PASSWORD_RESET_TTL_SECONDS: z.coerce.number().int().min(60).max(24 * 60 * 60).default(30 * 60),
    EMAIL_VERIFICATION_TTL_SECONDS: z.coerce.number().int().min(60).max(7 * 24 * 60 * 60).default(24 * 60 * 60),
    INVITATION_TTL_SECONDS: z.coerce.number().int().min(60).max(30 * 24 * 60 * 60).default(7 * 24 * 60 * 60),
    EMAIL_LINKS_PER_ADDRESS_PER_HOUR: z.coerce.number().int().min(1).max(1000).default(5),
    EMAIL_LINKS_PER_IP_PER_HOUR: z.coerce.number().int().min(1).max(1_000_000).default(30),
    SIGNUP: z.enum(['off', 'invite-only', 'domains', 'open']).default('off'),
    SIGNUP_ALLOWED_DOMAINS: z
      .string()
      .transform((list) => list.split(',').map((d) => d.trim().toLowerCase()).filter(Boolean))
      .pipe(z.array(z.string().regex(/^(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/, 'must be domain names, e.g. example.com,example.org')))
      .optional(),
    // No control characters: it goes into mail subjects (a header) as well as pages.
    BRAND_NAME: z.string().trim().min(1).max(60).regex(/^[^\p{Cc}]+$/u, 'must be plain text on one line').default(DEFAULT_BRAND_NAME),
    BRAND_ACCENT: z.string().regex(/^#[0-9a-fA-F]{6}$/, 'must be a colour written #rrggbb, e.g. #2f5bd3').transform((c) => c.toLowerCase()).default(DEFAULT_ACCENT),
    BRAND_LOGO: z.string().trim().min(1).optional(),
  })
  .transform((env) => ({
    ...env,
    ISSUER: (env.ISSUER ?? `http://localhost:${env.PORT}`).replace(/\/+$/, ''),
    WEBAUTHN_RP_ID: env.WEBAUTHN_RP_ID ?? new URL(env.ISSUER ?? `http://localhost:${env.PORT}`).hostname,
    WEBAUTHN_ORIGINS: env.WEBAUTHN_ORIGINS ?? [new URL(env.ISSUER ?? `http://localhost:${env.PORT}`).origin],
    WORKERS: env.WORKERS ?? (env.NODE_ENV === 'production' ? availableParallelism() : 1),
    // Explicit EMAIL=on in production without SMTP_URL is refused below; unset, production without it stays off.
    EMAIL: env.EMAIL ?? (env.SMTP_URL || env.NODE_ENV !== 'production' ? 'on' : 'off'),
    // The product name as the sender's display name, quoted when needed (a comma would split the address).
    MAIL_FROM: env.MAIL_FROM ?? `${displayName(env.BRAND_NAME)} <no-reply@${new URL(env.ISSUER ?? `http://localhost:${env.PORT}`).hostname}>`,
  }))
  .superRefine((env, ctx) => {
    if (env.NODE_ENV !== 'production' && env.WORKERS > 1 && !env.REDIS_URL && !env.REDIS_CLUSTER_NODES && !env.REDIS_SENTINELS) {
      ctx.addIssue({ code: 'custom', path: ['WORKERS'], message: 'more than 1 needs Redis: the embedded store lives inside one process' });
    }
    if (env.METRICS_PORT !== undefined && env.METRICS_PORT === env.PORT) {
      ctx.addIssue({ code: 'custom', path: ['METRICS_PORT'], message: 'must differ from PORT (unset it to serve metrics on PORT)' });
    }
    // Exactly one way to reach Redis (or none: the embedded store).
    const redisTargets = (['REDIS_URL', 'REDIS_CLUSTER_NODES', 'REDIS_SENTINELS'] as const).filter((name) => env[name] !== undefined);
    if (redisTargets.length > 1) {
      const [first, ...rest] = redisTargets;
      ctx.addIssue({ code: 'custom', path: [rest.at(-1)!], message: `cannot be combined with ${[first, ...rest.slice(0, -1)].join(' or ')}: set only one of REDIS_URL, REDIS_CLUSTER_NODES and REDIS_SENTINELS` });
    }
    if (env.REDIS_SENTINELS && !env.REDIS_SENTINEL_NAME) {
      ctx.addIssue({ code: 'custom', path: ['REDIS_SENTINEL_NAME'], message: 'is required with REDIS_SENTINELS (the name of the master they monitor, e.g. mymaster)' });
    }
    if (env.REDIS_SENTINEL_NAME && !env.REDIS_SENTINELS) {
      ctx.addIssue({ code: 'custom', path: ['REDIS_SENTINEL_NAME'], message: 'is used only with REDIS_SENTINELS, which is not set' });
    }
    if (env.REDIS_PASSWORD && redisTargets.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['REDIS_PASSWORD'], message: 'is used only with REDIS_URL, REDIS_CLUSTER_NODES or REDIS_SENTINELS, and none is set' });
    }
    if (env.REDIS_PASSWORD && env.REDIS_URL && new URL(env.REDIS_URL).password) {
      ctx.addIssue({ code: 'custom', path: ['REDIS_PASSWORD'], message: 'REDIS_URL carries a password already: set it in one place' });
    }
    if (!env.ADMIN_BOOTSTRAP_EMAIL !== !env.ADMIN_BOOTSTRAP_PASSWORD_FILE) {
      const missing = env.ADMIN_BOOTSTRAP_EMAIL ? 'ADMIN_BOOTSTRAP_PASSWORD_FILE' : 'ADMIN_BOOTSTRAP_EMAIL';
      ctx.addIssue({ code: 'custom', path: [missing], message: 'is required with the other ADMIN_BOOTSTRAP_ setting (the first admin needs an email and a password file)' });
    }
    if (env.SIGNUP === 'domains' && !env.SIGNUP_ALLOWED_DOMAINS?.length) {
      ctx.addIssue({ code: 'custom', path: ['SIGNUP_ALLOWED_DOMAINS'], message: 'is required with SIGNUP=domains (the domains whose addresses may sign up, e.g. example.com)' });
    }
    if (env.SIGNUP_ALLOWED_DOMAINS && env.SIGNUP !== 'domains') {
      ctx.addIssue({ code: 'custom', path: ['SIGNUP_ALLOWED_DOMAINS'], message: 'is used only with SIGNUP=domains' });
    }
    // A sign-up is proved by a mailed link: without email nobody could finish one.
    if ((env.SIGNUP === 'domains' || env.SIGNUP === 'open') && env.EMAIL !== 'on') {
      ctx.addIssue({ code: 'custom', path: ['SIGNUP'], message: `=${env.SIGNUP} needs EMAIL=on (and SMTP_URL in production): a new account is made only from the link mailed to its address; set SIGNUP=off or invite-only to run without email` });
    }
    // WebAuthn binds a passkey to the RP id: it must be the issuer's host or a registrable suffix of it.
    const issuerHost = new URL(env.ISSUER).hostname;
    if (issuerHost !== env.WEBAUTHN_RP_ID && !issuerHost.endsWith(`.${env.WEBAUTHN_RP_ID}`)) {
      ctx.addIssue({ code: 'custom', path: ['WEBAUTHN_RP_ID'], message: `must be the issuer's host name (${issuerHost}) or a suffix of it` });
    }
    const accent = accentProblem(env.BRAND_ACCENT);
    if (accent) ctx.addIssue({ code: 'custom', path: ['BRAND_ACCENT'], message: accent });
    const logo = env.BRAND_LOGO === undefined ? undefined : logoProblem(env.BRAND_LOGO);
    if (logo) ctx.addIssue({ code: 'custom', path: ['BRAND_LOGO'], message: logo });
    if (env.NODE_ENV !== 'production') return;
    if (redisTargets.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['REDIS_URL'], message: 'is required in production, or REDIS_CLUSTER_NODES or REDIS_SENTINELS (the embedded store keeps nothing across restarts and is not shared between nodes)' });
    }
    if (env.EMAIL === 'on' && !env.SMTP_URL) {
      ctx.addIssue({ code: 'custom', path: ['SMTP_URL'], message: 'is required in production when EMAIL is on (password resets, address verification and security notices are sent through it); set EMAIL=off to run without email' });
    }
    if (!env.SECRETS_KEY) {
      ctx.addIssue({ code: 'custom', path: ['SECRETS_KEY'], message: 'is required in production (it encrypts TOTP secrets; a generated key would sit in the same storage as what it protects)' });
    }
    const issuer = new URL(env.ISSUER);
    if (issuer.protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(issuer.hostname)) {
      ctx.addIssue({ code: 'custom', path: ['ISSUER'], message: 'must be https in production (http is only allowed for localhost)' });
    }
  });

export type Config = z.output<typeof schema>;

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid configuration:\n${problems.join('\n')}`);
    this.problems = problems;
  }
}

/** Reads the configuration from an environment; throws ConfigError with one line per problem. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // An empty variable means "unset", as shells and compose files often write them.
  const present = Object.fromEntries(
    Object.keys(configDocs).filter((k) => env[k] !== undefined && env[k] !== '').map((k) => [k, env[k]]),
  );
  const result = schema.safeParse(present);
  if (result.success) return result.data;
  throw new ConfigError(
    result.error.issues.map((issue) => {
      const name = issue.path.join('.') || 'configuration';
      const value = typeof issue.path[0] === 'string' && !/KEY|SECRET|PASSWORD/.test(issue.path[0]) ? present[issue.path[0]] : undefined;
      // A URL may carry a password (redis://:password@host): never echo what precedes its '@'.
      const shown = value?.replace(/^([a-z][a-z0-9+.-]*:\/*)?[^@]*@/i, '$1***@');
      return `${name}: ${issue.message}${shown !== undefined ? ` (got "${shown}")` : ''}`;
    }),
  );
}
