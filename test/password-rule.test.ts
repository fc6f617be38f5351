import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { PasswordRule } from '../src/accounts/password-rule.ts';
import { adminApiUri } from '../src/admin/api.ts';
import { runCli } from './helpers/cli.ts';
import { endpoints } from './helpers/flow.ts';
import { freePort, type TestRedis } from './helpers/redis.ts';
import type { TestServer } from './helpers/server.ts';
import { useWorld } from './helpers/world.ts';

/**
 * NIST SP 800-63B for every new password: refused when it is common (a list shipped with Latchkey),
 * holds the email address's name, or — with PASSWORD_BREACH_CHECK=hibp — appears in Have I Been Pwned's
 * range API. The same rule at the CLI, the admin API, the console and /account (those two are tested
 * beside their pages); an online check that cannot answer never blocks anyone.
 */
const BREACHED = 'a passphrase that leaked in 2019';
const STRONG = 'violet lantern under quiet rain';

/** A loopback Pwned Passwords range API knowing BREACHED; it pads every answer as the real one does. */
interface RangeApi {
  url: string;
  requests: { url: string; headers: IncomingHttpHeaders }[];
  close(): Promise<void>;
}

async function startRangeApi(behaviour: 'answer' | 'hang' | 'fail' = 'answer'): Promise<RangeApi> {
  const sha1 = createHash('sha1').update(BREACHED).digest('hex').toUpperCase();
  const requests: RangeApi['requests'] = [];
  const server: Server = createServer((req, res) => {
    requests.push({ url: req.url!, headers: req.headers });
    if (behaviour === 'hang') return;
    if (behaviour === 'fail') return res.writeHead(503).end();
    const prefix = req.url!.slice('/range/'.length);
    const lines = ['0018A45C4D1DEF81644B54AB7F969B88D65:3', '00D4F6E8FA6EECAD2A3AA415EEC418D38EC:0'];
    if (prefix === sha1.slice(0, 5)) lines.push(`${sha1.slice(5)}:42`);
    // A padding line with the suffix of STRONG: a count of 0 is not a breach.
    const strong = createHash('sha1').update(STRONG).digest('hex').toUpperCase();
    if (prefix === strong.slice(0, 5)) lines.push(`${strong.slice(5)}:0`);
    res.writeHead(200, { 'content-type': 'text/plain' }).end(lines.join('\r\n'));
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

describe('the password rule', () => {
  const rule = new PasswordRule();

  test('refuses common passwords, whatever their case, saying why', async () => {
    for (const weak of ['password', '12345678', 'Password', 'PASSWORD1', 'qwertyuiop', 'iloveyou']) {
      assert.equal(await rule.problem(weak, 'someone@example.org'), 'this password is among the most common ones; choose another', weak);
    }
  });

  test('refuses a password holding the email’s name (3 characters or more), case-insensitively', async () => {
    assert.match((await rule.problem('Grace.Hopper-1906!', 'grace.hopper@example.org')) ?? '', /contains the name of the email address/);
    assert.match((await rule.problem('my name is ADA, truly', 'ada@example.org')) ?? '', /contains the name of the email address/);
    assert.equal(await rule.problem('always a long walk home', 'al@example.org'), undefined, 'a two-letter name is part of too many words');
  });

  test('keeps the length limits and accepts a good passphrase', async () => {
    assert.equal(await rule.problem('short', 'someone@example.org'), 'the password needs at least 8 characters');
    assert.match((await rule.problem('x'.repeat(1025), 'someone@example.org')) ?? '', /at most 1024/);
    assert.equal(await rule.problem(STRONG, 'someone@example.org'), undefined);
  });

  describe('the online range check (PASSWORD_BREACH_CHECK=hibp)', () => {
    let range: RangeApi;
    before(async () => (range = await startRangeApi()));
    after(() => range.close());

    test('refuses a password the range API lists; sends only a 5-character prefix, asking for padding', async () => {
      const online = new PasswordRule({ breachCheck: 'hibp', breachCheckUrl: range.url });
      assert.equal(await online.problem(BREACHED, 'someone@example.org'), 'this password appears in known data breaches; choose another');
      const sha1 = createHash('sha1').update(BREACHED).digest('hex').toUpperCase();
      const asked = range.requests.at(-1)!;
      assert.equal(asked.url, `/range/${sha1.slice(0, 5)}`);
      assert.equal(asked.headers['add-padding'], 'true');
      assert.ok(!JSON.stringify(asked).includes(sha1.slice(5, 15)), 'no more of the hash leaves');
      assert.equal(await online.problem(STRONG, 'someone@example.org'), undefined, 'not listed, or listed with a count of 0 (padding)');
    });

    test('off by default: nothing is asked', async () => {
      const before = range.requests.length;
      assert.equal(await rule.problem(BREACHED, 'someone@example.org'), undefined);
      assert.equal(range.requests.length, before);
    });

    test('an API that is down, fails or does not answer in time never blocks: accepted, and the operator told', async () => {
      const hanging = await startRangeApi('hang');
      const failing = await startRangeApi('fail');
      const down = `http://127.0.0.1:${await freePort()}`;
      try {
        for (const [what, url, timeout] of [['down', down, 2000], ['failing', failing.url, 2000], ['hanging', hanging.url, 300]] as const) {
          const told: string[] = [];
          const online = new PasswordRule({ breachCheck: 'hibp', breachCheckUrl: url, breachCheckTimeoutMs: timeout, onBreachCheckUnavailable: (reason) => told.push(reason) });
          const started = performance.now();
          assert.equal(await online.problem(BREACHED, 'someone@example.org'), undefined, what);
          assert.ok(performance.now() - started < timeout + 500, `${what}: answered within the deadline`);
          assert.equal(told.length, 1, `${what}: one warning`);
          assert.ok(!told[0]!.includes(BREACHED), 'the warning holds no password');
        }
      } finally {
        await hanging.close();
        await failing.close();
      }
    });
  });
});

describe('every way to set a password applies the rule', () => {
  let redis: TestRedis;
  let server: TestServer;
  useWorld((setup) => ({ redis, server } = setup));

  const weak = (email: string) => [
    ['password', /among the most common ones; choose another/],
    ['12345678', /among the most common ones; choose another/],
    [`${email.slice(0, email.indexOf('@'))}-secret-2026`, /contains the name of the email address/],
  ] as const;

  test('the admin API: creating a user and setting a password answer 400 with the reason', async () => {
    const c = await server.app.registry.createClient({ name: 'ops', grants: ['client_credentials'], scope: 'latchkey:admin' }, async () => {});
    const res = await endpoints(server.issuer).token({ clientId: c.clientId, secret: c.secret! }, { grant_type: 'client_credentials', scope: 'latchkey:admin', resource: adminApiUri(server.issuer) });
    const token = String(res.body.access_token);
    const api = async (method: string, path: string, body: unknown) => {
      const r = await fetch(`${server.issuer}/admin/api${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: r.status, type: r.headers.get('content-type'), body: (await r.json()) as { detail: string } };
    };
    const email = 'hedy@example.org';
    for (const [password, why] of weak(email)) {
      const refused = await api('POST', '/v1/users', { email, password });
      assert.equal(refused.status, 400, password);
      assert.match(refused.type ?? '', /^application\/problem\+json/);
      assert.match(refused.body.detail, why);
    }
    assert.equal(await server.app.accounts.findByEmail(email), undefined, 'nobody was created');
    const created = await api('POST', '/v1/users', { email, password: STRONG });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = (created.body as unknown as { user: { id: string } }).user.id;
    for (const [password, why] of weak(email)) {
      const refused = await api('PUT', `/v1/users/${id}/password`, { password });
      assert.equal(refused.status, 400, password);
      assert.match(refused.body.detail, why);
      assert.equal(await server.app.accounts.authenticate(email, password), undefined);
    }
  });

  test('the CLI: user create and user set-password exit 2 with the reason', async () => {
    const cli = (args: string[], stdin: string, env: Record<string, string> = {}) => runCli(args, { env: { REDIS_URL: redis.url, ...env }, stdin });
    const email = 'barbara@example.org';
    for (const [password, why] of weak(email)) {
      const refused = await cli(['user', 'create', '--email', email, '--password-stdin'], `${password}\n`);
      assert.equal(refused.code, 2, refused.stderr);
      assert.match(refused.stderr, why);
    }
    const created = await cli(['user', 'create', '--email', email, '--password-stdin', '--json'], `${STRONG}\n`);
    assert.equal(created.code, 0, created.stderr);
    for (const [password, why] of weak(email)) {
      const refused = await cli(['user', 'set-password', email, '--password-stdin'], `${password}\n`);
      assert.equal(refused.code, 2, refused.stderr);
      assert.match(refused.stderr, why);
    }

    // With the online check on: a listed password is refused; an API that is down blocks nobody.
    const range = await startRangeApi();
    try {
      const listed = await cli(['user', 'set-password', email, '--password-stdin'], `${BREACHED}\n`, { PASSWORD_BREACH_CHECK: 'hibp', PASSWORD_BREACH_CHECK_URL: range.url });
      assert.equal(listed.code, 2, listed.stderr);
      assert.match(listed.stderr, /appears in known data breaches; choose another/);
      assert.equal(range.requests.length, 1);
    } finally {
      await range.close();
    }
    const started = performance.now();
    const unreachable = await cli(['user', 'set-password', email, '--password-stdin'], `${BREACHED}\n`, { PASSWORD_BREACH_CHECK: 'hibp', PASSWORD_BREACH_CHECK_URL: `http://127.0.0.1:${await freePort()}` });
    assert.equal(unreachable.code, 0, unreachable.stderr);
    assert.ok(performance.now() - started < 10_000);
    assert.match(unreachable.stderr, /breached-password check did not answer/);
    assert.ok(!unreachable.stderr.includes(BREACHED));
  });
});
