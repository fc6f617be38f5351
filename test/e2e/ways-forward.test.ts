import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { AxeBuilder } from '@axe-core/playwright';
import * as oc from 'openid-client';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { SCREENSHOTS, currentStep, fillLogin, launchBrowser, newContext, passSecondFactor, startFakeApp, submit, watchProblems } from '../helpers/browser.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer, type TestServer } from '../helpers/server.ts';

/**
 * Pages with a way forward, in Chromium with openid-client as the app: the back button after signing
 * in, a lost sign-in of a known app, "Not you? Use another account" on the second-factor and consent
 * pages, the signed-out page, the enrolment page's one primary path, and a styled 404.
 */
const PASSWORD = 'correct horse battery staple';
const ADA = 'ada@example.com';
const BOB = 'bob@example.com';

describe('pages with a way forward', () => {
  let redis: TestRedis;
  let server: TestServer;
  let browser: Browser;
  let rp: oc.Configuration;
  let clientId: string;
  let redirectUri: string;
  let fakeApp: Awaited<ReturnType<typeof startFakeApp>>;
  /** Ada's browser, signed in after the first test. */
  let context: BrowserContext;
  let page: Page;
  let problems: string[];

  before(async () => {
    redis = await startRedis();
    server = await startServer({ redisUrl: redis.url });
    fakeApp = await startFakeApp();
    redirectUri = `${fakeApp.origin}/cb`;
    const client = await server.app.registry.createClient(
      { name: 'Example Notes', grants: ['authorization_code'], redirectUris: [redirectUri], postLogoutRedirectUris: [`${fakeApp.origin}/bye`], scope: 'openid email' },
      async () => {},
    );
    clientId = client.clientId;
    await server.app.accounts.create({ email: ADA, password: PASSWORD });
    await server.app.accounts.create({ email: BOB, password: PASSWORD });
    rp = await oc.discovery(new URL(server.issuer), client.clientId, undefined, oc.ClientSecretBasic(client.secret), { execute: [oc.allowInsecureRequests] });
    browser = await launchBrowser();
    context = await newContext(browser);
    page = await context.newPage();
    problems = watchProblems(context);
    mkdirSync(SCREENSHOTS, { recursive: true });
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await fakeApp?.close();
    await redis?.dispose();
  });

  /** Starts an authorization request in `on`; `finish` redeems the callback's code as the app and returns the ID token claims. */
  async function startAuthorization(on: Page, extra: Record<string, string> = {}) {
    const verifier = oc.randomPKCECodeVerifier();
    const state = oc.randomState();
    const nonce = oc.randomNonce();
    const url = oc.buildAuthorizationUrl(rp, { redirect_uri: redirectUri, scope: 'openid email', code_challenge: await oc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', state, nonce, ...extra });
    const response = await on.goto(url.href);
    return {
      response,
      async finish(this: void) {
        assert.equal(await currentStep(on, redirectUri), 'callback', `at the app: ${on.url()}`);
        const tokens = await oc.authorizationCodeGrant(rp, new URL(on.url()), { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true });
        return tokens.claims()!;
      },
    };
  }

  async function signInWithPassword(on: Page, email: string) {
    await fillLogin(on, email, PASSWORD);
    await submit(on, on.getByRole('button', { name: 'Sign in', exact: true }));
  }

  async function allow(on: Page) {
    assert.equal(await currentStep(on, redirectUri), 'consent');
    await submit(on, on.getByRole('button', { name: 'Allow' }));
  }

  async function axeClean(on: Page) {
    const { violations } = await new AxeBuilder({ page: on }).analyze();
    assert.deepEqual(violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target).join(', ')}`), []);
  }

  test('the enrolment page has one primary path: a passkey, with the authenticator app folded as the second', async () => {
    const { finish } = await startAuthorization(page);
    await signInWithPassword(page, ADA);
    assert.equal(await currentStep(page, redirectUri), 'enroll');
    const passkey = page.getByRole('button', { name: 'Create a passkey' });
    await passkey.waitFor({ state: 'visible' });
    assert.equal(await page.getByRole('img', { name: /QR code/ }).isVisible(), false, 'the app is the second way, folded');
    assert.equal(await page.getByText('Use an authenticator app instead').isVisible(), true);
    await axeClean(page);
    await page.screenshot({ path: new URL('enroll-primary-passkey.png', SCREENSHOTS).pathname, fullPage: true });
    await passSecondFactor(page, ADA); // unfolds the app and enrols with it
    await allow(page);
    assert.equal((await finish()).email, ADA);
  });

  test('back after signing in: "You’re signed in — continue to Example Notes", not an error', async () => {
    // The last page before the app was the consent page of an interaction now used up.
    const response = await page.goBack();
    assert.match(new URL(page.url()).pathname, /^\/interaction\//);
    assert.equal(response?.status(), 200);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'You’re signed in');
    assert.match(await page.locator('main').innerText(), /signed in as ada@example\.com/);
    const link = page.getByRole('link', { name: 'Continue to Example Notes' });
    assert.equal(await link.getAttribute('href'), `${fakeApp.origin}/`);
    await axeClean(page);
    await page.screenshot({ path: new URL('signed-in-continue.png', SCREENSHOTS).pathname, fullPage: true });
    await link.click();
    await page.waitForURL(`${fakeApp.origin}/`);
  });

  test('a lost sign-in of a known app: "Start again" runs the same request, and the app accepts its answer', async () => {
    const other = await newContext(browser);
    try {
      const fresh = await other.newPage();
      const { finish } = await startAuthorization(fresh);
      assert.equal(await currentStep(fresh, redirectUri), 'login');
      const uid = new URL(fresh.url()).pathname.split('/')[2]!;
      // Lost as an expired one is: the interaction is gone from storage.
      await (await server.app.provider.Interaction.find(uid))!.destroy();
      const response = await fresh.reload();
      assert.equal(response?.status(), 400);
      assert.equal(await fresh.getByRole('heading', { level: 1 }).innerText(), 'This sign-in has expired');
      await axeClean(fresh);
      await fresh.screenshot({ path: new URL('start-again.png', SCREENSHOTS).pathname, fullPage: true });
      await submit(fresh, fresh.getByRole('link', { name: 'Start again' }));
      assert.equal(await currentStep(fresh, redirectUri), 'login');
      await signInWithPassword(fresh, ADA);
      await passSecondFactor(fresh, ADA);
      // The same state, nonce and PKCE challenge: the app redeems the code of the request it started.
      assert.equal((await finish()).email, ADA);
    } finally {
      await other.close();
    }
  });

  test('"Not you? Use another account" on the second-factor page: the sign-in page of the same interaction', async () => {
    const other = await newContext(browser);
    try {
      const fresh = await other.newPage();
      const { finish } = await startAuthorization(fresh);
      await signInWithPassword(fresh, ADA);
      assert.equal(await currentStep(fresh, redirectUri), 'mfa');
      const at = new URL(fresh.url()).pathname;
      assert.match(await fresh.locator('main').innerText(), /Signing in as ada@example\.com\. Not you\?/);
      await axeClean(fresh);
      await fresh.screenshot({ path: new URL('second-factor-not-you.png', SCREENSHOTS).pathname, fullPage: true });
      await submit(fresh, fresh.getByRole('button', { name: 'Use another account' }));
      assert.equal(new URL(fresh.url()).pathname, at, 'the same interaction');
      assert.equal(await currentStep(fresh, redirectUri), 'login');
      await signInWithPassword(fresh, BOB);
      await passSecondFactor(fresh, BOB);
      await allow(fresh);
      assert.equal((await finish()).email, BOB);
    } finally {
      await other.close();
    }
  });

  test('"Not you? Use another account" on the consent page: a CSRF-checked post; the other account signs in and the first is signed out', async () => {
    // Ada's browser is signed in; the app asks for consent again.
    const { finish } = await startAuthorization(page, { prompt: 'consent' });
    assert.equal(await currentStep(page, redirectUri), 'consent');
    assert.match(await page.locator('main').innerText(), /Signed in as ada@example\.com\. Not you\?/);
    await axeClean(page);
    await page.screenshot({ path: new URL('consent-not-you.png', SCREENSHOTS).pathname, fullPage: true });

    // A link or a forged post changes nothing: the form's CSRF token and origin are required.
    const action = new URL((await page.locator('form[action$="/other-account"]').getAttribute('action'))!, server.issuer).href;
    assert.equal((await page.request.get(action)).status(), 404);
    assert.equal((await page.request.post(action, { form: { _csrf: 'forged' }, headers: { origin: server.issuer } })).status(), 403);
    assert.equal(await currentStep(page, redirectUri), 'consent');

    await submit(page, page.getByRole('button', { name: 'Use another account' }));
    assert.equal(await currentStep(page, redirectUri), 'login');
    await signInWithPassword(page, BOB);
    await passSecondFactor(page, BOB);
    await allow(page);
    assert.equal((await finish()).email, BOB);
    // This browser is now Bob's alone: the app's next request is answered for Bob without a page.
    const next = await startAuthorization(page);
    assert.equal((await next.finish()).email, BOB);
  });

  test('the signed-out page offers to sign in again to the app that signed the person out', async () => {
    const endSession = new URL(rp.serverMetadata().end_session_endpoint!);
    endSession.searchParams.set('client_id', clientId);
    await page.goto(endSession.href);
    await submit(page, page.getByRole('button', { name: 'Yes, sign me out' }));
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Signed out');
    const again = page.getByRole('link', { name: 'Sign in again to Example Notes' });
    assert.equal(await again.getAttribute('href'), `${fakeApp.origin}/`);
    await axeClean(page);
    await page.screenshot({ path: new URL('signed-out-sign-in-again.png', SCREENSHOTS).pathname, fullPage: true });
  });

  test('an unknown path: a styled 404 page for a browser, with the status 404', async () => {
    const response = await page.goto(new URL('/no/such/page', server.issuer).href);
    assert.equal(response?.status(), 404);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Page not found');
    assert.match(response.headers()['content-security-policy'] ?? '', /default-src 'none'/);
    await axeClean(page);
    await page.screenshot({ path: new URL('not-found.png', SCREENSHOTS).pathname, fullPage: true });
  });

  test('bad input on these pages: clear 4xx, never a 5xx', async () => {
    const base = server.issuer;
    const get = (path: string, accept = 'text/html') => fetch(new URL(path, base), { headers: { accept }, redirect: 'manual' });
    for (const path of ['/interaction/x', `/interaction/${'a'.repeat(5000)}`, '/interaction/%E0%A4%A', '/interaction/..%2f..%2fetc', '/no/such/page?x=%00']) {
      const res = await get(path);
      assert.ok(res.status >= 400 && res.status < 500, `${path}: ${res.status}`);
    }
    assert.equal((await get('/no/such/page', 'application/json')).status, 404);
    const posted = await fetch(new URL('/interaction/x/other-account', base), { method: 'POST', headers: { origin: base, 'content-type': 'application/x-www-form-urlencoded' }, body: '_csrf=x' });
    assert.ok(posted.status >= 400 && posted.status < 500, `other-account: ${posted.status}`);
    assert.deepEqual(problems.filter((p) => !p.includes('/favicon.ico') && !p.includes('404')), []);
  });
});
