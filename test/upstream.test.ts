import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as oc from 'openid-client';
import { keys } from '../src/storage/keys.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { startCompanyProvider, startGithubStub, startSilentServer, Traveller, type Trip } from './helpers/upstream.ts';
import { freePort } from './helpers/redis.ts';
import { SoftAuthenticator } from './helpers/soft-authenticator.ts';

/**
 * Sign-in through an upstream provider, end to end over loopback: openid-client is the app, Latchkey the
 * provider it knows, a second oidc-provider the company's provider and a small stub GitHub. Every page
 * on the way is checked for what a person reads, and no answer is a 5xx.
 */
const APP_CALLBACK = 'https://notes.example.com/cb';
const UPSTREAM_SECRET = 'company-client-secret-4d1f8a';
const GITHUB_SECRET = 'github-client-secret-93be20';
const VICTIM = { email: 'victim@acme.test', password: 'correct horse battery staple' };

describe('sign-in through an upstream provider', () => {
  let redis: TestRedis;
  let server: TestServer;
  let company: Awaited<ReturnType<typeof startCompanyProvider>>;
  let github: Awaited<ReturnType<typeof startGithubStub>>;
  let silent: Awaited<ReturnType<typeof startSilentServer>>;
  let rp: oc.Configuration;
  /** The victim's browser, signed in to Latchkey by the takeover test's last step. */
  let victimBrowser: Traveller;
  const actor = { kind: 'cli' as const };

  before(async () => {
    redis = await startRedis();
    const port = await freePort();
    company = await startCompanyProvider({ redirectUri: `http://localhost:${port}/upstream/callback`, clientSecret: UPSTREAM_SECRET });
    github = await startGithubStub({ clientId: 'gh-client', clientSecret: GITHUB_SECRET });
    silent = await startSilentServer();
    server = await startServer({ redisUrl: redis.url, port, env: { UPSTREAM_TIMEOUT_MS: '1500' } });
    const { ops, registry, accounts } = server.app;
    await ops.addProvider(actor, { id: 'acme', preset: 'oidc', name: 'Acme', issuer: company.issuer, client_id: 'latchkey', client_secret: UPSTREAM_SECRET, create_accounts: true, allowed_domains: ['acme.test'], trusted_for_email: true, require_mfa: false });
    await ops.addProvider(actor, {
      id: 'gh', preset: 'github', client_id: 'gh-client', client_secret: GITHUB_SECRET, create_accounts: true, require_mfa: false,
      authorization_endpoint: `${github.origin}/login/oauth/authorize`, token_endpoint: `${github.origin}/login/oauth/access_token`, api_base: github.origin,
    });
    const closed = await freePort();
    await ops.addProvider(actor, { id: 'down', preset: 'oidc', name: 'Down Corp', issuer: `http://127.0.0.1:${closed}`, client_id: 'x', client_secret: 'y', display: 'hint' });
    await ops.addProvider(actor, { id: 'slow', preset: 'oidc', name: 'Slow Corp', issuer: silent.origin, client_id: 'x', client_secret: 'y', display: 'hint' });
    await accounts.create({ ...VICTIM, name: 'Victim' });
    const client = await registry.createClient({ name: 'Notes', grants: ['authorization_code'], redirectUris: [APP_CALLBACK], scope: 'openid email profile', firstParty: true }, async () => {});
    rp = await oc.discovery(new URL(server.issuer), client.clientId, undefined, oc.ClientSecretBasic(client.secret), { execute: [oc.allowInsecureRequests] });
  });

  after(async () => {
    await server?.close();
    await company?.close();
    await github?.close();
    await silent?.close();
    await redis?.dispose();
  });

  /** The app starts a sign-in; the person is on Latchkey's sign-in page. */
  async function startAtApp(traveller = new Traveller(APP_CALLBACK), extra: Record<string, string> = {}) {
    const checks = { pkceCodeVerifier: oc.randomPKCECodeVerifier(), expectedState: oc.randomState(), expectedNonce: oc.randomNonce() };
    const url = oc.buildAuthorizationUrl(rp, {
      redirect_uri: APP_CALLBACK, scope: 'openid email profile', state: checks.expectedState, nonce: checks.expectedNonce,
      code_challenge: await oc.calculatePKCECodeChallenge(checks.pkceCodeVerifier), code_challenge_method: 'S256', ...extra,
    });
    const trip = await traveller.go(url);
    assert.equal(trip.page?.status, 200);
    assert.match(trip.page.html, /<h1>Sign in<\/h1>/);
    const uid = trip.page.url.pathname.split('/')[2]!;
    return { traveller, checks, uid, loginPage: trip.page.html };
  }

  /** "Continue with …" from the sign-in page, through the upstream and back. */
  async function continueWith(provider: string, started: Awaited<ReturnType<typeof startAtApp>>): Promise<Trip> {
    const trip = await started.traveller.go(new URL(`/interaction/${started.uid}/upstream/${provider}`, server.issuer));
    for (const step of trip.chain) assert.ok(step.status < 500, `${step.url.pathname} answered ${step.status}`);
    return trip;
  }

  async function tokensOf(trip: Trip, started: Awaited<ReturnType<typeof startAtApp>>) {
    assert.ok(trip.arrived, `back at the app, not on ${trip.page?.url.pathname}: ${trip.page?.html.match(/<p class="lead"[^>]*>([^<]*)/)?.[1]}`);
    return oc.authorizationCodeGrant(rp, trip.arrived, { ...started.checks, idTokenExpected: true });
  }

  const lead = (trip: Trip) => trip.page?.html.match(/<p class="lead"[^>]*>([\s\S]*?)<\/p>/)?.[1]?.replace(/<[^>]+>/g, '').replace(/&#39;|&apos;/g, "'") ?? '';
  const backLink = (trip: Trip) => trip.page?.html.match(/href="(\/interaction\/[^"]+)"/)?.[1];

  test('the sign-in page offers the providers shown as buttons, and a hint-only one when the request names it', async () => {
    const plain = await startAtApp();
    assert.match(plain.loginPage, /Continue with Acme/);
    assert.match(plain.loginPage, /Continue with GitHub/);
    assert.doesNotMatch(plain.loginPage, /Down Corp/);
    const hinted = await startAtApp(undefined, { upstream: 'down' });
    assert.match(hinted.loginPage, /Continue with Down Corp/);
  });

  test("app → Latchkey → company provider → back: first use creates the account, and the app's ID token carries Latchkey's sub", async () => {
    company.as('emp-1', { email: 'New.Person@acme.test', email_verified: true, name: 'New Person' });
    const started = await startAtApp();
    const tokens = await tokensOf(await continueWith('acme', started), started);
    const account = await server.app.accounts.findByEmail('new.person@acme.test');
    assert.ok(account, 'an account was created for the verified address of an allowed domain');
    assert.equal(account.emailVerified, true, 'verified upstream, and the provider is trusted for addresses');
    const claims = tokens.claims()!;
    assert.equal(claims.sub, account.id);
    assert.notEqual(claims.sub, 'emp-1');
    assert.equal(claims.idp, 'acme', 'the upstream used, for apps that want it');
    assert.equal(claims.acr, 'urn:latchkey:upstream');
    assert.deepEqual(claims.amr ?? [], [], 'Latchkey vouches for no factor of its own here');
    assert.equal(claims.name, 'New Person');

    // The same upstream identity again: the same account, none created.
    const again = await startAtApp();
    const second = await tokensOf(await continueWith('acme', again), again);
    assert.equal(second.claims()!.sub, account.id);
    assert.equal((await server.app.ops.userUpstreams(account.id)).identities.length, 1);
    const audit = server.logs.filter((l) => l.event === 'upstream_signin' && l.accountId === account.id);
    assert.equal(audit.length, 2);
    assert.equal(audit[0]!.provider, 'acme');
    assert.ok(server.logs.some((l) => l.event === 'upstream_linked' && l.accountId === account.id && l.via === 'created'));
  });

  test('first use creates an account only where allowed: another domain, or a provider that creates none', async () => {
    company.as('emp-2', { email: 'someone@elsewhere.test', email_verified: true });
    let started = await startAtApp();
    let trip = await continueWith('acme', started);
    assert.equal(trip.page?.status, 200);
    assert.match(lead(trip), /only for verified addresses of acme\.test/);
    assert.equal(await server.app.accounts.findByEmail('someone@elsewhere.test'), undefined);

    company.as('emp-3', { email: 'unverified@acme.test', email_verified: false });
    started = await startAtApp();
    trip = await continueWith('acme', started);
    assert.match(lead(trip), /did not give a verified email address/);
    assert.equal(await server.app.accounts.findByEmail('unverified@acme.test'), undefined, 'an allowed domain counts only when the upstream verified it');

    await server.app.ops.updateProvider(actor, 'acme', { create_accounts: false });
    try {
      company.as('emp-4', { email: 'late@acme.test', email_verified: true });
      started = await startAtApp();
      trip = await continueWith('acme', started);
      assert.match(lead(trip), /does not create accounts through Acme/);
      assert.equal(await server.app.accounts.findByEmail('late@acme.test'), undefined);
      assert.equal(backLink(trip), `/interaction/${started.uid}`);
    } finally {
      await server.app.ops.updateProvider(actor, 'acme', { create_accounts: true });
    }
  });

  test("the takeover test: an upstream account claiming the victim's address never reaches the victim's account", async () => {
    const victim = (await server.app.accounts.findByEmail(VICTIM.email))!;
    const notLinked = async (iss: string, sub: string) => assert.equal(await server.store.get(keys.upstreamIdentity(iss, sub)), null);

    // (a) The company provider (trusted for addresses) with the address unverified.
    company.as('attacker-1', { email: VICTIM.email, email_verified: false, name: 'Mallory' });
    let started = await startAtApp();
    let trip = await continueWith('acme', started);
    assert.equal(trip.arrived, undefined, 'the app gets no code');
    assert.match(lead(trip), /An account with the address victim@acme\.test already exists/);
    assert.match(lead(trip), /link Acme from your account page/);
    await notLinked(company.issuer, 'attacker-1');

    // (b) GitHub says the address is verified, but the operator does not trust GitHub for addresses.
    github.control.as = { id: 4242, login: 'mallory', emails: [{ email: VICTIM.email, primary: true, verified: true }] };
    started = await startAtApp();
    trip = await continueWith('gh', started);
    assert.equal(trip.arrived, undefined);
    assert.match(lead(trip), /already exists/);
    await notLinked('https://github.com', '4242');

    // (c) Verified by the trusted provider: still only after the person proves the account is theirs.
    company.as('victim-at-acme', { email: VICTIM.email, email_verified: true, name: 'Victim' });
    started = await startAtApp();
    trip = await continueWith('acme', started);
    assert.equal(trip.arrived, undefined);
    assert.match(trip.page!.html, /<h1>Link Acme<\/h1>/);
    await notLinked(company.issuer, 'victim-at-acme');
    const csrf = trip.page!.html.match(/name="_csrf" value="([^"]+)"/)![1]!;
    const linkUrl = new URL(`/interaction/${started.uid}/upstream-link`, server.issuer);
    const wrong = await started.traveller.go(linkUrl, { form: { _csrf: csrf, password: 'not the password' } });
    assert.match(wrong.page!.html, /Wrong email or password/);
    await notLinked(company.issuer, 'victim-at-acme');
    const right = await started.traveller.go(linkUrl, { form: { _csrf: csrf, password: VICTIM.password } });
    victimBrowser = started.traveller;
    const tokens = await tokensOf(right, started);
    assert.equal(tokens.claims()!.sub, victim.id);
    assert.ok(server.logs.some((l) => l.event === 'upstream_linked' && l.accountId === victim.id && l.via === 'signin' && l.provider === 'acme'));

    // Nothing the attackers did touched the victim's account.
    assert.deepEqual((await server.app.ops.userUpstreams(victim.id)).identities.map((i) => i.sub), ['victim-at-acme']);
  });

  test('the "Link" page at sign-in also takes a passkey of that account (with user verification), and only one of its own', async () => {
    const email = 'pat@acme.test';
    const { user } = await server.app.ops.createUser(actor, { email, password: 'quiet meadow lantern 42' });
    const account = (await server.app.accounts.find(user.id))!;
    const device = new SoftAuthenticator({ origin: server.issuer });
    assert.ok((await server.app.passkeys.register(user.id, 'test', device.create(await server.app.passkeys.registrationOptions(account, 'test')), 'Laptop')).ok);
    // Another account's passkey, on another device.
    const other = (await server.app.accounts.find((await server.app.ops.createUser(actor, { email: 'sam@example.org', password: 'quiet meadow lantern 43' })).user.id))!;
    const stranger = new SoftAuthenticator({ origin: server.issuer });
    assert.ok((await server.app.passkeys.register(other.id, 'test-other', stranger.create(await server.app.passkeys.registrationOptions(other, 'test-other')), 'Phone')).ok);
    const unescape = (t: string) => t.replaceAll('&quot;', '"').replaceAll('&#39;', "'").replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&');

    company.as('pat-at-acme', { email, email_verified: true, name: 'Pat' });
    const started = await startAtApp();
    const trip = await continueWith('acme', started);
    assert.match(trip.page!.html, /<h1>Link Acme<\/h1>/);
    const linkUrl = new URL(`/interaction/${started.uid}/upstream-link`, server.issuer);
    const passkeyForm = trip.page!.html.match(/<form[^>]*action="([^"]+)"[^>]*data-passkey="verify"[^>]*data-options="([^"]*)"/);
    assert.ok(passkeyForm, 'a passkey is offered');
    assert.equal(passkeyForm[1], linkUrl.pathname);
    const options = JSON.parse(unescape(passkeyForm[2]!));
    assert.equal(options.userVerification, 'required', 'it stands in for the password');
    const csrf = trip.page!.html.match(/name="_csrf" value="([^"]+)"/)![1]!;

    // A passkey of another account proves nothing.
    const wrong = await started.traveller.go(linkUrl, { form: { _csrf: csrf, response: JSON.stringify(stranger.get(options)) } });
    assert.equal(wrong.arrived, undefined);
    assert.match(wrong.page!.html, /<h1>Link Acme<\/h1>/);
    assert.match(wrong.page!.html, /class="error" role="alert"/);
    assert.equal(await server.store.get(keys.upstreamIdentity(company.issuer, 'pat-at-acme')), null);

    const fresh = JSON.parse(unescape(wrong.page!.html.match(/data-passkey="verify"[^>]*data-options="([^"]*)"/)![1]!));
    const right = await started.traveller.go(linkUrl, { form: { _csrf: csrf, response: JSON.stringify(device.get(fresh)) } });
    const tokens = await tokensOf(right, started);
    assert.equal(tokens.claims()!.sub, user.id);
    assert.ok(server.logs.some((l) => l.event === 'upstream_linked' && l.accountId === user.id && l.via === 'signin'));
    assert.ok(server.logs.some((l) => l.event === 'passkey_used' && l.accountId === user.id && l.as === 'proof'));
  });

  test("linking from /account: in the account page's sudo mode, through the provider, to this account only; unlinking too", async () => {
    const victim = (await server.app.accounts.findByEmail(VICTIM.email))!;
    const page = await victimBrowser.go(new URL('/account/providers', server.issuer));
    assert.match(page.page!.html, /<h1>Sign-in providers<\/h1>/);
    assert.match(page.page!.html, /<h3>Acme<\/h3>/, 'the provider linked at sign-in is listed');
    assert.match(page.page!.html, /Confirm it’s you on your account page/);
    const csrf = page.page!.html.match(/name="_csrf" value="([^"]+)"/)![1]!;
    const link = new URL('/account/providers/link', server.issuer);

    // Not confirmed yet: nothing starts, whatever the form carries (a password here is not the proof).
    const refused = await victimBrowser.go(link, { form: { _csrf: csrf, provider: 'gh', password: VICTIM.password } });
    assert.equal(refused.page?.status, 403);
    assert.match(refused.page.html, /Confirm it’s you first/);

    // The account page's proof (the same as for every other change to how they sign in).
    const account = await victimBrowser.go(new URL('/account', server.issuer));
    const accountCsrf = account.page!.html.match(/name="_csrf" value="([^"]+)"/)![1]!;
    const wrong = await victimBrowser.go(new URL('/account/sudo', server.issuer), { form: { _csrf: accountCsrf, current_password: 'wrong' } });
    assert.equal(wrong.page?.status, 400);
    await victimBrowser.go(new URL('/account/sudo', server.issuer), { form: { _csrf: accountCsrf, current_password: VICTIM.password } });

    github.control.as = { id: 9001, login: 'victim-gh', emails: [{ email: 'elsewhere@gh.test', primary: true, verified: true }] };
    const linked = await victimBrowser.go(link, { form: { _csrf: csrf, provider: 'gh' } });
    for (const step of linked.chain) assert.ok(step.status < 500, `${step.url.pathname} answered ${step.status}`);
    assert.match(linked.page!.html, /<h3>GitHub<\/h3>/);
    assert.ok(server.logs.some((l) => l.event === 'upstream_linked' && l.accountId === victim.id && l.via === 'account_page' && l.provider === 'gh'));

    // Now GitHub signs the victim in, whatever address it gives.
    const started = await startAtApp();
    assert.equal((await tokensOf(await continueWith('gh', started), started)).claims()!.sub, victim.id);

    const unlink = await victimBrowser.go(new URL('/account/providers/unlink', server.issuer), { form: { _csrf: csrf, provider: 'acme' } });
    assert.doesNotMatch(unlink.page!.html, /<h3>Acme<\/h3>/);
    assert.ok(server.logs.some((l) => l.event === 'upstream_unlinked' && l.accountId === victim.id && l.provider === 'acme'));

    // An identity linked to another account is not moved here (signed out at the company, in as emp-1).
    company.as('emp-1', { email: 'New.Person@acme.test', email_verified: true });
    victimBrowser.forget(new URL(company.issuer).hostname);
    const elsewhere = await victimBrowser.go(link, { form: { _csrf: csrf, provider: 'acme' } });
    assert.match(elsewhere.page!.html, /linked to another account/);
    assert.deepEqual((await server.app.ops.userUpstreams(victim.id)).identities.map((i) => i.provider), ['gh']);
  });

  test('an account an upstream created confirms by signing in there again (prompt=login), and never unlinks its last way in', async () => {
    company.as('emp-1', { email: 'New.Person@acme.test', email_verified: true });
    const person = (await server.app.accounts.findByEmail('new.person@acme.test'))!;
    const started = await startAtApp();
    await tokensOf(await continueWith('acme', started), started);
    const browser = started.traveller;
    const page = await browser.go(new URL('/account/providers', server.issuer));
    const html = page.page!.html;
    assert.match(html, /no password you know/);
    assert.match(html, /This is how you sign in: set a password first/, 'the only identity offers no unlink');
    assert.doesNotMatch(html, /action="\/account\/providers\/unlink"/);
    const csrf = html.match(/name="_csrf" value="([^"]+)"/)![1]!;
    // The day it was linked, as the account page writes days: ISO in English, the locale's own form in German.
    const today = new Date();
    assert.match(html, new RegExp(`<time>${today.toISOString().slice(0, 10)}</time>`));
    const providersUrl = new URL('/account/providers', server.issuer);
    browser.jar(providersUrl).storeLines(['lk_lang=de; Path=/']);
    const german = (await browser.go(providersUrl)).page!.html;
    assert.match(german, new RegExp(`<time>${new Intl.DateTimeFormat('de', { dateStyle: 'long', timeZone: 'UTC' }).format(today)}</time>`));
    browser.jar(providersUrl).storeLines(['lk_lang=; Path=/']);

    // Operations (console, admin API, CLI) refuses it too.
    await assert.rejects(server.app.ops.unlinkUserUpstream(actor, person.id, 'acme'), (err: { code?: string; status?: number }) => err.code === 'identity_last_way_in' && err.status === 409);
    const unlinkLast = await browser.go(new URL('/account/providers/unlink', server.issuer), { form: { _csrf: csrf, provider: 'acme' } });
    assert.equal(unlinkLast.page?.status, 403, 'and not in sudo mode: refused before anything');

    // Confirmed at the upstream, freshly: the authorization request says so.
    const confirmed = await browser.go(new URL('/account/providers/confirm', server.issuer), { form: { _csrf: csrf, provider: 'acme' } });
    const atUpstream = confirmed.chain.find((step) => step.url.origin === company.issuer && step.url.pathname === '/auth')!.url;
    assert.equal(atUpstream.searchParams.get('prompt'), 'login');
    assert.equal(atUpstream.searchParams.get('max_age'), '0');
    assert.match(confirmed.page!.html, /for the next \d+ minutes you can change how you sign in/);
    assert.ok(server.logs.some((l) => l.event === 'account_sudo_started' && l.accountId === person.id && l.source === 'upstream' && l.provider === 'acme'));

    // Another identity of the same upstream is no proof for this account.
    const other = await startAtApp();
    company.as('emp-9', { email: 'nine@acme.test', email_verified: true });
    await tokensOf(await continueWith('acme', other), other);
    const otherPage = await other.traveller.go(new URL('/account/providers', server.issuer));
    const otherCsrf = otherPage.page!.html.match(/name="_csrf" value="([^"]+)"/)![1]!;
    company.as('emp-1', { email: 'New.Person@acme.test', email_verified: true });
    other.traveller.forget(new URL(company.issuer).hostname);
    const mismatch = await other.traveller.go(new URL('/account/providers/confirm', server.issuer), { form: { _csrf: otherCsrf, provider: 'acme' } });
    assert.match(mismatch.page!.html, /not the one linked to your account/);

    // In sudo mode: link GitHub, then the first identity may go (GitHub still signs them in).
    github.control.as = { id: 5150, login: 'newperson', emails: [{ email: 'np@gh.test', primary: true, verified: true }] };
    const linked = await browser.go(new URL('/account/providers/link', server.issuer), { form: { _csrf: csrf, provider: 'gh' } });
    assert.match(linked.page!.html, /<h3>GitHub<\/h3>/);
    const unlinked = await browser.go(new URL('/account/providers/unlink', server.issuer), { form: { _csrf: csrf, provider: 'acme' } });
    assert.doesNotMatch(unlinked.page!.html, /<h3>Acme<\/h3>/);
    assert.deepEqual((await server.app.ops.userUpstreams(person.id)).identities.map((i) => [i.provider, i.last_way_in]), [['gh', true]]);
  });

  test('a passkey is a way in: without one the only identity stays linked (409); with one it unlinks, and the passkey still signs them in', async () => {
    company.as('emp-pk', { email: 'kim@acme.test', email_verified: true, name: 'Kim' });
    const started = await startAtApp();
    await tokensOf(await continueWith('acme', started), started);
    const kim = (await server.app.accounts.findByEmail('kim@acme.test'))!;
    const browser = started.traveller;
    const providersPage = new URL('/account/providers', server.issuer);
    const unlink = new URL('/account/providers/unlink', server.issuer);
    const csrf = (await browser.go(providersPage)).page!.html.match(/name="_csrf" value="([^"]+)"/)![1]!;
    const confirmed = await browser.go(new URL('/account/providers/confirm', server.issuer), { form: { _csrf: csrf, provider: 'acme' } });
    assert.match(confirmed.page!.html, /for the next \d+ minutes you can change how you sign in/);

    // No password they know, no passkey: Acme is their only way in, in sudo mode as well.
    assert.match(confirmed.page!.html, /This is how you sign in: set a password first, or add a passkey/);
    assert.doesNotMatch(confirmed.page!.html, /action="\/account\/providers\/unlink"/);
    const refused = await browser.go(unlink, { form: { _csrf: csrf, provider: 'acme' } });
    assert.equal(refused.page?.status, 409);
    assert.match(refused.page.html, /This is how you sign in: set a password first .* or add a passkey on your account page/);
    await assert.rejects(server.app.ops.unlinkUserUpstream(actor, kim.id, 'acme'), (err: { code?: string; status?: number }) => err.code === 'identity_last_way_in' && err.status === 409);
    assert.equal((await server.app.ops.userUpstreams(kim.id)).identities.length, 1);

    // A passkey of their own (PASSKEYS is optional here, so it signs in alone).
    const device = new SoftAuthenticator({ origin: server.issuer });
    assert.ok((await server.app.passkeys.register(kim.id, 'test-kim', device.create(await server.app.passkeys.registrationOptions(kim, 'test-kim')), 'Laptop')).ok);
    assert.deepEqual((await server.app.ops.userUpstreams(kim.id)).identities.map((i) => i.last_way_in), [false]);
    const offered = await browser.go(providersPage);
    assert.match(offered.page!.html, /action="\/account\/providers\/unlink"/);
    const unlinked = await browser.go(unlink, { form: { _csrf: csrf, provider: 'acme' } });
    assert.doesNotMatch(unlinked.page!.html, /<h3>Acme<\/h3>/);
    assert.deepEqual((await server.app.ops.userUpstreams(kim.id)).identities, []);
    assert.ok(server.logs.some((l) => l.event === 'upstream_unlinked' && l.accountId === kim.id && l.provider === 'acme'));

    // And it was a way in: a fresh browser signs in with the passkey alone.
    const again = await startAtApp();
    const form = again.loginPage.match(/<form[^>]*action="([^"]+\/passkey)"[^>]*data-options="([^"]*)"[\s\S]*?name="_csrf" value="([^"]+)"/)!;
    const options = JSON.parse(form[2]!.replaceAll('&quot;', '"').replaceAll('&#39;', "'").replaceAll('&amp;', '&'));
    const signedIn = await again.traveller.go(new URL(form[1]!, server.issuer), { form: { _csrf: form[3]!, response: JSON.stringify(device.get(options)) } });
    assert.equal((await tokensOf(signedIn, again)).claims()!.sub, kim.id);
  });

  test('GitHub: the numeric id is the subject and only verified addresses count', async () => {
    github.control.as = { id: 777, login: 'octo', name: 'Octo Cat', emails: [{ email: 'octo@unverified.test', primary: true, verified: false }, { email: 'octo@gh.test', primary: false, verified: true }] };
    const started = await startAtApp();
    const tokens = await tokensOf(await continueWith('gh', started), started);
    const account = (await server.app.accounts.findByEmail('octo@gh.test'))!;
    assert.equal(tokens.claims()!.sub, account.id);
    assert.equal(account.emailVerified, false, 'GitHub is not trusted for addresses here: created, but not verified');
    assert.equal(await server.app.accounts.findByEmail('octo@unverified.test'), undefined);
    assert.ok(await server.store.get(keys.upstreamIdentity('https://github.com', '777')));
  });

  test('wrong iss, wrong nonce, wrong state, a replayed callback, refused consent: a page with a way back, never a 5xx', async () => {
    company.as('emp-7', { email: 'seven@acme.test', email_verified: true });
    const tampered = (change: (u: URL) => void) => new Traveller(APP_CALLBACK, (u) => {
      const copy = new URL(u);
      change(copy);
      return copy;
    });

    // RFC 9207: an answer naming another issuer is a mix-up.
    let started = await startAtApp(tampered((u) => u.pathname === '/upstream/callback' && u.searchParams.set('iss', 'https://evil.example')));
    let trip = await continueWith('acme', started);
    assert.equal(trip.page?.status, 400);
    assert.match(lead(trip), /could not be accepted/);
    assert.equal(backLink(trip), `/interaction/${started.uid}`);
    const back = await started.traveller.go(new URL(backLink(trip)!, server.issuer));
    assert.match(back.page!.html, /<h1>Sign in<\/h1>/, 'the way back is the same sign-in');

    // An ID token minted for another nonce.
    started = await startAtApp(tampered((u) => u.origin === company.issuer && u.pathname === '/auth' && u.searchParams.has('nonce') && u.searchParams.set('nonce', 'another-nonce')));
    trip = await continueWith('acme', started);
    assert.equal(trip.page?.status, 400);
    assert.match(lead(trip), /could not be accepted/);

    // A state that this server never issued.
    started = await startAtApp(tampered((u) => u.pathname === '/upstream/callback' && u.searchParams.set('state', 'made-up')));
    trip = await continueWith('acme', started);
    assert.equal(trip.page?.status, 400);
    assert.match(lead(trip), /does not belong to a sign-in in progress/);

    // A callback taken twice: the second is refused, with the way back.
    started = await startAtApp();
    trip = await continueWith('acme', started);
    assert.ok(trip.arrived);
    const callback = trip.chain.find((s) => s.url.pathname === '/upstream/callback')!.url;
    const replay = await started.traveller.go(callback);
    assert.equal(replay.page?.status, 400);
    assert.match(lead(replay), /already used/);
    assert.equal(backLink(replay), `/interaction/${started.uid}`);
    assert.ok(server.logs.some((l) => l.event === 'upstream_signin_failed' && l.reason === 'replayed' && l.provider === 'acme'));

    // The person said no at the upstream.
    company.control.deny = true;
    started = await startAtApp();
    trip = await continueWith('acme', started);
    assert.match(lead(trip), /cancelled or refused there/);
    assert.equal(backLink(trip), `/interaction/${started.uid}`);
    company.control.deny = false;
  });

  test('an upstream that is down, or slower than UPSTREAM_TIMEOUT_MS: a page with a way back, not a 5xx or a hang', async () => {
    for (const id of ['down', 'slow']) {
      const started = await startAtApp(undefined, { upstream: id });
      const t0 = Date.now();
      const trip = await continueWith(id, started);
      assert.ok(Date.now() - t0 < 5000, `${id}: answered within the deadline`);
      assert.equal(trip.page?.status, 200);
      assert.match(lead(trip), /did not answer in time/);
      assert.equal(backLink(trip), `/interaction/${started.uid}`);
    }
    assert.ok(server.logs.some((l) => l.event === 'upstream_signin_failed' && l.provider === 'slow' && l.detail === 'timeout'));
  });

  test('no client secret, code or token of an upstream reaches the log', () => {
    const text = JSON.stringify(server.logs);
    for (const secret of [UPSTREAM_SECRET, GITHUB_SECRET]) assert.ok(!text.includes(secret), 'a client secret in the log');
    assert.ok(!/gho_[0-9a-f]{8}/.test(text), 'a GitHub token in the log');
    assert.ok(!/[?&]code=/.test(text), 'an authorization code in the log');
  });
});
