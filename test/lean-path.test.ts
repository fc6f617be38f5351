import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import type { Adapter } from 'oidc-provider';
import { REGISTRY_CHANGES } from '../src/oidc/registry.ts';
import { keys } from '../src/storage/keys.ts';
import { basic } from './helpers/flow.ts';
import { freePort, startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer } from './helpers/server.ts';
import { createWorld, JWT_API_URI, API_URI, type World } from './helpers/world.ts';
import { copyRedis, prng, recorded, type Recorded } from './helpers/differential.ts';

/**
 * The lean path (LEAN_PATH, src/oidc/lean-path.ts) must be invisible: one generated corpus of token and
 * introspection requests is answered by a server with it on and by one with it off, on two Redis
 * instances holding the same data (one copied from the other) and on the same issuer URL, and every
 * answer, log line, audit event, metric, lockout counter and activity count must agree — while the
 * path with it on really answered the common shapes itself.
 */
const FORM = 'application/x-www-form-urlencoded';
const NOISE_HEADERS = new Set(['date', 'x-request-id', 'content-length', 'keep-alive', 'connection', 'retry-after']);

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

interface Req {
  name: string;
  path: string;
  headers: Record<string, string>;
  body: string;
}

/** A deterministic generator, so both servers get the same corpus. */

let redisOn: TestRedis;
let redisOff: TestRedis;
let port: number;
let world: World;
/** Registrations and tokens made before the copy: the same on both servers. */
let seed: {
  post: { clientId: string; secret: string };
  postWrongWay: { clientId: string; secret: string };
  rotated: { clientId: string; secret: string; old: string };
  overdue: { clientId: string; secret: string; old: string };
  victim: { clientId: string; secret: string };
  publicApp: { clientId: string };
  live: string[];
  expired: string;
  revoked: string;
  ghost: string;
  deleted: string;
  dpopBound: string;
  jwt: string;
  consumed: string;
};

before(async () => {
  [redisOn, redisOff] = await Promise.all([startRedis(), startRedis()]);
  port = await freePort();
  const server = await startServer({ redisUrl: redisOn.url, port, env: lenientLimits('on') });
  world = await createWorld(server);
  const { registry, provider } = server.app;
  const none = async () => {};
  const machineOf = async (name: string, extra: { secretIn?: 'body' } = {}) => {
    const c = await registry.createClient({ name, grants: ['client_credentials'], scope: 'api:read api:write', ...extra }, none);
    return { clientId: c.clientId, secret: c.secret! };
  };
  const post = await machineOf('Posting job', { secretIn: 'body' });
  const postWrongWay = await machineOf('Posting job sending its secret the wrong way', { secretIn: 'body' });
  const rotatedBefore = await machineOf('Rotated job');
  const rotated = { ...rotatedBefore, old: rotatedBefore.secret, secret: await registry.rotateSecret(rotatedBefore.clientId, { keepOldSeconds: 3600 }) };
  const overdueBefore = await machineOf('Overdue job');
  const overdue = { ...overdueBefore, old: overdueBefore.secret, secret: await registry.rotateSecret(overdueBefore.clientId, { keepOldSeconds: 3600 }) };
  // Its overlap is over (as written by a clock an hour on).
  const overdueRecord = JSON.parse((await server.store.get(keys.client(overdue.clientId)))!) as { previous_client_secret: { expires_at: number } };
  overdueRecord.previous_client_secret.expires_at = Math.floor(Date.now() / 1000) - 10;
  await server.store.set(keys.client(overdue.clientId), JSON.stringify(overdueRecord));
  await server.store.publish(REGISTRY_CHANGES, 'changed');
  const victim = await machineOf('Attacked job');
  const publicApp = await registry.createClient({ name: 'Phone app', grants: ['authorization_code'], redirectUris: ['http://127.0.0.1:9/cb'], scope: 'openid api:read', public: true }, none);
  const doomed = await machineOf('Doomed job');

  const issuer = server.issuer;
  const issue = async (c: { clientId: string; secret: string }, scope = 'api:read') => {
    const res = await fetch(`${issuer}/token`, { method: 'POST', headers: { 'content-type': FORM, authorization: basic(c.clientId, c.secret) }, body: `grant_type=client_credentials&scope=${encodeURIComponent(scope)}` });
    const body = (await res.json()) as { access_token: string };
    assert.equal(res.status, 200, JSON.stringify(body));
    return body.access_token;
  };
  const live = [await issue(world.machine), await issue(world.machine), await issue(rotated, 'api:read api:write')];
  const revoked = await issue(world.machine);
  const revocation = await fetch(`${issuer}/token/revocation`, { method: 'POST', headers: { 'content-type': FORM, authorization: basic(world.machine.clientId, world.machine.secret) }, body: `token=${revoked}` });
  assert.equal(revocation.status, 200);
  const deleted = await issue(doomed);
  await registry.deleteClient(doomed.clientId);
  const jwtMachine = await registry.createClient({ name: 'JWT job', grants: ['client_credentials'], scope: 'jwt:read' }, none);
  const jwt = await issue({ clientId: jwtMachine.clientId, secret: jwtMachine.secret! }, 'jwt:read');

  // Records as oidc-provider's adapter writes them, with what a request cannot make here: past expiry, a DPoP binding, a client that no longer exists, a used refresh token.
  const adapter = (provider.ClientCredentials as unknown as { adapter: Adapter }).adapter;
  const now = Math.floor(Date.now() / 1000);
  const record = async (fields: Record<string, unknown>, ttl = 600) => {
    const id = randomBytes(32).toString('base64url');
    await adapter.upsert(id, { iat: now - 5, exp: now + ttl, scope: 'api:read', clientId: world.machine.clientId, aud: API_URI, ...fields }, ttl);
    return id;
  };
  const expired = await record({ iat: now - 120, exp: now - 60 });
  const dpopBound = await record({ jkt: 'rYB6xPmu8QXKmm7Cq-Wc4AEHGPHFHgEaaX3eO7lX7aA' });
  const ghost = await record({ clientId: 'nobody-by-this-id' });
  const refreshAdapter = (provider.RefreshToken as unknown as { adapter: Adapter }).adapter;
  const grantId = randomBytes(16).toString('base64url');
  const refreshId = `${keys.grantIndex(grantId).match(/\{([^}]+)\}/)![1]}${randomBytes(32).toString('base64url')}`;
  await refreshAdapter.upsert(refreshId, { iat: now, exp: now + 600, clientId: world.shop.clientId, grantId, accountId: world.user.id, scope: 'openid offline_access' }, 600);
  await refreshAdapter.consume(refreshId);

  seed = { post, postWrongWay, rotated, overdue, victim, publicApp: { clientId: publicApp.clientId }, live, expired, revoked, ghost, deleted, dpopBound, jwt, consumed: refreshId };
  await server.app.activity.flush();
  await server.close();
  await copyRedis(redisOn.url, redisOff.url);
});

after(async () => {
  await Promise.all([redisOn?.dispose(), redisOff?.dispose()]);
});

/**
 * Client authentication locks a client at this IP after 5 failures (exercised); the IP itself never locks (the corpus has many).
 * One proxy hop is trusted, so a forwarded address is the client's (its lockout keys, its log lines).
 */
function lenientLimits(lean: 'on' | 'off') {
  return { LEAN_PATH: lean, TRUST_PROXY: '1', CLIENT_AUTH_MAX_FAILURES: '5', LOCKOUT_IP_MAX_FAILURES: '100000', INTROSPECTION_INACTIVE_PER_MINUTE: '100000' };
}


/** The corpus: every shape once, then random draws of them, ≥ 500 requests in all. */
function corpus(): Req[] {
  const m = world.machine;
  const api = world.api;
  const tokenReq = (name: string, auth: { clientId: string; secret: string } | undefined, body: string, headers: Record<string, string> = {}): Req =>
    ({ name, path: '/token', headers: { 'content-type': FORM, ...(auth ? { authorization: basic(auth.clientId, auth.secret) } : {}), ...headers }, body });
  const introspect = (name: string, auth: { clientId: string; secret: string } | undefined, body: string, headers: Record<string, string> = {}): Req =>
    ({ name, path: '/token/introspection', headers: { 'content-type': FORM, ...(auth ? { authorization: basic(auth.clientId, auth.secret) } : {}), ...headers }, body });
  const apiCreds = { clientId: api.clientId, secret: api.secret };
  const jwtApiCreds = { clientId: world.jwtApi.clientId, secret: world.jwtApi.secret };
  const shop = { clientId: world.shop.clientId, secret: world.shop.secret };
  const cc = 'grant_type=client_credentials';
  const shapes: (() => Req)[] = [
    () => tokenReq('token: scope', m, `${cc}&scope=api%3Aread`),
    () => tokenReq('token: no scope', m, cc),
    () => tokenReq('token: scope twice in one', m, `${cc}&scope=api%3Aread+api%3Aread`),
    () => tokenReq('token: scope not registered', m, `${cc}&scope=api%3Awrite`),
    () => tokenReq('token: openid scope', m, `${cc}&scope=openid`),
    () => tokenReq('token: unknown scope', m, `${cc}&scope=nothing%3Ahere`),
    () => tokenReq('token: resource', m, `${cc}&resource=${encodeURIComponent(API_URI)}`),
    () => tokenReq('token: foreign resource', m, `${cc}&resource=${encodeURIComponent(JWT_API_URI)}`),
    () => tokenReq('token: JWT API', { clientId: seed.rotated.clientId, secret: seed.rotated.secret }, `${cc}&scope=jwt%3Aread`),
    () => tokenReq('token: two scopes', seed.rotated, `${cc}&scope=api%3Aread+api%3Awrite`),
    () => tokenReq('token: other grant', m, 'grant_type=authorization_code&code=abc&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb'),
    () => tokenReq('token: refresh grant', shop, 'grant_type=refresh_token&refresh_token=nope'),
    () => tokenReq('token: wrong secret', { clientId: seed.victim.clientId, secret: 'not-the-secret' }, cc),
    () => tokenReq('token: victim valid', seed.victim, cc),
    () => tokenReq('token: unknown client', { clientId: randomId(), secret: 'whatever' }, cc),
    () => tokenReq('token: post client in body', undefined, `${cc}&client_id=${seed.post.clientId}&client_secret=${seed.post.secret}`),
    () => tokenReq('token: post client in header', seed.postWrongWay, cc),
    () => tokenReq('token: basic client in body', undefined, `${cc}&client_id=${seed.victim.clientId}&client_secret=${seed.victim.secret}`),
    () => tokenReq('token: both ways', m, `${cc}&client_secret=${m.secret}`),
    () => tokenReq('token: client_id matches header', m, `${cc}&client_id=${m.clientId}`),
    () => tokenReq('token: client_id mismatch', m, `${cc}&client_id=${seed.post.clientId}`),
    () => tokenReq('token: previous secret in overlap', { clientId: seed.rotated.clientId, secret: seed.rotated.old }, cc),
    () => tokenReq('token: new secret', seed.rotated, cc),
    () => tokenReq('token: previous secret overdue', { clientId: seed.overdue.clientId, secret: seed.overdue.old }, cc),
    () => tokenReq('token: public client', undefined, `${cc}&client_id=${seed.publicApp.clientId}`),
    () => tokenReq('token: app client', shop, cc),
    () => tokenReq('token: API client', apiCreds, cc),
    () => tokenReq('token: DPoP', m, cc, { dpop: 'not.a.proof' }),
    () => tokenReq('token: CORS', m, cc, { origin: 'https://app.example' }),
    () => tokenReq('token: grant_type twice', m, `${cc}&${cc}`),
    () => tokenReq('token: empty scope', m, `${cc}&scope=`),
    () => tokenReq('token: bad scope syntax', m, `${cc}&scope=api%3Aread++api%3Awrite`),
    () => tokenReq('token: bad escapes', m, `${cc}&scope=%ZZ`),
    () => tokenReq('token: empty body', m, ''),
    () => tokenReq('token: JSON body', m, JSON.stringify({ grant_type: 'client_credentials' }), { 'content-type': 'application/json' }),
    () => tokenReq('token: latin1 charset', m, cc, { 'content-type': `${FORM}; charset=iso-8859-1` }),
    () => tokenReq('token: long body', m, `${cc}&scope=api%3Aread&pad=${'x'.repeat(5000)}`),
    () => tokenReq('token: basic not base64', m, cc, { authorization: 'Basic !!!' }),
    () => tokenReq('token: bearer header', m, cc, { authorization: 'Bearer abc' }),
    () => tokenReq('token: no secret in header', m, cc, { authorization: `Basic ${Buffer.from(`${m.clientId}:`).toString('base64')}` }),
    () => tokenReq('token: forwarded, wrong secret', { clientId: seed.victim.clientId, secret: 'not-the-secret' }, cc, { 'x-forwarded-for': '198.51.100.7, 203.0.113.9' }),
    () => tokenReq('token: forwarded, valid', seed.victim, cc, { 'x-forwarded-for': '203.0.113.9' }),
    () => ({ ...tokenReq('token: query string', m, cc), path: '/token?x=1' }),
    () => ({ ...tokenReq('token: path in capitals', m, cc), path: '/TOKEN' }),
    () => introspect('introspect: live by API', apiCreds, `token=${pick(seed.live)}`),
    () => introspect('introspect: live with hint', apiCreds, `token=${seed.live[0]}&token_type_hint=access_token`),
    () => introspect('introspect: odd hint', apiCreds, `token=${seed.live[0]}&token_type_hint=id_token`),
    () => introspect('introspect: own token', m, `token=${seed.live[0]}`),
    () => introspect('introspect: own token in body', undefined, `token=${seed.live[2]}&client_id=${seed.post.clientId}&client_secret=${seed.post.secret}`),
    () => introspect('introspect: foreign audience', jwtApiCreds, `token=${seed.live[0]}`),
    () => introspect('introspect: another app', shop, `token=${seed.live[1]}`),
    () => introspect('introspect: expired', apiCreds, `token=${seed.expired}`),
    () => introspect('introspect: revoked', apiCreds, `token=${seed.revoked}`),
    () => introspect('introspect: deleted client', apiCreds, `token=${seed.deleted}`),
    () => introspect('introspect: client gone', apiCreds, `token=${seed.ghost}`),
    () => introspect('introspect: DPoP-bound', apiCreds, `token=${seed.dpopBound}`),
    () => introspect('introspect: JWT', jwtApiCreds, `token=${seed.jwt}`),
    () => introspect('introspect: consumed refresh token', shop, `token=${seed.consumed}`),
    () => introspect('introspect: unknown', apiCreds, `token=${randomBytes(32).toString('base64url')}`),
    () => introspect('introspect: wrong secret', { clientId: seed.victim.clientId, secret: 'nope' }, `token=${seed.live[0]}`),
    () => introspect('introspect: unknown client', { clientId: randomId(), secret: 'nope' }, `token=${seed.live[0]}`),
    () => introspect('introspect: public client', undefined, `token=${seed.live[0]}&client_id=${seed.publicApp.clientId}`),
    () => introspect('introspect: no token', apiCreds, ''),
    () => introspect('introspect: token twice', apiCreds, `token=${seed.live[0]}&token=${seed.live[1]}`),
    () => introspect('introspect: DPoP', apiCreds, `token=${seed.live[0]}`, { dpop: 'x' }),
    () => ({ ...introspect('introspect: trailing slash', apiCreds, `token=${seed.live[0]}`), path: '/token/introspection/' }),
    () => introspect('introspect: forwarded', apiCreds, `token=${seed.live[1]}`, { 'x-forwarded-for': '203.0.113.9' }),
    () => introspect('introspect: wrong content type', apiCreds, `token=${seed.live[0]}`, { 'content-type': 'text/plain' }),
  ];
  const draw = prng(23);
  let n = 0;
  const randomId = () => `unknown${(n += 1)}`;
  const pick = <T,>(xs: T[]) => xs[Math.floor(draw() * xs.length)]!;
  const out = shapes.map((s) => s());
  while (out.length < 520) out.push(pick(shapes)());
  return out;
}

/** The answer with what differs by nature (token values, times, request ids) replaced by placeholders. */
function normalise(status: number, headers: Headers, text: string): Answer {
  const kept = Object.fromEntries([...headers].filter(([k]) => !NOISE_HEADERS.has(k)));
  let body: unknown = text;
  try {
    body = JSON.parse(text, (key, value: unknown) => {
      if (key === 'access_token' && typeof value === 'string') return `<token ${value.split('.').length}>`;
      if ((key === 'iat' || key === 'exp') && typeof value === 'number') return '<time>';
      if (key === 'request_id') return '<id>';
      return value;
    });
  } catch {
    // Not JSON (an HTML error page): compared as text.
  }
  return { status, headers: kept, body };
}

interface Run extends Recorded {
  answers: Answer[];
  lockouts: Record<string, string>;
  grantSuccesses: number;
}

async function answerCorpus(lean: 'on' | 'off', requests: Req[]): Promise<Run> {
  const redis = lean === 'on' ? redisOn : redisOff;
  const server = await startServer({ redisUrl: redis.url, port, env: lenientLimits(lean) });
  let grantSuccesses = 0;
  server.app.provider.on('grant.success', () => (grantSuccesses += 1));
  const logsFrom = server.logs.length;
  const answers: Answer[] = [];
  // Tokens this server issues within the run are introspected too, by position, so both runs ask alike.
  const issuedHere: string[] = [];
  for (const [i, req] of requests.entries()) {
    const asked = i % 7 === 6 && issuedHere.length ? { ...req, path: '/token/introspection' as const, headers: { 'content-type': FORM, authorization: basic(world.api.clientId, world.api.secret) }, body: `token=${issuedHere[i % issuedHere.length]}` } : req;
    const res = await fetch(`${server.issuer}${asked.path}`, { method: 'POST', headers: asked.headers, body: asked.body });
    const text = await res.text();
    if (res.status === 200 && asked.path === '/token') issuedHere.push((JSON.parse(text) as { access_token: string }).access_token);
    answers.push(normalise(res.status, res.headers, text));
  }
  await server.app.activity.flush();
  const seen = await recorded(server, logsFrom, redis.url, ['tokens_issued_total', 'introspections_total', 'client_authentication_failures_total', 'oauth_errors_total', 'lockouts_total', 'http_request_duration_seconds_count']);
  const r = new Redis(redis.url);
  const lockouts: Record<string, string> = {};
  for (const key of [...(await r.keys('lk:failures:*')), ...(await r.keys('lk:lockout:*')), ...(await r.keys('lk:introspection-inactive*'))]) {
    const type = await r.type(key);
    lockouts[key] = type === 'string' ? (key.startsWith('lk:lockout:') ? 'locked' : String(await r.get(key))) : type;
  }
  r.disconnect();
  await server.close();
  return { ...seen, answers, lockouts, grantSuccesses };
}

test('a corpus of 520 token and introspection requests gets the same answers, logs, audit events, metrics, lockouts and activity counts with LEAN_PATH on and off, and the lean path answers the common shapes itself', async () => {
  const requests = corpus();
  assert.ok(requests.length >= 500);
  const on = await answerCorpus('on', requests);
  const off = await answerCorpus('off', requests);

  for (const [i, req] of requests.entries()) {
    assert.deepEqual(on.answers[i], off.answers[i], `request ${i} (${i % 7 === 6 ? 'introspection of a token issued in the run' : req.name}) answered differently`);
  }
  assert.deepEqual(on.requestLines, off.requestLines);
  assert.deepEqual(on.audit, off.audit);
  assert.deepEqual(on.metrics, off.metrics);
  assert.deepEqual(on.lockouts, off.lockouts);
  assert.deepEqual(on.tokenCounts, off.tokenCounts);

  // The corpus covers what it should: tokens issued, active and inactive answers, refusals, a locked client.
  const statuses = new Set(on.answers.map((a) => a.status));
  for (const s of [200, 400, 401, 429]) assert.ok(statuses.has(s), `no ${s} in the corpus`);
  assert.ok(on.answers.some((a) => (a.body as { active?: unknown }).active === true));
  assert.ok(on.answers.some((a) => (a.body as { active?: unknown }).active === false));
  assert.ok(Object.keys(on.lockouts).some((k) => k.startsWith('lk:lockout:')), 'no client was locked');

  // Off: oidc-provider issued every token. On: the lean path answered most of them and most active introspections.
  const issued = off.grantSuccesses;
  assert.ok(issued > 50, `only ${issued} tokens issued`);
  assert.deepEqual(off.leanAnswers, {});
  assert.ok(on.grantSuccesses < issued / 2, `oidc-provider still issued ${on.grantSuccesses} of ${issued} tokens with the lean path on`);
  const leanAnswered = (on.leanAnswers.token ?? 0) + (on.leanAnswers.introspection ?? 0);
  assert.ok(leanAnswered > issued, `the lean path answered only ${leanAnswered} requests`);
});
