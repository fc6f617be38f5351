import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { AxeBuilder } from '@axe-core/playwright';
import * as oc from 'openid-client';
import type { Browser, Page } from 'playwright-core';
import { SCREENSHOTS, authorize, currentStep, enrollOnPage, fillCode, fillLogin, launchBrowser, newContext, startFakeApp, submit, watchProblems } from '../helpers/browser.ts';
import { keys } from '../../src/storage/keys.ts';
import { CookieJar, endpoints, signIn } from '../helpers/flow.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { SoftAuthenticator } from '../helpers/soft-authenticator.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { nextTotpCode } from '../helpers/totp.ts';

/**
 * The admin console end to end: a real Chromium is the admin, on Latchkey over a real Redis, under
 * MFA_POLICY=optional so that a password-only session exists to be stepped up. Every screen is checked
 * with axe (no serious or critical violation) and photographed (docs/screenshots/admin-*.png with
 * UPDATE_SCREENSHOTS=1).
 */
const ADMIN = 'root@example.com';
const PASSWORD = 'correct horse battery staple';

describe('admin console in a browser', () => {
  let redis: TestRedis;
  let server: TestServer;
  let browser: Browser;
  let fakeApp: Awaited<ReturnType<typeof startFakeApp>>;
  let adminId: string;
  let adminSecret: string;
  let admin: Awaited<ReturnType<typeof open>>;

  before(async () => {
    redis = await startRedis();
    server = await startServer({ redisUrl: redis.url, env: { MFA_POLICY: 'optional' } });
    fakeApp = await startFakeApp();
    const created = await server.app.ops.createUser({ kind: 'cli' }, { email: ADMIN, password: PASSWORD, admin: true, totp: true });
    adminId = created.user.id;
    adminSecret = new URL(created.totp_uri!).searchParams.get('secret')!;
    browser = await launchBrowser();
  });

  after(async () => {
    await admin?.context.close();
    await browser?.close();
    await server?.close();
    await fakeApp?.close();
    await redis?.dispose();
  });

  async function open() {
    const context = await newContext(browser);
    // A 4xx answer is what some steps expect; anything else the browser complains of (CSP, scripts) is a problem.
    const seen = watchProblems(context);
    const problems = { filter: () => seen.filter((p) => !/Failed to load resource: the server responded with a status of 4\d\d/.test(p)) };
    return { context, page: await context.newPage(), problems };
  }

  /** No serious or critical accessibility violation, and the picture for the docs. */
  async function check(page: Page, name: string) {
    const { violations } = await new AxeBuilder({ page }).analyze();
    const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    assert.deepEqual(bad.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`), [], `axe on ${name}`);
    mkdirSync(SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: new URL(`admin-${name}.png`, SCREENSHOTS).pathname, fullPage: true });
  }

  async function signInWithTotp(page: Page, email: string, secret: string, issuer = server.issuer) {
    await page.goto(`${issuer}/admin`);
    assert.equal(await currentStep(page, ''), 'login', 'the console sends a stranger to sign in');
    await fillLogin(page, email, PASSWORD);
    await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    assert.equal(await currentStep(page, ''), 'mfa', 'the console asks for the second factor');
    await fillCode(page, await nextTotpCode(issuer, secret));
    await submit(page, page.getByRole('button', { name: 'Verify' }));
  }

  const heading = (page: Page) => page.getByRole('heading', { level: 1 }).innerText();

  test('an admin signs in with TOTP, creates an app (a field error first, then its secret once), and an openid-client RP signs in through it', async () => {
    admin = await open();
    const { page, problems } = admin;
    await signInWithTotp(page, ADMIN, adminSecret);
    assert.equal(new URL(page.url()).pathname, '/admin');
    assert.equal(await heading(page), 'Overview');
    assert.equal(await page.locator('.tile .big').first().innerText(), 'Answering');
    await check(page, 'overview');

    await submit(page, page.getByRole('navigation', { name: 'Console' }).getByRole('link', { name: 'Applications' }));
    assert.match(await page.locator('.empty').innerText(), /No applications yet — create one/);
    await submit(page, page.getByRole('link', { name: 'New application' }));
    await submit(page, page.getByRole('link', { name: /^Web app/ }));
    await page.getByLabel('Name').fill('Shop');
    await page.getByLabel('Redirect URIs').fill('not a url');
    await page.getByLabel('Scopes').fill('openid email');
    await submit(page, page.getByRole('button', { name: 'Create application' }));
    const fieldError = page.locator('#app-redirect-uris-error');
    assert.match(await fieldError.innerText(), /redirect/i, 'the error is next to the redirect URIs field');
    assert.equal(await page.getByLabel('Redirect URIs').getAttribute('aria-invalid'), 'true');
    assert.match((await page.getByLabel('Redirect URIs').getAttribute('aria-describedby')) ?? '', /app-redirect-uris-error/);
    assert.equal(await page.getByLabel('Name').inputValue(), 'Shop', 'what was typed stays');
    await check(page, 'app-new');

    const redirectUri = `${fakeApp.origin}/cb`;
    await page.getByLabel('Redirect URIs').fill(redirectUri);
    await submit(page, page.getByRole('button', { name: 'Create application' }));
    assert.equal(await heading(page), 'Shop is ready');
    const clientId = (await page.locator('#client-id').innerText()).trim();
    const secret = (await page.locator('#client-secret').innerText()).trim();
    assert.ok(secret.length >= 32);
    assert.match(await page.getByRole('status').innerText(), /will not be shown again/);
    await check(page, 'app-created');
    // The copy button (the page's one script, allowed by its CSP as script-src 'self').
    await admin.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.issuer });
    await page.getByRole('button', { name: 'Copy secret' }).click();
    await page.getByRole('button', { name: 'Copied' }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
    await submit(page, page.getByRole('link', { name: 'Done' }));
    assert.equal(await heading(page), 'Shop');
    assert.equal(await page.getByLabel('Redirect URIs', { exact: true }).inputValue(), redirectUri);
    assert.ok(!(await page.content()).includes(secret), 'the secret is not shown again');
    await check(page, 'app');
    await page.goto(`${server.issuer}/admin/apps`);
    await check(page, 'apps');

    const rp = await oc.discovery(new URL(server.issuer), clientId, undefined, oc.ClientSecretBasic(secret), { execute: [oc.allowInsecureRequests] });
    const verifier = oc.randomPKCECodeVerifier();
    const state = oc.randomState();
    const url = oc.buildAuthorizationUrl(rp, { redirect_uri: redirectUri, scope: 'openid email', code_challenge: await oc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', state });
    const callback = await authorize(page, url, { redirectUri, email: ADMIN, password: PASSWORD, totpSecret: adminSecret });
    const tokens = await oc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: verifier, expectedState: state, idTokenExpected: true });
    assert.equal(tokens.claims()!.sub, adminId);
    assert.equal(tokens.claims()!.email, ADMIN);

    const created = server.logs.find((l) => l.event === 'client_created' && l.clientId === clientId);
    assert.deepEqual(created?.actor, { kind: 'account', accountId: adminId }, 'the actor is the signed-in admin');
    assert.ok(!JSON.stringify(server.logs).includes(secret), 'the client secret reached no log line');
    assert.deepEqual(problems.filter(), []);
  });

  test('APIs, Users, Activity and Keys: each screen works, with its actions', async () => {
    const { page, problems } = admin;
    await page.goto(`${server.issuer}/admin/apis`);
    // The admin API itself is registered at start.
    assert.ok(await page.getByRole('link', { name: `${server.issuer}/admin/api` }).count());
    await check(page, 'apis');
    await submit(page, page.getByRole('link', { name: 'New API' }));
    await page.getByLabel('Identifier').fill('https://orders.example.com');
    await page.getByLabel('Scopes').fill('openid');
    await submit(page, page.getByRole('button', { name: 'Create API' }));
    assert.match(await page.locator('#api-scope-error').innerText(), /OpenID scope/);
    await check(page, 'api-new');
    await page.getByLabel('Scopes').fill('orders:read orders:write');
    await submit(page, page.getByRole('button', { name: 'Create API' }));
    assert.equal(await heading(page), 'https://orders.example.com is ready');
    await submit(page, page.getByRole('link', { name: 'Done' }));
    assert.equal(await heading(page), 'https://orders.example.com');
    await check(page, 'api');
    await submit(page, page.getByRole('button', { name: 'Delete API' }));
    assert.match(await page.locator('#confirm-delete-error').innerText(), /Tick the box/);
    assert.ok(await server.app.registry.findResource('https://orders.example.com'), 'not deleted without the box');
    await page.getByLabel('Yes, delete https://orders.example.com').check();
    await submit(page, page.getByRole('button', { name: 'Delete API' }));
    assert.equal(new URL(page.url()).pathname, '/admin/apis');
    assert.equal(await server.app.registry.findResource('https://orders.example.com'), undefined);

    const other = await server.app.accounts.create({ email: 'bob@example.com', password: PASSWORD });
    await page.goto(`${server.issuer}/admin/users`);
    await page.getByLabel('Search by email').fill('bob@');
    await submit(page, page.getByRole('button', { name: 'Search' }));
    assert.deepEqual(await page.locator('table.list tbody a').allInnerTexts(), ['bob@example.com']);
    await check(page, 'users');
    await submit(page, page.getByRole('link', { name: 'bob@example.com' }));
    assert.equal(await heading(page), 'bob@example.com');
    await page.getByLabel('Yes, make bob@example.com an admin').check();
    await submit(page, page.getByRole('button', { name: 'Grant admin' }));
    assert.equal(await page.getByRole('status').innerText(), 'Now an admin.');
    assert.equal((await server.app.accounts.find(other.id))!.admin, true);
    await page.getByLabel('New password').fill('short');
    await submit(page, page.getByRole('button', { name: 'Set password' }));
    assert.match(await page.locator('#new-password-error').innerText(), /password/i);
    // The one password rule: common passwords and the email's own name are refused, saying why.
    for (const [weak, why] of [['password', /among the most common ones/], ['12345678', /among the most common ones/], ['Bob-is-my-name-2026', /contains the name of the email address/]] as const) {
      await page.getByLabel('New password').fill(weak);
      await submit(page, page.getByRole('button', { name: 'Set password' }));
      assert.match(await page.locator('#new-password-error').innerText(), why);
      assert.equal(await server.app.accounts.authenticate('bob@example.com', weak), undefined, `${weak} was not set`);
    }
    await page.getByLabel('Yes, disable bob@example.com').check();
    await submit(page, page.getByRole('button', { name: 'Disable' }));
    assert.equal((await server.app.accounts.find(other.id))!.disabled, true);
    await check(page, 'user');
    // Their own account: the admin cannot disable themself by mistake (not offered, and refused if posted anyway).
    await page.goto(`${server.issuer}/admin/users/${adminId}`);
    assert.equal(await page.getByRole('button', { name: 'Disable' }).count(), 0);
    const csrf = await page.locator('input[name=_csrf]').first().inputValue();
    const posted = await page.request.post(`${server.issuer}/admin/users/${adminId}/disable`, { form: { _csrf: csrf, confirm: 'yes' }, maxRedirects: 0 });
    assert.equal(posted.status(), 400);
    assert.match(await posted.text(), /another admin/);
    assert.equal((await server.app.accounts.find(adminId))!.disabled, false);

    await server.app.activity.flush();
    await page.goto(`${server.issuer}/admin/activity`);
    await page.getByLabel('Events', { exact: true }).selectOption('admin_granted');
    await submit(page, page.getByRole('button', { name: 'Filter' }));
    assert.equal(await page.locator('table.list tbody tr').count(), 1);
    assert.match(await page.locator('table.list tbody').innerText(), /admin role granted/);
    const exported = await page.request.get(`${server.issuer}/admin/activity.jsonl?event=admin_granted`);
    assert.equal(exported.status(), 200);
    const lines = (await exported.text()).trim().split('\n').map((l) => JSON.parse(l) as { event: string; accountId: string });
    assert.deepEqual(lines.map((l) => [l.event, l.accountId]), [['admin_granted', other.id]]);
    await page.goto(`${server.issuer}/admin/activity?from=yesterday`);
    assert.match(await page.locator('#f-from-error').innerText(), /date and time/);

    await page.goto(`${server.issuer}/admin/keys`);
    const before = await page.locator('table.list tbody tr').count();
    assert.ok(before >= 1);
    await check(page, 'keys');
    await page.getByLabel('Yes, rotate the signing keys').check();
    await submit(page, page.getByRole('button', { name: 'Rotate keys' }));
    assert.match(await page.getByRole('status').innerText(), /Rotated/);
    assert.ok((await page.locator('table.list tbody tr').count()) > before);
    assert.deepEqual(problems.filter(), []);
  });

  test('an API\'s scope descriptions: set on the new-API form, edited on its page (a control character refused next to the field), and shown on the consent page an openid-client RP leads to', async () => {
    const { page, problems } = admin;
    const uri = 'https://notes.example.com';
    await page.goto(`${server.issuer}/admin/apis/new`);
    await page.getByLabel('Identifier').fill(uri);
    await page.getByLabel('Scopes').fill('notes:read notes:write');
    await page.getByLabel('Scope descriptions').fill('notes:read = Read your notes');
    await submit(page, page.getByRole('button', { name: 'Create API' }));
    assert.equal(await heading(page), `${uri} is ready`);
    await submit(page, page.getByRole('link', { name: 'Done' }));
    assert.match(await page.locator('dl.facts').innerText(), /notes:read — Read your notes/);
    assert.equal(await page.getByLabel('Scope descriptions').inputValue(), 'notes:read = Read your notes\nnotes:write =', 'a line for every scope');

    // A tab is a control character: refused next to the field, nothing stored, what was typed kept.
    await page.getByLabel('Scope descriptions').fill('notes:read = Read your notes\nnotes:write = Change\tyour notes');
    await submit(page, page.getByRole('button', { name: 'Save settings' }));
    assert.match(await page.locator('#api-scope-descriptions-error').innerText(), /notes:write.*one line of plain text/);
    assert.equal(await page.getByLabel('Scope descriptions').getAttribute('aria-invalid'), 'true');
    assert.equal(await server.app.registry.scopeDescription('notes:write'), undefined);

    const typed = 'Change <b>your</b> notes & lists';
    await page.getByLabel('Scope descriptions').fill(`notes:write = ${typed}`);
    const posted = page.waitForResponse((r) => r.request().method() === 'POST' && r.url().endsWith('/settings'));
    await submit(page, page.getByRole('button', { name: 'Save settings' }));
    assert.equal((await posted).status(), 303);
    assert.equal(await page.getByRole('status').innerText(), 'Settings saved: scope descriptions.');
    assert.deepEqual((await server.app.ops.resource(uri)).scopeDescriptions, { 'notes:write': typed }, 'the line left out is removed');
    await check(page, 'api');

    // An app asks for both scopes; the person (this admin) reads the descriptions on the consent page.
    const redirectUri = `${fakeApp.origin}/notes-cb`;
    const app = await server.app.ops.createClient({ kind: 'cli' }, { name: 'Notebook', grants: ['authorization_code'], redirectUris: [redirectUri], scope: 'openid notes:read notes:write' });
    const rp = await oc.discovery(new URL(server.issuer), app.client.client_id, undefined, oc.ClientSecretBasic(app.client_secret), { execute: [oc.allowInsecureRequests] });
    const verifier = oc.randomPKCECodeVerifier();
    const url = oc.buildAuthorizationUrl(rp, { redirect_uri: redirectUri, scope: 'openid notes:read notes:write', code_challenge: await oc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
    let asked: string[] = [];
    const callback = await authorize(page, url, {
      redirectUri,
      async onConsent(p) {
        asked = await p.locator('ul.scopes li').allInnerTexts();
      },
    });
    assert.deepEqual(asked, ['Know who you are', 'Use the API with permission “notes:read”', typed], 'the description as typed (escaped, not markup); the generic line where there is none');
    const tokens = await oc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: verifier });
    assert.deepEqual(new Set(tokens.scope?.split(' ')), new Set(['notes:read', 'notes:write']));
    assert.deepEqual(problems.filter(), []);
  });

  test('the activity log reads as names: a group and single kinds at once, people by email, apps by name (a deleted one marked), one date format, a detail page per event', async () => {
    const { page, problems } = admin;
    const gone = await server.app.ops.createClient({ kind: 'account', accountId: adminId }, { name: 'Short-lived', grants: ['client_credentials'], scope: 'openid' });
    await server.app.ops.deleteClient({ kind: 'account', accountId: adminId }, gone.client.client_id);
    const bob = (await server.app.accounts.findByEmail('bob@example.com'))!;
    await server.app.activity.flush();
    await page.goto(`${server.issuer}/admin/activity`);
    await page.getByRole('checkbox', { name: 'Admin changes' }).check();
    await page.getByLabel('Events', { exact: true }).selectOption(['signin_succeeded', 'second_factor_succeeded']);
    await submit(page, page.getByRole('button', { name: 'Filter' }));
    const url = new URL(page.url());
    assert.deepEqual([url.searchParams.getAll('group'), url.searchParams.getAll('event')], [['admin'], ['signin_succeeded', 'second_factor_succeeded']]);
    const table = await page.locator('table.list tbody').innerText();
    const kinds = new Set(await page.locator('table.list tbody td:nth-child(2)').allInnerTexts());
    for (const kind of ['admin_granted', 'client_created', 'client_deleted', 'signin_succeeded']) assert.ok(kinds.has(kind), `${kind} listed`);
    assert.ok(![...kinds].some((k) => k === 'token_issued'), 'only the chosen kinds');
    assert.match(table, /admin role granted · bob@example\.com/);
    assert.ok(!table.includes(bob.id) && !table.includes(adminId), 'no account id where an email is known');
    assert.match(table, new RegExp(`${gone.client.client_id} \\(deleted\\)`), 'a deleted app: its id, marked');
    const shop = (await server.app.ops.clientPage({ limit: 100 })).clients.find((c) => c.client_name === 'Shop')!;
    assert.ok(await page.locator('table.list tbody a', { hasText: /^Shop$/ }).count(), 'an app by its name');
    assert.ok(!table.includes(shop.client_id));
    assert.ok((await page.locator('table.list tbody td:nth-child(4)').allInnerTexts()).includes(ADMIN), 'the admin who did it, by email');
    const time = page.locator('table.list tbody time').first();
    assert.match(await time.innerText(), /^\d{4}-\d\d-\d\d \d\d:\d\d UTC$/);
    assert.match((await time.getAttribute('datetime'))!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    await check(page, 'activity');
    // The keys page writes its times the same way.
    await page.goto(`${server.issuer}/admin/keys`);
    assert.match(await page.locator('table.list tbody time').first().innerText(), /^\d{4}-\d\d-\d\d \d\d:\d\d UTC$/);

    await page.goto(`${server.issuer}/admin/activity?event=admin_granted`);
    await submit(page, page.locator('table.list tbody tr').first().locator('a').first());
    assert.match(new URL(page.url()).pathname, /^\/admin\/activity\/\d+-\d+$/);
    assert.equal(await heading(page), 'admin role granted');
    const fields = await page.locator('#event-fields').innerText();
    assert.match(fields, /event\s+admin_granted/);
    assert.match(fields, new RegExp(`accountId\\s+${bob.id}`), 'every field, ids included');
    assert.match(fields, /source\s+admin_api/);
    assert.match(await page.locator('dl.facts').first().innerText(), /Person\s+bob@example\.com/);
    await check(page, 'activity-event');
    const missing = await page.goto(`${server.issuer}/admin/activity/1-0`);
    assert.equal(missing!.status(), 404);
    assert.deepEqual(problems.filter(), []);
  });

  test('the console chrome: the admin, /account and sign-out in the header; a post answers 303 and a reload sends nothing again; a 404 inside the layout; no embedded-store badge on Redis', async () => {
    const { page, problems } = admin;
    await page.goto(`${server.issuer}/admin`);
    const header = page.getByRole('banner');
    assert.match(await header.innerText(), new RegExp(`Signed in as ${ADMIN.replace('.', '\\.')}`));
    assert.equal(await header.getByRole('link', { name: 'Your account' }).getAttribute('href'), '/account');
    assert.equal(await header.getByRole('link', { name: 'Sign out' }).getAttribute('href'), '/session/end');
    assert.equal(await page.locator('#embedded-store').count(), 0, 'Redis keeps what it holds: no badge');
    await check(page, 'overview');

    const shop = (await server.app.ops.clientPage({ limit: 100 })).clients.find((c) => c.client_name === 'Shop')!;
    const updates = () => server.logs.filter((l) => l.event === 'client_updated' && l.clientId === shop.client_id).length;
    const before = updates();
    await page.goto(`${server.issuer}/admin/apps/${shop.client_id}`);
    await page.getByLabel('Redirect URIs', { exact: true }).fill([...shop.redirect_uris, `${fakeApp.origin}/other`].join('\n'));
    const posted = page.waitForResponse((r) => r.request().method() === 'POST' && r.url().endsWith('/settings'));
    await submit(page, page.getByRole('button', { name: 'Save settings' }));
    assert.equal((await posted).status(), 303, 'the post answers with a redirect to a page');
    assert.equal(new URL(page.url()).pathname, `/admin/apps/${shop.client_id}`);
    assert.equal(await page.getByRole('status').innerText(), 'Settings saved: redirect URIs.');
    assert.equal(updates(), before + 1);
    const reloaded = await page.reload();
    assert.equal(reloaded!.request().method(), 'GET');
    assert.equal(updates(), before + 1, 'the reload changed nothing');
    assert.equal(await page.getByRole('status').count(), 0, 'the message is shown once');

    const missing = await page.goto(`${server.issuer}/admin/nowhere`);
    assert.equal(missing!.status(), 404);
    assert.equal(await heading(page), 'Not found');
    assert.ok(await page.getByRole('navigation', { name: 'Console' }).count(), 'inside the console layout');
    assert.match(await page.getByRole('banner').innerText(), /Signed in as/);
    await page.goto(`${server.issuer}/admin/apps/nope`);
    assert.equal(await heading(page), 'Not found');
    await check(page, 'not-found');
    assert.deepEqual(problems.filter(), []);
  });

  test('on the embedded store the header says nothing survives a restart', async () => {
    const memory = await startServer({ env: { MFA_POLICY: 'optional' } });
    const { context, page, problems } = await open();
    try {
      assert.equal(memory.store.kind, 'memory');
      const made = await memory.app.ops.createUser({ kind: 'cli' }, { email: ADMIN, password: PASSWORD, admin: true, totp: true });
      await signInWithTotp(page, ADMIN, new URL(made.totp_uri!).searchParams.get('secret')!, memory.issuer);
      assert.equal(await heading(page), 'Overview');
      assert.match(await page.locator('#embedded-store').innerText(), /Embedded store.*nothing survives a restart/);
      const { violations } = await new AxeBuilder({ page }).analyze();
      assert.deepEqual(violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => v.id), []);
      assert.deepEqual(problems.filter(), []);
    } finally {
      await context.close();
      await memory.close();
    }
  });

  test('an app\'s secrets: rotated with an overlap picked on the form, both listed with their ages, the old one revoked early (asked once)', async () => {
    const { page, problems } = admin;
    const machine = await server.app.ops.createClient({ kind: 'cli' }, { name: 'Nightly export', grants: ['client_credentials'], scope: 'openid' });
    const id = machine.client.client_id;
    const old = machine.client_secret!;
    const works = async (secret: string) => (await endpoints(server.issuer).token({ clientId: id, secret }, { grant_type: 'client_credentials' })).status === 200 ? 'works' : 'refused';
    await page.goto(`${server.issuer}/admin/apps/${id}`);
    assert.match(await page.locator('.facts').last().innerText(), /Current secret\s+Made \d{4}-\d\d-\d\d/);
    assert.equal(await page.getByLabel('Keep the current secret working').inputValue(), '86400', 'an overlap is the default on the console');
    await submit(page, page.getByRole('button', { name: 'Rotate secret' }));
    assert.match(await page.locator('#confirm-rotate-error').innerText(), /Tick the box/);
    assert.equal(await works(old), 'works', 'nothing rotated without the box');
    await page.getByLabel('Keep the current secret working').selectOption('3600');
    await page.getByLabel('Yes, make a new secret for Nightly export').check();
    await submit(page, page.getByRole('button', { name: 'Rotate secret' }));
    assert.equal(await heading(page), 'New client secret');
    const fresh = (await page.locator('#client-secret').innerText()).trim();
    assert.match(await page.locator('.lead').innerText(), /The old secret keeps working until \d{4}-\d\d-\d\d \d\d:\d\d UTC/);
    assert.equal(await works(fresh), 'works');
    assert.equal(await works(old), 'works', 'the old secret works during the overlap');
    await submit(page, page.getByRole('link', { name: 'Done' }));
    assert.match(await page.locator('#old-secret').innerText(), /still works until/);
    assert.ok(!(await page.content()).includes(fresh), 'the new secret is not shown again');
    await check(page, 'app-secrets');
    await submit(page, page.getByRole('button', { name: 'Revoke old secret' }));
    assert.match(await page.locator('#confirm-revoke-old-error').innerText(), /Tick the box/);
    assert.equal(await works(old), 'works');
    await page.getByLabel('Yes, end the old secret of Nightly export now').check();
    await submit(page, page.getByRole('button', { name: 'Revoke old secret' }));
    assert.equal(await page.getByRole('status').innerText(), 'The old secret no longer works.');
    assert.equal(await page.locator('#old-secret').count(), 0);
    assert.equal(await works(old), 'refused');
    assert.equal(await works(fresh), 'works');
    assert.deepEqual(problems.filter(), []);
  });

  test('a person\'s sessions: each with where, browser, factors and apps; one ended with its End button, then all', async () => {
    const { page, problems } = admin;
    const dana = await server.app.accounts.create({ email: 'dana@example.com', password: PASSWORD });
    const shop = await server.app.ops.createClient({ kind: 'cli' }, { name: 'Dana\'s shop', grants: ['authorization_code'], redirectUris: [`${fakeApp.origin}/cb`], scope: 'openid', firstParty: true });
    const app = { clientId: shop.client.client_id, secret: shop.client_secret!, redirectUri: `${fakeApp.origin}/cb` };
    const jar = (ua: string) => Object.assign(new CookieJar(), { userAgent: ua });
    const laptop = await signIn({ issuer: server.issuer, client: app, user: { email: dana.email, password: PASSWORD }, scope: 'openid', jar: jar('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36') });
    const phone = await signIn({ issuer: server.issuer, client: app, user: { email: dana.email, password: PASSWORD }, scope: 'openid', jar: jar('Mozilla/5.0 (Macintosh; Intel Mac OS X 14.1; rv:133.0) Gecko/20100101 Firefox/133.0') });
    assert.ok(laptop.code && phone.code);
    const signedIn = async (flow: typeof laptop) => Boolean((await signIn({ issuer: server.issuer, client: app, scope: 'openid', jar: flow.jar, params: { prompt: 'none' } })).code);

    await page.goto(`${server.issuer}/admin/users/${dana.id}`);
    const rows = page.locator('#sessions tbody tr');
    assert.equal(await rows.count(), 2);
    const text = await page.locator('#sessions').innerText();
    assert.match(text, /Chrome 131 on Linux/);
    assert.match(text, /Firefox 133 on macOS/);
    assert.match(text, /127\.0\.0\.1|::1/);
    assert.match(text, /Dana's shop/);
    assert.match(text, /password/);
    await check(page, 'user-sessions');

    await submit(page, page.getByRole('button', { name: /End the session .* from Chrome 131 on Linux/ }));
    assert.match(await page.getByRole('status').innerText(), /Session ended/);
    assert.equal(await rows.count(), 1);
    assert.equal(await signedIn(laptop), false, 'the ended browser is signed out');
    assert.equal(await signedIn(phone), true, 'the other browser stays signed in');

    await submit(page, page.getByRole('button', { name: 'End all' }));
    assert.match(await page.locator('#confirm-end-all-error').innerText(), /Tick the box/);
    assert.equal(await signedIn(phone), true);
    await page.getByLabel('Yes, end all sessions of dana@example.com').check();
    await submit(page, page.getByRole('button', { name: 'End all' }));
    assert.match(await page.locator('.empty').first().innerText(), /Not signed in anywhere/);
    assert.equal(await signedIn(phone), false);
    assert.deepEqual(problems.filter(), []);
  });

  test('a person with only a passkey: the user page lists the passkey and the recovery codes, not an authenticator app', async () => {
    const { page, problems } = admin;
    const pia = await server.app.accounts.create({ email: 'pia@example.com', password: PASSWORD });
    const device = new SoftAuthenticator({ origin: server.issuer });
    const registered = await server.app.passkeys.register(pia.id, 'e2e', device.create(await server.app.passkeys.registrationOptions(pia, 'e2e')), 'Pia’s laptop');
    assert.ok(registered.ok);
    // Recovery codes come with the first factor, as the sign-in's passkey enrollment issues them.
    assert.equal((await server.app.secondFactor.issueRecoveryCodesIfNone(pia.id)).length, 10);
    await page.goto(`${server.issuer}/admin/users/${pia.id}`);
    const factor = page.locator('dl.facts dd').nth(3);
    assert.equal(await page.locator('dl.facts dd').nth(5).innerText(), 'Not confirmed yet', 'whether the person confirmed the address');
    // Dates as the console writes every time (`when`): day, minute, UTC.
    const [listed, ...more] = await factor.locator('li').allInnerTexts();
    assert.equal(more.length, 0);
    assert.match(listed!, new RegExp(`^Passkey “Pia’s laptop”, added ${new Date().toISOString().slice(0, 10)} \\d\\d:\\d\\d UTC, never used$`));
    const text = await factor.innerText();
    assert.match(text, /10 of 10 recovery codes unused/);
    assert.doesNotMatch(text, /Authenticator app|undefined/);
    assert.ok(await page.getByLabel(/Yes, remove every second factor \(authenticator app, passkeys\)/).count(), 'the reset names the passkeys');
    await check(page, 'user-passkey');
    // An authenticator app and a passkey: both listed.
    await server.app.passkeys.register(adminId, 'e2e-admin', device.create(await server.app.passkeys.registrationOptions((await server.app.accounts.find(adminId))!, 'e2e-admin')), 'Security key');
    await page.goto(`${server.issuer}/admin/users/${adminId}`);
    const both = await page.locator('dl.facts dd').nth(3).locator('li').allInnerTexts();
    assert.equal(both.length, 2);
    assert.match(both[0]!, /^Authenticator app since \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC$/);
    assert.match(both[1]!, /^Passkey “Security key”, added /);
    assert.deepEqual(problems.filter(), []);
  });

  test('redirect URIs with a control character are refused next to the field, and nothing changes', async () => {
    const { page } = admin;
    const client = (await server.app.ops.clientPage({ limit: 100 })).clients.find((c) => c.client_name === 'Shop')!;
    await page.goto(`${server.issuer}/admin/apps/${client.client_id}`);
    const csrf = await page.locator('input[name=_csrf]').first().inputValue();
    const res = await page.request.post(`${server.issuer}/admin/apps/${client.client_id}/settings`, { form: { _csrf: csrf, name: 'Shop', scope: client.scope, pkce: 'required', redirect_uris: `${client.redirect_uris[0]}\u0007` }, maxRedirects: 0 });
    assert.equal(res.status(), 400);
    assert.match(await res.text(), /must not contain spaces, line breaks or other control characters/);
    assert.deepEqual((await server.app.ops.client(client.client_id)).redirect_uris, client.redirect_uris);
  });

  test('an app\'s settings: every one the API can change, edited in one submit, answered 303 with what changed, and stored', async () => {
    const { page, problems } = admin;
    const { client } = await server.app.ops.createClient({ kind: 'cli' }, { name: 'Ledger', grants: ['authorization_code', 'refresh_token'], redirectUris: [`${fakeApp.origin}/ledger/cb`], scope: 'openid email' });
    await page.goto(`${server.issuer}/admin/apps/${client.client_id}`);
    for (const label of ['Name', 'Post-logout redirect URIs', 'Scopes', 'PKCE', 'Back-channel logout URI', 'Refresh grace (seconds)']) {
      const hint = await page.getByLabel(label, { exact: true }).getAttribute('aria-describedby');
      assert.ok((await page.locator(`#${hint!.split(' ')[0]!}`).innerText()).length > 10, `${label} has a one-line hint`);
    }
    await page.getByLabel('Name', { exact: true }).fill('Ledger 2');
    await page.getByLabel('Redirect URIs', { exact: true }).fill(`${fakeApp.origin}/ledger/cb\n${fakeApp.origin}/ledger/cb2`);
    await page.getByLabel('Post-logout redirect URIs', { exact: true }).fill(`${fakeApp.origin}/ledger/bye`);
    await page.getByLabel('Scopes', { exact: true }).fill('openid profile email offline_access');
    await page.getByLabel(/^Require a second factor/).check();
    await page.getByLabel(/^Require PAR/).check();
    await page.getByLabel('PKCE', { exact: true }).selectOption('optional');
    await page.getByLabel('Back-channel logout URI', { exact: true }).fill(`${fakeApp.origin}/ledger/backchannel`);
    await page.getByLabel('Refresh grace (seconds)', { exact: true }).fill('5');
    const posted = page.waitForResponse((r) => r.request().method() === 'POST' && r.url().endsWith('/settings'));
    await submit(page, page.getByRole('button', { name: 'Save settings' }));
    assert.equal((await posted).status(), 303);
    assert.equal(await page.getByRole('status').innerText(), 'Settings saved: name, redirect URIs, post-logout redirect URIs, scopes, second factor, PAR, PKCE, refresh grace, back-channel logout URI.');
    const stored = await server.app.ops.client(client.client_id);
    assert.equal(stored.client_name, 'Ledger 2');
    assert.deepEqual(stored.redirect_uris, [`${fakeApp.origin}/ledger/cb`, `${fakeApp.origin}/ledger/cb2`]);
    assert.deepEqual(stored.post_logout_redirect_uris, [`${fakeApp.origin}/ledger/bye`]);
    assert.equal(stored.scope, 'openid profile email offline_access');
    assert.equal(stored.require_mfa, true);
    assert.equal(stored.require_pushed_authorization_requests, true);
    assert.equal(stored.pkce, 'optional');
    assert.equal(stored.refresh_grace_seconds, 5);
    assert.equal(stored.backchannel_logout_uri, `${fakeApp.origin}/ledger/backchannel`);
    // The page after the 303 shows what is stored.
    assert.equal(await heading(page), 'Ledger 2');
    assert.equal(await page.getByLabel('Refresh grace (seconds)', { exact: true }).inputValue(), '5');
    assert.ok(await page.getByLabel(/^Require PAR/).isChecked());
    // The running server uses it: a plain sign-in request from it is now refused for want of PAR.
    const auth = await page.request.get(`${server.issuer}/auth?${new URLSearchParams({ client_id: client.client_id, response_type: 'code', scope: 'openid', redirect_uri: `${fakeApp.origin}/ledger/cb`, nonce: 'n' })}`, { maxRedirects: 0 });
    assert.equal(new URL(auth.headers().location!).searchParams.get('error_description'), 'Pushed Authorization Request must be used');
    await check(page, 'app');

    // Emptied, the back-channel logout URI is removed; left alone, nothing changes.
    await page.getByLabel('Back-channel logout URI', { exact: true }).fill('');
    await submit(page, page.getByRole('button', { name: 'Save settings' }));
    assert.equal(await page.getByRole('status').innerText(), 'Settings saved: back-channel logout URI.');
    assert.equal((await server.app.ops.client(client.client_id)).backchannel_logout_uri, undefined);
    await submit(page, page.getByRole('button', { name: 'Save settings' }));
    assert.equal(await page.getByRole('status').innerText(), 'Nothing changed.');
    assert.deepEqual(problems.filter(), []);
  });

  test('an app\'s settings form with three bad fields shows the three errors at once, each next to its field, and changes nothing', async () => {
    const { page } = admin;
    const { client } = await server.app.ops.createClient({ kind: 'cli' }, { name: 'Abacus', grants: ['authorization_code', 'refresh_token'], redirectUris: [`${fakeApp.origin}/abacus/cb`], scope: 'openid' });
    const before = await server.app.ops.client(client.client_id);
    await page.goto(`${server.issuer}/admin/apps/${client.client_id}`);
    await page.getByLabel('Name', { exact: true }).fill(' ');
    await page.getByLabel('Scopes', { exact: true }).fill('');
    await page.getByLabel('Refresh grace (seconds)', { exact: true }).fill('600');
    await page.getByLabel('Post-logout redirect URIs', { exact: true }).fill(`${fakeApp.origin}/abacus/bye`);
    const posted = page.waitForResponse((r) => r.request().method() === 'POST' && r.url().endsWith('/settings'));
    await submit(page, page.getByRole('button', { name: 'Save settings' }));
    assert.equal((await posted).status(), 400);
    const errors = { 'Name': /^Give the application a name/, 'Scopes': /^Name at least one scope/, 'Refresh grace (seconds)': /refresh grace.*60/i };
    for (const [label, message] of Object.entries(errors)) {
      const field = page.getByLabel(label, { exact: true });
      assert.equal(await field.getAttribute('aria-invalid'), 'true', label);
      const errorId = (await field.getAttribute('aria-describedby'))!.split(' ')[1]!;
      assert.match(await page.locator(`#${errorId}`).innerText(), message, label);
    }
    assert.equal(await page.locator('.field-error').count(), 3, 'three errors, no more');
    assert.equal(await page.getByLabel('Post-logout redirect URIs', { exact: true }).inputValue(), `${fakeApp.origin}/abacus/bye`, 'what was typed stays');
    assert.deepEqual(await server.app.ops.client(client.client_id), before, 'nothing changed');
    const { violations } = await new AxeBuilder({ page }).analyze();
    assert.deepEqual(violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => v.id), []);
  });

  test('an app\'s Integrate panel: issuer, discovery URL, client id, and a snippet per library with its values and auth method, never its secret', async () => {
    const { page, problems } = admin;
    const created = await server.app.ops.createClient({ kind: 'cli' }, { name: 'Orchard', grants: ['authorization_code', 'refresh_token'], redirectUris: [`${fakeApp.origin}/orchard/cb`], scope: 'openid profile', secretIn: 'body' });
    const { client_id: clientId } = created.client;
    await page.goto(`${server.issuer}/admin/apps/${clientId}`);
    const panel = page.getByRole('region', { name: 'Integrate' });
    assert.equal(await panel.locator('#integrate-issuer').innerText(), server.issuer);
    assert.equal(await panel.locator('#integrate-discovery').innerText(), `${server.issuer}/.well-known/openid-configuration`);
    assert.equal(await panel.locator('#integrate-client-id').innerText(), clientId);
    const libraries = ['openid-client', 'authjs', 'express-openid-connect', 'authlib', 'go-oidc', 'spring'];
    for (const id of libraries) {
      const code = await panel.locator(`#snippet-${id}`).innerText();
      for (const value of [server.issuer, clientId, `${fakeApp.origin}/orchard/cb`]) assert.ok(code.includes(value), `${id} has ${value}`);
      assert.ok(/client_secret_post|ClientSecretPost|AuthStyleInParams/.test(code), `${id} sends the secret in the body, as registered`);
      assert.ok(/CLIENT_SECRET/.test(code), `${id} reads the secret from the environment`);
    }
    assert.ok(!(await page.content()).includes(created.client_secret!), 'the secret is never shown');
    // The copy button is the console's existing script.
    await admin.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.issuer });
    await panel.getByRole('button', { name: 'Copy go-oidc (Go)' }).click();
    await panel.getByRole('button', { name: 'Copied' }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), await panel.locator('#snippet-go-oidc').innerText());
    const { violations } = await new AxeBuilder({ page }).analyze();
    assert.deepEqual(violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => v.id), []);
    await panel.screenshot({ path: new URL('admin-app-integrate.png', SCREENSHOTS).pathname });

    // A public app: no secret anywhere, authentication none.
    const spa = await server.app.ops.createClient({ kind: 'cli' }, { name: 'Sprout', grants: ['authorization_code'], redirectUris: [`${fakeApp.origin}/sprout/cb`], scope: 'openid', public: true });
    await page.goto(`${server.issuer}/admin/apps/${spa.client.client_id}`);
    for (const id of libraries) {
      const code = await page.locator(`#snippet-${id}`).innerText();
      assert.ok(!code.includes('CLIENT_SECRET'), `${id}: a public app has no secret`);
      assert.ok(/none|None\(\)|AuthStyleInParams/.test(code), `${id} authenticates with none`);
    }
    assert.deepEqual(problems.filter(), []);
  });

  test('a refused form shows every error at once, each next to its field, in the console\'s words (not CLI flags)', async () => {
    const { page } = admin;
    await page.goto(`${server.issuer}/admin/apps/new/web`);
    const csrf = await page.locator('input[name=_csrf]').first().inputValue();
    const post = (form: Record<string, string>) => page.request.post(`${server.issuer}/admin/apps`, { form: { _csrf: csrf, ...form }, maxRedirects: 0 });
    // Name, redirect URIs and scope wrong together: three messages in one answer.
    const all = await post({ name: '', kind: 'web', redirect_uris: 'not a url', scope: '' });
    assert.equal(all.status(), 400);
    const html = await all.text();
    for (const id of ['app-name-error', 'app-redirect-uris-error', 'app-scope-error']) assert.match(html, new RegExp(`id="${id}"`), id);
    // An unknown kind: back to the kinds, saying so.
    const unknown = await post({ name: 'X', kind: 'satellite', scope: 'openid' });
    assert.equal(unknown.status(), 400);
    assert.match(await unknown.text(), /id="kind-error"/);
    // The registry's refusal of an http redirect, as the CLI and the API refuse it (test/admin-door.test.ts), next to the redirect URIs.
    await page.setContent(await (await post({ name: 'Door', kind: 'web', redirect_uris: 'http://door.example/cb', scope: 'openid' })).text());
    const error = await page.locator('#app-redirect-uris-error').innerText();
    assert.match(error, /^Redirect URIs must use https \(plain http only for 127\.0\.0\.1, \[::1\] or localhost\), got http:\/\/door\.example\/cb$/);
    assert.ok(!error.includes('--'), 'no CLI flag');
  });

  test('a non-admin who signed in is refused with a clear 403 page', async () => {
    await server.app.ops.createUser({ kind: 'cli' }, { email: 'carol@example.com', password: PASSWORD, totp: false });
    const { context, page, problems } = await open();
    try {
      await page.goto(`${server.issuer}/admin`);
      await fillLogin(page, 'carol@example.com', PASSWORD);
      await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
      // The console asks for a second factor: carol has none, so she sets one up first.
      assert.equal(await currentStep(page, ''), 'enroll');
      await enrollOnPage(page);
      await submit(page, page.getByRole('button', { name: 'I have saved them' }));
      const response = await page.goto(`${server.issuer}/admin/apps`);
      assert.equal(response!.status(), 403);
      assert.equal(await heading(page), 'Not an admin');
      assert.match(await page.locator('main').innerText(), /carol@example\.com.*does not have the admin role/s);
      await check(page, 'forbidden');
      assert.deepEqual(problems.filter(), []);
    } finally {
      await context.close();
    }
  });

  test('an admin whose session has only a password is stepped up to a second factor', async () => {
    await server.app.accounts.create({ email: 'dave@example.com', password: PASSWORD, admin: true });
    const { context, page, problems } = await open();
    try {
      // The account page signs dave in with his password alone (MFA_POLICY=optional, no factor).
      await page.goto(`${server.issuer}/account`);
      await fillLogin(page, 'dave@example.com', PASSWORD);
      await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
      assert.equal(await heading(page), 'Your account');
      await page.goto(`${server.issuer}/admin`);
      assert.equal(await currentStep(page, ''), 'login', 'sign in again (prompt=login) rather than the console');
      assert.equal(new URL(page.url()).pathname.startsWith('/interaction/'), true);
      await fillLogin(page, 'dave@example.com', PASSWORD);
      await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
      assert.equal(await currentStep(page, ''), 'enroll', 'the second factor is demanded');
      await enrollOnPage(page);
      await submit(page, page.getByRole('button', { name: 'I have saved them' }));
      assert.equal(new URL(page.url()).pathname, '/admin');
      assert.equal(await heading(page), 'Overview');
      assert.ok(server.logs.some((l) => l.event === 'second_factor_enrolled'));
      assert.deepEqual(problems.filter(), []);
    } finally {
      await context.close();
    }
  });

  test("the console's grants live no longer than its sign-in needs, as the account page's", async () => {
    const consoleId = (await server.store.get(keys.adminConsoleClient))!;
    assert.ok(await server.app.registry.findClient(consoleId), 'registered at start');
    const { Grant } = server.app.provider;
    const saved = await new Grant({ clientId: consoleId, accountId: adminId }).save();
    const grant = (await Grant.find(saved))!;
    assert.ok(grant.exp! - grant.iat <= 120, `console grant lives ${grant.exp! - grant.iat} s`);
  });

  test('bad input to every console form: a clear 4xx, never a 5xx', async () => {
    const { page } = admin;
    await page.goto(`${server.issuer}/admin/apps/new/web`);
    const csrf = await page.locator('input[name=_csrf]').first().inputValue();
    const client = (await server.app.ops.clientPage({ limit: 100 })).clients.find((c) => c.client_name === 'Shop')!;
    const posts = [
      '/admin/apps', `/admin/apps/${client.client_id}/settings`, `/admin/apps/${client.client_id}/secret`, `/admin/apps/${client.client_id}/delete`,
      '/admin/apis', `/admin/apis/${encodeURIComponent('https://nothing.example')}/delete`,
      // (`unlock`, `password-reset` and `password-link` ask nothing: any post with a CSRF token is a valid one; they are in the CSRF checks below.)
      ...['disable', 'enable', 'reset-mfa', 'revoke-sessions', 'grant-admin', 'revoke-admin', 'password', 'delete', 'edit'].map((a) => `/admin/users/${adminId}/${a}`),
      '/admin/users/new',
      '/admin/keys/rotate',
      '/admin/providers', '/admin/providers/nope/settings', '/admin/providers/nope/remove', `/admin/users/${adminId}/unlink-upstream`,
    ];
    const garbage: Record<string, string>[] = [
      {},
      { _csrf: csrf },
      { _csrf: csrf, name: '', kind: 'spaceship', redirect_uris: 'x'.repeat(3000), scope: '', uri: 'relative', ttl: '-1', token_format: 'xml', password: '', confirm: 'no' },
      { _csrf: csrf, name: 'X', kind: 'web', redirect_uris: 'javascript:alert(1)', scope: 'openid nothing:here', uri: 'https://a.example#frag', ttl: '99999999999', token_format: 'jwt', password: 'x' },
      { _csrf: csrf, name: 'X', kind: 'machine', scopes: 'nothing:here', token_endpoint_auth_method: 'private_key_jwt', first_party: 'on', secret: 'maybe', kind_: '__proto__' },
      { _csrf: csrf, name: 'X', kind: '__proto__', scope: 'openid', token_endpoint_auth_method: 'none', pkce: 'optional' },
    ];
    const statuses = new Map<string, number[]>();
    for (const path of posts) {
      for (const form of garbage) {
        const res = await page.request.post(`${server.issuer}${path}`, { form, maxRedirects: 0 });
        statuses.set(path, [...(statuses.get(path) ?? []), res.status()]);
        assert.ok(res.status() >= 400 && res.status() < 500, `${path} ${JSON.stringify(form).slice(0, 80)}: ${res.status()}`);
      }
      // Sent by another site: refused before anything else.
      const foreign = await page.request.post(`${server.issuer}${path}`, { form: { _csrf: csrf, confirm: 'yes' }, headers: { origin: 'https://evil.example' }, maxRedirects: 0 });
      assert.equal(foreign.status(), 403, path);
    }
    for (const path of posts) assert.equal(statuses.get(path)![0], 403, `${path}: no CSRF token, 403`);
    for (const action of ['unlock', 'password-reset', 'password-link']) {
      const forged = await page.request.post(`${server.issuer}/admin/users/${adminId}/${action}`, { form: { _csrf: 'forged' }, maxRedirects: 0 });
      assert.equal(forged.status(), 403, action);
    }
    // Unknown things and unknown actions, and hostile paging links.
    for (const path of [`/admin/apps/nope/delete`, `/admin/users/nope/unlock`, `/admin/users/${adminId}/explode`]) {
      const res = await page.request.post(`${server.issuer}${path}`, { form: { _csrf: csrf, confirm: 'yes' }, maxRedirects: 0 });
      assert.equal(res.status(), 404, path);
    }
    for (const path of ['/admin/apps?cursor=%00%01', '/admin/users?cursor=../../x', '/admin/activity?cursor=abc', '/admin/activity?event=nope', '/admin/activity?to=soon', '/admin/activity.jsonl?person=nobody@example.com', '/admin/apps/nope', '/admin/apps/new/satellite', '/admin/apps/new/__proto__', '/admin/apps/new/%E0%A4%A', '/admin/users/nope', '/admin/apis/nope', '/admin/apis/%E0%A4%A', '/admin/users/%E0%A4%A', `/admin/apps/${'a'.repeat(3000)}`]) {
      const res = await page.request.get(`${server.issuer}${path}`, { maxRedirects: 0 });
      assert.ok(res.status() >= 400 && res.status() < 500, `${path}: ${res.status()}`);
    }
    assert.equal((await server.app.accounts.find(adminId))!.disabled, false, 'nothing happened to the admin');
    assert.equal(server.logs.filter((l) => Number(l.level) >= 50).length, 0, 'no error logged');
  });
});
