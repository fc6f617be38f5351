import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { adminApiUri } from '../src/admin/api.ts';
import { REGISTRY_CHANGES } from '../src/oidc/registry.ts';
import { keys } from '../src/storage/keys.ts';
import type { RedisStore } from '../src/storage/redis-store.ts';
import { endpoints, signInAndRedeem } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { useWorld, type World } from './helpers/world.ts';

/**
 * A deleted client's tokens die with it: its grants (codes, access and refresh tokens) and its
 * client-credentials tokens are revoked, an API introspecting one hears `active: false`, and an admin
 * client's token stops at once — as it does when the client loses the admin scope.
 */
let server: TestServer;
let world: World;
useWorld((setup) => ({ server, world } = setup));

const noValidation = async () => {};
const today = () => Math.floor(Date.now() / 86_400_000);

async function machine(scope: string) {
  const c = await server.app.registry.createClient({ name: `machine ${scope}`, grants: ['client_credentials'], scope }, noValidation);
  const resource = scope.startsWith('latchkey:') ? adminApiUri(server.issuer) : undefined;
  const res = await endpoints(server.issuer).token({ clientId: c.clientId, secret: c.secret! }, { grant_type: 'client_credentials', scope, ...(resource ? { resource } : {}) });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return { clientId: c.clientId, secret: c.secret!, token: String(res.body.access_token) };
}

async function adminCall(token: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${server.issuer}/admin/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const introspect = async (api: { clientId: string; secret: string }, token: string) => {
  const res = await endpoints(server.issuer).introspect(api, token);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
};

test('deleting a client revokes its grants and tokens: introspection says active: false, its admin token stops', async () => {
  const operator = await machine('latchkey:admin');
  const doomedAdmin = await machine('latchkey:admin');
  const doomedMachine = await machine('api:read');
  const app = await world.newApp('Doomed app');
  const person = await signInAndRedeem({ issuer: server.issuer, client: app, user: world.user, scope: 'openid offline_access api:read', params: { prompt: 'consent' } });
  const jwtPerson = await signInAndRedeem({ issuer: server.issuer, client: app, user: world.user, scope: 'openid jwt:read' });
  const { access_token: accessToken, refresh_token: refreshToken } = person.tokens;
  assert.ok(refreshToken);

  assert.equal((await introspect(world.api, accessToken)).active, true);
  assert.equal((await introspect(world.api, doomedMachine.token)).active, true);
  assert.equal((await introspect(world.jwtApi, jwtPerson.tokens.access_token)).active, true);
  assert.equal((await adminCall(doomedAdmin.token, 'GET', '/keys')).status, 200);
  // The client's indexes expire with what they list (its tokens' to the end of the clock hour the longest ends in).
  const redis = (server.store as RedisStore).client;
  const ttl = await redis.ttl(keys.clientTokens(doomedMachine.clientId, today()));
  assert.ok(ttl >= 3600 - 5 && ttl <= 7200, `client-credentials index TTL ${ttl}`);
  assert.ok((await redis.ttl(keys.clientGrants(app.clientId, today()))) > 0);

  for (const clientId of [app.clientId, doomedMachine.clientId, doomedAdmin.clientId]) {
    const deleted = await adminCall(operator.token, 'DELETE', `/clients/${clientId}`);
    assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
  }
  const events = (await adminCall(operator.token, 'GET', `/activity?event=client_deleted&client_id=${app.clientId}`)).body.events as { grants: number }[];
  assert.ok(events[0]!.grants >= 2, JSON.stringify(events));

  // Revoked in storage, not merely hidden: the records are gone.
  assert.equal(await server.store.getModel(keys.model('AccessToken', accessToken), { consumable: false }), null);
  assert.equal(await server.store.getModel(keys.model('RefreshToken', refreshToken), { consumable: true }), null);
  assert.equal(await server.store.getModel(keys.model('ClientCredentials', doomedMachine.token), { consumable: false }), null);
  assert.equal(await server.store.getModel(keys.model('ClientCredentials', doomedAdmin.token), { consumable: false }), null);

  assert.deepEqual(await introspect(world.api, accessToken), { active: false });
  assert.deepEqual(await introspect(world.api, refreshToken), { active: false });
  assert.deepEqual(await introspect(world.api, doomedMachine.token), { active: false });
  // A JWT is not stored: its signature still verifies, but its client is gone.
  assert.deepEqual(await introspect(world.jwtApi, jwtPerson.tokens.access_token), { active: false });
  assert.equal((await adminCall(doomedAdmin.token, 'GET', '/keys')).status, 401);
  assert.equal(server.logs.filter((l) => Number(l.level) >= 50).length, 0, 'no error logged');
});

test("deleting a client after an upgrade revokes the client-credentials tokens an earlier version listed (a set of record keys) and this one's", async () => {
  const operator = await machine('latchkey:admin');
  const doomed = await machine('api:read');
  // What the earlier version wrote for a token: its record, and its record key in a set of the client's day.
  const stored = await server.store.getModel(keys.model('ClientCredentials', doomed.token), { consumable: false });
  assert.ok(stored);
  const earlier = randomBytes(32).toString('base64url');
  await server.store.putModel(keys.model('ClientCredentials', earlier), stored.payload, 3600, undefined, { consumable: false });
  await server.store.indexAdd(keys.clientTokenSet(doomed.clientId, today()), keys.model('ClientCredentials', earlier), 3600);
  assert.equal((await introspect(world.api, earlier)).active, true, 'a working token');
  assert.equal((await introspect(world.api, doomed.token)).active, true);

  const deleted = await adminCall(operator.token, 'DELETE', `/clients/${doomed.clientId}`);
  assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
  for (const token of [earlier, doomed.token]) assert.equal(await server.store.getModel(keys.model('ClientCredentials', token), { consumable: false }), null, 'the record is gone');
  const redis = (server.store as RedisStore).client;
  assert.equal(await redis.exists(keys.clientTokenSet(doomed.clientId, today()), keys.clientTokens(doomed.clientId, today())), 0, 'and both indexes');
  assert.deepEqual(await introspect(world.api, earlier), { active: false });
});

test('a token whose client vanished without revocation (an older server deleted it) introspects as active: false, not 500', async () => {
  const app = await world.newApp('Vanishing app');
  const person = await signInAndRedeem({ issuer: server.issuer, client: app, user: world.user, scope: 'openid api:read' });
  const cc = await machine('api:read');
  // What an earlier version's `client delete` did: the record goes, the tokens stay.
  await server.store.del(keys.client(app.clientId), keys.client(cc.clientId));
  await server.store.publish(REGISTRY_CHANGES, 'changed');
  while (await server.app.registry.findClient(app.clientId)) await new Promise((resolve) => setImmediate(resolve));
  assert.ok(await server.store.getModel(keys.model('AccessToken', person.tokens.access_token), { consumable: false }), 'the record is still there');

  assert.deepEqual(await introspect(world.api, person.tokens.access_token), { active: false });
  assert.deepEqual(await introspect(world.api, cc.token), { active: false });
  assert.equal(server.logs.filter((l) => Number(l.level) >= 50).length, 0, 'no error logged');
});

test('removing the admin scope from a client ends its admin access at once, not at token expiry', async () => {
  const operator = await machine('latchkey:admin');
  const ops = await machine('latchkey:admin');
  assert.equal((await adminCall(ops.token, 'GET', '/keys')).status, 200);
  const narrowed = await adminCall(operator.token, 'PATCH', `/clients/${ops.clientId}`, { scope: 'latchkey:admin:read' });
  assert.equal(narrowed.status, 200, JSON.stringify(narrowed.body));
  // Its token says latchkey:admin; the client holds only the read scope now, and its token was not issued that one.
  assert.equal((await adminCall(ops.token, 'POST', '/keys/rotate')).status, 403);
  assert.equal((await adminCall(ops.token, 'GET', '/keys')).status, 403);
  assert.equal((await adminCall(operator.token, 'PATCH', `/clients/${ops.clientId}`, { scope: 'latchkey:admin' })).status, 200);
  assert.equal((await adminCall(ops.token, 'GET', '/keys')).status, 200, 'given back, the scope works again');
});
