import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { AxeBuilder } from '@axe-core/playwright';
import * as oc from 'openid-client';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { DEVICE_CODE_GRANT } from '../../src/oidc/registry.ts';
import { SCREENSHOTS, authorize, fillCode, fillLogin, launchBrowser, newContext, startFakeApp, submit, watchProblems } from '../helpers/browser.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { nextTotpCode } from '../helpers/totp.ts';

/**
 * The Applications wizard end to end: a real Chromium is the admin, who creates one app of each kind
 * (web, single-page, native, device, machine) and then edits settings; openid-client is each app, and a
 * second Chromium context the person signing in. Each page is checked with axe and photographed
 * (docs/screenshots/admin-app-wizard.png and admin-app-new-native.png with UPDATE_SCREENSHOTS=1).
 */
const ADMIN = 'root@example.com';
const PERSON = 'pat@example.com';
const PASSWORD = 'correct horse battery staple';
const API = 'https://reports.example';

interface App {
  id: string;
  secret?: string;
}

describe('the Applications wizard in a browser, with openid-client as each kind of app', () => {
  let redis: TestRedis;
  let server: TestServer;
  let browser: Browser;
  let fakeApp: Awaited<ReturnType<typeof startFakeApp>>;
  let adminSecret: string;
  let personId: string;
  let admin: { context: BrowserContext; page: Page; problems: string[] };
  let person: { context: BrowserContext; page: Page; problems: string[] };
  const apps: Record<string, App> = {};

  before(async () => {
    redis = await startRedis();
    server = await startServer({ redisUrl: redis.url, env: { MFA_POLICY: 'optional' } });
    fakeApp = await startFakeApp();
    const created = await server.app.ops.createUser({ kind: 'cli' }, { email: ADMIN, password: PASSWORD, admin: true, totp: true });
    adminSecret = new URL(created.totp_uri!).searchParams.get('secret')!;
    personId = (await server.app.accounts.create({ email: PERSON, password: PASSWORD })).id;
    await server.app.ops.createResource({ kind: 'cli' }, { uri: API, scope: 'reports:read reports:write' });
    browser = await launchBrowser();
    admin = await open();
    person = await open();
  });

  after(async () => {
    await admin?.context.close();
    await person?.context.close();
    await browser?.close();
    await server?.close();
    await fakeApp?.close();
    await redis?.dispose();
  });

  async function open() {
    const context = await newContext(browser);
    return { context, page: await context.newPage(), problems: watchProblems(context) };
  }

  /** No serious or critical accessibility violation, and the picture for the docs. */
  async function check(page: Page, name: string) {
    const { violations } = await new AxeBuilder({ page }).analyze();
    const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    assert.deepEqual(bad.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`), [], `axe on ${name}`);
    mkdirSync(SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: new URL(`admin-${name}.png`, SCREENSHOTS).pathname, fullPage: true });
  }

  /** The OAuth error of a refused request, from the body or the WWW-Authenticate challenge. */
  const oauthError = (err: { error?: string; cause?: unknown }) => err.error ?? (Array.isArray(err.cause) ? (err.cause[0] as { parameters?: { error?: string } }).parameters?.error : undefined);
  const heading = (page: Page) => page.getByRole('heading', { level: 1 }).innerText();
  const discover = (app: App, auth: oc.ClientAuth) => oc.discovery(new URL(server.issuer), app.id, undefined, auth, { execute: [oc.allowInsecureRequests] });
  const pkce = async () => {
    const verifier = oc.randomPKCECodeVerifier();
    return { verifier, challenge: { code_challenge: await oc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' } };
  };

  /** The person signs in to an app with code + PKCE; answers the tokens and whether a consent page was shown. */
  async function signIn(app: App, auth: oc.ClientAuth, redirectUri: string, scope = 'openid') {
    const rp = await discover(app, auth);
    const { verifier, challenge } = await pkce();
    const state = oc.randomState();
    let consent = false;
    const url = oc.buildAuthorizationUrl(rp, { redirect_uri: redirectUri, scope, state, ...challenge });
    const callback = await authorize(person.page, url, { redirectUri, email: PERSON, password: PASSWORD, onConsent: () => Promise.resolve(void (consent = true)) });
    const tokens = await oc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: verifier, expectedState: state, idTokenExpected: true });
    return { tokens, consent };
  }

  /** Step 1, then step 2 of the wizard; answers the new app's id and (shown once) secret. */
  async function create(kind: RegExp, fill: (page: Page) => Promise<void>): Promise<App> {
    const { page } = admin;
    await page.goto(`${server.issuer}/admin/apps/new`);
    await submit(page, page.getByRole('link', { name: kind }));
    await fill(page);
    await submit(page, page.getByRole('button', { name: 'Create application' }));
    assert.match(await heading(page), / is ready$/);
    const secret = page.locator('#client-secret');
    const app = { id: (await page.locator('#client-id').innerText()).trim(), ...((await secret.count()) ? { secret: (await secret.innerText()).trim() } : {}) };
    assert.equal(await page.getByRole('link', { name: /^Integrate it/ }).getAttribute('href'), `/admin/apps/${app.id}#integrate`);
    return app;
  }

  test('step 1 picks the kind from five cards; step 2 asks only what the kind needs, with its safe defaults', async () => {
    const { page } = admin;
    await page.goto(`${server.issuer}/admin`);
    await fillLogin(page, ADMIN, PASSWORD);
    await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    await fillCode(page, await nextTotpCode(server.issuer, adminSecret));
    await submit(page, page.getByRole('button', { name: 'Verify' }));
    assert.equal(await heading(page), 'Overview');

    await page.goto(`${server.issuer}/admin/apps`);
    await submit(page, page.getByRole('link', { name: 'New application' }));
    assert.equal(await heading(page), 'New application');
    const cards = await page.locator('a.kind strong').allInnerTexts();
    assert.deepEqual(cards, ['Web app', 'Single-page app', 'Native, desktop or CLI app', 'Device (TV, CLI)', 'Machine to machine']);
    for (const line of await page.locator('a.kind .hint').allInnerTexts()) assert.ok(line.length > 20 && !line.includes('\n'), `one line: ${line}`);
    await check(page, 'app-wizard');

    await submit(page, page.getByRole('link', { name: /^Native, desktop or CLI app/ }));
    assert.equal(await heading(page), 'New application: Native, desktop or CLI app');
    assert.equal(await page.getByLabel('Redirect URIs').inputValue(), 'http://127.0.0.1/callback', 'a loopback redirect, any port');
    assert.equal(await page.getByLabel('Scopes').inputValue(), 'openid profile email offline_access');
    assert.match(await page.locator('form .fine').innerText(), /public \(no secret\).*PKCE \(S256\) required/);
    await check(page, 'app-new-native');

    await page.goto(`${server.issuer}/admin/apps/new/device`);
    assert.equal(await page.getByLabel('Redirect URIs').count(), 0, 'a device has no redirect URI');
    assert.ok(await page.getByLabel(/^No: public/).isChecked(), 'public by default');
    await page.goto(`${server.issuer}/admin/apps/new/machine`);
    assert.equal(await page.getByLabel('Redirect URIs').count(), 0);
    assert.equal(await page.getByLabel(/^First party/).count(), 0, 'no people: no consent to skip');
    assert.ok(await page.getByLabel('reports:read', { exact: true }).count(), "the APIs' scopes to choose from");
    await check(page, 'app-new-machine');
    const missing = await page.request.get(`${server.issuer}/admin/apps/new/satellite`);
    assert.equal(missing.status(), 404);
  });

  test('a form with several bad fields answers every error at once, each next to its field, and what was typed stays', async () => {
    const { page } = admin;
    await page.goto(`${server.issuer}/admin/apps/new/spa`);
    await page.getByLabel('Name').fill(' ');
    await page.getByLabel('Redirect URIs').fill('com.example.notes:/cb');
    await page.getByLabel('Scopes').fill('');
    await submit(page, page.getByRole('button', { name: 'Create application' }));
    assert.equal(await heading(page), 'New application: Single-page app');
    assert.match(await page.locator('#app-name-error').innerText(), /^Give the application a name/);
    assert.match(await page.locator('#app-redirect-uris-error').innerText(), /single-page app comes back to a web address/);
    assert.match(await page.locator('#app-scope-error').innerText(), /^Name at least one scope/);
    assert.equal(await page.getByLabel('Redirect URIs').inputValue(), 'com.example.notes:/cb');
    assert.equal(await page.getByLabel('Redirect URIs').getAttribute('aria-invalid'), 'true');
    await check(page, 'app-new-errors');

    await page.goto(`${server.issuer}/admin/apps/new/machine`);
    await page.getByLabel('Name').fill('Nightly');
    await submit(page, page.getByRole('button', { name: 'Create application' }));
    assert.match(await page.locator('#scopes-error').innerText(), /Choose at least one API scope/);
    assert.equal((await server.app.ops.clientPage({ limit: 100 })).clients.filter((c) => !c.resource_server && c.client_name === 'Nightly').length, 0, 'nothing created');
  });

  test('one app of each kind, made in the wizard, and openid-client uses each: code + PKCE (web, single-page, native), the device flow, client credentials', async () => {
    // Web app: confidential, the secret in the Basic header, PKCE.
    apps.web = await create(/^Web app/, async (page) => {
      await page.getByLabel('Name').fill('Notes web');
      await page.getByLabel('Redirect URIs').fill(`${fakeApp.origin}/web/cb`);
    });
    assert.ok(apps.web.secret && apps.web.secret.length >= 32, 'its secret, shown once');
    const web = await server.app.ops.client(apps.web.id);
    assert.deepEqual([web.token_endpoint_auth_method, web.grant_types, web.pkce], ['client_secret_basic', ['authorization_code', 'refresh_token'], 'required']);
    const signedIn = await signIn(apps.web, oc.ClientSecretBasic(apps.web.secret), `${fakeApp.origin}/web/cb`);
    assert.equal(signedIn.tokens.claims()!.sub, personId);
    assert.ok(signedIn.consent, 'not first party: the person was asked');

    // Single-page app: public, PKCE.
    apps.spa = await create(/^Single-page app/, async (page) => {
      await page.getByLabel('Name').fill('Notes SPA');
      await page.getByLabel('Redirect URIs').fill(`${fakeApp.origin}/spa/cb`);
    });
    assert.equal(apps.spa.secret, undefined, 'no secret');
    assert.equal((await server.app.ops.client(apps.spa.id)).token_endpoint_auth_method, 'none');
    assert.equal((await signIn(apps.spa, oc.None(), `${fakeApp.origin}/spa/cb`)).tokens.claims()!.sub, personId);

    // Native app: public, PKCE, its loopback redirect on whatever port it listens on.
    apps.native = await create(/^Native, desktop or CLI app/, async (page) => {
      await page.getByLabel('Name').fill('Notes desktop');
    });
    assert.equal(apps.native.secret, undefined);
    assert.equal((await server.app.ops.client(apps.native.id)).native, true);
    const port = new URL(fakeApp.origin).port;
    assert.equal((await signIn(apps.native, oc.None(), `http://127.0.0.1:${port}/callback`)).tokens.claims()!.sub, personId);

    // Device: public by default; the person approves the code in the browser, the device gets tokens.
    apps.device = await create(/^Device/, async (page) => {
      await page.getByLabel('Name').fill('Notes TV');
    });
    assert.equal(apps.device.secret, undefined);
    const device = await server.app.ops.client(apps.device.id);
    assert.deepEqual([device.grant_types, device.redirect_uris, device.token_endpoint_auth_method], [[DEVICE_CODE_GRANT, 'refresh_token'], [], 'none']);
    const tv = await discover(apps.device, oc.None());
    const started = await oc.initiateDeviceAuthorization(tv, { scope: 'openid' });
    await person.page.goto(started.verification_uri_complete!);
    await submit(person.page, person.page.getByRole('button', { name: 'Continue' }));
    assert.equal(await heading(person.page), 'Allow this device?');
    await submit(person.page, person.page.getByRole('button', { name: 'Allow' }));
    assert.equal(await heading(person.page), 'Device connected');
    const deviceTokens = await oc.genericGrantRequest(tv, DEVICE_CODE_GRANT, { device_code: started.device_code });
    assert.equal(deviceTokens.claims()!.sub, personId);

    // Machine to machine: confidential, client credentials, an API's scope.
    apps.machine = await create(/^Machine to machine/, async (page) => {
      await page.getByLabel('Name').fill('Nightly report');
      await page.getByLabel('reports:read', { exact: true }).check();
    });
    assert.ok(apps.machine.secret);
    const machine = await server.app.ops.client(apps.machine.id);
    assert.deepEqual([machine.grant_types, machine.scope, machine.token_endpoint_auth_method], [['client_credentials'], 'reports:read', 'client_secret_basic']);
    const m2m = await oc.clientCredentialsGrant(await discover(apps.machine, oc.ClientSecretBasic(apps.machine.secret)), { scope: 'reports:read', resource: API });
    assert.equal(m2m.scope, 'reports:read');
    assert.ok(m2m.access_token);

    for (const app of Object.values(apps)) if (app.secret) assert.ok(!JSON.stringify(server.logs).includes(app.secret), 'no secret in a log line');
    assert.deepEqual(admin.problems.filter((p) => !/status of 4\d\d/.test(p)), []);
    assert.deepEqual(person.problems, []);
  });

  /** Opens an app's settings, changes them with `change`, saves; answers the page after. */
  async function edit(app: App, change: (page: Page) => Promise<unknown>) {
    const { page } = admin;
    await page.goto(`${server.issuer}/admin/apps/${app.id}`);
    await change(page);
    await submit(page, page.getByRole('button', { name: 'Save settings' }));
    return page;
  }

  test('first party, switched on in the settings: the person is no longer asked to consent, even to new scopes', async () => {
    const page = await edit(apps.web!, (p) => p.getByLabel(/^First party/).check());
    assert.equal(await page.getByRole('status').innerText(), 'Settings saved: first party.');
    assert.equal((await server.app.ops.client(apps.web!.id)).first_party, true);
    const again = await signIn(apps.web!, oc.ClientSecretBasic(apps.web!.secret), `${fakeApp.origin}/web/cb`, 'openid email');
    assert.equal(again.consent, false, 'no consent page');
    assert.equal(again.tokens.claims()!.email, PERSON);
    await check(page, 'app-settings');
  });

  test('the authentication method, changed in the settings: the token endpoint takes the new one and refuses the old', async () => {
    // Basic → post: the same secret, now in the body only.
    let page = await edit(apps.web!, (p) => p.getByLabel('Authentication method').selectOption('client_secret_post'));
    assert.equal(await page.getByRole('status').innerText(), 'Settings saved: authentication method.');
    const rp = await discover(apps.web!, oc.ClientSecretBasic(apps.web!.secret));
    const { verifier, challenge } = await pkce();
    const redirectUri = `${fakeApp.origin}/web/cb`;
    const callback = await authorize(person.page, oc.buildAuthorizationUrl(rp, { redirect_uri: redirectUri, scope: 'openid', ...challenge }), { redirectUri });
    await assert.rejects(oc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: verifier }), (err: { error?: string }) => oauthError(err) === 'invalid_client', 'the Basic header is refused now');
    const byPost = await oc.authorizationCodeGrant(await discover(apps.web!, oc.ClientSecretPost(apps.web!.secret)), callback, { pkceCodeVerifier: verifier });
    assert.equal(byPost.claims()!.sub, personId);

    // Public → a secret method: a new secret, shown once on the answer, and it works.
    page = await edit(apps.spa!, (p) => p.getByLabel('Authentication method').selectOption('client_secret_basic'));
    assert.equal(await heading(page), 'New client secret');
    assert.match(await page.locator('.lead').innerText(), /Settings saved: authentication method\. Notes SPA now authenticates with a secret \(client_secret_basic\)/);
    const spaSecret = (await page.locator('#client-secret').innerText()).trim();
    assert.match(await page.getByRole('status').innerText(), /will not be shown again/);
    await check(page, 'app-new-secret');
    assert.equal((await signIn({ id: apps.spa!.id }, oc.ClientSecretBasic(spaSecret), `${fakeApp.origin}/spa/cb`)).tokens.claims()!.sub, personId);
    await assert.rejects(signIn({ id: apps.spa!.id }, oc.None(), `${fakeApp.origin}/spa/cb`), (err: { error?: string }) => oauthError(err) === 'invalid_client', 'no longer public');
    assert.ok(!JSON.stringify(server.logs).includes(spaSecret), 'the new secret reached no log line');

    // Secret → none: public now, its secret gone; a machine cannot be public, said next to the field.
    // A refresh token it got while proving its secret would now work without one: it is revoked.
    const held = (await signIn(apps.web!, oc.ClientSecretPost(apps.web!.secret), `${fakeApp.origin}/web/cb`, 'openid offline_access')).tokens;
    assert.ok(held.refresh_token, 'a refresh token to lose');
    page = await edit(apps.web!, (p) => p.getByLabel('Authentication method').selectOption('none'));
    await assert.rejects(oc.refreshTokenGrant(await discover(apps.web!, oc.None()), held.refresh_token), (err: { error?: string }) => oauthError(err) === 'invalid_grant', 'refresh tokens of its confidential days are gone');
    assert.equal(await page.getByRole('status').innerText(), 'Settings saved: authentication method. It is public now: its secret no longer exists.');
    const now = await server.app.ops.client(apps.web!.id);
    assert.deepEqual([now.public, now.secret], [true, undefined]);
    assert.equal((await signIn(apps.web!, oc.None(), `${fakeApp.origin}/web/cb`)).tokens.claims()!.sub, personId, 'it signs in as a public app');
    page = await edit(apps.machine!, (p) => p.getByLabel('Authentication method').selectOption('none'));
    assert.match(await page.locator('#app-auth-method-error').innerText(), /public client cannot use client_credentials/);
    assert.equal(await page.getByLabel('Authentication method').getAttribute('aria-invalid'), 'true');
    assert.equal((await server.app.ops.client(apps.machine!.id)).token_endpoint_auth_method, 'client_secret_basic', 'nothing changed');

    // A native app stays public: no method to choose.
    await admin.page.goto(`${server.issuer}/admin/apps/${apps.native!.id}`);
    assert.equal(await admin.page.getByLabel('Authentication method').count(), 0);
    assert.match(await admin.page.locator('#app-auth-method').innerText(), /native app is public/);
    assert.deepEqual(person.problems, []);
  });
});
