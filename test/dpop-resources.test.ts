import assert from 'node:assert/strict';
import { hash, randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import { adminApiUri } from '../src/admin/api.ts';
import { basic, signIn } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { useWorld, type World } from './helpers/world.ts';

/**
 * A DPoP-bound token (RFC 9449) at every resource Latchkey serves itself — userinfo (oidc-provider's)
 * and the admin API (ours) — is worth nothing without a fresh proof from its key for this very request:
 * a copied token alone, or with a proof made for another request, method, URL, token or key, or one
 * proof used twice, gets 401 with a DPoP challenge.
 */
let server: TestServer;
let world: World;
useWorld({}, (setup) => ({ server, world } = setup));

type Key = { privateKey: CryptoKey; jwk: JWK };

async function newKey(): Promise<Key> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  return { privateKey, jwk: await exportJWK(publicKey) };
}

/** A DPoP proof as a client library makes one; each field can be made wrong. */
async function proof(key: Key, claims: { htm: string; htu: string; token?: string; iat?: number; jti?: string }) {
  return new SignJWT({ htm: claims.htm, htu: claims.htu, jti: claims.jti ?? randomUUID(), iat: claims.iat ?? Math.floor(Date.now() / 1000), ...(claims.token ? { ath: hash('sha256', claims.token, 'base64url') } : {}) })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.jwk })
    .sign(key.privateKey);
}

async function tokenRequest(form: Record<string, string>, auth: string, dpop: string) {
  const res = await fetch(`${server.issuer}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: auth, dpop }, body: new URLSearchParams(form) });
  const body = (await res.json()) as Record<string, string>;
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.token_type, 'DPoP');
  return body.access_token!;
}

interface Resource {
  name: string;
  url: string;
  token: string;
  key: Key;
}

/** A person's token for userinfo, and a machine's for the admin API, both bound to a key. */
async function boundTokens(): Promise<Resource[]> {
  const personKey = await newKey();
  const flow = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid email' });
  assert.ok(flow.code);
  const tokenUrl = `${server.issuer}/token`;
  const personToken = await tokenRequest(
    { grant_type: 'authorization_code', code: flow.code, code_verifier: flow.verifier, redirect_uri: world.shop.redirectUri },
    basic(world.shop.clientId, world.shop.secret),
    await proof(personKey, { htm: 'POST', htu: tokenUrl }),
  );

  const machineKey = await newKey();
  const machine = await server.app.registry.createClient({ name: 'bound ops', grants: ['client_credentials'], scope: 'latchkey:admin' }, async () => {});
  const machineToken = await tokenRequest(
    { grant_type: 'client_credentials', scope: 'latchkey:admin', resource: adminApiUri(server.issuer) },
    basic(machine.clientId, machine.secret!),
    await proof(machineKey, { htm: 'POST', htu: tokenUrl }),
  );
  return [
    { name: 'userinfo', url: `${server.issuer}/me`, token: personToken, key: personKey },
    { name: 'admin API', url: `${server.issuer}/admin/api/v1/keys`, token: machineToken, key: machineKey },
  ];
}

async function call(url: string, authorization: string, dpop?: string) {
  const res = await fetch(url, { headers: { authorization, ...(dpop ? { dpop } : {}) } });
  await res.body?.cancel();
  return { status: res.status, challenge: res.headers.get('www-authenticate') ?? '' };
}

test('a key-bound token works at userinfo and the admin API only with a fresh, single-use proof of its key for that request', async () => {
  const resources = await boundTokens();
  const otherKey = await newKey();
  for (const r of resources) {
    const dpop = `DPoP ${r.token}`;
    const good = () => proof(r.key, { htm: 'GET', htu: r.url, token: r.token });
    const refusals: [string, { status: number; challenge: string }][] = [
      ['as a bearer token, without a proof', await call(r.url, `Bearer ${r.token}`)],
      ['a proof from another key', await call(r.url, dpop, await proof(otherKey, { htm: 'GET', htu: r.url, token: r.token }))],
      ['a proof for another method', await call(r.url, dpop, await proof(r.key, { htm: 'POST', htu: r.url, token: r.token }))],
      ['a proof for another URL', await call(r.url, dpop, await proof(r.key, { htm: 'GET', htu: `${server.issuer}/elsewhere`, token: r.token }))],
      ['a proof for another issuer', await call(r.url, dpop, await proof(r.key, { htm: 'GET', htu: r.url.replace(server.issuer, 'https://attacker.example'), token: r.token }))],
      ['a proof ten minutes old', await call(r.url, dpop, await proof(r.key, { htm: 'GET', htu: r.url, token: r.token, iat: Math.floor(Date.now() / 1000) - 600 }))],
      ['a proof for another token', await call(r.url, dpop, await proof(r.key, { htm: 'GET', htu: r.url, token: 'another-token' }))],
      ['a proof without the token hash', await call(r.url, dpop, await proof(r.key, { htm: 'GET', htu: r.url }))],
    ];
    for (const [what, answer] of refusals) {
      assert.equal(answer.status, 401, `${r.name}: ${what}`);
      assert.match(answer.challenge, /^DPoP /, `${r.name}: ${what}: ${answer.challenge}`);
      // A stale proof may be answered with a nonce to use instead (use_dpop_nonce, RFC 9449 §8).
      assert.match(answer.challenge, /error="(invalid_token|invalid_dpop_proof|use_dpop_nonce)"/, `${r.name}: ${what}`);
    }

    // Bearer with a proof beside it is a malformed request to oidc-provider (400 invalid_request); refused either way.
    const mixed = await call(r.url, `Bearer ${r.token}`, await good());
    assert.ok([400, 401].includes(mixed.status), `${r.name}: as a bearer token, with a good proof: ${mixed.status}`);
    assert.match(mixed.challenge, /error="invalid_(request|token)"/, `${r.name}: ${mixed.challenge}`);

    const once = await good();
    assert.equal((await call(r.url, dpop, once)).status, 200, `${r.name}: a good proof`);
    const replayed = await call(r.url, dpop, once);
    assert.equal(replayed.status, 401, `${r.name}: the same proof again`);
    assert.match(replayed.challenge, /^DPoP /);
    assert.equal((await call(r.url, dpop, await good())).status, 200, `${r.name}: a new proof`);
  }
});

test('an unbound token is refused with the DPoP scheme at the admin API, as at userinfo', async () => {
  const machine = await server.app.registry.createClient({ name: 'plain ops', grants: ['client_credentials'], scope: 'latchkey:admin' }, async () => {});
  const res = await fetch(`${server.issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(machine.clientId, machine.secret!) },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'latchkey:admin', resource: adminApiUri(server.issuer) }),
  });
  const token = ((await res.json()) as { access_token: string }).access_token;
  const url = `${server.issuer}/admin/api/v1/keys`;
  assert.equal((await call(url, `Bearer ${token}`)).status, 200);
  const key = await newKey();
  assert.equal((await call(url, `DPoP ${token}`, await proof(key, { htm: 'GET', htu: url, token }))).status, 401);
});
