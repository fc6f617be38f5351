import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { AxeBuilder } from '@axe-core/playwright';
import type { Browser, Page } from 'playwright-core';
import { SCREENSHOTS, currentStep, fillLogin, launchBrowser, newContext, passSecondFactor, submit, watchProblems } from '../helpers/browser.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { linkIn, startSmtpCatcher, type SmtpCatcher } from '../helpers/smtp.ts';

/**
 * A sign-up in Chromium (SIGNUP=open), over Redis and real SMTP on loopback: from the sign-in page's
 * "Create an account" to /signup, the mailed link, a password, then a normal sign-in that —
 * MFA_POLICY=required — sets up an authenticator before reaching /account. Screenshot:
 * docs/screenshots/signup.png (the sign-up form).
 */
describe('a sign-up in a browser', () => {
  let redis: TestRedis;
  let server: TestServer;
  let smtp: SmtpCatcher;
  let browser: Browser;

  before(async () => {
    redis = await startRedis();
    smtp = await startSmtpCatcher();
    server = await startServer({ redisUrl: redis.url, env: { SMTP_URL: smtp.url, SIGNUP: 'open' }, mail: { pollMs: 50 } });
    browser = await launchBrowser();
    mkdirSync(SCREENSHOTS, { recursive: true });
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await smtp?.stop();
    await redis?.dispose();
  });

  const heading = (page: Page) => page.getByRole('heading', { level: 1 }).innerText();
  const axe = async (page: Page) => {
    const { violations } = await new AxeBuilder({ page }).analyze();
    assert.deepEqual(violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => v.id), []);
  };

  test('"Create an account" → /signup → the mailed link → a password → sign-in, authenticator, /account', async () => {
    const context = await newContext(browser);
    const problems = watchProblems(context);
    const page = await context.newPage();
    await page.goto(`${server.issuer}/account`);
    assert.equal(await currentStep(page, ''), 'login');
    await page.getByRole('link', { name: 'Create an account' }).click();
    await page.waitForLoadState('load');
    assert.equal(new URL(page.url()).pathname, '/signup');
    assert.equal(await heading(page), 'Create an account');
    await axe(page);
    await page.getByLabel('Email').fill('lin@example.org');
    await page.getByLabel('Your name (optional)').fill('Lin');
    await page.screenshot({ path: new URL('signup.png', SCREENSHOTS).pathname, fullPage: true });
    await submit(page, page.getByRole('button', { name: 'Send me a link' }));
    assert.equal(await heading(page), 'Check your email');
    assert.equal(await server.app.accounts.findByEmail('lin@example.org'), undefined, 'nothing made before the link');

    const mail = await smtp.waitFor('lin@example.org', /Finish creating/);
    await page.goto(linkIn(mail, '/signup/finish').href);
    assert.equal(await heading(page), 'Create your account');
    await axe(page);
    await page.getByLabel('Set a password').fill('tide tables and lighthouses');
    await submit(page, page.getByRole('button', { name: 'Create my account' }));
    assert.equal(await heading(page), 'Welcome');
    assert.equal((await server.app.accounts.findByEmail('lin@example.org'))?.emailVerified, true);

    await page.getByRole('link', { name: 'Sign in' }).click();
    await page.waitForLoadState('load');
    await fillLogin(page, 'lin@example.org', 'tide tables and lighthouses');
    await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    assert.equal(await currentStep(page, ''), 'enroll', 'MFA_POLICY=required: an authenticator is set up first');
    await passSecondFactor(page, 'lin@example.org');
    assert.equal(new URL(page.url()).pathname, '/account');
    assert.deepEqual(problems, []);
    await context.close();
  });
});
