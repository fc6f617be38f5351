import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { describe, it } from 'node:test';
import Provider from 'oidc-provider';
// @ts-expect-error oidc-provider's internals ship no types: the canary of refreshGraceWindow checks this import.
import instance from 'oidc-provider/lib/helpers/weak_cache.js';
// @ts-expect-error as above: the canary of the device code entry's re-render errors (provider-wording.ts).
import * as reRenderErrors from 'oidc-provider/lib/helpers/re_render_errors.js';
import { UPSTREAM_WORDING } from '../src/oidc/provider-wording.ts';
import { generateKeyGeneration } from '../src/oidc/signing-keys.ts';
import { CLIENT_AUTH_ROUTES } from '../src/security/client-auth-throttle.ts';
import { LOGOUT_CHANNEL } from '../src/storage/logout-queue.ts';
import { GRANT_BOUND_MODELS, grantIndexForTag, GRANT_TAG_LENGTH } from '../src/storage/keys.ts';
import type { RedisStore } from '../src/storage/redis-store.ts';
import { basic, endpoints, pkcePair, signIn, signInAndRedeem } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { API_URI, JWT_API_URI, REDIRECT_URI, useWorld, type World } from './helpers/world.ts';

/**
 * Canaries for src/oidc/provider-internals.ts. Each bend replaces a method of oidc-provider; an upgrade
 * that renames it, changes its arity or stops calling it must fail here, loudly, rather than silently
 * undo the bend. "Upstream" checks look at a fresh, unbent Provider; "in effect" checks at the server.
 */
let server: TestServer;
let world: World;
let call: ReturnType<typeof endpoints>;

useWorld((setup) => {
  ({ server, world } = setup);
  call = endpoints(server.issuer);
});

/** A Provider as oidc-provider builds it, with none of our bends. */
function upstream() {
  return new Provider('http://localhost', {
    adapter: class NoStorage {} as never,
    jwks: { keys: generateKeyGeneration().map(({ iat: _iat, ...jwk }) => jwk) },
    features: { devInteractions: { enabled: false }, introspection: { enabled: true }, revocation: { enabled: true }, deviceFlow: { enabled: true } },
  });
}

type Members = Record<string, unknown>;
/** A model class or an object of the unbent provider, to look at its members. */
const members = (value: unknown) => value as Members;
const prototypeOf = (value: unknown) => (value as { prototype: Members }).prototype;

function method(owner: Members, name: string, arity: number) {
  const fn = owner[name];
  assert.equal(typeof fn, 'function', `oidc-provider no longer has ${name}`);
  assert.equal((fn as (...args: unknown[]) => unknown).length, arity, `${name} takes ${(fn as () => unknown).length} arguments now, not ${arity}`);
}

describe('upstream still has what the bends replace', () => {
  it('generateTokenId() on every grant-bound model (tagTokenIdsWithGrant)', () => {
    const provider = members(upstream());
    for (const name of GRANT_BOUND_MODELS) {
      assert.ok(provider[name], `model ${name}`);
      method(prototypeOf(provider[name]), 'generateTokenId', 0);
    }
  });

  it('ReplayDetection.unique(iss, jti, exp) (atomicReplayDetection)', () => {
    method(members(upstream().ReplayDetection), 'unique', 3);
  });

  it('Client#compareClientSecret(presented) (digestedClientSecrets, registeredSecretPlacement)', () => {
    method(prototypeOf(upstream().Client), 'compareClientSecret', 1);
  });

  it('Client.find(id) and Provider.ctx, the request being served (cachedClientsWithApiScopes, throttledClientAuthentication)', () => {
    method(members(upstream().Client), 'find', 1);
    assert.equal(typeof Object.getOwnPropertyDescriptor(Provider, 'ctx')?.get, 'function', 'Provider.ctx');
  });

  it('RefreshToken#consume() (targetCheckedBeforeRotation)', () => {
    method(prototypeOf(upstream().RefreshToken), 'consume', 0);
  });

  it('OIDCContext#prompts, a getter (offlineAccessWithoutPromptConsent)', () => {
    const prototype = prototypeOf(upstream().OIDCContext);
    assert.equal(typeof Object.getOwnPropertyDescriptor(prototype, 'prompts')?.get, 'function', 'OIDCContext#prompts');
  });

  it('the registered refresh_token grant handler, (ctx) => …, in the internal grant handler map (refreshGraceWindow)', () => {
    const handlers = (instance(upstream()) as { grantTypeHandlers?: Map<string, unknown> }).grantTypeHandlers;
    assert.ok(handlers instanceof Map, 'grantTypeHandlers');
    method(Object.fromEntries(handlers), 'refresh_token', 1);
  });

  it('the registered authorization_code grant handler, (ctx) => …, in the internal grant handler map (batchedCodeRedemption)', () => {
    const handlers = (instance(upstream()) as { grantTypeHandlers?: Map<string, unknown> }).grantTypeHandlers;
    assert.ok(handlers instanceof Map, 'grantTypeHandlers');
    method(Object.fromEntries(handlers), 'authorization_code', 1);
  });

  it('Client#backchannelLogout(sub, sid) (queuedBackchannelLogout)', () => {
    method(prototypeOf(upstream().Client), 'backchannelLogout', 2);
  });

  it('a route for every client-authenticating route name the throttle watches', () => {
    const provider = upstream();
    for (const name of CLIENT_AUTH_ROUTES) assert.doesNotThrow(() => provider.pathFor(name), `route ${name}`);
  });
});

describe('the bends are in effect', () => {
  it('tagTokenIdsWithGrant: the tokens of a grant start with its tag, and the grant index is found by it', async () => {
    const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid offline_access api:read' });
    const tag = tokens.access_token.slice(0, GRANT_TAG_LENGTH);
    assert.equal(tokens.refresh_token!.slice(0, GRANT_TAG_LENGTH), tag);
    assert.equal(tokens.access_token.length, GRANT_TAG_LENGTH + 43, "the tag, then upstream's 256 random bits");
    assert.equal(await (server.store as RedisStore).client.exists(grantIndexForTag(tag)), 1);
  });

  it('atomicReplayDetection: of 20 parallel uses of one proof id exactly one is accepted, in one key with a TTL', async () => {
    const jti = randomBytes(16).toString('base64url');
    const exp = Math.floor(Date.now() / 1000) + 60;
    const replay = server.app.provider.ReplayDetection as unknown as { unique(iss: string, jti: string, exp: number): Promise<boolean> };
    const results = await Promise.all(Array.from({ length: 20 }, () => replay.unique('client', jti, exp)));
    assert.equal(results.filter(Boolean).length, 1);
    const stored = await (server.store as RedisStore).client.keys('lk:*:ReplayDetection:*');
    assert.ok(stored.length >= 1);
    assert.ok(!stored.some((k) => k.includes(jti)), 'the proof id appears only digested');
    for (const key of stored) assert.ok((await (server.store as RedisStore).client.ttl(key)) > 0, `${key} has a TTL`);
  });

  it('digestedClientSecrets and cachedClientsWithApiScopes: the built client knows its API scopes and its secret', async () => {
    const { Client } = server.app.provider;
    const client = await Client.find(world.shop.clientId);
    assert.ok(client);
    assert.ok(String(client.scope).split(' ').includes('api:read'), 'API scopes put back');
    assert.equal(await Client.find(world.shop.clientId), client, 'kept once built');
    const compare = (client as unknown as { compareClientSecret(s: string): boolean }).compareClientSecret.bind(client);
    assert.equal(compare(world.shop.secret), true);
    assert.equal(compare(`${world.shop.secret}x`), false);
  });
});

describe('registeredSecretPlacement: a client authenticates only the way it was registered with', () => {
  /** One call of each client-authenticating endpoint, and the status that means "authenticated". */
  const calls = (redirectUri: string): { path: string; form: Record<string, string>; ok: number }[] => [
    { path: '/token', form: { grant_type: 'refresh_token', refresh_token: 'made-up' }, ok: 400 },
    { path: '/token/introspection', form: { token: 'made-up' }, ok: 200 },
    { path: '/token/revocation', form: { token: 'made-up' }, ok: 200 },
    { path: '/request', form: { response_type: 'code', redirect_uri: redirectUri, scope: 'openid', code_challenge: pkcePair().challenge, code_challenge_method: 'S256' }, ok: 201 },
    // The app lacks the device grant: an authenticated client hears unauthorized_client.
    { path: '/device/auth', form: { scope: 'openid' }, ok: 400 },
  ];
  const post = async (path: string, form: Record<string, string>, authorization?: string) => {
    const res = await fetch(new URL(path, server.issuer), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...(authorization ? { authorization } : {}) },
      body: new URLSearchParams(form),
    });
    return { status: res.status, challenge: res.headers.get('www-authenticate'), body: (await res.json().catch(() => ({}))) as Record<string, unknown> };
  };
  const register = async (secretIn: 'header' | 'body') => {
    const c = await server.app.registry.createClient({ name: `Secret in the ${secretIn}`, grants: ['authorization_code', 'refresh_token'], redirectUris: [REDIRECT_URI], scope: 'openid', secretIn }, async () => {});
    return { id: c.clientId, secret: c.secret! };
  };

  it('client_secret_basic: the secret in the body is invalid_client at every endpoint; the header works', async () => {
    const c = await register('header');
    for (const { path, form, ok } of calls(REDIRECT_URI)) {
      const wrong = await post(path, { ...form, client_id: c.id, client_secret: c.secret });
      assert.equal(wrong.status, 401, `${path}: ${JSON.stringify(wrong.body)}`);
      assert.equal(wrong.body.error, 'invalid_client');
      assert.match(String(wrong.body.error_description), /registered to send its secret in the Authorization header \(client_secret_basic\)/);
      const right = await post(path, { ...form, client_id: c.id }, basic(c.id, c.secret));
      assert.equal(right.status, ok, `${path}: ${JSON.stringify(right.body)}`);
    }
  });

  it('client_secret_post: the secret in the Basic header is invalid_client at every endpoint; the body works', async () => {
    const c = await register('body');
    for (const { path, form, ok } of calls(REDIRECT_URI)) {
      const wrong = await post(path, { ...form, client_id: c.id }, basic(c.id, c.secret));
      assert.equal(wrong.status, 401, `${path}: ${JSON.stringify(wrong.body)}`);
      assert.equal(wrong.body.error, 'invalid_client');
      assert.match(String(wrong.body.error_description), /registered to send its secret in the request body \(client_secret_post\)/);
      assert.match(String(wrong.challenge), /^Basic /, 'a 401 to a Basic header carries its challenge');
      const right = await post(path, { ...form, client_id: c.id, client_secret: c.secret });
      assert.equal(right.status, ok, `${path}: ${JSON.stringify(right.body)}`);
    }
  });
});

describe('offlineAccessWithoutPromptConsent: a pushed request for offline_access without prompt gets a refresh token', () => {
  it('PAR, then /auth with its request_uri, then the code grant', async () => {
    const { verifier, challenge } = pkcePair();
    const pushed = await fetch(new URL('/request', server.issuer), {
      method: 'POST',
      headers: { authorization: basic(world.shop.clientId, world.shop.secret), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ client_id: world.shop.clientId, response_type: 'code', redirect_uri: world.shop.redirectUri, scope: 'openid offline_access', state: 'par', code_challenge: challenge, code_challenge_method: 'S256' }),
    });
    assert.equal(pushed.status, 201, await pushed.clone().text());
    const { request_uri } = (await pushed.json()) as { request_uri: string };
    const only = { redirect_uri: undefined, response_type: undefined, scope: undefined, state: undefined, nonce: undefined, code_challenge: undefined, code_challenge_method: undefined };
    const flow = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid', params: { ...only, request_uri } });
    assert.ok(flow.code, `did not reach the app: ${flow.page?.status}`);
    const tokens = await call.redeem(world.shop, flow.code, verifier);
    assert.equal(typeof tokens.body.refresh_token, 'string', JSON.stringify(tokens.body));
  });
});

describe('refreshGraceWindow', () => {
  it('a refresh token of a client with a grace window, presented twice, gets one response', async () => {
    const created = await server.app.registry.createClient(
      { name: 'Grace canary', grants: ['authorization_code', 'refresh_token'], redirectUris: [REDIRECT_URI], scope: 'openid offline_access', refreshGrace: 5 },
      async () => {},
    );
    const app = { clientId: created.clientId, secret: created.secret!, redirectUri: REDIRECT_URI };
    const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: app, user: world.user, scope: 'openid offline_access' });
    const [a, b] = await Promise.all([call.refresh(app, tokens.refresh_token!), call.refresh(app, tokens.refresh_token!)]);
    assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.deepEqual(b.body, a.body);
  });
});

describe('batchedCodeRedemption', () => {
  it('the tokens of a redeemed code are stored, listed in their grant, and revoked with it', async () => {
    const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid offline_access api:read', params: { resource: API_URI } });
    assert.equal((await call.introspect(world.api, tokens.access_token)).body.active, true);
    const grantIndex = grantIndexForTag(tokens.access_token.slice(0, GRANT_TAG_LENGTH));
    const listed = await server.store.setMembers(grantIndex);
    assert.ok(listed.some((key) => key.includes(':AccessToken:')) && listed.some((key) => key.includes(':RefreshToken:')), listed.join(' '));
    await server.store.deleteIndexed(grantIndex);
    assert.equal((await call.introspect(world.api, tokens.access_token)).body.active, false);
    assert.equal((await call.refresh(world.shop, tokens.refresh_token!)).status, 400);
  });
});

describe('queuedBackchannelLogout', () => {
  it('Client#backchannelLogout queues the notice and announces it, sending nothing itself', async () => {
    let announce: (message: string) => void = () => {};
    const announced = new Promise<string>((resolve) => (announce = resolve));
    const stop = await server.store.subscribe(LOGOUT_CHANNEL, (message) => announce(message), () => {});
    try {
      const client = await server.app.provider.Client.find(world.shop.clientId);
      await (client as unknown as { backchannelLogout(sub: string, sid: string): Promise<void> }).backchannelLogout(world.user.id, 'a-sid');
      assert.equal(await announced, 'queued');
    } finally {
      await stop();
    }
  });
});

describe('targetCheckedBeforeRotation: a refused refresh leaves the refresh token usable', () => {
  const refreshWith = (refreshToken: string, extra: Record<string, string> | URLSearchParams) =>
    fetch(new URL('/token', server.issuer), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${world.shop.clientId}:${world.shop.secret}`).toString('base64')}` },
      body: new URLSearchParams([['grant_type', 'refresh_token'], ['refresh_token', refreshToken], ...new URLSearchParams(extra)]),
    });

  async function expectRefusedThenUsable(extra: Record<string, string> | URLSearchParams, error: string) {
    const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid offline_access api:read' });
    const logged = server.logs.length;
    const refused = await refreshWith(tokens.refresh_token!, extra);
    assert.equal(refused.status, 400);
    assert.equal(((await refused.json()) as { error: string }).error, error);
    const retry = await call.refresh(world.shop, tokens.refresh_token!);
    assert.equal(retry.status, 200, JSON.stringify(retry.body));
    assert.equal(typeof retry.body.access_token, 'string');
    assert.notEqual(retry.body.refresh_token, tokens.refresh_token);
    assert.equal((await call.introspect(world.api, String(retry.body.access_token))).body.active, true);
    assert.ok(!server.logs.slice(logged).some((l) => l.event === 'refresh_token_reuse_detected'), 'no false reuse alert');
  }

  it('a resource that was not granted: invalid_target, then the same refresh token without it gives new tokens', async () => {
    await expectRefusedThenUsable({ resource: JWT_API_URI }, 'invalid_target');
  });

  it('the other refusals (an unknown resource, two resources at once, a scope not granted) leave it usable too', async () => {
    await expectRefusedThenUsable({ resource: 'https://unknown.example' }, 'invalid_target');
    await expectRefusedThenUsable(new URLSearchParams([['resource', API_URI], ['resource', JWT_API_URI]]), 'invalid_target');
    // Upstream checks scopes before it consumes; kept here so that stays true.
    await expectRefusedThenUsable({ scope: 'openid api:write' }, 'invalid_scope');
  });

  it('the granted resource, named again, still works', async () => {
    const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid offline_access api:read' });
    const res = await refreshWith(tokens.refresh_token!, { resource: API_URI });
    assert.equal(res.status, 200);
    assert.equal((await call.introspect(world.api, String(((await res.json()) as { access_token: string }).access_token))).body.active, true);
  });
});

/**
 * Canaries of src/oidc/provider-wording.ts: answers rewritten where oidc-provider's own words are
 * recognised. Each triggers the words on a real oidc-provider; a changed wording fails here by name.
 */
describe("oidc-provider still says what the answer rewrites recognise (provider-wording.ts)", () => {
  /** An unbent provider with one static client that has only the code grant, served on a free port. */
  async function upstreamServing<T>(run: (url: string, auth: string) => Promise<T>): Promise<T> {
    const provider = new Provider('http://localhost', {
      adapter: class NoStorage {} as never,
      jwks: { keys: generateKeyGeneration().map(({ iat: _iat, ...jwk }) => jwk) },
      clients: [{ client_id: 'app', client_secret: 'a-secret-of-the-app', redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code'], response_types: ['code'] }],
      features: { devInteractions: { enabled: false }, deviceFlow: { enabled: true } },
    });
    const handle = provider.callback();
    const http = createServer((req, res) => void handle(req, res));
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    try {
      return await run(`http://127.0.0.1:${(http.address() as AddressInfo).port}`, basic('app', 'a-secret-of-the-app'));
    } finally {
      http.closeAllConnections();
      await new Promise((resolve) => http.close(resolve));
    }
  }
  const postTo = async (url: string, form: Record<string, string>, authorization?: string) => {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...(authorization ? { authorization } : {}) }, body: new URLSearchParams(form) });
    return (await res.json()) as { error?: string; error_description?: string };
  };

  it('noClientAuthentication (missingClientAuthIsInvalidClient)', async () => {
    const body = await upstreamServing((url) => postTo(`${url}/token`, { grant_type: 'authorization_code', code: 'x' }));
    assert.equal(body.error, 'invalid_request');
    assert.equal(body.error_description, UPSTREAM_WORDING.noClientAuthentication, 'oidc-provider words a missing client authentication differently now');
  });

  it('grantTypeNotAllowed (clearerErrors)', async () => {
    const body = await upstreamServing((url, auth) => postTo(`${url}/token`, { grant_type: 'refresh_token', refresh_token: 'x' }, auth));
    assert.equal(body.error, 'invalid_request');
    assert.equal(body.error_description, UPSTREAM_WORDING.grantTypeNotAllowed, 'oidc-provider words a grant type the client lacks differently now');
  });

  it('deviceGrantNotAllowed (deviceGrantNotAllowedIsUnauthorizedClient)', async () => {
    const body = await upstreamServing((url, auth) => postTo(`${url}/device/auth`, { scope: 'openid' }, auth));
    assert.equal(body.error, 'invalid_request');
    assert.match(String(body.error_description), UPSTREAM_WORDING.deviceGrantNotAllowed, 'oidc-provider words a client without the device grant differently now');
  });

  it('jktMismatch: the error_detail of a DPoP-bound access token used without its proof (clearerErrors)', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = await exportJWK(publicKey);
    const tokenUrl = `${server.issuer}/token`;
    const dpop = await new SignJWT({ htm: 'POST', htu: tokenUrl, jti: randomUUID(), iat: Math.floor(Date.now() / 1000) })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
      .sign(privateKey);
    const flow = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid email' });
    assert.ok(flow.code);
    const res = await fetch(tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(world.shop.clientId, world.shop.secret), dpop },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: flow.code, code_verifier: flow.verifier, redirect_uri: world.shop.redirectUri }),
    });
    const { access_token: token, token_type: type } = (await res.json()) as { access_token: string; token_type: string };
    assert.equal(type, 'DPoP');
    const details: string[] = [];
    const listener = (_ctx: unknown, err: { error_detail?: string }) => details.push(String(err.error_detail));
    const events = server.app.provider as unknown as { on(e: string, l: typeof listener): void; off(e: string, l: typeof listener): void };
    events.on('userinfo.error', listener);
    try {
      const me = await fetch(`${server.issuer}/me`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(me.status, 401);
      await me.body?.cancel();
    } finally {
      events.off('userinfo.error', listener);
    }
    assert.deepEqual(details, [UPSTREAM_WORDING.jktMismatch], 'oidc-provider details a key-bound token without its proof differently now');
  });

  it("deviceCodeErrors: the code entry's re-render errors keep their names (device-flow.ts)", () => {
    const classes = reRenderErrors as Record<string, new (...args: unknown[]) => Error>;
    for (const name of Object.values(UPSTREAM_WORDING.deviceCodeErrors)) {
      assert.equal(typeof classes[name], 'function', `oidc-provider no longer has ${name}`);
      assert.equal(new classes[name]!().name, name, `${name} is named differently now`);
    }
  });
});
