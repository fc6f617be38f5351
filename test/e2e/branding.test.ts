import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { AxeBuilder } from '@axe-core/playwright';
import type { Browser } from 'playwright-core';
import { SCREENSHOTS, launchBrowser, newContext, watchProblems } from '../helpers/browser.ts';
import { pkcePair } from '../helpers/flow.ts';
import { startServer, type TestServer } from '../helpers/server.ts';

/**
 * A branded sign-in page in Chromium: the product name, a light accent (dark text on its buttons) and
 * the app's registered https logo, loaded under the page's own CSP. Screenshot:
 * docs/screenshots/signin-branded.png.
 */
// A 1×1 PNG: the app's logo, answered by the browser's routing (the test machine has no network).
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNgqPr/HwAEhAJSlhEwKgAAAABJRU5ErkJggg==', 'base64');

describe('a branded sign-in page in a browser', () => {
  let server: TestServer;
  let browser: Browser;
  let clientId: string;
  const redirectUri = 'http://127.0.0.1:9/cb';

  before(async () => {
    server = await startServer({ env: { BRAND_NAME: 'Acme Accounts', BRAND_ACCENT: '#f2b705' } });
    clientId = (await server.app.registry.createClient(
      { name: 'Acme Notes', grants: ['authorization_code'], redirectUris: [redirectUri], scope: 'openid email', logoUri: 'https://notes.example/logo.png' },
      async () => {},
    )).clientId;
    browser = await launchBrowser();
    mkdirSync(SCREENSHOTS, { recursive: true });
  });
  after(async () => {
    await browser?.close();
    await server?.close();
  });

  test('"Sign in to continue to Acme Notes" with its logo, the accent readable, axe-clean', async () => {
    const context = await newContext(browser);
    const problems = watchProblems(context);
    let logoRequests = 0;
    await context.route('https://notes.example/logo.png', (route) => {
      logoRequests += 1;
      return route.fulfill({ status: 200, contentType: 'image/png', body: PNG });
    });
    const page = await context.newPage();
    const url = new URL('/auth', server.issuer);
    url.search = new URLSearchParams({ client_id: clientId, response_type: 'code', redirect_uri: redirectUri, scope: 'openid email', code_challenge: pkcePair().challenge, code_challenge_method: 'S256' }).toString();
    await page.goto(url.href);
    assert.equal(await page.title(), 'Sign in · Acme Accounts');
    assert.equal(await page.locator('.brand').innerText(), 'Acme Accounts');
    assert.match(await page.locator('.lead').innerText(), /to continue to Acme Notes/);
    // Loaded, not blocked by the CSP: the browser drew it at its size.
    const logo = page.locator('img.client-logo');
    assert.equal(await logo.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth), 1);
    assert.equal(logoRequests, 1);
    const button = page.getByRole('button', { name: 'Sign in', exact: true });
    assert.equal(await button.evaluate((b) => getComputedStyle(b).backgroundColor), 'rgb(242, 183, 5)');
    assert.equal(await button.evaluate((b) => getComputedStyle(b).color), 'rgb(27, 27, 31)', 'dark text on the light accent');
    const { violations } = await new AxeBuilder({ page }).analyze();
    assert.deepEqual(violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`), []);
    await page.screenshot({ path: new URL('signin-branded.png', SCREENSHOTS).pathname, fullPage: true });
    assert.deepEqual(problems, []);
    await context.close();
  });
});
