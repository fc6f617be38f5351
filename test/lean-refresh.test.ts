import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import type { Adapter } from 'oidc-provider';
import * as oc from 'openid-client';
// @ts-expect-error oidc-provider's internals ship no types (the lean refresh uses the same ones).
import als from 'oidc-provider/lib/helpers/als.js';
// @ts-expect-error as above
import { issueIdToken } from 'oidc-provider/lib/helpers/grant_common.js';
// @ts-expect-error as above
import instance from 'oidc-provider/lib/helpers/weak_cache.js';
import { leanIdTokens, type IdTokenSource } from '../src/oidc/lean-refresh.ts';
import { grantTag, keys } from '../src/storage/keys.ts';
import { basic, CookieJar, signIn, signInAndRedeem, type ClientCreds } from './helpers/flow.ts';
import { freePort, startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { API_URI, createWorld, enrollTotp, JWT_API_URI, REDIRECT_URI, type World } from './helpers/world.ts';
import { copyRedis, prng, recorded, tokenRecords, type Recorded } from './helpers/differential.ts';
import { eventually } from './helpers/eventually.ts';

/**
 * The lean refresh (src/oidc/lean-refresh.ts) must be invisible: a generated corpus of refresh requests —
 * valid chains, reuse, expired and revoked tokens, foreign clients, wrong and previous secrets, public and
 * grace-window clients, DPoP, scope and resource, odd bodies, a disabled account, session-bound tokens —
 * is answered with LEAN_PATH on and off, by two Redis holding the same data (one copied from the other),
 * on one issuer URL. Answers (ID tokens claim by claim, verified against /jwks), request lines, audit
 * events, metrics, activity counts and "last used" of the connected app must agree, while the lean path
 * really answered the common refreshes.
 */
const FORM = 'application/x-www-form-urlencoded';
const NOISE_HEADERS = new Set(['date', 'x-request-id', 'content-length', 'keep-alive', 'connection', 'retry-after']);
const FULL = 'openid profile email offline_access api:read';

interface Creds { clientId: string; secret?: string; secretIn?: 'header' | 'body' }
/** A refresh chain: its client, and per server the token to present next and the one before it. */
interface Chain { name: string; client: Creds; first: string }
interface ChainState { current: string; previous?: string; accessToken?: string }

type Op =
  | 'refresh' | 'refresh again' | 'reuse' | 'foreign client' | 'wrong secret' | 'secret the wrong way' | 'no secret'
  | 'scope' | 'resource' | 'dpop header' | 'unknown param' | 'token twice' | 'empty token' | 'no token' | 'bad escape'
  | 'garbage token' | 'json body' | 'introspect' | 'encoded basic';

let redisOn: TestRedis;
let redisOff: TestRedis;
let port: number;
let world: World;
let chains: Chain[];
/** The consent whose "last used" the runs must bump (set an hour back before the copy). */
let consentKey: string;
let oldLastUsed: number;
let others: { other: Creds };

const none = async () => {};

before(async () => {
  [redisOn, redisOff] = await Promise.all([startRedis(), startRedis()]);
  port = await freePort();
  const server = await startServer({ redisUrl: redisOn.url, port, env: env('on') });
  try {
    await seed(server);
  } finally {
    await server.app.activity.flush();
    await server.close();
  }
  await copyRedis(redisOn.url, redisOff.url);
});

async function seed(server: TestServer) {
  world = await createWorld(server);
  const { registry, accounts, provider } = server.app;
  const app = async (name: string, extra: { secretIn?: 'body'; refreshGrace?: number; public?: boolean } = {}) => {
    const c = await registry.createClient({ name, grants: ['authorization_code', 'refresh_token'], redirectUris: [REDIRECT_URI], scope: 'openid profile email offline_access api:read jwt:read', ...extra }, none);
    return { clientId: c.clientId, secret: c.secret, redirectUri: REDIRECT_URI };
  };
  const poster = await app('Posting app', { secretIn: 'body' });
  const rotatedBefore = await app('Rotated app');
  const rotated = { ...rotatedBefore, secret: await registry.rotateSecret(rotatedBefore.clientId, { keepOldSeconds: 3600 }), old: rotatedBefore.secret! };
  const graceful = await app('Two-tab app', { refreshGrace: 30 });
  const phone = await app('Phone app', { public: true });

  // A second person, disabled once she has her tokens.
  const grace = await accounts.create({ email: 'grace@example.org', name: 'Grace Hopper', password: 'another horse battery staple', emailVerified: true });
  const graceTotp = await enrollTotp(server, grace);
  const graceUser = { email: grace.email, password: 'another horse battery staple', totpSecret: graceTotp.totpSecret };

  const shop: Creds = { clientId: world.shop.clientId, secret: world.shop.secret };
  const signedIn = async (client: ClientCreds, scope: string, user: { email: string; password: string; totpSecret?: string } = world.user, jar: CookieJar, secretIn?: 'body') => {
    const flow = await signIn({ issuer: server.issuer, client, user, scope, jar });
    assert.ok(flow.code, `no code for ${scope}`);
    const form = new URLSearchParams({ grant_type: 'authorization_code', code: flow.code, code_verifier: flow.verifier, redirect_uri: client.redirectUri });
    const headers: Record<string, string> = { 'content-type': FORM };
    if (!client.secret) form.set('client_id', client.clientId);
    else if (secretIn === 'body') {
      form.set('client_id', client.clientId);
      form.set('client_secret', client.secret);
    }
    else headers.authorization = basic(client.clientId, client.secret);
    const tokens = (await (await fetch(`${server.issuer}/token`, { method: 'POST', headers, body: form.toString() })).json()) as { refresh_token?: string };
    assert.ok(tokens.refresh_token, `no refresh token for ${scope}: ${JSON.stringify(tokens)}`);
    return tokens.refresh_token;
  };
  chains = [];
  // A sign-in of its own for each chain (one session, one grant): revoking one chain's grant leaves the others.
  const chain = async (name: string, client: Creds & ClientCreds, scope: string, user?: { email: string; password: string; totpSecret?: string }, creds: Creds = client) =>
    chains.push({ name, client: creds, first: await signedIn(client, scope, user, new CookieJar(), creds.secretIn === 'body' ? 'body' : undefined) });
  await chain('shop, API', world.shop, FULL);
  await chain('shop, API again', world.shop, FULL);
  await chain('shop, API and profile only', world.shop, 'openid profile offline_access api:read');
  await chain('shop, no API', world.shop, 'openid offline_access');
  await chain('shop, email, no API', world.shop, 'openid email offline_access');
  await chain('shop, JWT API', world.shop, 'openid offline_access jwt:read');
  await chain('posting app', poster, FULL, undefined, { ...poster, secretIn: 'body' });
  await chain('rotated app, new secret', rotated, FULL);
  await chain('rotated app, previous secret', rotated, FULL, undefined, { clientId: rotated.clientId, secret: rotated.old });
  await chain('two-tab app', graceful, FULL);
  await chain('phone app', phone, FULL);
  await chain('disabled person', world.shop, FULL, graceUser);
  await chain('revoked grant', world.shop, FULL);
  await chain('session-bound, session live', world.shop, FULL);
  await accounts.setDisabled(grace.id, true);
  const revoked = chains.find((c) => c.name === 'revoked grant')!.first;
  const revocation = await fetch(`${server.issuer}/token/revocation`, { method: 'POST', headers: { 'content-type': FORM, authorization: basic(shop.clientId, shop.secret!) }, body: `token=${revoked}` });
  assert.equal(revocation.status, 200);

  // Records a request cannot make here, as the adapter writes them: each a copy of a live chain's token and grant under a grant of its own.
  const refreshAdapter = (provider.RefreshToken as unknown as { adapter: Adapter }).adapter;
  const grantAdapter = (provider.Grant as unknown as { adapter: Adapter }).adapter;
  const model = chains.find((c) => c.name === 'shop, API again')!.first;
  const original = (await refreshAdapter.find(model))!;
  const now = Math.floor(Date.now() / 1000);
  const copy = async (name: string, change: Record<string, unknown>) => {
    const grantId = randomBytes(32).toString('base64url');
    const grant = (await grantAdapter.find(String(original.grantId)))!;
    await grantAdapter.upsert(grantId, { ...grant, jti: grantId }, 3600);
    const id = `${grantTag(grantId)}${randomBytes(32).toString('base64url')}`;
    await refreshAdapter.upsert(id, { ...original, jti: id, grantId, ...change }, 3600);
    chains.push({ name, client: shop, first: id });
  };
  await copy('expired', { iat: now - 7200, exp: now - 60 });
  await copy('DPoP-bound', { jkt: 'rYB6xPmu8QXKmm7Cq-Wc4AEHGPHFHgEaaX3eO7lX7aA' });
  await copy('session-bound, session ended', { expiresWithSession: true, sessionUid: 'a-session-long-gone' });
  await copy('two resources', { resource: [API_URI, JWT_API_URI] });
  await copy('rotated before', { rotations: 7, gty: 'authorization_code refresh_token' });
  // Bound to the session it was issued in, which is still signed in (the jar).
  const live = chains.find((c) => c.name === 'session-bound, session live')!.first;
  await refreshAdapter.upsert(live, { ...(await refreshAdapter.find(live))!, expiresWithSession: true }, 3600);

  consentKey = keys.consent(world.user.id, world.shop.clientId);
  oldLastUsed = Date.now() - 3_600_000;
  const consent = JSON.parse((await server.store.get(consentKey))!) as Record<string, unknown>;
  await server.store.set(consentKey, JSON.stringify({ ...consent, lastUsedAt: oldLastUsed }), { ttl: 3600 });
  others = { other: { clientId: world.other.clientId, secret: world.other.secret } };
}

after(async () => {
  await Promise.all([redisOn?.dispose(), redisOff?.dispose()]);
});

function env(lean: 'on' | 'off') {
  return { LEAN_PATH: lean, CLIENT_AUTH_MAX_FAILURES: '100', LOCKOUT_IP_MAX_FAILURES: '100000', INTROSPECTION_INACTIVE_PER_MINUTE: '100000' };
}



/** Every chain with every operation once, then random draws weighted to valid refreshes (chains go on, reuse comes after rotations). */
function corpus(): { chain: number; op: Op }[] {
  const ops: Op[] = ['refresh', 'refresh again', 'reuse', 'foreign client', 'wrong secret', 'secret the wrong way', 'no secret', 'scope', 'resource', 'dpop header', 'unknown param', 'token twice', 'empty token', 'no token', 'bad escape', 'garbage token', 'json body', 'introspect', 'encoded basic'];
  const out: { chain: number; op: Op }[] = [];
  for (let c = 0; c < chains.length; c += 1) out.push({ chain: c, op: 'refresh' }, { chain: c, op: 'introspect' });
  const draw = prng(1223);
  for (const op of ops) out.push({ chain: Math.floor(draw() * chains.length), op });
  while (out.length < 340) {
    const r = draw();
    const op: Op = r < 0.66 ? 'refresh' : r < 0.72 ? 'encoded basic' : r < 0.78 ? 'introspect' : r < 0.8 ? 'reuse' : ops[Math.floor(draw() * ops.length)]!;
    out.push({ chain: Math.floor(draw() * chains.length), op });
  }
  return out;
}

/** The request for one operation on a chain as this server has it. */
function requestFor(op: Op, chain: Chain, state: ChainState): { path: string; headers: Record<string, string>; body: string } {
  const c = chain.client;
  const token = op === 'reuse' ? (state.previous ?? state.current) : state.current;
  const asRegistered = (client: Creds, body: string): { headers: Record<string, string>; body: string } => {
    if (!client.secret) return { headers: {}, body: `${body}&client_id=${client.clientId}` };
    if (client.secretIn === 'body') return { headers: {}, body: `${body}&client_id=${client.clientId}&client_secret=${client.secret}` };
    return { headers: { authorization: basic(client.clientId, client.secret) }, body };
  };
  const form = (body: string, client: Creds = c, headers: Record<string, string> = {}) => {
    const auth = asRegistered(client, body);
    return { path: '/token', headers: { 'content-type': FORM, ...auth.headers, ...headers }, body: auth.body };
  };
  const rt = `grant_type=refresh_token&refresh_token=${token}`;
  switch (op) {
    case 'refresh':
    case 'refresh again':
    case 'reuse':
      return form(rt);
    case 'foreign client':
      return form(rt, others.other);
    case 'wrong secret':
      return form(rt, { ...c, secret: c.secret ? 'not-the-secret' : undefined });
    case 'secret the wrong way':
      return c.secret ? form(rt, { ...c, secretIn: c.secretIn === 'body' ? 'header' : 'body' }) : form(rt);
    case 'no secret':
      return { path: '/token', headers: { 'content-type': FORM }, body: `${rt}&client_id=${c.clientId}` };
    case 'scope':
      return form(`${rt}&scope=openid`);
    case 'resource':
      return form(`${rt}&resource=${encodeURIComponent(API_URI)}`);
    case 'dpop header':
      return form(rt, c, { dpop: 'not.a.proof' });
    case 'unknown param':
      return form(`${rt}&foo=bar`);
    case 'token twice':
      return form(`${rt}&refresh_token=${token}`);
    case 'empty token':
      return form('grant_type=refresh_token&refresh_token=');
    case 'no token':
      return form('grant_type=refresh_token');
    case 'bad escape':
      return form(`${rt}%ZZ`);
    case 'garbage token':
      return form(`grant_type=refresh_token&refresh_token=${randomLike(token)}`);
    case 'json body':
      return { ...form(''), headers: { ...form('').headers, 'content-type': 'application/json' }, body: JSON.stringify({ grant_type: 'refresh_token', refresh_token: token }) };
    case 'encoded basic':
      // Every character form-encoded, as some libraries do (RFC 6749 §2.3.1).
      return c.secret && c.secretIn !== 'body' ? form(rt, c, { authorization: `Basic ${Buffer.from(`${encodeAll(c.clientId)}:${encodeAll(c.secret)}`).toString('base64')}` }) : form(rt);
    case 'introspect':
      return { path: '/token/introspection', headers: { 'content-type': FORM, authorization: basic(world.api.clientId, world.api.secret) }, body: `token=${state.accessToken ?? 'none'}` };
  }
}

function encodeAll(value: string): string {
  return [...value].map((ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`).join('');
}

/** A token of the right shape that does not exist: the same on both runs (a digest of the real one, reversed). */
function randomLike(token: string): string {
  return [...token].reverse().join('');
}

interface Answer { status: number; headers: Record<string, string>; body: unknown }

/** An answer with what differs by nature (token values, times) replaced; an ID token as its header and claims, verified first. */
async function normalise(status: number, headers: Headers, text: string, jwks: ReturnType<typeof createLocalJWKSet>, issuer: string, audience: string): Promise<Answer> {
  const kept = Object.fromEntries([...headers].filter(([k]) => !NOISE_HEADERS.has(k)));
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    return { status, headers: kept, body };
  }
  const b = body as Record<string, unknown>;
  if (typeof b.id_token === 'string') {
    const { payload } = await jwtVerify(b.id_token, jwks, { issuer, audience });
    const { iat, exp, ...claims } = payload;
    assert.ok(typeof iat === 'number' && typeof exp === 'number' && exp > iat);
    b.id_token = { header: decodeProtectedHeader(b.id_token), claims };
  }
  for (const key of ['access_token', 'refresh_token'] as const) if (typeof b[key] === 'string') b[key] = `<${key} ${String(b[key]).split('.').length}>`;
  for (const key of ['iat', 'exp'] as const) if (typeof b[key] === 'number') b[key] = '<time>';
  if (typeof b.request_id === 'string') b.request_id = '<id>';
  return { status, headers: kept, body: b };
}

interface Run extends Recorded {
  answers: Answer[];
  /** The token records in storage afterwards (helpers/differential.ts tokenRecords). */
  records: Record<string, string[]>;
  grantSuccesses: number;
  lastUsedAt: number;
}

async function answerCorpus(lean: 'on' | 'off', plan: { chain: number; op: Op }[]): Promise<Run> {
  const redis = lean === 'on' ? redisOn : redisOff;
  const server = await startServer({ redisUrl: redis.url, port, env: env(lean) });
  let grantSuccesses = 0;
  server.app.provider.on('grant.success', () => (grantSuccesses += 1));
  const jwks = createLocalJWKSet((await (await fetch(`${server.issuer}/jwks`)).json()) as JSONWebKeySet);
  const logsFrom = server.logs.length;
  const states: ChainState[] = chains.map((c) => ({ current: c.first }));
  const answers: Answer[] = [];
  for (const { chain, op } of plan) {
    const state = states[chain]!;
    const req = requestFor(op, chains[chain]!, state);
    const res = await fetch(`${server.issuer}${req.path}`, { method: 'POST', headers: req.headers, body: req.body });
    const text = await res.text();
    if (res.status === 200 && req.path === '/token') {
      const tokens = JSON.parse(text) as { refresh_token: string; access_token: string };
      state.previous = state.current;
      state.current = tokens.refresh_token;
      state.accessToken = tokens.access_token;
    }
    answers.push(await normalise(res.status, res.headers, text, jwks, server.issuer, chains[chain]!.client.clientId));
  }
  await server.app.activity.flush();
  // "Last used" is written off the response's path.
  const lastUsed = async () => (JSON.parse((await server.store.get(consentKey))!) as { lastUsedAt: number }).lastUsedAt;
  await eventually(async () => (await lastUsed()) > oldLastUsed, 'the connected app\'s "last used" moved on');
  const seen = await recorded(server, logsFrom, redis.url, ['tokens_issued_total', 'introspections_total', 'client_authentication_failures_total', 'oauth_errors_total', 'refresh_token_reuse_total', 'lockouts_total', 'http_request_duration_seconds_count']);
  const lastUsedAt = await lastUsed();
  await server.close();
  return { ...seen, answers, grantSuccesses, lastUsedAt, records: await tokenRecords(redis.url) };
}

test('a corpus of 340 refresh requests gets the same answers, ID token claims, stored token records, logs, audit events, metrics and activity with LEAN_PATH on and off, and the lean path answers the common refreshes', async (t) => {
  const plan = corpus();
  assert.ok(plan.length >= 300);
  const on = await answerCorpus('on', plan);
  const off = await answerCorpus('off', plan);

  for (const [i, { chain, op }] of plan.entries()) {
    assert.deepEqual(on.answers[i], off.answers[i], `request ${i} (${op} on chain "${chains[chain]!.name}") answered differently`);
  }
  assert.deepEqual(on.requestLines, off.requestLines);
  assert.deepEqual(on.audit, off.audit);
  assert.deepEqual(on.metrics, off.metrics);
  assert.deepEqual(on.tokenCounts, off.tokenCounts);
  // The records the lean path wrote are oidc-provider's, member for member and in its order (other code and earlier releases read them).
  assert.deepEqual(Object.keys(on.records).sort(), Object.keys(off.records).sort());
  for (const grantAndModel of Object.keys(off.records)) assert.deepEqual(on.records[grantAndModel], off.records[grantAndModel], `records of ${grantAndModel}`);
  assert.ok(Object.values(on.records).flat().some((r) => r.startsWith('consumed|')), 'no rotated refresh token in storage');
  assert.ok(on.lastUsedAt > oldLastUsed && off.lastUsedAt > oldLastUsed, 'the connected app\'s "last used" moved on both');

  // The corpus covers what it should: rotations, ID tokens, reuse that revoked, refusals of every kind.
  const statuses = new Set(on.answers.map((a) => a.status));
  for (const s of [200, 400, 401]) assert.ok(statuses.has(s), `no ${s} in the corpus`);
  const idTokens = on.answers.filter((a) => (a.body as { id_token?: unknown }).id_token);
  assert.ok(idTokens.length > 50, `only ${idTokens.length} ID tokens`);
  assert.ok(on.audit.some((line) => line.includes('refresh_token_reuse_detected')), 'no reuse in the corpus');
  assert.ok(on.answers.some((a) => (a.body as { active?: unknown }).active === false) && on.answers.some((a) => (a.body as { active?: unknown }).active === true));

  // Off: oidc-provider rotated every token. On: the lean path answered most refreshes itself.
  const refreshed = off.grantSuccesses;
  t.diagnostic(`${refreshed} refreshes succeeded; the lean path answered ${(on.leanAnswers.token ?? 0)}, oidc-provider ${on.grantSuccesses}`);
  assert.ok(refreshed > 100, `only ${refreshed} refreshes succeeded`);
  assert.deepEqual(off.leanAnswers, {});
  assert.ok((on.leanAnswers.token ?? 0) > refreshed / 2, `the lean path answered only ${(on.leanAnswers.token ?? 0)} of ${refreshed} refreshes`);
  assert.equal(on.grantSuccesses + (on.leanAnswers.token ?? 0), refreshed);
});

test('openid-client refreshes a chain through the lean path, every ID token valid for it; ten parallel uses of one token: one wins, the grant is revoked, reuse audited', async () => {
  const server: TestServer = await startServer({ redisUrl: redisOn.url, env: env('on') });
  try {
    const registered = await server.app.registry.createClient({ name: 'Library app', grants: ['authorization_code', 'refresh_token'], redirectUris: [REDIRECT_URI], scope: FULL }, none);
    const app = { clientId: registered.clientId, secret: registered.secret!, redirectUri: REDIRECT_URI };
    const rp = await oc.discovery(new URL(server.issuer), app.clientId, undefined, oc.ClientSecretBasic(app.secret), { execute: [oc.allowInsecureRequests] });
    const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: app, user: world.user, scope: FULL });
    const leanAnswers = async () => Number(/latchkey_lean_path_answers_total\{route="token"\} (\d+)/.exec(await server.app.metrics.text())?.[1] ?? 0);
    const before = await leanAnswers();
    let presented = tokens.refresh_token!;
    for (let i = 0; i < 5; i += 1) {
      const refreshed = await oc.refreshTokenGrant(rp, presented);
      assert.equal(refreshed.claims()?.sub, world.user.id);
      assert.equal(refreshed.claims()?.email, world.user.email);
      presented = refreshed.refresh_token!;
    }
    assert.equal((await leanAnswers()) - before, 5, 'the lean path answered the chain');

    const form = { method: 'POST', headers: { 'content-type': FORM, authorization: basic(app.clientId, app.secret) }, body: `grant_type=refresh_token&refresh_token=${presented}` };
    const answers = await Promise.all(Array.from({ length: 10 }, async () => {
      const res = await fetch(`${server.issuer}/token`, form);
      return { status: res.status, body: (await res.json()) as { error?: string; access_token?: string; refresh_token?: string } };
    }));
    const won = answers.filter((a) => a.status === 200);
    assert.equal(won.length, 1, answers.map((a) => a.status).join(' '));
    assert.ok(answers.filter((a) => a.status !== 200).every((a) => a.body.error === 'invalid_grant'));
    await assert.rejects(oc.refreshTokenGrant(rp, won[0]!.body.refresh_token!), (err: { error?: string }) => err.error === 'invalid_grant', 'the winner\'s token went with the grant');
    await server.app.activity.flush();
    assert.ok(server.logs.some((l) => l.event === 'refresh_token_reuse_detected' && l.clientId === app.clientId), 'reuse audited');
  } finally {
    await server.close();
  }
});

test('the lean ID token is the one oidc-provider issues for the same refresh, byte for byte: header, claims in their order, no at_hash, signature', async () => {
  const server: TestServer = await startServer({ redisUrl: redisOn.url, env: env('on') });
  try {
    const { provider } = server.app;
    const lean = leanIdTokens(provider);
    type Found = IdTokenSource & { grantId: string; clientId: string; accountId: string };
    const models = provider as unknown as {
      RefreshToken: { find(id: string, o: object): Promise<Found | undefined> };
      Grant: { find(id: string): Promise<Parameters<typeof lean.issue>[4] | undefined> };
    };
    const compared: string[] = [];
    // An API's access token (its aud), none, and the email scope's claims.
    for (const [scope, aud] of [[FULL, API_URI], ['openid offline_access', undefined], ['openid email offline_access', undefined]] as const) {
      const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope });
      const source = (await models.RefreshToken.find(tokens.refresh_token!, { ignoreExpiration: true }))!;
      const grant = (await models.Grant.find(source.grantId))!;
      const client = (await provider.Client.find(source.clientId))! as unknown as Parameters<typeof lean.issue>[1];
      const ctx = { oidc: { provider, client, params: {}, entities: { Client: client, Grant: grant, RefreshToken: source } as Record<string, unknown>, account: undefined as unknown, entity() {} } };
       
      const account = await (instance(provider) as { configuration: { findAccount(ctx: unknown, sub: string, token: unknown): Promise<Parameters<typeof lean.issue>[2]> } }).configuration.findAccount(ctx, source.accountId, source);
      ctx.oidc.account = account;
      assert.ok(lean.signsItself(client, source, grant), `the lean path signs the ID token of "${scope}" itself`);
      const at = aud ? { aud } : {};
      // Both within one second (the JWT's iat and exp): RS256 signatures are deterministic, so the tokens are equal strings.
      const pair = async (): Promise<[string, string]> => {
        const second = Math.floor(Date.now() / 1000);
        const ours = (await lean.issue(ctx, client, account, source, grant, source.scopes, at))!;
         
        const theirs = (await issueIdToken(provider, ctx, source, at, grant, source.scopes)) as string;
        return Math.floor(Date.now() / 1000) === second ? [ours, theirs] : pair();
      };
      const [ours, theirs] = await (als as { run<T>(store: unknown, fn: () => T): T }).run(ctx, pair);
      assert.equal(ours, theirs, `ID tokens of "${scope}"`);
      const claims = JSON.parse(Buffer.from(ours.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
      assert.equal(claims.at_hash, undefined, 'oidc-provider puts no at_hash in a refresh\'s ID token, nor does the lean path');
      assert.equal(claims.sub, world.user.id);
      assert.equal(decodeProtectedHeader(ours).alg, 'RS256');
      compared.push(Object.keys(claims).join(','));
    }
    assert.ok(compared.some((c) => c.includes('email')) && compared.some((c) => !c.includes('email')), compared.join(' | '));
  } finally {
    await server.close();
  }
});

test('tokens the lean path issued are read by oidc-provider alone (LEAN_PATH=off): introspection, userinfo, the next refresh, and a token it rotated, presented again, revokes the grant', async () => {
  const samePort = await freePort();
  const leanAnswers = async (server: TestServer) => Number(/latchkey_lean_path_answers_total\{route="token"\} (\d+)/.exec(await server.app.metrics.text())?.[1] ?? 0);
  const shop = { 'content-type': FORM, authorization: basic(world.shop.clientId, world.shop.secret) };
  const refresh = async (server: TestServer, token: string) => {
    const res = await fetch(`${server.issuer}/token`, { method: 'POST', headers: shop, body: `grant_type=refresh_token&refresh_token=${token}` });
    return { status: res.status, body: (await res.json()) as { access_token: string; refresh_token: string; id_token?: string; error?: string } };
  };
  const on = await startServer({ redisUrl: redisOn.url, port: samePort, env: env('on') });
  let withEmail: { first: string; rotated: { access_token: string; refresh_token: string } };
  let withApi: { access_token: string; refresh_token: string };
  try {
    const email = await signInAndRedeem({ issuer: on.issuer, client: world.shop, user: world.user, scope: 'openid email offline_access' });
    const api = await signInAndRedeem({ issuer: on.issuer, client: world.shop, user: world.user, scope: FULL });
    const before = await leanAnswers(on);
    const rotated = await refresh(on, email.tokens.refresh_token!);
    const apiRotated = await refresh(on, api.tokens.refresh_token!);
    assert.equal(rotated.status, 200);
    assert.equal(apiRotated.status, 200);
    assert.equal((await leanAnswers(on)) - before, 2, 'the lean path answered both');
    withEmail = { first: email.tokens.refresh_token!, rotated: rotated.body };
    withApi = apiRotated.body;
  } finally {
    await on.close();
  }
  const off = await startServer({ redisUrl: redisOn.url, port: samePort, env: env('off') });
  try {
    const userinfo = await fetch(`${off.issuer}/me`, { headers: { authorization: `Bearer ${withEmail.rotated.access_token}` } });
    assert.equal(userinfo.status, 200);
    assert.deepEqual(await userinfo.json(), { sub: world.user.id, email: world.user.email, email_verified: true });
    const introspect = async (token: string, creds: { clientId: string; secret: string }) => (await (await fetch(`${off.issuer}/token/introspection`, { method: 'POST', headers: { 'content-type': FORM, authorization: basic(creds.clientId, creds.secret) }, body: `token=${token}` })).json()) as Record<string, unknown>;
    const accessToken = await introspect(withApi.access_token, world.api);
    assert.equal(accessToken.active, true);
    assert.equal(accessToken.aud, API_URI);
    assert.equal(accessToken.scope, 'api:read');
    assert.equal(accessToken.client_id, world.shop.clientId);
    assert.equal(accessToken.sub, world.user.id);
    const refreshToken = await introspect(withApi.refresh_token, world.shop);
    assert.equal(refreshToken.active, true);
    assert.equal(refreshToken.client_id, world.shop.clientId);
    assert.equal(refreshToken.scope, FULL);

    const next = await refresh(off, withEmail.rotated.refresh_token);
    assert.equal(next.status, 200, JSON.stringify(next.body));
    assert.ok(next.body.id_token);
    assert.equal(await leanAnswers(off), 0);
    // The token the lean path rotated out is used: presenting it revokes the grant, the chain's newest token with it.
    const reuse = await refresh(off, withEmail.first);
    assert.equal(reuse.body.error, 'invalid_grant');
    assert.equal((await refresh(off, next.body.refresh_token)).body.error, 'invalid_grant');
  } finally {
    await off.close();
  }
});
