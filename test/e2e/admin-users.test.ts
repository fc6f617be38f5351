import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { AxeBuilder } from '@axe-core/playwright';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { isEmailVerified } from '../../src/accounts/accounts.ts';
import { SCREENSHOTS, fillCode, fillLogin, launchBrowser, newContext, submit, watchProblems } from '../helpers/browser.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { linkIn, startSmtpCatcher, type SmtpCatcher } from '../helpers/smtp.ts';
import { nextTotpCode } from '../helpers/totp.ts';

/**
 * The Users screen end to end in Chromium, over Redis and real SMTP on loopback: an admin adds a person
 * with a one-time link and the person sets their password through it; edits name and address; sends the
 * normal reset mail; deletes after ticking the box; and on their own page is offered nothing that would
 * lock them out. Every page axe-clean; screenshots docs/screenshots/admin-user*.png.
 */
const ADMIN = 'root@example.com';
const PASSWORD = 'correct horse battery staple';

describe('the users screen in a browser', () => {
  let redis: TestRedis;
  let smtp: SmtpCatcher;
  let server: TestServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let problems: string[];
  let adminId: string;

  before(async () => {
    redis = await startRedis();
    smtp = await startSmtpCatcher();
    server = await startServer({ redisUrl: redis.url, env: { SMTP_URL: smtp.url, MFA_POLICY: 'optional' }, mail: { pollMs: 50 } });
    const created = await server.app.ops.createUser({ kind: 'cli' }, { email: ADMIN, password: PASSWORD, admin: true, totp: true });
    adminId = created.user.id;
    browser = await launchBrowser();
    context = await newContext(browser);
    problems = watchProblems(context);
    page = await context.newPage();
    await page.goto(`${server.issuer}/admin/users`);
    await fillLogin(page, ADMIN, PASSWORD);
    await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    await fillCode(page, await nextTotpCode(server.issuer, new URL(created.totp_uri!).searchParams.get('secret')!));
    await submit(page, page.getByRole('button', { name: 'Verify' }));
    mkdirSync(SCREENSHOTS, { recursive: true });
  });

  after(async () => {
    await context?.close();
    await browser?.close();
    await server?.close();
    await smtp?.stop();
    await redis?.dispose();
  });

  async function check(on: Page, name: string) {
    const { violations } = await new AxeBuilder({ page: on }).analyze();
    const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    assert.deepEqual(bad.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`), [], `axe on ${name}`);
    await on.screenshot({ path: new URL(`admin-${name}.png`, SCREENSHOTS).pathname, fullPage: true });
  }
  const heading = (on: Page) => on.getByRole('heading', { level: 1 }).innerText();
  /** 4xx answers to refused forms are expected; nothing else may go wrong in the browser. */
  const unexpected = () => problems.filter((p) => !/status of 40\d/.test(p));

  test('a person added with a hand-over link sets their password through it, once', async () => {
    await page.goto(`${server.issuer}/admin/users`);
    await submit(page, page.getByRole('link', { name: 'New user' }));
    assert.equal(await heading(page), 'New user');
    await page.getByLabel('Email', { exact: true }).fill('hana-at-example.com');
    await page.getByLabel('Create now, with a one-time link I hand over').check();
    await submit(page, page.getByRole('button', { name: 'Add user' }));
    assert.match(await page.locator('#user-email-error').innerText(), /not an email address/i);
    assert.equal(await page.getByLabel('Create now, with a one-time link I hand over').isChecked(), true, 'the choice stays');
    await check(page, 'user-new');

    await page.getByLabel('Email', { exact: true }).fill('hana@example.com');
    await page.getByLabel('Name (optional)').fill('Hana');
    await submit(page, page.getByRole('button', { name: 'Add user' }));
    assert.equal(await heading(page), 'hana@example.com is ready');
    const link = (await page.locator('#set-password-link').innerText()).trim();
    assert.match(await page.getByRole('status').innerText(), /will not be shown again/);
    await check(page, 'user-link');
    const hana = (await server.app.accounts.findByEmail('hana@example.com'))!;
    assert.equal(hana.name, 'Hana');
    await submit(page, page.getByRole('link', { name: 'Done' }));
    assert.equal(await heading(page), 'hana@example.com');
    assert.ok(!(await page.content()).includes(link), 'the link is not shown again');

    const person = await newContext(browser);
    const tab = await person.newPage();
    await tab.goto(link);
    await tab.getByLabel('New password').fill('seven lanterns over the harbour');
    await submit(tab, tab.getByRole('button', { name: /password/i }));
    assert.equal(await heading(tab), 'Password changed');
    assert.ok(await server.app.accounts.authenticate('hana@example.com', 'seven lanterns over the harbour'));
    await tab.goto(link);
    assert.equal(await heading(tab), 'Link expired', 'the link works once');
    await person.close();
  });

  test('name and address edited: the new address is unconfirmed and mailed a link, the old one told; a reset link sent by mail', async () => {
    const hana = (await server.app.accounts.findByEmail('hana@example.com'))!;
    await page.goto(`${server.issuer}/admin/users/${hana.id}`);
    await page.getByLabel('Email', { exact: true }).fill('not-an-address');
    await submit(page, page.getByRole('button', { name: 'Save' }));
    assert.match(await page.locator('#edit-email-error').innerText(), /not an email address/i);
    await page.getByLabel('Name', { exact: true }).fill('Hana K.');
    await page.getByLabel('Email', { exact: true }).fill('hana.k@example.com');
    await submit(page, page.getByRole('button', { name: 'Save' }));
    assert.match(await page.getByRole('status').innerText(), /unconfirmed: a link to confirm it is on its way/);
    assert.equal(await heading(page), 'hana.k@example.com');
    assert.match(await page.locator('dl.facts').innerText(), /Not confirmed yet/);
    const after = (await server.app.accounts.find(hana.id))!;
    assert.equal(after.name, 'Hana K.');
    assert.equal(isEmailVerified(after), false);
    await smtp.waitFor('hana.k@example.com', /confirm|verify/i);
    await smtp.waitFor('hana@example.com', /your email address was changed/);

    await submit(page, page.getByRole('button', { name: 'Send a password reset link' }));
    assert.match(await page.getByRole('status').innerText(), /reset link is on its way/);
    const mail = await smtp.waitFor('hana.k@example.com', /reset/i);
    assert.equal(linkIn(mail, '/password/reset').origin, server.issuer);
    const line = server.logs.find((l) => l.event === 'password_reset_requested' && l.accountId === hana.id);
    assert.deepEqual(line?.actor, { kind: 'account', accountId: adminId }, 'audited with the admin as actor');
    await check(page, 'user');
  });

  test('a person deleted after ticking the box; the own account page offers no disable, admin revocation or deletion', async () => {
    const hana = (await server.app.accounts.findByEmail('hana.k@example.com'))!;
    await page.goto(`${server.issuer}/admin/users/${hana.id}`);
    await submit(page, page.getByRole('button', { name: 'Delete user' }));
    assert.match(await page.locator('#confirm-delete-error').innerText(), /Tick the box/);
    assert.ok(await server.app.accounts.find(hana.id), 'not deleted without the box');
    await page.getByLabel('Yes, delete hana.k@example.com').check();
    await submit(page, page.getByRole('button', { name: 'Delete user' }));
    assert.equal(new URL(page.url()).pathname, '/admin/users');
    assert.match(await page.getByRole('status').innerText(), /deleted/);
    assert.equal(await server.app.accounts.find(hana.id), undefined);

    await page.goto(`${server.issuer}/admin/users/${adminId}`);
    for (const name of ['Disable', 'Revoke admin', 'Delete user']) assert.equal(await page.getByRole('button', { name }).count(), 0, `${name} is not offered`);
    assert.match(await page.locator('#own-account').innerText(), /another admin/);
    // Posted anyway: refused, nothing happens.
    const csrf = await page.locator('input[name=_csrf]').first().inputValue();
    for (const action of ['disable', 'revoke-admin', 'delete']) {
      const res = await page.request.post(`${server.issuer}/admin/users/${adminId}/${action}`, { form: { _csrf: csrf, confirm: 'yes' }, maxRedirects: 0 });
      assert.equal(res.status(), 400, action);
    }
    const me = (await server.app.accounts.find(adminId))!;
    assert.equal(me.disabled, false);
    assert.equal(me.admin, true);
    await check(page, 'user-own');
    assert.deepEqual(unexpected(), []);
  });
});
