import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { describe, test } from 'node:test';
import type * as oc from 'openid-client';
import { browse, CookieJar, follow, hiddenField, signIn, type Page } from '../helpers/flow.ts';
import type { TestServer } from '../helpers/server.ts';
import { POST_LOGOUT_URI, useWorld, type World } from '../helpers/world.ts';
import { authorize, jwtHeader, note, relyingParty } from './op.ts';

/**
 * The suite's RP-Initiated Logout plan (oidcc-rp-initiated-logout-certification-test-plan), one test
 * per module: the person signs in, the app sends them to the end_session_endpoint, and the module
 * checks where they end up and whether the session is gone.
 */
let server: TestServer;
let world: World;
let rp: oc.Configuration;

useWorld({}, async (setup) => {
  ({ server, world } = setup);
  rp = await relyingParty(server.issuer, world.shop);
});

async function signedIn() {
  const { flow, tokens } = await authorize(rp, { issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid' });
  return { jar: flow.jar, idToken: tokens.id_token! };
}

interface LogoutOutcome {
  /** The confirmation page (oidc-provider asks the person before ending the session). */
  confirmation?: Page;
  /** Where the browser left the issuer, if it was sent back to the app. */
  leftTo?: URL;
  /** The last page on the issuer: the error page, or "signed out". */
  page?: Page;
}

/** The browser at the end_session_endpoint: confirms "sign out" when asked, follows what comes back. */
async function logout(jar: CookieJar, params: Record<string, string>, how: 'get' | 'post' = 'get'): Promise<LogoutOutcome> {
  const start = new URL(`/session/end?${new URLSearchParams(params)}`, server.issuer);
  const sent = how === 'post' ? await browse(jar, new URL('/session/end', server.issuer), { form: params }) : await browse(jar, start);
  const first = await follow(jar, server.issuer, sent, start);
  const html = first.page?.html ?? '';
  const action = html.match(/<form[^>]*id="op.logoutForm"[^>]*action="([^"]+)"/)?.[1] ?? html.match(/<form[^>]*action="([^"]+)"[^>]*id="op.logoutForm"/)?.[1];
  if (first.page?.status !== 200 || !action) return { page: first.page, leftTo: first.leftTo };
  const url = new URL(action, server.issuer);
  const done = await follow(jar, server.issuer, await browse(jar, url, { form: { xsrf: hiddenField(html, 'xsrf')!, logout: 'yes' } }), url);
  return { confirmation: first.page, leftTo: done.leftTo, page: done.page };
}

/** Whether the jar's session still signs the person in silently. */
async function stillSignedIn(jar: CookieJar): Promise<boolean> {
  const silent = await signIn({ issuer: server.issuer, client: world.shop, jar, scope: 'openid', params: { prompt: 'none' } });
  if (silent.code) return true;
  assert.equal(silent.callback?.searchParams.get('error'), 'login_required');
  return false;
}

/** Signed out, and shown Latchkey's "signed out" page rather than sent anywhere. */
function assertSignedOutHere(outcome: LogoutOutcome) {
  assert.ok(outcome.confirmation, 'the person was asked');
  assert.equal(outcome.leftTo, undefined, 'not sent anywhere');
  assert.equal(outcome.page?.status, 200);
  assert.match(outcome.page.html, /<h1>Signed out<\/h1>/);
}

/** Refused with an error page: no redirect, and the session is untouched. */
async function assertRefused(outcome: LogoutOutcome, jar: CookieJar) {
  assert.equal(outcome.leftTo, undefined, 'no redirect');
  assert.equal(outcome.confirmation, undefined, 'no confirmation either');
  assert.equal(outcome.page?.status, 400);
  assert.ok(await stillSignedIn(jar), 'the session is untouched');
}

/** A copy of a JWT with its payload changed and the original signature kept. */
function modified(jwt: string): string {
  const [header, payload, signature] = jwt.split('.');
  const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString('utf8')) as Record<string, unknown>;
  claims.sub = `${String(claims.sub)}-modified`;
  return [header, Buffer.from(JSON.stringify(claims)).toString('base64url'), signature].join('.');
}

/** The same claims, signed RS256 by a key that is not the issuer's (the suite's own key). */
function signedByAnotherKey(jwt: string): string {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const header = Buffer.from(JSON.stringify({ alg: 'RS256', typ: 'JWT', kid: jwtHeader(jwt).kid })).toString('base64url');
  const input = `${header}.${jwt.split('.')[1]}`;
  return `${input}.${sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
}

describe('RP-Initiated Logout (oidcc-rp-initiated-logout-certification-test-plan)', () => {
  test('oidcc-rp-initiated-logout-discovery-endpoint-verification', () => {
    assert.equal(rp.serverMetadata().end_session_endpoint, `${server.issuer}/session/end`);
  });

  test('oidcc-rp-initiated-logout', async () => {
    const { jar, idToken } = await signedIn();
    const outcome = await logout(jar, { id_token_hint: idToken, post_logout_redirect_uri: POST_LOGOUT_URI, state: 'bye-state' });
    assert.ok(outcome.confirmation);
    assert.ok(outcome.leftTo, 'back to the app');
    assert.equal(outcome.leftTo.origin + outcome.leftTo.pathname, POST_LOGOUT_URI);
    assert.equal(outcome.leftTo.searchParams.get('state'), 'bye-state');
    assert.equal(await stillSignedIn(jar), false);
  });

  test('oidcc-rp-initiated-logout[post]', async (t) => {
    const { jar, idToken } = await signedIn();
    const outcome = await logout(jar, { id_token_hint: idToken, post_logout_redirect_uri: POST_LOGOUT_URI, state: 'bye-state' }, 'post');
    assert.ok(outcome.confirmation);
    assert.equal(outcome.leftTo?.origin + outcome.leftTo!.pathname, POST_LOGOUT_URI);
    assert.equal(outcome.leftTo?.searchParams.get('state'), 'bye-state');
    assert.equal(await stillSignedIn(jar), false);
    note(t, 'the same logout sent as a form POST (RP-Initiated Logout §2): a 303 to the GET of the same parameters');
  });

  test('oidcc-rp-initiated-logout-bad-post-logout-redirect-uri', async () => {
    const { jar, idToken } = await signedIn();
    await assertRefused(await logout(jar, { id_token_hint: idToken, post_logout_redirect_uri: 'https://conformance.example/bye', state: 's' }), jar);
  });

  test('oidcc-rp-initiated-logout-query-added-to-post-logout-redirect-uri', async () => {
    const { jar, idToken } = await signedIn();
    await assertRefused(await logout(jar, { id_token_hint: idToken, post_logout_redirect_uri: `${POST_LOGOUT_URI}?foo=bar`, state: 's' }), jar);
  });

  test('oidcc-rp-initiated-logout-modified-id-token-hint', async () => {
    const { jar, idToken } = await signedIn();
    await assertRefused(await logout(jar, { id_token_hint: modified(idToken), post_logout_redirect_uri: POST_LOGOUT_URI, state: 's' }), jar);
  });

  test('oidcc-rp-initiated-logout-bad-id-token-hint', async () => {
    const { jar, idToken } = await signedIn();
    await assertRefused(await logout(jar, { id_token_hint: signedByAnotherKey(idToken), post_logout_redirect_uri: POST_LOGOUT_URI, state: 's' }), jar);
  });

  test('oidcc-rp-initiated-logout-no-id-token-hint', async () => {
    // client_id instead of id_token_hint: the person confirms, then goes back to the app.
    const { jar } = await signedIn();
    const outcome = await logout(jar, { client_id: world.shop.clientId, post_logout_redirect_uri: POST_LOGOUT_URI, state: 'bye-state' });
    assert.ok(outcome.confirmation, 'the person was asked');
    assert.equal(outcome.leftTo?.origin + outcome.leftTo!.pathname, POST_LOGOUT_URI);
    assert.equal(outcome.leftTo?.searchParams.get('state'), 'bye-state');
    assert.equal(await stillSignedIn(jar), false);
  });

  test('oidcc-rp-initiated-logout-no-params', async () => {
    const { jar } = await signedIn();
    assertSignedOutHere(await logout(jar, {}));
    assert.equal(await stillSignedIn(jar), false);
  });

  test('oidcc-rp-initiated-logout-no-post-logout-redirect-uri', async () => {
    const { jar, idToken } = await signedIn();
    assertSignedOutHere(await logout(jar, { id_token_hint: idToken }));
    assert.equal(await stillSignedIn(jar), false);
  });

  test('oidcc-rp-initiated-logout-only-state', async () => {
    const { jar, idToken } = await signedIn();
    const outcome = await logout(jar, { id_token_hint: idToken, state: 'bye-state' });
    assertSignedOutHere(outcome);
    assert.ok(!outcome.page!.html.includes('bye-state'));
    assert.equal(await stillSignedIn(jar), false);
  });

  test('oidcc-rp-initiated-logout-no-state', async () => {
    const { jar, idToken } = await signedIn();
    const outcome = await logout(jar, { id_token_hint: idToken, post_logout_redirect_uri: POST_LOGOUT_URI });
    assert.equal(outcome.leftTo?.origin + outcome.leftTo!.pathname, POST_LOGOUT_URI);
    assert.equal(outcome.leftTo?.searchParams.has('state'), false);
    assert.equal(await stillSignedIn(jar), false);
  });
});
