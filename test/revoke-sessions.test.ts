import assert from 'node:assert/strict';
import { test } from 'node:test';
import { totpCodeAt } from '../src/accounts/totp.ts';
import { browse, endpoints, follow, formAction, hiddenField, recoveryCodesOf, signIn, signInAndRedeem, totpKeyOf, type CookieJar, type Followed, type Page } from './helpers/flow.ts';
import { type TestRedis } from './helpers/redis.ts';
import type { TestServer } from './helpers/server.ts';
import { nextTotpCode, totpClock } from './helpers/totp.ts';
import { enrollTotp, useWorld, type World } from './helpers/world.ts';
import { runCli, type CliRun } from './helpers/cli.ts';

/**
 * `latchkey user revoke-sessions`: a person is signed out everywhere, and their tokens die. The same
 * happens after a new password or a new authenticator (on /account: every session but the one that
 * made the change) and after `user set-password` / `user reset-mfa` (every session).
 */
let redis: TestRedis;
let server: TestServer;
let world: World;

useWorld((setup) => ({ redis, server, world } = setup));

function cli(args: string[], stdin = ''): Promise<CliRun> {
  return runCli(args, { env: { REDIS_URL: redis.url }, stdin });
}

const SCOPE = 'openid profile offline_access api:read';

test('revoke-sessions ends every session and grant of one person, and nobody else’s', async () => {
  const call = endpoints(server.issuer);
  // Ada: two apps in one browser (two grants, one session), and a second browser (another session).
  const laptop = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: SCOPE });
  const dashboard = await signInAndRedeem({ issuer: server.issuer, client: world.firstParty, scope: SCOPE, jar: laptop.flow.jar });
  assert.equal(dashboard.flow.loginPage, undefined, 'the second app used the same session');
  const phone = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: SCOPE });
  // Someone else, signed in too.
  const bobUser = { email: 'bob@example.org', password: 'his own long passphrase' };
  await server.app.accounts.create({ ...bobUser, name: 'Bob' });
  const bob = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: bobUser, scope: SCOPE });

  const r = await cli(['user', 'revoke-sessions', world.user.email, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.deepEqual(out, { id: world.user.id, email: world.user.email, sessions_revoked: 2, grants_revoked: 3 });

  for (const [what, signedIn, client] of [
    ['laptop', laptop, world.shop],
    ['dashboard', dashboard, world.firstParty],
    ['phone', phone, world.shop],
  ] as const) {
    const introspected = await call.introspect(world.api, signedIn.tokens.access_token);
    assert.deepEqual(introspected.body, { active: false }, `${what}: the access token is dead`);
    const refreshed = await call.refresh(client, signedIn.tokens.refresh_token!);
    assert.equal(refreshed.body.error, 'invalid_grant', `${what}: the refresh token is dead`);
    assert.equal(refreshed.body.access_token, undefined);
    const silent = await signIn({ issuer: server.issuer, client, scope: 'openid', jar: signedIn.flow.jar, params: { prompt: 'none' } });
    assert.equal(silent.callback?.searchParams.get('error'), 'login_required', `${what}: signed out`);
    assert.equal(silent.code, undefined);
  }

  // Bob is untouched.
  assert.equal((await call.introspect(world.api, bob.tokens.access_token)).body.active, true);
  const bobSilent = await signIn({ issuer: server.issuer, client: world.shop, scope: SCOPE, jar: bob.flow.jar, params: { prompt: 'none' } });
  assert.ok(bobSilent.code, 'Bob is still signed in');

  // Ada can sign in again.
  const again = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: SCOPE });
  assert.equal((await call.introspect(world.api, again.tokens.access_token)).body.active, true);

  // An unknown person: exit 2, one line.
  const unknown = await cli(['user', 'revoke-sessions', 'nobody@example.org']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^latchkey: no user with email nobody@example\.org\n$/);
});

test('disabling or deleting a person also signs them out everywhere', async () => {
  const call = endpoints(server.issuer);
  for (const action of ['disable', 'delete'] as const) {
    const person = { email: `${action}@example.org`, password: 'a long passphrase, soon ended' };
    await server.app.accounts.create(person);
    const signedIn = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: person, scope: SCOPE });
    assert.equal((await call.introspect(world.api, signedIn.tokens.access_token)).body.active, true);
    const r = await cli(['user', action, person.email, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await call.introspect(world.api, signedIn.tokens.access_token)).body, { active: false }, `${action}: the access token is dead`);
    assert.equal((await call.refresh(world.shop, signedIn.tokens.refresh_token!)).body.error, 'invalid_grant');
  }
});

// ---- a new password or a new authenticator ends the other sessions ----

const PASSWORD = 'correct horse battery staple';

/** A person with a TOTP factor (flow.ts signs them in with its codes). */
async function person(label: string) {
  const email = `${label}-${Math.random().toString(36).slice(2)}@example.org`;
  const account = await server.app.accounts.create({ email, password: PASSWORD });
  const { totpSecret } = await enrollTotp(server, account);
  return { id: account.id, email, password: PASSWORD, totpSecret };
}

type SignedIn = Awaited<ReturnType<typeof signInAndRedeem>>;

/** Dead: the access token is inactive, the refresh token refused, and the browser no longer signed in. */
async function assertSignedOut(what: string, signedIn: SignedIn) {
  const call = endpoints(server.issuer);
  assert.deepEqual((await call.introspect(world.api, signedIn.tokens.access_token)).body, { active: false }, `${what}: the access token is dead`);
  const refreshed = await call.refresh(world.shop, signedIn.tokens.refresh_token!);
  assert.equal(refreshed.body.error, 'invalid_grant', `${what}: the refresh token is dead`);
  const silent = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid', jar: signedIn.flow.jar, params: { prompt: 'none' } });
  assert.equal(silent.callback?.searchParams.get('error'), 'login_required', `${what}: signed out`);
}

/** Two browsers of one person, each signed in to the shop with tokens. */
async function twoBrowsers(user: Awaited<ReturnType<typeof person>>) {
  const here = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user, scope: SCOPE });
  const elsewhere = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user, scope: SCOPE });
  return { here, elsewhere };
}

async function accountPage(jar: CookieJar): Promise<Page> {
  const url = new URL('/account', server.issuer);
  const followed = await follow(jar, server.issuer, await browse(jar, url), url);
  assert.equal(followed.page?.url.pathname, '/account', 'the account page, without signing in again');
  assert.match(followed.page.html, /<h1>Your account<\/h1>/);
  return followed.page;
}

async function post(jar: CookieJar, page: Page, suffix: string, fields: Record<string, string>): Promise<Followed> {
  const url = new URL(formAction(page.html, suffix)!, page.url);
  return follow(jar, server.issuer, await browse(jar, url, { form: { _csrf: hiddenField(page.html, '_csrf')!, ...fields } }), url);
}

function audited(event: string, accountId: string) {
  return server.logs.filter((l) => l.event === event && l.accountId === accountId);
}

test('a new password on /account ends every other session and every grant; the browser that changed it stays signed in', async () => {
  const p = await person('pw');
  const { here, elsewhere } = await twoBrowsers(p);
  const page = (await post(here.flow.jar, await accountPage(here.flow.jar), '/account/sudo', { current_password: PASSWORD, code: await nextTotpCode(server.issuer, p.totpSecret) })).page!;
  const changed = await post(here.flow.jar, page, '/account/password', { new_password: 'a brand new passphrase' });
  assert.match(changed.page!.html, /Your password was changed/);

  await assertSignedOut('the other browser', elsewhere);
  // This browser's own app tokens die too: they were issued to whoever held the old password.
  assert.deepEqual((await endpoints(server.issuer).introspect(world.api, here.tokens.access_token)).body, { active: false });
  assert.equal((await endpoints(server.issuer).refresh(world.shop, here.tokens.refresh_token!)).body.error, 'invalid_grant');
  await accountPage(here.flow.jar);
  assert.deepEqual(audited('password_changed', p.id).map((l) => [l.source, l.sessions, l.grants]), [['account_page', 1, 2]]);
});

test('a new authenticator on /account ends every other session and every grant; this browser stays signed in', async () => {
  const p = await person('totp');
  const { here, elsewhere } = await twoBrowsers(p);
  const page = (await post(here.flow.jar, await accountPage(here.flow.jar), '/account/sudo', { current_password: PASSWORD, code: await nextTotpCode(server.issuer, p.totpSecret) })).page!;
  const enroll = await post(here.flow.jar, page, '/account/authenticator', {});
  const key = totpKeyOf(enroll.page!.html)!;
  // A new key alone changes nothing yet.
  assert.equal((await endpoints(server.issuer).introspect(world.api, elsewhere.tokens.access_token)).body.active, true);
  const confirmed = await post(here.flow.jar, enroll.page!, '/account/authenticator/confirm', { code: await totpCodeAt(key, totpClock.now()), pending: hiddenField(enroll.page!.html, 'pending')! });
  assert.equal(recoveryCodesOf(confirmed.page!.html).length, 10);

  await assertSignedOut('the other browser', elsewhere);
  assert.equal((await endpoints(server.issuer).refresh(world.shop, here.tokens.refresh_token!)).body.error, 'invalid_grant');
  await accountPage(here.flow.jar);
  assert.deepEqual(audited('second_factor_removed', p.id).map((l) => [l.reason, l.sessions, l.grants]), [['replaced', 1, 2]]);
});

test('user set-password and user reset-mfa end every session and grant of the person', async () => {
  for (const [args, stdin] of [
    [['user', 'set-password', '--password-stdin'], 'a passphrase from the operator'],
    [['user', 'reset-mfa'], ''],
  ] as const) {
    const p = await person(args[1]);
    const { here, elsewhere } = await twoBrowsers(p);
    const r = await cli([...args.slice(0, 2), p.id, ...args.slice(2), '--json'], stdin);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.deepEqual([out.sessions_revoked, out.grants_revoked], [2, 2], args[1]);
    await assertSignedOut(`${args[1]}: one browser`, here);
    await assertSignedOut(`${args[1]}: the other`, elsewhere);
    const audit = r.stderr.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(audit.map((l) => [l.event, l.sessions, l.grants]), [[args[1] === 'set-password' ? 'password_changed' : 'second_factor_removed', 2, 2]]);
  }
});
