import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';
import { CookieJar, browse } from './flow.ts';
import { freePort } from './redis.ts';

/** A person at an upstream provider, as its claims say. */
export interface UpstreamPersonClaims {
  email?: string;
  email_verified?: boolean;
  name?: string;
}

/**
 * The "company provider": a second oidc-provider on 127.0.0.1 (another host than Latchkey's localhost,
 * so a browser keeps the two servers' cookies apart). Its sign-in page signs in `as` at once, or refuses
 * (`deny`): the test decides who the upstream says the person is.
 */
export async function startCompanyProvider(options: { redirectUri: string; clientSecret: string }) {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const people = new Map<string, UpstreamPersonClaims>();
  const control = { as: '', deny: false };
  const provider = new Provider(issuer, {
    clients: [{ client_id: 'latchkey', client_secret: options.clientSecret, redirect_uris: [options.redirectUri], grant_types: ['authorization_code'], response_types: ['code'] }],
    async findAccount(_ctx, sub) {
      const claims = people.get(sub);
      return claims ? { accountId: sub, claims: async () => ({ sub, ...claims }) } : undefined;
    },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    cookies: { keys: [randomBytes(16).toString('hex')] },
    // Everything asked is allowed: the company's consent is not what these tests are about.
    async loadExistingGrant(ctx) {
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client!.clientId, accountId: ctx.oidc.session!.accountId! });
      grant.addOIDCScope('openid email profile');
      await grant.save();
      return grant;
    },
    ttl: { AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600 },
  });
  provider.use(async (ctx, next) => {
    if (!ctx.path.startsWith('/interaction/')) return next();
    ctx.respond = false;
    const result = control.deny ? { error: 'access_denied', error_description: 'the person said no' } : { login: { accountId: control.as } };
    await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
  });
  const handler = provider.callback();
  const server = createServer((req, res) => void handler(req, res));
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    issuer,
    people,
    control,
    /** Signs in as this person next. */
    as(sub: string, claims: UpstreamPersonClaims) {
      people.set(sub, claims);
      control.as = sub;
      control.deny = false;
    },
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

export interface GithubUser {
  id: number;
  login: string;
  name?: string;
  emails: { email: string; primary: boolean; verified: boolean }[];
}

/** GitHub's OAuth endpoints and the two REST calls Latchkey makes, as a small HTTP stub on 127.0.0.1 (PKCE checked). */
export async function startGithubStub(options: { clientId: string; clientSecret: string }) {
  const codes = new Map<string, { user: GithubUser; challenge: string; redirectUri: string }>();
  const tokens = new Map<string, GithubUser>();
  const control: { as?: GithubUser } = {};
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url!, 'http://127.0.0.1');
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (url.pathname === '/login/oauth/authorize') {
      const code = randomBytes(10).toString('hex');
      const redirectUri = url.searchParams.get('redirect_uri')!;
      codes.set(code, { user: control.as!, challenge: url.searchParams.get('code_challenge') ?? '', redirectUri });
      const back = new URL(redirectUri);
      back.searchParams.set('code', code);
      back.searchParams.set('state', url.searchParams.get('state') ?? '');
      res.writeHead(302, { location: back.href });
      return res.end();
    }
    if (url.pathname === '/login/oauth/access_token' && req.method === 'POST') {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const form = new URLSearchParams(body);
        const grant = codes.get(form.get('code') ?? '');
        codes.delete(form.get('code') ?? '');
        const verifierOk = grant && createHash('sha256').update(form.get('code_verifier') ?? '').digest('base64url') === grant.challenge;
        if (!grant || !verifierOk || form.get('client_secret') !== options.clientSecret || form.get('client_id') !== options.clientId || form.get('redirect_uri') !== grant.redirectUri) {
          return json(200, { error: 'bad_verification_code' });
        }
        const token = `gho_${randomBytes(16).toString('hex')}`;
        tokens.set(token, grant.user);
        json(200, { access_token: token, token_type: 'bearer', scope: 'read:user,user:email' });
      });
      return;
    }
    const user = tokens.get((req.headers.authorization ?? '').replace(/^Bearer /, ''));
    if (!user) return json(401, { message: 'Bad credentials' });
    if (url.pathname === '/user') return json(200, { id: user.id, login: user.login, name: user.name ?? null });
    if (url.pathname === '/user/emails') return json(200, user.emails.map((e) => ({ ...e, visibility: null })));
    json(404, { message: 'Not Found' });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    control,
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

/** A server that accepts connections and never answers: an upstream that is slow past any deadline. */
export async function startSilentServer() {
  const server = createServer(() => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

export interface Trip {
  /** Where the chain stopped: a page (not a redirect), or the first redirect to `stopAt`. */
  page?: { url: URL; status: number; html: string };
  arrived?: URL;
  /** Every response on the way. */
  chain: { url: URL; status: number }[];
}

/**
 * A browser without JavaScript across hosts: one cookie jar per host, redirects followed everywhere
 * until a page, or a redirect to `stopAt` (the app's redirect URI). `rewrite` may change a URL before
 * it is requested (a tampered answer).
 */
export class Traveller {
  readonly #jars = new Map<string, CookieJar>();
  readonly stopAt: string;
  readonly rewrite: (url: URL) => URL;
  constructor(stopAt: string, rewrite: (url: URL) => URL = (u) => u) {
    this.stopAt = stopAt;
    this.rewrite = rewrite;
  }

  /** Forgets a host's cookies (signed out there). */
  forget(hostname: string): void {
    this.#jars.delete(hostname);
  }

  jar(url: URL): CookieJar {
    const jar = this.#jars.get(url.hostname) ?? new CookieJar();
    this.#jars.set(url.hostname, jar);
    return jar;
  }

  async go(start: URL | string, init: { form?: Record<string, string> } = {}): Promise<Trip> {
    const chain: Trip['chain'] = [];
    let url = this.rewrite(new URL(start));
    let res = await browse(this.jar(url), url, init);
    for (let hops = 0; hops < 30; hops += 1) {
      chain.push({ url, status: res.status });
      const location = res.headers.get('location');
      if (res.status < 300 || res.status >= 400 || !location) return { page: { url, status: res.status, html: await res.text() }, chain };
      await res.body?.cancel();
      const next = new URL(location, url);
      if (next.href.startsWith(this.stopAt)) return { arrived: next, chain };
      url = this.rewrite(next);
      res = await browse(this.jar(url), url);
    }
    throw new Error('too many redirects');
  }
}
