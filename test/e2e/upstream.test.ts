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
 * Latchkey's account, not the company's subject.
 */
describe('sign-in through an upstream provider, in a browser', () => {
  let redis: TestRedis;
  let server: TestServer;
  let company: Awaited<ReturnType<typeof startCompanyProvider>>;
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
    server = await startServer({ redisUrl: redis.url, port });
    fakeApp = await startFakeApp();
    redirectUri = `${fakeApp.origin}/cb`;
    const { ops, registry } = server.app;
    await ops.addProvider({ kind: 'cli' }, { id: 'acme', preset: 'oidc', name: 'Acme', issuer: company.issuer, client_id: 'latchkey', client_secret: 'company-secret', create_accounts: true, allowed_domains: ['acme.test'], trusted_for_email: true, require_mfa: false });
    await ops.addProvider({ kind: 'cli' }, { id: 'gh', preset: 'github', client_id: 'gh', client_secret: 'gh-secret' });
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
    await fakeApp?.close();
    await redis?.dispose();
  });

  test("app → Latchkey → the company's provider → back: the code's ID token carries Latchkey's sub", async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    company.as('emp-42', { email: 'ada@acme.test', email_verified: true, name: 'Ada Lovelace' });
    const checks = { pkceCodeVerifier: oc.randomPKCECodeVerifier(), expectedState: oc.randomState(), expectedNonce: oc.randomNonce() };
    const url = oc.buildAuthorizationUrl(rp, {
      redirect_uri: redirectUri, scope: 'openid email profile', state: checks.expectedState, nonce: checks.expectedNonce,
      code_challenge: await oc.calculatePKCECodeChallenge(checks.pkceCodeVerifier), code_challenge_method: 'S256',
    });
    await page.goto(url.href);
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
});
