import * as oc from 'openid-client';
import type { UpstreamProvider, UpstreamProviders } from './providers.ts';

/**
 * Latchkey as the relying party of an upstream provider, through openid-client: authorization code
 * with PKCE, `state`, `nonce`, the `iss` response parameter (RFC 9207) checked when the upstream
 * supports it, and the ID token's signature verified with the upstream's JWKS. GitHub speaks OAuth 2.0
 * only: its person comes from the REST API (`/user`, and `/user/emails` for verified addresses).
 * Every upstream request has a deadline (`timeoutMs`): an upstream that is down or slow is a page, not a hang.
 */
export interface UpstreamPerson {
  iss: string;
  sub: string;
  email?: string;
  /** The upstream asserted the address as verified (its claim, or GitHub's `verified`). */
  emailVerified: boolean;
  name?: string;
  /** What the upstream said of its own sign-in: recorded, never turned into Latchkey's own acr/amr. */
  amr?: string[];
  acr?: string;
}

/** Why an upstream sign-in did not complete, in the words the page and the audit event use. */
export type UpstreamFailureKind = 'unavailable' | 'denied' | 'invalid';

export class UpstreamFailure extends Error {
  readonly kind: UpstreamFailureKind;
  /** A coarse code for the log (openid-client's error code, the upstream's `error`), never a token or code. */
  readonly code: string;
  constructor(kind: UpstreamFailureKind, code: string) {
    super(`upstream sign-in failed: ${kind} (${code})`);
    this.kind = kind;
    this.code = code;
  }
}

/** What the callback must match: kept with the `state` until the upstream answers. */
export interface PendingChecks {
  state: string;
  nonce: string;
  codeVerifier: string;
}

export interface UpstreamClientOptions {
  providers: UpstreamProviders;
  /** `<ISSUER>/upstream/callback`: the one redirect URI registered at every upstream. */
  redirectUri: string;
  timeoutMs: number;
  /** Discovery results are kept this long (and dropped when a provider changes). */
  cacheMs?: number;
  /** The time ID tokens are checked against (expiry, auth_time); tests inject one ahead of the upstream's. */
  clock?: () => number;
}

function classify(err: unknown): UpstreamFailure {
  if (err instanceof UpstreamFailure) return err;
  if (err instanceof oc.AuthorizationResponseError) return new UpstreamFailure(err.error === 'access_denied' ? 'denied' : 'invalid', `error=${err.error.slice(0, 40)}`);
  type Cause = { name?: string; message?: string; code?: string; cause?: unknown; status?: number };
  for (let e = err as Cause | undefined, depth = 0; e && depth < 5; e = e.cause as Cause | undefined, depth += 1) {
    if (e.name === 'TimeoutError' || e.name === 'AbortError') return new UpstreamFailure('unavailable', 'timeout');
    if (e.name === 'TypeError' && /fetch failed/.test(e.message ?? '')) return new UpstreamFailure('unavailable', 'connection_failed');
    if (typeof e.code === 'string' && /^E(CONN|HOST|NOTFOUND|AI_)/.test(e.code)) return new UpstreamFailure('unavailable', 'connection_failed');
    const status = (e as { status?: unknown }).status ?? (e.cause as { status?: unknown } | undefined)?.status;
    if (typeof status === 'number' && status >= 500) return new UpstreamFailure('unavailable', `http_status_${status}`);
  }
  const code = (err as { code?: unknown })?.code;
  return new UpstreamFailure('invalid', typeof code === 'string' ? code : 'invalid_response');
}

export class UpstreamClient {
  readonly #o: UpstreamClientOptions;
  readonly #cache = new Map<string, { at: number; record: string; config: oc.Configuration }>();
  constructor(options: UpstreamClientOptions) {
    this.#o = options;
  }

  /** fetch with the deadline: every request openid-client and the GitHub API calls make. */
  #fetch: oc.CustomFetch = (url, options) => fetch(url, { ...options, signal: AbortSignal.any([...(options.signal ? [options.signal] : []), AbortSignal.timeout(this.#o.timeoutMs)]) } as RequestInit);

  async #configuration(p: UpstreamProvider): Promise<oc.Configuration> {
    // openid-client takes "now" as the real clock plus this skew (seconds): the injected clock, when there is one.
    const skew = this.#o.clock ? Math.round((this.#o.clock() - Date.now()) / 1000) : 0;
    const record = `${skew}\n${JSON.stringify(p)}`;
    const cached = this.#cache.get(p.id);
    if (cached && cached.record === record && Date.now() - cached.at < (this.#o.cacheMs ?? 300_000)) return cached.config;
    const secret = this.#o.providers.clientSecret(p);
    const metadata: oc.ClientMetadata = { client_id: p.clientId, client_secret: secret, ...(skew ? { [oc.clockSkew]: skew } : {}) };
    const insecure = new URL(p.issuer).protocol === 'http:' ? [oc.allowInsecureRequests] : [];
    let config: oc.Configuration;
    if (p.endpoints) {
      config = new oc.Configuration({ issuer: p.issuer, authorization_endpoint: p.endpoints.authorization, token_endpoint: p.endpoints.token }, p.clientId, metadata);
      for (const apply of insecure) apply(config);
      if (new URL(p.endpoints.token).protocol === 'http:') oc.allowInsecureRequests(config);
    } else {
      config = await oc.discovery(new URL(p.issuer), p.clientId, metadata, oc.ClientSecretBasic(secret), { execute: [...insecure, oc.enableNonRepudiationChecks], [oc.customFetch]: this.#fetch });
    }
    config[oc.customFetch] = this.#fetch;
    this.#cache.set(p.id, { at: Date.now(), record, config });
    return config;
  }

  /** Where to send the browser, and the checks to keep until it comes back. */
  async start(p: UpstreamProvider, extra: Record<string, string> = {}): Promise<{ url: URL; checks: PendingChecks }> {
    try {
      const config = await this.#configuration(p);
      const checks = { state: oc.randomState(), nonce: oc.randomNonce(), codeVerifier: oc.randomPKCECodeVerifier() };
      const url = oc.buildAuthorizationUrl(config, {
        redirect_uri: this.#o.redirectUri,
        scope: p.scope,
        state: checks.state,
        code_challenge: await oc.calculatePKCECodeChallenge(checks.codeVerifier),
        code_challenge_method: 'S256',
        ...(p.endpoints ? {} : { nonce: checks.nonce }),
        ...extra,
      });
      return { url, checks };
    } catch (err) {
      throw classify(err);
    }
  }

  /** The callback (its query as the upstream sent it): the code exchanged, every check made, the person read. */
  async finish(p: UpstreamProvider, query: string, checks: PendingChecks, options: { maxAge?: number } = {}): Promise<UpstreamPerson> {
    try {
      const config = await this.#configuration(p);
      const callback = new URL(`${this.#o.redirectUri}?${query}`);
      if (p.endpoints) {
        const tokens = await oc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: checks.codeVerifier, expectedState: checks.state, idTokenExpected: false }, { redirect_uri: this.#o.redirectUri });
        return await this.#githubPerson(p, tokens.access_token);
      }
      const tokens = await oc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: checks.codeVerifier, expectedState: checks.state, expectedNonce: checks.nonce, idTokenExpected: true, ...(options.maxAge !== undefined ? { maxAge: options.maxAge } : {}) }, { redirect_uri: this.#o.redirectUri });
      const idToken = tokens.claims()!;
      const userinfo = config.serverMetadata().userinfo_endpoint ? await oc.fetchUserInfo(config, tokens.access_token, idToken.sub) : {};
      const claims: Record<string, unknown> = { ...userinfo, ...idToken };
      const email = claims[p.claims.email];
      const name = claims[p.claims.name];
      const verified = claims[p.claims.email_verified];
      return {
        iss: idToken.iss,
        sub: idToken.sub,
        ...(typeof email === 'string' ? { email } : {}),
        // Only a boolean true (or Entra's "1"-style strings are not accepted): anything else is unverified.
        emailVerified: verified === true,
        ...(typeof name === 'string' && name ? { name: name.slice(0, 200) } : {}),
        ...(Array.isArray(idToken.amr) ? { amr: idToken.amr.filter((v): v is string => typeof v === 'string').slice(0, 10) } : {}),
        ...(typeof idToken.acr === 'string' ? { acr: idToken.acr.slice(0, 200) } : {}),
      };
    } catch (err) {
      throw classify(err);
    }
  }

  /** GitHub's person: the numeric id is the subject (logins can be renamed); only a verified primary address counts. */
  async #githubPerson(p: UpstreamProvider, accessToken: string): Promise<UpstreamPerson> {
    const api = p.endpoints!.api.replace(/\/+$/, '');
    const get = async (path: string) => {
      const res = await fetch(`${api}${path}`, { headers: { authorization: `Bearer ${accessToken}`, accept: 'application/vnd.github+json', 'user-agent': 'latchkey' }, signal: AbortSignal.timeout(this.#o.timeoutMs) });
      if (res.status >= 500) throw new UpstreamFailure('unavailable', `http_status_${res.status}`);
      if (!res.ok) throw new UpstreamFailure('invalid', `api_status_${res.status}`);
      return res.json() as Promise<unknown>;
    };
    const user = (await get('/user')) as { id?: unknown; name?: unknown; login?: unknown };
    if (typeof user.id !== 'number' && typeof user.id !== 'string') throw new UpstreamFailure('invalid', 'no_user_id');
    const emails = (await get('/user/emails')) as { email?: unknown; primary?: unknown; verified?: unknown }[];
    const usable = Array.isArray(emails) ? emails.filter((e) => typeof e.email === 'string' && e.verified === true) : [];
    const chosen = usable.find((e) => e.primary === true) ?? usable[0];
    const name = typeof user.name === 'string' && user.name ? user.name : typeof user.login === 'string' ? user.login : undefined;
    return {
      iss: p.issuer,
      sub: String(user.id),
      ...(chosen ? { email: chosen.email as string, emailVerified: true } : { emailVerified: false }),
      ...(name ? { name: name.slice(0, 200) } : {}),
    };
  }
}
