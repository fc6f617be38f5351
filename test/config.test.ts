import { availableParallelism } from 'node:os';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { runLatchkeyToExit } from './helpers/process.ts';
import { configDocs, loadConfig } from '../src/config.ts';
import { problems, SECRETS_KEY } from './helpers/config.ts';

describe('loadConfig', () => {
  test('defaults', () => {
    assert.deepEqual(loadConfig({}), {
      NODE_ENV: 'development',
      PORT: 3000,
      HOST: '0.0.0.0',
      ISSUER: 'http://localhost:3000',
      LOG_LEVEL: 'info',
      TRUST_PROXY: 0,
      UPSTREAM_TIMEOUT_MS: 10000,
      REDIS_TIMEOUT_MS: 1000,
      MFA_POLICY: 'required',
      PASSKEYS: 'optional',
      WEBAUTHN_RP_ID: 'localhost',
      WEBAUTHN_ORIGINS: ['http://localhost:3000'],
      WORKERS: 1,
      PASSWORD_BREACH_CHECK: 'off',
      PASSWORD_BREACH_CHECK_URL: 'https://api.pwnedpasswords.com',
      ADMIN_ACTIVITY_MAX: 100000,
      ADMIN_ACTIVITY_TOKEN_COUNT_DAYS: 14,
      BACKCHANNEL_LOGOUT_ALLOW_PRIVATE: false,
      ACCOUNT_SUDO_SECONDS: 300,
      ADMIN_ACTIVITY_ANONYMOUS_MAX: 20000,
      INTROSPECTION_INACTIVE_PER_MINUTE: 300,
      LEAN_PATH: 'on',
      INVITATION_TTL_SECONDS: 7 * 24 * 60 * 60,
      LOCKOUT_ACCOUNT_MAX_FAILURES: 10,
      LOCKOUT_ACCOUNT_WINDOW_SECONDS: 86400,
      LOCKOUT_IP_MAX_FAILURES: 50,
      LOCKOUT_IP_WINDOW_SECONDS: 3600,
      CLIENT_AUTH_MAX_FAILURES: 10,
      CLIENT_AUTH_WINDOW_SECONDS: 3600,
      DEVICE_CODE_MAX_FAILURES: 10,
      DEVICE_CODE_WINDOW_SECONDS: 3600,
      ADMIN_API_IP_PER_MINUTE: 60,
      ADMIN_API_TOKEN_PER_MINUTE: 1200,
      SETUP_LINK_TTL_SECONDS: 3600,
      SIGNUP: 'off',
      EMAIL: 'on',
      MAIL_FROM: 'Latchkey <no-reply@localhost>',
      BRAND_NAME: 'Latchkey',
      BRAND_ACCENT: '#2f5bd3',
      PASSWORD_RESET_TTL_SECONDS: 1800,
      EMAIL_VERIFICATION_TTL_SECONDS: 86400,
      EMAIL_LINKS_PER_ADDRESS_PER_HOUR: 5,
      EMAIL_LINKS_PER_IP_PER_HOUR: 30,
    });
  });

  test('ADMIN_BOOTSTRAP_EMAIL and ADMIN_BOOTSTRAP_PASSWORD_FILE come together; SETUP_LINK_TTL_SECONDS is bounded', () => {
    assert.throws(() => loadConfig({ ADMIN_BOOTSTRAP_EMAIL: 'ops@example.com' }), /ADMIN_BOOTSTRAP_PASSWORD_FILE: is required with the other ADMIN_BOOTSTRAP_ setting/);
    assert.throws(() => loadConfig({ ADMIN_BOOTSTRAP_PASSWORD_FILE: '/run/secrets/admin' }), /ADMIN_BOOTSTRAP_EMAIL: is required/);
    assert.equal(loadConfig({ ADMIN_BOOTSTRAP_EMAIL: 'ops@example.com', ADMIN_BOOTSTRAP_PASSWORD_FILE: '/run/secrets/admin' }).ADMIN_BOOTSTRAP_PASSWORD_FILE, '/run/secrets/admin');
    assert.throws(() => loadConfig({ SETUP_LINK_TTL_SECONDS: '10' }), /SETUP_LINK_TTL_SECONDS/);
  });


  test('email: on by default outside production; in production on needs SMTP_URL, and unset stays off without it', () => {
    const production = { NODE_ENV: 'production', REDIS_URL: 'redis://r:6379', ISSUER: 'https://id.example.com', SECRETS_KEY: Buffer.alloc(32).toString('base64') };
    assert.equal(loadConfig(production).EMAIL, 'off', 'an existing deployment without SMTP_URL still boots');
    assert.equal(loadConfig({ ...production, SMTP_URL: 'smtp://mail:587' }).EMAIL, 'on');
    assert.equal(loadConfig({ ...production, SMTP_URL: 'smtp://mail:587' }).MAIL_FROM, 'Latchkey <no-reply@id.example.com>');
    const lines = problems({ ...production, EMAIL: 'on' });
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /^SMTP_URL: is required in production when EMAIL is on .*set EMAIL=off/);
    assert.match(problems({ SMTP_URL: 'http://mail' })[0]!, /^SMTP_URL: must be an smtp:\/\/ or smtps:\/\/ URL/);
    // The URL's password is never echoed.
    assert.ok(!problems({ SMTP_URL: 'smtp://user:hunter2@mail:587', MAIL_FROM: 'x' }).join('').includes('hunter2'));
    // Query options: the two it passes on are checked, any other is refused instead of silently ignored.
    assert.equal(loadConfig({ SMTP_URL: 'smtp://mail:587?requireTLS=true&name=id.example.com' }).SMTP_URL, 'smtp://mail:587?requireTLS=true&name=id.example.com');
    assert.match(problems({ SMTP_URL: 'smtp://user:hunter2@mail:587?pool=true' })[0]!, /^SMTP_URL: unknown query option "pool" \(known: requireTLS, name\)/);
    assert.match(problems({ SMTP_URL: 'smtp://mail:587?requireTLS=yes' })[0]!, /^SMTP_URL: requireTLS must be true or false/);
    assert.ok(!problems({ SMTP_URL: 'smtp://user:hunter2@mail:587?pool=1' }).join('').includes('hunter2'));
  });

  test('BACKCHANNEL_LOGOUT_ALLOW_PRIVATE: true or false, nothing else', () => {
    assert.equal(loadConfig({ BACKCHANNEL_LOGOUT_ALLOW_PRIVATE: 'true' }).BACKCHANNEL_LOGOUT_ALLOW_PRIVATE, true);
    assert.equal(loadConfig({ BACKCHANNEL_LOGOUT_ALLOW_PRIVATE: 'false' }).BACKCHANNEL_LOGOUT_ALLOW_PRIVATE, false);
    assert.throws(() => loadConfig({ BACKCHANNEL_LOGOUT_ALLOW_PRIVATE: 'sometimes' }), /BACKCHANNEL_LOGOUT_ALLOW_PRIVATE: must be true or false/);
  });

  test('passkeys: RP id and origins default to the issuer; an RP id must be its host or a suffix of it', () => {
    const issuer = { ISSUER: 'https://login.example.com' };
    assert.equal(loadConfig(issuer).WEBAUTHN_RP_ID, 'login.example.com');
    assert.deepEqual(loadConfig(issuer).WEBAUTHN_ORIGINS, ['https://login.example.com']);
    assert.equal(loadConfig({ ...issuer, WEBAUTHN_RP_ID: 'example.com' }).WEBAUTHN_RP_ID, 'example.com');
    assert.throws(() => loadConfig({ ...issuer, WEBAUTHN_RP_ID: 'other.com' }), /WEBAUTHN_RP_ID: must be the issuer's host name \(login.example.com\) or a suffix of it/);
    assert.throws(() => loadConfig({ ...issuer, WEBAUTHN_RP_ID: 'Example.com/x' }), /WEBAUTHN_RP_ID: must be a lower-case host name/);
    assert.deepEqual(loadConfig({ ...issuer, WEBAUTHN_ORIGINS: 'https://login.example.com, https://app.example.com:8443' }).WEBAUTHN_ORIGINS, ['https://login.example.com', 'https://app.example.com:8443']);
    assert.throws(() => loadConfig({ ...issuer, WEBAUTHN_ORIGINS: 'https://login.example.com/path' }), /WEBAUTHN_ORIGINS[.0-9]*: each must be an origin/);
    assert.throws(() => loadConfig({ PASSKEYS: 'always' }), /PASSKEYS/);
  });

  test('WORKERS: every CPU in production, one process otherwise; several need Redis', () => {
    const production = { NODE_ENV: 'production', REDIS_URL: 'redis://r:6379', ISSUER: 'https://id.example.com', SECRETS_KEY: Buffer.alloc(32).toString('base64') };
    assert.equal(loadConfig(production).WORKERS, availableParallelism());
    assert.equal(loadConfig({ ...production, WORKERS: '3' }).WORKERS, 3);
    assert.equal(loadConfig({ WORKERS: '2', REDIS_URL: 'redis://r:6379' }).WORKERS, 2);
    assert.throws(() => loadConfig({ WORKERS: '2' }), /WORKERS: more than 1 needs Redis/);
    assert.throws(() => loadConfig({ WORKERS: '0' }), /WORKERS/);
  });

  test('reads every variable', () => {
    const config = loadConfig({
      NODE_ENV: 'test',
      PORT: '8080',
      HOST: '127.0.0.1',
      ISSUER: 'https://id.example.com/',
      REDIS_URL: 'rediss://:pw@redis.internal:6380/2',
      LOG_LEVEL: 'warn',
      TRUST_PROXY: 'true',
      REDIS_TIMEOUT_MS: '250',
      SIGNING_KEYS_FILE: '/etc/latchkey/jwks.json',
      COOKIE_KEYS: `${'a'.repeat(32)}, ${'b'.repeat(40)}`,
      SECRETS_KEY: SECRETS_KEY,
      MFA_POLICY: 'optional',
    });
    assert.equal(config.PORT, 8080);
    assert.equal(config.ISSUER, 'https://id.example.com', 'a trailing slash is dropped');
    assert.equal(config.REDIS_URL, 'rediss://:pw@redis.internal:6380/2');
    assert.equal(config.TRUST_PROXY, 1, 'true is one proxy hop');
    assert.equal(config.REDIS_TIMEOUT_MS, 250);
    assert.deepEqual(config.COOKIE_KEYS, ['a'.repeat(32), 'b'.repeat(40)]);
    assert.equal(config.SECRETS_KEY, SECRETS_KEY);
    assert.equal(config.MFA_POLICY, 'optional');
  });

  test('TRUST_PROXY: a number of proxy hops; true is one, false none', () => {
    for (const [value, hops] of [['true', 1], ['yes', 1], ['false', 0], ['no', 0], ['0', 0], ['1', 1], ['2', 2]] as const) {
      assert.equal(loadConfig({ TRUST_PROXY: value }).TRUST_PROXY, hops, value);
    }
    for (const bad of ['-1', '1.5', 'maybe', '100']) assert.match(problems({ TRUST_PROXY: bad })[0]!, /^TRUST_PROXY: must be the number of proxies in front/);
  });

  test('SECRETS_KEY: 32 bytes as base64, base64url or hex; anything else is refused without echoing it', () => {
    const bytes = Buffer.alloc(32, 0xfb);
    for (const form of [bytes.toString('base64'), bytes.toString('base64url'), bytes.toString('hex'), bytes.toString('hex').toUpperCase()]) {
      assert.equal(loadConfig({ SECRETS_KEY: form }).SECRETS_KEY, form);
    }
    for (const bad of ['too-short-secret-value', Buffer.alloc(31, 7).toString('base64'), Buffer.alloc(33, 7).toString('hex'), `${Buffer.alloc(32, 7).toString('hex').slice(0, 63)}z`]) {
      const lines = problems({ SECRETS_KEY: bad });
      assert.equal(lines.length, 1);
      assert.match(lines[0]!, /^SECRETS_KEY: .*base64 or hex/);
      assert.ok(!lines[0]!.includes(bad), lines[0]);
    }
  });

  test('the default issuer follows PORT', () => {
    assert.equal(loadConfig({ PORT: '4000' }).ISSUER, 'http://localhost:4000');
  });

  test('an empty variable counts as unset', () => {
    assert.deepEqual(loadConfig({ PORT: '', REDIS_URL: '', ISSUER: '', LOG_LEVEL: '' }), loadConfig({}));
  });

  test('variables outside the schema are ignored', () => {
    assert.deepEqual(loadConfig({ PATH: '/usr/bin', HOME: '/root', FOO: 'bar' }), loadConfig({}));
  });

  for (const [name, value] of [
    ['PORT', 'abc'],
    ['PORT', '70000'],
    ['PORT', '80.5'],
    ['LOG_LEVEL', 'loud'],
    ['REDIS_URL', 'http://x'],
    ['REDIS_URL', 'not a url'],
    ['ISSUER', 'ftp://x'],
    ['ISSUER', 'https://id.example.com/?tenant=1'],
    ['TRUST_PROXY', 'maybe'],
    ['NODE_ENV', 'prod'],
    ['REDIS_TIMEOUT_MS', '0'],
    ['MFA_POLICY', 'sometimes'],
  ] as const) {
    test(`${name}=${value} is one line naming ${name}`, () => {
      const lines = problems({ [name]: value });
      assert.equal(lines.length, 1, lines.join('\n'));
      assert.match(lines[0]!, new RegExp(`^${name}: `));
      assert.ok(lines[0]!.includes(value), 'the line shows the value it refused');
      assert.ok(!lines[0]!.includes('\n'));
    });
  }

  test('the URL variables say which schemes they take', () => {
    assert.match(problems({ REDIS_URL: 'http://x' })[0]!, /redis:\/\/ or rediss:\/\//);
    assert.match(problems({ ISSUER: 'ftp://x' })[0]!, /http:\/\/ or https:\/\//);
  });

  test('several problems: one line each', () => {
    const lines = problems({ PORT: 'abc', LOG_LEVEL: 'loud', REDIS_URL: 'http://x', ISSUER: 'ftp://x', TRUST_PROXY: 'maybe' });
    assert.deepEqual(lines.map((l) => l.split(':')[0]).sort(), ['ISSUER', 'LOG_LEVEL', 'PORT', 'REDIS_URL', 'TRUST_PROXY']);
  });

  test('secrets are never echoed', () => {
    const cookie = problems({ COOKIE_KEYS: 'too-short-secret-value' });
    assert.equal(cookie.length, 1);
    assert.match(cookie[0]!, /^COOKIE_KEYS/);
    assert.ok(!cookie[0]!.includes('too-short-secret-value'));
    // A Redis URL's password, even in a URL refused for its scheme.
    for (const url of ['http://:hunter2-password@redis.internal:6379', 'redis+tls://admin:hunter2-password@redis.internal']) {
      const lines = problems({ REDIS_URL: url });
      assert.equal(lines.length, 1);
      assert.match(lines[0]!, /^REDIS_URL: /);
      assert.ok(!lines[0]!.includes('hunter2'), lines[0]);
      assert.ok(lines[0]!.includes('redis.internal'), 'the rest of the URL is still shown');
    }
  });

  describe('production guardrails', () => {
    test('refuses to start without REDIS_URL', () => {
      const lines = problems({ NODE_ENV: 'production', ISSUER: 'https://id.example.com', SECRETS_KEY });
      assert.equal(lines.length, 1);
      assert.match(lines[0]!, /^REDIS_URL: .*production/);
    });

    test('refuses to start without SECRETS_KEY', () => {
      const lines = problems({ NODE_ENV: 'production', ISSUER: 'https://id.example.com', REDIS_URL: 'redis://r:6379' });
      assert.equal(lines.length, 1);
      assert.match(lines[0]!, /^SECRETS_KEY: .*production/);
    });

    test('refuses an http issuer that is not localhost', () => {
      const lines = problems({ NODE_ENV: 'production', REDIS_URL: 'redis://r:6379', ISSUER: 'http://example.com', SECRETS_KEY });
      assert.equal(lines.length, 1);
      assert.match(lines[0]!, /^ISSUER: .*https/);
    });

    test('reports both at once', () => {
      const lines = problems({ NODE_ENV: 'production', ISSUER: 'http://example.com' });
      assert.deepEqual(lines.map((l) => l.split(':')[0]).sort(), ['ISSUER', 'REDIS_URL', 'SECRETS_KEY']);
    });

    for (const issuer of ['http://localhost', 'http://localhost:3000', 'http://127.0.0.1:8080', 'http://[::1]:3000', 'https://id.example.com']) {
      test(`allows ${issuer}`, () => {
        const config = loadConfig({ NODE_ENV: 'production', REDIS_URL: 'redis://r:6379', ISSUER: issuer, SECRETS_KEY });
        assert.equal(config.NODE_ENV, 'production');
        assert.equal(config.ISSUER, issuer);
      });
    }

    test('the default issuer (http://localhost:PORT) is allowed', () => {
      assert.equal(loadConfig({ NODE_ENV: 'production', REDIS_URL: 'redis://r:6379', SECRETS_KEY }).ISSUER, 'http://localhost:3000');
    });

    test('development and test need neither', () => {
      assert.equal(loadConfig({ NODE_ENV: 'development', ISSUER: 'http://example.com' }).REDIS_URL, undefined);
      assert.equal(loadConfig({ NODE_ENV: 'test', ISSUER: 'http://example.com' }).ISSUER, 'http://example.com');
    });
  });

  test('every variable is documented', () => {
    for (const [name, doc] of Object.entries(configDocs)) assert.ok(doc.length > 10, name);
  });
});

describe('the server refuses a bad configuration at boot', () => {
  /** `node src/main.ts` with only the given configuration variables (none of this process's). */
  const boot = (vars: Record<string, string>) => runLatchkeyToExit(vars, { dropFromEnv: Object.keys(configDocs) });

  test('PORT=abc: exit code 1 (not killed by the 15 s guard: it does not wait on anything), one clear stderr line', async () => {
    const run = await boot({ PORT: 'abc' });
    assert.equal(run.code, 1, run.stderr);
    const lines = run.stderr.trim().split('\n');
    assert.equal(lines.length, 1, run.stderr);
    assert.match(lines[0]!, /^latchkey: configuration: PORT: .*"abc"/);
    assert.equal(run.stdout, '', 'nothing else was started');
  });

  test('one stderr line per problem', async () => {
    const run = await boot({ PORT: 'abc', LOG_LEVEL: 'loud', REDIS_URL: 'http://x', ISSUER: 'ftp://x', TRUST_PROXY: 'maybe' });
    assert.equal(run.code, 1, run.stderr);
    const lines = run.stderr.trim().split('\n');
    assert.deepEqual(lines.map((l) => /^latchkey: configuration: ([A-Z_]+): /.exec(l)?.[1]).sort(), ['ISSUER', 'LOG_LEVEL', 'PORT', 'REDIS_URL', 'TRUST_PROXY']);
  });

  test('production without REDIS_URL refuses to start', async () => {
    const run = await boot({ NODE_ENV: 'production', ISSUER: 'https://id.example.com', PORT: '0', SECRETS_KEY });
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr.trim(), /^latchkey: configuration: REDIS_URL: .*production[^\n]*$/);
  });
});
