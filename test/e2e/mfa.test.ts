import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import * as oc from 'openid-client';
import type { Browser, Page } from 'playwright-core';
import { totpCodeAt } from '../../src/accounts/totp.ts';
import { ACR_MFA } from '../../src/signin/policy.ts';
import { MESSAGES } from '../../src/signin/messages.ts';
import { SCREENSHOTS, chooseAuthenticatorApp, currentStep, fillCode, fillLogin, launchBrowser, newContext, startFakeApp, submit, watchProblems } from '../helpers/browser.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { HandledSecrets } from '../helpers/secrets.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { keyFromPage, nextTotpCode, totpClock, wrongTotpCode } from '../helpers/totp.ts';

/**
 * The second factor end to end under the default MFA_POLICY=required: a real Chromium is the person,
 * openid-client v6 the app. Enrollment (QR code, key read from the page, a wrong code refused, the
 * right one accepted, recovery codes shown once), a later sign-in with a TOTP code, a recovery code
 * that works once, `amr` and `acr` in the ID token, the lockout after repeated wrong passwords (which
 * then refuses the right one), and the same answer for an account that does not exist.
 */
const EMAIL = 'grace@example.com';
const PASSWORD = 'correct horse battery staple';

describe('second factor in a browser, with openid-client', () => {
  let redis: TestRedis;
  let server: TestServer;
  let browser: Browser;
  let rp: oc.Configuration;
  let redirectUri: string;
  let fakeApp: Awaited<ReturnType<typeof startFakeApp>>;
  let secret: string;
  let recoveryCodes: string[];
  /** Every secret handled here; the last test checks that none reached the server's log. */
  const secrets = new HandledSecrets();

  before(async () => {
    redis = await startRedis();
    server = await startServer({ redisUrl: redis.url });
    fakeApp = await startFakeApp();
    redirectUri = `${fakeApp.origin}/cb`;
    const client = await server.app.registry.createClient(
      { name: 'Example Notes', grants: ['authorization_code'], redirectUris: [redirectUri], scope: 'openid email', firstParty: true },
      async () => {},
    );
    await server.app.accounts.create({ email: EMAIL, password: PASSWORD });
    secrets.add('password', PASSWORD);
    secrets.add('client_secret', client.secret);
    rp = await oc.discovery(new URL(server.issuer), client.clientId, undefined, oc.ClientSecretBasic(client.secret), { execute: [oc.allowInsecureRequests] });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await fakeApp?.close();
    await redis?.dispose();
  });

  /** A fresh browser session at the authorization endpoint; `finish` exchanges the callback's code. */
  async function start() {
    const context = await newContext(browser);
    secrets.watch(context);
    const problems = watchProblems(context);
    const page = await context.newPage();
    const verifier = oc.randomPKCECodeVerifier();
    secrets.add('code_verifier', verifier);
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
    await page.goto(url.href);
    const finish = async () => {
      assert.equal(await currentStep(page, redirectUri), 'callback', `at the app: ${page.url()}`);
      const tokens = await oc.authorizationCodeGrant(rp, new URL(page.url()), { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true });
      secrets.add('access_token', tokens.access_token);
      secrets.add('id_token', tokens.id_token);
      return tokens.claims()!;
    };
    return { context, page, problems, finish };
  }

  async function signInWithPassword(page: Page, email: string, password: string) {
    await fillLogin(page, email, password);
    await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
  }

  test('enrollment right after the password: QR code and key, a wrong code refused, recovery codes shown once', async () => {
    const { context, page, problems, finish } = await start();
    try {
      await signInWithPassword(page, EMAIL, PASSWORD);
      assert.equal(await currentStep(page, redirectUri), 'enroll');
      await chooseAuthenticatorApp(page);
      const qr = page.getByRole('img', { name: /QR code/ });
      assert.ok(await qr.isVisible());
      assert.ok(await qr.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth > 0), 'the QR code image renders');
      assert.match((await qr.getAttribute('src')) ?? '', /^data:image\/svg\+xml;base64,/);
      secret = keyFromPage(await page.locator('#totp-key').innerText());
      assert.match(secret, /^[A-Z2-7]{32}$/);
      mkdirSync(SCREENSHOTS, { recursive: true });
      await page.screenshot({ path: new URL('enroll.png', SCREENSHOTS).pathname, fullPage: true });

      await fillCode(page, await wrongTotpCode(server.issuer, secret));
      await submit(page, page.getByRole('button', { name: /turn on/i }));
      assert.equal(await page.getByRole('alert').innerText(), MESSAGES.wrongCode);
      assert.equal(await currentStep(page, redirectUri), 'enroll', 'still enrolling');
      assert.equal((await server.app.accounts.findByEmail(EMAIL))!.mfa, undefined, 'not enrolled by a wrong code');

      await fillCode(page, await totpCodeAt(secret, totpClock.now()));
      await submit(page, page.getByRole('button', { name: /turn on/i }));
      const list = page.getByRole('list', { name: 'Recovery codes' });
      recoveryCodes = (await list.locator('code').allInnerTexts()).map((c) => c.trim());
      assert.equal(recoveryCodes.length, 10);
      await submit(page, page.getByRole('button', { name: 'I have saved them' }));

      const claims = await finish();
      assert.deepEqual(claims.amr, ['pwd', 'otp', 'mfa']);
      assert.equal(claims.acr, ACR_MFA);
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  test('a later sign-in asks for a code from the app', async () => {
    const { context, page, problems, finish } = await start();
    try {
      await signInWithPassword(page, EMAIL, PASSWORD);
      assert.equal(await currentStep(page, redirectUri), 'mfa');
      const field = page.getByLabel('Authentication code');
      assert.equal(await field.getAttribute('autocomplete'), 'one-time-code');
      assert.equal(await field.getAttribute('inputmode'), 'numeric');
      await fillCode(page, await nextTotpCode(server.issuer, secret));
      await submit(page, page.getByRole('button', { name: 'Verify' }));
      const claims = await finish();
      assert.deepEqual(claims.amr, ['pwd', 'otp', 'mfa']);
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  test('a recovery code signs in once; the second time it is refused', async () => {
    const code = recoveryCodes[0]!;
    const useRecoveryCode = async (page: Page) => {
      await signInWithPassword(page, EMAIL, PASSWORD);
      await submit(page, page.getByRole('link', { name: 'Use a recovery code' }));
      await page.getByLabel('Recovery code').fill(code);
      await submit(page, page.getByRole('button', { name: 'Verify' }));
    };
    const first = await start();
    try {
      await useRecoveryCode(first.page);
      assert.deepEqual((await first.finish()).amr, ['pwd', 'otp', 'mfa']);
      assert.deepEqual(first.problems, []);
    } finally {
      await first.context.close();
    }
    const second = await start();
    try {
      await useRecoveryCode(second.page);
      assert.equal(await second.page.getByRole('alert').innerText(), MESSAGES.wrongRecoveryCode);
      assert.notEqual(await currentStep(second.page, redirectUri), 'callback');
    } finally {
      await second.context.close();
    }
  });

  test('the account page: sign in from it, see the factor and the recovery codes left', async () => {
    const context = await newContext(browser);
    secrets.watch(context);
    const problems = watchProblems(context);
    const page = await context.newPage();
    try {
      await page.goto(new URL('/account', server.issuer).href);
      await signInWithPassword(page, EMAIL, PASSWORD);
      await fillCode(page, await nextTotpCode(server.issuer, secret));
      await submit(page, page.getByRole('button', { name: 'Verify' }));
      assert.equal(new URL(page.url()).pathname, '/account');
      assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Your account');
      const security = page.locator('#security');
      assert.match(await security.innerText(), /Authenticator app\s+On since[\s\S]*9 of 10 unused/);
      // Confirm it's you once (password and a current code), then new recovery codes need nothing more.
      await security.getByText('Confirm it’s you to make changes').click();
      const confirm = page.locator('form[action="/account/sudo"]');
      await confirm.getByLabel('Current password').fill(PASSWORD);
      await confirm.getByLabel('Authentication code').fill(await nextTotpCode(server.issuer, secret));
      await submit(page, confirm.getByRole('button', { name: 'Confirm' }));
      await submit(page, page.getByRole('button', { name: 'Make new recovery codes' }));
      recoveryCodes = (await page.getByRole('list', { name: 'Recovery codes' }).locator('code').allInnerTexts()).map((c) => c.trim());
      assert.equal(recoveryCodes.length, 10);
      await page.getByLabel('I saved these codes somewhere safe').check();
      await submit(page, page.getByRole('button', { name: 'I have saved them' }));
      assert.match(await page.locator('#security').innerText(), /10 of 10 unused/);
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  test('repeated wrong passwords lock the account: 429, Retry-After, and the right password is refused; an unknown account reads the same', async () => {
    const { context, page } = await start();
    try {
      const post = async (email: string, password: string) => {
        const answer = page.waitForResponse((res) => res.request().method() === 'POST' && res.url().endsWith('/login'));
        await signInWithPassword(page, email, password);
        const res = await answer;
        return { status: res.status(), retryAfter: res.headers()['retry-after'], message: await page.getByRole('alert').innerText() };
      };
      const known: Awaited<ReturnType<typeof post>>[] = [];
      const unknown: Awaited<ReturnType<typeof post>>[] = [];
      for (let i = 0; i < 10; i += 1) {
        known.push(await post(EMAIL, `wrong password ${i}`));
        unknown.push(await post('nobody@example.com', `wrong password ${i}`));
      }
      assert.deepEqual(known.slice(0, 9).map((r) => r.message), Array(9).fill(MESSAGES.wrongPassword));
      assert.deepEqual(unknown.map((r) => [r.status, r.message]), known.map((r) => [r.status, r.message]), 'an unknown account is answered alike');
      assert.equal(known[9]!.status, 429);
      assert.equal(known[9]!.message, MESSAGES.locked);
      assert.ok(Number(known[9]!.retryAfter) > 0);

      const right = await post(EMAIL, PASSWORD);
      assert.equal(right.status, 429, 'even the right password');
      assert.equal(right.message, MESSAGES.locked);
      assert.equal(await currentStep(page, redirectUri), 'login');
    } finally {
      await context.close();
    }
  });

  // Last: everything above has been logged by now.
  test('no log line holds a secret the test handled: password, TOTP key and codes, recovery codes, tokens, cookies', async () => {
    secrets.add('TOTP secret', secret);
    recoveryCodes.forEach((code, i) => secrets.add(`recovery code ${i}`, code));
    await secrets.settle();
    const kinds = secrets.kinds();
    for (const kind of ['password', 'client_secret', 'access_token', 'id_token', 'code_verifier', 'TOTP key shown', 'recovery code shown', 'form field password', 'form field code', 'form field _csrf', 'authorization code in a URL', 'cookie _session', 'cookie _interaction']) {
      assert.ok(kinds.has(kind), `collected a ${kind}: ${[...kinds].join(', ')}`);
    }
    assert.ok(server.logs.some((l) => l.event === 'lockout_started'), 'the flows were logged');
    assert.deepEqual(await secrets.leaks(server.logs), []);
  });
});
