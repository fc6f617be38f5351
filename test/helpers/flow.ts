import { createHash, randomBytes } from 'node:crypto';
import { currentTotpCode, keyFromPage, nextTotpCode, totpSecrets } from './totp.ts';

/**
 * Drives Latchkey's sign-in pages with plain `fetch` and a small cookie jar, the way a browser
 * without JavaScript would: GET /auth → /interaction/:uid → POST the login form (with its `_csrf`)
 * → the second factor (a TOTP code; or enrollment: the key read from the page, a code, "I have saved
 * them") → the consent form → the redirect to the client's redirect_uri with `code` and `iss`.
 */

interface StoredCookie {
  name: string;
  value: string;
  path: string;
  httpOnly: boolean;
  sameSite?: string;
  expires?: number;
}

/** Cookies by name and path, sent to the paths they were set for; enough for one host. */
export class CookieJar {
  readonly #cookies = new Map<string, StoredCookie>();
  /** Every Set-Cookie header line ever received, for assertions on their attributes. */
  readonly setCookieLines: string[] = [];
  /** The User-Agent this "browser" sends (unset: fetch's own). */
  userAgent?: string;

  store(res: Response): void {
    this.storeLines(res.headers.getSetCookie());
  }

  /** `Set-Cookie` header lines, however they were received. */
  storeLines(lines: string[]): void {
    for (const line of lines) {
      this.setCookieLines.push(line);
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const eq = pair!.indexOf('=');
      const cookie: StoredCookie = { name: pair!.slice(0, eq), value: pair!.slice(eq + 1), path: '/', httpOnly: false };
      for (const attr of attrs) {
        const [k, v = ''] = attr.split('=');
        const key = k!.toLowerCase();
        if (key === 'path') cookie.path = v;
        else if (key === 'httponly') cookie.httpOnly = true;
        else if (key === 'samesite') cookie.sameSite = v.toLowerCase();
        else if (key === 'max-age') cookie.expires = Date.now() + Number(v) * 1000;
        else if (key === 'expires' && cookie.expires === undefined) cookie.expires = Date.parse(v);
      }
      const id = `${cookie.name};${cookie.path}`;
      if (cookie.value === '' || (cookie.expires !== undefined && cookie.expires <= Date.now())) this.#cookies.delete(id);
      else this.#cookies.set(id, cookie);
    }
  }

  header(url: URL): string {
    const now = Date.now();
    return [...this.#cookies.values()]
      .filter((c) => (c.expires === undefined || c.expires > now) && pathMatches(url.pathname, c.path))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  names(): string[] {
    return [...this.#cookies.values()].map((c) => c.name);
  }
}

function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}

/** One request through the jar, never following redirects. */
export async function browse(jar: CookieJar, url: string | URL, init: { method?: string; form?: Record<string, string>; body?: string; headers?: Record<string, string> } = {}): Promise<Response> {
  const target = new URL(url);
  const headers: Record<string, string> = { accept: 'text/html', ...init.headers };
  const cookie = jar.header(target);
  if (cookie) headers.cookie = cookie;
  if (jar.userAgent && !headers['user-agent']) headers['user-agent'] = jar.userAgent;
  let body: string | undefined = init.body;
  if (init.form) {
    body = new URLSearchParams(init.form).toString();
    headers['content-type'] = 'application/x-www-form-urlencoded';
  }
  const res = await fetch(target, { method: init.method ?? (body !== undefined ? 'POST' : 'GET'), headers, body, redirect: 'manual' });
  jar.store(res);
  return res;
}

export interface Page {
  url: URL;
  status: number;
  headers: Headers;
  html: string;
}

export interface Followed {
  /** The last response on the issuer's origin that was not a redirect, if the chain ended there. */
  page?: Page;
  /** The first redirect that left the issuer's origin (e.g. to the client's redirect_uri). */
  leftTo?: URL;
  /** Every response of the chain, first to last. */
  chain: { url: URL; status: number; location?: string }[];
}

/** Follows redirects while they stay on the issuer's origin. */
export async function follow(jar: CookieJar, issuer: string, start: Response, startUrl: URL): Promise<Followed> {
  const origin = new URL(issuer).origin;
  const chain: Followed['chain'] = [];
  let res = start;
  let url = startUrl;
  for (let hops = 0; hops < 20; hops += 1) {
    const location = res.headers.get('location') ?? undefined;
    chain.push({ url, status: res.status, location });
    if (res.status < 300 || res.status >= 400 || !location) {
      return { page: { url, status: res.status, headers: res.headers, html: await res.text() }, chain };
    }
    await res.body?.cancel();
    const next = new URL(location, url);
    if (next.origin !== origin) return { leftTo: next, chain };
    url = next;
    res = await browse(jar, next);
  }
  throw new Error('too many redirects');
}

/** The value of a hidden input on a page. */
export function hiddenField(html: string, name: string): string | undefined {
  const re = new RegExp(`<input[^>]*name="${name}"[^>]*value="([^"]*)"`, 'i');
  return html.match(re)?.[1];
}

/** The action of the form whose action ends with `suffix`. */
export function formAction(html: string, suffix: string): string | undefined {
  for (const m of html.matchAll(/<form[^>]*action="([^"]+)"/gi)) if (m[1]!.endsWith(suffix)) return m[1];
  return undefined;
}

export function pkcePair() {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  return { verifier, challenge };
}

export function basic(clientId: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

export interface ClientCreds {
  clientId: string;
  secret?: string;
  redirectUri: string;
}

export interface SignInOptions {
  issuer: string;
  client: ClientCreds;
  /** The person; omit when the jar already holds a session. Their TOTP secret: `totpSecret`, else learned at enrollment. */
  user?: { email: string; password: string; totpSecret?: string };
  /** How to pass the second factor: a TOTP code (default), a recovery code, or stop on its page. */
  secondFactor?: 'totp' | { recoveryCode: string } | 'stop';
  scope: string;
  /** Extra authorization parameters (resource, prompt, nonce…); `undefined` values are left out. */
  params?: Record<string, string | undefined>;
  jar?: CookieJar;
  /** Answer the consent page with Allow (default) — or stop there. */
  consent?: 'allow' | 'stop';
  /** The authorization request a client library built (its own PKCE, state and nonce): used as is. */
  authUrl?: URL;
  /** Send the authorization request as a form POST to /auth instead of a GET (OIDC Core §3.1.2.1). */
  post?: boolean;
  /** Where the flow already is (e.g. the device code entered at /device, in `jar`): no authorization request. */
  start?: Followed;
}

export interface SignInResult {
  jar: CookieJar;
  verifier: string;
  state: string;
  nonce: string;
  /** Where the flow left the issuer (the client's redirect_uri with the response parameters). */
  callback?: URL;
  code?: string;
  /** The page the flow stopped on, when it did not reach the client. */
  page?: Page;
  loginPage?: Page;
  /** The second-factor page (TOTP code) and what answering it gave. */
  mfaPage?: Page;
  enrollPage?: Page;
  /** The recovery codes shown after an enrollment. */
  recoveryCodes?: string[];
  consentPage?: Page;
  /** Every URL the flow requested on the issuer, in order (redirects followed). */
  visited: URL[];
}

/** The recovery codes listed on a page. */
export function recoveryCodesOf(html: string): string[] {
  return [...html.matchAll(/<li><code>([0-9a-z]{5}-[0-9a-z]{5})<\/code><\/li>/g)].map((m) => m[1]!);
}

/** The TOTP key shown as text on the enrollment page. */
export function totpKeyOf(html: string): string | undefined {
  const text = html.match(/<code class="key" id="totp-key">([^<]+)<\/code>/)?.[1];
  return text ? keyFromPage(text) : undefined;
}

/** Runs the authorization code flow with PKCE S256 through the HTML forms. */
export async function signIn(options: SignInOptions): Promise<SignInResult> {
  const jar = options.jar ?? new CookieJar();
  const { verifier, challenge } = pkcePair();
  const state = randomBytes(8).toString('hex');
  const nonce = randomBytes(8).toString('hex');
  const query: Record<string, string> = {
    client_id: options.client.clientId,
    redirect_uri: options.client.redirectUri,
    response_type: 'code',
    scope: options.scope,
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  };
  for (const [k, v] of Object.entries(options.params ?? {})) {
    if (v === undefined) delete query[k];
    else query[k] = v;
  }
  const authUrl = options.authUrl ?? new URL(`/auth?${new URLSearchParams(query)}`, options.issuer);
  const first = options.start ? undefined : options.post ? await browse(jar, new URL('/auth', options.issuer), { form: query }) : await browse(jar, authUrl);
  const result: SignInResult = { jar, verifier, state, nonce, visited: [] };
  const traced = (f: Followed) => {
    result.visited.push(...f.chain.map((c) => c.url));
    return f;
  };
  let followed = options.start ?? traced(await follow(jar, options.issuer, first!, authUrl));

  const post = async (action: string, page: Page, form: Record<string, string>) => {
    const url = new URL(action, page.url);
    return traced(await follow(jar, options.issuer, await browse(jar, url, { form }), url));
  };
  for (let step = 0; step < 8 && followed.page; step += 1) {
    const page = followed.page;
    const csrf = hiddenField(page.html, '_csrf');
    const login = formAction(page.html, '/login');
    const mfa = formAction(page.html, '/mfa');
    const enroll = formAction(page.html, '/enroll');
    const saved = formAction(page.html, '/saved');
    const consent = formAction(page.html, '/consent');
    if (login && csrf && options.user && !result.loginPage) {
      result.loginPage = page;
      followed = await post(login, page, { _csrf: csrf, email: options.user.email, password: options.user.password });
    } else if (mfa && csrf && options.user && !result.mfaPage) {
      result.mfaPage = page;
      const how = options.secondFactor ?? 'totp';
      if (how === 'stop') break;
      if (typeof how === 'object') {
        const recovery = new URL(`${new URL(mfa, page.url).pathname.replace(/\/mfa$/, '')}/recovery`, page.url);
        const recoveryPage = traced(await follow(jar, options.issuer, await browse(jar, recovery), recovery));
        const action = formAction(recoveryPage.page?.html ?? '', '/recovery');
        if (!action || !recoveryPage.page) break;
        followed = await post(action, recoveryPage.page, { _csrf: hiddenField(recoveryPage.page.html, '_csrf')!, recovery_code: how.recoveryCode });
        continue;
      }
      const secret = options.user.totpSecret ?? totpSecrets.get(options.user.email.toLowerCase());
      if (!secret) throw new Error(`no TOTP secret known for ${options.user.email}`);
      followed = await post(mfa, page, { _csrf: csrf, code: await nextTotpCode(options.issuer, secret) });
    } else if (enroll && csrf && options.user && !result.enrollPage) {
      result.enrollPage = page;
      if (options.secondFactor === 'stop') break;
      const secret = totpKeyOf(page.html);
      if (!secret) throw new Error('the enrollment page shows no key');
      totpSecrets.set(options.user.email.toLowerCase(), secret);
      followed = await post(enroll, page, { _csrf: csrf, code: await currentTotpCode(options.issuer, secret) });
    } else if (saved && csrf && !result.recoveryCodes) {
      result.recoveryCodes = recoveryCodesOf(page.html);
      followed = await post(saved, page, { _csrf: csrf });
    } else if (consent && csrf && !result.consentPage) {
      result.consentPage = page;
      if (options.consent === 'stop') break;
      const url = new URL(consent, page.url);
      const res = await browse(jar, url, { form: { _csrf: csrf } });
      followed = traced(await follow(jar, options.issuer, res, url));
    } else {
      break;
    }
  }
  result.page = followed.page;
  if (followed.leftTo) {
    result.callback = followed.leftTo;
    result.code = followed.leftTo.searchParams.get('code') ?? undefined;
  }
  return result;
}

export interface TokenResponse {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

async function postForm(url: URL, form: Record<string, string>, auth?: string): Promise<TokenResponse> {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  if (auth) headers.authorization = auth;
  const res = await fetch(url, { method: 'POST', headers, body: new URLSearchParams(form).toString() });
  const text = await res.text();
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { raw: text };
  }
  return { status: res.status, headers: res.headers, body };
}

/** Client-side calls to the token, introspection and revocation endpoints with client_secret_basic. */
export function endpoints(issuer: string) {
  const at = (path: string) => new URL(path, issuer);
  const auth = (c: { clientId: string; secret?: string }) => (c.secret ? basic(c.clientId, c.secret) : undefined);
  return {
    token(client: { clientId: string; secret?: string }, form: Record<string, string>) {
      return postForm(at('/token'), c(client, form), auth(client));
    },
    redeem(client: ClientCreds, code: string, verifier: string) {
      return postForm(at('/token'), c(client, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: client.redirectUri }), auth(client));
    },
    refresh(client: { clientId: string; secret?: string }, refreshToken: string) {
      return postForm(at('/token'), c(client, { grant_type: 'refresh_token', refresh_token: refreshToken }), auth(client));
    },
    introspect(caller: { clientId: string; secret?: string }, token: string) {
      return postForm(at('/token/introspection'), { token }, auth(caller));
    },
    revoke(caller: { clientId: string; secret?: string }, token: string, hint?: string) {
      return postForm(at('/token/revocation'), { token, ...(hint ? { token_type_hint: hint } : {}) }, auth(caller));
    },
  };
  // Public clients name themselves in the body.
  function c(client: { clientId: string; secret?: string }, form: Record<string, string>) {
    return client.secret ? form : { ...form, client_id: client.clientId };
  }
}

/** Signs in and redeems the code: the usual thing a client does. */
export async function signInAndRedeem(options: SignInOptions) {
  const flow = await signIn(options);
  if (!flow.code) throw new Error(`sign-in did not reach the client: ${flow.page?.status} ${flow.page?.html.slice(0, 400)}`);
  const tokens = await endpoints(options.issuer).redeem(options.client, flow.code, flow.verifier);
  if (tokens.status !== 200) throw new Error(`code redemption failed: ${tokens.status} ${JSON.stringify(tokens.body)}`);
  return { flow, tokens: tokens.body as { access_token: string; id_token?: string; refresh_token?: string; scope?: string; token_type: string; expires_in: number } };
}
