import { createHash, createPublicKey, randomBytes, verify, type JsonWebKey } from 'node:crypto';
import Router from '@koa/router';
import type { Context } from 'koa';
import type { Accounts } from '../accounts/accounts.ts';
import type { Registry } from '../oidc/registry.ts';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';
import type { Views } from '../views.ts';

/**
 * The development-only demo app at /demo: a tiny relying party inside the server that signs in with
 * Latchkey itself — authorization code + PKCE S256 as a public client — and shows the ID token's claims.
 * It talks to the provider over HTTP at the issuer URL, like any app would (fetch + node:crypto: no
 * client library in production dependencies for a page only development serves).
 */
export const DEMO_EMAIL = 'demo@example.org';
const DEMO_SCOPE = 'openid profile email';
const TRANSACTION_COOKIE = 'latchkey.demo';
const TRANSACTION_TTL_MS = 10 * 60 * 1000;
const ID_TOKEN_ALGS = new Set(['RS256', 'ES256', 'EdDSA']);

export interface DemoSetup {
  clientId: string;
  email: string;
  /** The demo account's password: only when this start created the account (printed once, on the terminal). */
  password?: string;
}

function demoUris(issuer: string) {
  return { callback: `${issuer}/demo/callback`, home: `${issuer}/demo` };
}

/**
 * Registers the demo client and the demo account when absent (the embedded store: every start;
 * Redis: the first start only, so a password is shown once and never changed behind anyone's back).
 */
export async function ensureDemo(deps: { store: Store; registry: Registry; accounts: Accounts; issuer: string }): Promise<DemoSetup> {
  const { store, registry, accounts, issuer } = deps;
  const uris = demoUris(issuer);
  let clientId = await store.get(keys.demoClient);
  const existing = clientId ? await registry.findClient(clientId) : undefined;
  const redirects = (existing?.redirect_uris ?? []) as string[];
  if (!existing || !redirects.includes(uris.callback)) {
    // None yet, or one made for another ISSUER: register a fresh one.
    if (existing && clientId) await registry.deleteClient(clientId).catch(() => {});
    const created = await registry.createClient(
      {
        name: 'Latchkey demo app',
        grants: ['authorization_code'],
        redirectUris: [uris.callback],
        postLogoutRedirectUris: [uris.home],
        scope: DEMO_SCOPE,
        public: true,
      },
      async () => {},
      { ownOrigin: new URL(issuer).origin },
    );
    clientId = created.clientId;
    await store.set(keys.demoClient, clientId);
  }
  if (await accounts.findByEmail(DEMO_EMAIL)) return { clientId: clientId!, email: DEMO_EMAIL };
  // 128 random bits in hex, whose alphabet cannot spell the email's name (`demo`): it always passes the password rule.
  const password = randomBytes(16).toString('hex');
  // An admin, so that the console can be tried at once (development only).
  await accounts.create({ email: DEMO_EMAIL, name: 'Demo Person', password, admin: true });
  return { clientId: clientId!, email: DEMO_EMAIL, password };
}

interface Transaction {
  state: string;
  nonce: string;
  verifier: string;
  at: number;
}

class DemoError extends Error {}

function decodeSegment(segment: string | undefined): Record<string, unknown> {
  try {
    const value = JSON.parse(Buffer.from(segment ?? '', 'base64url').toString('utf8')) as unknown;
    if (value && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // handled below
  }
  throw new DemoError('the ID token is malformed');
}

/** Checks an ID token's signature against the issuer's published keys and its claims (OIDC Core §3.1.3.7). */
async function verifyIdToken(idToken: string, issuer: string, clientId: string, nonce: string): Promise<Record<string, unknown>> {
  const [h, p, s] = idToken.split('.');
  const header = decodeSegment(h);
  const alg = String(header.alg);
  if (!ID_TOKEN_ALGS.has(alg) || s === undefined) throw new DemoError(`unexpected ID token algorithm ${alg}`);
  const jwks = (await (await fetch(`${issuer}/jwks`)).json()) as { keys: (JsonWebKey & { kid?: string; alg?: string })[] };
  const jwk = jwks.keys.find((k) => k.kid === header.kid && (!k.alg || k.alg === alg));
  if (!jwk) throw new DemoError('the ID token was signed with a key the issuer does not publish');
  const key = createPublicKey({ key: jwk, format: 'jwk' });
  const data = Buffer.from(`${h}.${p}`);
  const signature = Buffer.from(s, 'base64url');
  const valid =
    alg === 'EdDSA' ? verify(null, data, key, signature) : verify('sha256', data, alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key, signature);
  if (!valid) throw new DemoError('the ID token signature does not verify');
  const claims = decodeSegment(p);
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  const now = Math.floor(Date.now() / 1000);
  if (claims.iss !== issuer) throw new DemoError('the ID token comes from another issuer');
  if (!aud.includes(clientId)) throw new DemoError('the ID token is for another client');
  if (typeof claims.exp !== 'number' || claims.exp < now - 30) throw new DemoError('the ID token has expired');
  if (claims.nonce !== nonce) throw new DemoError('the ID token nonce does not match');
  return claims;
}

export function demoRoutes(deps: { issuer: string; clientId: string; email: string; views: Views }) {
  const { issuer, clientId, email, views } = deps;
  const uris = demoUris(issuer);
  const router = new Router({ prefix: '/demo' });

  const page = (ctx: Context, data: Record<string, unknown>) => views.render(ctx, 'demo', { title: 'Demo app', email, ...data });

  router.get('/', (ctx) => page(ctx, {}));

  // Starts a sign-in: a fresh state, nonce and PKCE verifier, kept in a signed cookie for the callback.
  router.get('/login', (ctx) => {
    const tx: Transaction = {
      state: randomBytes(16).toString('base64url'),
      nonce: randomBytes(16).toString('base64url'),
      verifier: randomBytes(32).toString('base64url'),
      at: Date.now(),
    };
    ctx.cookies.set(TRANSACTION_COOKIE, Buffer.from(JSON.stringify(tx)).toString('base64url'), {
      signed: true,
      httpOnly: true,
      sameSite: 'lax',
      path: '/demo',
      maxAge: TRANSACTION_TTL_MS,
      overwrite: true,
    });
    const params = new URLSearchParams({
      client_id: clientId,
      response_type: 'code',
      redirect_uri: uris.callback,
      scope: DEMO_SCOPE,
      state: tx.state,
      nonce: tx.nonce,
      code_challenge: createHash('sha256').update(tx.verifier).digest('base64url'),
      code_challenge_method: 'S256',
    });
    ctx.redirect(`${issuer}/auth?${params}`);
  });

  router.get('/callback', async (ctx) => {
    const raw = ctx.cookies.get(TRANSACTION_COOKIE, { signed: true });
    ctx.cookies.set(TRANSACTION_COOKIE, null, { path: '/demo' });
    try {
      let tx: Transaction | undefined;
      try {
        tx = raw ? (JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as Transaction) : undefined;
      } catch {
        tx = undefined;
      }
      if (!tx || Date.now() - tx.at > TRANSACTION_TTL_MS) throw new DemoError('this sign-in was not started here, or it expired: start again');
      const query = ctx.query;
      if (query.state !== tx.state) throw new DemoError('the state does not match this sign-in: start again');
      // RFC 9207: the response says which issuer sent it.
      if (query.iss !== issuer) throw new DemoError('the response comes from another issuer');
      if (typeof query.error === 'string') throw new DemoError(`${query.error}${typeof query.error_description === 'string' ? `: ${query.error_description}` : ''}`);
      if (typeof query.code !== 'string') throw new DemoError('the response carries no code');
      const res = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({ grant_type: 'authorization_code', code: query.code, redirect_uri: uris.callback, code_verifier: tx.verifier, client_id: clientId }),
      });
      const tokens = (await res.json()) as { id_token?: string; error?: string; error_description?: string };
      if (!res.ok || !tokens.id_token) throw new DemoError(`the token endpoint answered ${res.status} ${tokens.error ?? ''} ${tokens.error_description ?? ''}`.trim());
      const claims = await verifyIdToken(tokens.id_token, issuer, clientId, tx.nonce);
      const logout = `${issuer}/session/end?${new URLSearchParams({ client_id: clientId, post_logout_redirect_uri: uris.home })}`;
      page(ctx, {
        title: 'Demo app: signed in',
        claims: Object.entries(claims).map(([name, value]) => ({ name, value: typeof value === 'string' ? value : JSON.stringify(value) })),
        logout,
      });
    } catch (err) {
      if (!(err instanceof DemoError)) throw err;
      ctx.status = 400;
      page(ctx, { title: 'Demo app: sign-in failed', problem: err.message });
    }
  });

  return router;
}
