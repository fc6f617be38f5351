import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { keys } from '../src/storage/keys.ts';
import type { RedisStore } from '../src/storage/redis-store.ts';
import { basic, endpoints, pkcePair, signIn, signInAndRedeem } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { API_URI, JWT_API_URI, useWorld, type World } from './helpers/world.ts';

/** Tokens: the code flow with PKCE, ID tokens, APIs, introspection, refresh, replay and revocation. */
let server: TestServer;
let world: World;
let call: ReturnType<typeof endpoints>;

useWorld((setup) => {
  ({ server, world } = setup);
  call = endpoints(server.issuer);
});

const signInShop = (scope: string, params?: Record<string, string | undefined>) =>
  signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope, params });

const inactive = { active: false };

describe('authorization code with PKCE', () => {
  it('returns code, state and iss (RFC 9207) to the redirect_uri and tokens for the code', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid profile email offline_access api:read' });
    assert.ok(flow.callback, `did not reach the client: ${flow.page?.html.slice(0, 300)}`);
    assert.equal(flow.callback.origin + flow.callback.pathname, world.shop.redirectUri);
    assert.equal(flow.callback.searchParams.get('iss'), server.issuer);
    assert.equal(flow.callback.searchParams.get('state'), flow.state);
    assert.ok(flow.code);

    const res = await call.redeem(world.shop, flow.code, flow.verifier);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.equal(res.body.token_type, 'Bearer');
    assert.equal(typeof res.body.access_token, 'string');
    assert.equal(typeof res.body.refresh_token, 'string', 'offline_access without prompt=consent still gives a refresh token');
    assert.equal(typeof res.body.id_token, 'string');
  });

  it('signs an ID token that verifies against the JWKS and names the person, even when the access token is for an API', async () => {
    const { flow, tokens } = await signInShop('openid profile email api:read');
    const jwks = createRemoteJWKSet(new URL('/jwks', server.issuer));
    const { payload, protectedHeader } = await jwtVerify(tokens.id_token!, jwks, { issuer: server.issuer, audience: world.shop.clientId });
    assert.equal(protectedHeader.alg, 'RS256');
    assert.equal(payload.sub, world.user.id);
    assert.equal(payload.nonce, flow.nonce);
    assert.equal(payload.email, world.user.email);
    assert.equal(payload.email_verified, true);
    assert.equal(payload.name, world.user.name);
    // …and the access token really is for the API.
    const seen = await call.introspect(world.api, tokens.access_token);
    assert.equal(seen.body.active, true);
  });

  it('leaves profile and email out of the ID token when they were not asked for', async () => {
    const { tokens } = await signInShop('openid');
    const { payload } = await jwtVerify(tokens.id_token!, createRemoteJWKSet(new URL('/jwks', server.issuer)));
    assert.equal(payload.sub, world.user.id);
    assert.equal(payload.email, undefined);
    assert.equal(payload.name, undefined);
  });

  it('serves userinfo for an openid-only access token', async () => {
    const { tokens } = await signInShop('openid profile email');
    const res = await fetch(new URL('/me', server.issuer), { headers: { authorization: `Bearer ${tokens.access_token}` } });
    assert.equal(res.status, 200);
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.sub, world.user.id);
    assert.equal(body.email, world.user.email);
    assert.equal(body.name, world.user.name);
  });

  it('refuses a code redeemed with the wrong PKCE verifier', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid' });
    const res = await call.redeem(world.shop, flow.code!, 'x'.repeat(43));
    assert.equal(res.status, 400);
    assert.equal(res.body.error, 'invalid_grant');
  });
});

describe('API scopes and introspection', () => {
  let apiToken: string;
  let openidToken: string;

  before(async () => {
    apiToken = (await signInShop('openid api:read')).tokens.access_token;
    openidToken = (await signInShop('openid')).tokens.access_token;
  });

  it('issues a token for the API that owns the scope when no resource is named', async () => {
    const res = await call.introspect(world.api, apiToken);
    assert.equal(res.status, 200);
    assert.equal(res.body.active, true);
    assert.deepEqual([res.body.aud].flat(), [API_URI]);
    assert.equal(res.body.client_id, world.shop.clientId);
    assert.equal(res.body.sub, world.user.id);
    assert.match(String(res.body.scope), /\bapi:read\b/);
  });

  it('answers exactly {"active":false} to an API introspecting a token that is not for it', async () => {
    const res = await call.introspect(world.api, openidToken);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, inactive);
    // The JWT API has no business with the opaque API's tokens either.
    assert.deepEqual((await call.introspect(world.jwtApi, apiToken)).body, inactive);
  });

  it('lets a client introspect its own token, and no other client', async () => {
    assert.equal((await call.introspect(world.shop, openidToken)).body.active, true);
    assert.deepEqual((await call.introspect(world.other, openidToken)).body, inactive);
    assert.deepEqual((await call.introspect(world.other, apiToken)).body, inactive);
    assert.deepEqual((await call.introspect(world.machine, apiToken)).body, inactive);
  });

  it('answers {"active":false} for unknown and expired tokens', async () => {
    assert.deepEqual((await call.introspect(world.api, 'not-a-token')).body, inactive);
    assert.deepEqual((await call.introspect(world.api, apiToken.slice(0, -2) + 'AA')).body, inactive);

    // Age a stored token past its expiry (what the clock would do in an hour).
    const expiring = (await signInShop('openid api:read')).tokens.access_token;
    const redisClient = (server.store as RedisStore).client;
    const key = keys.model('AccessToken', expiring);
    const payload = JSON.parse((await redisClient.get(key))!) as Record<string, number>;
    payload.iat! -= 7200;
    payload.exp = Math.floor(Date.now() / 1000) - 10;
    await redisClient.set(key, JSON.stringify(payload), 'KEEPTTL');
    assert.deepEqual((await call.introspect(world.api, expiring)).body, inactive);
    assert.deepEqual((await call.introspect(world.shop, expiring)).body, inactive);
  });

  it('refuses introspection without client authentication (401 invalid_client)', async () => {
    const res = await call.introspect({ clientId: 'anonymous' }, apiToken);
    assert.equal(res.status, 401);
    assert.equal(res.body.error, 'invalid_client');
    assert.equal(res.body.active, undefined);
    const unknownClient = await call.introspect({ clientId: 'no-such-client', secret: 'whatever' }, apiToken);
    assert.equal(unknownClient.status, 401);
    assert.equal(unknownClient.body.error, 'invalid_client');
    const wrong = await call.introspect({ clientId: world.api.clientId, secret: 'wrong-secret' }, apiToken);
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.error, 'invalid_client');
  });

  it('supports RFC 8707 resource indicators at authorization', async () => {
    const { tokens } = await signInShop('openid api:read', { resource: API_URI });
    const res = await call.introspect(world.api, tokens.access_token);
    assert.equal(res.body.active, true);
    assert.deepEqual([res.body.aud].flat(), [API_URI]);
  });

  it('refuses a resource that is not registered (invalid_target)', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid api:read', params: { resource: 'https://unknown.example' } });
    assert.equal(flow.code, undefined);
    assert.equal(flow.callback?.searchParams.get('error'), 'invalid_target');
  });

  it('issues ES256 JWT access tokens with the API as audience for a JWT API', async () => {
    const { tokens } = await signInShop('openid jwt:read');
    const header = decodeProtectedHeader(tokens.access_token);
    assert.equal(header.alg, 'ES256');
    assert.equal(header.typ, 'at+jwt');
    const { payload } = await jwtVerify(tokens.access_token, createRemoteJWKSet(new URL('/jwks', server.issuer)), {
      issuer: server.issuer,
      audience: JWT_API_URI,
      typ: 'at+jwt',
    });
    assert.equal(payload.sub, world.user.id);
    assert.equal(payload.client_id, world.shop.clientId);
    assert.match(String(payload.scope), /\bjwt:read\b/);
  });
});

describe('client credentials', () => {
  it('gives a machine client a token for the API of its scope, which that API can introspect', async () => {
    const res = await call.token(world.machine, { grant_type: 'client_credentials', scope: 'api:read' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.equal(res.body.scope, 'api:read');
    const seen = await call.introspect(world.api, String(res.body.access_token));
    assert.equal(seen.body.active, true);
    assert.deepEqual([seen.body.aud].flat(), [API_URI]);
    assert.equal(seen.body.client_id, world.machine.clientId);
    assert.deepEqual((await call.introspect(world.jwtApi, String(res.body.access_token))).body, inactive);
  });

  it('refuses a scope the machine client was not registered with (invalid_scope naming it), never leaving it out quietly', async () => {
    const openid = await call.token(world.machine, { grant_type: 'client_credentials', scope: 'openid' });
    assert.equal(openid.status, 400);
    assert.equal(openid.body.error, 'invalid_scope');
    for (const form of [{ scope: 'api:read api:write' }, { scope: 'api:write' }, { scope: 'api:write', resource: API_URI }] as Record<string, string>[]) {
      const write = await call.token(world.machine, { grant_type: 'client_credentials', ...form });
      assert.equal(write.status, 400, JSON.stringify(form));
      assert.equal(write.body.error, 'invalid_scope');
      assert.match(String(write.body.error_description), /not registered for the scope api:write/);
      assert.equal(write.body.access_token, undefined);
    }
    const read = await call.token(world.machine, { grant_type: 'client_credentials', scope: 'api:read' });
    assert.equal(read.body.scope, 'api:read');
  });
});

describe('a scope the client was not registered for', () => {
  const unregistered = (description: unknown) => assert.match(String(description), /not registered for the scope api:write/);

  it('is an invalid_scope error redirect at /auth, and a 400 at PAR', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid api:read api:write' });
    assert.equal(flow.code, undefined);
    assert.equal(flow.callback?.origin + String(flow.callback?.pathname), world.shop.redirectUri);
    assert.equal(flow.callback?.searchParams.get("error"), "invalid_scope", String(flow.callback));
    unregistered(flow.callback?.searchParams.get('error_description'));
    const par = await fetch(new URL('/request', server.issuer), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(world.shop.clientId, world.shop.secret) },
      body: new URLSearchParams({ client_id: world.shop.clientId, response_type: 'code', redirect_uri: world.shop.redirectUri, scope: 'openid api:write', code_challenge: pkcePair().challenge, code_challenge_method: 'S256' }),
    });
    const body = (await par.json()) as Record<string, unknown>;
    assert.equal(par.status, 400, JSON.stringify(body));
    assert.equal(body.error, 'invalid_scope', JSON.stringify(body));
    unregistered(body.error_description);
  });

  it('is invalid_scope at a refresh that names it after the client lost it; the scopes it kept still refresh', async () => {
    const app = await world.newApp('Narrowed later', 'openid offline_access api:read api:write');
    const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: app, user: world.user, scope: 'openid offline_access api:read api:write' });
    assert.equal(tokens.scope, 'api:read api:write');
    await server.app.registry.updateClient(app.clientId, { scope: 'openid offline_access api:read' }, async () => {});
    const named = await postForm('/token', { grant_type: 'refresh_token', refresh_token: tokens.refresh_token!, scope: 'api:read api:write' }, basic(app.clientId, app.secret));
    assert.equal(named.status, 400);
    assert.equal(named.body.error, 'invalid_scope');
    unregistered(named.body.error_description);
    const narrower = await postForm('/token', { grant_type: 'refresh_token', refresh_token: tokens.refresh_token!, scope: 'api:read' }, basic(app.clientId, app.secret));
    assert.equal(narrower.status, 200, JSON.stringify(narrower.body));
    assert.equal(narrower.body.scope, 'api:read');
  });

  it('is invalid_scope at device authorization', async () => {
    const tv = await server.app.registry.createClient({ name: 'Kiosk', grants: ['urn:ietf:params:oauth:grant-type:device_code'], scope: 'openid api:read' }, async () => {});
    const res = await postForm('/device/auth', { scope: 'openid api:write' }, basic(tv.clientId, tv.secret!));
    assert.equal(res.status, 400);
    assert.equal(res.body.error, 'invalid_scope');
    unregistered(res.body.error_description);
    assert.equal((await postForm('/device/auth', { scope: 'openid api:read' }, basic(tv.clientId, tv.secret!))).status, 200);
  });
});

async function postForm(path: string, form: Record<string, string>, authorization: string) {
  const res = await fetch(new URL(path, server.issuer), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', authorization }, body: new URLSearchParams(form) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('refresh tokens', () => {
  it('rotates the refresh token on every use and refuses the used one', async () => {
    const { tokens } = await signInShop('openid offline_access api:read');
    const first = tokens.refresh_token!;
    assert.ok(first);
    const r1 = await call.refresh(world.shop, first);
    assert.equal(r1.status, 200, JSON.stringify(r1.body));
    assert.equal(r1.headers.get('cache-control'), 'no-store');
    const second = String(r1.body.refresh_token);
    assert.ok(second && second !== first, 'a new refresh token on use');
    assert.equal((await call.introspect(world.api, String(r1.body.access_token))).body.active, true);
    const r2 = await call.refresh(world.shop, second);
    assert.equal(r2.status, 200, JSON.stringify(r2.body));
    assert.notEqual(r2.body.refresh_token, second);
  });

  it('on reuse of a rotated refresh token refuses it and revokes the newest access and refresh tokens', async () => {
    const { tokens } = await signInShop('openid offline_access api:read');
    const rotated = tokens.refresh_token!;
    const fresh = await call.refresh(world.shop, rotated);
    assert.equal(fresh.status, 200);
    const newestAccess = String(fresh.body.access_token);
    const newestRefresh = String(fresh.body.refresh_token);
    assert.equal((await call.introspect(world.api, newestAccess)).body.active, true);

    const reuse = await call.refresh(world.shop, rotated);
    assert.equal(reuse.status, 400);
    assert.equal(reuse.body.error, 'invalid_grant');

    assert.deepEqual((await call.introspect(world.api, newestAccess)).body, inactive);
    assert.deepEqual((await call.introspect(world.shop, newestRefresh)).body, inactive);
    const after = await call.refresh(world.shop, newestRefresh);
    assert.equal(after.status, 400);
    assert.equal(after.body.error, 'invalid_grant');
  });

  it('refuses another client’s refresh token', async () => {
    const { tokens } = await signInShop('openid offline_access');
    const res = await call.refresh(world.other, tokens.refresh_token!);
    assert.equal(res.status, 400);
    assert.equal(res.body.error, 'invalid_grant');
  });
});

describe('authorization code replay', () => {
  it('refuses a second redemption and revokes the tokens of the first', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid offline_access api:read' });
    const first = await call.redeem(world.shop, flow.code!, flow.verifier);
    assert.equal(first.status, 200);
    assert.equal((await call.introspect(world.api, String(first.body.access_token))).body.active, true);

    const second = await call.redeem(world.shop, flow.code!, flow.verifier);
    assert.equal(second.status, 400);
    assert.equal(second.body.error, 'invalid_grant');
    assert.equal(second.body.access_token, undefined);

    assert.deepEqual((await call.introspect(world.api, String(first.body.access_token))).body, inactive);
    const refresh = await call.refresh(world.shop, String(first.body.refresh_token));
    assert.equal(refresh.body.error, 'invalid_grant');
  });

  it('lets exactly one of many parallel redemptions of one code succeed', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid api:read' });
    const results = await Promise.all(Array.from({ length: 10 }, () => call.redeem(world.shop, flow.code!, flow.verifier)));
    const ok = results.filter((r) => r.status === 200);
    assert.equal(ok.length, 1, `${ok.length} redemptions succeeded`);
    for (const r of results) if (r.status !== 200) assert.equal(r.body.error, 'invalid_grant');
  });
});

describe('revocation (RFC 7009)', () => {
  it('lets a client revoke its own access token', async () => {
    const { tokens } = await signInShop('openid api:read');
    assert.equal((await call.introspect(world.api, tokens.access_token)).body.active, true);
    const res = await call.revoke(world.shop, tokens.access_token);
    assert.equal(res.status, 200);
    assert.deepEqual((await call.introspect(world.api, tokens.access_token)).body, inactive);
    assert.deepEqual((await call.introspect(world.shop, tokens.access_token)).body, inactive);
  });

  it('answers 200 to another client revoking a token and leaves the token alive', async () => {
    const { tokens } = await signInShop('openid api:read');
    const res = await call.revoke(world.other, tokens.access_token);
    assert.equal(res.status, 200);
    assert.equal((await call.introspect(world.api, tokens.access_token)).body.active, true);
    // Indistinguishable from revoking a token that does not exist.
    const unknown = await call.revoke(world.other, 'no-such-token');
    assert.equal(unknown.status, 200);
  });

  it('revoking a refresh token kills the access tokens of its grant', async () => {
    const { tokens } = await signInShop('openid offline_access api:read');
    const res = await call.revoke(world.shop, tokens.refresh_token!, 'refresh_token');
    assert.equal(res.status, 200);
    assert.deepEqual((await call.introspect(world.api, tokens.access_token)).body, inactive);
    assert.equal((await call.refresh(world.shop, tokens.refresh_token!)).body.error, 'invalid_grant');
  });

  it('refuses revocation without client authentication', async () => {
    const { tokens } = await signInShop('openid api:read');
    const res = await call.revoke({ clientId: 'anonymous' }, tokens.access_token);
    assert.equal(res.status, 401);
    assert.equal(res.body.error, 'invalid_client');
    assert.equal((await call.introspect(world.api, tokens.access_token)).body.active, true);
  });
});
