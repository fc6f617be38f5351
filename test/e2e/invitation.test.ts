import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { AxeBuilder } from '@axe-core/playwright';
import type { Browser, Page } from 'playwright-core';
import { SCREENSHOTS, currentStep, fillCode, fillLogin, launchBrowser, newContext, passSecondFactor, submit, watchProblems } from '../helpers/browser.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { linkIn, startSmtpCatcher, type SmtpCatcher } from '../helpers/smtp.ts';
import { nextTotpCode } from '../helpers/totp.ts';

/**
 * An invitation in Chromium, over real SMTP on loopback: an admin invites an address from the console's
 * users screen (a field error first), the person opens the mailed link, sets a password, signs in and —
 * MFA_POLICY=required — sets up an authenticator before reaching /account. Another accepts with a passkey
 * (DevTools' virtual authenticator) instead: a passkey-only account, its recovery codes shown once, then
 * a passwordless sign-in. Screenshots go to docs/screenshots/ (invitation.png: the accept page).
 */
const ADMIN = 'root@example.com';
const PASSWORD = 'correct horse battery staple';

describe('an invitation in a browser', () => {
  let redis: TestRedis;
  let server: TestServer;
  let smtp: SmtpCatcher;
  let browser: Browser;
  let adminSecret: string;

  before(async () => {
    redis = await startRedis();
    smtp = await startSmtpCatcher();
    server = await startServer({ redisUrl: redis.url, env: { SMTP_URL: smtp.url }, mail: { pollMs: 50 } });
    const created = await server.app.ops.createUser({ kind: 'cli' }, { email: ADMIN, password: PASSWORD, admin: true, totp: true });
    adminSecret = new URL(created.totp_uri!).searchParams.get('secret')!;
    browser = await launchBrowser();
    mkdirSync(SCREENSHOTS, { recursive: true });
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await smtp?.stop();
    await redis?.dispose();
  });

  const shot = (page: Page, name: string) => page.screenshot({ path: new URL(name, SCREENSHOTS).pathname, fullPage: true });
  const heading = (page: Page) => page.getByRole('heading', { level: 1 }).innerText();

  test('accepted with a passkey instead of a password: recovery codes once, then the passkey alone signs in to /account', async () => {
    await server.app.ops.inviteUser({ kind: 'cli' }, { email: 'kim@example.org', name: 'Kim' });
    const mail = await smtp.waitFor('kim@example.org', /invited/);
    const person = await newContext(browser);
    // The virtual authenticator answers passkey autofill (a conditional request) at once: this test uses the button.
    await person.addInitScript(() => {
      if (typeof PublicKeyCredential !== 'undefined') PublicKeyCredential.isConditionalMediationAvailable = async () => false;
    });
    const problems = watchProblems(person);
    const tab = await person.newPage();
    const cdp = await person.newCDPSession(tab);
    await cdp.send('WebAuthn.enable', { enableUI: false });
    await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
    });
    await tab.goto(linkIn(mail, '/invitation').href);
    assert.equal(await heading(tab), 'Accept your invitation');
    const create = tab.getByRole('button', { name: 'Create a passkey instead' });
    await create.waitFor({ state: 'visible' });
    const { violations } = await new AxeBuilder({ page: tab }).analyze();
    assert.deepEqual(violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => v.id), []);
    await tab.getByLabel('Name this passkey (optional)').fill('Kim’s phone');
    await submit(tab, create);
    assert.equal(await heading(tab), 'Save your recovery codes');
    assert.equal(await tab.getByRole('list', { name: 'Recovery codes' }).locator('code').count(), 10);
    const account = (await server.app.accounts.findByEmail('kim@example.org'))!;
    assert.equal(account.passwordHash, '', 'a passkey-only account');
    assert.deepEqual(account.passkeys?.map((p) => p.name), ['Kim’s phone']);
    assert.equal(account.emailVerified, true);

    await tab.getByRole('link', { name: /I have saved them/ }).click();
    await tab.waitForLoadState('load');
    assert.equal(await currentStep(tab, ''), 'login');
    await submit(tab, tab.getByRole('button', { name: 'Sign in with a passkey' }));
    assert.equal(new URL(tab.url()).pathname, '/account', 'a passkey with user verification is both factors: no enrolment');
    assert.match(await tab.locator('body').innerText(), /kim@example\.org/);
    assert.ok(server.logs.some((l) => l.event === 'invitation_accepted' && l.accountId === account.id && l.with === 'passkey'));
    assert.deepEqual(problems, []);
    await person.close();
  });

  test('invited from the console, accepted from the mail: password, sign-in, authenticator, /account', async () => {
    const context = await newContext(browser);
    const problems = watchProblems(context);
    const page = await context.newPage();
    await page.goto(`${server.issuer}/admin/users`);
    await fillLogin(page, ADMIN, PASSWORD);
    await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    await fillCode(page, await nextTotpCode(server.issuer, adminSecret));
    await submit(page, page.getByRole('button', { name: 'Verify' }));
    assert.equal(new URL(page.url()).pathname, '/admin');
    await page.goto(`${server.issuer}/admin/users`);

    // A mistyped address is refused next to its field; nothing is sent.
    await page.getByLabel('Email', { exact: true }).fill('grace-at-example.org');
    await submit(page, page.getByRole('button', { name: 'Invite' }));
    assert.match(await page.locator('#invite-email-error').innerText(), /not an email address/i);
    await page.getByLabel('Email', { exact: true }).fill('grace@example.org');
    await page.getByLabel('Name (optional)').fill('Grace');
    await submit(page, page.getByRole('button', { name: 'Invite' }));
    assert.match(await page.getByRole('status').innerText(), /Invitation sent to grace@example\.org/);
    assert.ok(await page.getByRole('cell', { name: 'grace@example.org', exact: true }).isVisible(), 'listed as pending');
    const { violations } = await new AxeBuilder({ page }).analyze();
    assert.deepEqual(violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => v.id), []);
    await shot(page, 'admin-invitations.png');

    const mail = await smtp.waitFor('grace@example.org', /invited/);
    const person = await newContext(browser);
    const personProblems = watchProblems(person);
    const tab = await person.newPage();
    await tab.goto(linkIn(mail, '/invitation').href);
    assert.equal(await heading(tab), 'Accept your invitation');
    assert.match(await tab.locator('.lead').innerText(), /grace@example\.org/);
    await tab.getByLabel('Set a password').fill('seven lanterns over the harbour');
    await shot(tab, 'invitation.png');
    await submit(tab, tab.getByRole('button', { name: 'Create my account' }));
    assert.equal(await heading(tab), 'Welcome');

    await tab.getByRole('link', { name: 'Sign in' }).click();
    await tab.waitForLoadState('load');
    await fillLogin(tab, 'grace@example.org', 'seven lanterns over the harbour');
    await submit(tab, tab.getByRole('button', { name: 'Sign in', exact: true }));
    assert.equal(await currentStep(tab, ''), 'enroll', 'MFA_POLICY=required: an authenticator is set up first');
    await passSecondFactor(tab, 'grace@example.org');
    assert.equal(new URL(tab.url()).pathname, '/account');

    // Accepted: no longer pending on the console.
    await page.goto(`${server.issuer}/admin/users`);
    assert.equal(await page.getByRole('cell', { name: 'grace@example.org', exact: true }).count(), 1, 'listed once: as a user, not as an invitation');
    // The refused invite answered 400, as a refused form does; nothing else went wrong in either browser.
    assert.deepEqual([...problems.filter((p) => !/status of 400 .*\/admin\/users\/invite\)$/.test(p)), ...personProblems], []);
    await person.close();
    await context.close();
  });
});
