import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { adminApiUri } from '../src/admin/api.ts';
import { isEmailVerified } from '../src/accounts/accounts.ts';
import { browse, CookieJar, endpoints, follow, formAction, hiddenField, signIn, type Followed } from './helpers/flow.ts';
import { linkIn, startSmtpCatcher, type SmtpCatcher } from './helpers/smtp.ts';
import { runCli } from './helpers/cli.ts';
import type { TestServer } from './helpers/server.ts';
import type { TestRedis } from './helpers/redis.ts';
import { useWorld, type World } from './helpers/world.ts';

/**
 * Invitations (issue 19 flow 3), over real SMTP on loopback: an operator invites an address from the
 * CLI (on Redis, or remote through the admin API) or the admin API; the mailed link opens a page that
 * creates the account, its address verified, and the person then signs in as anyone does (MFA_POLICY
 * required: they set up a second step). Links are single use; revoked and replaced ones are dead.
 */
let server: TestServer;
let world: World;
let redis: TestRedis;
const smtp: SmtpCatcher = await startSmtpCatcher();
after(() => smtp.stop());
useWorld({ store: 'redis', env: { SMTP_URL: smtp.url }, server: { mail: { pollMs: 50 } } }, (setup) => ({ server, world, redis } = setup));

const PASSWORD = 'a long invited passphrase';
const address = () => `inv-${Math.random().toString(36).slice(2)}@example.org`;
const noValidation = async () => {};

async function nthInvitation(email: string, n: number): Promise<URL> {
  await smtp.waitFor(email, /invited/);
  for (let i = 0; i < 250 && smtp.to(email).length < n; i += 1) await new Promise((r) => setTimeout(r, 20));
  const mails = smtp.to(email);
  assert.equal(mails.length, n, `${n} invitation(s) to ${email}`);
  return linkIn(mails.at(-1)!, '/invitation');
}

async function open(link: URL, jar = new CookieJar()): Promise<Followed> {
  return follow(jar, server.issuer, await browse(jar, link), link);
}

/** Opens the link and posts the password form; resolves the final page. */
async function accept(link: URL, password = PASSWORD): Promise<Followed> {
  const jar = new CookieJar();
  const page = await open(link, jar);
  if (page.page?.status !== 200) return page;
  const url = new URL(formAction(page.page.html, '/invitation')!, page.page.url);
  const form = { _csrf: hiddenField(page.page.html, '_csrf')!, token: hiddenField(page.page.html, 'token')!, new_password: password };
  return follow(jar, server.issuer, await browse(jar, url, { form }), url);
}

async function adminToken() {
  const c = await server.app.registry.createClient({ name: 'ops invitations', grants: ['client_credentials'], scope: 'latchkey:admin' }, noValidation);
  const res = await endpoints(server.issuer).token({ clientId: c.clientId, secret: c.secret! }, { grant_type: 'client_credentials', scope: 'latchkey:admin', resource: adminApiUri(server.issuer) });
  return String(res.body.access_token);
}

async function api(token: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${server.issuer}/admin/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: (await res.json()) };
}

const cli = (args: string[]) => runCli(args, { env: { REDIS_URL: redis.url, ISSUER: server.issuer } });

test('CLI: invite, list, accept once (account verified, signs in and enrolls a second factor), never a token in the audit', async () => {
  const email = address();
  const invited = await cli(['user', 'invite', email, '--name', 'Grace Hopper', '--json']);
  assert.equal(invited.code, 0, invited.stderr);
  assert.equal(JSON.parse(invited.stdout).invitation.email, email);
  assert.match(invited.stderr, /"event":"invitation_sent"/);

  const listed = await cli(['user', 'invitations', '--json']);
  assert.ok(JSON.parse(listed.stdout).invitations.some((i: { email: string; name: string }) => i.email === email && i.name === 'Grace Hopper'));

  const link = await nthInvitation(email, 1);
  const token = link.searchParams.get('token')!;
  assert.ok(!invited.stderr.includes(token) && !invited.stdout.includes(token) && !listed.stdout.includes(token), 'the token is never printed');

  // Opening the link uses nothing up; a refused password leaves it usable.
  const page = await open(link);
  assert.equal(page.page?.status, 200);
  assert.match(page.page.html, new RegExp(email.replace('.', '\\.')));
  const weak = await accept(link, 'short');
  assert.equal(weak.page?.status, 400);
  assert.equal(await server.app.accounts.findByEmail(email), undefined);

  const done = await accept(link);
  assert.equal(done.page?.status, 200, done.page?.html);
  assert.match(done.page.html, /href="\/account"/);
  const account = await server.app.accounts.findByEmail(email);
  assert.ok(account);
  assert.equal(isEmailVerified(account), true);
  assert.equal(account.name, 'Grace Hopper');
  assert.equal(account.admin, undefined);

  const again = await accept(link);
  assert.equal(again.page?.status, 400, 'a used link is refused');
  assert.match(again.page.html, /expired or was already used/);
  assert.equal(JSON.parse((await cli(['user', 'invitations', '--json'])).stdout).invitations.some((i: { email: string }) => i.email === email), false, 'accepted: no longer pending');

  const signedIn = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid', user: { email, password: PASSWORD } });
  assert.ok(signedIn.enrollPage, 'MFA_POLICY=required: a second factor is set up at the first sign-in');
  assert.ok(signedIn.code);

  // An address with an account cannot be invited (typed refusal, exit 2); unknown invitations are refused too.
  const taken = await cli(['user', 'invite', email]);
  assert.equal(taken.code, 2);
  assert.match(taken.stderr, /already exists/);
  const unknown = await cli(['user', 'revoke-invitation', address()]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /no pending invitation/);
});

test('CLI: revoke kills the link; resend kills the old link and the new one works; remote mode through the admin API', async () => {
  const revokedEmail = address();
  assert.equal((await cli(['user', 'invite', revokedEmail])).code, 0);
  const revokedLink = await nthInvitation(revokedEmail, 1);
  const revoked = await cli(['user', 'revoke-invitation', revokedEmail]);
  assert.equal(revoked.code, 0, revoked.stderr);
  assert.match(revoked.stderr, /"event":"invitation_revoked"/);
  assert.equal((await open(revokedLink)).page?.status, 400);
  assert.equal((await accept(revokedLink)).page?.status, 400);
  assert.equal(await server.app.accounts.findByEmail(revokedEmail), undefined);

  const token = await adminToken();
  const remote = (args: string[]) => runCli(['--server', server.issuer, '--token', token, ...args], { env: {} });
  const email = address();
  const invited = await remote(['user', 'invite', email, '--admin', '--json']);
  assert.equal(invited.code, 0, invited.stderr);
  assert.equal(JSON.parse(invited.stdout).invitation.admin, true);
  const first = await nthInvitation(email, 1);
  const resent = await remote(['user', 'resend-invitation', email]);
  assert.equal(resent.code, 0, resent.stderr);
  const second = await nthInvitation(email, 2);
  assert.notEqual(first.searchParams.get('token'), second.searchParams.get('token'));
  assert.equal((await accept(first)).page?.status, 400, 'the old link died with the resend');
  assert.equal((await accept(second)).page?.status, 200);
  assert.equal((await server.app.accounts.findByEmail(email))?.admin, true);
});

test('admin API: invite, list, resend, revoke round trip; bad inputs are problem+json 4xx', async () => {
  const token = await adminToken();
  const email = address();
  const created = await api(token, 'POST', '/invitations', { email, name: 'Ada' });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  assert.deepEqual(Object.keys(created.body.invitation).sort(), ['admin', 'email', 'expires', 'invited', 'name']);
  // INVITATION_TTL_SECONDS defaults to 7 days.
  assert.equal(Date.parse(created.body.invitation.expires) - Date.parse(created.body.invitation.invited), 7 * 24 * 3600 * 1000);
  const first = await nthInvitation(email, 1);
  const listed = await api(token, 'GET', '/invitations');
  assert.equal(listed.status, 200);
  assert.ok(listed.body.invitations.some((i: { email: string }) => i.email === email));
  assert.ok(!JSON.stringify(listed.body).includes(first.searchParams.get('token')!));

  assert.equal((await api(token, 'POST', `/invitations/${encodeURIComponent(email)}/resend`)).status, 200);
  const second = await nthInvitation(email, 2);
  assert.equal((await open(first)).page?.status, 400);
  assert.equal((await api(token, 'DELETE', `/invitations/${encodeURIComponent(email)}`)).status, 200);
  assert.equal((await open(second)).page?.status, 400, 'revoked: the new link is dead too');
  assert.equal((await api(token, 'GET', '/invitations')).body.invitations.some((i: { email: string }) => i.email === email), false);

  for (const [body, status, code] of [
    [{ email: 'not an address' }, 400, 'email_invalid'],
    [{}, 400, 'required'],
    [{ email: address(), password: 'x' }, 400, undefined],
    [{ email: world.user.email }, 409, 'account_exists'],
  ] as const) {
    const refused = await api(token, 'POST', '/invitations', body);
    assert.equal(refused.status, status, JSON.stringify(refused.body));
    assert.match(refused.type, /^application\/problem\+json/);
    if (code) assert.equal(refused.body.code, code);
  }
  const missing = await api(token, 'DELETE', `/invitations/${encodeURIComponent(address())}`);
  assert.equal(missing.status, 404);
  assert.equal(missing.body.code, 'invitation_not_found');
  assert.equal((await api(token, 'POST', `/invitations/${encodeURIComponent(address())}/resend`)).status, 404);
});

test('the accept page refuses a forged token and a post without the link\'s CSRF token', async () => {
  assert.equal((await open(new URL(`/invitation?token=${'A'.repeat(43)}`, server.issuer))).page?.status, 400);
  assert.equal((await open(new URL('/invitation', server.issuer))).page?.status, 400);
  const email = address();
  await server.app.ops.inviteUser({ kind: 'cli' }, { email });
  const link = await nthInvitation(email, 1);
  const jar = new CookieJar();
  const url = new URL('/invitation', server.issuer);
  const forged = await follow(jar, server.issuer, await browse(jar, url, { form: { token: link.searchParams.get('token')!, new_password: PASSWORD, _csrf: 'nope' } }), url);
  assert.equal(forged.page?.status, 400);
  assert.equal(await server.app.accounts.findByEmail(email), undefined);
  assert.equal((await accept(link)).page?.status, 200, 'the link still works after the refused post');
});
