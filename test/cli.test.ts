import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { Accounts } from '../src/accounts/accounts.ts';
import { AUDIT_EVENTS } from '../src/observability/audit.ts';
import { secretMatches } from '../src/oidc/registry.ts';
import { connectRedis, RedisStore } from '../src/storage/redis-store.ts';
import { keys } from '../src/storage/keys.ts';
import { freePort, startRedis, type TestRedis } from './helpers/redis.ts';
import { runCli } from './helpers/cli.ts';

/** The `latchkey` CLI against a private Redis: in process through its entry `run`, and once as the real binary. */
let redis: TestRedis;
let db: Redis;
let store: RedisStore;
// Unique names, in case REDIS_URL points the tests at a shared Redis.
const run = randomBytes(4).toString('hex');
const api = `https://api-${run}.example`;
const readScope = `api${run}:read`;
const writeScope = `api${run}:write`;

before(async () => {
  redis = await startRedis();
  db = new Redis(redis.url);
  store = new RedisStore(connectRedis(redis.url, 2000));
  await store.ready(5000);
});

after(async () => {
  db.disconnect();
  await store.close();
  await redis.dispose();
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], options: { stdin?: string; env?: Record<string, string>; script?: string } = {}): Promise<Result> {
  return runCli(args, { ...options, env: { REDIS_URL: redis.url, ...options.env } });
}

/**
 * The audit lines a command wrote on stderr: each one JSON object from pino at level info, with a
 * known `event` and `"source":"cli"` — and nothing else on stderr.
 */
function auditLines(stderr: string): Record<string, unknown>[] {
  return stderr
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const entry = JSON.parse(line) as Record<string, unknown>;
      assert.equal(entry.level, 30, line);
      assert.equal(entry.source, 'cli', line);
      assert.ok((AUDIT_EVENTS as readonly string[]).includes(String(entry.event)), `a known audit event: ${line}`);
      return entry;
    });
}

/** Runs a command with --json: exit 0, exactly one JSON object on stdout, at most one audit line (and no secret) on stderr. */
async function json(args: string[], stdin?: string): Promise<any> {
  const r = await cli([...args, '--json'], stdin === undefined ? {} : { stdin });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(auditLines(r.stderr).length <= 1, r.stderr);
  if (stdin?.trim()) assert.ok(!r.stderr.includes(stdin.trim()), 'no password on stderr');
  for (const secret of [/"client_secret":"([^"]+)"/.exec(r.stdout)?.[1], /[?&]secret=([A-Z2-7]+)/.exec(r.stdout)?.[1]]) {
    if (secret) assert.ok(!r.stderr.includes(secret), 'no secret on stderr');
  }
  const lines = r.stdout.split('\n');
  assert.equal(lines.length, 2, `one line of output: ${r.stdout}`);
  assert.equal(lines[1], '');
  const parsed = JSON.parse(lines[0]!);
  assert.equal(typeof parsed, 'object');
  assert.ok(parsed && !Array.isArray(parsed));
  return parsed;
}

/** Runs a command that must fail with one line on stderr and nothing on stdout. */
async function fails(args: string[], pattern: RegExp, options: { code?: number; stdin?: string; env?: Record<string, string> } = {}) {
  const r = await cli(args, options);
  assert.equal(r.code, options.code ?? 2, r.stderr);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^latchkey: [^\n]+\n$/);
  assert.match(r.stderr, pattern);
  return r;
}

const allKeys = async () => (await db.keys('*')).sort();

test('without REDIS_URL it explains that the embedded store is out of reach', async () => {
  await fails(['client', 'list'], /embedded store.*inside the server process/, { env: { REDIS_URL: '' } });
});

test('unreachable Redis: one line, exit 1', async () => {
  await fails(['user', 'list'], /cannot reach Redis/, { code: 1, env: { REDIS_URL: `redis://127.0.0.1:${await freePort()}` } });
});

test('unknown commands and flags: exit 2 with a usage hint; --help prints usage', async () => {
  await Promise.all([
    fails([], /missing command.*--help/),
    fails(['frob'], /unknown command "frob".*--help/),
    fails(['client', 'frob'], /unknown command "client frob"/),
    fails(['client', 'list', '--bogus'], /Unknown option '--bogus'.*usage: latchkey client list/),
    fails(['client', 'show'], /missing CLIENT_ID/),
    fails(['client', 'show', 'a', 'b'], /unexpected argument "b"/),
    fails(['user', 'create', '--email', 'x@example.org', '--password', 'hunter22'], /Unknown option '--password'/),
  ]);
  const help = await cli(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /latchkey client create --name NAME/);
  assert.match(help.stdout, /latchkey keys rotate/);
});

test('resource create, list and delete; clients may only use scopes an API owns', async () => {
  const before = await allKeys();
  await fails(['client', 'create', '--name', 'Job', '--grants', 'client_credentials', '--scope', readScope], /belongs to no API/);
  assert.deepEqual(await allKeys(), before, 'nothing written');

  const created = await json(['resource', 'create', '--uri', api, '--scope', `${readScope} ${writeScope}`, '--token-format', 'jwt', '--ttl', '600']);
  assert.equal(created.resource, api);
  assert.match(created.client_id, /^[\w-]+$/);
  assert.match(created.client_secret, /^[\w-]{43}$/);

  const other = `https://other-${run}.example`;
  await json(['resource', 'create', '--uri', other, '--scope', `other${run}:read`]);
  await Promise.all([
    fails(['resource', 'create', '--uri', `https://third-${run}.example`, '--scope', readScope], /already belongs/),
    fails(['resource', 'create', '--uri', 'not a uri', '--scope', `x${run}`], /absolute URI/),
    fails(['resource', 'create', '--uri', `https://fourth-${run}.example`, '--scope', `y${run}`, '--ttl', 'soon'], /--ttl/),
    fails(['resource', 'create', '--uri', `https://fifth-${run}.example`, '--scope', `z${run}`, '--token-format', 'paseto'], /--token-format/),
  ]);

  const internal = `https://internal-${run}.example`;
  await json(['resource', 'create', '--uri', internal, '--scope', `internal${run}:admin`, '--private-scopes']);
  const { resources } = await json(['resource', 'list']);
  const mine = resources.find((r: any) => r.resource === api);
  assert.equal(resources.find((r: any) => r.resource === internal).private_scopes, true);
  assert.equal(mine.private_scopes, false);
  assert.deepEqual(
    { scope: mine.scope, token_format: mine.token_format, ttl: mine.ttl, client_id: mine.client_id },
    { scope: `${readScope} ${writeScope}`, token_format: 'jwt', ttl: 600, client_id: created.client_id },
  );
  assert.ok(!JSON.stringify(resources).includes(created.client_secret));

  // resource update: the scope list given replaces the list (another API's scope refused), settings change.
  await fails(['resource', 'update', internal, '--scope', readScope], /already belongs/);
  const updated = await json(['resource', 'update', internal, '--scope', `internal${run}:admin internal${run}:read`, '--no-private-scopes', '--ttl', '900']);
  assert.deepEqual(updated.changed, ['ttl', 'scopes', 'privateScopes']);
  assert.deepEqual({ scope: updated.scope, ttl: updated.ttl, private_scopes: updated.private_scopes }, { scope: `internal${run}:admin internal${run}:read`, ttl: 900, private_scopes: false });
  await fails(['resource', 'update', internal], /nothing to change/);

  // The API's client is managed through its resource.
  await fails(['client', 'delete', created.client_id], /resource delete/);
  await json(['resource', 'delete', other]);
  assert.ok(!(await json(['resource', 'list'])).resources.some((r: any) => r.resource === other));
  await fails(['resource', 'delete', other], /no API/);
});

test('resource scope descriptions: --scope-description SCOPE=TEXT at create and update (SCOPE= removes one), refused by flag when bad; a record stored without them still reads', async () => {
  const uri = `https://diary-${run}.example`;
  const [read, write] = [`diary${run}:read`, `diary${run}:write`];
  const created = await json(['resource', 'create', '--uri', uri, '--scope', `${read} ${write}`, '--scope-description', `${read}=Read your diary = all of it`]);
  assert.equal(created.resource, uri);
  const listed = async () => (await json(['resource', 'list'])).resources.find((r: any) => r.resource === uri);
  assert.deepEqual((await listed()).scope_descriptions, { [read]: 'Read your diary = all of it' }, 'split at the first =');
  const updated = await json(['resource', 'update', uri, '--scope-description', `${write}=Write in your diary`, '--scope-description', `${read}=`]);
  assert.deepEqual(updated.changed, ['scopeDescriptions']);
  assert.deepEqual(updated.scope_descriptions, { [write]: 'Write in your diary' });
  const text = await cli(['resource', 'update', uri, '--scope-description', `${read}=Read your diary`]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`scope_descriptions +${read}=Read your diary; ${write}=Write in your diary`));

  const before = JSON.stringify(await listed());
  await fails(['resource', 'update', uri, '--scope-description', 'no equals sign'], /--scope-description: write each as SCOPE=TEXT/);
  await fails(['resource', 'update', uri, '--scope-description', `other${run}:read=Hello`], new RegExp(`--scope-description: "other${run}:read" is not one of this API's scopes`));
  await fails(['resource', 'update', uri, '--scope-description', `${read}=${'x'.repeat(201)}`], /--scope-description: the description of .* is longer than 200 characters/);
  await fails(['resource', 'update', uri, '--scope-description', `${read}=Read\u0007your diary`], /--scope-description: .*one line of plain text/);
  await fails(['resource', 'create', '--uri', `https://diary2-${run}.example`, '--scope', `diary2${run}:read`, '--scope-description', `${write}=Write`], /not one of this API's scopes/);
  assert.equal(JSON.stringify(await listed()), before, 'nothing changed');

  // A record written before descriptions existed: read as none, and described like any other.
  const old = `https://old-${run}.example`;
  const oldScope = `old${run}:read`;
  await db.set(keys.resource(old), JSON.stringify({ uri: old, scopes: [oldScope], tokenFormat: 'opaque', ttl: 3600, clientId: `old${run}`, createdAt: Date.now() }));
  await db.set(keys.scopeOwner(oldScope), old);
  await db.sadd(keys.resources, old);
  assert.deepEqual((await json(['resource', 'list'])).resources.find((r: any) => r.resource === old).scope_descriptions, {});
  assert.deepEqual((await json(['resource', 'update', old, '--scope-description', `${oldScope}=Read old things`])).scope_descriptions, { [oldScope]: 'Read old things' });
  await json(['resource', 'delete', old]);
  await json(['resource', 'delete', uri]);
});

test('client create (confidential, public, client_credentials), list, show, rotate-secret, delete', async () => {
  const [shop, spa, job] = await Promise.all([
    json([
      'client', 'create', '--name', 'Shop', '--grants', 'authorization_code,refresh_token',
      '--redirect-uri', 'https://shop.example/cb', '--redirect-uri', 'https://shop.example/cb2',
      '--post-logout-redirect-uri', 'https://shop.example/bye',
      '--scope', `openid profile email offline_access ${readScope}`, '--first-party',
    ]),
    json(['client', 'create', '--name', 'SPA', '--grants', 'authorization_code', '--redirect-uri', 'http://localhost:5173/cb', '--scope', 'openid', '--public']),
    json(['client', 'create', '--name', 'Nightly job', '--grants', 'client_credentials', '--scope', readScope]),
  ]);
  assert.deepEqual(Object.keys(shop).sort(), ['client_id', 'client_secret']);
  assert.deepEqual(Object.keys(spa), ['client_id'], 'a public client has no secret');
  assert.ok(job.client_secret);
  // Stored as a digest, never as is.
  const stored = JSON.parse((await db.get(`lk:client:${shop.client_id}`))!);
  assert.notEqual(stored.client_secret, shop.client_secret);
  assert.ok(secretMatches(stored.client_secret, shop.client_secret));

  const list = await cli(['client', 'list', '--json']);
  const { clients } = JSON.parse(list.stdout);
  for (const secret of [shop.client_secret, job.client_secret, stored.client_secret]) assert.ok(!list.stdout.includes(secret));
  assert.ok(clients.every((c: any) => !('client_secret' in c)));
  const ids = clients.map((c: any) => c.client_id);
  for (const c of [shop, spa, job]) assert.ok(ids.includes(c.client_id));

  const shown = await json(['client', 'show', shop.client_id]);
  assert.equal(shown.client_name, 'Shop');
  assert.deepEqual(shown.redirect_uris, ['https://shop.example/cb', 'https://shop.example/cb2']);
  assert.deepEqual(shown.post_logout_redirect_uris, ['https://shop.example/bye']);
  assert.deepEqual(shown.grant_types, ['authorization_code', 'refresh_token']);
  assert.equal(shown.first_party, true);
  assert.equal(shown.public, false);
  assert.ok(!('client_secret' in shown));
  assert.equal((await json(['client', 'show', spa.client_id])).public, true);
  const text = await cli(['client', 'show', job.client_id]);
  assert.equal(text.code, 0);
  assert.match(text.stdout, /client_name\s+Nightly job/);

  const rotated = await json(['client', 'rotate-secret', job.client_id]);
  assert.equal(rotated.client_id, job.client_id);
  assert.notEqual(rotated.client_secret, job.client_secret);
  const digest = JSON.parse((await db.get(`lk:client:${job.client_id}`))!).client_secret;
  assert.ok(secretMatches(digest, rotated.client_secret));
  assert.ok(!secretMatches(digest, job.client_secret), 'the old secret stops working');
  await fails(['client', 'rotate-secret', spa.client_id], /public/);

  assert.deepEqual(await json(['client', 'delete', spa.client_id]), { client_id: spa.client_id, deleted: true, grants_revoked: 0, tokens_revoked: 0 });
  await fails(['client', 'show', spa.client_id], /no client/);
  await fails(['client', 'delete', spa.client_id], /no client/);
  assert.ok(!(await json(['client', 'list'])).clients.some((c: any) => c.client_id === spa.client_id));
});

test('client create --grants device_code (RFC 8628): public or confidential, no redirect URI, refresh tokens allowed', async () => {
  const tv = await json(['client', 'create', '--name', 'TV', '--grants', 'device_code,refresh_token', '--scope', 'openid offline_access', '--public']);
  assert.deepEqual(Object.keys(tv), ['client_id'], 'public: no secret');
  const shown = await json(['client', 'show', tv.client_id]);
  assert.deepEqual(shown.grant_types, ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token']);
  assert.deepEqual(shown.redirect_uris, []);
  const tool = await json(['client', 'create', '--name', 'Deploy tool', '--grants', 'urn:ietf:params:oauth:grant-type:device_code', '--scope', `openid ${readScope}`]);
  assert.ok(tool.client_secret, 'confidential: a secret');
  await fails(['client', 'create', '--name', 'TV', '--grants', 'device_code', '--redirect-uri', 'https://tv.example/cb', '--scope', 'openid'], /--redirect-uri needs the authorization_code grant/);
  await fails(['client', 'create', '--name', 'TV', '--grants', 'refresh_token', '--scope', 'openid'], /refresh_token needs authorization_code or urn:ietf:params:oauth:grant-type:device_code/);
});

test('bad client arguments: exit 2, one line, nothing written', async () => {
  const listBefore = (await cli(['client', 'list', '--json'])).stdout;
  const before = await allKeys();
  await Promise.all([
    fails(['client', 'create', '--name', 'Shop', '--grants', 'authorization_code', '--scope', 'openid'], /needs at least one --redirect-uri/),
    fails(['client', 'create', '--name', 'Shop', '--grants', 'authorization_code', '--redirect-uri', 'shop.example/cb', '--scope', 'openid'], /absolute URI/),
    fails(['client', 'create', '--name', 'Shop', '--grants', 'authorization_code', '--redirect-uri', 'https://shop.example/cb#x', '--scope', 'openid'], /--redirect-uri must not have a fragment/),
    fails(['client', 'create', '--name', 'Shop', '--grants', 'implicit', '--redirect-uri', 'https://shop.example/cb', '--scope', 'openid'], /unknown grant "implicit"/),
    fails(['client', 'create', '--name', 'Shop', '--grants', 'client_credentials', '--scope', readScope, '--public'], /public client cannot use client_credentials/),
    fails(['client', 'create', '--grants', 'client_credentials', '--scope', readScope], /--name is required/),
    fails(['client', 'create', '--name', 'Shop', '--grants', 'authorization_code', '--redirect-uri', 'https://shop.example/cb', '--scope', 'openid', '--public=yes'], /does not take an argument/),
  ]);
  assert.equal((await cli(['client', 'list', '--json'])).stdout, listBefore);
  assert.deepEqual(await allKeys(), before);
});

test('redirect URIs: https, plain http to loopback only, private-use schemes only for public apps; no fragments, userinfo or wildcards', async () => {
  const before = await allKeys();
  const create = (uri: string, extra: string[] = [], flag = '--redirect-uri') =>
    flag === '--redirect-uri'
      ? ['client', 'create', '--name', 'App', '--grants', 'authorization_code', flag, uri, '--scope', 'openid', ...extra]
      : ['client', 'create', '--name', 'App', '--grants', 'authorization_code', '--redirect-uri', 'https://app.example/cb', flag, uri, '--scope', 'openid', ...extra];
  const refused: [string[], RegExp][] = [
    [create('http://evil.example/cb'), /^latchkey: --redirect-uri must use https \(plain http only for 127\.0\.0\.1, \[::1\] or localhost\), got http:\/\/evil\.example\/cb$/m],
    [create('http://localhost.evil.example/cb', ['--public']), /--redirect-uri must use https/],
    [create('http://evil.example/bye', [], '--post-logout-redirect-uri'), /--post-logout-redirect-uri must use https/],
    [create('https://app.example/cb#done'), /--redirect-uri must not have a fragment/],
    [create('https://ops:hunter22@app.example/cb'), /^latchkey: --redirect-uri must not carry a user name or password$/m],
    [create('https://@app.example/cb'), /must not carry a user name or password/],
    [create('https://*.app.example/cb'), /must be exact, without wildcards/],
    [create('https://app.example/*'), /must be exact, without wildcards/],
    [create('com.example.app:/cb'), /private-use scheme com\.example\.app: only for a --public \(native\) client/],
    [create('com.example.app:/bye', [], '--post-logout-redirect-uri'), /--post-logout-redirect-uri may use the private-use scheme/],
    [create('myapp:/cb', ['--public']), /reverse-DNS private-use scheme/],
    [create('javascript:alert(1)', ['--public']), /reverse-DNS private-use scheme/],
    [create('ftp://app.example/cb'), /must use https/],
    [create('app.example/cb'), /must be an absolute URI/],
  ];
  for (const [args, message] of refused) {
    const r = await fails(args, message);
    assert.ok(!r.stderr.includes('hunter22'), 'a password in the URI is never echoed');
  }
  assert.deepEqual(await allKeys(), before, 'nothing written');

  const accepted: [string[], string[]][] = [
    [create('https://app.example/cb'), ['https://app.example/cb']],
    [create('http://127.0.0.1:8080/cb'), ['http://127.0.0.1:8080/cb']],
    [create('http://[::1]:8080/cb'), ['http://[::1]:8080/cb']],
    [create('http://localhost/cb', ['--post-logout-redirect-uri', 'http://localhost/bye']), ['http://localhost/cb']],
    [create('com.example.app:/oauth2redirect', ['--public', '--redirect-uri', 'http://127.0.0.1/cb', '--post-logout-redirect-uri', 'com.example.app:/bye']), ['com.example.app:/oauth2redirect', 'http://127.0.0.1/cb']],
  ];
  for (const [args, uris] of accepted) {
    const { client_id } = await json(args);
    assert.deepEqual((await json(['client', 'show', client_id])).redirect_uris, uris);
  }
});

test('redirect, post-logout and back-channel logout URIs with a line break, tab or other control character are refused, not stored cleaned', async () => {
  const before = await allKeys();
  const base = ['client', 'create', '--name', 'App', '--grants', 'authorization_code', '--scope', 'openid'];
  // The URL parser would drop the tab and line breaks and find nothing wrong with what is left.
  for (const [flag, uri] of [
    ['--redirect-uri', 'https://app.example/cb\r\nSet-Cookie: x=1'],
    ['--redirect-uri', 'https://app.example/c\tb'],
    ['--redirect-uri', 'https://app.example/cb\n'],
    ['--redirect-uri', 'https://app.example/cb\u0007'],
    ['--post-logout-redirect-uri', 'https://app.example/bye\r'],
    ['--backchannel-logout-uri', 'https://app.example/bc\u001b[2J'],
    ['--backchannel-logout-uri', 'https://app.example/b c'],
  ] as const) {
    const args = flag === '--redirect-uri' ? [...base, flag, uri] : [...base, '--redirect-uri', 'https://app.example/cb', flag, uri];
    const r = await fails(args, new RegExp(`${flag} must not contain spaces, line breaks or other control characters`));
    assert.ok(!['\r', '\t', '\u0007', '\u001b'].some((c) => r.stderr.includes(c)), 'the control characters are not echoed');
  }
  assert.deepEqual(await allKeys(), before, 'nothing written');
  const { client_id } = await json([...base, '--redirect-uri', 'https://app.example/cb']);
  await fails(['client', 'update', client_id, '--redirect-uri', 'https://app.example/cb\r\n'], /--redirect-uri must not contain/);
  assert.deepEqual((await json(['client', 'show', client_id])).redirect_uris, ['https://app.example/cb'], 'unchanged');
});

test('client create with NODE_ENV=production refuses a back-channel logout URI on a private address, unless BACKCHANNEL_LOGOUT_ALLOW_PRIVATE=true', async () => {
  const args = ['client', 'create', '--name', 'Intranet', '--grants', 'authorization_code', '--redirect-uri', 'https://intranet.example/cb', '--scope', 'openid', '--backchannel-logout-uri', 'https://192.168.1.10/bc'];
  await fails(args, /--backchannel-logout-uri must not point at a private address \(192\.168\.1\.10\) in production; set BACKCHANNEL_LOGOUT_ALLOW_PRIVATE=true/, { env: { NODE_ENV: 'production' } });
  await fails([...args.slice(0, -1), 'http://localhost:9000/bc'], /loopback address \(localhost\)/, { env: { NODE_ENV: 'production' } });
  const allowed = await cli([...args, '--json'], { env: { NODE_ENV: 'production', BACKCHANNEL_LOGOUT_ALLOW_PRIVATE: 'true' } });
  assert.equal(allowed.code, 0, allowed.stderr);
  assert.equal((await json(['client', 'show', JSON.parse(allowed.stdout).client_id])).backchannel_logout_uri, 'https://192.168.1.10/bc');
});

test('user create, list, show, disable, enable, set-password, delete', async () => {
  const accounts = new Accounts(store);
  const email = `ada-${run}@example.org`;
  const password = 'correct horse battery';
  const created = await cli(['user', 'create', '--email', email.toUpperCase(), '--name', 'Ada', '--password-stdin', '--json'], { stdin: `${password}\n` });
  assert.equal(created.code, 0, created.stderr);
  assert.ok(!created.stdout.includes(password) && !created.stderr.includes(password), 'the password is never echoed');
  const user = JSON.parse(created.stdout);
  assert.deepEqual(Object.keys(user).sort(), ['email', 'id']);
  assert.equal(user.email, email);
  // One trailing newline is stripped, nothing else.
  assert.equal((await accounts.authenticate(email, password))?.id, user.id);

  const before = await allKeys();
  await Promise.all([
    fails(['user', 'create', '--email', email, '--password-stdin'], /already exists/, { stdin: 'another password' }),
    fails(['user', 'create', '--email', `bob-${run}@example.org`, '--password-stdin'], /at least 8 characters/, { stdin: 'short\n' }),
    fails(['user', 'create', '--email', `bob-${run}@example.org`], /--password-stdin is required/, { stdin: 'long enough password' }),
    fails(['user', 'create', '--email', 'not-an-email', '--password-stdin'], /not an email address/, { stdin: 'long enough password' }),
  ]);
  assert.deepEqual(await allKeys(), before, 'nothing written');

  const { users } = await json(['user', 'list']);
  const listed = users.find((u: any) => u.id === user.id);
  assert.deepEqual({ email: listed.email, name: listed.name, disabled: listed.disabled }, { email, name: 'Ada', disabled: false });
  assert.ok(!JSON.stringify(users).includes('argon2'), 'no password hashes');
  assert.equal((await json(['user', 'show', user.id])).email, email);

  assert.equal((await json(['user', 'disable', user.id])).disabled, true);
  assert.equal((await json(['user', 'show', user.id])).disabled, true);
  assert.equal(await accounts.authenticate(email, password), undefined);
  assert.equal((await json(['user', 'enable', user.id])).disabled, false);
  assert.equal((await accounts.authenticate(email, password))?.id, user.id);

  const changed = await json(['user', 'set-password', user.id, '--password-stdin'], 'a new pass phrase\r\n');
  assert.equal(changed.id, user.id);
  assert.equal(await accounts.authenticate(email, password), undefined);
  assert.equal((await accounts.authenticate(email, 'a new pass phrase'))?.id, user.id);
  await fails(['user', 'set-password', user.id, '--password-stdin'], /at least 8/, { stdin: 'short' });

  assert.equal((await json(['user', 'delete', user.id])).deleted, true);
  await fails(['user', 'show', user.id], /no user/);
  assert.ok(!(await json(['user', 'list'])).users.some((u: any) => u.id === user.id));
});

test('keys rotate makes a new generation current and keeps retired ones until their date; keys list shows each state and public parts only', async () => {
  const first = await json(['keys', 'rotate']);
  const second = await json(['keys', 'rotate']);
  const third = await json(['keys', 'rotate']);
  const current = third.keys.filter((k: any) => k.current);
  const previous = third.keys.filter((k: any) => !k.current);
  assert.deepEqual(current.map((k: any) => k.alg).sort(), ['ES256', 'EdDSA', 'RS256']);
  const kidsOf = (out: any) => out.keys.filter((k: any) => k.current).map((k: any) => k.kid);
  assert.deepEqual(previous.map((k: any) => k.kid), [...kidsOf(second), ...kidsOf(first)], 'both previous generations are kept, newest first');
  for (const k of current) assert.ok(!kidsOf(second).includes(k.kid), 'new kids');
  assert.deepEqual(third.retired, kidsOf(second));
  assert.deepEqual(third.removed, []);
  // Retired for the life of an ID token (this file's JWT API issues 600 s tokens) plus the re-read interval and leeway.
  const retiredFor = Date.parse(third.retired_until) - Date.now();
  assert.ok(retiredFor > 60 * 60 * 1000 && retiredFor < 2 * 60 * 60 * 1000, third.retired_until);
  for (const k of current) assert.equal(k.state, 'current');
  for (const k of previous) assert.match(k.state, /^retired until \d{4}-\d\d-\d\dT/);
  // Each generation shows the date its own rotation gave it (by kid: in process, rotations can share a second).
  const stateOf = (kid: string) => previous.find((k: any) => k.kid === kid).state;
  for (const kid of kidsOf(second)) assert.equal(stateOf(kid), `retired until ${third.retired_until}`, 'the generation this rotation retired');
  for (const kid of kidsOf(first)) assert.equal(stateOf(kid), `retired until ${second.retired_until}`, 'the generation the previous rotation retired');

  const listed = await cli(['keys', 'list', '--json']);
  assert.deepEqual(JSON.parse(listed.stdout).keys, third.keys);
  for (const k of JSON.parse(listed.stdout).keys) {
    for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'n', 'x', 'y']) assert.ok(!(member in k), `no ${member}`);
  }
  // The private exponent of the RSA key appears nowhere in the output.
  const stored = JSON.parse((await db.get('lk:keys:signing'))!);
  for (const k of stored) assert.ok(!listed.stdout.includes(k.d));
  const text = await cli(['keys', 'list']);
  assert.equal(text.code, 0);
  assert.match(text.stdout, /KID\s+ALG\s+KTY\s+CREATED\s+STATE/);
  assert.match(text.stdout, /retired until/);
  for (const k of stored) assert.ok(!text.stdout.includes(k.d));
});

test('the real binary: bin/latchkey.js and npm run -s latchkey run the CLI as processes (the other tests run it in process)', async () => {
  const r = await cli(['resource', 'list', '--json'], { script: 'bin/latchkey.js' });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(Array.isArray(JSON.parse(r.stdout).resources));
  const bad = await cli(['nope'], { script: 'bin/latchkey.js' });
  assert.equal(bad.code, 2);
  assert.equal(bad.stderr, 'latchkey: unknown command "nope"; run "latchkey --help" for usage\n');
  const created = await cli(['client', 'create', '--name', 'Spawned', '--grants', 'client_credentials', '--scope', readScope, '--json'], { script: 'npm' });
  assert.equal(created.code, 0, created.stderr);
  assert.equal(typeof JSON.parse(created.stdout).client_secret, 'string', 'stdout is the one JSON object, without npm\'s banner');
  assert.equal(auditLines(created.stderr).length, 1, 'the audit line reaches the process\'s stderr');
});

/** Runs a command that changes something: its one audit line on stderr, and stdout as with `json`. */
async function change(args: string[], stdin?: string): Promise<{ out: any; audit: Record<string, unknown> }> {
  const r = await cli([...args, '--json'], stdin === undefined ? {} : { stdin });
  assert.equal(r.code, 0, r.stderr);
  const audits = auditLines(r.stderr);
  assert.equal(audits.length, 1, `one audit line: ${r.stderr}`);
  const out = JSON.parse(r.stdout);
  assert.equal(r.stdout, `${JSON.stringify(out)}\n`, 'stdout is exactly one JSON object');
  for (const value of [stdin?.trim(), out.client_secret, out.totp_uri, out.totp_uri && new URL(out.totp_uri).searchParams.get('secret')]) {
    if (value) assert.ok(!r.stderr.includes(value), `no secret on stderr: ${r.stderr}`);
  }
  return { out, audit: audits[0]! };
}

test('every change writes one audit line on stderr (ids, never a secret); reads write none', async () => {
  const uri = `https://audited-${run}.example`;
  const scope = `audited${run}:read`;
  const resource = await change(['resource', 'create', '--uri', uri, '--scope', scope]);
  assert.deepEqual(
    { event: resource.audit.event, resource: resource.audit.resource, clientId: resource.audit.clientId, scope: resource.audit.scope },
    { event: 'resource_created', resource: uri, clientId: resource.out.client_id, scope },
  );
  assert.equal(typeof resource.audit.time, 'number');

  const client = await change(['client', 'create', '--name', 'Audited job', '--grants', 'client_credentials', '--scope', scope]);
  assert.equal(client.audit.event, 'client_created');
  assert.equal(client.audit.clientId, client.out.client_id);
  assert.deepEqual(client.audit.grantTypes, ['client_credentials']);
  const rotated = await change(['client', 'rotate-secret', client.out.client_id]);
  assert.deepEqual([rotated.audit.event, rotated.audit.clientId], ['client_secret_rotated', client.out.client_id]);
  const deleted = await change(['client', 'delete', client.out.client_id]);
  assert.deepEqual([deleted.audit.event, deleted.audit.clientId], ['client_deleted', client.out.client_id]);
  assert.deepEqual([(await change(['resource', 'delete', uri])).audit.event], ['resource_deleted']);

  const password = 'audited pass phrase';
  const user = await change(['user', 'create', '--email', `audited-${run}@example.org`, '--totp', '--password-stdin'], password);
  assert.deepEqual({ event: user.audit.event, accountId: user.audit.accountId, mfa: user.audit.mfa }, { event: 'user_created', accountId: user.out.id, mfa: true });
  assert.ok(!JSON.stringify(user.audit).includes('@'), 'accounts are named by id');
  const id = user.out.id as string;
  const expected: [string[], string, Record<string, unknown>][] = [
    [['user', 'reset-mfa', id], 'second_factor_removed', { reason: 'reset', passkeys: 0, sessions: 0, grants: 0 }],
    [['user', 'unlock', id], 'user_unlocked', { wasLocked: false }],
    [['user', 'disable', id], 'user_disabled', { sessions: 0, grants: 0 }],
    [['user', 'enable', id], 'user_enabled', {}],
    [['user', 'revoke-sessions', id], 'sessions_revoked', { sessions: 0, grants: 0 }],
  ];
  for (const [args, event, fields] of expected) {
    const { audit } = await change(args);
    assert.equal(audit.event, event, args.join(' '));
    assert.equal(audit.accountId, id, args.join(' '));
    for (const [k, v] of Object.entries(fields)) assert.equal(audit[k], v, `${args.join(' ')}: ${k}`);
  }
  const pw = await change(['user', 'set-password', id, '--password-stdin'], 'another pass phrase');
  assert.deepEqual([pw.audit.event, pw.audit.accountId, pw.audit.sessions, pw.audit.grants], ['password_changed', id, 0, 0]);
  // A reset of a factor that is not there changes nothing: no audit line.
  const noop = await cli(['user', 'reset-mfa', id, '--json']);
  assert.equal(noop.code, 0, noop.stderr);
  assert.equal(noop.stderr, '');
  assert.deepEqual([(await change(['user', 'delete', id])).audit.event], ['user_deleted']);

  const keys = await change(['keys', 'rotate']);
  assert.equal(keys.audit.event, 'signing_keys_rotated');
  assert.deepEqual(keys.audit.current, keys.out.keys.filter((k: any) => k.current).map((k: any) => k.kid));
  assert.deepEqual([keys.audit.retired, keys.audit.retiredUntil, keys.audit.removed], [keys.out.retired, keys.out.retired_until, keys.out.removed]);
  const stored = JSON.parse((await db.get('lk:keys:signing'))!) as { d?: string }[];
  for (const k of stored) if (k.d) assert.ok(!JSON.stringify(keys.audit).includes(k.d));

  // Reads are not audited.
  for (const args of [['user', 'list'], ['client', 'list'], ['keys', 'list'], ['resource', 'list']]) {
    const r = await cli([...args, '--json']);
    assert.equal(r.stderr, '', args.join(' '));
  }
  // For people: the text on stdout, the audit line (one JSON line) on stderr.
  const human = await cli(['client', 'create', '--name', 'Readable', '--grants', 'client_credentials', '--scope', readScope]);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /^client_id {6}\S+\nclient_secret {2}\S+\nThe client secret is shown only now/);
  assert.equal(auditLines(human.stderr).length, 1);
  assert.equal(human.stderr.split('\n').length, 2, 'one line');
  // LOG_LEVEL=silent turns the audit line off (as it does the server's log).
  const quiet = await cli(['client', 'create', '--name', 'Quiet', '--grants', 'client_credentials', '--scope', readScope, '--json'], { env: { LOG_LEVEL: 'silent' } });
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.equal(quiet.stderr, '');
});

test('user create --admin, revoke-admin, grant-admin; the CLI\'s changes reach the activity log naming the operator', async () => {
  const email = `admin-${run}@example.org`;
  const created = await json(['user', 'create', '--email', email, '--admin', '--password-stdin'], 'a long passphrase');
  assert.equal(created.admin, true);
  assert.equal((await json(['user', 'revoke-admin', email])).admin, false);
  assert.equal((await json(['user', 'grant-admin', created.id])).admin, true);
  assert.equal((await json(['user', 'show', created.id])).admin, true);
  const entries = (await store.streamRevRange(keys.activity, '+', '-', 50)).map((e) => JSON.parse(e.entry) as Record<string, any>);
  const mine = entries.filter((e) => e.accountId === created.id).map((e) => e.event);
  assert.deepEqual(mine, ['admin_granted', 'admin_revoked', 'user_created']);
  for (const e of entries.filter((x) => x.accountId === created.id)) {
    assert.equal(e.actor.kind, 'cli');
    assert.equal(e.source, 'cli');
  }
  assert.ok(!JSON.stringify(entries).includes('a long passphrase'));
});
