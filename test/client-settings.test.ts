import assert from 'node:assert/strict';
import { test } from 'node:test';
import { secretMatches } from '../src/oidc/registry.ts';
import { browse, CookieJar, endpoints, pkcePair, signIn, signInAndRedeem } from './helpers/flow.ts';
import type { TestRedis } from './helpers/redis.ts';
import type { TestServer } from './helpers/server.ts';
import { useWorld, type World } from './helpers/world.ts';
import { runCli } from './helpers/cli.ts';
import { eventually } from './helpers/eventually.ts';

/**
 * `client create --native` (RFC 8252 loopback redirects on any port), `--pkce optional` (confidential
 * clients of libraries without PKCE) and `client update`, run as the CLI against a running server's Redis.
 */
let redis: TestRedis;
let server: TestServer;
let world: World;

useWorld((setup) => ({ redis, server, world } = setup));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  json: any;
  audit: Record<string, any>[];
}

async function latchkey(...args: string[]): Promise<Run> {
  const { code, stdout, stderr } = await runCli([...args, '--json'], { env: { REDIS_URL: redis.url } });
  const ok = code === 0;
  return { code, stdout, stderr, json: ok ? JSON.parse(stdout) : undefined, audit: ok ? stderr.split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [] };
}

async function succeeds(...args: string[]): Promise<Run> {
  const r = await latchkey(...args);
  assert.equal(r.code, 0, r.stderr);
  return r;
}

/** Exit 2, one line on stderr, nothing on stdout. */
async function refused(pattern: RegExp, ...args: string[]) {
  const r = await latchkey(...args);
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^latchkey: [^\n]+\n$/);
  assert.match(r.stderr, pattern);
}

/**
 * What GET /auth does with this request: 'sign-in' (on to the sign-in page), 'refused' (an error page:
 * the redirect URI is not the client's), or the error it sends back to the client.
 */
async function authorize(clientId: string, redirectUri: string) {
  const { challenge } = pkcePair();
  const query = { client_id: clientId, redirect_uri: redirectUri, response_type: 'code', scope: 'openid', state: 's', nonce: 'n', code_challenge: challenge, code_challenge_method: 'S256' };
  const res = await browse(new CookieJar(), new URL(`/auth?${new URLSearchParams(query)}`, server.issuer));
  await res.body?.cancel();
  if (res.status === 400) return 'refused';
  const location = new URL(res.headers.get('location') ?? '', server.issuer);
  if (res.status === 303 && location.pathname.startsWith('/interaction/')) return 'sign-in';
  return location.searchParams.get('error') ?? `HTTP ${res.status}`;
}

const clientKey = (id: string) => `lk:client:${id}`;

test('a --native client is public and its loopback redirect URIs match on any port; path, query and host must match exactly', async () => {
  const created = await succeeds(
    'client', 'create', '--native', '--name', 'oidc-agent', '--grants', 'authorization_code,refresh_token', '--scope', 'openid offline_access',
    '--redirect-uri', 'http://127.0.0.1/callback', '--redirect-uri', 'http://localhost:8080/cb?x=1', '--redirect-uri', 'org.example.agent:/cb',
    '--post-logout-redirect-uri', 'http://[::1]/bye',
  );
  const id = created.json.client_id;
  assert.deepEqual(Object.keys(created.json), ['client_id'], 'no secret');
  const shown = (await succeeds('client', 'show', id)).json;
  assert.deepEqual([shown.public, shown.native, shown.pkce], [true, true, 'required']);
  assert.equal(created.audit[0]!.native, true);

  // A sign-in on a port the CLI tool picked at random, and its token request with the same redirect_uri.
  const redirectUri = 'http://127.0.0.1:53127/callback';
  const { flow, tokens } = await signInAndRedeem({ issuer: server.issuer, client: { clientId: id, redirectUri }, user: world.user, scope: 'openid' });
  assert.equal(flow.callback?.origin, 'http://127.0.0.1:53127');
  assert.ok(tokens.id_token);

  for (const uri of ['http://127.0.0.1:1/callback', 'http://localhost:65000/cb?x=1', 'http://localhost/cb?x=1', 'org.example.agent:/cb']) {
    assert.equal(await authorize(id, uri), 'sign-in', uri);
  }
  for (const uri of ['http://127.0.0.1:5000/callback/', 'http://127.0.0.1:5000/other', 'http://127.0.0.1:5000/callback?x=1', 'http://localhost:5000/callback', 'http://[::1]:5000/callback', 'http://localhost:8080/cb', 'https://127.0.0.1:5000/callback', 'http://127.0.0.2:5000/callback']) {
    assert.equal(await authorize(id, uri), 'refused', uri);
  }
  // Logout: the post-logout URI on any port too (a confirmation page, not an error).
  const logout = await browse(new CookieJar(), new URL(`/session/end?client_id=${id}&post_logout_redirect_uri=${encodeURIComponent('http://[::1]:4711/bye')}`, server.issuer));
  assert.equal(logout.status, 200, await logout.text());
  const wrongLogout = await browse(new CookieJar(), new URL(`/session/end?client_id=${id}&post_logout_redirect_uri=${encodeURIComponent('http://[::1]:4711/other')}`, server.issuer));
  assert.equal(wrongLogout.status, 400);
});

test('only --native clients get any port: a web client registered with a loopback port matches that port only', async () => {
  const web = (await succeeds('client', 'create', '--name', 'Dev app', '--grants', 'authorization_code', '--scope', 'openid', '--redirect-uri', 'http://127.0.0.1:8080/cb')).json.client_id;
  assert.equal(await authorize(web, 'http://127.0.0.1:8080/cb'), 'sign-in');
  assert.equal(await authorize(web, 'http://127.0.0.1:9090/cb'), 'refused');
  await refused(/--native needs the authorization_code grant/, 'client', 'create', '--native', '--name', 'x', '--grants', 'client_credentials', '--scope', 'openid');
  await refused(/public client cannot use client_credentials/, 'client', 'create', '--native', '--name', 'x', '--grants', 'authorization_code,client_credentials', '--scope', 'openid', '--redirect-uri', 'http://127.0.0.1/cb');
});

test('--pkce optional: confidential clients only; such a client may leave PKCE out when it sends a nonce, and others may not', async () => {
  const args = ['client', 'create', '--name', 'Legacy', '--grants', 'authorization_code', '--scope', 'openid email', '--redirect-uri', 'http://127.0.0.1:9/legacy'];
  await refused(/^latchkey: --pkce optional is only for confidential clients/, ...args, '--pkce', 'optional', '--public');
  await refused(/--pkce optional is only for confidential clients/, ...args, '--pkce', 'optional', '--native');
  await refused(/--pkce must be required or optional, got "maybe"/, ...args, '--pkce', 'maybe');
  await refused(/--pkce optional needs the authorization_code grant/, 'client', 'create', '--name', 'job', '--grants', 'client_credentials', '--scope', 'api:read', '--pkce', 'optional');

  const created = await succeeds(...args, '--pkce', 'optional');
  const legacy = { clientId: created.json.client_id, secret: created.json.client_secret, redirectUri: 'http://127.0.0.1:9/legacy' };
  assert.equal(created.audit[0]!.event, 'client_created');
  assert.equal(created.audit[0]!.pkce, 'optional');
  assert.equal((await succeeds('client', 'show', legacy.clientId)).json.pkce, 'optional');

  const noPkce = { code_challenge: undefined, code_challenge_method: undefined };
  const flow = await signIn({ issuer: server.issuer, client: legacy, user: world.user, scope: 'openid email', params: noPkce });
  assert.ok(flow.code, `a code without PKCE: ${flow.callback}`);
  const ep = endpoints(server.issuer);
  const tokens = await ep.token(legacy, { grant_type: 'authorization_code', code: flow.code, redirect_uri: legacy.redirectUri });
  assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
  const claims = JSON.parse(Buffer.from(String(tokens.body.id_token).split('.')[1]!, 'base64url').toString());
  assert.equal(claims.nonce, flow.nonce, 'the nonce is what binds the code to its request');

  // Without a nonce the request is refused back to the client with a clear error.
  const noNonce = await signIn({ issuer: server.issuer, client: legacy, jar: flow.jar, scope: 'openid', params: { ...noPkce, nonce: undefined } });
  assert.equal(noNonce.callback?.searchParams.get('error'), 'invalid_request');
  assert.match(noNonce.callback?.searchParams.get('error_description') ?? '', /nonce/);
  // PKCE sent anyway is still checked.
  const withPkce = await signIn({ issuer: server.issuer, client: legacy, jar: flow.jar, scope: 'openid' });
  const wrong = await ep.token(legacy, { grant_type: 'authorization_code', code: withPkce.code!, redirect_uri: legacy.redirectUri, code_verifier: pkcePair().verifier });
  assert.equal(wrong.body.error, 'invalid_grant');
  // Every other client still needs PKCE.
  const strict = await signIn({ issuer: server.issuer, client: world.shop, jar: flow.jar, scope: 'openid', params: noPkce });
  assert.match(strict.callback?.searchParams.get('error_description') ?? '', /PKCE/);
});

test('client update changes settings under the rules of client create, keeps id and secret, is audited, and reaches a running server', async () => {
  const created = await succeeds('client', 'create', '--name', 'Shop v1', '--grants', 'authorization_code,refresh_token', '--scope', 'openid', '--redirect-uri', 'http://127.0.0.1:9/old');
  const id = created.json.client_id;
  const app = { clientId: id, secret: created.json.client_secret, redirectUri: 'http://127.0.0.1:9/new' };
  assert.equal(await authorize(id, app.redirectUri), 'refused', 'not registered yet');
  const before = await server.store.get(clientKey(id));

  // Bad input: the create rules, one line, exit 2, nothing written.
  await refused(/--redirect-uri must use https/, 'client', 'update', id, '--redirect-uri', 'http://evil.example/cb');
  const native = (await succeeds('client', 'create', '--native', '--name', 'n', '--grants', 'authorization_code', '--scope', 'openid', '--redirect-uri', 'http://127.0.0.1/cb')).json.client_id;
  await refused(/--pkce optional is only for confidential clients/, 'client', 'update', native, '--pkce', 'optional');
  await refused(/scope "nope:read" belongs to no API/, 'client', 'update', id, '--scope', 'openid nope:read');
  await refused(/no client with id/, 'client', 'update', 'unknownClient', '--name', 'x');
  await refused(/nothing to change/, 'client', 'update', id);
  await refused(/--name must not be empty/, 'client', 'update', id, '--name', ' ');
  await refused(/belongs to API/, 'client', 'update', world.api.clientId, '--name', 'x');
  assert.equal(await server.store.get(clientKey(id)), before, 'nothing written');

  const updated = await succeeds(
    'client', 'update', id, '--name', 'Shop v2', '--redirect-uri', 'http://127.0.0.1:9/new', '--post-logout-redirect-uri', 'http://127.0.0.1:9/bye',
    '--scope', 'openid email api:read', '--require-mfa', '--require-par', '--pkce', 'optional',
  );
  assert.deepEqual(updated.json.changed, ['name', 'redirectUris', 'postLogoutRedirectUris', 'scope', 'requireMfa', 'requirePar', 'pkce']);
  const audit = updated.audit[0]!;
  assert.deepEqual([audit.event, audit.clientId, audit.pkce, audit.requireMfa, audit.requirePar, audit.scope], ['client_updated', id, 'optional', true, true, 'openid email api:read']);
  assert.ok(!updated.stderr.includes(app.secret) && !updated.stdout.includes(app.secret));
  const shown = (await succeeds('client', 'show', id)).json;
  assert.deepEqual(
    [shown.client_id, shown.client_name, shown.redirect_uris, shown.post_logout_redirect_uris, shown.scope, shown.require_mfa, shown.require_pushed_authorization_requests, shown.pkce, shown.grant_types],
    [id, 'Shop v2', ['http://127.0.0.1:9/new'], ['http://127.0.0.1:9/bye'], 'openid email api:read', true, true, 'optional', ['authorization_code', 'refresh_token']],
  );
  assert.ok(secretMatches(JSON.parse((await server.store.get(clientKey(id)))!).client_secret, app.secret), 'the secret still works');

  // The running server follows: PAR is now required, so the plain GET /auth is refused...
  await eventually(async () => (await authorize(id, app.redirectUri)) === 'invalid_request', 'the server sees require-par');
  const back = await succeeds('client', 'update', id, '--no-require-par', '--no-require-mfa', '--pkce', 'required');
  assert.deepEqual(back.json.changed, ['requireMfa', 'requirePar', 'pkce']);
  // ...and once it is off again, the new redirect URI works and the old one is refused.
  await eventually(async () => (await authorize(id, app.redirectUri)) === 'sign-in', 'the server sees the new redirect URI');
  assert.equal(await authorize(id, 'http://127.0.0.1:9/old'), 'refused');
  const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: app, user: world.user, scope: 'openid email' });
  assert.ok(tokens.id_token, 'the same id and secret redeem a code');

  const same = await succeeds('client', 'update', id, '--name', 'Shop v2');
  assert.deepEqual(same.json.changed, []);
  assert.deepEqual(same.audit, [], 'nothing changed, nothing audited');
});

test('client update sets and removes the refresh grace window and the back-channel logout URI, under the create rules', async () => {
  const created = await succeeds('client', 'create', '--name', 'Tabs app', '--grants', 'authorization_code,refresh_token', '--scope', 'openid', '--redirect-uri', 'http://127.0.0.1:9/cb');
  const id = created.json.client_id;
  const machine = (await succeeds('client', 'create', '--name', 'Batch', '--grants', 'client_credentials', '--scope', 'api:read')).json.client_id;
  const before = await server.store.get(clientKey(id));
  await refused(/--refresh-grace must be a whole number of seconds from 0 to 60/, 'client', 'update', id, '--refresh-grace', '61');
  await refused(/--refresh-grace must be a whole number/, 'client', 'update', id, '--refresh-grace', 'soon');
  await refused(/--refresh-grace needs the refresh_token grant/, 'client', 'update', machine, '--refresh-grace', '5');
  await refused(/--backchannel-logout-uri must use https/, 'client', 'update', id, '--backchannel-logout-uri', 'http://shop.example/bc');
  await refused(/--backchannel-logout-uri needs the authorization_code grant/, 'client', 'update', machine, '--backchannel-logout-uri', 'https://batch.example/bc');
  await refused(/give one of them/, 'client', 'update', id, '--backchannel-logout-uri', 'https://shop.example/bc', '--no-backchannel-logout');
  await refused(/--backchannel-logout takes no value/, 'client', 'update', id, '--backchannel-logout');
  assert.equal(await server.store.get(clientKey(id)), before, 'nothing written');

  const set = await succeeds('client', 'update', id, '--refresh-grace', '10', '--backchannel-logout-uri', 'https://shop.example/bc');
  assert.deepEqual(set.json.changed, ['refreshGrace', 'backchannelLogoutUri']);
  assert.deepEqual([set.audit[0]!.refreshGraceSeconds, set.audit[0]!.backchannelLogout], [10, true]);
  const shown = (await succeeds('client', 'show', id)).json;
  assert.deepEqual([shown.refresh_grace_seconds, shown.backchannel_logout_uri], [10, 'https://shop.example/bc']);

  const removed = await succeeds('client', 'update', id, '--no-backchannel-logout', '--refresh-grace', '0');
  assert.deepEqual(removed.json.changed, ['refreshGrace', 'backchannelLogoutUri']);
  const after = (await succeeds('client', 'show', id)).json;
  assert.deepEqual([after.refresh_grace_seconds, after.backchannel_logout_uri], [0, undefined]);
  assert.deepEqual((await succeeds('client', 'update', id, '--no-backchannel-logout')).json.changed, [], 'already without one');
});

test('client update --public drops the secret, --secret-in issues a new one (shown once), --[no-]first-party; a native or machine client refuses the change', async () => {
  const created = await succeeds('client', 'create', '--name', 'Switch', '--grants', 'authorization_code', '--scope', 'openid', '--redirect-uri', 'http://127.0.0.1:9/cb');
  const id = created.json.client_id;
  const machine = (await succeeds('client', 'create', '--name', 'Cron', '--grants', 'client_credentials', '--scope', 'api:read')).json.client_id;
  const native = (await succeeds('client', 'create', '--native', '--name', 'Desk', '--grants', 'authorization_code', '--scope', 'openid', '--redirect-uri', 'http://127.0.0.1/cb')).json.client_id;
  await refused(/a public client cannot use client_credentials/, 'client', 'update', machine, '--public');
  await refused(/a native app is public \(RFC 8252\): it has no secret, so --secret-in stays none/, 'client', 'update', native, '--secret-in', 'header');
  await refused(/--secret-in must be header or body/, 'client', 'update', id, '--secret-in', 'jwt');

  const made = await succeeds('client', 'update', id, '--public', '--first-party');
  assert.deepEqual(made.json.changed, ['firstParty', 'public']);
  assert.deepEqual([made.json.token_endpoint_auth_method, made.json.first_party, made.json.client_secret, made.json.secret], ['none', true, undefined, undefined]);
  assert.deepEqual([made.audit[0]!.tokenEndpointAuthMethod, made.audit[0]!.firstParty], ['none', true]);
  const stored = JSON.parse((await server.store.get(clientKey(id)))!);
  assert.equal(stored.client_secret, undefined, 'the secret is gone from storage');
  const asPublic = await endpoints(server.issuer).token({ clientId: id, secret: created.json.client_secret }, { grant_type: 'authorization_code', code: 'x', redirect_uri: 'http://127.0.0.1:9/cb' });
  assert.equal(asPublic.status, 401, 'the old secret is not accepted');

  const back = await succeeds('client', 'update', id, '--secret-in', 'body', '--no-first-party');
  assert.deepEqual(back.json.changed, ['firstParty', 'public', 'secretIn']);
  const secret = back.json.client_secret as string;
  assert.ok(secret.length >= 32 && secret !== created.json.client_secret, 'a new secret');
  assert.equal(back.audit[0]!.secretIssued, true);
  assert.ok(!back.stderr.includes(secret), 'not in the audit line');
  const now = JSON.parse((await server.store.get(clientKey(id)))!);
  assert.equal(now.token_endpoint_auth_method, 'client_secret_post');
  assert.ok(secretMatches(now.client_secret, secret));
  // Already confidential: a method change keeps the secret it has.
  const basic = await succeeds('client', 'update', id, '--secret-in', 'header');
  assert.deepEqual([basic.json.changed, basic.json.client_secret], [['secretIn'], undefined]);
  assert.ok(secretMatches(JSON.parse((await server.store.get(clientKey(id)))!).client_secret, secret));
  const text = await runCli(['client', 'update', id, '--public'], { env: { REDIS_URL: redis.url } });
  assert.match(text.stdout, /Updated public/);
  const again = await runCli(['client', 'update', id, '--no-public'], { env: { REDIS_URL: redis.url } });
  assert.match(again.stdout, /client_secret\s+\S{32,}\nThe client secret is shown only now/);
});
