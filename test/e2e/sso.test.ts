import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import * as oc from 'openid-client';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { SCREENSHOTS, authorize, startFakeApp, type AuthorizeOptions, fillLogin, launchBrowser, newContext, passSecondFactor, submit, watchProblems } from '../helpers/browser.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { HandledSecrets } from '../helpers/secrets.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { totpSecrets } from '../helpers/totp.ts';

/**
 * Single sign-on end to end: a real Chromium is the person, openid-client v6 is the third-party app,
 * against Latchkey on a real Redis. The tests run in order and share one browser session.
 */
const API = 'https://notes-api.example.com';
const EMAIL = 'ada@example.com';
const NAME = 'Ada Lovelace';
const PASSWORD = 'correct horse battery staple';

describe('single sign-on with a browser and openid-client', () => {
  let redis: TestRedis;
  let server: TestServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let problems: string[];
  let rp: oc.Configuration;
  let apiRp: oc.Configuration;
  let redirectUri: string;
  let loggedOutUri: string;
  let sub: string;
  let fakeApp: Awaited<ReturnType<typeof startFakeApp>>;
  /** Every secret handled here; the last test checks that none reached the server's log. */
  const secrets = new HandledSecrets();

  /** What the app holds after a token response. */
  function rememberTokens(tokens: { access_token: string; refresh_token?: string; id_token?: string }) {
    secrets.add('access_token', tokens.access_token);
    secrets.add('refresh_token', tokens.refresh_token);
    secrets.add('id_token', tokens.id_token);
  }

  /** One authorization through the browser, then the code exchange by the app. */
  async function signIn(scope: string, extra: Record<string, string> = {}, hooks: Pick<AuthorizeOptions, 'onLogin' | 'onConsent'> = {}) {
    const verifier = oc.randomPKCECodeVerifier();
    const state = oc.randomState();
    const nonce = oc.randomNonce();
    const url = oc.buildAuthorizationUrl(rp, {
      redirect_uri: redirectUri,
      scope,
      code_challenge: await oc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
      ...extra,
    });
    secrets.add('code_verifier', verifier);
    const callback = await authorize(page, url, { redirectUri, email: EMAIL, password: PASSWORD, ...hooks });
    const tokens = await oc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true });
    rememberTokens(tokens);
    return tokens;
  }

  const introspect = (config: oc.Configuration, token: string) => oc.tokenIntrospection(config, token);

  before(async () => {
    redis = await startRedis();
    server = await startServer({ redisUrl: redis.url });
    fakeApp = await startFakeApp();
    redirectUri = `${fakeApp.origin}/cb`;
    loggedOutUri = `${fakeApp.origin}/logged-out`;

    const { registry, accounts } = server.app;
    const api = await registry.createResource({ uri: API, scope: 'api:read api:write' });
    const client = await registry.createClient(
      {
        name: 'Example Notes',
        grants: ['authorization_code', 'refresh_token'],
        redirectUris: [redirectUri],
        postLogoutRedirectUris: [loggedOutUri],
        scope: 'openid profile email offline_access api:read',
      },
      async () => {},
    );
    sub = (await accounts.create({ email: EMAIL, name: NAME, password: PASSWORD })).id;
    secrets.add('password', PASSWORD);
    secrets.add('client_secret', client.secret);
    secrets.add('API client_secret', api.secret);

    rp = await oc.discovery(new URL(server.issuer), client.clientId, undefined, oc.ClientSecretBasic(client.secret), {
      execute: [oc.allowInsecureRequests],
    });
    apiRp = new oc.Configuration(rp.serverMetadata(), api.resource.clientId, undefined, oc.ClientSecretBasic(api.secret));
    oc.allowInsecureRequests(apiRp);

    browser = await launchBrowser();
    context = await newContext(browser);
    secrets.watch(context);
    problems = watchProblems(context);
    page = await context.newPage();
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await fakeApp?.close();
    await redis?.dispose();
  });

  let refreshToken: string;
  let userinfoToken: string;
  let apiToken: string;

  test('sign in, consent, code + PKCE, ID token, userinfo and a refresh token', async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    const tokens = await signIn('openid profile email offline_access', { prompt: 'consent' }, {
      async onLogin(p) {
        assert.equal(await p.getByRole('heading', { level: 1 }).innerText(), 'Sign in');
        assert.match(await p.locator('main').innerText(), /to continue to Example Notes/);
        await p.getByLabel('Email').fill(EMAIL);
        await p.screenshot({ path: new URL('sign-in.png', SCREENSHOTS).pathname });
      },
      async onConsent(p) {
        const text = await p.locator('main').innerText();
        assert.match(text, /Allow access\?/);
        assert.match(text, /Example Notes asks to:/);
        assert.deepEqual(await p.locator('ul.scopes li').allInnerTexts(), [
          'Know who you are',
          'See your name',
          'See your email address',
          'Stay connected while you are away, until you sign out or revoke it',
        ]);
        assert.match(text, new RegExp(`Signed in as ${EMAIL}`));
        await p.screenshot({ path: new URL('consent.png', SCREENSHOTS).pathname });
      },
    });

    assert.equal(tokens.token_type, 'bearer');
    assert.deepEqual(new Set(tokens.scope?.split(' ')), new Set(['openid', 'profile', 'email', 'offline_access']));
    const claims = tokens.claims()!;
    assert.equal(claims.iss, server.issuer);
    assert.equal(claims.sub, sub);
    assert.equal(claims.email, EMAIL);
    assert.equal(claims.name, NAME);
    assert.ok(tokens.refresh_token, 'a refresh token for offline_access with prompt=consent');

    const userinfo = await oc.fetchUserInfo(rp, tokens.access_token, sub);
    assert.equal(userinfo.email, EMAIL);
    // Created by an operator: the address is not proved until a link sent to it is followed (docs/email.md).
    assert.equal(userinfo.email_verified, false);
    assert.equal(userinfo.name, NAME);

    refreshToken = tokens.refresh_token;
    userinfoToken = tokens.access_token;
    assert.deepEqual(problems, []);
  });

  test('a token for the API, which the API introspects with its own credentials', async () => {
    // Signed in already: only the new permission is asked for.
    let asked: string[] = [];
    const tokens = await signIn('openid api:read', {}, {
      async onConsent(p) {
        asked = await p.locator('ul.scopes li').allInnerTexts();
      },
    });
    assert.deepEqual(asked, ['Use the API with permission “api:read”']);
    assert.equal(tokens.claims()!.sub, sub);
    assert.equal(tokens.scope, 'api:read');

    const seen = await introspect(apiRp, tokens.access_token);
    assert.equal(seen.active, true);
    assert.deepEqual([seen.aud].flat(), [API]);
    assert.equal(seen.scope, 'api:read');
    assert.equal(seen.sub, sub);
    assert.equal(seen.client_id, rp.clientMetadata().client_id);
    // A token for the API is not a token for userinfo.
    await assert.rejects(oc.fetchUserInfo(rp, tokens.access_token, sub));
    apiToken = tokens.access_token;
    assert.deepEqual(problems, []);
  });

  test('refresh rotates the refresh token; reusing the old one kills the whole grant', async () => {
    const refreshed = await oc.refreshTokenGrant(rp, refreshToken);
    rememberTokens(refreshed);
    assert.ok(refreshed.refresh_token);
    assert.notEqual(refreshed.refresh_token, refreshToken);
    assert.equal(refreshed.claims()?.sub, sub);
    assert.equal((await introspect(rp, refreshed.access_token)).active, true);
    assert.equal((await oc.fetchUserInfo(rp, refreshed.access_token, sub)).email, EMAIL);

    await assert.rejects(oc.refreshTokenGrant(rp, refreshToken), (err: oc.ResponseBodyError) => {
      assert.equal(err.error, 'invalid_grant');
      return true;
    });
    for (const token of [refreshed.access_token, refreshed.refresh_token, userinfoToken]) {
      assert.equal((await introspect(rp, token)).active, false);
    }
    assert.equal((await introspect(apiRp, apiToken)).active, false, 'the API token of the same grant is dead too');
    await assert.rejects(oc.refreshTokenGrant(rp, refreshed.refresh_token), (err: oc.ResponseBodyError) => err.error === 'invalid_grant');
  });

  let idToken: string;

  test('revocation of access and refresh tokens', async () => {
    // Still signed in; consent given before is remembered.
    const tokens = await signIn('openid profile email offline_access', { prompt: 'consent' });
    assert.ok(tokens.refresh_token);
    idToken = tokens.id_token!;

    await oc.tokenRevocation(rp, tokens.access_token);
    assert.equal((await introspect(rp, tokens.access_token)).active, false);
    await assert.rejects(oc.fetchUserInfo(rp, tokens.access_token, sub));
    // oidc-provider takes the rest of the grant's tokens with it (RFC 7009 §2.1 allows it); the consent stays.
    assert.equal((await introspect(rp, tokens.refresh_token)).active, false);

    const again = await signIn('openid profile email offline_access', { prompt: 'consent' });
    assert.ok(again.refresh_token);
    await oc.tokenRevocation(rp, again.refresh_token);
    assert.equal((await introspect(rp, again.refresh_token)).active, false);
    assert.equal((await introspect(rp, again.access_token)).active, false, 'RFC 7009 §2.1: the access tokens of the grant go too');
    await assert.rejects(oc.refreshTokenGrant(rp, again.refresh_token), (err: oc.ResponseBodyError) => err.error === 'invalid_grant');

    // The API revokes a token issued for it, with its own credentials.
    const forApi = await signIn('openid api:read');
    assert.equal((await introspect(apiRp, forApi.access_token)).active, true);
    await oc.tokenRevocation(apiRp, forApi.access_token);
    assert.equal((await introspect(apiRp, forApi.access_token)).active, false);
    idToken = forApi.id_token ?? idToken;
    assert.deepEqual(problems, []);
  });

  test('logout: confirmation page, back to the app, and the session is gone', async () => {
    const state = oc.randomState();
    const url = oc.buildEndSessionUrl(rp, { id_token_hint: idToken, post_logout_redirect_uri: loggedOutUri, state });
    await page.goto(url.href);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Sign out?');
    assert.match(await page.locator('main').innerText(), /Example Notes asks to sign you out/);
    await submit(page, page.getByRole('button', { name: 'Yes, sign me out' }));
    const landed = new URL(page.url());
    assert.equal(`${landed.origin}${landed.pathname}`, loggedOutUri);
    assert.equal(landed.searchParams.get('state'), state);

    await assert.rejects(signIn('openid', { prompt: 'none' }), (err: oc.AuthorizationResponseError) => {
      assert.equal(err.error, 'login_required');
      return true;
    });
    assert.deepEqual(problems, []);
  });

  test('a wrong password is shown on the page, without console errors or CSP violations', async () => {
    const fresh = await newContext(browser);
    secrets.watch(fresh);
    const seen = watchProblems(fresh);
    const p = await fresh.newPage();
    try {
      const url = oc.buildAuthorizationUrl(rp, {
        redirect_uri: redirectUri,
        scope: 'openid',
        code_challenge: await oc.calculatePKCECodeChallenge(oc.randomPKCECodeVerifier()),
        code_challenge_method: 'S256',
        state: oc.randomState(),
      });
      await p.goto(url.href);
      // The sign-in page, addressed with the id of the interaction's write (`?v=`): the form posts to its path.
      const loginUrl = new URL(p.url()).origin + new URL(p.url()).pathname;
      await fillLogin(p, EMAIL, 'not the password');
      await submit(p, p.getByRole('button', { name: 'Sign in', exact: true }));

      assert.equal(p.url(), `${loginUrl}/login`, 'no redirect: the sign-in page again');
      assert.equal(await p.getByRole('alert').innerText(), 'Wrong email or password.');
      assert.equal(await p.getByLabel('Email').inputValue(), EMAIL, 'the email is kept');
      assert.equal(await p.getByLabel('Password').inputValue(), '', 'the password is not');

      // And the right one still works from there.
      await fillLogin(p, EMAIL, PASSWORD);
      await submit(p, p.getByRole('button', { name: 'Sign in', exact: true }));
      await passSecondFactor(p, EMAIL);
      // Consent for `openid` was given in the other session and is remembered.
      const back = new URL(p.url());
      assert.equal(`${back.origin}${back.pathname}`, redirectUri);
      assert.ok(back.searchParams.get('code'));
      assert.deepEqual(seen, []);
    } finally {
      await fresh.close();
    }
  });

  // Last: everything above has been logged by now.
  test('no log line holds a secret the test handled: passwords, client secrets, tokens, codes, TOTP key and codes, cookies', async () => {
    secrets.add('TOTP secret', totpSecrets.get(EMAIL.toLowerCase()));
    await secrets.settle(context);
    assert.ok(secrets.size >= 30, `collected ${secrets.size} secrets`);
    const kinds = secrets.kinds();
    for (const kind of ['password', 'client_secret', 'access_token', 'refresh_token', 'id_token', 'code_verifier', 'TOTP key shown', 'recovery code shown', 'form field password', 'form field code', 'form field _csrf', 'authorization code in a URL', 'cookie _session', 'cookie _interaction']) {
      assert.ok(kinds.has(kind), `collected a ${kind}: ${[...kinds].join(', ')}`);
    }
    assert.ok(server.logs.length >= 50, `the flows were logged (${server.logs.length} lines)`);
    assert.deepEqual(await secrets.leaks(server.logs), []);
  });
});
