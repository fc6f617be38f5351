import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RedisStore } from '../src/storage/redis-store.ts';
import { totpCodeAt } from '../src/accounts/totp.ts';
import { browse, CookieJar, follow, formAction, hiddenField, recoveryCodesOf, totpKeyOf, type Followed, type Page } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { nextTotpCode, totpClock, wrongTotpCode } from './helpers/totp.ts';
import { enrollTotp, useServer } from './helpers/world.ts';

/**
 * /account, as a browser without JavaScript uses it: signing in through the ordinary flow, then each
 * change behind the current password and a current code.
 */
let server: TestServer;
useServer((setup) => ({ server } = setup));

const PASSWORD = 'correct horse battery staple';

function errorOf(html: string): string | undefined {
  return html.match(/<p class="error"[^>]*>([^<]*)<\/p>/)?.[1];
}

async function post(jar: CookieJar, page: Page, suffix: string, fields: Record<string, string>, csrf = hiddenField(page.html, '_csrf')!): Promise<Followed> {
  const action = formAction(page.html, suffix);
  assert.ok(action, `a form posting to …${suffix}`);
  const url = new URL(action, page.url);
  return follow(jar, server.issuer, await browse(jar, url, { form: { _csrf: csrf, ...fields } }), url);
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
  it('shows the second factor and the recovery codes left; regenerating needs the password and a current code', async () => {
    const p = await person();
    const { jar, page } = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    assert.match(page.html, /On, with an authenticator app/);
    assert.match(page.html, /10 of 10 unused/);
    assert.match(page.html, /autocomplete="current-password"/);

    const wrong = await post(jar, page, '/account/recovery-codes', { current_password: PASSWORD, code: await wrongTotpCode(server.issuer, p.totpSecret) });
    assert.match(errorOf(wrong.page!.html) ?? '', /code is not right/);
    const noPassword = await post(jar, page, '/account/recovery-codes', { current_password: 'not it', code: await nextTotpCode(server.issuer, p.totpSecret) });
    assert.equal(errorOf(noPassword.page!.html), 'Your current password is not right.');

    const done = await post(jar, page, '/account/recovery-codes', { current_password: PASSWORD, code: await nextTotpCode(server.issuer, p.totpSecret) });
    const fresh = recoveryCodesOf(done.page!.html);
    assert.equal(fresh.length, 10);
    const factor = server.app.secondFactor;
    assert.equal((await factor.verifySecondFactor(p.id, { recoveryCode: p.recoveryCodes[0]! })).ok, false, 'the old set stopped working');
    assert.equal((await factor.verifySecondFactor(p.id, { recoveryCode: fresh[0]! })).ok, true, 'the new set works');
    const back = await post(jar, done.page!, '/account/saved', {});
    assert.match(back.page!.html, /9 of 10 unused/);
    assert.deepEqual(audited('recovery_codes_regenerated', p.id).map((l) => [l.count, l.source]), [[10, 'account_page']], 'audited once');
    assert.ok(!server.logs.some((l) => fresh.some((code) => JSON.stringify(l).includes(code))), 'no recovery code in a log line');
  });

  it('replaces the authenticator only after proof and a code from the new app', async () => {
    const p = await person();
    const { jar, page } = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    const enroll = await post(jar, page, '/account/authenticator', { current_password: PASSWORD, code: await nextTotpCode(server.issuer, p.totpSecret) });
    const key = totpKeyOf(enroll.page!.html);
    assert.ok(key, 'the new key is shown');
    assert.match(enroll.page!.html, /data:image\/svg\+xml;base64,/);
    const refused = await post(jar, enroll.page!, '/account/authenticator/confirm', { code: await wrongTotpCode(server.issuer, key), pending: hiddenField(enroll.page!.html, 'pending')! });
    assert.ok(errorOf(refused.page!.html), 'a wrong code is refused');
    const accepted = await post(jar, refused.page!, '/account/authenticator/confirm', { code: await totpCodeAt(key, totpClock.now()), pending: hiddenField(refused.page!.html, 'pending')! });
    assert.equal(recoveryCodesOf(accepted.page!.html).length, 10);
    const factor = server.app.secondFactor;
    assert.equal((await factor.verifySecondFactor(p.id, { totp: await nextTotpCode(server.issuer, p.totpSecret) })).ok, false, 'the old app no longer works');
    assert.equal((await factor.verifySecondFactor(p.id, { totp: await nextTotpCode(server.issuer, key) })).ok, true, 'the new one does');
    assert.deepEqual(audited('second_factor_removed', p.id).map((l) => [l.reason, l.source]), [['replaced', 'account_page']]);
    assert.deepEqual(audited('second_factor_enrolled', p.id).map((l) => l.replaced), [true]);
  });

  it('refuses a common password and one holding the email’s name, saying why', async () => {
    const p = await person();
    const { jar, page } = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    const name = p.email.slice(0, p.email.indexOf('@'));
    for (const [weak, why] of [
      ['password', /among the most common ones; choose another/],
      ['12345678', /among the most common ones; choose another/],
      [`My ${name.toUpperCase()} 2026!`, /contains the name of the email address/],
    ] as const) {
      const refused = await post(jar, page, '/account/password', { current_password: PASSWORD, code: await nextTotpCode(server.issuer, p.totpSecret), new_password: weak });
      assert.match(errorOf(refused.page!.html) ?? '', why, weak);
      assert.match(errorOf(refused.page!.html) ?? '', /^The new password is not accepted: /);
      assert.equal(await server.app.accounts.authenticate(p.email, weak), undefined, `${weak} was not set`);
    }
    assert.ok(await server.app.accounts.authenticate(p.email, PASSWORD), 'the password is unchanged');
  });

  it('changes the password after proof; refuses a form without its CSRF token; signs out everywhere', async () => {
    const p = await person();
    const { jar, page } = await signInToAccount(p.email, PASSWORD, p.totpSecret);
    const second = await signInToAccount(p.email, PASSWORD, p.totpSecret);

    const forged = await post(jar, page, '/account/password', { current_password: PASSWORD, code: '000000', new_password: 'a brand new passphrase' }, 'forged');
    assert.equal(forged.page!.status, 403);

    const changed = await post(jar, page, '/account/password', { current_password: PASSWORD, code: await nextTotpCode(server.issuer, p.totpSecret), new_password: 'a brand new passphrase' });
    assert.match(changed.page!.html, /Your password was changed/);
    assert.ok(await server.app.accounts.authenticate(p.email, 'a brand new passphrase'));
    assert.equal(await server.app.accounts.authenticate(p.email, PASSWORD), undefined);

    // The new password already signed the second browser out; this one stayed.
    assert.equal((await browse(second.jar, new URL('/account', server.issuer))).status, 303);
    const out = await post(jar, changed.page!, '/account/sign-out-everywhere', {});
    assert.match(out.page!.html, /signed out on every device/);
    for (const j of [jar, second.jar]) {
      const res = await browse(j, new URL('/account', server.issuer));
      assert.equal(res.status, 303, 'signed out: /account sends to the sign-in again');
      assert.match(res.headers.get('location') ?? '', /\/auth\?/);
    }
    assert.deepEqual(audited('password_changed', p.id).map((l) => [l.source, l.sessions]), [['account_page', 1]]);
    assert.deepEqual(audited('sessions_revoked', p.id).map((l) => [l.sessions, l.source]), [[1, 'account_page']]);
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
      const limit = /:Session:|^lk:account-sessions:|^lk:session-device:|^lk:totp-step:/.test(key) ? SESSION : HOUR;
      assert.ok(ttl > 0 && ttl <= limit, `${key} has TTL ${ttl} after the sign-in (at most ${limit})`);
    }
  });
});
