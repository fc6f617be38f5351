import assert from 'node:assert/strict';
import { test } from 'node:test';
import { adminApiUri } from '../src/admin/api.ts';
import { browserOf, factorsInWords, sessionHandle } from '../src/accounts/sessions.ts';
import { keys } from '../src/storage/keys.ts';
import { COMMANDS, type Context } from '../src/cli/commands.ts';
import { CookieJar, endpoints, signIn, signInAndRedeem } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { useWorld, type World } from './helpers/world.ts';

/**
 * A person's sessions, one by one: each listed with where and how it was signed in (IP, browser from
 * the user agent, time, factors in words, apps), addressed by a handle that is not the session id,
 * and ended alone while the person's other browser stays signed in.
 */
let server: TestServer;
let world: World;
useWorld((setup) => ({ server, world } = setup));

const SCOPE = 'openid profile offline_access api:read';
const CHROME = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';
const FIREFOX = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14.1; rv:133.0) Gecko/20100101 Firefox/133.0';
const noValidation = async () => {};

function browser(userAgent: string) {
  const jar = new CookieJar();
  jar.userAgent = userAgent;
  return jar;
}

type Session = { handle: string; ip: string | null; browser: string | null; factors: string; clients: string[]; signed_in: string };

test('two browsers: each listed with IP, browser and apps; ending one signs out only that one; bad handles are 404', async () => {
  const laptop = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: SCOPE, jar: browser(CHROME) });
  const phone = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: SCOPE, jar: browser(FIREFOX) });
  const ops = server.app.ops;

  const { sessions } = (await ops.userSessions(world.user.id)) as { sessions: Session[] };
  assert.equal(sessions.length, 2);
  const chrome = sessions.find((s) => s.browser === 'Chrome 131 on Linux');
  const firefox = sessions.find((s) => s.browser === 'Firefox 133 on macOS');
  assert.ok(chrome && firefox, JSON.stringify(sessions));
  for (const s of [chrome, firefox]) {
    assert.match(String(s.ip), /127\.0\.0\.1|::1/);
    assert.deepEqual(s.clients, [world.shop.clientId]);
    assert.equal(s.factors, 'password and authenticator app');
    assert.match(s.handle, /^[A-Za-z0-9_-]{22}$/);
  }
  // The handle names the session; it is not the session cookie's value.
  const cookies = [...laptop.flow.jar.setCookieLines, ...phone.flow.jar.setCookieLines].join('\n');
  assert.ok(!cookies.includes(chrome.handle) && !cookies.includes(firefox.handle));
  const listed = JSON.stringify(sessions);
  for (const line of laptop.flow.jar.setCookieLines.filter((l) => l.startsWith('_session='))) assert.ok(!listed.includes(line.split(';')[0]!.split('=')[1]!), 'no session id in the list');

  // End the laptop's session, by the admin API.
  const ops2 = await server.app.registry.createClient({ name: 'ops', grants: ['client_credentials'], scope: 'latchkey:admin' }, noValidation);
  const token = await endpoints(server.issuer).token({ clientId: ops2.clientId, secret: ops2.secret! }, { grant_type: 'client_credentials', scope: 'latchkey:admin', resource: adminApiUri(server.issuer) });
  const api = (method: string, path: string) => fetch(`${server.issuer}/admin/api${path}`, { method, headers: { authorization: `Bearer ${String(token.body.access_token)}` } });
  const listedByApi = (await (await api('GET', `/v1/users/${world.user.id}/sessions`)).json()) as { sessions: Session[] };
  assert.equal(listedByApi.sessions.length, 2);
  const ended = await api('DELETE', `/v1/users/${world.user.id}/sessions/${chrome.handle}`);
  assert.equal(ended.status, 200);
  assert.deepEqual(await ended.json(), { id: world.user.id, email: world.user.email, session: chrome.handle, ended: true, grants_revoked: 1 });

  const laptopSilent = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid', jar: laptop.flow.jar, params: { prompt: 'none' } });
  assert.equal(laptopSilent.callback?.searchParams.get('error'), 'login_required', 'the ended session is signed out');
  assert.deepEqual((await endpoints(server.issuer).introspect(world.api, laptop.tokens.access_token)).body, { active: false }, 'its app\'s tokens are revoked');
  const phoneSilent = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid', jar: phone.flow.jar, params: { prompt: 'none' } });
  assert.ok(phoneSilent.code, 'the other browser stays signed in');
  assert.equal((await endpoints(server.issuer).introspect(world.api, phone.tokens.access_token)).body.active, true);
  assert.ok(server.logs.some((l) => l.event === 'session_ended' && l.session === chrome.handle));

  // Ended, made up, malformed, or another person's: 404 problem.
  const bob = await server.app.accounts.create({ email: 'bob-sessions@example.org', password: 'his own long passphrase' });
  for (const [who, handle] of [[world.user.id, chrome.handle], [world.user.id, 'A'.repeat(22)], [world.user.id, 'not a handle'], [bob.id, firefox.handle]] as const) {
    const res = await api('DELETE', `/v1/users/${who}/sessions/${encodeURIComponent(handle)}`);
    assert.equal(res.status, 404, handle);
    assert.match(res.headers.get('content-type') ?? '', /problem\+json/);
  }
  assert.ok((await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid', jar: phone.flow.jar, params: { prompt: 'none' } })).code, 'still signed in after the refused attempts');

  // The CLI: list, then end the last one.
  const ctx: Context = { ops, actor: { kind: 'cli' } };
  const shown = await COMMANDS['user sessions']!.run(ctx, {}, [world.user.email]);
  assert.match(shown.text, /Firefox 133 on macOS/);
  assert.doesNotMatch(shown.text, /Chrome/);
  const out = await COMMANDS['user end-session']!.run(ctx, {}, [world.user.email, firefox.handle]);
  assert.match(out.text, /Ended the session/);
  await assert.rejects(COMMANDS['user end-session']!.run(ctx, {}, [world.user.email, firefox.handle]), /no session with that handle/);
  assert.equal((await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid', jar: phone.flow.jar, params: { prompt: 'none' } })).callback?.searchParams.get('error'), 'login_required');
});

test('user agents and factors in words', () => {
  assert.equal(browserOf(CHROME), 'Chrome 131 on Linux');
  assert.equal(browserOf(FIREFOX), 'Firefox 133 on macOS');
  assert.equal(browserOf(''), 'unknown browser');
  assert.equal(factorsInWords(['pwd', 'otp', 'mfa']), 'password and authenticator app');
  assert.equal(factorsInWords(['swk', 'user', 'mfa']), 'passkey');
  assert.equal(factorsInWords(['pwd', 'hwk', 'user', 'mfa']), 'password and passkey');
});

test('the device stays with its session when another app signs in with it, and a session of an earlier version shows the device kept beside it', async () => {
  const store = server.store;
  const bea = await server.app.accounts.create({ email: 'bea-devices@example.org', password: 'a long passphrase of hers' });
  const user = { email: bea.email, password: 'a long passphrase of hers' };
  const jar = browser(FIREFOX);
  await signInAndRedeem({ issuer: server.issuer, client: world.shop, user, scope: SCOPE, jar });
  // The same browser, another app: oidc-provider saves the session again (a second app in it), outside the sign-in.
  const other = await signIn({ issuer: server.issuer, client: world.other, user, scope: SCOPE, jar });
  assert.ok(other.code, 'signed in to the second app with the same session');
  const listed = (await server.app.ops.userSessions(bea.id)) as { sessions: Session[] };
  assert.equal(listed.sessions.length, 1);
  assert.equal(listed.sessions[0]!.browser, 'Firefox 133 on macOS');
  assert.deepEqual([...listed.sessions[0]!.clients].sort(), [world.shop.clientId, world.other.clientId].sort());

  // As an earlier version wrote it: the record without its device, the device in a record of its own.
  const sessionKey = (await store.setMembers(keys.accountSessions(bea.id))).find((key) => sessionHandle(key) === listed.sessions[0]!.handle);
  const stored = await store.getModel(sessionKey!, { consumable: false });
  const { lkDevice, ...earlier } = JSON.parse(stored!.payload) as { lkDevice?: { loginTs?: number }; loginTs?: number };
  assert.equal(typeof lkDevice, 'object', 'the device rides in the session record');
  await store.putModel(sessionKey!, JSON.stringify(earlier), 3600, undefined, { consumable: false });
  await store.set(keys.sessionDevice(sessionHandle(sessionKey!)), JSON.stringify({ ip: '192.0.2.7', browser: 'Chrome 131 on Linux', loginTs: earlier.loginTs }), { ttl: 3600 });
  const upgraded = (await server.app.ops.userSessions(bea.id)) as { sessions: Session[] };
  assert.equal(upgraded.sessions[0]!.browser, 'Chrome 131 on Linux');
  assert.equal(upgraded.sessions[0]!.ip, '192.0.2.7');
});
