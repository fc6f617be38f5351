import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import * as oc from 'openid-client';
import type { Browser, BrowserContext, Locator, Page } from 'playwright-core';
import { ACR_MFA } from '../../src/signin/policy.ts';
import { MESSAGES } from '../../src/signin/messages.ts';
import { digest } from '../../src/storage/keys.ts';
import { AxeBuilder } from '@axe-core/playwright';
import { SCREENSHOTS, currentStep, fillLogin, launchBrowser, newContext, startFakeApp, submit, watchProblems } from '../helpers/browser.ts';
import { eventually } from '../helpers/eventually.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer, type TestServer } from '../helpers/server.ts';

/**
 * Passkeys end to end: a real Chromium with DevTools' virtual authenticator (CDP `WebAuthn.*`: ctap2,
 * internal, resident keys, user verification) is the person's device, openid-client v6 the app.
 * Enrolment with a passkey, a passwordless sign-in, the passkey as the second factor, autofill
 * (conditional mediation), an authenticator without user verification, and the account page (rename,
 * remove; a removed passkey no longer signs in). Replays, other interactions' challenges, other
 * origins and the lockout are driven at the protocol level in test/passkey-flow.test.ts.
 *
 * MFA_POLICY=optional with an app registered `--require-mfa`: the first sign-in still enrols, and the
 * account page may remove a person's last passkey.
 */
const EMAIL = 'kim@example.com';
const PASSWORD = 'correct horse battery staple';

describe('passkeys in Chromium, with openid-client', () => {
  let redis: TestRedis;
  let server: TestServer;
  let browser: Browser;
  let rp: oc.Configuration;
  let redirectUri: string;
  let fakeApp: Awaited<ReturnType<typeof startFakeApp>>;
  let context: BrowserContext;
  let page: Page;
  let problems: string[];
  let recoveryCodes: string[] = [];
  /** How many passkeys the person's device holds. */
  let credentials: () => Promise<number>;

  before(async () => {
    redis = await startRedis();
    server = await startServer({ redisUrl: redis.url, env: { MFA_POLICY: 'optional' } });
    fakeApp = await startFakeApp();
    redirectUri = `${fakeApp.origin}/cb`;
    const client = await server.app.registry.createClient(
      { name: 'Example Notes', grants: ['authorization_code'], redirectUris: [redirectUri], scope: 'openid email', firstParty: true, requireMfa: true },
      async () => {},
    );
    await server.app.accounts.create({ email: EMAIL, password: PASSWORD });
    rp = await oc.discovery(new URL(server.issuer), client.clientId, undefined, oc.ClientSecretBasic(client.secret), { execute: [oc.allowInsecureRequests] });
    browser = await launchBrowser();
    ({ context, page, credentials } = await deviceWithPasskeys({ userVerification: true }));
    problems = watchProblems(context);
    await autofill(page, false);
    mkdirSync(SCREENSHOTS, { recursive: true });
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await fakeApp?.close();
    await redis?.dispose();
  });

  /** A browser whose device is a virtual platform authenticator; records how the page asked for credentials. */
  async function deviceWithPasskeys(options: { userVerification: boolean }) {
    const ctx = await newContext(browser);
    // The virtual authenticator answers passkey autofill (a conditional request) at once, so the pages'
    // buttons are tested with autofill switched off in this browser (`autofill(false)`).
    await ctx.addInitScript(() => {
      if (window.location.protocol.startsWith('http') && window.localStorage?.getItem('no-autofill')) PublicKeyCredential.isConditionalMediationAvailable = async () => false;
    });
    const p = await ctx.newPage();
    const cdp = await ctx.newCDPSession(p);
    await cdp.send('WebAuthn.enable', { enableUI: false });
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: {
        protocol: 'ctap2',
        transport: 'internal',
        hasResidentKey: true,
        hasUserVerification: options.userVerification,
        isUserVerified: options.userVerification,
        automaticPresenceSimulation: true,
      },
    });
    const credentials = async () => (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials.length;
    return { context: ctx, page: p, credentials };
  }

  /** Lets (or stops) this browser offer passkeys by autofill on the issuer's pages. */
  async function autofill(on: Page, enabled: boolean) {
    await on.goto(new URL('/healthz', server.issuer).href);
    await on.evaluate((flag) => (flag ? window.localStorage.removeItem('no-autofill') : window.localStorage.setItem('no-autofill', '1')), enabled);
  }

  /** Starts an authorization request in `on`; `finish` exchanges the callback's code and returns the ID token claims. */
  async function authorize(on: Page) {
    const verifier = oc.randomPKCECodeVerifier();
    const state = oc.randomState();
    const nonce = oc.randomNonce();
    const url = oc.buildAuthorizationUrl(rp, {
      redirect_uri: redirectUri,
      scope: 'openid email',
      code_challenge: await oc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    await on.goto(url.href);
    return async () => {
      assert.equal(await currentStep(on, redirectUri), 'callback', `at the app: ${on.url()}`);
      const tokens = await oc.authorizationCodeGrant(rp, new URL(on.url()), { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true });
      return tokens.claims()!;
    };
  }

  /** Clicks a passkey button: the ceremony runs on the virtual authenticator, then the form posts. */
  async function usePasskey(on: Page, name: RegExp | Locator) {
    const button = name instanceof RegExp ? on.getByRole('button', { name }) : name;
    await button.waitFor({ state: 'visible' });
    await submit(on, button);
  }

  test('enrolment with a passkey, then a passwordless sign-in: amr and acr in the ID token', async () => {
    let finish = await authorize(page);
    await fillLogin(page, EMAIL, PASSWORD);
    await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    assert.equal(await currentStep(page, redirectUri), 'enroll');
    await page.getByRole('button', { name: 'Create a passkey' }).waitFor({ state: 'visible' });
    await page.screenshot({ path: new URL('enroll-passkey.png', SCREENSHOTS).pathname, fullPage: true });
    await page.getByLabel('Name this passkey (optional)').fill('Kim’s laptop');
    await usePasskey(page, /create a passkey/i);
    recoveryCodes = (await page.getByRole('list', { name: 'Recovery codes' }).locator('code').allInnerTexts()).map((c) => c.trim());
    assert.equal(recoveryCodes.length, 10, 'recovery codes with the first factor');
    await submit(page, page.getByRole('button', { name: 'I have saved them' }));
    const enrolled = await finish();
    assert.deepEqual(enrolled.amr, ['pwd', 'hwk', 'user', 'mfa']);
    assert.equal(enrolled.acr, ACR_MFA);
    const account = (await server.app.accounts.findByEmail(EMAIL))!;
    assert.deepEqual(account.passkeys?.map((p) => p.name), ['Kim’s laptop']);

    // Signed out (a new session); the passkey alone signs in.
    await context.clearCookies();
    finish = await authorize(page);
    assert.equal(await currentStep(page, redirectUri), 'login');
    assert.equal(await page.getByLabel('Email').getAttribute('autocomplete'), 'username webauthn');
    await page.getByRole('button', { name: 'Sign in with a passkey' }).waitFor({ state: 'visible' });
    await page.screenshot({ path: new URL('login-passkey.png', SCREENSHOTS).pathname, fullPage: true });
    await usePasskey(page, /sign in with a passkey/i);
    const claims = await finish();
    assert.equal(claims.sub, account.id);
    assert.deepEqual(claims.amr, ['hwk', 'user', 'mfa']);
    assert.equal(claims.acr, ACR_MFA);
    // (/healthz, where `autofill` sets its flag, is JSON: the browser's favicon request there 404s.)
    assert.deepEqual(problems.filter((p) => !p.includes('/favicon.ico')), []);
  });

  test('passkey autofill: the sign-in page asks for a conditional request, and the passkey offered signs in', async () => {
    await autofill(page, true);
    try {
      await context.clearCookies();
      const arrived = page.waitForURL((url) => url.href.startsWith(redirectUri));
      const finish = await authorize(page);
      // No click: the device answered the conditional request the page made on load.
      await arrived;
      const claims = await finish();
      assert.deepEqual(claims.amr, ['hwk', 'user', 'mfa']);
      assert.equal(claims.acr, ACR_MFA);
    } finally {
      await autofill(page, false);
    }
  });

  test('a passkey as the second factor after the password', async () => {
    await context.clearCookies();
    const finish = await authorize(page);
    await fillLogin(page, EMAIL, PASSWORD);
    await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    await page.getByRole('button', { name: 'Use your passkey' }).waitFor({ state: 'visible' });
    await page.screenshot({ path: new URL('second-factor-passkey.png', SCREENSHOTS).pathname, fullPage: true });
    await usePasskey(page, /use your passkey/i);
    const claims = await finish();
    assert.deepEqual(claims.amr, ['pwd', 'hwk', 'user', 'mfa']);
    assert.equal(claims.acr, ACR_MFA);
  });

  test('an authenticator without user verification cannot sign in without a password', async () => {
    const device = await deviceWithPasskeys({ userVerification: false });
    try {
      const email = 'noverify@example.com';
      await server.app.accounts.create({ email, password: PASSWORD });
      const finish = await authorize(device.page);
      await fillLogin(device.page, email, PASSWORD);
      await submit(device.page, device.page.getByRole('button', { name: 'Sign in', exact: true }));
      await usePasskey(device.page, /create a passkey/i);
      await submit(device.page, device.page.getByRole('button', { name: 'I have saved them' }));
      assert.deepEqual((await finish()).amr, ['pwd', 'hwk', 'user', 'mfa'], 'fine as a second factor');

      await device.context.clearCookies();
      await authorize(device.page);
      await device.page.getByRole('button', { name: 'Sign in with a passkey' }).click();
      // Chromium refuses a request that requires verification, or the server refuses the assertion.
      await device.page.locator('[role=alert]:not([hidden])').first().waitFor({ state: 'visible' });
      assert.equal(await currentStep(device.page, redirectUri), 'login');
    } finally {
      await device.context.close();
    }
  });

  test('the account page lists a passkey; confirmed with it once, renames it; removes the last one with password + recovery code; the device is told and no longer offers it', async () => {
    await context.clearCookies();
    await page.goto(new URL('/account', server.issuer).href);
    await usePasskey(page, /sign in with a passkey/i);
    const passkeys = page.getByRole('table', { name: 'Your passkeys' });
    assert.match(await passkeys.innerText(), /Kim’s laptop/);
    assert.doesNotMatch(await passkeys.innerText(), /never/, 'its last use is dated');

    // The passkey proves who this is once: no password, no recovery code used up.
    await page.getByText('Confirm it’s you to make changes').click();
    await usePasskey(page, page.locator('form[action="/account/sudo"]').getByRole('button', { name: 'Use a passkey instead' }));
    assert.ok(server.logs.some((l) => l.event === 'passkey_used' && l.as === 'proof'));
    await page.getByText('Rename or remove “Kim’s laptop”').click();
    await page.screenshot({ path: new URL('account-passkeys.png', SCREENSHOTS).pathname, fullPage: true });
    await page.getByLabel('New name').fill('Old laptop');
    await submit(page, page.getByRole('button', { name: 'Rename' }));
    assert.match(await page.getByRole('status').innerText(), /Renamed to “Old laptop”/);

    // The last factor asks again, sudo mode or not.
    await page.getByText('Rename or remove “Old laptop”').click();
    await page.locator('#remove-0-password').fill(PASSWORD);
    await page.locator('#remove-0-code').fill(recoveryCodes[0]!);
    await submit(page, page.getByRole('button', { name: 'Remove this passkey' }));
    assert.match(await page.getByRole('status').innerText(), /was removed/);
    assert.equal((await server.app.accounts.findByEmail(EMAIL))!.passkeys, undefined);
    // The page told the device (WebAuthn Signal API: no passkey of this person is accepted any more).
    await eventually(async () => (await credentials()) === 0, 'the device forgot the removed passkey');

    await context.clearCookies();
    await authorize(page);
    const button = page.getByRole('button', { name: /sign in with a passkey/i });
    await button.click();
    await page.locator('.passkey-error:not([hidden])').waitFor();
    assert.equal(await currentStep(page, redirectUri), 'login', 'nothing to sign in with');
  });

  test('a passkey removed here but still on the device: the page says so, the device is told, no lockout counts it, autofill does not loop', async () => {
    const device = await deviceWithPasskeys({ userVerification: true });
    const problemsHere = watchProblems(device.context);
    // Records the Signal API call (and passes it on when this Chromium has it).
    await device.context.addInitScript(() => {
      const calls: unknown[] = [];
      const w = window as unknown as { signalled: unknown[]; PublicKeyCredential?: { signalUnknownCredential?: (o: unknown) => Promise<void> } };
      w.signalled = calls;
      if (!w.PublicKeyCredential) return;
      const native = w.PublicKeyCredential.signalUnknownCredential?.bind(w.PublicKeyCredential);
      w.PublicKeyCredential.signalUnknownCredential = (o: unknown) => {
        calls.push(o);
        return native ? native(o) : Promise.resolve();
      };
    });
    try {
      const email = 'lee@example.com';
      await server.app.accounts.create({ email, password: PASSWORD });
      // Enrols a passkey (autofill is on in this browser: no passkey yet, so nothing is offered).
      let finish = await authorize(device.page);
      await fillLogin(device.page, email, PASSWORD);
      await submit(device.page, device.page.getByRole('button', { name: 'Sign in', exact: true }));
      await usePasskey(device.page, /create a passkey/i);
      await submit(device.page, device.page.getByRole('button', { name: 'I have saved them' }));
      await finish();
      const account = (await server.app.accounts.findByEmail(email))!;
      const credentialId = account.passkeys![0]!.id;
      const ip = server.logs.findLast((l) => l.event === 'signin_succeeded' && l.accountId === account.id)!.ip as string;
      const subjects = [email, `passkey:${digest(credentialId)}`];
      const before = await Promise.all(subjects.map((s) => server.app.lockout.failures({ factor: 'passkey', account: s, ip })));

      // Removed on the server only (another device's account page, an operator).
      await server.app.passkeys.remove(account.id, credentialId);
      await device.context.clearCookies();
      let posts = 0;
      device.page.on('request', (r) => {
        if (r.method() === 'POST' && r.url().endsWith('/passkey')) posts += 1;
      });
      finish = await authorize(device.page);
      // The device answers the autofill request at once, with the passkey the server no longer knows.
      const alert = device.page.getByRole('alert').filter({ hasText: MESSAGES.passkeyUnregistered });
      await alert.waitFor({ state: 'visible' });
      await device.page.waitForLoadState('networkidle');
      assert.equal(posts, 1, 'autofill is not armed again: no loop');
      assert.equal(await currentStep(device.page, redirectUri), 'login');
      assert.equal(await device.page.locator('form[data-autofill]').count(), 0);
      const signalled = await device.page.evaluate(() => (window as unknown as { signalled: unknown[] }).signalled);
      assert.deepEqual(signalled, [{ rpId: new URL(server.issuer).hostname, credentialId }]);
      const after = await Promise.all(subjects.map((s) => server.app.lockout.failures({ factor: 'passkey', account: s, ip })));
      assert.deepEqual(after, before, 'the attempt counts toward nobody');
      assert.ok(server.logs.some((l) => l.event === 'signin_failed' && l.reason === 'unregistered'), 'still audited');
      const { violations } = await new AxeBuilder({ page: device.page }).analyze();
      assert.deepEqual(violations.map((v) => v.id), []);
      await device.page.screenshot({ path: new URL('passkey-unregistered.png', SCREENSHOTS).pathname, fullPage: true });
      assert.deepEqual(problemsHere.filter((p) => !p.includes('/favicon.ico')), []);
    } finally {
      await device.context.close();
    }
  });
});
