import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { setTimeout as wait } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import * as oauth from 'oauth4webapi';
import type { Browser, Page } from 'playwright-core';
import { DEVICE_CODE_GRANT } from '../../src/oidc/registry.ts';
import { SCREENSHOTS, currentStep, fillLogin, launchBrowser, newContext, passSecondFactor, submit, watchProblems } from '../helpers/browser.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { HandledSecrets } from '../helpers/secrets.ts';
import { startServer, type TestServer } from '../helpers/server.ts';

/**
 * The device authorization grant end to end: oauth4webapi is the command-line tool (device authorization
 * request, then polling at the interval it was given), a real Chromium the person who opens the link,
 * signs in (password, then enrolls a second factor under MFA_POLICY=required) and allows — or denies.
 */
const EMAIL = 'linus@example.com';
const PASSWORD = 'correct horse battery staple';
const insecure = { [oauth.allowInsecureRequests]: true };

describe('device authorization grant in a browser, with oauth4webapi', () => {
  let redis: TestRedis;
  let server: TestServer;
  let browser: Browser;
  let as: oauth.AuthorizationServer;
  let client: oauth.Client;
  const secrets = new HandledSecrets();

  before(async () => {
    redis = await startRedis();
    server = await startServer({ redisUrl: redis.url });
    const created = await server.app.registry.createClient({ name: 'Acme CLI', grants: [DEVICE_CODE_GRANT, 'refresh_token'], scope: 'openid email offline_access', public: true }, async () => {});
    client = { client_id: created.clientId };
    await server.app.accounts.create({ email: EMAIL, password: PASSWORD });
    secrets.add('password', PASSWORD);
    const issuer = new URL(server.issuer);
    as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, insecure));
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await redis?.dispose();
  });

  async function startDevice() {
    const res = await oauth.deviceAuthorizationRequest(as, client, oauth.None(), { scope: 'openid email offline_access' }, insecure);
    const started = await oauth.processDeviceAuthorizationResponse(as, client, res);
    secrets.add('device_code', started.device_code);
    secrets.add('user_code', started.user_code);
    return started;
  }

  /** The tool's loop: poll, and on authorization_pending wait the interval (RFC 8628 §3.5); it records every answer. */
  async function pollUntilDone(deviceCode: string, interval: number, answers: string[]) {
    for (;;) {
      const res = await oauth.deviceCodeGrantRequest(as, client, oauth.None(), deviceCode, insecure);
      try {
        const tokens = await oauth.processDeviceCodeResponse(as, client, res);
        answers.push('tokens');
        return tokens;
      } catch (err) {
        if (!(err instanceof oauth.ResponseBodyError)) throw err;
        answers.push(err.error);
        if (err.error === 'slow_down') interval += 5;
        else if (err.error !== 'authorization_pending') throw err;
      }
      await wait(interval * 1000);
    }
  }

  async function signIn(page: Page) {
    assert.equal(await currentStep(page, ''), 'login');
    await fillLogin(page, EMAIL, PASSWORD);
    await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    await passSecondFactor(page, EMAIL);
  }

  test('the tool polls while the person opens verification_uri_complete, signs in and allows: tokens', async () => {
    const started = await startDevice();
    assert.equal(started.interval, 5);
    const context = await newContext(browser);
    secrets.watch(context);
    const problems = watchProblems(context);
    const page = await context.newPage();
    const answers: string[] = [];
    const polling = pollUntilDone(started.device_code, started.interval, answers);
    try {
      await page.goto(started.verification_uri_complete!);
      assert.equal(await page.getByLabel('Code from your device').inputValue(), started.user_code, 'the code is filled in');
      mkdirSync(SCREENSHOTS, { recursive: true });
      await page.screenshot({ path: new URL('device-code.png', SCREENSHOTS).pathname, fullPage: true });
      await submit(page, page.getByRole('button', { name: 'Continue' }));
      await signIn(page);

      assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Allow this device?');
      const text = await page.locator('main').innerText();
      assert.match(text, /Acme CLI/);
      assert.match(text, new RegExp(started.user_code));
      assert.match(text, /See your email address/);
      assert.match(text, /Only allow this if you started it yourself/);
      assert.match(text, /oauth4webapi|node/i, 'the device, by the user agent of its request');
      await page.screenshot({ path: new URL('device-allow.png', SCREENSHOTS).pathname, fullPage: true });
      await submit(page, page.getByRole('button', { name: 'Allow' }));
      assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Device connected');
      await page.screenshot({ path: new URL('device-connected.png', SCREENSHOTS).pathname, fullPage: true });

      const tokens = await polling;
      secrets.add('access_token', tokens.access_token);
      secrets.add('refresh_token', tokens.refresh_token);
      assert.equal(tokens.token_type.toLowerCase(), 'bearer');
      assert.ok(tokens.refresh_token, 'offline_access: a refresh token for the tool');
      assert.ok(answers.includes('authorization_pending'), `answers: ${answers.join(', ')}`);
      assert.ok(!answers.includes('slow_down'), 'a tool that keeps to the interval is never told to slow down');
      assert.deepEqual(problems, []);
    } finally {
      await polling.catch(() => {});
      await context.close();
    }
  });

  test('the person types the code (lowercase, no dash) and denies: access_denied', async () => {
    const started = await startDevice();
    const context = await newContext(browser);
    secrets.watch(context);
    const problems = watchProblems(context);
    const page = await context.newPage();
    try {
      await page.goto(started.verification_uri);
      await page.getByLabel('Code from your device').fill(started.user_code.replace('-', '').toLowerCase());
      await submit(page, page.getByRole('button', { name: 'Continue' }));
      await signIn(page);
      await submit(page, page.getByRole('button', { name: 'Deny' }));
      assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Device not connected');
      const res = await oauth.deviceCodeGrantRequest(as, client, oauth.None(), started.device_code, insecure);
      await assert.rejects(oauth.processDeviceCodeResponse(as, client, res), (err: unknown) => err instanceof oauth.ResponseBodyError && err.error === 'access_denied');
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  test('no secret (password, device code, user code, tokens, cookies) reached the server log', async () => {
    assert.ok(secrets.size > 5);
    assert.deepEqual(await secrets.leaks(server.logs), []);
  });
});
