import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { AxeBuilder } from '@axe-core/playwright';
import type { Browser, Page } from 'playwright-core';
import { SCREENSHOTS, currentStep, fillCode, fillLogin, launchBrowser, newContext, submit, watchProblems } from '../helpers/browser.ts';
import { freePort, startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { nextTotpCode } from '../helpers/totp.ts';
import { startCompanyProvider } from '../helpers/upstream.ts';
import { UpstreamIdentities } from '../../src/upstream/identities.ts';

/**
 * The console's "Sign-in providers" screen in a real Chromium: an admin adds the company's provider (every
 * mistake shown at once, next to its field), edits it, sees the identity a person linked by signing in
 * through it on that person's page, unlinks one, is refused the last way in, and removes the provider.
 * Every screen is checked with axe; pictures go to docs/screenshots/admin-provider*.png with UPDATE_SCREENSHOTS=1.
 */
const ADMIN = 'root@example.com';
const PASSWORD = 'correct horse battery staple';

describe('console: sign-in providers in a browser', () => {
  let redis: TestRedis;
  let server: TestServer;
  let company: Awaited<ReturnType<typeof startCompanyProvider>>;
  let browser: Browser;
  let adminSecret: string;

  before(async () => {
    redis = await startRedis();
    const port = await freePort();
    company = await startCompanyProvider({ redirectUri: `http://localhost:${port}/upstream/callback`, clientSecret: 'company-secret' });
    server = await startServer({ redisUrl: redis.url, port, env: { MFA_POLICY: 'optional' } });
    const created = await server.app.ops.createUser({ kind: 'cli' }, { email: ADMIN, password: PASSWORD, admin: true, totp: true });
    adminSecret = new URL(created.totp_uri!).searchParams.get('secret')!;
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await company?.close();
    await redis?.dispose();
  });

  /** No serious or critical accessibility violation, and the picture for the docs. */
  async function check(page: Page, name: string) {
    const { violations } = await new AxeBuilder({ page }).analyze();
    const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    assert.deepEqual(bad.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`), [], `axe on ${name}`);
    if (!name.startsWith('-')) {
      mkdirSync(SCREENSHOTS, { recursive: true });
      await page.screenshot({ path: new URL(`admin-${name}.png`, SCREENSHOTS).pathname, fullPage: true });
    }
  }

  const heading = (page: Page) => page.getByRole('heading', { level: 1 }).innerText();
  const flash = (page: Page) => page.getByRole('status').innerText();

  test('add (every mistake at once, next to its field), edit, see and unlink a linked identity, refuse the last way in, remove', async () => {
    const context = await newContext(browser);
    const seen = watchProblems(context);
    const page = await context.newPage();
    await page.goto(`${server.issuer}/admin`);
    await fillLogin(page, ADMIN, PASSWORD);
    await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    assert.equal(await currentStep(page, ''), 'mfa');
    await fillCode(page, await nextTotpCode(server.issuer, adminSecret));
    await submit(page, page.getByRole('button', { name: 'Verify' }));

    await submit(page, page.getByRole('navigation', { name: 'Console' }).getByRole('link', { name: 'Sign-in providers' }));
    assert.equal(await heading(page), 'Sign-in providers');
    assert.match(await page.locator('.empty').innerText(), /No sign-in providers yet — add one/);
    await check(page, '-providers-empty');

    // A generic OpenID Connect provider with three mistakes among right fields: all three come back at once.
    await submit(page, page.getByRole('link', { name: 'New provider' }));
    assert.equal(await heading(page), 'New sign-in provider');
    await page.getByLabel('Id', { exact: true }).fill('acme');
    await page.getByLabel('Button name').fill('Acme');
    await page.getByLabel('Issuer').fill('not a url');
    await page.getByLabel('Client secret').fill('company-secret');
    await page.getByLabel('Allowed domains').fill('acme.test not_a_domain!');
    await page.getByLabel(/^Create accounts on first use/).check();
    await page.getByLabel(/^Ask Latchkey's own second factor/).uncheck();
    const answer = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/admin/providers');
    await submit(page, page.getByRole('button', { name: 'Add provider' }));
    assert.equal((await answer).status(), 400);
    for (const [field, label] of [['provider-issuer', 'Issuer'], ['provider-client-id', 'Client id'], ['provider-allowed-domains', 'Allowed domains']] as const) {
      assert.ok(await page.locator(`#${field}-error`).isVisible(), `an error next to ${label}`);
      assert.equal(await page.getByLabel(label, { exact: true }).getAttribute('aria-invalid'), 'true', label);
      assert.match((await page.getByLabel(label, { exact: true }).getAttribute('aria-describedby')) ?? '', new RegExp(`${field}-error`));
    }
    assert.match(await page.locator('#provider-client-id-error').innerText(), /client id the provider gave Latchkey/);
    assert.match(await page.locator('#provider-allowed-domains-error').innerText(), /Domain names only/);
    assert.equal(await page.locator('#provider-name-error').count(), 0, 'a right field has no error');
    assert.equal(await page.getByLabel('Button name').inputValue(), 'Acme', 'what was typed stays');
    assert.equal(await page.getByLabel('Client secret').inputValue(), '', 'the secret is never sent back');
    await check(page, '-provider-new');

    await page.getByLabel('Issuer').fill(company.issuer);
    await page.getByLabel('Client id').fill('latchkey');
    await page.getByLabel('Client secret').fill('company-secret');
    await page.getByLabel('Allowed domains').fill('acme.test');
    await submit(page, page.getByRole('button', { name: 'Add provider' }));
    assert.equal(await heading(page), 'Acme');
    assert.match(await flash(page), /Acme added\. Its client secret is sealed/);
    assert.ok(!(await page.content()).includes('company-secret'), 'the secret is not shown');

    // Edit one setting: 303 back to the page, the flash names what changed.
    await page.getByLabel('Button name').fill('Acme Corp');
    const saved = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/admin/providers/acme/settings');
    await submit(page, page.getByRole('button', { name: 'Save settings' }));
    assert.equal((await saved).status(), 303);
    assert.equal(await heading(page), 'Acme Corp');
    assert.equal(await flash(page), 'Settings saved: button name.');
    assert.equal(await page.getByLabel('Client id').inputValue(), 'latchkey');
    await check(page, 'provider');
    await page.goto(`${server.issuer}/admin/providers`);
    assert.ok(await page.getByRole('link', { name: 'Acme Corp' }).isVisible());
    await check(page, 'providers');

    // A person signs in through it: the account it creates carries the company identity.
    const person = await newContext(browser);
    const personPage = await person.newPage();
    company.as('emp-7', { email: 'grace@acme.test', email_verified: true, name: 'Grace Hopper' });
    await personPage.goto(`${server.issuer}/account`);
    await submit(personPage, personPage.getByRole('link', { name: 'Continue with Acme Corp' }));
    await personPage.waitForURL((u) => u.pathname === '/account');
    await person.close();
    const grace = (await server.app.accounts.findByEmail('grace@acme.test'))!;
    assert.ok(grace, 'the sign-in created the account');
    // A second identity, as if Grace had also linked GitHub from her account page.
    await server.app.ops.addProvider({ kind: 'cli' }, { id: 'gh', preset: 'github', client_id: 'gh', client_secret: 'gh-secret' });
    const identities = new UpstreamIdentities(server.store);
    const github = { accountId: grace.id, provider: 'gh', iss: 'https://github.com', sub: '583231', email: 'grace@users.noreply.github.com', via: 'account_page' as const };
    assert.ok(await identities.link({ ...github, linkedAt: Date.now() }));

    const userPage = `${server.issuer}/admin/users/${encodeURIComponent(grace.id)}`;
    await page.goto(userPage);
    const section = page.locator('#sign-in-providers');
    assert.match(await section.innerText(), /Acme Corp[\s\S]*grace@acme\.test[\s\S]*created/);
    assert.match(await section.innerText(), /GitHub[\s\S]*grace@users\.noreply\.github\.com/);
    await check(page, '-user-providers');
    const unlinkOf = (name: string) => section.getByRole('listitem').filter({ hasText: name }).getByRole('button', { name: 'Unlink' });
    await submit(page, unlinkOf('GitHub'));
    assert.equal(await flash(page), 'Unlinked: that provider no longer signs them in.');
    assert.doesNotMatch(await section.innerText(), /GitHub/);
    assert.equal((await server.app.ops.userUpstreams(grace.id)).identities.length, 1);
    assert.ok(server.logs.some((l) => l.event === 'upstream_unlinked' && l.accountId === grace.id && l.provider === 'gh'));
    // Her company identity is now the only way she signs in: no Unlink is offered.
    assert.match(await section.innerText(), /The only way they sign in/);
    assert.equal(await unlinkOf('Acme Corp').count(), 0);

    // A page loaded while she still had two (another admin unlinks GitHub meanwhile): the refusal is next to the form.
    assert.ok(await identities.link({ ...github, linkedAt: Date.now() }));
    await page.goto(userPage);
    await server.app.ops.unlinkUserUpstream({ kind: 'cli' }, grace.id, 'gh');
    const refused = page.waitForResponse((r) => r.request().method() === 'POST' && r.url().endsWith('/unlink-upstream'));
    await submit(page, unlinkOf('Acme Corp'));
    assert.equal((await refused).status(), 409, 'a conflict, as the admin API answers it (identity_last_way_in)');
    assert.match(await section.locator('.field-error').innerText(), /^The acme identity is the only way this account signs in \(its password was never set, and it has no passkey\): it stays linked until a password is set or a passkey is added$/);
    assert.equal((await server.app.ops.userUpstreams(grace.id)).identities.length, 1, 'the last way in stays');
    await check(page, '-user-last-way-in');

    // Removal asks for the ticked box.
    await page.goto(`${server.issuer}/admin/providers/acme`);
    await submit(page, page.getByRole('button', { name: 'Remove provider' }));
    assert.match(await page.locator('#confirm-remove-error, .field-error').first().innerText(), /Tick the box/);
    assert.equal((await server.app.ops.providers()).length, 2);
    await page.getByLabel('Yes, remove Acme Corp').check();
    await submit(page, page.getByRole('button', { name: 'Remove provider' }));
    assert.equal(await heading(page), 'Sign-in providers');
    assert.match(await flash(page), /Sign-in provider acme removed/);
    assert.deepEqual((await server.app.ops.providers()).map((p) => p.id), ['gh']);
    assert.deepEqual(seen.filter((p) => !/status of 4\d\d/.test(p)), []);
    await context.close();
  });
});
