import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { browse, follow, formAction, hiddenField, signIn, signInAndRedeem } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { POST_LOGOUT_URI, useWorld, type World } from './helpers/world.ts';

/** The sign-in, consent and sign-out pages as a browser without JavaScript sees them. */
let server: TestServer;
let world: World;

useWorld({}, (setup) => ({ server, world } = setup));

/** The message a person reads on the sign-in page after a failed attempt, with the page's status. */
async function failedSignIn(email: string, password: string) {
  const flow = await signIn({ issuer: server.issuer, client: world.shop, user: { email, password }, scope: 'openid' });
  assert.equal(flow.code, undefined);
  assert.ok(flow.page);
  const message = flow.page.html.match(/<p class="error"[^>]*>([^<]*)<\/p>/)?.[1];
  return { status: flow.page.status, message, html: flow.page.html, formStillThere: !!formAction(flow.page.html, '/login') };
}

describe('sign-in page', () => {
  it('carries the security headers: CSP with frame-ancestors none, nosniff, Referrer-Policy, no-store', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid' });
    const page = flow.page!;
    assert.equal(page.status, 200);
    assert.ok(formAction(page.html, '/login'), 'stopped on the sign-in page');
    const csp = page.headers.get('content-security-policy') ?? '';
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(csp, /default-src 'none'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.equal(page.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(page.headers.get('referrer-policy'), 'same-origin');
    assert.equal(page.headers.get('cache-control'), 'no-store');
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  });

  it('sets every cookie HttpOnly and SameSite=Lax', async () => {
    const { flow } = await signInAndRedeem({ issuer: server.issuer, client: world.firstParty, user: world.user, scope: 'openid' });
    const lines = flow.jar.setCookieLines;
    assert.ok(lines.some((l) => l.startsWith('_session=')), 'a session cookie was set');
    assert.ok(lines.some((l) => l.startsWith('_interaction=')), 'an interaction cookie was set');
    for (const line of lines) {
      assert.match(line, /;\s*httponly/i, line.split('=')[0]);
      assert.match(line, /;\s*samesite=lax/i, line.split('=')[0]);
    }
  });

  it('answers a wrong password and an unknown account with the same message', async () => {
    const wrong = await failedSignIn(world.user.email, 'not the password');
    const unknown = await failedSignIn('nobody@example.org', 'not the password');
    assert.equal(wrong.message, 'Wrong email or password.');
    assert.equal(unknown.message, wrong.message);
    assert.equal(unknown.status, wrong.status);
    assert.ok(wrong.formStillThere && unknown.formStillThere, 'the form is shown again');
  });

  it('escapes what the person typed when showing the form again', async () => {
    const { html } = await failedSignIn('"><script>alert(1)</script>@x.example', 'x');
    assert.ok(!html.includes('<script>alert(1)</script>'));
  });
});

describe('consent', () => {
  it('names the client and the scopes in plain words, and is remembered', async () => {
    const app = await world.newApp('Acme Photos');
    const first = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid profile email offline_access api:read', consent: 'stop' });
    const page = first.consentPage;
    assert.ok(page, 'a third-party app asks for consent');
    assert.match(page.html, /Acme Photos/);
    for (const words of ['See your name', 'See your email address', 'Stay connected while you are away', 'api:read']) assert.ok(page.html.includes(words), words);
    assert.equal(page.headers.get('cache-control'), 'no-store');
    assert.match(page.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);

    // Allow it, then sign in again in a new browser: no consent page the second time.
    const allowed = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid profile email offline_access api:read' });
    assert.ok(allowed.consentPage);
    assert.ok(allowed.code);
    const again = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid profile email offline_access api:read' });
    assert.ok(again.loginPage, 'signed in again');
    assert.equal(again.consentPage, undefined, 'consent was remembered');
    assert.ok(again.code);

    // A new scope is asked for, and only it.
    const more = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid profile email jwt:read', consent: 'stop' });
    assert.ok(more.consentPage, 'a scope not granted before needs consent');
    assert.ok(more.consentPage.html.includes('jwt:read'));
    assert.ok(!more.consentPage.html.includes('See your name'));
  });

  it('denying consent sends access_denied to the client, without a code', async () => {
    const app = await world.newApp('Declined app');
    const flow = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid email', consent: 'stop' });
    const page = flow.consentPage!;
    const abort = new URL(formAction(page.html, '/abort')!, page.url);
    const res = await browse(flow.jar, abort, { form: { _csrf: hiddenField(page.html, '_csrf')! } });
    const followed = await follow(flow.jar, server.issuer, res, abort);
    assert.equal(followed.leftTo?.searchParams.get('error'), 'access_denied');
    assert.equal(followed.leftTo?.searchParams.get('code'), null);
  });

  it('is skipped for first-party clients', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.firstParty, user: world.user, scope: 'openid profile email offline_access api:read' });
    assert.ok(flow.loginPage);
    assert.equal(flow.consentPage, undefined);
    assert.ok(flow.code);
  });

  it('is not needed again when the session is still there (single sign-on)', async () => {
    const first = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid email' });
    assert.ok(first.code);
    const second = await signIn({ issuer: server.issuer, client: world.shop, jar: first.jar, scope: 'openid email' });
    assert.equal(second.loginPage, undefined);
    assert.equal(second.consentPage, undefined);
    assert.ok(second.code);
  });

  it('gives a refresh token on single sign-on with offline_access, without showing a page', async () => {
    const first = await signIn({ issuer: server.issuer, client: world.firstParty, user: world.user, scope: 'openid offline_access' });
    assert.ok(first.code);
    const again = await signInAndRedeem({ issuer: server.issuer, client: world.firstParty, jar: first.jar, scope: 'openid offline_access' });
    assert.equal(again.flow.loginPage, undefined);
    assert.equal(again.flow.consentPage, undefined);
    assert.equal(typeof again.tokens.refresh_token, 'string');
  });
});

describe('RP-initiated logout', () => {
  it('confirms, signs out, returns to the registered post_logout_redirect_uri, and prompt=none then needs a login', async () => {
    const { flow, tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid' });
    const { jar } = flow;
    const silent = await signIn({ issuer: server.issuer, client: world.shop, jar, scope: 'openid', params: { prompt: 'none' } });
    assert.ok(silent.code, 'signed in: prompt=none succeeds before logout');

    const end = new URL('/session/end', server.issuer);
    end.search = new URLSearchParams({ id_token_hint: tokens.id_token!, post_logout_redirect_uri: POST_LOGOUT_URI, state: 'bye-state' }).toString();
    const confirm = await browse(jar, end);
    assert.equal(confirm.status, 200);
    const html = await confirm.text();
    assert.match(html, /Sign out\?/);
    assert.match(html, /Shop/);
    assert.match(confirm.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
    const action = html.match(/<form[^>]*id="op.logoutForm"[^>]*action="([^"]+)"/)?.[1] ?? html.match(/<form[^>]*action="([^"]+)"[^>]*id="op.logoutForm"/)?.[1];
    assert.ok(action, 'the logout form');
    const xsrf = hiddenField(html, 'xsrf');
    assert.ok(xsrf);

    const url = new URL(action, server.issuer);
    const done = await browse(jar, url, { form: { xsrf, logout: 'yes' } });
    const followed = await follow(jar, server.issuer, done, url);
    assert.ok(followed.leftTo, `no redirect after logout: ${followed.page?.status}`);
    assert.equal(followed.leftTo.origin + followed.leftTo.pathname, POST_LOGOUT_URI);
    assert.equal(followed.leftTo.searchParams.get('state'), 'bye-state');

    const after = await signIn({ issuer: server.issuer, client: world.shop, jar, scope: 'openid', params: { prompt: 'none' } });
    assert.equal(after.code, undefined);
    assert.equal(after.callback?.searchParams.get('error'), 'login_required');
    assert.equal(after.callback?.searchParams.get('iss'), server.issuer);
  });

  it('refuses a post_logout_redirect_uri that is not registered', async () => {
    const { flow, tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid' });
    const end = new URL('/session/end', server.issuer);
    end.search = new URLSearchParams({ id_token_hint: tokens.id_token!, post_logout_redirect_uri: 'https://attacker.example/bye' }).toString();
    const res = await browse(flow.jar, end);
    assert.equal(res.status, 400);
    assert.equal(res.headers.get('location'), null);
  });
});
