import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, mock, test } from 'node:test';
import { CLI_CLIENT_ID } from '../src/admin/cli-client.ts';
import { run } from '../src/cli/main.ts';
import { withClockAhead } from './conformance/op.ts';
import { approveDevice } from './helpers/device.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { enrollTotp } from './helpers/world.ts';

/**
 * `latchkey login --server URL` (RFC 8628 with the server's own CLI client) against a server on its
 * EMBEDDED store, which the CLI cannot reach otherwise: the CLI runs in process, the person approves
 * the code over HTTP (sign-in with TOTP, the device page), and later commands need `--server` only.
 */
let server: TestServer;
let home: string;
const admin = { email: 'root@example.org', password: 'correct horse battery staple' };
const person = { email: 'plain@example.org', password: 'tr0ubadour staple horse' };

before(async () => {
  server = await startServer();
  home = await mkdtemp(join(tmpdir(), 'latchkey-login-'));
  for (const [who, isAdmin] of [[admin, true], [person, false]] as const) {
    const account = await server.app.accounts.create({ ...who, admin: isAdmin });
    await enrollTotp(server, account);
  }
});

after(async () => {
  mock.timers.reset();
  await server.close();
  await rm(home, { recursive: true, force: true });
});

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** One CLI run in process; `sleep` stands in for the waits between polls. */
async function cli(args: string[], options: { env?: Record<string, string>; sleep?: (ms: number, stderr: () => string) => Promise<void> } = {}): Promise<Ran> {
  let stdout = '';
  let stderr = '';
  const code = await run(args, {
    env: { XDG_CONFIG_HOME: home, HOME: home, LOG_LEVEL: 'info', ...options.env },
    stdin: Readable.from([]),
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
    ...(options.sleep ? { sleep: (ms: number) => options.sleep!(ms, () => stderr) } : {}),
  });
  return { code, stdout, stderr };
}

/** The code and address the CLI printed for the person. */
function printed(stderr: string): { userCode: string; address: string } {
  const address = /open (\S+)/.exec(stderr)?.[1];
  const userCode = /shows the code ([A-Z]{4}-[A-Z]{4})/.exec(stderr)?.[1];
  assert.ok(address && userCode, `an address and a code on stderr: ${stderr}`);
  return { userCode, address };
}

const credentialsFile = () => join(home, 'latchkey', 'credentials.json');
const stored = async () => JSON.parse(await readFile(credentialsFile(), 'utf8')) as { servers: Record<string, { access_token: string; refresh_token?: string; expires_at: number }> };

test('login: the code on stderr, polls at the interval (and slower after slow_down), tokens kept 0600 by server; then --server alone administers the embedded store; logout forgets', async () => {
  const waits: number[] = [];
  const login = await cli(['login', '--server', `${server.issuer}/`], {
    async sleep(ms, stderr) {
      waits.push(ms);
      // The first poll is pending; the second, at once, is too soon (slow_down); the person allows before the third.
      if (waits.length < 3) return;
      const { userCode, address } = printed(stderr());
      assert.equal(address, `${server.issuer}/device?user_code=${userCode}`, 'verification_uri_complete');
      const { page, consentPage } = await approveDevice({ issuer: server.issuer, userCode, user: admin, prefilled: true });
      assert.match(consentPage!.html, /Latchkey CLI/);
      assert.match(page!.html, /Device connected/);
    },
  });
  assert.equal(login.code, 0, login.stderr);
  assert.deepEqual(waits, [5000, 5000, 10_000], 'the interval, then 5 s more after slow_down (RFC 8628 §3.5)');
  assert.match(login.stdout, new RegExp(`^Logged in to ${server.issuer}\\. The tokens are kept in ${credentialsFile()}`));

  const file = await stored();
  assert.deepEqual(Object.keys(file.servers), [server.issuer], 'keyed by the server URL, without the trailing slash');
  const saved = file.servers[server.issuer]!;
  assert.equal(typeof saved.access_token, 'string');
  assert.equal(typeof saved.refresh_token, 'string');
  assert.equal((await stat(credentialsFile())).mode & 0o777, 0o600);
  assert.equal((await stat(join(home, 'latchkey'))).mode & 0o777, 0o700);
  for (const secret of [saved.access_token, saved.refresh_token!]) assert.ok(!login.stdout.includes(secret) && !login.stderr.includes(secret), 'no token printed');

  // The admin API's own rules: the person's token carries the second factor of the sign-in.
  const introspected = await server.app.provider.AccessToken.find(saved.access_token);
  assert.equal((introspected as unknown as { extra?: { acr?: string } }).extra?.acr, 'urn:latchkey:mfa');

  const created = await cli(['client', 'create', '--name', 'From the CLI', '--grants', 'client_credentials', '--scope', 'latchkey:admin:read', '--json'], { env: { LATCHKEY_SERVER: server.issuer } });
  assert.equal(created.code, 0, created.stderr);
  const { client_id: clientId } = JSON.parse(created.stdout) as { client_id: string };
  assert.equal(created.stderr, '', 'the server writes the audit event, the CLI none');
  const audit = server.logs.find((l) => l.event === 'client_created' && l.clientId === clientId);
  assert.equal((audit?.actor as { kind?: string } | undefined)?.kind, 'account', 'the admin who logged in is the actor');
  const listed = await cli(['--server', server.issuer, 'client', 'list', '--json']);
  assert.equal(listed.code, 0, listed.stderr);
  const ids = (JSON.parse(listed.stdout) as { clients: { client_id: string }[] }).clients.map((c) => c.client_id);
  assert.ok(ids.includes(clientId));
  assert.equal(await server.app.ops.isOwnClient({ client_id: CLI_CLIENT_ID }), true, 'the CLI\'s client is the server\'s own: not in the console\'s list, not changeable there');

  // 16 minutes on, the 15-minute access token is refreshed (and kept) on the way.
  const later = await withClockAhead(16 * 60, () => cli(['--server', server.issuer, 'client', 'show', clientId, '--json']));
  assert.equal(later.code, 0, later.stderr);
  const refreshed = (await stored()).servers[server.issuer]!;
  assert.notEqual(refreshed.access_token, saved.access_token);
  assert.notEqual(refreshed.refresh_token, saved.refresh_token, 'rotated');
  assert.equal((await stat(credentialsFile())).mode & 0o777, 0o600);

  const out = await cli(['logout', '--server', server.issuer]);
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stdout, /^Logged out of http:\/\/localhost:\d+: its tokens are gone/);
  assert.deepEqual((await stored()).servers, {});
  const without = await cli(['--server', server.issuer, 'client', 'list']);
  assert.equal(without.code, 2);
  assert.equal(without.stderr, `latchkey: --server needs an access token for its admin API: run "latchkey login --server ${server.issuer}" first, or give --token (or LATCHKEY_TOKEN)\n`);
});

test('a login refused in the browser ends with exit 1 and one line; nothing is stored', async () => {
  const env = { XDG_CONFIG_HOME: join(home, 'refused') };
  const refused = await cli(['login'], {
    env: { ...env, LATCHKEY_SERVER: server.issuer },
    async sleep(_ms, stderr) {
      const { page } = await approveDevice({ issuer: server.issuer, userCode: printed(stderr()).userCode, user: admin, answer: 'deny' });
      assert.match(page!.html, /Device not connected/);
    },
  });
  assert.equal(refused.code, 1);
  assert.equal(refused.stdout, '');
  assert.match(refused.stderr, /\nlatchkey: the login was refused in the browser \(access_denied\); nothing was stored\n$/);
  await assert.rejects(stat(join(home, 'refused', 'latchkey', 'credentials.json')), { code: 'ENOENT' });
});

test('a code nobody allowed in time ends with exit 1 and one line; nothing is stored', async () => {
  const env = { XDG_CONFIG_HOME: join(home, 'expired') };
  const expired = await cli(['login', '--server', server.issuer], {
    env,
    async sleep() {
      // Ten minutes pass (the clock of this process: the server's and the CLI's).
      mock.timers.enable({ apis: ['Date'], now: Date.now() + 601_000 });
    },
  });
  mock.timers.reset();
  assert.equal(expired.code, 1);
  assert.match(expired.stderr, /\nlatchkey: the code [A-Z]{4}-[A-Z]{4} expired before it was allowed \(expired_token\); run "latchkey login --server http:\/\/localhost:\d+" again\n$/);
  await assert.rejects(stat(join(home, 'expired', 'latchkey', 'credentials.json')), { code: 'ENOENT' });
});

test('a person who is not an admin logs in, but the admin API refuses the token: exit 1, one line', async () => {
  const env = { XDG_CONFIG_HOME: join(home, 'plain') };
  const login = await cli(['login', '--server', server.issuer], {
    env,
    async sleep(_ms, stderr) {
      await approveDevice({ issuer: server.issuer, userCode: printed(stderr()).userCode, user: person });
    },
  });
  assert.equal(login.code, 0, login.stderr);
  const listed = await cli(['--server', server.issuer, 'client', 'list'], { env });
  assert.equal(listed.code, 1, listed.stderr);
  assert.equal(listed.stderr, 'latchkey: the server refused the token (the access token\'s account is not an admin): log in again (latchkey login --server URL) or give a fresh one with --token\n');
});

test('bad --server values are exit 2 with one line, before any request', async () => {
  const cases: [string[], RegExp][] = [
    [['login'], /^latchkey: login needs the server: latchkey login --server URL \(or LATCHKEY_SERVER\)\n$/],
    [['login', '--server'], /^latchkey: Option '--server <value>' argument missing; usage: latchkey login --server URL\n$/],
    [['login', '--server', 'localhost:3000'], /^latchkey: --server must be the server's URL .*got "localhost:3000"\n$/],
    [['login', '--server', 'not a url'], /^latchkey: --server must be the server's URL/],
    [['login', '--server', 'ftp://id.example'], /^latchkey: --server must be the server's URL/],
    [['login', '--server', 'https://id.example/?x=1'], /^latchkey: --server must be the server's URL/],
    [['logout', '--server', 'https://user:pw@id.example'], /^latchkey: --server must be the server's URL/],
    [['--server', 'nope', 'client', 'list'], /^latchkey: --server must be the server's URL/],
    [['login', '--server', server.issuer, 'extra'], /^latchkey: Unexpected argument 'extra'.*; usage: latchkey login --server URL\n$/],
  ];
  const help = await cli(['--help']);
  assert.match(help.stdout, /\n {2}latchkey login --server URL {4}sign in to that server in a browser/);
  for (const [args, expected] of cases) {
    const r = await cli(args);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr, expected, args.join(' '));
    assert.equal(r.stdout, '');
  }
});
