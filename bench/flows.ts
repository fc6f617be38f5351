import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { CookieJar, formAction, hiddenField, pkcePair } from '../test/helpers/flow.ts';
import { Accounts } from '../src/accounts/accounts.ts';
import { totpCodeAt } from '../src/accounts/totp.ts';
import { openStore } from '../src/storage/open.ts';
import { SoftAuthenticator } from '../test/helpers/soft-authenticator.ts';
import type { Request } from './driver.ts';
import { send, walk, type Walked } from './http.ts';
import { basic, cannon, FORM, percentile, ROOT, type Load } from './lib.ts';

/**
 * Traffic that is more than one request: complete sign-ins over HTTP (the way test/helpers/flow.ts
 * drives the pages, without a browser, but with the leaner client of bench/http.ts), and the pools of
 * tokens the load runs use.
 */
export interface Creds {
  id: string;
  secret: string;
}

export interface Server {
  url: string;
  machine: Creds;
  api: Creds;
  app: Creds & { redirectUri: string };
  /** People without a second factor (password only). */
  users: User[];
  /** People enrolled in TOTP (empty for the baseline). */
  totpUsers: User[];
  /** People who enrolled a passkey (held by `passkeyDevice`, a software authenticator) and sign in with it alone. */
  passkeyUsers?: User[];
  passkeyDevice?: SoftAuthenticator;
  /** oidc-provider only issues refresh tokens with prompt=consent; Latchkey adds it itself. */
  promptConsent: boolean;
  /** A public client with the device authorization grant (RFC 8628). */
  device?: { id: string };
  /** The API that takes JWT access tokens, with its introspection credentials (Latchkey only: oidc-provider cannot introspect JWTs). */
  jwtApi?: Creds;
  /** A client with scope latchkey:admin:read, and the admin API's resource URI (Latchkey only). */
  admin?: Creds & { resource: string };
}

export interface User {
  /** The account id (Latchkey's bench users). */
  id?: string;
  email: string;
  password: string;
  /** The TOTP secret, once enrolled. */
  secret?: string;
  /** The last TOTP step this user answered: an account accepts one code per 30 s step. */
  lastStep?: number;
  /** The credential id of the user's passkey, once enrolled. */
  passkey?: string;
}

const unescapeHtml = (t: string) => t.replaceAll('&quot;', '"').replaceAll('&#39;', "'").replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&');

/** The WebAuthn options of the passkey form posting to `…suffix`, and its action. */
function passkeyForm(html: string, suffix: string): { action: string; options: never } | undefined {
  for (const m of html.matchAll(/<form[^>]*action="([^"]+)"[^>]*data-options="([^"]*)"/g)) if (m[1]!.endsWith(suffix)) return { action: m[1]!, options: JSON.parse(unescapeHtml(m[2]!)) as never };
  return undefined;
}

export interface FlowStats {
  flows: number;
  passkeyAssertions: number;
  httpRequests: number;
  consentForms: number;
  totpCodes: number;
  enrollments: number;
  /** Times every TOTP user had already signed in during the current step, and a flow waited for the next one. */
  waits: number;
  status: Record<string, number>;
}

export const newFlowStats = (): FlowStats => ({ flows: 0, passkeyAssertions: 0, httpRequests: 0, consentForms: 0, totpCodes: 0, enrollments: 0, waits: 0, status: {} });

function count(stats: FlowStats, followed: Walked) {
  for (const status of followed.statuses) {
    stats.httpRequests += 1;
    stats.status[status] = (stats.status[status] ?? 0) + 1;
  }
}

const TOTP_STEP_MS = 30_000;
const currentStep = () => Math.floor(Date.now() / TOTP_STEP_MS);

/** The code for the current step (as an authenticator app would show it); marks the step used. */
async function totpCode(user: User): Promise<string> {
  const now = Date.now();
  user.lastStep = Math.max(user.lastStep ?? 0, Math.floor(now / TOTP_STEP_MS));
  return totpCodeAt(user.secret!, now);
}

let totpTurn = 0;

/** The next enrolled user who has not answered a code in this step yet (waits for the next step if none). */
export async function nextTotpUser(server: Server, stats: FlowStats): Promise<User> {
  for (;;) {
    const step = currentStep();
    for (let i = 0; i < server.totpUsers.length; i += 1) {
      const user = server.totpUsers[totpTurn++ % server.totpUsers.length]!;
      if ((user.lastStep ?? -1) < step) {
        user.lastStep = step;
        return user;
      }
    }
    stats.waits += 1;
    await new Promise((r) => setTimeout(r, (step + 1) * TOTP_STEP_MS - Date.now() + 50));
  }
}

let userTurn = 0;

/** The words of an HTML page, for error messages. */
const text = (html: string) => html.replace(/<(style|script)[\s\S]*?<\/\1>/g, '').replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 300);

/**
 * authorize → login form (argon2id), or the passkey alone for a user who has one (no argon2) → TOTP code
 * (enrolled users) or enrollment (with `enroll`: key read from the page, code — or, `enroll: 'passkey'`,
 * a passkey made by the server's software authenticator — recovery codes "saved") → consent (when
 * asked) → code → token. Returns the token response.
 */
export async function signIn(server: Server, stats: FlowStats, user: User = server.users[userTurn++ % server.users.length]!, enroll: boolean | 'passkey' = false): Promise<{ access_token: string; refresh_token?: string }> {
  const jar = new CookieJar();
  const { verifier, challenge } = pkcePair();
  const query = new URLSearchParams({
    client_id: server.app.id,
    redirect_uri: server.app.redirectUri,
    response_type: 'code',
    scope: 'openid profile email offline_access api:read',
    state: randomBytes(8).toString('hex'),
    nonce: randomBytes(8).toString('hex'),
    code_challenge: challenge,
    code_challenge_method: 'S256',
    ...(server.promptConsent ? { prompt: 'consent' } : {}),
    // MFA_POLICY=optional: asking for this acr makes a sign-in enroll an account without a factor.
    ...(enroll ? { acr_values: 'urn:latchkey:mfa' } : {}),
  });
  const origin = new URL(server.url).origin;
  let followed = await walk(jar, origin, new URL(`/auth?${query}`, server.url));
  count(stats, followed);
  for (let step = 0; step < 6 && followed.page; step += 1) {
    const page = followed.page;
    const csrf = hiddenField(page.html, '_csrf') ?? '';
    let action: string | undefined;
    let form: Record<string, string>;
    const key = /id="totp-key">([^<]+)</.exec(page.html)?.[1];
    const passkeyEnroll = enroll === 'passkey' ? passkeyForm(page.html, '/enroll/passkey') : undefined;
    const passkeySignIn = user.passkey ? passkeyForm(page.html, '/passkey') : undefined;
    if (passkeyEnroll) {
      const response = server.passkeyDevice!.create(passkeyEnroll.options);
      user.passkey = response.id;
      action = passkeyEnroll.action;
      form = { _csrf: csrf, response: JSON.stringify(response) };
      stats.enrollments += 1;
    } else if (passkeySignIn && formAction(page.html, '/login')) {
      if (/role="alert">[^<]/.test(page.html)) throw new Error(`passkey refused for ${user.email}: ${text(page.html)}`);
      action = passkeySignIn.action;
      form = { _csrf: csrf, response: JSON.stringify(server.passkeyDevice!.get(passkeySignIn.options, { keyId: user.passkey!, origin })) };
      stats.passkeyAssertions += 1;
    } else if (key && (action = formAction(page.html, '/enroll'))) {
      user.secret = key.replace(/\s/g, '');
      form = { _csrf: csrf, code: await totpCode(user) };
      stats.enrollments += 1;
    } else if ((action = formAction(page.html, '/saved'))) {
      form = { _csrf: csrf };
    } else if ((action = formAction(page.html, '/mfa'))) {
      if (!user.secret || /role="alert"/.test(page.html)) throw new Error(`second factor refused for ${user.email}: ${text(page.html)}`);
      form = { _csrf: csrf, code: await totpCode(user) };
      stats.totpCodes += 1;
    } else if ((action = formAction(page.html, '/login'))) {
      form = { _csrf: csrf, email: user.email, password: user.password };
    } else if ((action = formAction(page.html, '/consent'))) {
      form = { _csrf: csrf };
      stats.consentForms += 1;
    } else {
      throw new Error(`sign-in stopped at ${page.url.pathname} (${page.status}): ${text(page.html)}`);
    }
    followed = await walk(jar, origin, new URL(action, page.url), { form });
    count(stats, followed);
  }
  const code = followed.leftTo?.searchParams.get('code');
  if (!code) throw new Error(`sign-in did not reach the client: ${followed.page?.status} ${text(followed.page?.html ?? '')}`);
  const res = await send(undefined, new URL('/token', server.url), {
    headers: { accept: 'application/json', authorization: basic(server.app.id, server.app.secret) },
    form: { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: server.app.redirectUri },
  });
  stats.httpRequests += 1;
  stats.status[res.status] = (stats.status[res.status] ?? 0) + 1;
  if (res.status !== 200) throw new Error(`code redemption: ${res.status} ${res.body}`);
  const body = JSON.parse(res.body) as { access_token: string; refresh_token?: string };
  stats.flows += 1;
  return body;
}

/**
 * Complete sign-ins for `seconds`: `concurrency` closed loops, or with `rate` an open loop that starts
 * that many flows per second (at most `concurrency` at once; the rest are counted as skipped).
 */
let passkeyTurn = 0;

export async function signInLoad(server: Server, options: { seconds: number; concurrency: number; rate?: number; totp?: boolean; passkey?: boolean; onTokens?: (t: { refresh_token?: string }) => void }) {
  const stats = newFlowStats();
  const latencies: number[] = [];
  let errors = 0;
  let skipped = 0;
  let firstError: string | undefined;
  const started = performance.now();
  const end = started + options.seconds * 1000;
  const once = async () => {
    // Waiting for a TOTP user who may answer in this step is not the server's latency.
    const user = options.totp ? await nextTotpUser(server, stats) : options.passkey ? server.passkeyUsers![passkeyTurn++ % server.passkeyUsers!.length] : undefined;
    const t0 = performance.now();
    try {
      const tokens = await signIn(server, stats, user);
      latencies.push(performance.now() - t0);
      options.onTokens?.(tokens);
    } catch (err) {
      errors += 1;
      firstError ??= (err as Error).message;
    }
  };
  if (options.rate) {
    let inFlight = 0;
    const all: Promise<void>[] = [];
    for (let i = 0; performance.now() < end; i += 1) {
      const due = started + (i * 1000) / options.rate;
      if (due > performance.now()) await new Promise((r) => setTimeout(r, due - performance.now()));
      if (inFlight >= options.concurrency) {
        skipped += 1;
        continue;
      }
      inFlight += 1;
      all.push(once().finally(() => (inFlight -= 1)));
    }
    await Promise.all(all);
  } else {
    await Promise.all(Array.from({ length: options.concurrency }, async () => {
      while (performance.now() < end) await once();
    }));
  }
  const seconds = (performance.now() - started) / 1000;
  const non2xx = Object.entries(stats.status).filter(([s]) => !/^[23]/.test(s)).reduce((n, [, c]) => n + c, 0);
  const load: Load = { count: stats.flows, seconds, p50: percentile(latencies, 50), p99: percentile(latencies, 99), non2xx, errors, status: stats.status };
  return { load, stats, skipped, firstError };
}

/** Runs `task` `n` times, `concurrency` at a time. */
export async function times<T>(n: number, concurrency: number, task: () => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, concurrency) }, async () => {
    while (next < n) {
      next += 1;
      out.push(await task());
    }
  }));
  return out;
}

/**
 * `n` access tokens of the machine client (JWTs with `jwt`), issued through the load driver (a fraction of fetch's
 * CPU: pools of tens of thousands are made before some runs), checked as they come.
 */
export async function tokenPool(server: Server, n: number, jwt = false): Promise<string[]> {
  const pool: string[] = [];
  const load = await cannon(server.url, tokenRequest(server, (t) => pool.push(t), jwt), { connections: 16, amount: n });
  if (pool.length !== n) throw new Error(`a pool of ${n} tokens got ${pool.length} (status codes ${JSON.stringify(load.status)})`);
  return pool;
}

/** `n` device codes of the device client (RFC 8628 device authorization requests), none approved. */
export async function deviceCodes(server: Server, n: number): Promise<string[]> {
  const codes: string[] = [];
  const load = await cannon(server.url, {
    method: 'POST',
    path: '/device/auth',
    headers: { 'content-type': FORM },
    body: `client_id=${encodeURIComponent(server.device!.id)}&scope=openid`,
    onResponse: (status, body) => {
      if (status === 200) codes.push((JSON.parse(body) as { device_code: string }).device_code);
    },
  }, { connections: 16, amount: n });
  if (codes.length !== n) throw new Error(`${n} device codes asked, ${codes.length} given (status codes ${JSON.stringify(load.status)})`);
  return codes;
}

/** Admin API access tokens (scope latchkey:admin:read, for the admin API's audience). */
export async function adminTokens(server: Server, n: number): Promise<string[]> {
  const { admin } = server;
  const tokens: string[] = [];
  await cannon(server.url, {
    method: 'POST',
    path: '/token',
    headers: auth(admin!),
    body: `grant_type=client_credentials&scope=latchkey%3Aadmin%3Aread&resource=${encodeURIComponent(admin!.resource)}`,
    onResponse: (status, body) => {
      if (status === 200) tokens.push((JSON.parse(body) as { access_token: string }).access_token);
    },
  }, { connections: 8, amount: n });
  if (tokens.length !== n) throw new Error(`${n} admin tokens asked, ${tokens.length} given`);
  return tokens;
}

export async function clientCredentialsToken(server: Server): Promise<string> {
  const res = await fetch(new URL('/token', server.url), {
    method: 'POST',
    headers: { 'content-type': FORM, authorization: basic(server.machine.id, server.machine.secret) },
    body: 'grant_type=client_credentials&scope=api%3Aread',
  });
  const body = (await res.json()) as { access_token?: string };
  if (res.status !== 200 || !body.access_token) throw new Error(`client_credentials: ${res.status} ${JSON.stringify(body)}`);
  return body.access_token;
}

/** `latchkey …` (the CLI, against the bench's Redis), with --json. */
export function latchkey(redisUrl: string, args: string[], stdin?: string): Promise<Record<string, string>> {
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, ['src/cli/main.ts', ...args, '--json'], { cwd: ROOT, env: { ...process.env, REDIS_URL: redisUrl } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`latchkey ${args.slice(0, 2).join(' ')}: ${stderr || err.message}`));
      else resolve(JSON.parse(stdout) as Record<string, string>);
    });
    child.stdin!.end(stdin ?? '');
  });
}

export const API_URI = 'https://api.bench.example';
/** An API that takes JWT access tokens (RFC 9068). */
export const JWT_API_URI = 'https://jwt-api.bench.example';
export const REDIRECT_URI = 'http://127.0.0.1:9/cb';

/**
 * `n` people with a second factor: accounts written with src/accounts (the CLI would take a process per
 * person), then each enrolled through the sign-in pages (acr_values=urn:latchkey:mfa), as a person would,
 * choosing an authenticator app (`totp`: key read from the page) or a passkey made by one software
 * authenticator (real ES256 keys and signatures, verified by the server as a device's would be).
 */
async function enrolledUsers(server: Server, redisUrl: string, n: number, stats: FlowStats, factor: 'totp' | 'passkey'): Promise<User[]> {
  const store = await openStore({ REDIS_URL: redisUrl, REDIS_TIMEOUT_MS: 5000 });
  const accounts = new Accounts(store);
  const password = randomBytes(12).toString('base64url');
  const users: User[] = [];
  try {
    await times(n, 4, async () => {
      const email = `${factor}${users.length}@example.org`;
      users.push({ email, password });
      await accounts.create({ email, password });
    });
  } finally {
    await store.close();
  }
  let next = 0;
  await times(n, 4, () => signIn(server, stats, users[next++], factor === 'totp' ? true : 'passkey'));
  if (users.some((u) => !(factor === 'totp' ? u.secret : u.passkey))) throw new Error(`a bench user was not enrolled (${factor})`);
  return users;
}

export const totpUsers = (server: Server, redisUrl: string, n: number, stats: FlowStats) => enrolledUsers(server, redisUrl, n, stats, 'totp');

export function passkeyUsers(server: Server, redisUrl: string, n: number, stats: FlowStats): Promise<User[]> {
  server.passkeyDevice ??= new SoftAuthenticator({ origin: new URL(server.url).origin });
  return enrolledUsers(server, redisUrl, n, stats, 'passkey');
}

/** Registers what the scenarios use in Latchkey's storage: an API, a machine client, an app, `users` people. */
export async function registerLatchkey(redisUrl: string, options: { users: number; apiTtl?: number }) {
  const ttl = options.apiTtl ? ['--ttl', String(options.apiTtl)] : [];
  const api = await latchkey(redisUrl, ['resource', 'create', '--uri', API_URI, '--scope', 'api:read', ...ttl]);
  const jwtApi = await latchkey(redisUrl, ['resource', 'create', '--uri', JWT_API_URI, '--scope', 'jwt:read', '--token-format', 'jwt', ...ttl]);
  const machine = await latchkey(redisUrl, ['client', 'create', '--name', 'Bench machine', '--grants', 'client_credentials', '--scope', 'api:read jwt:read']);
  const device = await latchkey(redisUrl, ['client', 'create', '--name', 'Bench device', '--grants', 'device_code', '--public', '--scope', 'openid']);
  const app = await latchkey(redisUrl, ['client', 'create', '--name', 'Bench app', '--grants', 'authorization_code,refresh_token', '--redirect-uri', REDIRECT_URI, '--scope', 'openid profile email offline_access api:read']);
  const password = randomBytes(12).toString('base64url');
  const users = await Promise.all(Array.from({ length: options.users }, async (_, i) => {
    const email = `bench${i}@example.org`;
    const created = await latchkey(redisUrl, ['user', 'create', '--email', email, '--name', `Bench ${i}`, '--password-stdin'], password);
    return { id: created.id!, email, password };
  }));
  return {
    machine: { id: machine.client_id!, secret: machine.client_secret! },
    api: { id: api.client_id!, secret: api.client_secret! },
    app: { id: app.client_id!, secret: app.client_secret!, redirectUri: REDIRECT_URI },
    jwtApi: { id: jwtApi.client_id!, secret: jwtApi.client_secret! },
    device: { id: device.client_id! },
    users,
  };
}

/**
 * A client that reads the admin API (scope latchkey:admin:read). Registered once a Latchkey has started:
 * the admin API (and its scopes) is registered by the server at boot, for its ISSUER.
 */
export async function registerAdminReader(redisUrl: string, issuer: string): Promise<Creds & { resource: string }> {
  const reader = await latchkey(redisUrl, ['client', 'create', '--name', 'Bench admin reader', '--grants', 'client_credentials', '--scope', 'latchkey:admin:read']);
  return { id: reader.client_id!, secret: reader.client_secret!, resource: `${issuer}/admin/api` };
}

// ---- request shapes for the load driver (bench/driver.ts; autocannon takes them too) ----

const auth = (c: Creds) => ({ 'content-type': FORM, authorization: basic(c.id, c.secret) });

/** client_credentials at /token (for the JWT API with `jwt`); `onToken` sees each issued access token. */
export function tokenRequest(server: Server, onToken?: (token: string) => void, jwt = false): Request {
  return {
    method: 'POST',
    path: '/token',
    headers: auth(server.machine),
    body: `grant_type=client_credentials&scope=${jwt ? 'jwt%3Aread' : 'api%3Aread'}`,
    ...(onToken ? { onResponse: (status: number, body: string) => status === 200 && onToken((JSON.parse(body) as { access_token: string }).access_token) } : {}),
  };
}

/** Introspection by the API (`api`: its credentials) of tokens from `pool`, in turn. */
export function introspectionRequest(server: Server, pool: string[], api: Creds = server.api): Request {
  let i = 0;
  return {
    method: 'POST',
    path: '/token/introspection',
    headers: auth(api),
    setupRequest: (req) => ({ ...req, body: `token=${encodeURIComponent(pool[i++ % pool.length]!)}` }),
  };
}

/**
 * Refresh-token grants on rotating chains: each request takes a live refresh token from the queue and
 * puts back the one the answer carries, so a chain is used by one request at a time. A request still in
 * flight when a run stops loses its chain; `topUp` starts new chains with complete sign-ins.
 */
export class RefreshChains {
  readonly tokens: string[] = [];
  starved = 0;
  readonly #server: Server;
  constructor(server: Server) {
    this.#server = server;
  }

  async topUp(n: number, stats: FlowStats) {
    const missing = n - this.tokens.length;
    if (missing > 0) await times(missing, 8, async () => this.tokens.push((await signIn(this.#server, stats)).refresh_token!));
  }

  request(): Request {
    return {
      method: 'POST',
      path: '/token',
      headers: auth(this.#server.app),
      setupRequest: (req) => {
        const token = this.tokens.shift();
        if (!token) this.starved += 1;
        return { ...req, body: `grant_type=refresh_token&refresh_token=${encodeURIComponent(token ?? 'starved')}` };
      },
      onResponse: (status, body) => {
        if (status === 200) this.tokens.push((JSON.parse(body) as { refresh_token: string }).refresh_token);
      },
    };
  }
}

/**
 * Revocation (RFC 7009) by the machine client of its own tokens from `queue`, each once (a made-up token
 * when it is empty, counted in `seen.starved`); `seen.revoked` keeps the last 50 revoked, to check afterwards.
 */
export function revocationRequest(server: Server, queue: string[], seen?: { starved: number; revoked: string[] }): Request {
  return {
    method: 'POST',
    path: '/token/revocation',
    headers: auth(server.machine),
    setupRequest: (req) => {
      let token = queue.shift();
      if (token === undefined) {
        token = randomBytes(32).toString('base64url');
        if (seen) seen.starved += 1;
      } else if (seen) {
        seen.revoked.push(token);
        if (seen.revoked.length > 100) seen.revoked.splice(0, 50);
      }
      return { ...req, body: `token=${encodeURIComponent(token)}&token_type_hint=access_token` };
    },
  };
}

/** True when `token` introspects as active for the API (`api`: its credentials). */
export async function isActive(server: Server, token: string, api: Creds = server.api): Promise<boolean> {
  const res = await fetch(new URL('/token/introspection', server.url), { method: 'POST', headers: auth(api), body: `token=${encodeURIComponent(token)}` });
  const body = (await res.json()) as { active?: boolean };
  if (res.status !== 200) throw new Error(`introspection: ${res.status} ${JSON.stringify(body)}`);
  return body.active === true;
}

export const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

/**
 * A device polling the token endpoint (RFC 8628 §3.4) with the pending codes of `pool`, in turn. A code
 * answered anything but `authorization_pending` (e.g. `slow_down`: polled again too soon) goes into
 * `dropped` and leaves the pool after the run.
 */
export function devicePollRequest(server: Server, pool: string[], dropped: Set<string>): Request {
  let i = 0;
  const prefix = `grant_type=${encodeURIComponent(DEVICE_CODE_GRANT)}&client_id=${encodeURIComponent(server.device!.id)}&device_code=`;
  return {
    method: 'POST',
    path: '/token',
    headers: { 'content-type': FORM },
    setupRequest: (req, context) => {
      const code = pool[i++ % pool.length]!;
      context.code = code;
      return { ...req, body: prefix + encodeURIComponent(code) };
    },
    onResponse: (status, body, context) => {
      if (status !== 400 || !body.includes('"authorization_pending"')) dropped.add(context.code as string);
    },
  };
}

/** Admin API reads: GET /admin/api/v1/clients and GET /admin/api/v1/users/:id in turn, with the tokens of `pool` in turn. */
export function adminReadRequest(server: Server, pool: string[], userId: string): Request {
  let i = 0;
  return {
    method: 'GET',
    path: '/admin/api/v1/clients',
    setupRequest: (req) => {
      i += 1;
      return { ...req, path: i % 2 ? '/admin/api/v1/clients' : `/admin/api/v1/users/${encodeURIComponent(userId)}`, headers: { authorization: `Bearer ${pool[i % pool.length]!}` } };
    },
  };
}
