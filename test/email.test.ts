import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { browse, CookieJar, endpoints, follow, formAction, hiddenField, signIn, signInAndRedeem, type Followed, type Page } from './helpers/flow.ts';
import { linkIn, recipients, startSmtpCatcher, type SmtpCatcher } from './helpers/smtp.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { nextTotpCode } from './helpers/totp.ts';
import { enrollTotp, useWorld, type World } from './helpers/world.ts';
import { runCli } from './helpers/cli.ts';
import type { TestRedis } from './helpers/redis.ts';

/**
 * Email, end to end over real SMTP on loopback: an in-process SMTP server catches what Latchkey sends
 * through SMTP_URL, mailparser reads the links, and the pages are driven as a browser without
 * JavaScript would. Runs on the store LATCHKEY_TEST_STORE names (redis by default; memory, cluster).
 */
let server: TestServer;
let world: World;
let redis: TestRedis | undefined;
// Started before the server (whose SMTP_URL it is): root-level `before` hooks do not wait for each other.
const smtp: SmtpCatcher = await startSmtpCatcher();
// Links expire on this clock (and mail retries run on it), so expiry is tested without waiting.
let offsetMs = 0;
const clock = () => Date.now() + offsetMs;
after(() => smtp.stop());
useWorld({ env: { SMTP_URL: smtp.url }, server: { clock, mail: { pollMs: 50, retryDelaysMs: [100, 200, 400, 800, 1600, 3200] } } }, (setup) => ({ server, world, redis } = setup));

const PASSWORD = 'correct horse battery staple';

async function person(options: { totp?: boolean } = {}) {
  const email = `p-${Math.random().toString(36).slice(2)}@example.org`;
  const account = await server.app.accounts.create({ email, password: PASSWORD });
  const totp = options.totp === false ? undefined : await enrollTotp(server, account);
  return { id: account.id, email, password: PASSWORD, totpSecret: totp?.totpSecret };
}

async function get(jar: CookieJar, url: string | URL): Promise<Followed> {
  const target = new URL(url, server.issuer);
  return follow(jar, server.issuer, await browse(jar, target), target);
}

async function post(jar: CookieJar, page: Page, suffix: string, fields: Record<string, string>): Promise<Followed> {
  const action = formAction(page.html, suffix);
  assert.ok(action, `a form posting to …${suffix}`);
  const url = new URL(action, page.url);
  const csrf = hiddenField(page.html, '_csrf');
  return follow(jar, server.issuer, await browse(jar, url, { form: { ...(csrf ? { _csrf: csrf } : {}), ...fields } }), url);
}

async function askForReset(email: string, jar = new CookieJar()) {
  const form = await get(jar, '/password/forgot');
  return post(jar, form.page!, '/password/forgot', { email });
}

async function askForResetAt(issuer: string, email: string) {
  const url = new URL('/password/forgot', issuer);
  const res = await fetch(url, { method: 'POST', headers: { origin: issuer, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ email }) });
  assert.equal(res.status, 200);
}

async function resetLink(email: string): Promise<URL> {
  const before = smtp.to(email).length;
  const answered = await askForReset(email);
  assert.equal(answered.page?.status, 200);
  const mail = await eventuallyNth(email, before, /Reset your/);
  return linkIn(mail, '/password/reset');
}

async function eventuallyNth(email: string, seen: number, subject: RegExp) {
  await smtp.waitFor(email, subject);
  for (let i = 0; i < 250 && smtp.to(email).filter((m) => subject.test(m.subject ?? '')).length <= seen; i += 1) await new Promise((r) => setTimeout(r, 20));
  return smtp.to(email).filter((m) => subject.test(m.subject ?? '')).at(-1)!;
}

/** Opens a reset link and sets a password; resolves the final page. */
async function useResetLink(link: URL, password: string, jar = new CookieJar()) {
  const page = await get(jar, link);
  if (page.page?.status !== 200) return page;
  return post(jar, page.page, '/password/reset', { new_password: password, token: hiddenField(page.page.html, 'token')! });
}

const noTokenInLogs = (token: string) => assert.ok(!server.logs.some((l) => JSON.stringify(l).includes(token)), 'the link never reaches a log line');

describe('forgotten password', () => {
  it('the sign-in page offers it; known and unknown addresses get the same page and status, and only a known one gets mail', async () => {
    const signInPage = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid' });
    assert.match(signInPage.page!.html, /<a href="\/password\/forgot">Forgot your password\?<\/a>/);

    const p = await person();
    const known = await askForReset(p.email);
    const unknownAddress = `nobody-${Math.random().toString(36).slice(2)}@example.org`;
    const unknown = await askForReset(unknownAddress);
    assert.equal(known.page!.status, 200);
    assert.equal(unknown.page!.status, known.page!.status);
    assert.equal(unknown.page!.html.replace(unknownAddress, 'X'), known.page!.html.replace(p.email, 'X'), 'the same words');
    assert.match(known.page!.html, /Check your email/);

    const mail = await smtp.waitFor(p.email, /Reset your Latchkey password/);
    assert.match(mail.html as string, /Latchkey/);
    assert.match(mail.text ?? '', /works once, for 30 minutes/);
    // The unknown address's no-op went through the queue and was dropped there.
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(smtp.to(unknownAddress), []);
    assert.equal(await server.app.mailQueue.pending(), 0, 'nothing left waiting');
    const requested = server.logs.filter((l) => l.event === 'password_reset_requested');
    assert.deepEqual(requested.map((l) => l.accountId), [p.id], 'audited for the account only');
    noTokenInLogs(linkIn(mail, '/password/reset').searchParams.get('token')!);
  });

  it('the forgotten-password page and the new-password page follow the browser’s language', async () => {
    const p = await person();
    const headers = { 'accept-language': 'de-DE,de;q=0.9' };
    const page = await browse(new CookieJar(), new URL('/password/forgot', server.issuer), { headers });
    const html = await page.text();
    assert.match(html, /<html lang="de">/);
    assert.match(html, /<h1>Passwort vergessen\?<\/h1>/);
    assert.match(html, /<button type="submit">Link senden<\/button>/);
    assert.match(html, /Der Link gilt einmal, \d+ Minuten lang\./);
    const reset = await browse(new CookieJar(), await resetLink(p.email), { headers });
    const resetHtml = await reset.text();
    assert.match(resetHtml, /<h1>Neues Passwort wählen<\/h1>/);
    assert.match(resetHtml, /<label for="new_password">Neues Passwort<\/label>/);
  });

  it('a link sets a new password once; reused, it is refused; a weak password does not use it up', async () => {
    const p = await person();
    const link = await resetLink(p.email);
    const jar = new CookieJar();
    const page = (await get(jar, link)).page!;
    assert.match(page.html, /autocomplete="new-password"/);
    const weak = await post(jar, page, '/password/reset', { new_password: 'password', token: hiddenField(page.html, 'token')! });
    assert.equal(weak.page!.status, 400);
    assert.match(weak.page!.html, /not accepted/);

    const done = await useResetLink(link, 'a brand new passphrase here');
    assert.equal(done.page!.status, 200);
    assert.match(done.page!.html, /Password changed/);
    assert.ok(await server.app.accounts.authenticate(p.email, 'a brand new passphrase here'));
    assert.equal(await server.app.accounts.authenticate(p.email, PASSWORD), undefined);

    const again = await useResetLink(link, 'yet another passphrase now');
    assert.equal(again.page!.status, 400);
    assert.match(again.page!.html, /expired or was already used/);
    assert.equal(server.logs.filter((l) => l.event === 'password_reset' && l.accountId === p.id).length, 1);
    // The person hears of it.
    await smtp.waitFor(p.email, /Security notice/);
    noTokenInLogs(link.searchParams.get('token')!);
  });

  it('20 concurrent uses of one link: exactly one sets the password', async () => {
    const p = await person();
    const link = await resetLink(p.email);
    const pages = await Promise.all(Array.from({ length: 20 }, async () => {
      const jar = new CookieJar();
      return { jar, page: (await get(jar, link)).page! };
    }));
    const answers = await Promise.all(pages.map(({ jar, page }, i) => post(jar, page, '/password/reset', { new_password: `racing passphrase number ${i}`, token: hiddenField(page.html, 'token')! })));
    const won = answers.map((a, i) => [a.page!.status, i] as const).filter(([status]) => status === 200);
    assert.equal(won.length, 1, 'exactly one success');
    assert.ok(answers.every((a) => a.page!.status === 200 || a.page!.status === 400));
    assert.ok(await server.app.accounts.authenticate(p.email, `racing passphrase number ${won[0]![1]}`));
  });

  it('an expired link is refused', async () => {
    const p = await person();
    const link = await resetLink(p.email);
    offsetMs += 31 * 60 * 1000;
    try {
      const page = await get(new CookieJar(), link);
      assert.equal(page.page!.status, 400);
      assert.match(page.page!.html, /expired/);
    } finally {
      offsetMs -= 31 * 60 * 1000;
    }
    // (The store's TTL goes too, at the real time; the clock decides first.)
  });

  it('a reset ends every session and grant, and the second factor is still asked', async () => {
    const p = await person();
    const scope = 'openid offline_access api:read';
    const other = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: p, scope, params: { prompt: 'consent', resource: world.api.uri } });
    assert.ok(other.tokens.refresh_token);

    const done = await useResetLink(await resetLink(p.email), 'the reset passphrase works');
    assert.equal(done.page!.status, 200);

    const call = endpoints(server.issuer);
    const silent = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid', jar: other.flow.jar, params: { prompt: 'none' } });
    assert.equal(silent.callback?.searchParams.get('error'), 'login_required');
    assert.equal((await call.refresh(world.shop, other.tokens.refresh_token)).body.error, 'invalid_grant');
    assert.deepEqual((await call.introspect(world.api, other.tokens.access_token)).body, { active: false });

    // The new password alone is not enough: the authenticator app is asked for.
    const again = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid', user: { email: p.email, password: 'the reset passphrase works' }, secondFactor: 'stop' });
    assert.ok(again.mfaPage, 'the second-factor page');
    assert.equal(again.code, undefined);
    const through = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid', user: { email: p.email, password: 'the reset passphrase works', totpSecret: p.totpSecret! } });
    assert.ok(through.code, 'with the code, signed in');
  });

  it('with the mail server down the request answers at once, and the mail goes out when it is back', async () => {
    const p = await person();
    await smtp.stop();
    try {
      const started = performance.now();
      const answered = await askForReset(p.email);
      assert.equal(answered.page!.status, 200);
      assert.ok(performance.now() - started < 1500, 'no wait on the mail server');
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(smtp.to(p.email), []);
      assert.equal(await server.app.mailQueue.pending(), 1, 'kept in the queue');
    } finally {
      await smtp.start();
    }
    await smtp.waitFor(p.email, /Reset your/);
    assert.ok(server.logs.some((l) => l.msg === 'mail not sent: will retry'));
    const metrics = await server.app.metrics.registry.metrics();
    assert.match(metrics, /^latchkey_mail_total\{outcome="retried"\} [1-9]/m);
    assert.match(metrics, /^latchkey_mail_total\{outcome="sent"\} [1-9]/m);
  });

  it('bad input: no address, a cross-site post, a missing, malformed or forged link', async () => {
    const jar = new CookieJar();
    const form = await get(jar, '/password/forgot');
    const empty = await post(jar, form.page!, '/password/forgot', { email: '' });
    assert.equal(empty.page!.status, 400);
    const crossSite = await fetch(new URL('/password/forgot', server.issuer), { method: 'POST', headers: { origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' }, body: 'email=a%40b.c', redirect: 'manual' });
    assert.equal(crossSite.status, 403);
    const noToken = await fetch(new URL('/password/reset', server.issuer), { redirect: 'manual' });
    assert.equal(noToken.status, 400);
    const garbage = await fetch(new URL('/password/reset?token[]=x', server.issuer), { redirect: 'manual' });
    assert.equal(garbage.status, 400);
    const forged = await fetch(new URL('/password/reset', server.issuer), { method: 'POST', headers: { origin: server.issuer, 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${'a'.repeat(43)}&new_password=whatever%20long%20enough&_csrf=x`, redirect: 'manual' });
    assert.equal(forged.status, 400);
  });
});

/** Opens /account with a fresh jar and signs in. */
async function signInToAccount(p: { email: string; password: string; totpSecret?: string }) {
  const jar = new CookieJar();
  let followed = await get(jar, '/account');
  followed = await post(jar, followed.page!, '/login', { email: p.email, password: p.password });
  if (p.totpSecret) followed = await post(jar, followed.page!, '/mfa', { code: await nextTotpCode(server.issuer, p.totpSecret) });
  assert.equal(followed.page!.url.pathname, '/account');
  return { jar, page: followed.page! };
}

async function userinfoEmailVerified(p: { email: string; password: string; totpSecret?: string }) {
  const signed = await signInAndRedeem({ issuer: server.issuer, client: world.firstParty, user: p, scope: 'openid email' });
  const idToken = JSON.parse(Buffer.from(signed.tokens.id_token!.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
  const info = await fetch(new URL('/me', server.issuer), { headers: { authorization: `Bearer ${signed.tokens.access_token}` } }).then((r) => r.json() as Promise<Record<string, unknown>>);
  assert.equal(info.email_verified, idToken.email_verified, 'userinfo and the ID token agree');
  return idToken.email_verified;
}

describe('verified addresses', () => {
  it('a new account is unverified until the link from /account is followed; then email_verified is true', async () => {
    const p = await person();
    assert.equal(await userinfoEmailVerified(p), false);
    const { jar, page } = await signInToAccount(p);
    assert.match(page.html, /not confirmed/);
    const sent = await post(jar, page, '/account/email/verify', {});
    assert.match(sent.page!.html, /A link is on its way/);
    const link = linkIn(await smtp.waitFor(p.email, /Confirm your email address/), '/email/verify');
    const other = new CookieJar();
    const confirm = await get(other, link);
    assert.equal(confirm.page!.status, 200);
    assert.equal(await userinfoEmailVerified(p), false, 'opening the link changes nothing');
    const done = await post(other, confirm.page!, '/email/verify', { token: hiddenField(confirm.page!.html, 'token')! });
    assert.match(done.page!.html, /is confirmed/);
    assert.equal(await userinfoEmailVerified(p), true);
    assert.equal((await post(other, confirm.page!, '/email/verify', { token: hiddenField(confirm.page!.html, 'token')! })).page!.status, 400, 'used once');
    assert.equal(server.logs.filter((l) => l.event === 'email_verified' && l.accountId === p.id).length, 1);
    noTokenInLogs(link.searchParams.get('token')!);
  });

  it('an account written before verification existed keeps email_verified true', async () => {
    const p = await person();
    await server.app.accounts.update(p.id, (a) => {
      delete a.emailVerified;
    });
    assert.equal(await userinfoEmailVerified(p), true);
  });
});

describe('changing the address', () => {
  it('takes effect only when the new address confirms; the old one is told and can cancel it', async () => {
    const p = await person();
    const next = `new-${Math.random().toString(36).slice(2)}@example.org`;
    const { jar, page: first } = await signInToAccount(p);
    // Sudo mode does not cover the address: it asks again.
    const page = (await post(jar, first, '/account/sudo', { current_password: PASSWORD, code: await nextTotpCode(server.issuer, p.totpSecret!) })).page!;
    assert.ok(formAction(page.html, '/account/password'), 'in sudo mode');
    const noProof = await post(jar, page, '/account/email', { new_email: next, current_password: 'wrong', code: '000000' });
    assert.match(noProof.page!.html, /data-for="email">Your current password is not right/);
    assert.equal((await post(jar, page, '/account/email', { new_email: next })).page!.html.match(/data-for="email">([^<]*)/)?.[1], 'Your current password is not right.', 'no proof, no link');
    const asked = await post(jar, page, '/account/email', { new_email: next, current_password: PASSWORD, code: await nextTotpCode(server.issuer, p.totpSecret!) });
    assert.match(asked.page!.html, /A link is on its way to/);
    assert.equal((await server.app.accounts.find(p.id))!.email, p.email, 'nothing changed yet');

    const confirmMail = await smtp.waitFor(next, /Confirm your new email address/);
    const notice = await smtp.waitFor(p.email, /is being changed/);
    assert.match(notice.text ?? '', new RegExp(next.replace('.', '\\.')));
    linkIn(notice, '/email/report');

    const other = new CookieJar();
    const confirm = await get(other, linkIn(confirmMail, '/email/change'));
    const done = await post(other, confirm.page!, '/email/change', { token: hiddenField(confirm.page!.html, 'token')! });
    assert.equal(done.page!.status, 200);
    const account = (await server.app.accounts.find(p.id))!;
    assert.equal(account.email, next);
    assert.equal(account.emailVerified, true);
    assert.equal(await server.app.accounts.findByEmail(p.email), undefined, 'the old address is free');
    assert.ok(await server.app.accounts.authenticate(next, PASSWORD));
    await smtp.waitFor(p.email, /Security notice/);
    assert.equal(server.logs.filter((l) => l.event === 'email_changed' && l.accountId === p.id).length, 1);
  });

  it('"this was not me" from the old address cancels the change and signs out everywhere', async () => {
    const p = await person();
    const next = `new-${Math.random().toString(36).slice(2)}@example.org`;
    const { jar, page } = await signInToAccount(p);
    await post(jar, page, '/account/email', { new_email: next, current_password: PASSWORD, code: await nextTotpCode(server.issuer, p.totpSecret!) });
    const confirmMail = await smtp.waitFor(next, /Confirm your new email address/);
    const notice = await smtp.waitFor(p.email, /is being changed/);

    const victim = new CookieJar();
    const report = await get(victim, linkIn(notice, '/email/report'));
    const reported = await post(victim, report.page!, '/email/report', { token: hiddenField(report.page!.html, 'token')! });
    assert.match(reported.page!.html, /cancelled/);
    assert.equal(server.logs.filter((l) => l.event === 'email_change_reported' && l.accountId === p.id).length, 1);

    const attacker = new CookieJar();
    const confirm = await get(attacker, linkIn(confirmMail, '/email/change'));
    assert.equal(confirm.page!.status, 400, 'the change link is dead');
    assert.equal((await server.app.accounts.find(p.id))!.email, p.email);
    const stillIn = await get(jar, '/account');
    assert.notEqual(stillIn.page?.url.pathname, '/account', 'the session that asked is signed out');
  });
});

describe('security notices', () => {
  it('a password change on /account mails the person', async () => {
    const p = await person();
    const { jar, page } = await signInToAccount(p);
    const confirmed = await post(jar, page, '/account/sudo', { current_password: PASSWORD, code: await nextTotpCode(server.issuer, p.totpSecret!) });
    await post(jar, confirmed.page!, '/account/password', { new_password: 'another fine passphrase' });
    const mail = await smtp.waitFor(p.email, /Security notice/);
    assert.match(mail.text ?? '', /password of your Latchkey account was changed/);
    assert.match(mail.text ?? '', /\/password\/forgot/);
    assert.deepEqual(recipients(mail), [p.email]);
  });

  it('a person who signed in on German pages gets the notice in German', async () => {
    const p = await person();
    const jar = new CookieJar();
    // The language switch, then the sign-in to /account: its pages, and so the account, are German.
    let followed = await get(jar, '/language?to=de&back=%2Faccount');
    assert.match(followed.page!.html, /<html lang="de">/);
    followed = await post(jar, followed.page!, '/login', { email: p.email, password: p.password });
    followed = await post(jar, followed.page!, '/mfa', { code: await nextTotpCode(server.issuer, p.totpSecret!) });
    assert.equal(followed.page!.url.pathname, '/account');
    assert.equal((await server.app.accounts.find(p.id))!.locale, 'de');
    const confirmed = await post(jar, followed.page!, '/account/sudo', { current_password: PASSWORD, code: await nextTotpCode(server.issuer, p.totpSecret!) });
    await post(jar, confirmed.page!, '/account/password', { new_password: 'ein anderer guter Passsatz' });
    const mail = await smtp.waitFor(p.email, /Sicherheitshinweis/);
    assert.equal(mail.subject, 'Sicherheitshinweis: Ihr Passwort wurde geändert');
    assert.match(mail.text ?? '', /Das Passwort Ihres Latchkey-Kontos wurde geändert\./);
    assert.match(mail.text ?? '', /Wann: \d{1,2}\. \p{L}+ \d{4} um \d\d:\d\d UTC\./u);
    assert.match(mail.html as string, /<html lang="de">[\s\S]*Oder öffnen Sie diese Adresse: http/);
  });

  it('setting up the first factor at sign-in mails the person', async () => {
    const p = await person({ totp: false });
    const signed = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid', user: p });
    assert.ok(signed.enrollPage, 'enrolled on the way');
    const mail = await smtp.waitFor(p.email, /Security notice/);
    assert.match(mail.text ?? '', /authenticator app was set up/);
  });

  it('new recovery codes mail the person', async () => {
    const p = await person();
    const { jar, page } = await signInToAccount(p);
    const confirmed = await post(jar, page, '/account/sudo', { current_password: PASSWORD, code: await nextTotpCode(server.issuer, p.totpSecret!) });
    await post(jar, confirmed.page!, '/account/recovery-codes', {});
    const mail = await smtp.waitFor(p.email, /Security notice/);
    assert.match(mail.text ?? '', /New recovery codes/);
  });
});

describe('link mails in the person’s language', () => {
  const germanJar = async (back: string) => {
    const jar = new CookieJar();
    // The switch's cookie: the pages that follow, and the mail asked for on them, are German.
    const page = await get(jar, `/language?to=de&back=${encodeURIComponent(back)}`);
    assert.match(page.page!.html, /<html lang="de">/);
    return { jar, page: page.page! };
  };

  it('a reset asked on a German page is mailed in German, and the link’s pages and answers are German', async () => {
    const p = await person();
    const { jar, page } = await germanJar('/password/forgot');
    const asked = await post(jar, page, '/password/forgot', { email: p.email });
    assert.match(asked.page!.html, /<h1>Sehen Sie in Ihr E-Mail-Postfach<\/h1>/);
    assert.ok(asked.page!.html.includes(`Falls ${p.email} zu einem Konto gehört, ist ein Link zum Festlegen eines neuen Passworts unterwegs. Er funktioniert einmal, 30 Minuten lang.`));
    const mail = await smtp.waitFor(p.email, /Passwort zurücksetzen/);
    assert.equal(mail.subject, 'Ihr Latchkey-Passwort zurücksetzen');
    assert.match(mail.text ?? '', /Der Link gilt einmal, 30 Minuten lang\./);
    assert.match(mail.html as string, /<html lang="de">/);
    const link = linkIn(mail, '/password/reset');
    const weak = await useResetLink(link, 'short', jar);
    assert.match(weak.page!.html, /<p class="error" role="alert">Das neue Passwort wird nicht akzeptiert: das Passwort braucht mindestens 8 Zeichen\.<\/p>/);
    const done = await useResetLink(link, 'ein neuer guter Passsatz', jar);
    assert.match(done.page!.html, /<h1>Passwort geändert<\/h1>/);
    assert.match(done.page!.html, /<title>Passwort geändert · Latchkey<\/title>/);
    const gone = await get(jar, link);
    assert.equal(gone.page!.status, 400);
    assert.match(gone.page!.html, /<h1>Link abgelaufen<\/h1>[\s\S]*Dieser Link ist abgelaufen oder wurde schon verwendet\./);
    // Asked on an English page, the same person's next reset is English (the page decides, not the account).
    await askForReset(p.email);
    await smtp.waitFor(p.email, /Reset your Latchkey password/);
  });

  it('address links follow the account’s stored language, whatever the page that asked', async () => {
    const p = await person();
    const { jar, page } = await signInToAccount(p);
    await server.app.accounts.rememberLocale(p.id, 'de');
    await post(jar, page, '/account/email/verify', {});
    const verify = await smtp.waitFor(p.email, /E-Mail-Adresse/);
    assert.equal(verify.subject, 'Bestätigen Sie Ihre E-Mail-Adresse');
    assert.match(verify.text ?? '', new RegExp(`Bestätigen Sie, dass ${p.email.replace('.', '\\.')} Ihre Adresse ist`));
    const next = `neu-${Math.random().toString(36).slice(2)}@example.org`;
    await post(jar, page, '/account/email', { new_email: next, current_password: PASSWORD, code: await nextTotpCode(server.issuer, p.totpSecret!) });
    assert.equal((await smtp.waitFor(next, /neue E-Mail-Adresse/)).subject, 'Bestätigen Sie Ihre neue E-Mail-Adresse');
    assert.equal((await smtp.waitFor(p.email, /wird geändert/)).subject, 'Ihre Latchkey-Adresse wird geändert');
  });

  it('the language switch, signed in, becomes the account’s language: the notices that follow speak it', async () => {
    const p = await person();
    const { jar, page } = await signInToAccount(p);
    assert.equal((await server.app.accounts.find(p.id))!.locale ?? 'en', 'en');
    const switched = await get(jar, '/language?to=de&back=%2Faccount');
    assert.match(switched.page!.html, /<html lang="de">/);
    assert.equal((await server.app.accounts.find(p.id))!.locale, 'de');
    const confirmed = await post(jar, page, '/account/sudo', { current_password: PASSWORD, code: await nextTotpCode(server.issuer, p.totpSecret!) });
    await post(jar, confirmed.page!, '/account/password', { new_password: 'noch ein guter Passsatz' });
    assert.equal((await smtp.waitFor(p.email, /Sicherheitshinweis/)).subject, 'Sicherheitshinweis: Ihr Passwort wurde geändert');
    await get(jar, '/language?to=en&back=%2Faccount');
    assert.equal((await server.app.accounts.find(p.id))!.locale, 'en', 'and back');
    // Signed out, the switch only sets the cookie.
    const anonymous = await fetch(new URL('/language?to=de&back=%2F', server.issuer), { redirect: 'manual' });
    assert.equal(anonymous.status, 303);
  });

  it('an invitation is mailed in the inviting admin’s language, and a re-sent link keeps it', async () => {
    const email = `eingeladen-${Math.random().toString(36).slice(2)}@example.org`;
    await server.app.ops.inviteUser({ kind: 'cli' }, { email, name: 'Anna' }, 'de');
    const mail = await smtp.waitFor(email, /eingeladen/);
    assert.equal(mail.subject, 'Sie sind zu Latchkey eingeladen');
    assert.match(mail.text ?? '', /Anna/);
    await server.app.ops.resendInvitation({ kind: 'cli' }, email);
    await eventuallyNth(email, 1, /eingeladen/);
    const english = `invited-${Math.random().toString(36).slice(2)}@example.org`;
    await server.app.ops.inviteUser({ kind: 'cli' }, { email: english });
    await smtp.waitFor(english, /You are invited to Latchkey/);
  });
});

describe('the queue', () => {
  it('lives in storage: what one server could not send, another sends', async () => {
    if (!redis) return; // Two servers share Redis only.
    // A second node whose mail server is unreachable: whichever node takes the message, it goes out through ours.
    const other = await startServer({ redisUrl: redis.url, env: { SMTP_URL: 'smtp://127.0.0.1:9' }, mail: { pollMs: 50, retryDelaysMs: Array.from({ length: 30 }, () => 100) } });
    try {
      await other.app.accounts.create({ email: 'two-nodes@example.org', password: PASSWORD });
      await askForResetAt(other.issuer, 'two-nodes@example.org');
      const mail = await smtp.waitFor('two-nodes@example.org', /Reset your/);
      // The link works on either server: links live in storage too.
      const done = await useResetLink(linkIn(mail, '/password/reset'), 'a passphrase set on node one');
      assert.equal(done.page!.status, 200);
      assert.equal(smtp.to('two-nodes@example.org').filter((m) => /Reset your/.test(m.subject ?? '')).length, 1, 'sent once');
    } finally {
      await other.close();
    }
  });
});

describe('latchkey mail test', () => {
  it('sends through SMTP_URL and says what the server answered', async () => {
    const r = await runCli(['mail', 'test', '--to', 'ops@example.org', '--json'], { env: { SMTP_URL: smtp.url, MAIL_FROM: 'Latchkey <id@example.org>' } });
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, string>;
    assert.equal(out.server, smtp.url);
    assert.match(out.response!, /^250 /);
    const mail = await smtp.waitFor('ops@example.org', /test message/);
    assert.equal(mail.from?.value[0]?.address, 'id@example.org');
  });

  it('a mail server that does not answer is a clear failure; no SMTP_URL is refused', async () => {
    const down = await runCli(['mail', 'test', '--to', 'ops@example.org'], { env: { SMTP_URL: 'smtp://127.0.0.1:9' } });
    assert.equal(down.code, 1);
    assert.match(down.stderr, /^latchkey: not sent through smtp:\/\/127\.0\.0\.1:9: /);
    const none = await runCli(['mail', 'test', '--to', 'ops@example.org'], { without: ['SMTP_URL'] });
    assert.equal(none.code, 2);
    assert.match(none.stderr, /SMTP_URL is not set/);
    const bad = await runCli(['mail', 'test', '--to', 'nobody'], { env: { SMTP_URL: smtp.url } });
    assert.equal(bad.code, 2);
  });

  it('user show tells whether the address is confirmed', async () => {
    if (!redis) return; // The CLI reaches Redis only (LATCHKEY_TEST_STORE=redis, the default).
    const p = await person();
    const r = await runCli(['user', 'show', p.id, '--json'], { env: { REDIS_URL: redis.url } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as Record<string, unknown>).email_verified, false);
  });
});
