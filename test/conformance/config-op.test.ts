import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { validateClientMetadata } from '../../src/oidc/client-metadata.ts';
import { rotateSigningKeys } from '../../src/oidc/signing-keys.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { createWorld, REDIRECT_URI, type World } from '../helpers/world.ts';
import { authorize, jwtHeader, refusedAsDocumented, relyingParty } from './op.ts';

/**
 * The suite's Config OP plan (oidcc-config-certification-test-plan: discovery) and the modules of
 * its Dynamic OP plan that apply to clients registered by an operator: ID token algorithms, signed
 * userinfo and key rotation. Key rotation restarts the server on the same Redis and port, as an
 * operator does after `latchkey keys rotate`.
 */
let redis: TestRedis;
let server: TestServer;
let world: World;

before(async () => {
  redis = await startRedis();
  server = await startServer({ redisUrl: redis.url });
  world = await createWorld(server);
});

after(async () => {
  await server?.close();
  await redis?.dispose();
});

async function discovery() {
  const res = await fetch(new URL('/.well-known/openid-configuration', server.issuer));
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
  return (await res.json()) as Record<string, unknown>;
}

async function jwks() {
  return ((await (await fetch(new URL('/jwks', server.issuer))).json()) as { keys: Record<string, unknown>[] }).keys;
}

const signInShop = async () => authorize(await relyingParty(server.issuer, world.shop), { issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid' });

describe('Config OP (oidcc-config-certification-test-plan) and Dynamic OP modules for registered clients', () => {
  test('oidcc-discovery-endpoint-verification', async () => {
    const d = await discovery();
    assert.equal(d.issuer, server.issuer);
    const endpoints = { authorization_endpoint: '/auth', token_endpoint: '/token', userinfo_endpoint: '/me', jwks_uri: '/jwks' };
    for (const [field, path] of Object.entries(endpoints)) assert.equal(d[field], `${server.issuer}${path}`, field);
    assert.ok((d.response_types_supported as string[]).includes('code'));
    assert.ok((d.subject_types_supported as string[]).includes('public'));
    assert.ok((d.id_token_signing_alg_values_supported as string[]).includes('RS256'), 'RS256, the OIDC default');
    assert.ok((d.scopes_supported as string[]).includes('openid'));
    for (const claim of ['sub', 'iss', 'auth_time', 'acr', 'name', 'email', 'email_verified']) {
      assert.ok((d.claims_supported as string[]).includes(claim), claim);
    }
    assert.ok((d.grant_types_supported as string[]).includes('authorization_code'));
    assert.ok((d.token_endpoint_auth_methods_supported as string[]).includes('client_secret_basic'));
    assert.deepEqual(d.code_challenge_methods_supported, ['S256']);
    // The JWKS: public signing keys only, each with a kid.
    const keys = await jwks();
    assert.ok(keys.some((k) => k.kty === 'RSA'));
    for (const k of keys) {
      assert.equal(typeof k.kid, 'string');
      assert.ok(k.use === undefined || k.use === 'sig');
      for (const secret of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) assert.equal(k[secret], undefined, `no private member ${secret}`);
    }
    // openid-client accepts it as an issuer's metadata.
    assert.equal((await relyingParty(server.issuer, world.shop)).serverMetadata().issuer, server.issuer);
  });

  test('oidcc-idtoken-rs256', async () => {
    const { tokens, claims } = await signInShop();
    assert.equal(jwtHeader(tokens.id_token!).alg, 'RS256', 'clients get RS256 ID tokens (the default)');
    assert.equal(claims.sub, world.user.id);
  });

  test('oidcc-idtoken-unsigned', async (t) => {
    assert.ok(!((await discovery()).id_token_signing_alg_values_supported as string[]).includes('none'));
    // Every registration (the CLI) goes through this check.
    const unsigned = { client_id: 'unsigned', client_secret: 'x', redirect_uris: [REDIRECT_URI], id_token_signed_response_alg: 'none' };
    await assert.rejects(validateClientMetadata(unsigned as never), /id_token_signed_response_alg/);
    refusedAsDocumented(t, 'unsigned ID tokens (alg none) are not offered; a client asking for them is refused at registration');
  });

  test('oidcc-userinfo-rs256', async (t) => {
    assert.equal((await discovery()).userinfo_signing_alg_values_supported, undefined, 'signed userinfo is not offered');
    const { tokens } = await signInShop();
    const res = await fetch(new URL('/me', server.issuer), { headers: { authorization: `Bearer ${tokens.access_token}` } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(((await res.json()) as { sub: string }).sub, world.user.id);
    refusedAsDocumented(t, 'userinfo answers plain JSON; signed userinfo is not offered');
  });

  test('oidcc-server-rotate-keys', async () => {
    const before = await signInShop();
    const oldKid = jwtHeader(before.tokens.id_token!).kid;
    // `latchkey keys rotate`: the running server follows it without a restart.
    await rotateSigningKeys(server.store, { retentionSeconds: 3600 });
    const deadline = Date.now() + 5000;
    while ((await jwks()).length <= 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));

    const afterRotation = await signInShop();
    const newKid = jwtHeader(afterRotation.tokens.id_token!).kid;
    assert.notEqual(newKid, oldKid, 'signed with the new key');
    const kids = (await jwks()).map((k) => k.kid);
    assert.ok(kids.includes(newKid), 'the new key is published');
    assert.ok(kids.includes(oldKid), 'the previous key stays published, so tokens it signed still verify');
    assert.equal(afterRotation.claims.sub, before.claims.sub);
  });
});
