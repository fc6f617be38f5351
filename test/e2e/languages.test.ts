import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { AxeBuilder } from '@axe-core/playwright';
import * as oc from 'openid-client';
import type { Browser, Page } from 'playwright-core';
import { SCREENSHOTS, currentStep, fillCode, launchBrowser, newContext, startFakeApp, submit, watchProblems } from '../helpers/browser.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { nextTotpCode } from '../helpers/totp.ts';
import { enrollTotp } from '../helpers/world.ts';
import { device } from '../helpers/device.ts';

/**
 * A German-speaking person in Chromium, sent by an openid-client app with `ui_locales=de`: the sign-in,
 * second-factor and consent pages are German (`<html lang="de">`, labels and buttons found by their German
 * names), axe-clean, and photographed (docs/screenshots/*-de.png, the sign-in page at a phone's width too);
 * the account page afterwards follows the language the app chose, its dates in German (docs/screenshots/account-de.png).
 * Then the language switch's cookie: a device connected in German (docs/screenshots/device-de.png,
 * device-consent-de.png) and an emailed-link page, axe-clean in the light and the dark scheme.
 */
const EMAIL = 'lena@example.de';
const PASSWORD = 'richtiges Pferd Batterie Heftklammer';

describe('pages in German for ui_locales=de, in Chromium', () => {
  let redis: TestRedis;
  let server: TestServer;
  let browser: Browser;
  let rp: oc.Configuration;
  let redirectUri: string;
  let fakeApp: Awaited<ReturnType<typeof startFakeApp>>;
  let totpSecret: string;
  let deviceClientId: string;

  before(async () => {
    redis = await startRedis();
    server = await startServer({ redisUrl: redis.url });
    fakeApp = await startFakeApp();
    redirectUri = `${fakeApp.origin}/cb`;
    // A third-party app, so the consent page shows.
    const client = await server.app.registry.createClient(
      { name: 'Beispiel Notizen', grants: ['authorization_code'], redirectUris: [redirectUri], scope: 'openid email' },
      async () => {},
    );
    deviceClientId = (await server.app.registry.createClient({ name: 'Beispiel Fernseher', grants: ['urn:ietf:params:oauth:grant-type:device_code'], scope: 'openid email', public: true }, async () => {})).clientId;
    const account = await server.app.accounts.create({ email: EMAIL, name: 'Lena', password: PASSWORD });
    ({ totpSecret } = await enrollTotp(server, account));
    rp = await oc.discovery(new URL(server.issuer), client.clientId, undefined, oc.ClientSecretBasic(client.secret), { execute: [oc.allowInsecureRequests] });
    browser = await launchBrowser();
    mkdirSync(SCREENSHOTS, { recursive: true });
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await fakeApp?.close();
    await redis?.dispose();
  });

  /** No serious or critical accessibility violation. */
  async function axe(page: Page, what: string) {
    const { violations } = await new AxeBuilder({ page }).analyze();
    const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    assert.deepEqual(bad.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`), [], `axe on ${what}`);
  }

  async function german(page: Page, heading: string, what: string) {
    assert.equal(await page.locator('html').getAttribute('lang'), 'de', `<html lang="de"> on ${what}`);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), heading, `the heading of ${what}`);
    await axe(page, what);
  }

  test('sign-in, second factor and consent in German; the account page follows, its dates German too', async () => {
    const context = await newContext(browser);
    const problems = watchProblems(context);
    const page = await context.newPage();
    try {
      const verifier = oc.randomPKCECodeVerifier();
      const state = oc.randomState();
      const url = oc.buildAuthorizationUrl(rp, {
        redirect_uri: redirectUri,
        scope: 'openid email',
        code_challenge: await oc.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
        state,
        ui_locales: 'de',
      });
      await page.goto(url.href);

      assert.equal(await currentStep(page, redirectUri), 'login');
      await german(page, 'Anmelden', 'the sign-in page');
      assert.match(await page.locator('main').innerText(), /um mit Beispiel Notizen fortzufahren/);
      await page.screenshot({ path: new URL('signin-de.png', SCREENSHOTS).pathname, fullPage: true });
      await page.setViewportSize({ width: 375, height: 740 });
      await axe(page, 'the sign-in page at a phone’s width');
      await page.screenshot({ path: new URL('signin-de-mobile.png', SCREENSHOTS).pathname, fullPage: true });
      await page.setViewportSize({ width: 800, height: 700 });
      await page.getByLabel('E-Mail').fill(EMAIL);
      await page.getByLabel('Passwort', { exact: true }).fill(PASSWORD);
      await submit(page, page.getByRole('button', { name: 'Anmelden', exact: true }));

      assert.equal(await currentStep(page, redirectUri), 'mfa');
      await german(page, 'Bestätigung in zwei Schritten', 'the second-factor page');
      assert.ok(await page.getByRole('link', { name: 'Wiederherstellungscode verwenden' }).isVisible());
      await page.screenshot({ path: new URL('second-factor-de.png', SCREENSHOTS).pathname, fullPage: true });
      assert.ok(await page.getByLabel('Bestätigungscode').isVisible());
      await fillCode(page, await nextTotpCode(server.issuer, totpSecret));
      await submit(page, page.getByRole('button', { name: 'Bestätigen' }));

      assert.equal(await currentStep(page, redirectUri), 'consent');
      await german(page, 'Zugriff erlauben?', 'the consent page');
      assert.match(await page.locator('main').innerText(), /Beispiel Notizen möchte:/);
      assert.ok(await page.getByRole('button', { name: 'Ablehnen' }).isVisible());
      await page.screenshot({ path: new URL('consent-de.png', SCREENSHOTS).pathname, fullPage: true });
      await submit(page, page.getByRole('button', { name: 'Erlauben' }));

      assert.equal(await currentStep(page, redirectUri), 'callback', `at the app: ${page.url()}`);
      const tokens = await oc.authorizationCodeGrant(rp, new URL(page.url()), { pkceCodeVerifier: verifier, expectedState: state, idTokenExpected: true });
      assert.equal(tokens.claims()!.email, EMAIL);

      // The language the app chose stays this browser's: the account page, its dates in German words.
      await page.goto(new URL('/account', server.issuer).href);
      assert.equal(new URL(page.url()).pathname, '/account');
      await german(page, 'Ihr Konto', 'the account page');
      const month = new Intl.DateTimeFormat('de', { month: 'long', timeZone: 'UTC' }).format(Date.now());
      assert.match(await page.locator('#security').innerText(), new RegExp(`Eingeschaltet seit \\d{1,2}\\. ${month} \\d{4}\\.`));
      assert.match(await page.locator('#sessions').innerText(), new RegExp(`dieser Browser[\\s\\S]*angemeldet \\d{1,2}\\. ${month} \\d{4} um \\d\\d:\\d\\d UTC`));
      assert.ok(await page.getByRole('link', { name: 'Überall abmelden …' }).isVisible());
      await page.screenshot({ path: new URL('account-de.png', SCREENSHOTS).pathname, fullPage: true });

      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  test('by the switch’s cookie: a device connected in German, and an emailed-link page, axe-clean in the dark scheme too', async () => {
    const started = await device(server.issuer, { clientId: deviceClientId }).start('openid email');
    const context = await newContext(browser);
    const problems = watchProblems(context);
    const page = await context.newPage();
    try {
      // The switch on an English page, as a person would use it.
      await page.goto(new URL('/device', server.issuer).href);
      assert.equal(await page.locator('html').getAttribute('lang'), 'en');
      await page.getByRole('navigation', { name: 'Language' }).getByRole('link', { name: 'Deutsch' }).click();
      await page.waitForURL((u) => u.pathname === '/device');
      await german(page, 'Gerät verbinden', 'the device code page');
      await page.emulateMedia({ colorScheme: 'dark' });
      await axe(page, 'the device code page in the dark scheme');
      await page.emulateMedia({ colorScheme: 'light' });
      await page.screenshot({ path: new URL('device-de.png', SCREENSHOTS).pathname, fullPage: true });
      await page.getByLabel('Code von Ihrem Gerät').fill('BCDF-BCDF');
      await submit(page, page.getByRole('button', { name: 'Weiter' }));
      assert.equal(await page.getByRole('alert').innerText(), 'Dieser Code stimmt nicht. Prüfen Sie den Code auf Ihrem Gerät und geben Sie ihn noch einmal ein.');
      await page.getByLabel('Code von Ihrem Gerät').fill(started.user_code);
      await submit(page, page.getByRole('button', { name: 'Weiter' }));

      await german(page, 'Anmelden', 'the sign-in page for the device');
      await page.getByLabel('E-Mail').fill(EMAIL);
      await page.getByLabel('Passwort', { exact: true }).fill(PASSWORD);
      await submit(page, page.getByRole('button', { name: 'Anmelden', exact: true }));
      if ((await page.getByRole('heading', { level: 1 }).innerText()) === 'Bestätigung in zwei Schritten') {
        await fillCode(page, await nextTotpCode(server.issuer, totpSecret));
        await submit(page, page.getByRole('button', { name: 'Bestätigen' }));
      }

      await german(page, 'Dieses Gerät zulassen?', 'the device consent page');
      const consent = await page.locator('main').innerText();
      assert.match(consent, /Beispiel Fernseher auf einem Gerät möchte:/);
      assert.match(consent, /Angemeldet als lena@example\.de\./);
      assert.equal(await page.getByRole('rowheader', { name: 'Gerät', exact: true }).count(), 1);
      await page.emulateMedia({ colorScheme: 'dark' });
      await axe(page, 'the device consent page in the dark scheme');
      await page.emulateMedia({ colorScheme: 'light' });
      await page.screenshot({ path: new URL('device-consent-de.png', SCREENSHOTS).pathname, fullPage: true });
      await submit(page, page.getByRole('button', { name: 'Erlauben' }));
      await german(page, 'Gerät verbunden', 'the device done page');
      assert.match(await page.locator('main').innerText(), /Beispiel Fernseher ist auf Ihrem Gerät angemeldet\./);

      // An emailed link that no longer works: the link pages speak the switch's language too.
      await page.goto(new URL('/password/reset?token=abgelaufen', server.issuer).href);
      await german(page, 'Link abgelaufen', 'an expired link’s page');
      assert.equal(await page.getByRole('alert').innerText(), 'Dieser Link ist abgelaufen oder wurde schon verwendet.');
      assert.ok(await page.getByRole('link', { name: 'Neuen Link senden' }).isVisible());
      await page.emulateMedia({ colorScheme: 'dark' });
      await axe(page, 'an expired link’s page in the dark scheme');
      assert.deepEqual(problems.filter((p) => !/status of 400/.test(p)), []);
    } finally {
      await context.close();
    }
  });
});
