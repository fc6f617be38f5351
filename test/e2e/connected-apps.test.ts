import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { SCREENSHOTS, authorize, launchBrowser, newContext, startFakeApp, submit, watchProblems } from '../helpers/browser.ts';
import { pkcePair } from '../helpers/flow.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { enrollTotp } from '../helpers/world.ts';

/**
 * The Connected apps section of /account in Chromium: two apps the person allowed, listed with what
 * they may do; "Remove access" on one leaves the other, and the removed app asks for consent again.
 */
const EMAIL = 'lin@example.org';
const PASSWORD = 'correct horse battery staple';
const DAY = new Date().toISOString().slice(0, 10);

describe('connected apps in a browser', () => {
  let redis: TestRedis;
  let server: TestServer;
  let browser: Browser;
  let fakeApp: Awaited<ReturnType<typeof startFakeApp>>;
  let redirectUri: string;
  const apps: Record<string, string> = {};

  before(async () => {
    redis = await startRedis();
    server = await startServer({ redisUrl: redis.url });
    fakeApp = await startFakeApp();
    redirectUri = `${fakeApp.origin}/cb`;
    await server.app.registry.createResource({ uri: 'https://photos.example', scope: 'photos:read' });
    const register = async (name: string, scope: string) =>
      (apps[name] = (await server.app.registry.createClient({ name, grants: ['authorization_code', 'refresh_token'], redirectUris: [redirectUri], scope }, async () => {})).clientId);
    await register('Example Notes', 'openid profile email offline_access');
    await register('Photo Printer', 'openid email photos:read');
    const account = await server.app.accounts.create({ email: EMAIL, name: 'Lin', password: PASSWORD });
    await enrollTotp(server, account);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await fakeApp?.close();
    await redis?.dispose();
  });

  function authorizationUrl(app: string, scope: string): URL {
    return new URL(`/auth?${new URLSearchParams({ client_id: apps[app]!, redirect_uri: redirectUri, response_type: 'code', scope, code_challenge: pkcePair().challenge, code_challenge_method: 'S256' })}`, server.issuer);
  }

  test('lists the apps with what they may do; Remove access takes one away and it asks for consent again', async () => {
    const context = await newContext(browser);
    const problems = watchProblems(context);
    const page: Page = await context.newPage();
    const consents: string[] = [];
    const onConsent = async (p: Page) => void consents.push(await p.locator('main').innerText());
    await authorize(page, authorizationUrl('Example Notes', 'openid profile email offline_access'), { redirectUri, email: EMAIL, password: PASSWORD, onConsent });
    await authorize(page, authorizationUrl('Photo Printer', 'openid email photos:read'), { redirectUri, onConsent });
    assert.equal(consents.length, 2);

    await page.goto(new URL('/account', server.issuer).href);
    const section = page.locator('#connected-apps');
    assert.equal(await section.getByRole('heading', { level: 2 }).innerText(), 'Connected apps');
    assert.deepEqual(await section.getByRole('heading', { level: 3 }).allInnerTexts(), ['Example Notes', 'Photo Printer']);
    const printer = section.locator('.app', { hasText: 'Photo Printer' });
    assert.deepEqual(await printer.locator('li').allInnerTexts(), ['Know who you are', 'See your email address', 'Use the API with permission “photos:read”']);
    assert.match(await printer.innerText(), new RegExp(`Access granted ${DAY}, last used ${DAY}\\.`));
    mkdirSync(SCREENSHOTS, { recursive: true });
    await section.screenshot({ path: new URL('connected-apps.png', SCREENSHOTS).pathname });

    await submit(page, section.getByRole('button', { name: 'Remove access of Photo Printer' }));
    assert.match(await page.getByRole('status').innerText(), /Photo Printer no longer has access to your account/);
    assert.deepEqual(await page.locator('#connected-apps').getByRole('heading', { level: 3 }).allInnerTexts(), ['Example Notes']);

    await authorize(page, authorizationUrl('Photo Printer', 'openid email photos:read'), { redirectUri, onConsent });
    assert.equal(consents.length, 3, 'Photo Printer asked for consent again');
    assert.match(consents[2]!, /Photo Printer asks to:/);
    await authorize(page, authorizationUrl('Example Notes', 'openid profile email offline_access'), { redirectUri, onConsent });
    assert.equal(consents.length, 3, 'Example Notes did not');
    assert.deepEqual(problems, []);
    await context.close();
  });
});
