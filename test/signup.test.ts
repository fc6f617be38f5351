import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { isEmailVerified } from '../src/accounts/accounts.ts';
import { loadConfig } from '../src/config.ts';
import { browse, CookieJar, follow, formAction, hiddenField, signIn, signInAndRedeem, type Followed, type Page } from './helpers/flow.ts';
import { linkIn, startSmtpCatcher, type SmtpCatcher } from './helpers/smtp.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { SoftAuthenticator } from './helpers/soft-authenticator.ts';
import { useWorld, REDIRECT_URI, type World } from './helpers/world.ts';
import type { TestRedis } from './helpers/redis.ts';

/**
 * Sign-up (issue 19 flow 6), over Redis and real SMTP on loopback: /signup mails a link, and only the
 * page that link opens makes the account (password or passkey), its address verified. An address that
 * has an account gets the same page and its owner a mail; links are single use and expire; the domains
 * mode refuses other addresses on the form; link requests are budgeted per IP and per address; with
 * SIGNUP off (the default) there is no page and no link to it.
 */
let server: TestServer;
let world: World;
let redis: TestRedis;
const smtp: SmtpCatcher = await startSmtpCatcher();
// Links expire on this clock, so expiry is tested without waiting.
let offsetMs = 0;
const clock = () => Date.now() + offsetMs;
after(() => smtp.stop());
useWorld({ store: 'redis', env: { SMTP_URL: smtp.url, SIGNUP: 'open' }, server: { clock, mail: { pollMs: 50 } } }, (setup) => ({ server, world, redis } = setup));

const PASSWORD = 'seven lanterns over the harbour';
const address = (domain = 'example.org') => `new-${Math.random().toString(36).slice(2)}@${domain}`;

async function get(jar: CookieJar, url: string | URL, issuer = server.issuer): Promise<Followed> {
  const target = new URL(url, issuer);
  return follow(jar, issuer, await browse(jar, target), target);
}

async function post(jar: CookieJar, page: Page, suffix: string, fields: Record<string, string>, issuer = server.issuer): Promise<Followed> {
  const action = formAction(page.html, suffix);
  assert.ok(action, `a form posting to …${suffix}`);
  const url = new URL(action, page.url);
  const csrf = hiddenField(page.html, '_csrf');
  return follow(jar, issuer, await browse(jar, url, { form: { ...(csrf ? { _csrf: csrf } : {}), ...fields } }), url);
}

/** Fills /signup as a browser would; resolves the answer page. */
async function askToSignUp(email: string, name = '', issuer = server.issuer): Promise<Page> {
  const jar = new CookieJar();
  const form = await get(jar, '/signup', issuer);
  assert.equal(form.page?.status, 200);
  return (await post(jar, form.page, '/signup', { email, name }, issuer)).page!;
}

async function signUpLink(email: string): Promise<URL> {
  return linkIn(await smtp.waitFor(email, /Finish creating/), '/signup/finish');
}

/** Opens a sign-up link and posts the password form (or `fields`); resolves the final page. */
async function finish(link: URL, fields: Record<string, string> = { new_password: PASSWORD }): Promise<Page> {
  const jar = new CookieJar();
  const page = (await get(jar, link)).page!;
  if (page.status !== 200) return page;
  return (await post(jar, page, '/signup/finish', { token: hiddenField(page.html, 'token')!, ...fields })).page!;
}

function unescapeHtml(text: string): string {
  return text.replaceAll('&quot;', '"').replaceAll('&#39;', "'").replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&');
}

const noTokenInLogs = (token: string) => assert.ok(!server.logs.some((l) => JSON.stringify(l).includes(token)), 'the link never reaches a log line');

describe('sign-up (SIGNUP=open)', () => {
  it('asked on a German page, the mail and the link’s page are German (an existing address’s mail too)', async () => {
    const jar = new CookieJar();
    const form = await get(jar, '/language?to=de&back=%2Fsignup');
    assert.match(form.page!.html, /<html lang="de">/);
    const email = address();
    const answer = (await post(jar, form.page!, '/signup', { email, name: '' })).page!;
    assert.match(answer.html, /<h1>Sehen Sie in Ihr E-Mail-Postfach<\/h1>/);
    assert.match(answer.html, /er funktioniert einmal, \d+ Stunden? lang\./);
    const mail = await smtp.waitFor(email, /Kontos ab/);
    assert.equal(mail.subject, 'Schließen Sie die Erstellung Ihres Latchkey-Kontos ab');
    const page = (await get(jar, linkIn(mail, '/signup/finish'))).page!;
    assert.match(page.html, /<h1>Ihr Konto erstellen<\/h1>/);
    assert.match(page.html, /<label for="new_password">Passwort festlegen<\/label>/);
    assert.match(page.html, /<button type="submit">Mein Konto erstellen<\/button>/);
    const existing = world.user.email;
    await post(jar, form.page!, '/signup', { email: existing, name: '' });
    assert.equal((await smtp.waitFor(existing, /Konto erstellen/)).subject, 'Jemand wollte mit Ihrer Adresse ein Latchkey-Konto erstellen');
  });

  it('the sign-in page offers it; a new address gets a link; the account exists only once the link is used, verified, and signs in', async () => {
    const login = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid' });
    assert.match(login.page!.html, /<a href="\/signup">Create an account<\/a>/);

    const email = address();
    const answer = await askToSignUp(email, 'Grace Hopper');
    assert.equal(answer.status, 200);
    assert.match(answer.html, /Check your email/);
    const link = await signUpLink(email);
    assert.equal(await server.app.accounts.findByEmail(email), undefined, 'no account before the link is used');

    // Opening the link uses nothing up (mail scanners open links); a refused password leaves it usable.
    const weak = await finish(link, { new_password: 'password' });
    assert.equal(weak.status, 400);
    assert.match(weak.html, /not accepted/);
    assert.equal(await server.app.accounts.findByEmail(email), undefined);

    const done = await finish(link);
    assert.equal(done.status, 200, done.html);
    assert.match(done.html, /Welcome/);
    assert.match(done.html, /href="\/account"/);
    const account = await server.app.accounts.findByEmail(email);
    assert.ok(account);
    assert.equal(isEmailVerified(account), true);
    assert.equal(account.name, 'Grace Hopper');
    assert.equal(account.admin, undefined);

    // MFA_POLICY=required (the default): a second factor is set up at the first sign-in, as for anyone.
    const signedIn = await signInAndRedeem({ issuer: server.issuer, client: world.shop, scope: 'openid email', user: { email, password: PASSWORD } });
    assert.ok(signedIn.flow.enrollPage, 'a second factor is set up first');
    const claims = JSON.parse(Buffer.from(String(signedIn.tokens.id_token).split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
    assert.equal(claims.email, email);
    assert.equal(claims.email_verified, true);

    const requested = server.logs.filter((l) => l.event === 'signup_requested' && l.sent === true && l.existing === undefined);
    const signedUp = server.logs.filter((l) => l.event === 'signed_up' && l.accountId === account.id);
    assert.equal(signedUp.length, 1);
    assert.equal(signedUp[0]!.with, 'password');
    assert.ok(requested.some((l) => l.emailDigest === signedUp[0]!.emailDigest), 'both name the address by the same digest');
    assert.ok(!server.logs.some((l) => JSON.stringify(l).includes(email) && (l.event === 'signup_requested' || l.event === 'signed_up')), 'never the address itself');
    noTokenInLogs(link.searchParams.get('token')!);
  });

  it('an address with an account: the same page and status, its owner is told, no second account', async () => {
    const owner = await server.app.accounts.create({ email: address(), password: PASSWORD });
    const fresh = address();
    const known = await askToSignUp(owner.email);
    const unknown = await askToSignUp(fresh);
    assert.equal(known.status, unknown.status);
    assert.equal(known.html.replaceAll(owner.email, 'X'), unknown.html.replaceAll(fresh, 'X'), 'the same words');

    const told = await smtp.waitFor(owner.email, /tried to create/);
    assert.equal(linkIn(told, '/account').origin, server.issuer, 'a way to sign in');
    assert.equal(linkIn(told, '/password/forgot').origin, server.issuer, 'and to reset the password');
    await smtp.waitFor(fresh, /Finish creating/);
    assert.equal(smtp.to(owner.email).filter((m) => /Finish creating/.test(m.subject ?? '')).length, 0, 'no sign-up link to an existing address');
    assert.equal((await server.app.accounts.findByEmail(owner.email))?.id, owner.id, 'the account is as it was');
    assert.ok(server.logs.some((l) => l.event === 'signup_requested' && l.existing === true && l.accountId === owner.id));
  });

  it('a link is used once; 10 concurrent uses make one account; a link opened after the address got an account is dead', async () => {
    const email = address();
    await askToSignUp(email);
    const link = await signUpLink(email);
    const pages = await Promise.all(Array.from({ length: 10 }, async () => {
      const jar = new CookieJar();
      return { jar, page: (await get(jar, link)).page! };
    }));
    const answers = await Promise.all(pages.map(({ jar, page }, i) => post(jar, page, '/signup/finish', { token: hiddenField(page.html, 'token')!, new_password: `racing passphrase number ${i}` })));
    assert.equal(answers.filter((a) => a.page!.status === 200).length, 1, 'exactly one account');
    assert.ok(answers.every((a) => a.page!.status === 200 || a.page!.status === 400));
    const again = await finish(link);
    assert.equal(again.status, 400);
    assert.match(again.html, /expired or was already used/);
    const account = await server.app.accounts.findByEmail(email);
    assert.ok(account);
    assert.equal(server.logs.filter((l) => l.event === 'signed_up' && l.accountId === account.id).length, 1);
  });

  it('an expired link is refused', async () => {
    const email = address();
    await askToSignUp(email);
    const link = await signUpLink(email);
    offsetMs += 24 * 60 * 60 * 1000 + 60_000;
    try {
      const page = await finish(link);
      assert.equal(page.status, 400);
      assert.match(page.html, /expired/);
    } finally {
      offsetMs = 0;
    }
    assert.equal(await server.app.accounts.findByEmail(email), undefined);
  });

  it('a passkey instead of a password: a passkey-only account with recovery codes, which signs in with the passkey alone', async () => {
    const email = address();
    await askToSignUp(email);
    const link = await signUpLink(email);
    const jar = new CookieJar();
    const page = (await get(jar, link)).page!;
    const options = JSON.parse(unescapeHtml(page.html.match(/<form[^>]*action="\/signup\/finish"[^>]*data-passkey="register"[^>]*data-options="([^"]*)"/)![1]!));
    const device = new SoftAuthenticator({ origin: server.issuer });
    const done = (await post(jar, page, '/signup/finish', { token: hiddenField(page.html, 'token')!, response: JSON.stringify(device.create(options)), name: 'Laptop' })).page!;
    assert.equal(done.status, 200, done.html);
    assert.match(done.html, /Save your recovery codes/);
    const account = (await server.app.accounts.findByEmail(email))!;
    assert.equal(account.passwordHash, '', 'no password');
    assert.deepEqual(account.passkeys?.map((p) => p.name), ['Laptop']);
    assert.ok(account.recovery, 'recovery codes were issued');
    assert.equal(await server.app.accounts.authenticate(email, ''), undefined, 'an empty password matches nothing');
    assert.ok(server.logs.some((l) => l.event === 'signed_up' && l.accountId === account.id && l.with === 'passkey'));

    // Passwordless sign-in with it.
    const flow = await signIn({ issuer: server.issuer, client: world.firstParty, scope: 'openid' });
    const signInOptions = JSON.parse(unescapeHtml(flow.page!.html.match(/<form[^>]*action="([^"]+\/passkey)"[^>]*data-options="([^"]*)"/)![2]!));
    const action = new URL(flow.page!.html.match(/<form[^>]*action="([^"]+\/passkey)"/)![1]!, flow.page!.url);
    const signedIn = await follow(flow.jar, server.issuer, await browse(flow.jar, action, { form: { _csrf: hiddenField(flow.page!.html, '_csrf')!, response: JSON.stringify(device.get(signInOptions)) } }), action);
    assert.equal(signedIn.leftTo?.origin + signedIn.leftTo!.pathname, REDIRECT_URI, 'back at the app');
    assert.ok(signedIn.leftTo?.searchParams.get('code'));
  });

  it("a passkey made on one link's page is refused on another's; that link still works", async () => {
    const [a, b] = [address(), address()];
    await askToSignUp(a);
    await askToSignUp(b);
    const [linkA, linkB] = [await signUpLink(a), await signUpLink(b)];
    const pageA = (await get(new CookieJar(), linkA)).page!;
    const options = JSON.parse(unescapeHtml(pageA.html.match(/data-passkey="register"[^>]*data-options="([^"]*)"/)![1]!));
    const response = JSON.stringify(new SoftAuthenticator({ origin: server.issuer }).create(options));
    const jar = new CookieJar();
    const pageB = (await get(jar, linkB)).page!;
    const refused = (await post(jar, pageB, '/signup/finish', { token: hiddenField(pageB.html, 'token')!, response })).page!;
    assert.equal(refused.status, 400);
    assert.match(refused.html, /The passkey was not created/);
    assert.equal(await server.app.accounts.findByEmail(b), undefined);
    assert.equal((await finish(linkB)).status, 200, 'the link was not used up');
  });

  it('bad input: a malformed address is a field error (400), a cross-site post is refused, nothing is a 5xx', async () => {
    const bad = await askToSignUp('not-an-address');
    assert.equal(bad.status, 400);
    assert.match(bad.html, /id="email-error">Enter your email address/);
    const crossSite = await fetch(`${server.issuer}/signup`, { method: 'POST', headers: { origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' }, body: 'email=a%40example.org' });
    assert.equal(crossSite.status, 403);
    for (const body of ['email[]=x', 'email=%ZZ', 'name=' + 'x'.repeat(5000), '']) {
      const res = await fetch(`${server.issuer}/signup`, { method: 'POST', headers: { origin: server.issuer, 'content-type': 'application/x-www-form-urlencoded' }, body });
      assert.ok(res.status < 500, `${body.slice(0, 20)} → ${res.status}`);
    }
    for (const token of ['', 'x', 'A'.repeat(43), '../../etc']) {
      const res = await fetch(`${server.issuer}/signup/finish?token=${encodeURIComponent(token)}`);
      assert.equal(res.status, 400);
    }
    const forged = await fetch(`${server.issuer}/signup/finish`, { method: 'POST', headers: { origin: server.issuer, 'content-type': 'application/x-www-form-urlencoded' }, body: 'token=x&_csrf=y&new_password=zzzzzzzzzzzz' });
    assert.equal(forged.status, 400);
  });
});

describe('sign-up, other modes', () => {
  it('domains: another domain is refused next to the field; a listed one gets its link; past the IP budget 429, past the address budget the same answer and nothing sent', async () => {
    const domains = await startServer({
      redisUrl: redis.url,
      env: { SMTP_URL: smtp.url, SIGNUP: 'domains', SIGNUP_ALLOWED_DOMAINS: 'example.com, Example.net', TRUST_PROXY: '1', EMAIL_LINKS_PER_IP_PER_HOUR: '4', EMAIL_LINKS_PER_ADDRESS_PER_HOUR: '2' },
      mail: { pollMs: 50 },
    });
    try {
      // The limiter counts in the Redis the other suite's server shares: each client here names its own address.
      const from = (ip: string, email: string) => fetch(`${domains.issuer}/signup`, { method: 'POST', headers: { origin: domains.issuer, 'x-forwarded-for': ip, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ email }) });
      const form = await get(new CookieJar(), '/signup', domains.issuer);
      assert.match(form.page!.html, /An address at example\.com, example\.net\./);
      const outside = await from('192.0.2.1', address('example.org'));
      assert.equal(outside.status, 400);
      assert.match(await outside.text(), /id="email-error">Accounts here are for addresses at example\.com, example\.net only\./);

      const inside = address('example.net');
      assert.equal((await from('192.0.2.2', inside)).status, 200);
      assert.equal(linkIn(await smtp.waitFor(inside, /Finish creating/), '/signup/finish').origin, domains.issuer);

      // Per IP (as the proxy reports it): EMAIL_LINKS_PER_IP_PER_HOUR=4, then 429 with Retry-After.
      const statuses = [];
      for (let i = 0; i < 5; i += 1) statuses.push((await from('203.0.113.7', address('example.com'))).status);
      assert.deepEqual(statuses, [200, 200, 200, 200, 429]);
      const limited = await from('203.0.113.7', address('example.com'));
      assert.ok(Number(limited.headers.get('retry-after')) > 0);
      assert.equal((await from('203.0.113.8', address('example.com'))).status, 200, 'another address is not held back');

      // Per address: EMAIL_LINKS_PER_ADDRESS_PER_HOUR=2; the third ask answers the same and sends nothing.
      const often = address('example.com');
      const answers = [];
      for (let i = 0; i < 3; i += 1) answers.push(await (await from(`198.51.100.${i}`, often)).text());
      assert.equal(new Set(answers).size, 1, 'the same answer each time');
      await smtp.waitFor(often, /Finish creating/);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(smtp.to(often).length, 2);
      assert.ok(domains.logs.some((l) => l.event === 'signup_requested' && l.sent === false && l.reason === 'address_limit'));
    } finally {
      await domains.close();
    }
  });

  for (const mode of [undefined, 'invite-only']) {
    it(`${mode ?? 'off (the default)'}: /signup is 404 and the sign-in page has no link to it`, async () => {
      const off = await startServer({ redisUrl: redis.url, env: { SMTP_URL: smtp.url, ...(mode ? { SIGNUP: mode } : {}) } });
      try {
        assert.equal((await fetch(`${off.issuer}/signup`)).status, 404);
        assert.equal((await fetch(`${off.issuer}/signup`, { method: 'POST', headers: { origin: off.issuer, 'content-type': 'application/x-www-form-urlencoded' }, body: 'email=a%40example.org' })).status, 404);
        assert.equal((await fetch(`${off.issuer}/signup/finish?token=${'A'.repeat(43)}`)).status, 404);
        const client = await off.app.registry.createClient({ name: 'App', grants: ['authorization_code'], redirectUris: [REDIRECT_URI], scope: 'openid' }, async () => {});
        const login = await signIn({ issuer: off.issuer, client: { clientId: client.clientId, secret: client.secret!, redirectUri: REDIRECT_URI }, scope: 'openid' });
        assert.match(login.page!.html, /Sign in/);
        assert.doesNotMatch(login.page!.html, /signup|Create an account/);
      } finally {
        await off.close();
      }
    });
  }

  it('configuration: sign-up needs email (a clear line at boot); domains needs its list', () => {
    const base = { ISSUER: 'https://login.example.com', NODE_ENV: 'production', REDIS_URL: 'redis://127.0.0.1:6379', SECRETS_KEY: 'k'.repeat(43) };
    assert.throws(() => loadConfig({ ...base, SIGNUP: 'open' }), /SIGNUP.*needs EMAIL=on/);
    assert.throws(() => loadConfig({ ...base, SIGNUP: 'open', EMAIL: 'on' }), /SMTP_URL/);
    assert.throws(() => loadConfig({ PORT: '3000', EMAIL: 'off', SIGNUP: 'domains', SIGNUP_ALLOWED_DOMAINS: 'example.com' }), /needs EMAIL=on/);
    assert.throws(() => loadConfig({ PORT: '3000', SIGNUP: 'domains' }), /SIGNUP_ALLOWED_DOMAINS.*required/);
    assert.throws(() => loadConfig({ PORT: '3000', SIGNUP: 'domains', SIGNUP_ALLOWED_DOMAINS: 'not a domain' }), /domain names/);
    assert.equal(loadConfig({ ...base, SIGNUP: 'open', SMTP_URL: 'smtp://mail.example.com' }).SIGNUP, 'open');
    assert.equal(loadConfig({ ...base, SIGNUP: 'invite-only' }).SIGNUP, 'invite-only', 'invite-only needs no email');
    assert.deepEqual(loadConfig({ PORT: '3000', SIGNUP: 'domains', SIGNUP_ALLOWED_DOMAINS: 'Example.com, example.net' }).SIGNUP_ALLOWED_DOMAINS, ['example.com', 'example.net']);
  });
});
