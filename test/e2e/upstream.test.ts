import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import * as oc from 'openid-client';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { SCREENSHOTS, launchBrowser, newContext, startFakeApp, submit, watchProblems } from '../helpers/browser.ts';
import { freePort, startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { startCompanyProvider } from '../helpers/upstream.ts';

/**
 * "Continue with Acme" in a real Chromium: the app (openid-client) sends the person to Latchkey, Latchkey
 * to the company's provider (a second oidc-provider on 127.0.0.1), and back; the app's ID token names
 * Latchkey's account, not the company's subject. The takeover test walks the same way: an upstream
 * account that claims someone else's address gets a page, never that account.
 */
const VICTIM = { email: 'victim@acme.test', password: 'correct horse battery staple' };

describe('sign-in through an upstream provider, in a browser', () => {
  let redis: TestRedis;
  let server: TestServer;
  let company: Awaited<ReturnType<typeof startCompanyProvider>>;
  /** Another company's provider, which the operator does not trust for addresses. */
  let partner: Awaited<ReturnType<typeof startCompanyProvider>>;
  let fakeApp: Awaited<ReturnType<typeof startFakeApp>>;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let problems: string[];
  let rp: oc.Configuration;
  let redirectUri: string;

  before(async () => {
    redis = await startRedis();
    const port = await freePort();
    company = await startCompanyProvider({ redirectUri: `http://localhost:${port}/upstream/callback`, clientSecret: 'company-secret' });
    partner = await startCompanyProvider({ redirectUri: `http://localhost:${port}/upstream/callback`, clientSecret: 'partner-secret' });
    server = await startServer({ redisUrl: redis.url, port });
    fakeApp = await startFakeApp();
    redirectUri = `${fakeApp.origin}/cb`;
    const { ops, registry } = server.app;
    await ops.addProvider({ kind: 'cli' }, { id: 'acme', preset: 'oidc', name: 'Acme', issuer: company.issuer, client_id: 'latchkey', client_secret: 'company-secret', create_accounts: true, allowed_domains: ['acme.test'], trusted_for_email: true, require_mfa: false });
    await ops.addProvider({ kind: 'cli' }, { id: 'gh', preset: 'github', client_id: 'gh', client_secret: 'gh-secret' });
    // Shown only when the request names it (upstream=partner): the sign-in page's screenshot stays as it was.
    await ops.addProvider({ kind: 'cli' }, { id: 'partner', preset: 'oidc', name: 'Partner', issuer: partner.issuer, client_id: 'latchkey', client_secret: 'partner-secret', display: 'hint', create_accounts: true, trusted_for_email: false, require_mfa: false });
    await server.app.accounts.create({ ...VICTIM, name: 'Victim' });
    const client = await registry.createClient({ name: 'Example Notes', grants: ['authorization_code'], redirectUris: [redirectUri], scope: 'openid email profile', firstParty: true }, async () => {});
    rp = await oc.discovery(new URL(server.issuer), client.clientId, undefined, oc.ClientSecretBasic(client.secret), { execute: [oc.allowInsecureRequests] });
    browser = await launchBrowser();
    context = await newContext(browser);
    problems = watchProblems(context);
    page = await context.newPage();
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await company?.close();
    await partner?.close();
    await fakeApp?.close();
    await redis?.dispose();
  });

  /** The app sends this browser to Latchkey's sign-in page; the checks redeem its code. */
  async function startAtApp(at: Page, extra: Record<string, string> = {}) {
    const checks = { pkceCodeVerifier: oc.randomPKCECodeVerifier(), expectedState: oc.randomState(), expectedNonce: oc.randomNonce() };
    const url = oc.buildAuthorizationUrl(rp, {
      redirect_uri: redirectUri, scope: 'openid email profile', state: checks.expectedState, nonce: checks.expectedNonce,
      code_challenge: await oc.calculatePKCECodeChallenge(checks.pkceCodeVerifier), code_challenge_method: 'S256', ...extra,
    });
    await at.goto(url.href);
    return checks;
  }

  test("app → Latchkey → the company's provider → back: the code's ID token carries Latchkey's sub", async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    company.as('emp-42', { email: 'ada@acme.test', email_verified: true, name: 'Ada Lovelace' });
    const checks = await startAtApp(page);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Sign in');
    const acme = page.getByRole('link', { name: 'Continue with Acme' });
    assert.ok(await acme.isVisible());
    assert.ok(await page.getByRole('link', { name: 'Continue with GitHub' }).isVisible());
    await page.screenshot({ path: new URL('signin-providers.png', SCREENSHOTS).pathname });

    await submit(page, acme);
    await page.waitForURL((u) => u.href.startsWith(redirectUri));
    const tokens = await oc.authorizationCodeGrant(rp, new URL(page.url()), { ...checks, idTokenExpected: true });
    const account = (await server.app.accounts.findByEmail('ada@acme.test'))!;
    const claims = tokens.claims()!;
    assert.equal(claims.sub, account.id);
    assert.notEqual(claims.sub, 'emp-42');
    assert.equal(claims.idp, 'acme');
    assert.equal(claims.email, 'ada@acme.test');
    assert.deepEqual(problems, []);
  });

  test('the account page lists the linked provider and offers the others', async () => {
    await page.goto(`${server.issuer}/account/providers`);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Sign-in providers');
    assert.equal(await page.getByRole('heading', { level: 3 }).innerText(), 'Acme');
    assert.ok(await page.getByRole('button', { name: 'Link GitHub' }).isVisible());
    await page.screenshot({ path: new URL('account-providers.png', SCREENSHOTS).pathname, fullPage: true });
    assert.deepEqual(problems, []);
  });

  test("the takeover test: an upstream account claiming the victim's address gets a page, and the app never a code for the victim", async () => {
    const victim = (await server.app.accounts.findByEmail(VICTIM.email))!;
    // The attacker's own browser: nobody is signed in to Latchkey there.
    const attacker = await newContext(browser);
    const seen = watchProblems(attacker);
    const atApp: string[] = [];
    attacker.on('request', (r) => {
      if (r.url().startsWith(redirectUri)) atApp.push(r.url());
    });
    const tab = await attacker.newPage();
    const refusedWith = async (button: string) => {
      await submit(tab, tab.getByRole('link', { name: button }));
      assert.equal(new URL(tab.url()).origin, server.issuer, 'still at Latchkey, not back at the app');
      assert.equal(await tab.getByRole('heading', { level: 1 }).innerText(), 'Sign-in did not complete');
      return tab.getByRole('alert').innerText();
    };

    // (a) The company's provider, trusted for addresses, but the address is not verified there.
    company.as('mallory-1', { email: VICTIM.email, email_verified: false, name: 'Mallory' });
    await startAtApp(tab);
    assert.equal(await refusedWith('Continue with Acme'), 'An account with the address victim@acme.test already exists. Sign in to it the usual way, then link Acme from your account page (/account).');
    await tab.screenshot({ path: new URL('upstream-account-exists.png', SCREENSHOTS).pathname });
    // Its way back is the same sign-in, where nobody is signed in.
    await submit(tab, tab.getByRole('link', { name: 'Back to the sign-in page' }));
    assert.equal(await tab.getByRole('heading', { level: 1 }).innerText(), 'Sign in');

    // (b) Verified, by a provider the operator does not trust for addresses.
    partner.as('mallory-2', { email: VICTIM.email, email_verified: true, name: 'Mallory' });
    await startAtApp(tab, { upstream: 'partner' });
    assert.equal(await refusedWith('Continue with Partner'), 'An account with the address victim@acme.test already exists. Sign in to it the usual way, then link Partner from your account page (/account).');

    // No code reached the app, no session and no link exist for the victim, and this browser is signed in nowhere here.
    assert.deepEqual(atApp, []);
    assert.deepEqual((await server.app.ops.userSessions(victim.id)).sessions, []);
    assert.deepEqual((await server.app.ops.userUpstreams(victim.id)).identities, []);
    await tab.goto(`${server.issuer}/account`);
    assert.equal(await tab.getByRole('heading', { level: 1 }).innerText(), 'Sign in', '/account asks who they are');
    assert.ok(server.logs.filter((l) => l.event === 'upstream_signin_failed' && l.reason === 'account_exists_unlinked').length >= 2);
    assert.deepEqual(seen, []);
    await attacker.close();
  });

  test('a verified address from a provider trusted for addresses: linked only after the person confirms with a factor of that account', async () => {
    const victim = (await server.app.accounts.findByEmail(VICTIM.email))!;
    const own = await newContext(browser);
    const seen = watchProblems(own);
    const tab = await own.newPage();
    company.as('victim-at-acme', { email: VICTIM.email, email_verified: true, name: 'Victim' });
    const checks = await startAtApp(tab);
    await submit(tab, tab.getByRole('link', { name: 'Continue with Acme' }));

    // Asked first: the account's password (or its other factors), nothing linked or issued yet.
    assert.equal(await tab.getByRole('heading', { level: 1 }).innerText(), 'Link Acme');
    assert.match(await tab.locator('p.lead').innerText(), /An account with the address victim@acme\.test exists here\. To sign in to it with Acme from now on, prove it is yours once\./);
    const password = tab.getByLabel('Password of this account');
    assert.equal(await password.getAttribute('autocomplete'), 'current-password');
    assert.deepEqual((await server.app.ops.userUpstreams(victim.id)).identities, []);
    assert.deepEqual((await server.app.ops.userSessions(victim.id)).sessions, []);
    await tab.screenshot({ path: new URL('upstream-link.png', SCREENSHOTS).pathname });

    await password.fill('not the password');
    await submit(tab, tab.getByRole('button', { name: 'Link and sign in' }));
    assert.equal(await tab.getByRole('alert').innerText(), 'Wrong email or password.');
    assert.deepEqual((await server.app.ops.userUpstreams(victim.id)).identities, [], 'a wrong password links nothing');

    await tab.getByLabel('Password of this account').fill(VICTIM.password);
    await submit(tab, tab.getByRole('button', { name: 'Link and sign in' }));
    await tab.waitForURL((u) => u.href.startsWith(redirectUri));
    const claims = (await oc.authorizationCodeGrant(rp, new URL(tab.url()), { ...checks, idTokenExpected: true })).claims()!;
    assert.equal(claims.sub, victim.id);
    assert.equal(claims.idp, 'acme');
    assert.deepEqual((await server.app.ops.userUpstreams(victim.id)).identities.map((i) => [i.provider, i.sub, i.via]), [['acme', 'victim-at-acme', 'signin']]);
    assert.deepEqual(seen, []);
    await own.close();
  });
});
