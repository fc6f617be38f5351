import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { browse, CookieJar, follow, formAction, hiddenField, pkcePair, signIn, type Page } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { useWorld, type World } from './helpers/world.ts';

/**
 * Every state-changing form refuses a post that another site sent (Origin, Sec-Fetch-Site), with the
 * page of an expired form, even when its CSRF token is right. No Origin and no Sec-Fetch-Site (old
 * clients, curl) goes on to the CSRF token check.
 */
let server: TestServer;
let world: World;
useWorld({}, (setup) => ({ server, world } = setup));

const FOREIGN: { name: string; headers: Record<string, string> }[] = [
  { name: "another site's Origin", headers: { origin: 'https://attacker.example', 'sec-fetch-site': 'cross-site' } },
  { name: 'Origin null', headers: { origin: 'null' } },
  { name: 'Sec-Fetch-Site cross-site without Origin', headers: { 'sec-fetch-site': 'cross-site' } },
  { name: 'a sibling subdomain (Sec-Fetch-Site same-site)', headers: { 'sec-fetch-site': 'same-site' } },
];

function sameOrigin() {
  return { origin: new URL(server.issuer).origin, 'sec-fetch-site': 'same-origin' };
}

async function loginPage(jar: CookieJar): Promise<Page> {
  const auth = new URL('/auth', server.issuer);
  auth.search = new URLSearchParams({ client_id: world.shop.clientId, redirect_uri: world.shop.redirectUri, response_type: 'code', scope: 'openid', code_challenge: pkcePair().challenge, code_challenge_method: 'S256' }).toString();
  const { page } = await follow(jar, server.issuer, await browse(jar, auth), auth);
  assert.ok(page && formAction(page.html, '/login'), 'the login page');
  return page;
}

async function assertRefused(res: Response, what: string) {
  assert.equal(res.status, 403, what);
  assert.match(await res.text(), /the (sign-out )?form expired/, what);
}

describe('forms posted from another site', () => {
  test('every sign-in step refuses them, with a right CSRF token; the same post from the issuer goes through', async () => {
    const jar = new CookieJar();
    const page = await loginPage(jar);
    const csrf = hiddenField(page.html, '_csrf')!;
    const base = new URL(formAction(page.html, '/login')!, page.url).pathname.replace(/\/login$/, '');
    const form = { _csrf: csrf, email: world.user.email, password: world.user.password, code: '000000', recovery_code: 'aaaaa-aaaaa' };
    const signInEvents = () => server.logs.filter((l) => typeof l.event === 'string' && l.event.startsWith('signin_')).length;
    const before = signInEvents();
    for (const step of ['login', 'mfa', 'recovery', 'enroll', 'saved', 'consent', 'abort']) {
      for (const { name, headers } of FOREIGN) {
        await assertRefused(await browse(jar, new URL(`${base}/${step}`, server.issuer), { form, headers }), `${step}, ${name}`);
      }
    }
    assert.equal(signInEvents(), before, 'no password or code was even checked');
    const allowed = await browse(jar, new URL(`${base}/login`, server.issuer), { form, headers: sameOrigin() });
    assert.equal(allowed.status, 303, 'on to the second factor');
  });

  test('every /account form refuses them; the same post from the issuer goes through', async () => {
    const { jar } = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid' });
    const accountUrl = new URL('/account', server.issuer);
    const account = await browse(jar, accountUrl);
    assert.equal(account.status, 200);
    const csrf = hiddenField(await account.text(), '_csrf')!;
    const form = { _csrf: csrf, current_password: world.user.password, new_password: 'another long passphrase', code: '000000' };
    for (const path of ['saved', 'recovery-codes', 'authenticator', 'authenticator/confirm', 'password', 'sign-out-everywhere']) {
      for (const { name, headers } of FOREIGN) {
        await assertRefused(await browse(jar, new URL(`/account/${path}`, server.issuer), { form, headers }), `${path}, ${name}`);
      }
    }
    assert.equal((await browse(jar, accountUrl)).status, 200, 'still signed in');
    const allowed = await browse(jar, new URL('/account/saved', server.issuer), { form: { _csrf: csrf }, headers: sameOrigin() });
    assert.notEqual(allowed.status, 403);
  });

  test("oidc-provider's sign-out confirmation refuses them; the same post from the issuer signs out", async () => {
    const { jar } = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid' });
    const end = new URL(`/session/end?client_id=${world.shop.clientId}`, server.issuer);
    const html = await (await browse(jar, end)).text();
    const xsrf = hiddenField(html, 'xsrf')!;
    assert.ok(xsrf, 'the sign-out form');
    const confirm = new URL('/session/end/confirm', server.issuer);
    for (const { name, headers } of FOREIGN) {
      await assertRefused(await browse(jar, confirm, { form: { xsrf, logout: 'yes' }, headers }), name);
    }
    const silent = await signIn({ issuer: server.issuer, client: world.shop, jar, scope: 'openid', params: { prompt: 'none' } });
    assert.ok(silent.code, 'still signed in');
    const done = await browse(jar, confirm, { form: { xsrf, logout: 'yes' }, headers: sameOrigin() });
    assert.equal(done.status, 303);
    const after = await signIn({ issuer: server.issuer, client: world.shop, jar, scope: 'openid', params: { prompt: 'none' } });
    assert.equal(after.callback?.searchParams.get('error'), 'login_required', 'signed out');
  });
});
