import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RedisStore } from '../src/storage/redis-store.ts';
import { totpCodeAt } from '../src/accounts/totp.ts';
import { browse, CookieJar, follow, formAction, hiddenField, recoveryCodesOf, totpKeyOf, type Followed, type Page } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { nextTotpCode, totpClock, wrongTotpCode } from './helpers/totp.ts';
import { SoftAuthenticator } from './helpers/soft-authenticator.ts';
import { enrollTotp, useServer } from './helpers/world.ts';

/**
 * /account, as a browser without JavaScript uses it: signing in through the ordinary flow, proving
 * who one is once (sudo mode, on the server's clock), then each change without asking again; every
 * post answered with 303 and the sentence next to the form it came from.
 */
let server: TestServer;
/** How far the server's clock (sudo mode's) is ahead of the real one. */
let ahead = 0;
useServer({ store: 'redis', server: { clock: () => Date.now() + ahead } }, (setup) => ({ server } = setup));

const PASSWORD = 'correct horse battery staple';

function errorOf(html: string): string | undefined {
  return html.match(/<p class="error"[^>]*>([^<]*)<\/p>/)?.[1];
}

/** The sentence the last post left next to one form (data-for), error or notice. */
function said(html: string, form: string): { error?: string; notice?: string } {
  const error = html.match(new RegExp(`<p class="error" role="alert" data-for="${form}">([^<]*)</p>`))?.[1];
  const notice = html.match(new RegExp(`<p class="notice" role="status" data-for="${form}">([^<]*)</p>`))?.[1];
  return { ...(error ? { error } : {}), ...(notice ? { notice } : {}) };
}

async function post(jar: CookieJar, page: Page, suffix: string, fields: Record<string, string>, csrf = hiddenField(page.html, '_csrf')!): Promise<Followed> {
  const action = formAction(page.html, suffix);
  assert.ok(action, `a form posting to …${suffix}`);
  const url = new URL(action, page.url);
  return follow(jar, server.issuer, await browse(jar, url, { form: { _csrf: csrf, ...fields } }), url);
}

/** Posts to a path whether or not the page shows its form (a stale page, a forged post). */
async function postTo(jar: CookieJar, page: Page, path: string, fields: Record<string, string>): Promise<Followed> {
  const url = new URL(path, server.issuer);
  return follow(jar, server.issuer, await browse(jar, url, { form: { _csrf: hiddenField(page.html, '_csrf')!, ...fields } }), url);
}

/** Opens /account with a fresh jar and signs in through the pages it sends the person to. */
async function signInToAccount(email: string, password: string, secret: string) {
  const jar = new CookieJar();
  const start = new URL('/account', server.issuer);
  let followed = await follow(jar, server.issuer, await browse(jar, start), start);
  assert.ok(followed.chain.some((c) => c.location?.includes('/auth?')), 'sent to the sign-in');
  followed = await post(jar, followed.page!, '/login', { email, password });
  followed = await post(jar, followed.page!, '/mfa', { code: await nextTotpCode(server.issuer, secret) });
  const page = followed.page!;
  assert.equal(page.url.pathname, '/account');
  assert.match(page.html, /<h1>Your account<\/h1>/);
  return { jar, page };
}

/** Proves who the person is once (password and a current code): sudo mode. */
async function confirm(jar: CookieJar, page: Page, p: { totpSecret: string }): Promise<Page> {
  const done = await post(jar, page, '/account/sudo', { current_password: PASSWORD, code: await nextTotpCode(server.issuer, p.totpSecret) });
  assert.equal(done.chain[0]!.status, 303);
  assert.match(said(done.page!.html, 'security').notice ?? '', /for the next 5 minutes you can change how you sign in/);
  return done.page!;
}

/** The audit events of one kind the server logged for one account. */
function audited(event: string, accountId: string) {
  return server.logs.filter((l) => l.event === event && l.accountId === accountId);
}

async function person() {
  const email = `acct-${Math.random().toString(36).slice(2)}@example.org`;
  const account = await server.app.accounts.create({ email, password: PASSWORD });
  const { totpSecret, recoveryCodes } = await enrollTotp(server, account);
  return { id: account.id, email, totpSecret, recoveryCodes };
}

describe('/account', () => {
  it('shows sections with anchors; changes wait for a proof, and a wrong one is refused next to its form', async () => {
    const p = await person();
    const { jar, page } = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    for (const id of ['profile', 'security', 'connected-apps', 'sessions']) assert.match(page.html, new RegExp(`<section id="${id}"`), id);
    for (const id of ['profile', 'security', 'connected-apps', 'sessions']) assert.match(page.html, new RegExp(`<a href="#${id}">`), `a link to #${id}`);
    assert.match(page.html, /On since/);
    assert.match(page.html, /10 of 10 unused/);
    // Before the proof the page offers no change, and a post of one (a stale page) is sent back to the proof.
    for (const action of ['/account/password', '/account/recovery-codes', '/account/authenticator']) assert.equal(formAction(page.html, action), undefined, action);
    const early = await postTo(jar, page, '/account/recovery-codes', {});
    assert.equal(early.page!.status, 403);
    assert.match(said(early.page!.html, 'sudo').error ?? '', /Confirm it’s you first/);
    assert.deepEqual(audited('recovery_codes_regenerated', p.id), [], 'nothing made');

    const wrong = await post(jar, page, '/account/sudo', { current_password: PASSWORD, code: await wrongTotpCode(server.issuer, p.totpSecret) });
    assert.equal(wrong.page!.status, 400, 'the page again, with the error next to the form');
    assert.match(said(wrong.page!.html, 'sudo').error ?? '', /code is not right/);
    const noPassword = await post(jar, page, '/account/sudo', { current_password: 'not it', code: await nextTotpCode(server.issuer, p.totpSecret) });
    assert.equal(said(noPassword.page!.html, 'sudo').error, 'Your current password is not right.');
    assert.equal(formAction(noPassword.page!.html, '/account/password'), undefined, 'still not in sudo mode');
    // A notice is a flash: shown once, after the 303; a reload shows the page without it.
    const confirmed = await confirm(jar, page, p);
    const reloaded = (await follow(jar, server.issuer, await browse(jar, new URL('/account', server.issuer)), new URL('/account', server.issuer))).page!;
    assert.ok(said(confirmed.html, 'security').notice);
    assert.deepEqual(said(reloaded.html, 'security'), {});
  });

  it('proves once, then makes new recovery codes, replaces the authenticator and changes the password without asking again', async () => {
    const p = await person();
    const { jar, page: first } = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    const page = await confirm(jar, first, p);
    assert.match(page.html, /you can change these until/);
    assert.deepEqual(audited('account_sudo_started', p.id).map((l) => [l.seconds, l.source]), [[300, 'account_page']]);

    const done = await post(jar, page, '/account/recovery-codes', {});
    const fresh = recoveryCodesOf(done.page!.html);
    assert.equal(fresh.length, 10);
    assert.match(done.page!.html, /download="recovery-codes.txt" href="data:text\/plain;charset=utf-8,/);
    assert.ok(fresh.every((code) => done.page!.html.includes(encodeURIComponent(code))), 'the download holds every code');
    assert.match(done.page!.html, /name="saved" type="checkbox" value="yes" required/);
    const factor = server.app.secondFactor;
    assert.equal((await factor.verifySecondFactor(p.id, { recoveryCode: p.recoveryCodes[0]! })).ok, false, 'the old set stopped working');
    assert.equal((await factor.verifySecondFactor(p.id, { recoveryCode: fresh[0]! })).ok, true, 'the new set works');
    const back = await post(jar, done.page!, '/account/saved', { saved: 'yes' });
    assert.equal(back.chain[0]!.status, 303);
    assert.match(said(back.page!.html, 'recovery').notice ?? '', /Your recovery codes are saved/);
    assert.match(back.page!.html, /9 of 10 unused/);
    assert.deepEqual(audited('recovery_codes_regenerated', p.id).map((l) => [l.count, l.source]), [[10, 'account_page']], 'audited once');
    assert.ok(!server.logs.some((l) => fresh.some((code) => JSON.stringify(l).includes(code))), 'no recovery code in a log line');

    const enroll = await post(jar, back.page!, '/account/authenticator', {});
    const key = totpKeyOf(enroll.page!.html);
    assert.ok(key, 'the new key is shown');
    const refused = await post(jar, enroll.page!, '/account/authenticator/confirm', { code: await wrongTotpCode(server.issuer, key), pending: hiddenField(enroll.page!.html, 'pending')! });
    assert.ok(errorOf(refused.page!.html), 'a wrong code is refused');
    const accepted = await post(jar, refused.page!, '/account/authenticator/confirm', { code: await totpCodeAt(key, totpClock.now()), pending: hiddenField(refused.page!.html, 'pending')! });
    assert.equal(recoveryCodesOf(accepted.page!.html).length, 10);
    assert.equal((await factor.verifySecondFactor(p.id, { totp: await nextTotpCode(server.issuer, p.totpSecret) })).ok, false, 'the old app no longer works');
    assert.equal((await factor.verifySecondFactor(p.id, { totp: await nextTotpCode(server.issuer, key) })).ok, true, 'the new one does');
    assert.deepEqual(audited('second_factor_removed', p.id).map((l) => [l.reason, l.source]), [['replaced', 'account_page']]);

    const saved = await post(jar, accepted.page!, '/account/saved', {});
    const changed = await post(jar, saved.page!, '/account/password', { new_password: 'a brand new passphrase' });
    assert.equal(changed.chain[0]!.status, 303, 'a change that worked redirects');
    assert.equal(changed.chain[0]!.location, '/account#security');
    assert.match(said(changed.page!.html, 'password').notice ?? '', /Your password was changed/);
    assert.ok(await server.app.accounts.authenticate(p.email, 'a brand new passphrase'));
    assert.equal(audited('account_sudo_started', p.id).length, 1, 'proved once');
  });

  it('sudo mode ends after ACCOUNT_SUDO_SECONDS on the server’s clock, and belongs to one session', async () => {
    const p = await person();
    const { jar, page: first } = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    const other = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    const page = await confirm(jar, first, p);
    assert.equal(formAction(other.page.html, '/account/password'), undefined, 'the other browser is not in sudo mode');
    const elsewhere = await postTo(other.jar, other.page, '/account/password', { new_password: 'a brand new passphrase' });
    assert.match(said(elsewhere.page!.html, 'sudo').error ?? '', /Confirm it’s you first/);

    ahead = 299_000;
    try {
      const still = await post(jar, page, '/account/password', { new_password: 'a brand new passphrase' });
      assert.match(said(still.page!.html, 'password').notice ?? '', /Your password was changed/, 'within the five minutes');
      ahead = 301_000;
      const late = await postTo(jar, still.page!, '/account/password', { new_password: 'another brand new passphrase' });
      assert.match(said(late.page!.html, 'sudo').error ?? '', /Confirm it’s you first/);
      assert.equal(formAction(late.page!.html, '/account/password'), undefined, 'the forms are gone with it');
      assert.equal(await server.app.accounts.authenticate(p.email, 'another brand new passphrase'), undefined);
    } finally {
      ahead = 0;
    }
  });

  it('refuses a common password and one holding the email’s name, saying why next to the form', async () => {
    const p = await person();
    const { jar, page: first } = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    const page = await confirm(jar, first, p);
    const name = p.email.slice(0, p.email.indexOf('@'));
    for (const [weak, why] of [
      ['password', /among the most common ones; choose another/],
      ['12345678', /among the most common ones; choose another/],
      [`My ${name.toUpperCase()} 2026!`, /contains the name of the email address/],
    ] as const) {
      const refused = await post(jar, page, '/account/password', { new_password: weak });
      assert.equal(refused.page!.status, 400);
      const error = said(refused.page!.html, 'password').error ?? '';
      assert.match(error, why, weak);
      assert.match(error, /^The new password is not accepted: /);
      assert.equal(await server.app.accounts.authenticate(p.email, weak), undefined, `${weak} was not set`);
    }
    assert.ok(await server.app.accounts.authenticate(p.email, PASSWORD), 'the password is unchanged');
  });

  it('the authenticator app, the only factor where one is required, cannot be removed', async () => {
    const p = await person();
    const { jar, page: first } = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    const page = await confirm(jar, first, p);
    assert.equal(formAction(page.html, '/account/authenticator/remove'), undefined, 'no removal offered');
    assert.match(page.html, /It is your only second factor, and this server requires one/);
    const forced = await postTo(jar, page, '/account/authenticator/remove', {});
    assert.match(said(forced.page!.html, 'authenticator').error ?? '', /this server requires one/);
    assert.ok((await server.app.accounts.find(p.id))!.mfa, 'still enrolled');
  });

  it('lists where you are signed in, this browser marked; ends one session and only that browser loses it', async () => {
    const p = await person();
    const { jar, page: first } = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    const other = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    const page = (await follow(jar, server.issuer, await browse(jar, new URL('/account', server.issuer)), new URL('/account', server.issuer))).page!;
    const sessions = [...page.html.matchAll(/<li class="session"( aria-current="true")?>/g)];
    assert.equal(sessions.length, 2, 'two sessions');
    assert.equal(sessions.filter((m) => m[1]).length, 1, 'one of them this browser');
    assert.match(page.html, /this browser/);
    assert.match(page.html, /with password and authenticator app/);
    const handle = hiddenField(page.html, 'session');
    assert.ok(handle, 'the other session has an end button');
    assert.equal(first.html.includes(handle), false, 'the other session began after this page was first shown');

    const ended = await post(jar, page, '/account/sessions/end', { session: handle });
    assert.equal(ended.chain[0]!.location, '/account#sessions');
    assert.match(said(ended.page!.html, 'sessions').notice ?? '', /That session was ended/);
    assert.equal([...ended.page!.html.matchAll(/<li class="session"/g)].length, 1);
    assert.equal((await browse(other.jar, new URL('/account', server.issuer))).status, 303, 'the other browser is signed out');
    assert.equal((await browse(jar, new URL('/account', server.issuer))).status, 200, 'this one is not');
    const again = await postTo(jar, ended.page!, '/account/sessions/end', { session: handle });
    assert.match(said(again.page!.html, 'sessions').error ?? '', /ended already/);
    assert.deepEqual(audited('session_ended', p.id).map((l) => [l.session, l.source]), [[handle, 'account_page']]);

    // Signing out of this browser ends this session only.
    const third = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    const out = await post(jar, again.page!, '/account/sign-out', {});
    assert.equal(out.page!.url.pathname, '/account/signed-out');
    assert.match(out.page!.html, /You have been signed out/);
    assert.equal((await browse(jar, new URL('/account', server.issuer))).status, 303);
    assert.equal((await browse(third.jar, new URL('/account', server.issuer))).status, 200, 'the third browser stays signed in');
  });

  it('changes the password in sudo mode; refuses a form without its CSRF token; signs out everywhere after asking', async () => {
    const p = await person();
    const { jar, page: first } = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    const second = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    const page = await confirm(jar, first, p);

    const forged = await post(jar, page, '/account/password', { new_password: 'a brand new passphrase' }, 'forged');
    assert.equal(forged.page!.status, 403);

    const changed = await post(jar, page, '/account/password', { new_password: 'a brand new passphrase' });
    assert.match(changed.page!.html, /Your password was changed/);
    assert.ok(await server.app.accounts.authenticate(p.email, 'a brand new passphrase'));
    assert.equal(await server.app.accounts.authenticate(p.email, PASSWORD), undefined);

    // The new password already signed the second browser out; this one stayed.
    assert.equal((await browse(second.jar, new URL('/account', server.issuer))).status, 303);
    const third = await signInToAccount(p.email, 'a brand new passphrase', p.totpSecret);
    // Sign out everywhere is a link to a page that asks; a post without the answer changes nothing.
    assert.equal(formAction(changed.page!.html, '/account/sign-out-everywhere'), undefined, 'not a one-click button');
    const asked = await follow(jar, server.issuer, await browse(jar, new URL('/account/sign-out-everywhere', server.issuer)), new URL('/account/sign-out-everywhere', server.issuer));
    assert.match(asked.page!.html, /This ends all 2 of your sessions/);
    const unanswered = await postTo(jar, asked.page!, '/account/sign-out-everywhere', {});
    assert.equal(unanswered.page!.url.pathname, '/account/sign-out-everywhere');
    assert.equal((await browse(third.jar, new URL('/account', server.issuer))).status, 200, 'nothing ended yet');
    const out = await post(jar, asked.page!, '/account/sign-out-everywhere', { confirm: 'yes' });
    assert.equal(out.chain[0]!.status, 303);
    assert.match(out.page!.html, /signed out on every device/);
    for (const j of [jar, second.jar, third.jar]) {
      const res = await browse(j, new URL('/account', server.issuer));
      assert.equal(res.status, 303, 'signed out: /account sends to the sign-in again');
      assert.match(res.headers.get('location') ?? '', /\/auth\?/);
    }
    assert.deepEqual(audited('password_changed', p.id).map((l) => [l.source, l.sessions]), [['account_page', 1]]);
    assert.deepEqual(audited('sessions_revoked', p.id).map((l) => [l.sessions, l.source]), [[2, 'account_page']]);
  });

  it('a visit without a session leaves nothing that outlives the sign-in', async () => {
    const p = await person();
    const redis = (server.store as RedisStore).client;
    const ttls = async () => {
      const all = new Map<string, number>();
      for (const key of await redis.keys('*')) all.set(key, await redis.ttl(key));
      return all;
    };
    const added = (before: Map<string, number>, after: Map<string, number>) => [...after].filter(([key]) => !before.has(key));
    const HOUR = 3600;
    const SESSION = 14 * 24 * HOUR;

    const before = await ttls();
    const jar = new CookieJar();
    const start = new URL('/account', server.issuer);
    const login = await follow(jar, server.issuer, await browse(jar, start), start);
    // Not signed in yet: only the interaction's records, for its hour.
    for (const [key, ttl] of added(before, await ttls())) assert.ok(ttl > 0 && ttl <= HOUR, `${key} has TTL ${ttl} before the sign-in`);

    const mfa = await post(jar, login.page!, '/login', { email: p.email, password: PASSWORD });
    const done = await post(jar, mfa.page!, '/mfa', { code: await nextTotpCode(server.issuer, p.totpSecret) });
    assert.equal(done.page!.url.pathname, '/account');
    const left = added(before, await ttls());
    assert.ok(left.some(([key]) => key.includes(':Session:')), 'signed in: a session');
    for (const [key, ttl] of left) {
      // The session (and what finds it) lives as long as the sign-in; nothing else of the visit longer than the interaction.
      // The person's session and grant sets outlive what they list by at most a tenth (their TTL is written once a step).
      const longest = /:Session:|^lk:account-sessions:|^lk:session-device:|^lk:totp-step:/.test(key) ? SESSION : HOUR;
      const limit = /^lk:account-(sessions|grants):/.test(key) ? Math.ceil(longest * 1.1) : longest;
      assert.ok(ttl > 0 && ttl <= limit, `${key} has TTL ${ttl} after the sign-in (at most ${limit})`);
    }
  });
});

describe('/account under MFA_POLICY=optional: removing the authenticator app', () => {
  let optional: TestServer;
  useServer({ store: 'redis', env: { MFA_POLICY: 'optional' } }, (setup) => ({ server: optional } = setup));

  /** Runs the page helpers (which use `server`) against this suite's server. */
  async function onOptional(body: () => Promise<void>) {
    const saved = server;
    server = optional;
    try {
      await body();
    } finally {
      server = saved;
    }
  }

  it('with a passkey left, sudo mode is enough; the recovery codes stay and other sessions end', () => onOptional(async () => {
    const p = await person();
    const account = (await server.app.accounts.find(p.id))!;
    const device = new SoftAuthenticator({ origin: server.issuer });
    const registered = await server.app.passkeys.register(p.id, 'test', device.create(await server.app.passkeys.registrationOptions(account, 'test')), 'Spare key');
    assert.ok(registered.ok);
    const { jar, page: first } = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    const other = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    assert.equal(formAction(first.html, '/account/authenticator/remove'), undefined, 'not before the proof');
    const page = await confirm(jar, first, p);
    const removed = await post(jar, page, '/account/authenticator/remove', {});
    assert.equal(removed.chain[0]!.status, 303);
    assert.match(said(removed.page!.html, 'authenticator').notice ?? '', /Your authenticator app was removed/);
    assert.match(removed.page!.html, /Not set up\./);
    const after = (await server.app.accounts.find(p.id))!;
    assert.equal(after.mfa, undefined);
    assert.equal(after.passkeys?.length, 1);
    assert.equal((await server.app.secondFactor.verifySecondFactor(p.id, { recoveryCode: p.recoveryCodes[0]! })).ok, true, 'the recovery codes still work');
    assert.equal((await server.app.secondFactor.verifySecondFactor(p.id, { totp: await nextTotpCode(server.issuer, p.totpSecret) })).ok, false, 'the app does not');
    assert.equal((await browse(other.jar, new URL('/account', server.issuer))).status, 303, 'the other browser is signed out');
    assert.deepEqual(audited('second_factor_removed', p.id).map((l) => [l.reason, l.source, l.sessions]), [['removed', 'account_page', 1]]);
  }));

  it('as the last factor, it asks again even in sudo mode; then the recovery codes go with it', () => onOptional(async () => {
    const p = await person();
    const { jar, page: first } = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    const page = await confirm(jar, first, p);
    assert.match(page.html, /It is your last second factor: confirm it’s you again\./);
    const bare = await post(jar, page, '/account/authenticator/remove', {});
    assert.equal(bare.page!.status, 400);
    assert.equal(said(bare.page!.html, 'authenticator').error, 'Your current password is not right.');
    assert.ok((await server.app.accounts.find(p.id))!.mfa, 'still there');
    const removed = await post(jar, page, '/account/authenticator/remove', { current_password: PASSWORD, code: await nextTotpCode(server.issuer, p.totpSecret) });
    assert.match(said(removed.page!.html, 'authenticator').notice ?? '', /Your authenticator app was removed/);
    const after = (await server.app.accounts.find(p.id))!;
    assert.equal(after.mfa, undefined);
    assert.equal(after.recovery, undefined);
    assert.equal((await server.app.secondFactor.verifySecondFactor(p.id, { recoveryCode: p.recoveryCodes[0]! })).ok, false, 'no factor, no recovery codes');
  }));
});
