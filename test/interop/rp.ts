import assert from 'node:assert/strict';
import { createServer, type RequestListener, type Server } from 'node:http';
import { browse, CookieJar, signIn, type SignInResult } from '../helpers/flow.ts';
import type { World } from '../helpers/world.ts';

/**
 * The relying party of an interoperability test: an app built with a client library, served on a
 * loopback port, and a person who visits its login route and signs in at Latchkey through the HTML
 * forms (flow.ts), with separate cookie jars for the app and the issuer, as a browser keeps them.
 */
export interface RelyingParty {
  origin: string;
  close(): Promise<void>;
}

/** Serves the app `handler` builds on 127.0.0.1, on a port the system picks (its `origin`, for its redirect URI). */
export async function serveRelyingParty(handler: (origin: string) => RequestListener | Promise<RequestListener>): Promise<RelyingParty> {
  let listener: RequestListener = () => {};
  const server: Server = createServer((req, res) => listener(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  listener = await handler(origin);
  return {
    origin,
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

export interface Visit {
  /** The app's page the person lands on at the end, after the app's redirects. */
  status: number;
  body: string;
  /** The authorization request the library sent. */
  authUrl: URL;
  flow: SignInResult;
}

/** The person opens `loginPath` on the app, signs in (and consents) at the issuer, and follows the app's redirects. */
export async function visitAndSignIn(rp: RelyingParty, loginPath: string, options: { issuer: string; user: World['user']; scope?: string }): Promise<Visit> {
  const app = new CookieJar();
  const login = await browse(app, new URL(loginPath, rp.origin));
  await login.body?.cancel();
  assert.ok(login.status >= 300 && login.status < 400, `the app sends the person to the issuer (HTTP ${login.status})`);
  const authUrl = new URL(login.headers.get('location')!, rp.origin);
  assert.equal(authUrl.origin, new URL(options.issuer).origin);
  const flow = await signIn({ issuer: options.issuer, client: { clientId: '', redirectUri: '' }, user: options.user, scope: options.scope ?? '', authUrl });
  assert.ok(flow.callback, `the issuer sends the person back to the app: ${flow.page?.status} ${flow.page?.html.slice(0, 300)}`);
  let url = flow.callback;
  for (let hops = 0; hops < 10; hops += 1) {
    assert.equal(url.origin, rp.origin, `stays on the app: ${url}`);
    const res = await browse(app, url);
    const location = res.headers.get('location');
    if (res.status < 300 || res.status >= 400 || !location) return { status: res.status, body: await res.text(), authUrl, flow };
    await res.body?.cancel();
    url = new URL(location, url);
  }
  throw new Error('too many redirects on the app');
}
