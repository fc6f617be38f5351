import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { basic, endpoints, signIn, signInAndRedeem } from './helpers/flow.ts';
import { freePort, startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { createWorld, type World } from './helpers/world.ts';
import { createLogger } from '../src/observability/logger.ts';
import { audit } from '../src/observability/audit.ts';

/**
 * Logs and metrics of a real server on a real Redis: one sign-in, the token endpoint, introspection,
 * refresh (and a reuse), revocation, client credentials and a failed client authentication — then
 * every log line is checked for secrets and /metrics for what was counted.
 */
let redis: TestRedis;
let server: TestServer;
let world: World;

/** Every secret value the test handled; none may appear in any log line. */
const secrets = new Map<string, string>();
function secret(name: string, value: string | undefined) {
  if (value && value.length >= 8) secrets.set(`${name}#${secrets.size}`, value);
}

let interactionUid = '';

before(async () => {
  redis = await startRedis();
  server = await startServer({ redisUrl: redis.url });
  world = await createWorld(server);
  const call = endpoints(server.issuer);
  secret('password', world.user.password);
  secret('TOTP secret', world.user.totpSecret);
  world.user.recoveryCodes.forEach((code, i) => secret(`recovery code ${i}`, code));
  for (const [name, c] of Object.entries({ shop: world.shop, other: world.other, firstParty: world.firstParty, machine: world.machine, api: world.api, jwtApi: world.jwtApi })) {
    secret(`${name} client_secret`, c.secret);
  }

  const { flow, tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid profile email offline_access api:read' });
  secret('code', flow.code);
  secret('code_verifier', flow.verifier);
  secret('access_token', tokens.access_token);
  secret('refresh_token', tokens.refresh_token);
  secret('id_token', tokens.id_token);
  for (const line of flow.jar.setCookieLines) {
    const pair = line.split(';')[0]!;
    secret(`cookie ${pair.slice(0, pair.indexOf('='))}`, pair.slice(pair.indexOf('=') + 1));
  }
  const csrf = /name="_csrf"[^>]*value="([^"]+)"/.exec(flow.loginPage?.html ?? '')?.[1];
  secret('_csrf', csrf);
  interactionUid = /\/interaction\/([^/]+)/.exec(flow.loginPage?.url.pathname ?? '')?.[1] ?? '';
  assert.ok(interactionUid, 'the flow went through an interaction page');

  // A sign-in with a recovery code, after a wrong one: neither reaches a log line.
  secret('wrong recovery code', 'zzzzz-zzzzz');
  const wrongRecovery = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid', secondFactor: { recoveryCode: 'zzzzz-zzzzz' } });
  assert.equal(wrongRecovery.code, undefined);
  const recovered = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid', secondFactor: { recoveryCode: world.user.recoveryCodes[0]! } });
  assert.ok(recovered.code, 'a recovery code signs in');

  // A password typed into the email field, again and again until the lockout: it must not reach the log.
  const typedAsEmail = 'Hunter2-typed-in-the-email-field';
  secret('password typed as the email', typedAsEmail);
  secret('password typed as the email, normalized', typedAsEmail.toLowerCase());
  for (let i = 0; i < 10; i += 1) await signIn({ issuer: server.issuer, client: world.shop, user: { email: typedAsEmail, password: 'anything at all' }, scope: 'openid', secondFactor: 'stop' });
  assert.ok(server.logs.some((l) => l.event === 'lockout_started' && typeof l.emailDigest === 'string'), 'the lockout was logged');
  await server.app.lockout.unlock({ account: typedAsEmail.toLowerCase() });
  assert.ok(server.logs.some((l) => l.event === 'lockout_ended' && typeof l.emailDigest === 'string'), 'and its end');

  // Introspection by the API (active), of a garbage token (inactive), and with a wrong secret (invalid_client).
  assert.equal((await call.introspect(world.api, tokens.access_token)).body.active, true);
  assert.equal((await call.introspect(world.api, 'not-a-token-at-all-0123456789')).body.active, false);
  const wrongSecret = 'definitely-the-wrong-secret-0123456789';
  secret('wrong client secret', wrongSecret);
  assert.equal((await call.introspect({ clientId: world.api.clientId, secret: wrongSecret }, tokens.access_token)).body.error, 'invalid_client');

  // Refresh, then reuse of the rotated refresh token (the grant is revoked).
  const refreshed = await call.refresh(world.shop, tokens.refresh_token!);
  assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
  secret('refreshed access_token', refreshed.body.access_token as string);
  secret('refreshed refresh_token', refreshed.body.refresh_token as string);
  secret('refreshed id_token', refreshed.body.id_token as string);
  const reuse = await call.refresh(world.shop, tokens.refresh_token!);
  assert.equal(reuse.body.error, 'invalid_grant');

  // A machine token, then its revocation.
  const machine = await call.token(world.machine, { grant_type: 'client_credentials', scope: 'api:read' });
  assert.equal(machine.status, 200, JSON.stringify(machine.body));
  secret('client_credentials access_token', machine.body.access_token as string);
  assert.equal((await call.revoke(world.machine, machine.body.access_token as string)).status, 200);
});

after(async () => {
  await server?.close();
  await redis?.dispose();
});

async function scrape(url: string) {
  const res = await fetch(url);
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
}

/** The value of one sample line, e.g. `latchkey_tokens_issued_total{grant_type="…",token="…"}`. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

describe('logs', () => {
  it('never contain a secret the test handled: password, client secrets, tokens, code, cookies', () => {
    assert.ok(secrets.size >= 15, `collected ${secrets.size} secrets`);
    assert.ok(server.logs.length >= 12, `the flow was logged (${server.logs.length} lines)`);
    const leaks: string[] = [];
    for (const entry of server.logs) {
      const line = JSON.stringify(entry);
      for (const [name, value] of secrets) if (line.includes(value)) leaks.push(`${name} in ${line.slice(0, 300)}`);
    }
    assert.deepEqual(leaks, []);
  });

  it('write one line per request with its id, method, route pattern, status and duration — never a path with ids or a query', () => {
    const requests = server.logs.filter((l) => l.msg === 'request');
    assert.ok(requests.length >= 12, `${requests.length} request lines`);
    for (const r of requests) {
      assert.match(String(r.requestId), /^[0-9a-f-]{36}$/);
      assert.equal(typeof r.method, 'string');
      assert.equal(typeof r.route, 'string');
      assert.equal(typeof r.status, 'number');
      assert.equal(typeof r.durationMs, 'number');
      assert.equal(r.path, undefined);
      assert.equal(r.url, undefined);
      assert.doesNotMatch(String(r.route), /\?/);
    }
    const routes = new Set(requests.map((r) => r.route));
    for (const route of ['authorization', 'token', 'introspection', 'revocation', '/interaction/:uid/login']) assert.ok(routes.has(route), `route ${route} in ${[...routes]}`);
    assert.ok(!server.logs.some((l) => JSON.stringify(l).includes(interactionUid)), 'the interaction uid is never logged');
    assert.equal(new Set(requests.map((r) => r.requestId)).size, requests.length, 'one line per request');
  });

  it("log oidc-provider's errors with error_detail: a client authentication failure and a refresh token reuse", () => {
    const failed = server.logs.find((l) => l.event === 'client_authentication_failed');
    assert.ok(failed, 'client_authentication_failed logged');
    assert.equal(failed.error, 'invalid_client');
    assert.equal(failed.oidcEvent, 'introspection.error');
    assert.equal(typeof failed.error_detail, 'string');
    assert.equal(failed.level, 40);
    const reuse = server.logs.find((l) => l.event === 'refresh_token_reuse_detected');
    assert.ok(reuse, 'refresh_token_reuse_detected logged');
    assert.equal(reuse.clientId, world.shop.clientId);
    assert.match(String(reuse.error_detail), /already used/);
  });
});

describe('metrics', () => {
  it('GET /metrics: Prometheus text with tokens, introspections, revocations, failures, reuse, latency by route and process metrics', async () => {
    const { status, type, text } = await scrape(`${server.issuer}/metrics`);
    assert.equal(status, 200);
    assert.match(type ?? '', /^text\/plain; version=0\.0\.4/);
    assert.ok(sample(text, 'process_cpu_user_seconds_total')! > 0, 'default process metrics');
    assert.equal(sample(text, 'latchkey_tokens_issued_total', { grant_type: 'authorization_code', token: 'access_token' }), 1);
    assert.equal(sample(text, 'latchkey_tokens_issued_total', { grant_type: 'authorization_code', token: 'refresh_token' }), 1);
    assert.equal(sample(text, 'latchkey_tokens_issued_total', { grant_type: 'authorization_code', token: 'id_token' }), 1);
    assert.equal(sample(text, 'latchkey_tokens_issued_total', { grant_type: 'refresh_token', token: 'access_token' }), 1);
    assert.equal(sample(text, 'latchkey_tokens_issued_total', { grant_type: 'client_credentials', token: 'access_token' }), 1);
    assert.equal(sample(text, 'latchkey_introspections_total', { result: 'active' }), 1);
    assert.equal(sample(text, 'latchkey_introspections_total', { result: 'inactive' }), 1);
    assert.equal(sample(text, 'latchkey_introspections_total', { result: 'error' }), 1);
    assert.equal(sample(text, 'latchkey_revocations_total', { result: 'ok' }), 1);
    assert.equal(sample(text, 'latchkey_client_authentication_failures_total', { route: 'introspection' }), 1);
    assert.equal(sample(text, 'latchkey_refresh_token_reuse_total'), 1);
    assert.equal(sample(text, 'latchkey_http_request_duration_seconds_count', { route: 'token', method: 'POST', status: '2xx' }), 3);
    assert.ok(sample(text, 'latchkey_http_request_duration_seconds_count', { route: '/interaction/:uid/login', method: 'POST' })! >= 1);
    // The code's consume; a refresh consumes, issues and indexes in one call.
    assert.ok(sample(text, 'latchkey_store_operation_duration_seconds_count', { store: 'redis', operation: 'consumeModel', outcome: 'ok' })! >= 1);
    assert.ok(sample(text, 'latchkey_store_operation_duration_seconds_count', { store: 'redis', operation: 'rotateModel', outcome: 'ok' })! >= 1);
    assert.ok(!text.includes(interactionUid), 'no raw path in a label');
    for (const m of text.matchAll(/route="([^"]*)"/g)) assert.match(m[1]!, /^([a-z_]+|\/[a-z0-9_:/.-]*|unmatched)$/, `route label ${m[1]}`);
  });

  it('counts Redis failures', async () => {
    const own = await startRedis({ ownServer: true });
    const s = await startServer({ redisUrl: own.url, env: { REDIS_TIMEOUT_MS: '200' } });
    try {
      await own.stop();
      const res = await fetch(`${s.issuer}/token`, {
        method: 'POST',
        headers: { authorization: basic('someone', 'something-secret'), 'content-type': 'application/x-www-form-urlencoded' },
        body: 'grant_type=client_credentials',
      });
      assert.equal(res.status, 503);
      assert.equal((await scrape(`${s.issuer}/readyz`)).status, 503);
      const { text } = await scrape(`${s.issuer}/metrics`);
      assert.ok(sample(text, 'latchkey_redis_errors_total', { kind: 'unavailable' })! >= 1, text.split('\n').filter((l) => l.includes('redis')).join('\n'));
    } finally {
      await s.close();
      await own.dispose();
    }
  });
});

describe('METRICS_PORT', () => {
  it('moves /metrics, /healthz and /readyz to their own port', async () => {
    const metricsPort = await freePort();
    const s = await startServer({ redisUrl: redis.url, env: { METRICS_PORT: String(metricsPort) } });
    try {
      for (const path of ['/metrics', '/healthz', '/readyz']) {
        assert.equal((await scrape(`${s.issuer}${path}`)).status, 404, `${path} not on the main port`);
        assert.equal((await scrape(`http://127.0.0.1:${metricsPort}${path}`)).status, 200, `${path} on METRICS_PORT`);
      }
      assert.match((await scrape(`http://127.0.0.1:${metricsPort}/metrics`)).text, /latchkey_http_request_duration_seconds/);
      assert.equal((await scrape(`${s.issuer}/.well-known/openid-configuration`)).status, 200);
    } finally {
      await s.close();
    }
  });
});

describe('logger redaction', () => {
  it('replaces passwords, tokens, codes, client secrets, cookies and Authorization headers', () => {
    const lines: string[] = [];
    const logger = createLogger({ level: 'info', format: 'json', destination: { write: (s: string) => void lines.push(s) } });
    const values = ['pw-0123456789', 'at-0123456789', 'rt-0123456789', 'it-0123456789', 'code-0123456789', 'cs-0123456789', 'ck-0123456789', 'Basic YWJjOmRlZg==', 'otp-0123456789', 'sc-0123456789'];
    logger.info({
      password: values[0],
      body: { access_token: values[1], refresh_token: values[2], id_token: values[3], code: values[4], client_secret: values[5] },
      req: { headers: { cookie: values[6], authorization: values[7] } },
      headers: { authorization: values[7] },
      totp: { secret: values[9] },
      form: { otp: values[8] },
    }, 'something with secrets');
    assert.equal(lines.length, 1);
    for (const v of values) assert.ok(!lines[0]!.includes(v), `${v} redacted in ${lines[0]}`);
    assert.match(lines[0]!, /\[redacted\]/);
  });

  it('audit lines: flat fields pass as they are, a secret-named or nested field is still redacted', () => {
    const lines: string[] = [];
    const logger = createLogger({ level: 'info', format: 'json', destination: { write: (s: string) => void lines.push(s) } });
    audit(logger, 'signin_succeeded', { accountId: 'a-1', amr: ['hwk', 'user'], ip: '127.0.0.1' });
    audit(logger, 'signin_failed', { reason: 'invalid', password: 'pw-0123456789' });
    audit(logger, 'signin_failed', { reason: 'invalid', detail: { token: 'at-0123456789' } });
    assert.equal(lines.length, 3);
    const [flat, named, nested] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual({ accountId: flat!.accountId, amr: flat!.amr, ip: flat!.ip }, { accountId: 'a-1', amr: ['hwk', 'user'], ip: '127.0.0.1' });
    assert.equal(named!.password, '[redacted]');
    assert.deepEqual(nested!.detail, { token: '[redacted]' });
  });
});
