import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { AxeBuilder } from '@axe-core/playwright';
import * as oc from 'openid-client';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { SCREENSHOTS, authorize, fillCode, fillLogin, launchBrowser, newContext, startFakeApp, submit, watchProblems } from '../helpers/browser.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { eventually } from '../helpers/eventually.ts';
import { nextTotpCode } from '../helpers/totp.ts';
import { enrollTotp } from '../helpers/world.ts';

/**
 * The account page in Chromium, with openid-client as the app: a person confirms who they are once
 * (sudo mode) and then changes the password, adds and renames a passkey (DevTools' virtual
 * authenticator) and makes new recovery codes without typing the password or a code again; sudo mode
 * ends on the server's clock; a removed passkey is announced to the device through the WebAuthn
 * Signal API (the page's calls are recorded, and the virtual authenticator drops the passkey); one of two sessions is ended and only that browser is signed out (its `prompt=none`
 * answers `login_required`). Axe on the page, screenshots at desktop and phone widths.
 */
const PASSWORD = 'correct horse battery staple';

describe('the account page in Chromium', () => {
  let redis: TestRedis;
  let server: TestServer;
  let browser: Browser;
  let fakeApp: Awaited<ReturnType<typeof startFakeApp>>;
  let redirectUri: string;
  let rp: oc.Configuration;
  /** How far the server's clock is ahead (sudo mode's end). */
  let ahead = 0;

  before(async () => {
    redis = await startRedis();
    server = await startServer({ redisUrl: redis.url, clock: () => Date.now() + ahead });
    fakeApp = await startFakeApp();
    redirectUri = `${fakeApp.origin}/cb`;
    const client = await server.app.registry.createClient(
      { name: 'Example Notes', grants: ['authorization_code'], redirectUris: [redirectUri], scope: 'openid email', firstParty: true },
      async () => {},
    );
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

  async function person(name: string) {
    const email = `${name}@example.org`;
    const account = await server.app.accounts.create({ email, name: name[0]!.toUpperCase() + name.slice(1), password: PASSWORD });
    const { totpSecret } = await enrollTotp(server, account);
    return { id: account.id, email, totpSecret };
  }

  /**
   * A browser whose device is a virtual platform authenticator, and whose pages record the Signal API
   * calls they make (the browser's own functions still run).
   */
  async function device(): Promise<{ context: BrowserContext; page: Page; credentials: () => Promise<string[]> }> {
    const context = await newContext(browser);
    await context.addInitScript(() => {
      const calls: unknown[] = [];
      (window as unknown as { signals: unknown[] }).signals = calls;
      const credential = window.PublicKeyCredential as unknown as Record<string, unknown> | undefined;
      for (const name of ['signalAllAcceptedCredentials', 'signalCurrentUserDetails']) {
        const original = credential?.[name];
        if (typeof original !== 'function') continue;
        credential![name] = function (this: unknown, options: unknown) {
          calls.push({ name, options });
          return (original as (o: unknown) => Promise<void>).call(this, options);
        };
      }
    });
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('WebAuthn.enable', { enableUI: false });
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
    });
    const credentials = async () => (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials.map((c) => Buffer.from(c.credentialId, 'base64').toString('base64url'));
    return { context, page, credentials };
  }

  async function signInToAccount(page: Page, who: { email: string; totpSecret: string }) {
    await page.goto(new URL('/account', server.issuer).href);
    await fillLogin(page, who.email, PASSWORD);
    await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    await fillCode(page, await nextTotpCode(server.issuer, who.totpSecret));
    await submit(page, page.getByRole('button', { name: 'Verify' }));
    assert.equal(new URL(page.url()).pathname, '/account');
  }

  /** No serious or critical accessibility violation. */
  async function axe(page: Page, what: string) {
    const { violations } = await new AxeBuilder({ page }).analyze();
    const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    assert.deepEqual(bad.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`), [], `axe on ${what}`);
  }

  type Signal = { name: string; options: { rpId: string; userId: string; allAcceptedCredentialIds?: string[]; name?: string; displayName?: string } };
  const signals = (page: Page) => page.evaluate(() => (window as unknown as { signals: unknown[] }).signals) as Promise<Signal[]>;

  test('confirmed once, a person changes the password, adds and renames a passkey and makes new recovery codes; removing the passkey tells the device; sudo mode ends on the clock', async () => {
    const who = await person('robin');
    const { context, page, credentials } = await device();
    const problems = watchProblems(context);
    try {
      await signInToAccount(page, who);
      await axe(page, 'the account page');
      await page.screenshot({ path: new URL('account.png', SCREENSHOTS).pathname, fullPage: true });
      assert.equal(await page.getByRole('button', { name: 'Change password' }).count(), 0, 'no change before the proof');

      await page.getByText('Confirm it’s you to make changes').click();
      const confirm = page.locator('form[action="/account/sudo"]');
      await confirm.getByLabel('Current password').fill(PASSWORD);
      await confirm.getByLabel('Authentication code').fill(await nextTotpCode(server.issuer, who.totpSecret));
      await submit(page, confirm.getByRole('button', { name: 'Confirm' }));
      assert.match(await page.getByRole('status').innerText(), /for the next 5 minutes you can change how you sign in/);
      assert.match(await page.locator('[data-sudo]').innerText(), /you can change these until \d{4}-\d\d-\d\d \d\d:\d\d UTC/);

      // The password: no current password, no code.
      await page.getByText('Change your password').click();
      await page.getByLabel('New password').fill('a brand new passphrase');
      await submit(page, page.getByRole('button', { name: 'Change password' }));
      assert.match(await page.getByRole('status').innerText(), /Your password was changed/);
      assert.ok(await server.app.accounts.authenticate(who.email, 'a brand new passphrase'));

      // A passkey, added and renamed.
      await page.getByRole('link', { name: 'Add a passkey' }).click();
      await page.getByLabel('Name this passkey (optional)').fill('Robin’s laptop');
      await submit(page, page.getByRole('button', { name: 'Create a passkey' }));
      assert.match(await page.getByRole('status').innerText(), /Your passkey “Robin’s laptop” was added/);
      const [credentialId] = (await server.app.accounts.find(who.id))!.passkeys!.map((p) => p.id);
      await page.getByText('Rename or remove “Robin’s laptop”').click();
      await page.getByLabel('New name').fill('Work laptop');
      await submit(page, page.getByRole('button', { name: 'Rename' }));
      assert.match(await page.getByRole('status').innerText(), /Renamed to “Work laptop”/);
      // Every load tells the device what still counts, and under which name.
      const userId = Buffer.from(who.id).toString('base64url');
      assert.deepEqual((await signals(page)).map((s) => [s.name, s.options]), [
        ['signalAllAcceptedCredentials', { rpId: 'localhost', userId, allAcceptedCredentialIds: [credentialId] }],
        ['signalCurrentUserDetails', { rpId: 'localhost', userId, name: who.email, displayName: 'Robin' }],
      ]);

      // New recovery codes: download, copy, print, and "saved".
      await submit(page, page.getByRole('button', { name: 'Make new recovery codes' }));
      const codes = (await page.getByRole('list', { name: 'Recovery codes' }).locator('code').allInnerTexts()).map((c) => c.trim());
      assert.equal(codes.length, 10);
      await axe(page, 'the recovery codes');
      const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Download (.txt)' }).click()]);
      assert.equal(download.suggestedFilename(), 'recovery-codes.txt');
      const text = readFileSync(await download.path(), 'utf8');
      for (const code of codes) assert.ok(text.includes(code), 'the file holds every code');
      await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(server.issuer).origin });
      await page.getByRole('button', { name: 'Copy' }).click();
      await page.getByRole('button', { name: 'Copied' }).waitFor();
      assert.equal(await page.evaluate(() => navigator.clipboard.readText()), codes.join('\n'));
      assert.ok(await page.getByRole('button', { name: 'Print' }).isVisible());
      await page.screenshot({ path: new URL('account-recovery-codes.png', SCREENSHOTS).pathname, fullPage: true });
      await page.getByLabel('I saved these codes somewhere safe').check();
      await submit(page, page.getByRole('button', { name: 'I have saved them' }));
      assert.match(await page.getByRole('status').innerText(), /Your recovery codes are saved/);
      assert.deepEqual(server.logs.filter((l) => l.event === 'account_sudo_started' && l.accountId === who.id).length, 1, 'proved once for all of it');

      // Removing the passkey (not the last factor: the app stays) and the device is told at once.
      assert.deepEqual(await credentials(), [credentialId], 'the device holds the passkey');
      await page.getByText('Rename or remove “Work laptop”').click();
      await submit(page, page.getByRole('button', { name: 'Remove this passkey' }));
      assert.match(await page.getByRole('status').innerText(), /The passkey “Work laptop” was removed/);
      assert.equal((await server.app.accounts.find(who.id))!.passkeys?.length ?? 0, 0);
      assert.deepEqual((await signals(page)).find((s) => s.name === 'signalAllAcceptedCredentials')?.options, { rpId: 'localhost', userId, allAcceptedCredentialIds: [] });
      // Chromium's virtual authenticator acts on the signal: the passkey is gone from the device too.
      await eventually(async () => (await credentials()).length === 0, 'the device forgot the removed passkey');

      // Five minutes later (the server's clock), the forms are gone and a change is refused.
      ahead = 301_000;
      await page.goto(new URL('/account', server.issuer).href);
      assert.equal(await page.getByRole('button', { name: 'Change password' }).count(), 0);
      assert.ok(await page.getByText('Confirm it’s you to make changes').isVisible());
      assert.deepEqual(problems, []);
    } finally {
      ahead = 0;
      await context.close();
    }
  });

  test('ends one of two sessions: only that browser is signed out (prompt=none answers login_required); at a phone’s width', async () => {
    const who = await person('sasha');
    const here = await newContext(browser);
    const there = await newContext(browser);
    const problems = watchProblems(here);
    try {
      const hereTab = await here.newPage();
      const thereTab = await there.newPage();
      /** A silent authorization in `tab`: the callback's code, or the error openid-client reads from it. */
      const silently = async (tab: Page) => {
        const verifier = oc.randomPKCECodeVerifier();
        const state = oc.randomState();
        const url = oc.buildAuthorizationUrl(rp, { redirect_uri: redirectUri, scope: 'openid email', prompt: 'none', state, code_challenge: await oc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
        await tab.goto(url.href);
        try {
          await oc.authorizationCodeGrant(rp, new URL(tab.url()), { pkceCodeVerifier: verifier, expectedState: state });
          return 'signed in';
        } catch (err) {
          if (err instanceof oc.AuthorizationResponseError) return err.error;
          throw err;
        }
      };
      for (const tab of [hereTab, thereTab]) {
        const verifier = oc.randomPKCECodeVerifier();
        const url = oc.buildAuthorizationUrl(rp, { redirect_uri: redirectUri, scope: 'openid email', code_challenge: await oc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
        await authorize(tab, url, { redirectUri, email: who.email, password: PASSWORD, totpSecret: who.totpSecret });
      }
      assert.equal(await silently(thereTab), 'signed in');

      await hereTab.setViewportSize({ width: 390, height: 844 });
      await hereTab.goto(new URL('/account#sessions', server.issuer).href);
      const sessions = hereTab.locator('#sessions li.session');
      assert.equal(await sessions.count(), 2);
      const mine = hereTab.locator('#sessions li.session[aria-current="true"]');
      assert.match(await mine.innerText(), /this browser/);
      assert.match(await mine.innerText(), /Chrome Headless \d+ on Linux/);
      assert.match(await mine.innerText(), /(127\.0\.0\.1|::1) · signed in \d{4}-\d\d-\d\d \d\d:\d\d UTC · with password and authenticator app/);
      assert.match(await mine.innerText(), /Apps: Example Notes/);
      await axe(hereTab, 'the account page at a phone’s width');
      assert.ok(await hereTab.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'no sideways scrolling on a phone');
      await hereTab.screenshot({ path: new URL('account-mobile.png', SCREENSHOTS).pathname, fullPage: true });
      await hereTab.setViewportSize({ width: 800, height: 700 });
      await hereTab.locator('#sessions').screenshot({ path: new URL('account-sessions.png', SCREENSHOTS).pathname });

      await submit(hereTab, hereTab.locator('#sessions li.session:not([aria-current])').getByRole('button', { name: /End the session of/ }));
      assert.match(await hereTab.getByRole('status').innerText(), /That session was ended/);
      assert.equal(await hereTab.locator('#sessions li.session').count(), 1);
      assert.equal(await silently(thereTab), 'login_required', 'that browser is signed out');
      assert.equal(await silently(hereTab), 'signed in', 'this one is not');
      assert.deepEqual(problems, []);
    } finally {
      await here.close();
      await there.close();
    }
  });
});
