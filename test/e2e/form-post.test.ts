import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { authorize, launchBrowser, newContext, submit } from '../helpers/browser.ts';
import { endpoints, pkcePair } from '../helpers/flow.ts';
import type { TestServer } from '../helpers/server.ts';
import { useWorld, type World } from '../helpers/world.ts';

/**
 * POST to the authorization and end-session endpoints (OIDC Core §3.1.2.1, RP-Initiated Logout §2), as
 * mod_auth_openidc sends them: Chromium submits an auto-posting form on another site (127.0.0.1) to the
 * issuer (localhost). Latchkey answers with a 303 to the GET; Chromium follows it as a top-level GET
 * navigation, which carries our SameSite=Lax cookies.
 */
let server: TestServer;
let world: World;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let site: Server;
let origin: string;
let client: { clientId: string; secret: string; redirectUri: string };

useWorld({}, (setup) => ({ server, world } = setup));

/** The app's site: pages that post a form to the issuer at once, and its callback pages. */
function appSite(issuer: () => string) {
  return createServer((req, res) => {
    const url = new URL(req.url!, 'http://127.0.0.1');
    const target = url.pathname === '/post-auth' ? '/auth' : url.pathname === '/post-logout' ? '/session/end' : undefined;
    res.writeHead(url.pathname === '/favicon.ico' ? 204 : 200, { 'content-type': 'text/html; charset=utf-8' });
    if (url.pathname === '/favicon.ico') return res.end();
    if (!target) return res.end('<!doctype html><title>App</title><p>Back in the app.</p>');
    const inputs = [...url.searchParams].map(([k, v]) => `<input type="hidden" name="${k}" value="${v.replaceAll('"', '&quot;')}">`).join('');
    res.end(`<!doctype html><title>App</title><form method="post" action="${issuer()}${target}">${inputs}</form><script>document.forms[0].submit()</script>`);
  });
}

before(async () => {
  site = appSite(() => server.issuer);
  await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(site.address() as AddressInfo).port}`;
  browser = await launchBrowser();
  context = await newContext(browser);
  page = await context.newPage();
});

after(async () => {
  await browser?.close();
  site?.closeAllConnections();
  await new Promise((r) => site?.close(r));
});

async function registerClient() {
  const c = await server.app.registry.createClient(
    { name: 'Posting app', grants: ['authorization_code'], redirectUris: [`${origin}/cb`], postLogoutRedirectUris: [`${origin}/bye`], scope: 'openid email' },
    async () => {},
  );
  return { clientId: c.clientId, secret: c.secret!, redirectUri: `${origin}/cb` };
}

/** The app's auto-posting page for /auth; resolves once the browser has left it. */
async function postAuthorization() {
  const { verifier, challenge } = pkcePair();
  const params = new URLSearchParams({ client_id: client.clientId, redirect_uri: client.redirectUri, response_type: 'code', scope: 'openid email', state: 'st', code_challenge: challenge, code_challenge_method: 'S256' });
  await page.goto(`${origin}/post-auth?${params}`);
  await page.waitForURL((u) => u.pathname !== '/post-auth');
  return verifier;
}

describe('form posts from another site', () => {
  test('POST /auth: a sign-in completes and the code is redeemed', async () => {
    client = await registerClient();
    const verifier = await postAuthorization();
    assert.equal(new URL(page.url()).origin, server.issuer, 'the browser is on the sign-in page');
    const callback = await authorize(page, new URL(page.url()), { redirectUri: client.redirectUri, email: world.user.email, password: world.user.password });
    assert.equal(callback.searchParams.get('state'), 'st');
    const tokens = await endpoints(server.issuer).redeem(client, callback.searchParams.get('code')!, verifier);
    assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
    assert.equal(typeof tokens.body.id_token, 'string');
  });

  test('POST /auth again: the Lax session cookie rides the 303, so single sign-on needs no page', async () => {
    await postAuthorization();
    await page.waitForURL((u) => u.href.startsWith(client.redirectUri));
    assert.ok(new URL(page.url()).searchParams.get('code'), page.url());
  });

  test('POST /session/end with id_token_hint: the person confirms and is signed out, back at the app', async () => {
    const verifier = await postAuthorization();
    await page.waitForURL((u) => u.href.startsWith(client.redirectUri));
    const tokens = await endpoints(server.issuer).redeem(client, new URL(page.url()).searchParams.get('code')!, verifier);
    const params = new URLSearchParams({ id_token_hint: String(tokens.body.id_token), post_logout_redirect_uri: `${origin}/bye`, state: 'out' });
    await page.goto(`${origin}/post-logout?${params}`);
    await page.waitForURL((u) => u.origin === server.issuer);
    const signOut = page.getByRole('button', { name: 'Yes, sign me out' });
    assert.equal(await signOut.count(), 1, `the confirmation page: ${await page.locator('body').innerText()}`);
    await submit(page, signOut);
    assert.equal(page.url(), `${origin}/bye?state=out`);

    // Signed out: the next authorization asks for the password again.
    await postAuthorization();
    assert.equal(await page.locator('input[autocomplete=current-password]').count(), 1, 'the sign-in page');
  });
});
