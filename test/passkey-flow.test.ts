import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ACR_MFA } from '../src/signin/policy.ts';
import { MESSAGES } from '../src/signin/messages.ts';
import { digest } from '../src/storage/keys.ts';
import { browse, CookieJar, endpoints, follow, formAction, hiddenField, recoveryCodesOf, signIn, type Page } from './helpers/flow.ts';
import { SoftAuthenticator } from './helpers/soft-authenticator.ts';
import type { TestServer } from './helpers/server.ts';
import { useWorld, type World } from './helpers/world.ts';

/**
 * Passkeys through the sign-in pages at the protocol level (fetch, a software authenticator): enrolment
 * with a passkey, a passwordless sign-in, a passkey as the second factor, and what is refused — no user
 * verification, a replayed challenge or one of another interaction, a removed passkey, another origin,
 * repeated bad assertions (lockout). The same in a real Chromium: test/e2e/passkeys.test.ts.
 */
let server: TestServer;
let world: World;
let people = 0;
useWorld({}, (setup) => ({ server, world } = setup));

const PASSWORD = 'correct horse battery staple';

function unescapeHtml(text: string): string {
  return text.replaceAll('&quot;', '"').replaceAll('&#39;', "'").replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&');
}

/** The WebAuthn options of the passkey form posting to `…suffix`. */
function passkeyOptionsOf(html: string, suffix: string) {
  for (const m of html.matchAll(/<form[^>]*action="([^"]+)"[^>]*data-options="([^"]*)"/g)) if (m[1]!.endsWith(suffix)) return JSON.parse(unescapeHtml(m[2]!));
  return undefined;
}

function claimsOf(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

function errorOf(html: string): string | undefined {
  return html.match(/<p class="error" role="alert"[^>]*>([^<]*)<\/p>/)?.[1];
}

async function newPerson() {
  people += 1;
  const email = `passkey-${people}-${Date.now()}@example.org`;
  const account = await server.app.accounts.create({ email, password: PASSWORD });
  return { id: account.id, email, password: PASSWORD };
}

async function postForm(jar: CookieJar, page: Page, suffix: string, fields: Record<string, string>) {
  const action = formAction(page.html, suffix);
  assert.ok(action, `a form posting to …${suffix}`);
  const url = new URL(action, page.url);
  return follow(jar, server.issuer, await browse(jar, url, { form: { _csrf: hiddenField(page.html, '_csrf')!, ...fields } }), url);
}

/** A sign-in page of a new authorization request (no session). */
async function loginPage(jar = new CookieJar()) {
  const flow = await signIn({ issuer: server.issuer, client: world.firstParty, scope: 'openid', jar });
  assert.ok(flow.page && formAction(flow.page.html, '/passkey'), 'the sign-in page offers a passkey');
  return flow;
}

async function redeem(flow: { verifier: string }, callback: URL | undefined) {
  const code = callback?.searchParams.get('code');
  assert.ok(code, `back at the client with a code: ${callback}`);
  const tokens = await endpoints(server.issuer).redeem(world.firstParty, code, flow.verifier);
  assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
  return claimsOf(tokens.body.id_token as string);
}

/** A person who enrolled with a passkey at their first sign-in (MFA_POLICY=required). */
async function enrolledWithPasskey(device = new SoftAuthenticator({ origin: server.issuer })) {
  const person = await newPerson();
  const flow = await signIn({ issuer: server.issuer, client: world.firstParty, user: person, scope: 'openid', secondFactor: 'stop' });
  const page = flow.enrollPage!;
  const options = passkeyOptionsOf(page.html, '/enroll/passkey');
  assert.ok(options, 'the enrolment page offers a passkey');
  const registered = await postForm(flow.jar, page, '/enroll/passkey', { response: JSON.stringify(device.create(options)), name: 'Test key' });
  const codes = recoveryCodesOf(registered.page!.html);
  const saved = await postForm(flow.jar, registered.page!, '/saved', {});
  return { person, device, codes, flow, saved };
}

describe('passkeys at sign-in', () => {
  test('enrolment with a passkey: recovery codes once, then the ID token says pwd + hwk, acr mfa', async () => {
    const { person, codes, flow, saved } = await enrolledWithPasskey();
    assert.equal(codes.length, 10);
    const account = (await server.app.accounts.find(person.id))!;
    assert.equal(account.passkeys?.length, 1);
    assert.equal(account.passkeys[0]!.name, 'Test key');
    assert.equal(account.mfa, undefined, 'no authenticator app');
    const claims = await redeem(flow, saved.leftTo);
    assert.deepEqual(claims.amr, ['pwd', 'hwk', 'user', 'mfa']);
    assert.equal(claims.acr, ACR_MFA);
  });

  test('sign in with the passkey alone: no password, no code; amr hwk + user + mfa, acr mfa', async () => {
    const { person, device } = await enrolledWithPasskey();
    const flow = await loginPage();
    assert.match(flow.page!.html, /autocomplete="username webauthn"/, 'passkey autofill on the email field');
    const options = passkeyOptionsOf(flow.page!.html, '/passkey');
    assert.equal(options.userVerification, 'required');
    assert.equal(options.allowCredentials, undefined, 'any discoverable passkey');
    const done = await postForm(flow.jar, flow.page!, '/passkey', { response: JSON.stringify(device.get(options)) });
    const claims = await redeem(flow, done.leftTo);
    assert.equal(claims.sub, person.id);
    assert.deepEqual(claims.amr, ['hwk', 'user', 'mfa']);
    assert.equal(claims.acr, ACR_MFA);
    assert.ok(server.logs.some((l) => l.event === 'passkey_used' && l.accountId === person.id && l.as === 'passwordless'));
  });

  test('a passkey as the second factor after the password', async () => {
    const { person, device } = await enrolledWithPasskey();
    const flow = await signIn({ issuer: server.issuer, client: world.firstParty, user: person, scope: 'openid', secondFactor: 'stop' });
    const page = flow.page!;
    assert.equal(formAction(page.html, '/mfa'), undefined, 'no app, so no code field');
    const options = passkeyOptionsOf(page.html, '/mfa/passkey');
    assert.deepEqual(options.allowCredentials.map((c: { id: string }) => c.id), [...device.keys.keys()]);
    const done = await postForm(flow.jar, page, '/mfa/passkey', { response: JSON.stringify(device.get(options)) });
    const claims = await redeem(flow, done.leftTo);
    assert.deepEqual(claims.amr, ['pwd', 'hwk', 'user', 'mfa']);
  });

  test('an authenticator without user verification cannot sign in without a password', async () => {
    const { device } = await enrolledWithPasskey(new SoftAuthenticator({ origin: server.issuer, userVerification: false }));
    const flow = await loginPage();
    const refused = await postForm(flow.jar, flow.page!, '/passkey', { response: JSON.stringify(device.get(passkeyOptionsOf(flow.page!.html, '/passkey'))) });
    assert.equal(refused.leftTo, undefined);
    assert.equal(errorOf(refused.page!.html), MESSAGES.passkeyNotVerified);
  });

  test('a replayed assertion, and one answering another interaction’s challenge, are refused', async () => {
    const { device } = await enrolledWithPasskey();
    const first = await loginPage();
    const response = JSON.stringify(device.get(passkeyOptionsOf(first.page!.html, '/passkey')));
    // Posted on another interaction (another browser's sign-in): its challenge was not issued there.
    const other = await loginPage();
    const elsewhere = await postForm(other.jar, other.page!, '/passkey', { response });
    assert.equal(errorOf(elsewhere.page!.html), MESSAGES.passkeyRefused);
    const used = await postForm(first.jar, first.page!, '/passkey', { response });
    assert.ok(used.leftTo, 'accepted once where it was issued');
    const again = await loginPage(new CookieJar());
    const replay = await postForm(again.jar, again.page!, '/passkey', { response });
    assert.equal(errorOf(replay.page!.html), MESSAGES.passkeyRefused);
  });

  test('a removed passkey is refused; a recovery code still works without it', async () => {
    const { person, device, codes } = await enrolledWithPasskey();
    const options = passkeyOptionsOf((await loginPage()).page!.html, '/passkey');
    const credentialId = [...device.keys.keys()][0]!;
    await server.app.passkeys.remove(person.id, credentialId);
    const flow = await loginPage();
    const refused = await postForm(flow.jar, flow.page!, '/passkey', { response: JSON.stringify(device.get(passkeyOptionsOf(flow.page!.html, '/passkey'))) });
    assert.equal(errorOf(refused.page!.html), MESSAGES.passkeyUnregistered);
    // The page names the credential for the Signal API and does not arm autofill again (it would offer the same one).
    const form = refused.page!.html.match(/<form[^>]*data-passkey="sign-in"[^>]*>/)![0];
    assert.match(form, new RegExp(`data-unknown-credential="${credentialId}"`));
    assert.doesNotMatch(form, /data-autofill/);
    assert.ok(options);
    // The device is gone but the account keeps its recovery codes (MFA_POLICY=required: enrol again next time).
    const lost = await enrolledWithPasskey();
    const rescue = await signIn({ issuer: server.issuer, client: world.firstParty, user: lost.person, scope: 'openid', secondFactor: 'stop' });
    const link = rescue.page!.html.match(/href="([^"]+\/recovery)"/)?.[1];
    assert.ok(link, 'the second-factor page links to the recovery code');
    const recoveryUrl = new URL(link, rescue.page!.url);
    const recoveryPage = (await follow(rescue.jar, server.issuer, await browse(rescue.jar, recoveryUrl), recoveryUrl)).page!;
    const done = await postForm(rescue.jar, recoveryPage, '/recovery', { recovery_code: lost.codes[0]! });
    const claims = await redeem(rescue, done.leftTo);
    assert.deepEqual(claims.amr, ['pwd', 'otp', 'mfa']);
    assert.ok(codes.length === 10);
  });

  test('an assertion made for another origin (another port) is refused', async () => {
    const { device } = await enrolledWithPasskey();
    const flow = await loginPage();
    const port = Number(new URL(server.issuer).port) + 1;
    const options = passkeyOptionsOf(flow.page!.html, '/passkey');
    const refused = await postForm(flow.jar, flow.page!, '/passkey', { response: JSON.stringify(device.get(options, { origin: `http://localhost:${port}` })) });
    assert.equal(errorOf(refused.page!.html), MESSAGES.passkeyRefused);
  });

  test('repeated bad assertions lock the account: then even a good one is refused (429)', async () => {
    const { person, device } = await enrolledWithPasskey();
    const flow = await loginPage();
    let page = flow.page!;
    for (let i = 0; i < 10; i += 1) {
      const bad = device.get(passkeyOptionsOf(page.html, '/passkey'), { origin: 'http://evil.example' });
      page = (await postForm(flow.jar, page, '/passkey', { response: JSON.stringify(bad) })).page!;
    }
    const good = await postForm(flow.jar, page, '/passkey', { response: JSON.stringify(device.get(passkeyOptionsOf(page.html, '/passkey'))) });
    assert.equal(good.page!.status, 429);
    assert.equal(errorOf(good.page!.html), MESSAGES.locked);
    assert.ok(server.logs.some((l) => l.event === 'lockout_started' && l.accountId === person.id && l.factor === 'passkey'));
    await server.app.lockout.unlock({ account: person.email });
  });

  test('a passkey no account holds counts against nobody: more tries than the lockout allows, and the owner and the IP are never locked', async () => {
    const { person, device } = await enrolledWithPasskey();
    const credentialId = [...device.keys.keys()][0]!;
    await server.app.passkeys.remove(person.id, credentialId);
    const ip = server.logs.findLast((l) => l.event === 'signin_succeeded' && l.accountId === person.id)!.ip as string;
    const subjects = [person.email, `passkey:${digest(credentialId)}`];
    const counted = () => Promise.all(subjects.map((account) => server.app.lockout.failures({ factor: 'passkey', account, ip })));
    const before = await counted();
    const flow = await loginPage();
    let page = flow.page!;
    for (let i = 0; i < 11; i += 1) {
      page = (await postForm(flow.jar, page, '/passkey', { response: JSON.stringify(device.get(passkeyOptionsOf(page.html, '/passkey'))) })).page!;
      assert.equal(page.status, 200);
      assert.equal(errorOf(page.html), MESSAGES.passkeyUnregistered);
    }
    assert.equal(server.logs.findLast((l) => l.event === 'signin_failed' && l.reason === 'unregistered')?.ip, ip, 'the refusal is still audited');
    assert.deepEqual(await counted(), before, 'neither the owner, the credential nor the IP counted a failure');
    assert.deepEqual(before.map((c) => c.account), [0, 0]);
    for (const account of subjects) assert.deepEqual(await server.app.lockout.check({ account, ip }), { allowed: true });
  });

  test('malformed passkey posts are a clear 200 page with an error, never a 500', async () => {
    const flow = await loginPage();
    for (const response of ['', 'not json', '{"id":"x","type":"public-key","response":{"clientDataJSON":"!!"}}']) {
      const answer = await postForm(flow.jar, flow.page!, '/passkey', { response });
      assert.equal(answer.page!.status, 200);
      assert.equal(errorOf(answer.page!.html), MESSAGES.passkeyRefused);
    }
  });
});

describe('a passkey as the account page’s proof', () => {
  const NOT_ACCEPTED = 'The passkey was not accepted. Try again, or use your password and code.';

  /** The WebAuthn options of the passkey-proof button in the form posting to `…suffix`. */
  function proofOptionsOf(html: string, suffix: string) {
    for (const m of html.matchAll(/<form[^>]*action="([^"]+)"[^>]*>([\s\S]*?)<\/form>/g)) {
      const options = m[2]!.match(/data-passkey-proof data-options="([^"]*)"/)?.[1];
      if (m[1]!.endsWith(suffix) && options) return JSON.parse(unescapeHtml(options));
    }
    return undefined;
  }

  /** A passkey-only person (enrolled with a passkey at sign-in) on /account, with that sign-in's session. */
  async function onAccountPage(device?: SoftAuthenticator) {
    const enrolled = await enrolledWithPasskey(device);
    const url = new URL('/account', server.issuer);
    const { page } = await follow(enrolled.flow.jar, server.issuer, await browse(enrolled.flow.jar, url), url);
    assert.equal(page!.url.pathname, '/account');
    return { ...enrolled, jar: enrolled.flow.jar, page: page! };
  }

  const recoveryLeft = async (id: string) => server.app.secondFactor.recoveryCodesLeft((await server.app.accounts.find(id))!);

  test('a passkey-only person confirms with a passkey, then changes the password: no password, no recovery code used; a replay is refused', async () => {
    const { person, device, jar, page } = await onAccountPage();
    const options = proofOptionsOf(page.html, '/account/sudo');
    assert.ok(options, 'the confirm form offers a passkey proof');
    assert.equal(options.userVerification, 'required');
    assert.deepEqual(options.allowCredentials.map((c: { id: string }) => c.id), [...device.keys.keys()]);
    const before = await recoveryLeft(person.id);
    const response = JSON.stringify(device.get(options));
    const confirmed = await postForm(jar, page, '/account/sudo', { passkey_response: response });
    assert.equal(errorOf(confirmed.page!.html), undefined);
    const changed = await postForm(jar, confirmed.page!, '/account/password', { new_password: 'a brand new passphrase' });
    assert.match(changed.page!.html, /Your password was changed/);
    assert.ok(await server.app.accounts.authenticate(person.email, 'a brand new passphrase'), 'the new password works');
    assert.equal(await recoveryLeft(person.id), before, 'no recovery code used');
    assert.ok(server.logs.some((l) => l.event === 'passkey_used' && l.accountId === person.id && l.as === 'proof' && l.userVerified === true));

    const replay = await browse(jar, new URL('/account/sudo', server.issuer), { form: { _csrf: hiddenField(changed.page!.html, '_csrf')!, passkey_response: response } });
    const replayed = await follow(jar, server.issuer, replay, new URL('/account/sudo', server.issuer));
    assert.equal(errorOf(replayed.page!.html), NOT_ACCEPTED, `${replayed.page!.status} ${replayed.page!.url} ${replayed.page!.html.slice(0, 3000)}`);
  });

  test('another person’s passkey, and one without user verification, do not prove who you are', async () => {
    const { person, jar, page } = await onAccountPage();
    const other = await enrolledWithPasskey();
    const options = proofOptionsOf(page.html, '/account/sudo');
    const theirs = await postForm(jar, page, '/account/sudo', { passkey_response: JSON.stringify(other.device.get(options, { keyId: [...other.device.keys.keys()][0] })) });
    assert.equal(errorOf(theirs.page!.html), NOT_ACCEPTED);
    assert.equal(formAction(theirs.page!.html, '/account/password'), undefined, 'not in sudo mode');
    assert.ok(server.logs.some((l) => l.event === 'second_factor_failed' && l.accountId === person.id && l.method === 'passkey' && l.reason === 'unknown'));

    const unverified = await onAccountPage(new SoftAuthenticator({ origin: server.issuer, userVerification: false }));
    const refused = await postForm(unverified.jar, unverified.page, '/account/sudo', {
      passkey_response: JSON.stringify(unverified.device.get(proofOptionsOf(unverified.page.html, '/account/sudo'))),
    });
    assert.equal(errorOf(refused.page!.html), NOT_ACCEPTED);
    assert.equal(formAction(refused.page!.html, '/account/password'), undefined, 'not in sudo mode');
  });

  test('bad passkey proofs count in the lockout: then even a good one is refused (429)', async () => {
    const { person, device, jar, page: first } = await onAccountPage();
    let page = first;
    for (let i = 0; i < 10; i += 1) {
      const bad = device.get(proofOptionsOf(page.html, '/account/sudo'), { origin: 'http://evil.example' });
      page = (await postForm(jar, page, '/account/sudo', { passkey_response: JSON.stringify(bad) })).page!;
    }
    const good = await postForm(jar, page, '/account/sudo', { passkey_response: JSON.stringify(device.get(proofOptionsOf(page.html, '/account/sudo'))) });
    assert.equal(good.page!.status, 429);
    assert.equal(errorOf(good.page!.html), MESSAGES.locked);
    assert.equal(formAction(good.page!.html, '/account/password'), undefined, 'not in sudo mode');
    assert.ok(server.logs.some((l) => l.event === 'lockout_started' && l.accountId === person.id && l.factor === 'passkey'));
    await server.app.lockout.unlock({ account: person.email });
  });
});
