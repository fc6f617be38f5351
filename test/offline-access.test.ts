import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import express from 'express';
import { auth } from 'express-openid-connect';
import * as oc from 'openid-client';
import { browse, CookieJar, endpoints, follow, signIn, signInAndRedeem } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { REDIRECT_URI, useWorld, type World } from './helpers/world.ts';

/**
 * offline_access gives a refresh token however the authorization request arrives (GET or POST /auth,
 * a pushed request), without prompt=consent; prompt=consent from the app shows the consent page even
 * when consent was remembered. The apps are real client libraries: openid-client and express-openid-connect.
 */
let server: TestServer;
let world: World;

useWorld({}, (setup) => ({ server, world } = setup));

/** Only client_id and request_uri travel through the browser after a pushed request. */
const PUSHED_ONLY = { redirect_uri: undefined, response_type: undefined, scope: undefined, state: undefined, nonce: undefined, code_challenge: undefined, code_challenge_method: undefined };

describe('offline_access without prompt=consent', () => {
  it('openid-client with PAR and scope offline_access gets a refresh token, and it works', async () => {
    const app = await world.newApp('PAR app');
    const rp = await oc.discovery(new URL(server.issuer), app.clientId, undefined, oc.ClientSecretBasic(app.secret), { execute: [oc.allowInsecureRequests] });
    const verifier = oc.randomPKCECodeVerifier();
    const state = oc.randomState();
    const url = await oc.buildAuthorizationUrlWithPAR(rp, {
      redirect_uri: REDIRECT_URI,
      scope: 'openid offline_access',
      code_challenge: await oc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
    });
    const flow = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid', params: { ...PUSHED_ONLY, request_uri: url.searchParams.get('request_uri')! } });
    assert.ok(flow.consentPage?.html.includes('Stay connected while you are away'), 'the consent page names offline access');
    assert.ok(flow.callback, `did not reach the app: ${flow.page?.status}`);
    const tokens = await oc.authorizationCodeGrant(rp, flow.callback, { pkceCodeVerifier: verifier, expectedState: state });
    assert.equal(typeof tokens.refresh_token, 'string', `no refresh token; scope ${tokens.scope}`);
    assert.match(tokens.scope ?? '', /offline_access/);
    const refreshed = await oc.refreshTokenGrant(rp, tokens.refresh_token!);
    assert.equal(typeof refreshed.access_token, 'string');
  });

  it('express-openid-connect with pushedAuthorizationRequests gets a refresh token', async () => {
    const web = express();
    const listener = web.listen(0, '127.0.0.1');
    await once(listener, 'listening');
    const base = `http://127.0.0.1:${(listener.address() as AddressInfo).port}`;
    const registered = await server.app.registry.createClient(
      { name: 'Express app', grants: ['authorization_code', 'refresh_token'], redirectUris: [`${base}/callback`], scope: 'openid offline_access' },
      async () => {},
    );
    const app = { clientId: registered.clientId, secret: registered.secret! };
    try {
      web.use(
        auth({
          issuerBaseURL: server.issuer,
          baseURL: base,
          clientID: app.clientId,
          clientSecret: app.secret,
          secret: 'a long enough session secret for the test app',
          authRequired: false,
          pushedAuthorizationRequests: true,
          authorizationParams: { scope: 'openid offline_access', response_type: 'code' },
        }),
      );
      web.get('/tokens', (req, res) => {
        res.json({ refresh: typeof req.oidc.refreshToken === 'string', signedIn: req.oidc.isAuthenticated() });
      });
      const jar = new CookieJar();
      const login = await browse(jar, `${base}/login`);
      const to = new URL(login.headers.get('location')!);
      assert.equal(to.origin, server.issuer);
      assert.ok(to.searchParams.get('request_uri'), 'the app pushed its request');
      const flow = await signIn({ issuer: server.issuer, client: { ...app, redirectUri: `${base}/callback` }, jar, user: world.user, scope: 'openid', params: { ...PUSHED_ONLY, request_uri: to.searchParams.get('request_uri')! } });
      assert.equal(flow.callback?.origin, base, `did not reach the app: ${flow.page?.status} ${flow.page?.html.slice(0, 300)}`);
      const callback = await browse(jar, flow.callback);
      assert.ok(callback.status >= 300 && callback.status < 400, `callback: ${callback.status} ${await callback.text()}`);
      const tokens = (await (await browse(jar, `${base}/tokens`, { headers: { accept: 'application/json' } })).json()) as { refresh: boolean; signedIn: boolean };
      assert.deepEqual(tokens, { refresh: true, signedIn: true });
    } finally {
      listener.closeAllConnections();
      await new Promise((r) => listener.close(r));
    }
  });

  it('a POST /auth form with offline_access signs in and gets a refresh token', async () => {
    const app = await world.newApp('Form post app');
    const jar = new CookieJar();
    const flowParams = { client_id: app.clientId, redirect_uri: REDIRECT_URI, response_type: 'code', scope: 'openid offline_access', state: 's1', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' };
    const posted = await browse(jar, new URL('/auth', server.issuer), { form: flowParams });
    assert.equal(posted.status, 303);
    const to = new URL(posted.headers.get('location')!, server.issuer);
    assert.equal(to.pathname, '/auth');
    assert.deepEqual(Object.fromEntries(to.searchParams), flowParams);
    // The rest is the GET the browser makes: the same flow as any sign-in.
    const flow = await signIn({ issuer: server.issuer, client: app, jar, user: world.user, scope: 'openid offline_access', params: { state: 's1', nonce: undefined, code_challenge: flowParams.code_challenge } });
    assert.ok(flow.code);
    const tokens = await endpoints(server.issuer).redeem(app, flow.code, 'dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk');
    assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
    assert.equal(typeof tokens.body.refresh_token, 'string');
  });

  it('prompt=none on single sign-on keeps offline_access granted before', async () => {
    const first = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid offline_access' });
    assert.ok(first.code);
    const silent = await signInAndRedeem({ issuer: server.issuer, client: world.shop, jar: first.jar, scope: 'openid offline_access', params: { prompt: 'none' } });
    assert.equal(typeof silent.tokens.refresh_token, 'string');
  });
});

describe('prompt=consent', () => {
  it('shows the consent page after remembered consent; without prompt it does not', async () => {
    const app = await world.newApp('Remembered app');
    const first = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid email' });
    assert.ok(first.consentPage && first.code, 'asked the first time');
    const remembered = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid email' });
    assert.equal(remembered.consentPage, undefined, 'remembered: not asked');
    assert.ok(remembered.code);
    const sso = await signIn({ issuer: server.issuer, client: app, jar: remembered.jar, scope: 'openid email' });
    assert.equal(sso.consentPage, undefined, 'single sign-on: not asked');
    assert.ok(sso.code);

    const asked = await signIn({ issuer: server.issuer, client: app, jar: remembered.jar, scope: 'openid email', params: { prompt: 'consent' } });
    assert.ok(asked.consentPage, 'prompt=consent shows the page');
    assert.ok(asked.consentPage.html.includes('See your email address'), 'with what the app asks for');
    assert.ok(asked.code, 'Allow reaches the app');
  });

  it('shows the consent page to a first-party client too, and remembers nothing for it', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.firstParty, user: world.user, scope: 'openid profile', params: { prompt: 'consent' } });
    assert.ok(flow.consentPage, 'asked');
    assert.ok(flow.code);
    const remembered = await server.store.get(`lk:consent:${world.user.id}:${world.firstParty.clientId}`);
    assert.equal(remembered, null);
  });
});

describe('POST /auth and POST /session/end: bad bodies', () => {
  for (const [name, init, status] of [
    ['a JSON body', { body: '{"client_id":"x"}', headers: { 'content-type': 'application/json' } }, 400],
    ['no body', { body: '' }, 400],
    ['an undecodable body', { body: 'client_id=x', headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-encoding': 'gzip' } }, 400],
    ['a body too large for a URL', { form: { request: 'a'.repeat(9000) } }, 413],
  ] as const) {
    for (const path of ['/auth', '/session/end']) {
      it(`${path}: ${name} is a ${status}`, async () => {
        const res = await browse(new CookieJar(), new URL(path, server.issuer), { method: 'POST', ...init, headers: { accept: 'application/json', ...('headers' in init ? init.headers : {}) } });
        assert.equal(res.status, status, await res.text());
      });
    }
  }

  it('an empty form is sent to the GET, which answers the missing parameters with a 400 page', async () => {
    const jar = new CookieJar();
    const res = await browse(jar, new URL('/auth', server.issuer), { form: {} });
    assert.equal(res.status, 303);
    const followed = await follow(jar, server.issuer, res, new URL('/auth', server.issuer));
    assert.equal(followed.page?.status, 400);
  });
});
