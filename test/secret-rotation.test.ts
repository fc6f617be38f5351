import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { adminApiUri } from '../src/admin/api.ts';
import { COMMANDS, type Context } from '../src/cli/commands.ts';
import { endpoints } from './helpers/flow.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { createWorld, type World } from './helpers/world.ts';

/**
 * Secret rotation with an overlap: the new secret is shown once, the old one keeps working until the
 * expiry the operator picked (the app is redeployed meanwhile), and revoking it early is one action.
 * Client credentials at /token are the proof a secret works; the server's clock is moved, not waited for.
 */
let redis: TestRedis;
let server: TestServer;
let world: World;
const clock = { offsetMs: 0 };
const noValidation = async () => {};

before(async () => {
  redis = await startRedis();
  server = await startServer({ redisUrl: redis.url, clock: () => Date.now() + clock.offsetMs });
  world = await createWorld(server);
});
after(async () => {
  await server?.close();
  await redis?.dispose();
});

async function machine(name: string) {
  const c = await server.app.registry.createClient({ name, grants: ['client_credentials'], scope: 'api:read' }, noValidation);
  return { clientId: c.clientId, secret: c.secret! };
}

/** Whether a secret gets a token with client credentials now; else the OAuth error. */
async function tokenWith(clientId: string, secret: string) {
  const res = await endpoints(server.issuer).token({ clientId, secret }, { grant_type: 'client_credentials', scope: 'api:read', resource: world.api.uri });
  return res.status === 200 ? 'token' : String(res.body.error);
}

async function adminApi() {
  const ops = await machine('ops');
  await server.app.registry.updateClient(ops.clientId, { scope: 'latchkey:admin' }, noValidation);
  const res = await endpoints(server.issuer).token(ops, { grant_type: 'client_credentials', scope: 'latchkey:admin', resource: adminApiUri(server.issuer) });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return async (method: string, path: string, body?: unknown) => {
    const answer = await fetch(`${server.issuer}/admin/api${path}`, {
      method,
      headers: { authorization: `Bearer ${String(res.body.access_token)}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: answer.status, body: (await answer.json()) };
  };
}

test('API: during the overlap both secrets get tokens; after the expiry the old one is invalid_client; both listed with their ages', async () => {
  const call = await adminApi();
  const app = await machine('Nightly export');
  const rotated = await call('POST', `/v1/clients/${app.clientId}/secret`, { keep_old_seconds: 3600 });
  assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
  const fresh = String(rotated.body.client_secret);
  assert.notEqual(fresh, app.secret);
  assert.equal(typeof rotated.body.old_secret_expires, 'string');

  assert.equal(await tokenWith(app.clientId, fresh), 'token', 'the new secret works');
  assert.equal(await tokenWith(app.clientId, app.secret), 'token', 'the old secret still works during the overlap');
  assert.equal(await tokenWith(app.clientId, 'not-the-secret'), 'invalid_client');

  const shown = await call('GET', `/v1/clients/${app.clientId}`);
  assert.equal(typeof shown.body.secret.created, 'string');
  assert.equal(shown.body.secret.previous.expires, rotated.body.old_secret_expires);
  assert.equal(typeof shown.body.secret.previous.created, 'string');
  assert.ok(!JSON.stringify(shown.body).includes(fresh) && !JSON.stringify(shown.body).includes(app.secret), 'no secret is shown again');

  clock.offsetMs = 3601_000;
  try {
    assert.equal(await tokenWith(app.clientId, app.secret), 'invalid_client', 'the old secret expired');
    assert.equal(await tokenWith(app.clientId, fresh), 'token');
    const later = await call('GET', `/v1/clients/${app.clientId}`);
    assert.equal(later.body.secret.previous, undefined, 'an expired old secret is not listed');
  } finally {
    clock.offsetMs = 0;
  }
});

test('API: revoking the old secret ends it at once; without keep_old_seconds (or 0) the old secret dies at the rotation', async () => {
  const call = await adminApi();
  const app = await machine('Billing worker');
  const rotated = await call('POST', `/v1/clients/${app.clientId}/secret`, { keep_old_seconds: 7 * 86400 });
  assert.equal(await tokenWith(app.clientId, app.secret), 'token');
  const revoked = await call('DELETE', `/v1/clients/${app.clientId}/secret/old`);
  assert.deepEqual(revoked.body, { client_id: app.clientId, old_secret_revoked: true });
  assert.equal(await tokenWith(app.clientId, app.secret), 'invalid_client', 'revoked at once');
  assert.equal(await tokenWith(app.clientId, String(rotated.body.client_secret)), 'token');
  const again = await call('DELETE', `/v1/clients/${app.clientId}/secret/old`);
  assert.deepEqual(again.body, { client_id: app.clientId, old_secret_revoked: false });
  assert.ok(server.logs.some((l) => l.event === 'client_old_secret_revoked' && l.clientId === app.clientId));
  assert.ok(server.logs.some((l) => l.event === 'client_secret_rotated' && l.clientId === app.clientId && l.keepOldSeconds === 7 * 86400));

  const noBody = await fetch(`${server.issuer}/admin/api/v1/clients/${app.clientId}/secret`, { method: 'POST', headers: { authorization: (await adminHeader()) } });
  assert.equal(noBody.status, 200);
  const plain = (await noBody.json()) as { client_secret: string; old_secret_expires: null };
  assert.equal(plain.old_secret_expires, null);
  assert.equal(await tokenWith(app.clientId, String(rotated.body.client_secret)), 'invalid_client', 'no overlap by default');
  assert.equal(await tokenWith(app.clientId, plain.client_secret), 'token');
});

async function adminHeader() {
  const ops = await machine('ops header');
  await server.app.registry.updateClient(ops.clientId, { scope: 'latchkey:admin' }, noValidation);
  const res = await endpoints(server.issuer).token(ops, { grant_type: 'client_credentials', scope: 'latchkey:admin', resource: adminApiUri(server.issuer) });
  return `Bearer ${String(res.body.access_token)}`;
}

test('API: a bad keep_old_seconds is a 400 problem naming the field; a public client has no secret to rotate', async () => {
  const call = await adminApi();
  const app = await machine('Bad input');
  for (const bad of [-1, 1.5, 31 * 86400, '1h']) {
    const res = await call('POST', `/v1/clients/${app.clientId}/secret`, { keep_old_seconds: bad });
    assert.equal(res.status, 400, `${JSON.stringify(bad)}: ${JSON.stringify(res.body)}`);
    assert.equal(res.body.errors[0].pointer, '#/keep_old_seconds');
  }
  assert.equal(await tokenWith(app.clientId, app.secret), 'token', 'a refused rotation changed nothing');
  const spa = await server.app.registry.createClient({ name: 'SPA', grants: ['authorization_code'], redirectUris: ['https://spa.example/cb'], scope: 'openid', public: true }, noValidation);
  assert.equal((await call('DELETE', `/v1/clients/${spa.clientId}/secret/old`)).status, 400);
  assert.equal((await call('DELETE', '/v1/clients/nope/secret/old')).status, 404);
});

test('CLI: rotate-secret --keep-old 24h keeps the old secret a day; revoke-old-secret ends it; bad durations are refused by flag', async () => {
  const ctx: Context = { ops: server.app.ops, actor: { kind: 'cli' } };
  const run = (name: string, values: Record<string, unknown>, args: string[]) => COMMANDS[name]!.run(ctx, values as never, args);
  const app = await machine('CLI app');
  const out = await run('client rotate-secret', { 'keep-old': '24h' }, [app.clientId]);
  const json = out.json as { client_secret: string; old_secret_expires: string };
  assert.match(out.text, /The old secret keeps working until/);
  assert.ok(Math.abs(Date.parse(json.old_secret_expires) - Date.now() - 86400_000) < 60_000);
  assert.equal(await tokenWith(app.clientId, app.secret), 'token');
  const shown = await run('client show', {}, [app.clientId]);
  assert.match(shown.text, /^old_secret_expires +\d{4}-/m);
  assert.match(shown.text, /^secret_created +\d{4}-/m);
  const revoked = await run('client revoke-old-secret', {}, [app.clientId]);
  assert.match(revoked.text, /no longer works/);
  assert.equal(await tokenWith(app.clientId, app.secret), 'invalid_client');
  for (const bad of ['1w', '-1h', 'soon', '31d']) {
    await assert.rejects(run('client rotate-secret', { 'keep-old': bad }, [app.clientId]), (err: Error) => /--keep-old/.test(err.message), bad);
  }
  assert.equal(await tokenWith(app.clientId, json.client_secret), 'token', 'refused rotations changed nothing');
  const plain = await run('client rotate-secret', {}, [app.clientId]);
  assert.match(plain.text, /The old secret no longer works/);
  assert.equal(await tokenWith(app.clientId, json.client_secret), 'invalid_client', 'the CLI default stays: the old secret dies at once');
});
