import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { basic } from './helpers/flow.ts';
import { runCli } from './helpers/cli.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { REDIRECT_URI } from './helpers/world.ts';

/**
 * Lockout thresholds and the admin API's rate limits are settings (src/config.ts), read by the server,
 * the admin API's operations and the CLI alike; on the embedded store an operator's unlock reaches the
 * counters the server counts in, as it does in Redis.
 */
describe('lockout and rate limit settings, on the embedded store', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({
      env: {
        LOCKOUT_ACCOUNT_MAX_FAILURES: '3',
        LOCKOUT_IP_MAX_FAILURES: '5',
        CLIENT_AUTH_MAX_FAILURES: '2',
        DEVICE_CODE_MAX_FAILURES: '2',
        ADMIN_API_IP_PER_MINUTE: '2',
      },
    });
  });
  after(() => server.close());

  test('LOCKOUT_ACCOUNT_MAX_FAILURES wrong passwords lock an account; LOCKOUT_IP_MAX_FAILURES lock the address', async () => {
    const wrong = (account: string, ip: string) => server.app.lockout.recordFailure({ factor: 'password', account, ip });
    assert.equal((await wrong('a@example.org', '192.0.2.1')).allowed, true);
    assert.equal((await wrong('a@example.org', '192.0.2.1')).allowed, true);
    assert.equal((await wrong('a@example.org', '192.0.2.1')).allowed, false, 'the third failure locks (default: the tenth)');
    for (const name of ['b', 'c', 'd']) assert.equal((await wrong(`${name}@example.org`, '192.0.2.2')).allowed, true);
    assert.equal((await wrong('e@example.org', '192.0.2.2')).allowed, true);
    assert.equal((await wrong('f@example.org', '192.0.2.2')).allowed, false, 'the fifth failure from one address locks it (default: the fiftieth)');
  });

  test('CLIENT_AUTH_MAX_FAILURES wrong secrets of a client id at one address: then 429', async () => {
    const client = await server.app.registry.createClient({ name: 'Settings', grants: ['authorization_code'], redirectUris: [REDIRECT_URI], scope: 'openid', secretIn: 'header' }, async () => {});
    const introspect = () =>
      fetch(new URL('/token/introspection', server.issuer), {
        method: 'POST',
        headers: { authorization: basic(client.clientId, `${client.secret!}x`), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token: 'made-up' }),
      });
    assert.equal((await introspect()).status, 401);
    assert.equal((await introspect()).status, 401);
    const throttled = await introspect();
    assert.equal(throttled.status, 429, 'the third attempt waits (default: the eleventh)');
    assert.ok(Number(throttled.headers.get('retry-after')) > 0);
  });

  test('DEVICE_CODE_MAX_FAILURES wrong device codes from one address lock code entry there', async () => {
    const wrongCode = () => server.app.deviceLockout.recordFailure({ factor: 'password', account: 'user-code@192.0.2.3', ip: '192.0.2.3' });
    assert.equal((await wrongCode()).allowed, true);
    assert.equal((await wrongCode()).allowed, false);
  });

  test('ADMIN_API_IP_PER_MINUTE requests a minute from one address, then 429 before any token is looked up', async () => {
    const call = () => fetch(new URL('/admin/api/v1/clients', server.issuer));
    assert.equal((await call()).status, 401);
    assert.equal((await call()).status, 401);
    const limited = await call();
    assert.equal(limited.status, 429, 'the third request a minute (default: the sixty-first)');
    assert.ok(Number(limited.headers.get('retry-after')) > 0);
  });

});

test("an operator's unlock forgets the server's counted failures, on the embedded store too", async () => {
  const server = await startServer();
  try {
    const person = await server.app.accounts.create({ email: 'forgotten@example.org', password: 'a long enough passphrase 1' });
    const wrong = () => server.app.lockout.recordFailure({ factor: 'password', account: person.email });
    for (let i = 1; i < 10; i += 1) assert.equal((await wrong()).allowed, true);
    const unlocked = await server.app.ops.unlockUser({ kind: 'cli', operator: 'test' }, person.email);
    assert.equal(unlocked.was_locked, false);
    assert.equal((await wrong()).allowed, true, 'the nine failures before the unlock were forgotten: this is the first of a new run');
  } finally {
    await server.close();
  }
});

test('the CLI reads the lockout settings, so its unlock is built as the server builds its lockout', async () => {
  const run = await runCli(['user', 'unlock', 'someone@example.org'], { env: { REDIS_URL: 'redis://127.0.0.1:1', LOCKOUT_ACCOUNT_MAX_FAILURES: '101' } });
  assert.equal(run.code, 2, run.stderr);
  assert.match(run.stderr, /LOCKOUT_ACCOUNT_MAX_FAILURES/);
});
