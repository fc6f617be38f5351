import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as oc from 'openid-client';
import { authorize as authorizeInBrowser, launchBrowser, newContext, startFakeApp } from '../helpers/browser.ts';
import { CookieJar, pkcePair, signIn, type SignInOptions } from '../helpers/flow.ts';
import type { TestServer } from '../helpers/server.ts';
import { REDIRECT_URI, useWorld, type World } from '../helpers/world.ts';
import { authorize, jwtHeader, note, refusedAsDocumented, relyingParty, withClockAhead } from './op.ts';

/**
 * The OpenID Foundation conformance suite's Basic OP plan (oidcc-basic-certification-test-plan,
 * response_type=code, client_secret_basic), one test per module, named as the suite names it.
 * The person signs in through Latchkey's pages (helpers/flow.ts; Chromium for oidcc-server), and
 * openid-client plays the suite's RP: it validates every response and ID token it receives.
 */
let server: TestServer;
let world: World;
let rp: oc.Configuration;

useWorld({}, async (setup) => {
  ({ server, world } = setup);
  rp = await relyingParty(server.issuer, world.shop);
});

const OPENID = 'openid';

/** Signs `world.user` in to the shop app (a new session unless `jar` is given) and redeems the code. */
function run(scope: string, params?: SignInOptions['params'], jar?: CookieJar) {
  return authorize(rp, { issuer: server.issuer, client: world.shop, user: world.user, scope, params, jar });
}

/** The authorization request the suite builds, with PKCE (Latchkey requires it). */
function authUrl(params: Record<string, string | undefined>): URL {
  const query: Record<string, string> = {
    client_id: world.shop.clientId,
    redirect_uri: REDIRECT_URI,
    response_type: 'code',
    scope: OPENID,
    state: 'conformance-state',
    nonce: 'conformance-nonce',
    code_challenge: pkcePair().challenge,
    code_challenge_method: 'S256',
  };
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined) delete query[k];
    else query[k] = v;
  }
  return new URL(`/auth?${new URLSearchParams(query)}`, server.issuer);
}

/** An authorization error returned to the client's redirect_uri, as the suite reads it. */
async function errorAtRedirectUri(params: Record<string, string | undefined>) {
  const res = await fetch(authUrl(params), { redirect: 'manual' });
  assert.equal(res.status, 303, `expected a redirect to the client, got ${res.status}`);
  const location = new URL(res.headers.get('location')!);
  assert.equal(location.origin + location.pathname, REDIRECT_URI);
  // Errors of response types that would return tokens in the fragment come in the fragment (their default response mode).
  const inFragment = (params.response_type ?? 'code') !== 'code';
  assert.equal(inFragment ? location.search : location.hash, '');
  const fields = new URLSearchParams(inFragment ? location.hash.slice(1) : location.search);
  assert.equal(fields.get('code'), null);
  assert.equal(fields.get('state'), 'conformance-state');
  assert.equal(fields.get('iss'), server.issuer);
  return fields.get('error');
}

/** An error page that does not redirect: what the suite wants when the redirect_uri cannot be trusted. */
async function errorPageWithoutRedirect(params: Record<string, string | undefined>) {
  const res = await fetch(authUrl(params), { redirect: 'manual', headers: { accept: 'text/html' } });
  assert.equal(res.status, 400);
  assert.equal(res.headers.get('location'), null);
  return res.text();
}

async function userinfo(init: { method: 'GET' | 'POST'; token: string; in: 'header' | 'body' }) {
  const headers: Record<string, string> = { accept: 'application/json' };
  let body: string | undefined;
  if (init.in === 'header') headers.authorization = `Bearer ${init.token}`;
  else {
    headers['content-type'] = 'application/x-www-form-urlencoded';
    body = new URLSearchParams({ access_token: init.token }).toString();
  }
  const res = await fetch(new URL('/me', server.issuer), { method: init.method, headers, body });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('Basic OP (oidcc-basic-certification-test-plan)', () => {
  test('oidcc-server', async () => {
    // The one module run with a real browser: the person signs in, consents, and lands on the app.
    const app = await startFakeApp();
    const browser = await launchBrowser();
    try {
      const redirectUri = `${app.origin}/cb`;
      const client = await server.app.registry.createClient({ name: 'Conformance RP', grants: ['authorization_code'], redirectUris: [redirectUri], scope: 'openid' }, async () => {});
      const browserRp = await relyingParty(server.issuer, { clientId: client.clientId, secret: client.secret!, redirectUri });
      const verifier = oc.randomPKCECodeVerifier();
      const state = oc.randomState();
      const nonce = oc.randomNonce();
      const url = oc.buildAuthorizationUrl(browserRp, {
        redirect_uri: redirectUri, scope: OPENID, state, nonce,
        code_challenge: await oc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
      });
      const page = await (await newContext(browser)).newPage();
      const callback = await authorizeInBrowser(page, url, { redirectUri, email: world.user.email, password: world.user.password });
      assert.equal(callback.searchParams.get('iss'), server.issuer);
      const tokens = await oc.authorizationCodeGrant(browserRp, callback, { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true });
      const claims = tokens.claims()!;
      assert.equal(claims.iss, server.issuer);
      assert.equal(claims.aud, client.clientId);
      assert.equal(claims.sub, world.user.id);
      assert.equal(claims.nonce, nonce);
      assert.ok(claims.exp > claims.iat);
      assert.equal(tokens.token_type, 'bearer');
    } finally {
      await browser.close();
      await app.close();
    }
  });

  for (const responseType of ['id_token', 'id_token token', 'code id_token', 'code token', 'code id_token token']) {
    test(`oidcc-server[response_type=${responseType}]`, async (t) => {
      assert.equal(await errorAtRedirectUri({ response_type: responseType }), 'unsupported_response_type');
      const metadata = rp.serverMetadata();
      assert.deepEqual(metadata.response_types_supported, ['code']);
      refusedAsDocumented(t, 'code flow only: implicit and hybrid response types get unsupported_response_type');
    });
  }

  test('oidcc-response-type-missing', async () => {
    assert.equal(await errorAtRedirectUri({ response_type: undefined }), 'invalid_request');
  });

  test('oidcc-idtoken-signature', async () => {
    const { tokens, claims } = await run(OPENID);
    const header = jwtHeader(tokens.id_token!);
    assert.ok((rp.serverMetadata().id_token_signing_alg_values_supported as string[]).includes(String(header.alg)));
    const jwks = (await (await fetch(rp.serverMetadata().jwks_uri!)).json()) as { keys: { kid: string }[] };
    assert.ok(jwks.keys.some((k) => k.kid === header.kid), 'the signing key is published');
    assert.equal(claims.sub, world.user.id);
  });

  test('oidcc-userinfo-get', async () => {
    const { tokens } = await run(OPENID);
    const info = await oc.fetchUserInfo(rp, tokens.access_token, world.user.id);
    assert.equal(info.sub, world.user.id);
  });

  test('oidcc-userinfo-post-header', async () => {
    const { tokens } = await run(OPENID);
    const res = await userinfo({ method: 'POST', token: tokens.access_token, in: 'header' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.sub, world.user.id);
  });

  test('oidcc-userinfo-post-body', async () => {
    const { tokens } = await run(OPENID);
    const res = await userinfo({ method: 'POST', token: tokens.access_token, in: 'body' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.sub, world.user.id);
  });

  test('oidcc-ensure-request-without-nonce-succeeds-for-code-flow', async () => {
    const { claims } = await run(OPENID, { nonce: undefined });
    assert.equal(claims.nonce, undefined);
  });

  test('oidcc-scope-profile', async () => {
    const { tokens, claims } = await run('openid profile');
    const info = await oc.fetchUserInfo(rp, tokens.access_token, world.user.id);
    assert.equal(info.name, world.user.name);
    assert.equal(claims.name, world.user.name, 'the ID token carries granted profile claims too');
    assert.equal(info.email, undefined, 'email was not asked for');
  });

  test('oidcc-scope-email', async () => {
    const { tokens } = await run('openid email');
    const info = await oc.fetchUserInfo(rp, tokens.access_token, world.user.id);
    assert.equal(info.email, world.user.email);
    assert.equal(info.email_verified, true);
    assert.equal(info.name, undefined, 'profile was not asked for');
  });

  for (const scope of ['address', 'phone']) {
    test(`oidcc-scope-${scope}`, async (t) => {
      assert.ok(!(rp.serverMetadata().scopes_supported as string[]).includes(scope), `discovery does not offer ${scope}`);
      const { tokens, claims } = await run(`openid ${scope}`);
      assert.ok(!String(tokens.scope).split(' ').includes(scope), `${scope} is not granted`);
      const info = await oc.fetchUserInfo(rp, tokens.access_token, world.user.id);
      assert.equal(info[scope], undefined);
      assert.equal(info[`${scope}_number`], undefined);
      assert.equal(claims.sub, world.user.id);
      refusedAsDocumented(t, `accounts hold no ${scope}: the scope is not in scopes_supported and is ignored`);
    });
  }

  test('oidcc-scope-all', async (t) => {
    const { tokens } = await run('openid profile email address phone');
    assert.deepEqual(String(tokens.scope).split(' ').sort(), ['email', 'openid', 'profile']);
    const info = await oc.fetchUserInfo(rp, tokens.access_token, world.user.id);
    assert.equal(info.name, world.user.name);
    assert.equal(info.email, world.user.email);
    note(t, 'profile (name) and email claims returned; address and phone are not offered');
  });

  test('oidcc-ensure-other-scope-order-succeeds', async () => {
    const { tokens, claims } = await run('email openid');
    assert.equal(claims.sub, world.user.id);
    assert.deepEqual(String(tokens.scope).split(' ').sort(), ['email', 'openid']);
  });

  for (const display of ['page', 'popup']) {
    test(`oidcc-display-${display}`, async () => {
      const { flow, claims } = await run(OPENID, { display });
      assert.ok(flow.loginPage, 'the sign-in page was shown');
      assert.equal(claims.sub, world.user.id);
    });
  }

  test('oidcc-prompt-login', async () => {
    const first = await run(OPENID);
    const second = await withClockAhead(2, () => run(OPENID, { prompt: 'login' }, first.flow.jar));
    assert.ok(second.flow.loginPage, 'signed in, and asked to sign in again');
    assert.equal(second.claims.sub, first.claims.sub);
    assert.ok(second.claims.iat > first.claims.iat, 'a new ID token');
  });

  test('oidcc-prompt-none-not-logged-in', async () => {
    assert.equal(await errorAtRedirectUri({ prompt: 'none' }), 'login_required');
  });

  test('oidcc-prompt-none-logged-in', async () => {
    const first = await run(OPENID);
    const silent = await run(OPENID, { prompt: 'none' }, first.flow.jar);
    assert.equal(silent.flow.loginPage, undefined);
    assert.equal(silent.flow.consentPage, undefined);
    assert.equal(silent.claims.sub, first.claims.sub);
  });

  test('oidcc-max-age-1', async () => {
    const first = await run(OPENID);
    const second = await withClockAhead(2, () => run(OPENID, { max_age: '1' }, first.flow.jar));
    assert.ok(second.flow.loginPage, 'the session is older than max_age: sign in again');
    // auth_time is in ID tokens when max_age is requested (OIDC Core §3.1.2.1); the first sign-in was by first.iat.
    assert.ok(second.claims.auth_time! > first.claims.iat, 'a new auth_time');
  });

  test('oidcc-max-age-10000', async () => {
    const first = await run(OPENID, { max_age: '10000' });
    const second = await withClockAhead(2, () => run(OPENID, { max_age: '10000' }, first.flow.jar));
    assert.equal(second.flow.loginPage, undefined, 'the session is recent enough');
    assert.equal(typeof first.claims.auth_time, 'number');
    assert.equal(second.claims.auth_time, first.claims.auth_time);
  });

  test('oidcc-ensure-request-with-unknown-parameter-succeeds', async () => {
    const { claims } = await run(OPENID, { extra: 'foobar' });
    assert.equal(claims.sub, world.user.id);
  });

  test('oidcc-id-token-hint', async () => {
    const first = await run(OPENID);
    const second = await run(OPENID, { prompt: 'none', id_token_hint: first.tokens.id_token! }, first.flow.jar);
    assert.equal(second.claims.sub, first.claims.sub);
  });

  test('oidcc-login-hint', async (t) => {
    const { flow, claims } = await run(OPENID, { login_hint: world.user.email });
    assert.ok(flow.loginPage);
    assert.equal(claims.sub, world.user.id);
    note(t, 'accepted; the sign-in page does not pre-fill the hint');
  });

  test('oidcc-ui-locales', async (t) => {
    const { claims } = await run(OPENID, { ui_locales: 'se' });
    assert.equal(claims.sub, world.user.id);
    note(t, 'accepted; the pages are in English only');
  });

  test('oidcc-claims-locales', async (t) => {
    const { tokens } = await run('openid profile', { claims_locales: 'se' });
    assert.equal((await oc.fetchUserInfo(rp, tokens.access_token, world.user.id)).name, world.user.name);
    note(t, 'accepted; claims have one language');
  });

  test('oidcc-ensure-request-with-acr-values-succeeds', async () => {
    const { claims } = await run(OPENID, { acr_values: '1 2' });
    assert.equal(claims.acr, 'urn:latchkey:mfa', 'acr is in the ID token');
  });

  test('oidcc-ensure-request-with-valid-pkce-succeeds', async () => {
    // authorize() always sends S256 with its verifier at the token endpoint.
    const { claims } = await run(OPENID);
    assert.equal(claims.sub, world.user.id);
  });

  test('oidcc-server[pkce=none]', async (t) => {
    assert.equal(await errorAtRedirectUri({ code_challenge: undefined, code_challenge_method: undefined }), 'invalid_request');
    refusedAsDocumented(t, 'PKCE S256 is required of every client');
  });

  for (const [name, ahead] of [['oidcc-codereuse', 0], ['oidcc-codereuse-30seconds', 30]] as const) {
    test(name, async () => {
      const flow = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: OPENID });
      const tokens = await oc.authorizationCodeGrant(rp, flow.callback!, { pkceCodeVerifier: flow.verifier, expectedState: flow.state, expectedNonce: flow.nonce });
      await withClockAhead(ahead, async () => {
        await assert.rejects(
          oc.authorizationCodeGrant(rp, flow.callback!, { pkceCodeVerifier: flow.verifier, expectedState: flow.state, expectedNonce: flow.nonce }),
          (err: oc.ResponseBodyError) => err.error === 'invalid_grant' && err.status === 400,
        );
        // The suite's "should": the tokens of the reused code are revoked.
        const res = await userinfo({ method: 'GET', token: tokens.access_token, in: 'header' });
        assert.equal(res.status, 401);
        assert.equal(res.body.error, 'invalid_token');
      });
    });
  }

  test('oidcc-ensure-registered-redirect-uri', async () => {
    const html = await errorPageWithoutRedirect({ redirect_uri: 'https://conformance.example/cb' });
    assert.match(html, /redirect_uri/);
  });

  test('oidcc-server-client-secret-post', async () => {
    // A client registered for client_secret_post (`--secret-in body`): each client authenticates the one way it was registered with.
    const created = await server.app.registry.createClient({ name: 'Posts its secret', grants: ['authorization_code'], redirectUris: [REDIRECT_URI], scope: 'openid profile email', secretIn: 'body' }, async () => {});
    const app = { clientId: created.clientId, secret: created.secret!, redirectUri: REDIRECT_URI, name: 'Posts its secret' };
    const postRp = await relyingParty(server.issuer, app, oc.ClientSecretPost(app.secret));
    const { claims } = await authorize(postRp, { issuer: server.issuer, client: app, user: world.user, scope: OPENID });
    assert.equal(claims.sub, world.user.id);
  });

  test('oidcc-unsigned-request-object-supported-correctly-or-rejected-as-unsupported', async (t) => {
    assert.notEqual(rp.serverMetadata().request_parameter_supported, true);
    const request = `${Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url')}.${Buffer.from(
      JSON.stringify({ client_id: world.shop.clientId, response_type: 'code', scope: OPENID, redirect_uri: REDIRECT_URI, state: 'conformance-state' }),
    ).toString('base64url')}.`;
    assert.equal(await errorAtRedirectUri({ request }), 'request_not_supported');
    refusedAsDocumented(t, 'request objects are not supported: request_not_supported');
  });

  test('oidcc-request-uri-unsigned-supported-correctly-or-rejected-as-unsupported', async (t) => {
    assert.notEqual(rp.serverMetadata().request_uri_parameter_supported, true);
    assert.equal(await errorAtRedirectUri({ request_uri: 'https://conformance.example/request.jwt' }), 'request_uri_not_supported');
    refusedAsDocumented(t, 'request_uri is not supported: request_uri_not_supported');
  });

  test('oidcc-ensure-request-object-with-redirect-uri', async (t) => {
    const request = `${Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url')}.${Buffer.from(JSON.stringify({ redirect_uri: REDIRECT_URI })).toString('base64url')}.`;
    assert.equal(await errorAtRedirectUri({ request }), 'request_not_supported');
    refusedAsDocumented(t, 'request objects are not supported: request_not_supported');
  });

  test('oidcc-claims-essential', async (t) => {
    const claimsParameter = JSON.stringify({ userinfo: { name: { essential: true } } });
    const { tokens } = await run(OPENID, { claims: claimsParameter });
    const info = await oc.fetchUserInfo(rp, tokens.access_token, world.user.id);
    assert.equal(info.sub, world.user.id);
    assert.notEqual(rp.serverMetadata().claims_parameter_supported, true);
    note(t, 'the request succeeds; the claims parameter is not supported, so only scope-granted claims are returned');
  });

  test('oidcc-refresh-token', async () => {
    const first = await run('openid offline_access');
    assert.ok(first.tokens.refresh_token, 'offline_access gives a refresh token');
    const refreshed = await oc.refreshTokenGrant(rp, first.tokens.refresh_token);
    const claims = refreshed.claims();
    assert.ok(claims, 'an ID token on refresh');
    assert.equal(claims.sub, first.claims.sub);
    assert.equal(claims.iss, first.claims.iss);
    assert.equal(claims.aud, first.claims.aud);
    assert.ok(refreshed.refresh_token && refreshed.refresh_token !== first.tokens.refresh_token, 'the refresh token rotates');
    // Another client cannot use it.
    const otherRp = await relyingParty(server.issuer, world.other);
    await assert.rejects(oc.refreshTokenGrant(otherRp, refreshed.refresh_token), (err: oc.ResponseBodyError) => err.error === 'invalid_grant');
  });

  test('oidcc-ensure-post-request-succeeds', async (t) => {
    const { flow, claims } = await authorize(rp, { issuer: server.issuer, client: world.shop, user: world.user, scope: OPENID, post: true });
    assert.equal(flow.loginPage?.url.pathname.startsWith('/interaction/'), true);
    assert.equal(claims.sub, world.user.id);
    note(t, 'a form POST to /auth is answered with a 303 to the GET of the same parameters (SameSite=Lax cookies ride it)');
  });

  test('oidcc-prompt-consent', async (t) => {
    // Consent is remembered per person and client; prompt=consent from the app asks again all the same.
    const app = await world.newApp('Consent again', 'openid email');
    const appRp = await relyingParty(server.issuer, app);
    const first = await authorize(appRp, { issuer: server.issuer, client: app, user: world.user, scope: 'openid email' });
    assert.ok(first.flow.consentPage, 'asked the first time');
    const remembered = await authorize(appRp, { issuer: server.issuer, client: app, user: world.user, scope: 'openid email', jar: first.flow.jar });
    assert.equal(remembered.flow.consentPage, undefined, 'remembered');
    const asked = await authorize(appRp, { issuer: server.issuer, client: app, user: world.user, scope: 'openid email', jar: first.flow.jar, params: { prompt: 'consent' } });
    assert.ok(asked.flow.consentPage, 'prompt=consent shows the consent page');
    assert.equal(asked.claims.sub, world.user.id);
    note(t, "Latchkey's own check: prompt=consent shows the consent page even when consent was remembered (OIDC Core §3.1.2.1 SHOULD)");
  });

  test('oidcc-ensure-redirect-uri-in-authorization-request', async () => {
    // The shop app has one registered redirect_uri: it must still be named (OIDC Core §3.1.2.1).
    assert.match(await errorPageWithoutRedirect({ redirect_uri: undefined }), /redirect_uri/);
  });
});
