import assert from 'node:assert/strict';
import { test } from 'node:test';
import { signIn, signInAndRedeem } from './helpers/flow.ts';
import { type TestRedis } from './helpers/redis.ts';
import type { TestServer } from './helpers/server.ts';
import { SoftAuthenticator } from './helpers/soft-authenticator.ts';
import { useWorld, type World } from './helpers/world.ts';
import { runCli } from './helpers/cli.ts';

/**
 * The operator's side of the second factor: `latchkey user create --totp` (provisioning), `user
 * reset-mfa`, `user unlock` and `client create --require-mfa`, against the Redis a running server uses.
 */
let redis: TestRedis;
let server: TestServer;
let world: World;

useWorld((setup) => ({ redis, server, world } = setup));

async function latchkey(args: string[], stdin = ''): Promise<Record<string, unknown>> {
  const { code, stdout, stderr } = await runCli([...args, '--json'], { env: { REDIS_URL: redis.url, ISSUER: server.issuer }, stdin, without: ['SECRETS_KEY'] });
  assert.equal(code, 0, stderr);
  return JSON.parse(stdout) as Record<string, unknown>;
}

const PASSWORD = 'correct horse battery staple';

test('user create --totp returns id, email and an otpauth URI that signs in; reset-mfa sends the person through enrollment again', async () => {
  const created = await latchkey(['user', 'create', '--email', 'Lin@Example.org', '--totp', '--password-stdin'], PASSWORD);
  assert.deepEqual(Object.keys(created).sort(), ['email', 'id', 'totp_uri']);
  assert.equal(created.email, 'lin@example.org');
  const uri = new URL(created.totp_uri as string);
  assert.equal(uri.protocol, 'otpauth:');
  assert.equal(uri.host, 'totp');
  assert.equal(uri.searchParams.get('issuer'), new URL(server.issuer).host);
  const secret = uri.searchParams.get('secret')!;

  const user = { email: 'lin@example.org', password: PASSWORD, totpSecret: secret };
  const { flow } = await signInAndRedeem({ issuer: server.issuer, client: world.firstParty, user, scope: 'openid' });
  assert.ok(flow.mfaPage, 'asked for a code of the provisioned factor');
  assert.equal(flow.enrollPage, undefined);

  const reset = await latchkey(['user', 'reset-mfa', created.id as string]);
  assert.equal(reset.mfa_removed, true);
  const again = await signIn({ issuer: server.issuer, client: world.firstParty, user, scope: 'openid', secondFactor: 'stop' });
  assert.ok(again.enrollPage, 'enrollment at the next sign-in');
  const shown = await latchkey(['user', 'show', created.id as string]);
  assert.equal(shown.mfa, false);
});

test('user unlock ends a lockout', async () => {
  const created = await latchkey(['user', 'create', '--email', 'locked@example.org', '--totp', '--password-stdin'], PASSWORD);
  const secret = new URL(created.totp_uri as string).searchParams.get('secret')!;
  const user = { email: 'locked@example.org', password: PASSWORD, totpSecret: secret };
  for (let i = 0; i < 10; i += 1) await signIn({ issuer: server.issuer, client: world.firstParty, user: { ...user, password: 'wrong password' }, scope: 'openid' });
  const locked = await signIn({ issuer: server.issuer, client: world.firstParty, user, scope: 'openid' });
  assert.equal(locked.page?.status, 429);

  const unlocked = await latchkey(['user', 'unlock', 'locked@example.org']);
  assert.equal(unlocked.was_locked, true);
  const ok = await signIn({ issuer: server.issuer, client: world.firstParty, user, scope: 'openid' });
  assert.ok(ok.code, 'signs in after the unlock');
});

test('client create --require-mfa stores require_mfa', async () => {
  const created = await latchkey(['client', 'create', '--name', 'Payroll', '--grants', 'authorization_code', '--redirect-uri', 'https://payroll.example/cb', '--scope', 'openid', '--require-mfa']);
  const shown = await latchkey(['client', 'show', created.client_id as string]);
  assert.equal(shown.require_mfa, true);
  const plain = await latchkey(['client', 'create', '--name', 'Wiki', '--grants', 'authorization_code', '--redirect-uri', 'https://wiki.example/cb', '--scope', 'openid']);
  assert.equal((await latchkey(['client', 'show', plain.client_id as string])).require_mfa, false);
});

test('user show lists the person’s factors, passkeys by name; reset-mfa removes the passkeys too', async () => {
  const account = await server.app.accounts.create({ email: 'pia@example.org', password: PASSWORD });
  const device = new SoftAuthenticator({ origin: server.issuer });
  const options = await server.app.passkeys.registrationOptions(account, 'cli-test');
  const registered = await server.app.passkeys.register(account.id, 'cli-test', device.create(options), 'Pia’s phone');
  assert.ok(registered.ok);
  const shown = await latchkey(['user', 'show', account.id]);
  const factors = shown.factors as { type: string; name: string; last_used: string | null }[];
  assert.deepEqual(factors.map((f) => [f.type, f.name, f.last_used]), [['passkey', 'Pia’s phone', null]]);

  const reset = await latchkey(['user', 'reset-mfa', account.id]);
  assert.equal(reset.mfa_removed, true);
  assert.equal(reset.passkeys_removed, 1);
  assert.equal((await server.app.passkeys.ownerOf(registered.passkey.id)), undefined, 'the credential index entry is gone');
  assert.deepEqual((await latchkey(['user', 'show', account.id])).factors, []);
});
