import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT, calculateJwkThumbprint, createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';
import * as oauth from 'oauth4webapi';
import { rotateSigningKeys } from '../src/oidc/signing-keys.ts';
import { endpoints, signIn, signInAndRedeem, type TokenResponse } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { REDIRECT_URI, useWorld, type World } from './helpers/world.ts';

/**
 * What common client libraries expect of us (issue 10): JWT access tokens at introspection and
 * revocation, machine clients without `scope`, RFC 6749 §5.2 error codes, a JSON revocation answer,
 * and discovery metadata.
 */
let server: TestServer;
let world: World;
let call: ReturnType<typeof endpoints>;
let redisUrl: string;

useWorld((setup) => {
  ({ server, world } = setup);
  redisUrl = setup.redis.url;
  call = endpoints(server.issuer);
});

const inactive = { active: false };
const insecure = { [oauth.allowInsecureRequests]: true } as const;

/** RFC 6749 §5.2: `error` from the registry of codes, an optional human `error_description`, nothing else. */
function assertOAuthError(res: TokenResponse, status: number, error: string, description?: RegExp) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
  assert.equal(res.body.error, error, JSON.stringify(res.body));
  assert.equal(typeof res.body.error_description, 'string');
  assert.ok(/^[\x20-\x21\x23-\x5b\x5d-\x7e]*$/.test(res.body.error_description as string), 'RFC 6749 §5.2 error_description characters');
  if (description) assert.match(res.body.error_description as string, description);
  for (const member of Object.keys(res.body)) assert.ok(['error', 'error_description', 'error_uri', 'request_id'].includes(member), `unexpected member ${member}`);
}

const jwtToken = async (scope = 'openid jwt:read') => (await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope })).tokens;

describe('JWT access tokens at introspection and revocation', () => {
  it('introspects a JWT access token like an opaque one: active for its API and its client, exactly inactive for anyone else', async () => {
    const { access_token } = await jwtToken();
    assert.equal(decodeProtectedHeader(access_token).typ, 'at+jwt');

    const seen = await call.introspect(world.jwtApi, access_token);
    assert.equal(seen.status, 200, JSON.stringify(seen.body));
    assert.equal(seen.headers.get('cache-control'), 'no-store');
    assert.equal(seen.body.active, true);
    assert.equal(seen.body.aud, world.jwtApi.uri);
    assert.equal(seen.body.client_id, world.shop.clientId);
    assert.equal(seen.body.sub, world.user.id);
    assert.equal(seen.body.scope, 'jwt:read');
    assert.equal(seen.body.iss, server.issuer);
    assert.equal(seen.body.token_type, 'Bearer');
    assert.equal(typeof seen.body.exp, 'number');

    assert.equal((await call.introspect(world.shop, access_token)).body.active, true, 'its own client');
    assert.deepEqual((await call.introspect(world.api, access_token)).body, inactive, 'another API');
    assert.deepEqual((await call.introspect(world.other, access_token)).body, inactive, 'another client');
    // Client authentication still comes first.
    assertOAuthError(await call.introspect({ clientId: world.jwtApi.clientId, secret: 'wrong' }, access_token), 401, 'invalid_client');
  });

  it('revokes a JWT access token: 200 {}, then inactive; the jti is remembered under a digest until the token expires', async () => {
    const { access_token } = await jwtToken();
    const { payload } = await jwtVerify(access_token, createRemoteJWKSet(new URL('/jwks', server.issuer)));

    const byOther = await call.revoke(world.other, access_token);
    assert.equal(byOther.status, 200);
    assert.deepEqual(byOther.body, {});
    assert.equal((await call.introspect(world.jwtApi, access_token)).body.active, true, "another client's revocation changes nothing");

    const res = await call.revoke(world.shop, access_token);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body, {});
    assert.deepEqual((await call.introspect(world.jwtApi, access_token)).body, inactive);
    assert.deepEqual((await call.introspect(world.shop, access_token)).body, inactive);

    const { Redis } = await import('ioredis');
    const db = new Redis(redisUrl);
    try {
      const revoked = await db.keys('lk:revoked-jwt:*');
      assert.ok(revoked.length >= 1);
      for (const key of revoked) {
        assert.ok(!key.includes(String(payload.jti)) && !key.includes(access_token), 'neither the jti nor the token in a key name');
        const ttl = await db.ttl(key);
        assert.ok(ttl > 0 && ttl <= payload.exp! - Math.floor(Date.now() / 1000) + 1, `TTL ${ttl} is the remaining lifetime`);
      }
    } finally {
      db.disconnect();
    }
  });

  it('an API revokes a JWT issued for it', async () => {
    const { access_token } = await jwtToken();
    assert.deepEqual((await call.revoke(world.jwtApi, access_token)).body, {});
    assert.deepEqual((await call.introspect(world.shop, access_token)).body, inactive);
  });

  it('still introspects a JWT signed by a retired key that is still published', async () => {
    const { access_token } = await jwtToken();
    const oldKid = decodeProtectedHeader(access_token).kid;
    await rotateSigningKeys(server.store, { retentionSeconds: 3600 });
    // Every server follows the rotation within moments: wait until a new JWT is signed by another key.
    let newKid = oldKid;
    for (let i = 0; i < 50 && newKid === oldKid; i++) newKid = decodeProtectedHeader((await jwtToken()).access_token).kid;
    assert.notEqual(newKid, oldKid, 'the rotation took effect');
    assert.equal((await call.introspect(world.jwtApi, access_token)).body.active, true);
  });

  it('answers forged, expired and malformed JWT-looking tokens as inactive (introspection) and 200 {} (revocation), never 4xx/5xx', async () => {
    const { access_token } = await jwtToken();
    const [h, p] = access_token.split('.');
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>;
    const forged = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: decodeProtectedHeader(access_token).kid }).sign(privateKey);
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const tampered = `${h}.${b64({ ...claims, scope: 'jwt:read jwt:write' })}.${access_token.split('.')[2]}`;
    const unsigned = `${b64({ alg: 'none', typ: 'at+jwt' })}.${p}.`;
    const expired = await new SignJWT({ ...claims, exp: 1 }).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt' }).sign(privateKey);
    const cases = [
      forged, tampered, unsigned, expired,
      `${h}.not-base64-json.sig`,
      `${h}..`,
      `${h}.${p}`,
      `${b64({ alg: 'ES256' })}.${b64('a string')}.AAAA`,
      `${b64({ alg: 'RSA-OAEP', enc: 'A256GCM' })}.a.b.c.d`,
      `${b64({ alg: 'HS256', typ: 'at+jwt' })}.${p}.${Buffer.from(JSON.stringify(await exportJWK(publicKey))).toString('base64url')}`,
      'eyJ.eyJ.eyJ',
      `${h}.${'A'.repeat(40_000)}.x`,
    ];
    for (const token of cases) {
      const seen = await call.introspect(world.jwtApi, token);
      assert.equal(seen.status, 200, `${token.slice(0, 60)}: ${JSON.stringify(seen.body)}`);
      assert.deepEqual(seen.body, inactive, token.slice(0, 60));
      const revoked = await call.revoke(world.jwtApi, token);
      assert.equal(revoked.status, 200, `${token.slice(0, 60)}: ${JSON.stringify(revoked.body)}`);
    }
    // None of that revoked the real token.
    assert.equal((await call.introspect(world.jwtApi, access_token)).body.active, true);
  });

});

describe('revocation answers JSON', () => {
  it('answers 200 with {} as application/json, for a revoked token and for an unknown one', async () => {
    const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid api:read' });
    for (const token of [tokens.access_token, 'no-such-token']) {
      const res = await call.revoke(world.shop, token);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
      assert.deepEqual(res.body, {});
    }
    assert.deepEqual((await call.introspect(world.api, tokens.access_token)).body, inactive);
  });

  it('is accepted by oauth4webapi', async () => {
    const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid api:read' });
    const as = await oauth.processDiscoveryResponse(new URL(server.issuer), await oauth.discoveryRequest(new URL(server.issuer), insecure));
    const res = await oauth.revocationRequest(as, { client_id: world.shop.clientId }, oauth.ClientSecretBasic(world.shop.secret), tokens.access_token, insecure);
    await oauth.processRevocationResponse(res);
    assert.deepEqual(await res.clone().json().catch(() => 'not JSON'), {});
  });
});

describe('client_credentials without scope', () => {
  it('issues the client its registered API scopes, for that API, and says so in `scope`', async () => {
    const res = await call.token(world.machine, { grant_type: 'client_credentials' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.scope, 'api:read');
    const seen = await call.introspect(world.api, res.body.access_token as string);
    assert.equal(seen.body.active, true);
    assert.equal(seen.body.aud, world.api.uri);
    assert.equal(seen.body.scope, 'api:read');
  });

  it('works for oauth4webapi without scopes', async () => {
    const as = await oauth.processDiscoveryResponse(new URL(server.issuer), await oauth.discoveryRequest(new URL(server.issuer), insecure));
    const client = { client_id: world.machine.clientId };
    const res = await oauth.clientCredentialsGrantRequest(as, client, oauth.ClientSecretBasic(world.machine.secret), new URLSearchParams(), insecure);
    const tokens = await oauth.processClientCredentialsResponse(as, client, res);
    assert.equal(tokens.scope, 'api:read');
  });

  it('refuses a scope no API owns with invalid_scope', async () => {
    assertOAuthError(await call.token(world.machine, { grant_type: 'client_credentials', scope: 'no-such:scope' }), 400, 'invalid_scope', /no-such:scope/);
    assertOAuthError(await call.token(world.machine, { grant_type: 'client_credentials', scope: 'api:read no-such:scope' }), 400, 'invalid_scope', /no-such:scope/);
    const named = await call.token(world.machine, { grant_type: 'client_credentials', scope: 'api:read' });
    assert.equal(named.status, 200);
    assert.equal(named.body.scope, 'api:read');
  });

  it("asks for a scope when the client's scopes belong to several APIs", async () => {
    const twoApis = await server.app.registry.createClient({ name: 'Two APIs', grants: ['client_credentials'], scope: 'api:read jwt:read' }, async () => {});
    const res = await call.token({ clientId: twoApis.clientId, secret: twoApis.secret! }, { grant_type: 'client_credentials' });
    assertOAuthError(res, 400, 'invalid_scope', /several APIs/);
    const named = await call.token({ clientId: twoApis.clientId, secret: twoApis.secret! }, { grant_type: 'client_credentials', scope: 'jwt:read' });
    assert.equal(named.status, 200, JSON.stringify(named.body));
    assert.equal(named.body.scope, 'jwt:read');
  });
});

describe('error codes and descriptions', () => {
  it('a grant type the client may not use is unauthorized_client', async () => {
    assertOAuthError(await call.token(world.shop, { grant_type: 'client_credentials' }), 400, 'unauthorized_client', /client_credentials/);
    assertOAuthError(await call.token(world.machine, { grant_type: 'refresh_token', refresh_token: 'x' }), 400, 'unauthorized_client', /refresh_token/);
  });

  it('userinfo with an access token for an API says so, and points to the ID token', async () => {
    for (const scope of ['openid api:read', 'openid jwt:read']) {
      const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope });
      const res = await fetch(new URL('/me', server.issuer), { headers: { authorization: `Bearer ${tokens.access_token}` } });
      assert.ok([401, 403].includes(res.status), `${scope}: ${res.status}`);
      const body = (await res.json()) as Record<string, unknown>;
      assert.ok(['invalid_token', 'insufficient_scope'].includes(String(body.error)));
      assert.match(String(body.error_description), /for an API.*ID token/, scope);
      assert.match(res.headers.get('www-authenticate') ?? '', /for an API/);
    }
  });

  it('a DPoP-bound token without a proof, and a refresh with another DPoP key, say so', async () => {
    const app = await server.app.registry.createClient(
      { name: 'Pocket', public: true, grants: ['authorization_code', 'refresh_token'], redirectUris: [REDIRECT_URI], scope: 'openid offline_access' },
      async () => {},
    );
    const client = { clientId: app.clientId, redirectUri: REDIRECT_URI };
    const [key, otherKey] = await Promise.all([generateKeyPair('ES256'), generateKeyPair('ES256')]);
    const proof = async (pair: CryptoKeyPair, htm: string, path: string, accessToken?: string) => {
      const jwk = await exportJWK(pair.publicKey);
      const ath = accessToken ? Buffer.from(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(accessToken))).toString('base64url') : undefined;
      return new SignJWT({ htm, htu: new URL(path, server.issuer).href, jti: crypto.randomUUID(), ...(ath ? { ath } : {}) })
        .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk }).setIssuedAt().sign(pair.privateKey);
    };
    const post = async (form: Record<string, string>, dpop: string) => {
      const res = await fetch(new URL('/token', server.issuer), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', dpop }, body: new URLSearchParams(form) });
      return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> };
    };
    const flow = await signIn({ issuer: server.issuer, client, user: world.user, scope: 'openid offline_access' });
    const tokens = await post({ grant_type: 'authorization_code', code: flow.code!, code_verifier: flow.verifier, redirect_uri: REDIRECT_URI, client_id: app.clientId }, await proof(key, 'POST', '/token'));
    assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
    assert.equal(tokens.body.token_type, 'DPoP');
    assert.equal((await calculateJwkThumbprint(await exportJWK(key.publicKey))).length, 43);

    const access = tokens.body.access_token as string;
    // The usual mistake: a library that sends every token as Bearer.
    const noProof = await fetch(new URL('/me', server.issuer), { headers: { authorization: `Bearer ${access}` } });
    assert.equal(noProof.status, 401);
    assert.match(String(((await noProof.json()) as Record<string, unknown>).error_description), /DPoP-bound.*proof/);
    const wrongKey = await fetch(new URL('/me', server.issuer), { headers: { authorization: `DPoP ${access}`, dpop: await proof(otherKey, 'GET', '/me', access) } });
    assert.equal(wrongKey.status, 401);
    assert.match(String(((await wrongKey.json()) as Record<string, unknown>).error_description), /not signed by the key/);

    const refresh = { grant_type: 'refresh_token', refresh_token: tokens.body.refresh_token as string, client_id: app.clientId };
    assertOAuthError(await post(refresh, await proof(otherKey, 'POST', '/token')), 400, 'invalid_grant', /DPoP proof is not signed by the key this refresh token is bound to/);
    // A refused refresh leaves the token usable with the right key.
    assert.equal((await post(refresh, await proof(key, 'POST', '/token'))).status, 200);
  });
});

describe('discovery', () => {
  const discover = async () => (await (await fetch(new URL('/.well-known/openid-configuration', server.issuer))).json()) as Record<string, string[]>;

  it('lists the introspection and revocation client authentication methods, and the API scopes', async () => {
    const meta = await discover();
    assert.deepEqual(meta.introspection_endpoint_auth_methods_supported, ['client_secret_basic', 'client_secret_post', 'none']);
    assert.deepEqual(meta.revocation_endpoint_auth_methods_supported, ['client_secret_basic', 'client_secret_post', 'none']);
    for (const scope of ['openid', 'profile', 'email', 'offline_access', 'api:read', 'api:write', 'jwt:read']) assert.ok(meta.scopes_supported!.includes(scope), scope);
  });

  it('leaves out the scopes of an API created with private scopes, and follows the registry', async () => {
    await server.app.registry.createResource({ uri: 'https://internal.example', scope: 'internal:admin', privateScopes: true });
    await server.app.registry.createResource({ uri: 'https://public.example', scope: 'public:read' });
    const meta = await discover();
    assert.ok(!meta.scopes_supported!.includes('internal:admin'));
    assert.ok(meta.scopes_supported!.includes('public:read'));
    assert.equal((await server.app.registry.findResource('https://internal.example'))?.privateScopes, true);
  });
});
