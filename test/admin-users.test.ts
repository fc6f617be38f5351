import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { adminApiUri } from '../src/admin/api.ts';
import { isEmailVerified } from '../src/accounts/accounts.ts';
import { browse, CookieJar, endpoints, follow, formAction, hiddenField, type Followed } from './helpers/flow.ts';
import { linkIn, startSmtpCatcher, type SmtpCatcher } from './helpers/smtp.ts';
import { runCli } from './helpers/cli.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import type { TestRedis } from './helpers/redis.ts';
import { useWorld } from './helpers/world.ts';

/**
 * People as an operator manages them, through Operations from the admin API and the CLI (the console
 * is test/e2e/admin-users.test.ts): a person made with a one-time set-password link, name and address
 * changed (the new address unverified and mailed a link, the old one told), the normal reset mail sent
 * by an operator, and the security notices of operator-made changes, over real SMTP on loopback.
 * Bad input is a problem+json 4xx, never a 5xx.
 */
let server: TestServer;
let redis: TestRedis;
const smtp: SmtpCatcher = await startSmtpCatcher();
after(() => smtp.stop());
useWorld({ store: 'redis', env: { SMTP_URL: smtp.url }, server: { mail: { pollMs: 50 } } }, (setup) => ({ server, redis } = setup));

const PASSWORD = 'a long operator passphrase';
const address = (name = 'p') => `${name}-${Math.random().toString(36).slice(2)}@example.org`;
const noValidation = async () => {};

async function adminToken() {
  const c = await server.app.registry.createClient({ name: 'ops users', grants: ['client_credentials'], scope: 'latchkey:admin' }, noValidation);
  const res = await endpoints(server.issuer).token({ clientId: c.clientId, secret: c.secret! }, { grant_type: 'client_credentials', scope: 'latchkey:admin', resource: adminApiUri(server.issuer) });
  return String(res.body.access_token);
}

async function api(token: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${server.issuer}/admin/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: (await res.json()) };
}

const cli = (args: string[], stdin?: string) => runCli(args, { env: { REDIS_URL: redis.url, ISSUER: server.issuer }, ...(stdin !== undefined ? { stdin } : {}) });

/** Opens a set-password (reset) link and posts the form; resolves the final page. */
async function setPasswordThrough(on: TestServer, link: URL, password: string): Promise<Followed> {
  const jar = new CookieJar();
  const page = await follow(jar, on.issuer, await browse(jar, link), link);
  if (page.page?.status !== 200) return page;
  const url = new URL(formAction(page.page.html, '/password/reset')!, page.page.url);
  const form = { _csrf: hiddenField(page.page.html, '_csrf')!, token: hiddenField(page.page.html, 'token')!, new_password: password };
  return follow(jar, on.issuer, await browse(jar, url, { form }), url);
}

test('API: a person made with a one-time set-password link sets their password once; the address stays unverified', async () => {
  const token = await adminToken();
  const email = address('link');
  const created = await api(token, 'POST', '/users', { email, name: 'Lin', set_password_link: true });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const link = new URL(created.body.set_password_link);
  assert.equal(link.pathname, '/password/reset');
  assert.ok(Date.parse(created.body.set_password_link_expires) > Date.now() + 24 * 3600_000, 'it works for the invitation lifetime (7 days by default)');
  const shown = await api(token, 'GET', `/users/${created.body.user.id}`);
  assert.ok(!JSON.stringify(shown.body).includes(link.searchParams.get('token')!), 'the link is in the creation answer only');
  assert.ok(!server.logs.some((l) => JSON.stringify(l).includes(link.searchParams.get('token')!)), 'never logged');

  const done = await setPasswordThrough(server, link, PASSWORD);
  assert.equal(done.page?.status, 200);
  assert.match(done.page.html, /Password changed/);
  const account = await server.app.accounts.authenticate(email, PASSWORD);
  assert.ok(account, 'the password they chose works');
  assert.equal(isEmailVerified(account), false, 'a handed-over link proves no address');
  const again = await setPasswordThrough(server, link, 'another long passphrase');
  assert.equal(again.page?.status, 400, 'the link works once');
  assert.equal(await server.app.accounts.authenticate(email, 'another long passphrase'), undefined);
});

test('API: creating a person needs a password or a link, not both nor neither (400 problem+json naming the field)', async () => {
  const token = await adminToken();
  for (const body of [{ email: address() }, { email: address(), password: PASSWORD, set_password_link: true }, { email: address(), set_password_link: 'yes' }, { email: address(), set_password_link: false }]) {
    const res = await api(token, 'POST', '/users', body);
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.match(res.type, /^application\/problem\+json/);
  }
});

test('API: name and address changed; the new address is unverified and mailed a link, the old one gets the notice; bad input is a 4xx problem', async () => {
  const token = await adminToken();
  const email = address('old');
  const person = await server.app.ops.createUser({ kind: 'cli' }, { email, password: PASSWORD, name: 'Ada' });
  const id = person.user.id;
  const to = address('new');
  const changed = await api(token, 'PATCH', `/users/${id}`, { name: 'Ada L.', email: to.toUpperCase() });
  assert.equal(changed.status, 200, JSON.stringify(changed.body));
  assert.deepEqual(changed.body.changed, ['name', 'email']);
  assert.equal(changed.body.user.email, to);
  assert.equal(changed.body.user.email_verified, false);
  assert.equal(changed.body.verification_sent, true);
  const verify = await smtp.waitFor(to, /confirm|verify/i);
  const notice = await smtp.waitFor(email, /your email address was changed/);
  assert.match(notice.text ?? '', /An administrator made this change/);
  assert.ok(await server.app.accounts.authenticate(to, PASSWORD), 'they sign in with the new address');
  assert.equal(await server.app.accounts.findByEmail(email), undefined, 'the old address is free');
  // The mailed link proves the new address.
  const link = linkIn(verify, '/email/verify');
  const jar = new CookieJar();
  const page = await follow(jar, server.issuer, await browse(jar, link), link);
  const url = new URL(formAction(page.page!.html, '/email/verify')!, page.page!.url);
  await follow(jar, server.issuer, await browse(jar, url, { form: { _csrf: hiddenField(page.page!.html, '_csrf')!, token: hiddenField(page.page!.html, 'token')! } }), url);
  assert.equal(isEmailVerified((await server.app.accounts.find(id))!), true);

  assert.deepEqual((await api(token, 'PATCH', `/users/${id}`, { name: null })).body.changed, ['name'], 'null removes the name');
  assert.equal((await server.app.accounts.find(id))!.name, undefined);
  assert.deepEqual((await api(token, 'PATCH', `/users/${id}`, { email: to })).body.changed, [], 'the same address changes nothing');

  const other = await server.app.ops.createUser({ kind: 'cli' }, { email: address('taken'), password: PASSWORD });
  const bad: [unknown, number][] = [
    [{}, 400], [{ email: 'not an address' }, 400], [{ email: '' }, 400], [{ name: 42 }, 400], [{ name: 'x'.repeat(201) }, 400], [{ admin: true }, 400], [[], 400], ['"text"', 400],
    [{ email: other.user.email }, 409],
  ];
  for (const [body, status] of bad) {
    const res = await api(token, 'PATCH', `/users/${id}`, body);
    assert.equal(res.status, status, `${JSON.stringify(body)}: ${JSON.stringify(res.body)}`);
    assert.match(res.type, /^application\/problem\+json/);
  }
  assert.equal((await api(token, 'PATCH', '/users/00000000-0000-0000-0000-000000000000', { name: 'x' })).status, 404);
  assert.equal((await server.app.accounts.find(id))!.email, to, 'nothing changed');
  assert.equal(server.logs.filter((l) => Number(l.level) >= 50).length, 0, 'no error logged');
});

test('API: the normal reset mail sent by an operator (audited with the operator as actor); a set password and a reset second factor mail the person a notice', async () => {
  const token = await adminToken();
  const email = address('reset');
  const { user } = await server.app.ops.createUser({ kind: 'cli' }, { email, password: PASSWORD, totp: true });
  const sent = await api(token, 'POST', `/users/${user.id}/password-reset`);
  assert.equal(sent.status, 200, JSON.stringify(sent.body));
  const mail = await smtp.waitFor(email, /reset/i);
  const done = await setPasswordThrough(server, linkIn(mail, '/password/reset'), 'the reset passphrase here');
  assert.equal(done.page?.status, 200);
  assert.ok(await server.app.accounts.authenticate(email, 'the reset passphrase here'));
  const line = server.logs.find((l) => l.event === 'password_reset_requested' && l.accountId === user.id);
  assert.equal((line?.actor as { kind?: string })?.kind, 'client', 'the operator is the actor');
  assert.equal(line?.source, 'admin_api');

  assert.equal((await api(token, 'PUT', `/users/${user.id}/password`, { password: 'an operator chose this' })).status, 200);
  const changed = await smtp.waitFor(email, /your password was changed/);
  assert.match(changed.text ?? '', /An administrator made this change/);
  assert.equal((await api(token, 'DELETE', `/users/${user.id}/mfa`)).status, 200);
  await smtp.waitFor(email, /your second factor was reset/);

  const disabled = await server.app.ops.createUser({ kind: 'cli' }, { email: address('off'), password: PASSWORD });
  await server.app.ops.setUserDisabled({ kind: 'cli' }, disabled.user.id, true);
  for (const path of [`/users/${disabled.user.id}/password-reset`, `/users/${disabled.user.id}/password-link`]) {
    const res = await api(token, 'POST', path);
    assert.equal(res.status, 409, `${path}: a disabled account gets no link`);
    assert.equal(res.body.code, 'user_disabled_no_link');
  }
});

test('an admin cannot disable, un-admin or delete their own account through Operations (409 own_account); another admin can', async () => {
  const a = await server.app.ops.createUser({ kind: 'cli' }, { email: address('a'), password: PASSWORD, admin: true });
  const b = await server.app.ops.createUser({ kind: 'cli' }, { email: address('b'), password: PASSWORD, admin: true });
  const self = { kind: 'account' as const, accountId: a.user.id };
  for (const attempt of [() => server.app.ops.setUserDisabled(self, a.user.id, true), () => server.app.ops.setUserAdmin(self, a.user.id, false), () => server.app.ops.deleteUser(self, a.user.email)]) {
    await assert.rejects(attempt(), (err: { code?: string; status?: number }) => err.code === 'own_account' && err.status === 409);
  }
  const after = (await server.app.accounts.find(a.user.id))!;
  assert.equal(after.disabled, false);
  assert.equal(after.admin, true);
  await server.app.ops.setUserDisabled({ kind: 'account', accountId: b.user.id }, a.user.id, true);
  assert.equal((await server.app.accounts.find(a.user.id))!.disabled, true);
});

test('CLI: user create --set-password-link prints the link once; user update changes name and address; user password-link and send-password-reset', async () => {
  const email = address('cli');
  const created = await cli(['user', 'create', '--email', email, '--set-password-link', '--json']);
  assert.equal(created.code, 0, created.stderr);
  const out = JSON.parse(created.stdout);
  assert.match(out.set_password_link, /\/password\/reset\?token=/);
  assert.ok(!created.stderr.includes(new URL(out.set_password_link).searchParams.get('token')!), 'not in the audit line');
  const both = await cli(['user', 'create', '--email', address(), '--set-password-link', '--password-stdin'], PASSWORD);
  assert.equal(both.code, 2, both.stderr);
  assert.match(both.stderr, /--password-stdin and --set-password-link/);
  const neither = await cli(['user', 'create', '--email', address()]);
  assert.equal(neither.code, 2);
  assert.match(neither.stderr, /--password-stdin is required .*--set-password-link/);

  const to = address('cli-new');
  const updated = await cli(['user', 'update', out.id, '--name', 'Cy', '--email', to]);
  assert.equal(updated.code, 0, updated.stderr);
  assert.match(updated.stdout, /Changed the name and email of/);
  const account = (await server.app.accounts.find(out.id))!;
  assert.equal(account.email, to);
  assert.equal(account.name, 'Cy');
  assert.equal(isEmailVerified(account), false);
  assert.match(updated.stderr, /"event":"user_updated"/);
  const removed = await cli(['user', 'update', out.id, '--remove-name']);
  assert.equal(removed.code, 0, removed.stderr);
  assert.equal((await server.app.accounts.find(out.id))!.name, undefined);
  const nothing = await cli(['user', 'update', out.id]);
  assert.equal(nothing.code, 2);
  const badEmail = await cli(['user', 'update', out.id, '--email', 'nope']);
  assert.equal(badEmail.code, 2);
  assert.match(badEmail.stderr, /not an email address: "nope"/);

  const link = await cli(['user', 'password-link', out.id]);
  assert.equal(link.code, 0, link.stderr);
  assert.match(link.stdout, /\/password\/reset\?token=.*\nThe link is shown only now/);
  const reset = await cli(['user', 'send-password-reset', to]);
  assert.equal(reset.code, 0, reset.stderr);
  await smtp.waitFor(to, /reset/i);
});

test('EMAIL=off: a handed-over link still sets the password (the reset mail is refused with 409, not a 5xx)', async () => {
  const off = await startServer({ env: { EMAIL: 'off' } });
  try {
    const { user, set_password_link: url } = await off.app.ops.createUser({ kind: 'cli' }, { email: address('off'), setPasswordLink: true });
    const done = await setPasswordThrough(off, new URL(url!), PASSWORD);
    assert.equal(done.page?.status, 200);
    assert.ok(await off.app.accounts.authenticate(user.email, PASSWORD));
    await assert.rejects(off.app.ops.sendPasswordReset({ kind: 'cli' }, user.id), (err: { code?: string; status?: number }) => err.code === 'password_reset_needs_email' && err.status === 409);
    // An emailed reset link (none can be sent with EMAIL off) stays refused: only handed-over ones work.
    const emailed = await off.app.email.links.issue('password-reset', { accountId: user.id, email: user.email, stamp: 'x' }, 600);
    const page = await browse(new CookieJar(), new URL(`/password/reset?token=${emailed}`, off.issuer));
    assert.equal(page.status, 400);
  } finally {
    await off.close();
  }
});
