import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { SCREENSHOTS, currentStep, fillLogin, launchBrowser, newContext, passSecondFactor, startFakeApp, submit, watchProblems } from '../helpers/browser.ts';
import { pkcePair } from '../helpers/flow.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { linkIn, startSmtpCatcher, type SmtpCatcher } from '../helpers/smtp.ts';
import { enrollTotp } from '../helpers/world.ts';

/**
 * Email in Chromium, over real SMTP on loopback: "Forgot your password?" from an app's sign-in page to
 * a new password (the second factor still asked), and a change of address on /account confirmed from
 * the link in the message. Screenshots of each page and of one message go to docs/screenshots/.
 */
const PASSWORD = 'correct horse battery staple';

describe('email in a browser', () => {
  let redis: TestRedis;
  let server: TestServer;
  let smtp: SmtpCatcher;
  let browser: Browser;
  let fakeApp: Awaited<ReturnType<typeof startFakeApp>>;
  let redirectUri: string;
  let clientId: string;

  before(async () => {
    redis = await startRedis();
    smtp = await startSmtpCatcher();
    server = await startServer({ redisUrl: redis.url, env: { SMTP_URL: smtp.url }, mail: { pollMs: 50 } });
    fakeApp = await startFakeApp();
    redirectUri = `${fakeApp.origin}/cb`;
    clientId = (await server.app.registry.createClient({ name: 'Example Notes', grants: ['authorization_code'], redirectUris: [redirectUri], scope: 'openid email' }, async () => {})).clientId;
    browser = await launchBrowser();
    mkdirSync(SCREENSHOTS, { recursive: true });
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await smtp?.stop();
    await fakeApp?.close();
    await redis?.dispose();
  });

  const shot = (page: Page, name: string) => page.screenshot({ path: new URL(name, SCREENSHOTS).pathname });

  async function person(email: string) {
    const account = await server.app.accounts.create({ email, name: 'Lin', password: PASSWORD });
    const { totpSecret } = await enrollTotp(server, account);
    return { id: account.id, email, totpSecret };
  }

  test('forgot password: from the sign-in page to a new password, and the second factor is still asked', async () => {
    const p = await person('lin@example.org');
    const context = await newContext(browser);
    const problems = watchProblems(context);
    const page = await context.newPage();
    const authUrl = new URL(`/auth?${new URLSearchParams({ client_id: clientId, redirect_uri: redirectUri, response_type: 'code', scope: 'openid email', code_challenge: pkcePair().challenge, code_challenge_method: 'S256' })}`, server.issuer);
    await page.goto(authUrl.href);
    await page.getByRole('link', { name: 'Forgot your password?' }).click();
    await page.waitForLoadState('load');
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Forgot your password?');
    await page.getByLabel('Email').fill(p.email);
    await shot(page, 'forgot-password.png');
    await submit(page, page.getByRole('button', { name: 'Send me a link' }));
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Check your email');
    await shot(page, 'forgot-password-sent.png');

    const mail = await smtp.waitFor(p.email, /Reset your Latchkey password/);
    // The message as a mail client shows it (its HTML part).
    const reader = await context.newPage();
    await reader.setContent(mail.html as string);
    await shot(reader, 'email-password-reset.png');
    await reader.close();

    await page.goto(linkIn(mail, '/password/reset').href);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Choose a new password');
    const field = page.locator('input[autocomplete=new-password]');
    await page.getByLabel('New password').fill('quiet harbour lanterns glowing');
    assert.equal(await field.inputValue(), 'quiet harbour lanterns glowing', 'the label names the new-password field');
    await shot(page, 'reset-password.png');
    await submit(page, page.getByRole('button', { name: 'Set the new password' }));
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Password changed');
    await shot(page, 'reset-password-done.png');

    // Signing in with it: the authenticator app is still asked for.
    await page.getByRole('link', { name: 'Sign in to your account' }).click();
    await page.waitForLoadState('load');
    await fillLogin(page, p.email, 'quiet harbour lanterns glowing');
    await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    assert.equal(await currentStep(page, ''), 'mfa', 'the second factor is not bypassed');
    await passSecondFactor(page, p.email, p.totpSecret);
    assert.equal(new URL(page.url()).pathname, '/account');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('changing the address on /account: confirmed from the link sent to the new one', async () => {
    const p = await person('mo@example.org');
    const context = await newContext(browser);
    const problems = watchProblems(context);
    const page = await context.newPage();
    await page.goto(new URL('/account', server.issuer).href);
    await fillLogin(page, p.email, PASSWORD);
    await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    await passSecondFactor(page, p.email, p.totpSecret);
    assert.equal(new URL(page.url()).pathname, '/account');

    const section = page.locator('#profile');
    assert.match(await section.innerText(), /not confirmed yet/);
    await section.getByText('Change your address').click();
    await section.getByLabel('New address').fill('mo.new@example.org');
    await section.getByLabel('Current password').fill(PASSWORD);
    const { nextTotpCode } = await import('../helpers/totp.ts');
    await section.getByLabel('Authentication code').fill(await nextTotpCode(server.issuer, p.totpSecret));
    await section.screenshot({ path: new URL('account-email.png', SCREENSHOTS).pathname });
    await submit(page, section.getByRole('button', { name: 'Change address' }));
    assert.match(await page.getByRole('status').innerText(), /A link is on its way to mo\.new@example\.org/);

    const mail = await smtp.waitFor('mo.new@example.org', /Confirm your new email address/);
    await smtp.waitFor(p.email, /is being changed/);
    await page.goto(linkIn(mail, '/email/change').href);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Confirm your new address');
    await shot(page, 'email-change-confirm.png');
    await submit(page, page.getByRole('button', { name: 'Use this address' }));
    assert.match(await page.getByRole('status').innerText(), /You sign in with mo\.new@example\.org from now on/);

    await page.goto(new URL('/account', server.issuer).href);
    assert.match(await page.locator('main').innerText(), /Signed in as mo\.new@example\.org/);
    assert.match(await page.locator('#profile').innerText(), /mo\.new@example\.org · confirmed/);
    assert.doesNotMatch(await page.locator('#profile').innerText(), /not confirmed yet/);
    assert.deepEqual(problems, []);
    await context.close();
  });
});
