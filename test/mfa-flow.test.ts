import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { totpCodeAt } from '../src/accounts/totp.ts';
import { ACR_MFA, ACR_PASSWORD } from '../src/signin/policy.ts';
import { MESSAGES } from '../src/signin/messages.ts';
import { SignInSteps } from '../src/signin/steps.ts';
import { basic, browse, CookieJar, endpoints, follow, formAction, hiddenField, signIn, signInAndRedeem, type Page } from './helpers/flow.ts';
import { type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { nextTotpCode, totpClock, totpSecrets, wrongTotpCode } from './helpers/totp.ts';
import { enrollTotp, REDIRECT_URI, useWorld, type World } from './helpers/world.ts';

/**
 * The second factor through the sign-in pages, at the protocol level (fetch, no JavaScript), under the
 * default MFA_POLICY=required and under MFA_POLICY=optional; the lockout; the ID token's acr and amr.
 */
let redis: TestRedis;
let server: TestServer;
let world: World;
let people = 0;

useWorld((setup) => ({ redis, server, world } = setup));

const PASSWORD = 'correct horse battery staple';

/** A new person without a second factor. */
async function newPerson(on: TestServer = server) {
  people += 1;
  const email = `person-${people}-${Date.now()}@example.org`;
  const account = await on.app.accounts.create({ email, password: PASSWORD });
  return { id: account.id, email, password: PASSWORD };
}

function claimsOf(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

function errorOf(html: string): string | undefined {
  return html.match(/<p class="error"[^>]*>([^<]*)<\/p>/)?.[1];
}

/** Posts a form found on `page` (by the end of its action) and follows redirects on the issuer. */
async function post(jar: CookieJar, page: Page, suffix: string, fields: Record<string, string>) {
  const action = formAction(page.html, suffix);
  assert.ok(action, `a form posting to …${suffix}`);
  const url = new URL(action, page.url);
  const res = await browse(jar, url, { form: { _csrf: hiddenField(page.html, '_csrf')!, ...fields } });
  return { res, followed: await follow(jar, server.issuer, res, url) };
}

describe('MFA_POLICY=required (the default)', () => {
  it('takes an account without a factor through enrollment: QR code, key, wrong code refused, recovery codes once', async () => {
    const person = await newPerson();
    const flow = await signIn({ issuer: server.issuer, client: world.firstParty, user: person, scope: 'openid', secondFactor: 'stop' });
    const page = flow.enrollPage;
    assert.ok(page, 'the enrollment page follows the password');
    assert.equal(flow.code, undefined);
    assert.match(page.html, /<img class="qr" src="data:image\/svg\+xml;base64,[A-Za-z0-9+/=]+"/);
    const svg = Buffer.from(page.html.match(/base64,([A-Za-z0-9+/=]+)"/)![1]!, 'base64').toString('utf8');
    assert.match(svg, /^<svg/);
    const key = page.html.match(/<code class="key" id="totp-key">([^<]+)<\/code>/)![1]!.replaceAll(' ', '');
    assert.match(key, /^[A-Z2-7]{32}$/);
    assert.match(page.html, /autocomplete="one-time-code"/);
    assert.match(page.html, /<label for="code">/);

    const wrong = await post(flow.jar, page, '/enroll', { code: await wrongTotpCode(server.issuer, key) });
    assert.equal(errorOf(wrong.followed.page!.html), MESSAGES.wrongCode);
    assert.ok(formAction(wrong.followed.page!.html, '/enroll'), 'the enrollment page again');
    assert.equal((await server.app.accounts.find(person.id))!.mfa, undefined, 'a wrong code does not enroll');

    const right = await post(flow.jar, wrong.followed.page!, '/enroll', { code: await totpCodeAt(key, totpClock.now()) });
    const codesPage = right.followed.page!;
    const codes = [...codesPage.html.matchAll(/<li><code>([0-9a-z-]+)<\/code><\/li>/g)].map((m) => m[1]);
    assert.equal(codes.length, 10, 'ten recovery codes');
    assert.match(codesPage.html, /only now/);
    assert.ok((await server.app.accounts.find(person.id))!.mfa, 'enrolled');

    // A reload does not show them again.
    const reload = await browse(flow.jar, codesPage.url);
    const again = await reload.text();
    assert.equal([...again.matchAll(/<li><code>/g)].length, 0, 'the codes are shown once');

    const done = await post(flow.jar, codesPage, '/saved', {});
    assert.ok(done.followed.leftTo, 'back to the client after "I have saved them"');
    const tokens = await endpoints(server.issuer).redeem(world.firstParty, done.followed.leftTo.searchParams.get('code')!, flow.verifier);
    const idToken = claimsOf(tokens.body.id_token as string);
    assert.deepEqual(idToken.amr, ['pwd', 'otp', 'mfa']);
    assert.equal(idToken.acr, ACR_MFA);
  });

  it('asks an enrolled person for a code: labelled one-time-code field, a recovery-code link; amr and acr in the ID token', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.firstParty, user: world.user, scope: 'openid', secondFactor: 'stop' });
    const page = flow.mfaPage!;
    assert.ok(page, 'the second-factor page follows the password');
    assert.match(page.html, /<label for="code">/);
    assert.match(page.html, /<input id="code" name="code"[^>]*inputmode="numeric"[^>]*autocomplete="one-time-code"/);
    assert.match(page.html, /<a href="\/interaction\/[^"]+\/recovery">Use a recovery code<\/a>/);

    const wrong = await post(flow.jar, page, '/mfa', { code: await wrongTotpCode(server.issuer, world.user.totpSecret) });
    assert.equal(errorOf(wrong.followed.page!.html), MESSAGES.wrongCode);
    const right = await post(flow.jar, wrong.followed.page!, '/mfa', { code: await nextTotpCode(server.issuer, world.user.totpSecret) });
    assert.ok(right.followed.leftTo, 'signed in');
    const tokens = await endpoints(server.issuer).redeem(world.firstParty, right.followed.leftTo.searchParams.get('code')!, flow.verifier);
    const idToken = claimsOf(tokens.body.id_token as string);
    assert.deepEqual(idToken.amr, ['pwd', 'otp', 'mfa']);
    assert.equal(idToken.acr, ACR_MFA);
  });

  it('checks a code against the account the interaction names now, though this node last saw it name another (the step moved on another node)', async () => {
    const first = await newPerson();
    const second = await newPerson();
    const secrets = [(await enrollTotp(server, first)).totpSecret, (await enrollTotp(server, second)).totpSecret];
    const flow = await signIn({ issuer: server.issuer, client: world.firstParty, user: first, scope: 'openid', secondFactor: 'stop' });
    const page = flow.mfaPage!;
    const uid = new URL(page.url).pathname.split('/')[2]!;
    // Another node's sign-in steps (its own memory) moves the interaction on to the second person.
    await new SignInSteps(server.store).set(uid, { name: 'second-factor', accountId: second.id, subject: second.email }, Math.floor(Date.now() / 1000) + 600);

    const firstCode = await post(flow.jar, page, '/mfa', { code: await nextTotpCode(server.issuer, secrets[0]!) });
    assert.equal(errorOf(firstCode.followed.page!.html), MESSAGES.wrongCode, 'the first person’s code is not the code of the account the step names');
    const secondCode = await post(flow.jar, firstCode.followed.page!, '/mfa', { code: await nextTotpCode(server.issuer, secrets[1]!) });
    assert.ok(secondCode.followed.leftTo, 'signed in');
    const tokens = await endpoints(server.issuer).redeem(world.firstParty, secondCode.followed.leftTo.searchParams.get('code')!, flow.verifier);
    assert.equal(claimsOf(tokens.body.id_token as string).sub, second.id);
  });

  it('accepts one of two parallel submissions of the same code (two sign-ins, one code)', async () => {
    const person = await newPerson();
    const { totpSecret } = await enrollTotp(server, person);
    const [a, b] = await Promise.all([1, 2].map(() => signIn({ issuer: server.issuer, client: world.firstParty, user: person, scope: 'openid', secondFactor: 'stop' })));
    const code = await nextTotpCode(server.issuer, totpSecret);
    const results = await Promise.all(
      [a!, b!].map(async (flow) => {
        const url = new URL(formAction(flow.mfaPage!.html, '/mfa')!, flow.mfaPage!.url);
        const res = await browse(flow.jar, url, { form: { _csrf: hiddenField(flow.mfaPage!.html, '_csrf')!, code } });
        return { status: res.status, html: res.status === 200 ? await res.text() : '' };
      }),
    );
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 303], 'one redirect onwards, one page again');
    assert.equal(errorOf(results.find((r) => r.status === 200)!.html), MESSAGES.usedCode);
  });

  it('accepts a recovery code once', async () => {
    const person = await newPerson();
    const { recoveryCodes } = await enrollTotp(server, person);
    const first = await signInAndRedeem({ issuer: server.issuer, client: world.firstParty, user: person, scope: 'openid', secondFactor: { recoveryCode: recoveryCodes[3]!.toUpperCase() } });
    assert.deepEqual(claimsOf(first.tokens.id_token!).amr, ['pwd', 'otp', 'mfa']);
    const second = await signIn({ issuer: server.issuer, client: world.firstParty, user: person, scope: 'openid', secondFactor: { recoveryCode: recoveryCodes[3]! } });
    assert.equal(second.code, undefined);
    assert.equal(errorOf(second.page!.html), MESSAGES.wrongRecoveryCode);
    assert.ok(formAction(second.page!.html, '/recovery'), 'the recovery-code page again');
  });

  it('single sign-on reuses the session with its second factor: prompt=none gets amr pwd, otp, mfa', async () => {
    const { flow } = await signInAndRedeem({ issuer: server.issuer, client: world.firstParty, user: world.user, scope: 'openid' });
    const again = await signInAndRedeem({ issuer: server.issuer, client: world.firstParty, scope: 'openid', jar: flow.jar, params: { prompt: 'none' } });
    assert.deepEqual(claimsOf(again.tokens.id_token!).amr, ['pwd', 'otp', 'mfa']);
  });
});

describe('lockout', () => {
  async function attempt(email: string, password: string) {
    const flow = await signIn({ issuer: server.issuer, client: world.firstParty, user: { email, password }, scope: 'openid', secondFactor: 'stop' });
    // The login post is the second response of the chain's last segment: read its status from the page.
    return { status: flow.page?.status, retryAfter: flow.page?.headers.get('retry-after'), message: flow.page ? errorOf(flow.page.html) : undefined, flow };
  }

  it('locks an account after 10 wrong passwords: 429, Retry-After, even the right password; an unknown account alike', async () => {
    const person = await newPerson();
    const unknown = `nobody-${Date.now()}@example.org`;
    for (let i = 1; i <= 9; i += 1) {
      const known = await attempt(person.email, 'wrong password');
      const none = await attempt(unknown, 'wrong password');
      assert.equal(known.message, MESSAGES.wrongPassword);
      assert.equal(none.message, known.message);
      assert.equal(none.status, known.status);
    }
    const tenth = await attempt(person.email, 'wrong password');
    const tenthUnknown = await attempt(unknown, 'wrong password');
    for (const r of [tenth, tenthUnknown]) {
      assert.equal(r.status, 429);
      assert.equal(r.message, MESSAGES.locked);
      assert.ok(Number(r.retryAfter) > 0 && Number(r.retryAfter) <= 60, `Retry-After: ${r.retryAfter}`);
    }
    const right = await attempt(person.email, person.password);
    assert.equal(right.status, 429, 'the right password is refused while locked');
    assert.equal(right.message, MESSAGES.locked);
    assert.equal(right.flow.enrollPage, undefined);

    // An audit event and a counter; the log names the account by its id, an unknown one by a keyed digest.
    const started = server.logs.filter((l) => l.event === 'lockout_started' && l.accountId === person.id);
    assert.equal(started.length, 1, 'one lockout_started event for the account');
    assert.equal(started[0]!.factor, 'password');
    const unknownStarted = server.logs.filter((l) => l.event === 'lockout_started' && l.subject === 'account' && typeof l.emailDigest === 'string');
    assert.equal(unknownStarted.length, 1, 'the unknown account is locked alike');
    assert.ok(!server.logs.some((l) => JSON.stringify(l).includes(unknown)), 'what was typed as the email is in no log line');
    const metrics = await (await fetch(new URL('/metrics', server.issuer))).text();
    assert.match(metrics, /latchkey_lockouts_total\{scope="signin",subject="account"\} [2-9]/);
    assert.match(metrics, /latchkey_signin_failures_total\{reason="locked"\} [1-9]/);
    assert.match(metrics, /latchkey_signin_failures_total\{reason="wrong"\} [1-9]/);

    // The operator's `latchkey user unlock`.
    assert.equal(await server.app.lockout.unlock({ account: person.email }), true);
    assert.ok(server.logs.some((l) => l.event === 'lockout_ended' && l.accountId === person.id && l.reason === 'unlocked'));
    const after = await attempt(person.email, person.password);
    assert.ok(after.flow.enrollPage, 'signs in after the unlock');
  });

  it('counts wrong TOTP codes apart, and locks the account: the right code is refused too', async () => {
    const person = await newPerson();
    const { totpSecret } = await enrollTotp(server, person);
    const flow = await signIn({ issuer: server.issuer, client: world.firstParty, user: person, scope: 'openid', secondFactor: 'stop' });
    let page = flow.mfaPage!;
    let last: Awaited<ReturnType<typeof post>> | undefined;
    for (let i = 1; i <= 10; i += 1) {
      last = await post(flow.jar, page, '/mfa', { code: await wrongTotpCode(server.issuer, totpSecret) });
      page = last.followed.page!;
    }
    assert.equal(last!.res.status, 429);
    assert.ok(Number(last!.res.headers.get('retry-after')) > 0);
    assert.equal(errorOf(page.html), MESSAGES.locked);
    const right = await post(flow.jar, page, '/mfa', { code: await nextTotpCode(server.issuer, totpSecret) });
    assert.equal(right.res.status, 429);
    assert.equal(right.followed.leftTo, undefined);
    // The account's lock holds for the password too.
    assert.equal((await attempt(person.email, person.password)).status, 429);
    await server.app.lockout.unlock({ account: person.email });
  });
});

describe('client authentication at the token endpoints', () => {
  it('is throttled per source (client id at an IP): 429 with Retry-After and an RFC 6749 body, then even the right secret from there', async () => {
    const app = await world.newApp('Throttled app');
    const token = (secret: string) =>
      fetch(new URL('/token', server.issuer), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(app.clientId, secret) },
        body: 'grant_type=refresh_token&refresh_token=nothing',
      });
    for (let i = 1; i <= 10; i += 1) {
      const res = await token('not-the-secret');
      assert.equal(res.status, 401, `attempt ${i}`);
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_client');
    }
    const locked = await token(app.secret);
    assert.equal(locked.status, 429);
    assert.ok(Number(locked.headers.get('retry-after')) > 0);
    const body = (await locked.json()) as { error: string; error_description: string };
    assert.equal(body.error, 'invalid_client');
    assert.match(body.error_description, /try again later/);
    const intro = await fetch(new URL('/token/introspection', server.issuer), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(app.clientId, app.secret) },
      body: 'token=x',
    });
    assert.equal(intro.status, 429, 'introspection too');
    // Another client is not affected.
    const other = await endpoints(server.issuer).introspect(world.shop, 'x');
    assert.equal(other.status, 200);
  });
});

describe('MFA_POLICY=optional', () => {
  let optional: TestServer;
  let optionalWorld: { firstParty: { clientId: string; secret: string; redirectUri: string }; strict: { clientId: string; secret: string; redirectUri: string } };

  before(async () => {
    optional = await startServer({ redisUrl: redis.url, env: { MFA_POLICY: 'optional' } });
    const create = async (name: string, requireMfa: boolean) => {
      const c = await optional.app.registry.createClient(
        { name, grants: ['authorization_code'], redirectUris: [REDIRECT_URI], scope: 'openid', firstParty: true, requireMfa },
        async () => {},
      );
      return { clientId: c.clientId, secret: c.secret!, redirectUri: REDIRECT_URI };
    };
    optionalWorld = { firstParty: await create('Optional app', false), strict: await create('Strict app', true) };
  });

  after(async () => {
    await optional?.close();
  });

  it('signs an account without a factor in with its password: amr pwd, acr urn:latchkey:pwd', async () => {
    const person = await newPerson(optional);
    const { flow, tokens } = await signInAndRedeem({ issuer: optional.issuer, client: optionalWorld.firstParty, user: person, scope: 'openid' });
    assert.equal(flow.enrollPage, undefined);
    assert.equal(flow.mfaPage, undefined);
    const idToken = claimsOf(tokens.id_token!);
    assert.deepEqual(idToken.amr, ['pwd']);
    assert.equal(idToken.acr, ACR_PASSWORD);
  });

  it('asks an enrolled account for its code', async () => {
    const person = await newPerson(optional);
    await enrollTotp(optional, person);
    const { flow, tokens } = await signInAndRedeem({ issuer: optional.issuer, client: optionalWorld.firstParty, user: person, scope: 'openid' });
    assert.ok(flow.mfaPage);
    assert.deepEqual(claimsOf(tokens.id_token!).amr, ['pwd', 'otp', 'mfa']);
  });

  it('enrolls when the client demands a factor (--require-mfa) or the request does (acr_values=urn:latchkey:mfa)', async () => {
    const person = await newPerson(optional);
    // A password-only session first: the demanding client does not accept it.
    const { flow } = await signInAndRedeem({ issuer: optional.issuer, client: optionalWorld.firstParty, user: person, scope: 'openid' });
    const silent = await signIn({ issuer: optional.issuer, client: optionalWorld.strict, scope: 'openid', jar: flow.jar, params: { prompt: 'none' } });
    assert.equal(silent.callback?.searchParams.get('error'), 'login_required');
    const strict = await signInAndRedeem({ issuer: optional.issuer, client: optionalWorld.strict, user: person, scope: 'openid', jar: flow.jar });
    assert.ok(strict.flow.enrollPage, 'enrollment, for the client that requires a second factor');
    assert.equal(claimsOf(strict.tokens.id_token!).acr, ACR_MFA);

    const other = await newPerson(optional);
    const asked = await signInAndRedeem({ issuer: optional.issuer, client: optionalWorld.firstParty, user: other, scope: 'openid', params: { acr_values: ACR_MFA } });
    assert.ok(asked.flow.enrollPage, 'enrollment, for the request that asks for urn:latchkey:mfa');
    assert.deepEqual(claimsOf(asked.tokens.id_token!).amr, ['pwd', 'otp', 'mfa']);
    assert.ok(totpSecrets.get(other.email));
  });
});
