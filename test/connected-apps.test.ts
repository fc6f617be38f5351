import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { listConnectedApps, markAppUsed, readConsent, readStoredConsent, rememberConsent, revokeConnectedApp, useRememberedConsent } from '../src/accounts/connected-apps.ts';
import { keys } from '../src/storage/keys.ts';
import { browse, CookieJar, endpoints, follow, formAction, hiddenField, signIn, signInAndRedeem, type Followed, type Page } from './helpers/flow.ts';
import { startLogoutReceiver, type LogoutReceiver } from './helpers/logout-receiver.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { API_URI, createWorld, enrollTotp, POST_LOGOUT_URI, REDIRECT_URI, type World } from './helpers/world.ts';
import { runCli, type CliRun } from './helpers/cli.ts';

/**
 * Connected apps (issue 13 item 1): the apps a person allowed, listed on /account and by
 * `latchkey user apps`; "Remove access" and `latchkey user revoke-app` forget the consent, revoke the
 * app's grants with their tokens, and sign the person's sessions out of the app with a back-channel
 * logout token — and the next sign-in to the app asks for consent again.
 */
const SCOPE = 'openid profile offline_access api:read';
const DAY = new Date().toISOString().slice(0, 10);

/** The `latchkey` CLI as a child process against the test's Redis. */
function cli(redisUrl: string, args: string[]): Promise<CliRun> {
  return runCli(args, { env: { REDIS_URL: redisUrl } });
}

const HOUR = 60 * 60_000;

function suite(storeKind: 'redis' | 'memory') {
  let redis: TestRedis | undefined;
  let server: TestServer;
  let world: World;
  let rp: LogoutReceiver;
  let jwks: ReturnType<typeof createRemoteJWKSet>;
  /** The server's clock runs this far ahead of the wall clock ("last used" resolution is an hour). */
  let ahead = 0;
  const clock = () => Date.now() + ahead;

  before(async () => {
    if (storeKind === 'redis') redis = await startRedis();
    server = await startServer({ ...(redis ? { redisUrl: redis.url } : {}), clock, logoutDelivery: { timeoutMs: 400, retryDelaysMs: [20, 20], pollMs: 200 } });
    world = await createWorld(server);
    rp = await startLogoutReceiver();
    jwks = createRemoteJWKSet(new URL('/jwks', server.issuer));
  });
  after(async () => {
    await rp?.close();
    await server?.close();
    await redis?.dispose();
  });

  let apps = 0;
  /** A third-party app with a back-channel logout endpoint, and a person of its own (fresh consent state). */
  async function appAndPerson() {
    apps += 1;
    const created = await server.app.registry.createClient(
      { name: `Notes ${apps}`, grants: ['authorization_code', 'refresh_token'], redirectUris: [REDIRECT_URI], postLogoutRedirectUris: [POST_LOGOUT_URI], scope: SCOPE, backchannelLogoutUri: rp.uri },
      async () => {},
    );
    const email = `person-${apps}-${Math.random().toString(36).slice(2)}@example.org`;
    const password = 'correct horse battery staple';
    const account = await server.app.accounts.create({ email, password });
    const { totpSecret } = await enrollTotp(server, account);
    return { app: { clientId: created.clientId, secret: created.secret!, redirectUri: REDIRECT_URI, name: `Notes ${apps}` }, user: { id: account.id, email, password, totpSecret } };
  }
  type Setup = Awaited<ReturnType<typeof appAndPerson>>;

  async function signedIn(s: Setup, jar = new CookieJar()) {
    const { tokens, flow } = await signInAndRedeem({ issuer: server.issuer, client: s.app, user: s.user, scope: SCOPE, jar, params: { resource: API_URI } });
    return { jar: flow.jar, sid: decodeJwt(tokens.id_token!).sid as string, refreshToken: tokens.refresh_token!, accessToken: tokens.access_token };
  }

  async function postForm(jar: CookieJar, page: Page, suffix: string, fields: Record<string, string>, csrf = hiddenField(page.html, '_csrf')!): Promise<Followed> {
    const action = formAction(page.html, suffix);
    assert.ok(action, `a form posting to …${suffix}`);
    const url = new URL(action, page.url);
    return follow(jar, server.issuer, await browse(jar, url, { form: { _csrf: csrf, ...fields } }), url);
  }

  /** /account in a jar signed in already (single sign-on through the page's own client). */
  async function accountPage(jar: CookieJar): Promise<Page> {
    const start = new URL('/account', server.issuer);
    const followed = await follow(jar, server.issuer, await browse(jar, start), start);
    assert.equal(followed.page?.url.pathname, '/account');
    return followed.page;
  }

  /** The text of the Connected apps section. */
  function connectedApps(html: string): string {
    const section = html.match(/<section id="connected-apps">([\s\S]*?)<\/section>/)?.[1];
    assert.ok(section, 'a Connected apps section');
    return section.replace(/<\/?time>/g, '').replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim();
  }

  it('lists the app the person allowed, with its scopes in words and the dates; first-party apps are not listed', async () => {
    const s = await appAndPerson();
    const jar = new CookieJar();
    const empty = await signInAndRedeem({ issuer: server.issuer, client: world.firstParty, user: s.user, scope: 'openid profile', jar });
    assert.equal(empty.flow.consentPage, undefined, 'a first-party app is not asked for');
    assert.match(connectedApps((await accountPage(jar)).html), /No apps have access to your account\./);

    assert.ok((await signIn({ issuer: server.issuer, client: s.app, scope: SCOPE, jar, consent: 'stop' })).consentPage, 'a third-party app is');
    await signedIn(s, jar);
    const text = connectedApps((await accountPage(jar)).html);
    assert.match(text, new RegExp(`${s.app.name} Know who you are See your name Stay connected while you are away, until you sign out or revoke it Use the API with permission “api:read”`));
    assert.match(text, new RegExp(`Access granted ${DAY}, last used ${DAY}\\.`));
    assert.doesNotMatch(text, /No apps have access/);
    const listed = await listConnectedApps(server.store, server.app.registry, s.user.id);
    assert.deepEqual(listed.map((a) => [a.clientId, a.name, a.scopes.sort()]), [[s.app.clientId, s.app.name, ['api:read', 'offline_access', 'openid', 'profile']]]);
    assert.ok(Math.abs(listed[0]!.grantedAt! - Date.now()) < 60_000);
  });

  it('Remove access: refresh token invalid_grant, access token inactive, the app gets a logout token, the next sign-in asks for consent', async () => {
    const s = await appAndPerson();
    const other = await signedIn(s); // a second browser, also signed in to the app
    const here = await signedIn(s);
    const page = await accountPage(here.jar);
    const before = rp.received.length;
    const logged = server.logs.length;

    const out = await postForm(here.jar, page, '/account/apps/remove', { client_id: s.app.clientId });
    assert.equal(out.page!.status, 200);
    assert.match(out.page!.html, new RegExp(`${s.app.name} no longer has access to your account`));
    assert.match(connectedApps(out.page!.html), /No apps have access to your account\./);

    const api = endpoints(server.issuer);
    for (const session of [here, other]) {
      const refreshed = await api.refresh(s.app, session.refreshToken);
      assert.equal(refreshed.status, 400);
      assert.equal(refreshed.body.error, 'invalid_grant');
      assert.deepEqual((await api.introspect(world.api, session.accessToken)).body, { active: false });
    }
    const tokens = (await rp.waitFor(before + 2)).slice(before);
    const sids = [];
    for (const token of tokens) {
      const { payload } = await jwtVerify(token, jwks, { issuer: server.issuer, audience: s.app.clientId, typ: 'logout+jwt' });
      assert.equal(payload.sub, s.user.id);
      sids.push(payload.sid);
    }
    assert.deepEqual(sids.sort(), [here.sid, other.sid].sort());

    const revoked = server.logs.slice(logged).filter((l) => l.event === 'consent_revoked');
    assert.deepEqual(revoked.map((l) => [l.accountId, l.clientId, l.grants, l.sessions, l.source]), [[s.user.id, s.app.clientId, 2, 2, 'account_page']]);

    // The browser stays signed in (to /account), but the app asks for consent again.
    assert.equal((await browse(here.jar, new URL('/account', server.issuer))).status, 200);
    const again = await signIn({ issuer: server.issuer, client: s.app, scope: SCOPE, jar: here.jar, consent: 'stop' });
    assert.ok(again.consentPage, 'consent is asked again');
    assert.equal(again.loginPage, undefined, 'no password asked: the session lives on');
    assert.equal(await readConsent(server.store, s.user.id, s.app.clientId), undefined);
  });

  it('the new form refuses bad input with a 4xx, never a 5xx', async () => {
    const s = await appAndPerson();
    const session = await signedIn(s);
    const page = await accountPage(session.jar);
    const url = new URL('/account/apps/remove', server.issuer);
    const csrf = hiddenField(page.html, '_csrf')!;
    const origin = { origin: new URL(server.issuer).origin };
    const bodies = [
      `_csrf=${csrf}`,
      `_csrf=${csrf}&client_id=`,
      `_csrf=${csrf}&client_id=${world.shop.clientId}`, // an app this person never allowed
      `_csrf=${csrf}&client_id=${'x'.repeat(5000)}`,
      `_csrf=${csrf}&client_id=a&client_id=b`,
      `_csrf=${csrf}&client_id[a]=b`,
      `_csrf=${csrf}&client_id=%E0%A4%A`,
    ];
    for (const body of bodies) {
      const res = await browse(session.jar, url, { body, headers: { 'content-type': 'application/x-www-form-urlencoded', ...origin } });
      assert.ok(res.status >= 400 && res.status < 500, `${body.slice(0, 80)} → ${res.status}`);
      const html = await res.text();
      if (res.status === 400 && !body.includes('%E0')) assert.match(html, /That app has no access to your account\./);
    }
    const forged = await browse(session.jar, url, { form: { _csrf: 'forged', client_id: s.app.clientId } });
    assert.equal(forged.status, 403);
    const json = await browse(session.jar, url, { body: JSON.stringify({ _csrf: csrf, client_id: s.app.clientId }), headers: { 'content-type': 'application/json', ...origin } });
    assert.ok(json.status >= 400 && json.status < 500, `JSON body → ${json.status}`);
    const anonymous = await browse(new CookieJar(), url, { form: { _csrf: csrf, client_id: s.app.clientId } });
    assert.equal(anonymous.status, 303, 'not signed in: sent to the sign-in');
    assert.ok(await readConsent(server.store, s.user.id, s.app.clientId), 'nothing was removed');
  });

  it('"last used" moves when the app gets tokens, at most once an hour; consents in the old format are still read', async () => {
    const s = await appAndPerson();
    const session = await signedIn(s);
    const granted = (await readConsent(server.store, s.user.id, s.app.clientId))!;
    const api = endpoints(server.issuer);
    const lastUsed = async () => (await readConsent(server.store, s.user.id, s.app.clientId))!.lastUsedAt;
    const refresh = async (token: string) => {
      const res = await api.refresh(s.app, token);
      assert.equal(res.status, 200);
      return res.body.refresh_token as string;
    };
    const token = await refresh(session.refreshToken);
    assert.equal(await lastUsed(), granted.lastUsedAt, 'within the hour: not written again');
    ahead += 2 * HOUR;
    await refresh(token);
    for (let i = 0; i < 100 && (await lastUsed()) === granted.lastUsedAt; i += 1) await new Promise((r) => setTimeout(r, 10));
    const bumped = (await lastUsed())!;
    assert.ok(bumped >= granted.lastUsedAt! + 2 * HOUR, 'a refresh two hours later is a use');
    // The next tests read dates by the wall clock.
    ahead = 0;
    assert.equal((await readConsent(server.store, s.user.id, s.app.clientId))!.grantedAt, granted.grantedAt, 'granted stays');

    // The store-level rule on its own, with explicit times.
    const store = server.store;
    const t0 = 1_700_000_000_000;
    await rememberConsent(store, 'acct-x', 'client-x', undefined, ['openid'], t0);
    assert.equal(await markAppUsed(store, 'acct-x', 'client-x', t0 + HOUR - 1000), false);
    assert.equal(await markAppUsed(store, 'acct-x', 'client-x', t0 + HOUR + 1000), true);
    assert.deepEqual(await readConsent(store, 'acct-x', 'client-x'), { scopes: ['openid'], grantedAt: t0, lastUsedAt: t0 + HOUR + 1000 });
    assert.equal(await markAppUsed(store, 'acct-x', 'nobody', t0), false, 'no consent, nothing written');
    assert.equal(await store.get(keys.consent('acct-x', 'nobody')), null);

    // Written by an earlier version: a plain array of scopes, no dates, no index entry.
    await store.set(keys.consent('acct-y', 'client-y'), JSON.stringify(['openid', 'profile']), { ttl: 60 });
    assert.deepEqual(await readConsent(store, 'acct-y', 'client-y'), { scopes: ['openid', 'profile'] });
    await rememberConsent(store, 'acct-y', 'client-y', await readConsent(store, 'acct-y', 'client-y'), ['email'], t0);
    assert.deepEqual(await readConsent(store, 'acct-y', 'client-y'), { scopes: ['openid', 'profile', 'email'], grantedAt: t0, lastUsedAt: t0 });
    assert.deepEqual((await listConnectedApps(store, server.app.registry, 'acct-y')).map((a) => [a.clientId, a.name]), [['client-y', 'client-y']], 'a deleted app is listed by its id');
    assert.deepEqual(await revokeConnectedApp(store, 'acct-y', 'client-y'), { clientId: 'client-y', grants: 0, sessions: 0 });
    assert.equal(await revokeConnectedApp(store, 'acct-y', 'client-y'), undefined, 'nothing left to remove');
    assert.deepEqual(await listConnectedApps(store, server.app.registry, 'acct-y'), []);
  });

  it('a sign-in with a remembered consent marks it used at most once an hour, renews its year at most once a day, and never brings back a consent removed meanwhile', async () => {
    const store = server.store;
    const t0 = 1_700_000_000_000;
    const stored = async (client: string) => (await readStoredConsent(store, 'acct-r', client))!;
    await rememberConsent(store, 'acct-r', 'client-r', undefined, ['openid'], t0);
    assert.equal((await stored('client-r')).renewedAt, t0, 'a consent remembered now has its year from now');
    // Within the hour: nothing written.
    await useRememberedConsent(store, 'acct-r', 'client-r', await stored('client-r'), t0 + HOUR - 1000);
    assert.deepEqual(await readConsent(store, 'acct-r', 'client-r'), { scopes: ['openid'], grantedAt: t0, lastUsedAt: t0 });
    // Two hours on: the last use moves, the year stays where it was (no TTL or index write).
    await useRememberedConsent(store, 'acct-r', 'client-r', await stored('client-r'), t0 + 2 * HOUR);
    assert.deepEqual(await stored('client-r').then(({ consent, renewedAt }) => ({ consent, renewedAt })), { consent: { scopes: ['openid'], grantedAt: t0, lastUsedAt: t0 + 2 * HOUR }, renewedAt: t0 });
    // A token's use keeps the year's date too.
    assert.equal(await markAppUsed(store, 'acct-r', 'client-r', t0 + 4 * HOUR), true);
    assert.equal((await stored('client-r')).renewedAt, t0);
    // A day on: the year is written again.
    await useRememberedConsent(store, 'acct-r', 'client-r', await stored('client-r'), t0 + 86_400_000);
    assert.deepEqual(await stored('client-r').then(({ consent, renewedAt }) => ({ consent, renewedAt })), { consent: { scopes: ['openid'], grantedAt: t0, lastUsedAt: t0 + 86_400_000 }, renewedAt: t0 + 86_400_000 });
    // A consent of an earlier version (no year's date) gets its year at its first use.
    await store.set(keys.consent('acct-r', 'client-old'), JSON.stringify({ scopes: ['openid'], grantedAt: t0, lastUsedAt: t0 }), { ttl: 60 });
    await useRememberedConsent(store, 'acct-r', 'client-old', await stored('client-old'), t0 + 2 * HOUR);
    assert.equal((await stored('client-old')).renewedAt, t0 + 2 * HOUR);
    // Removed between the sign-in's read and its write: it stays removed.
    const read = await stored('client-r');
    await revokeConnectedApp(store, 'acct-r', 'client-r');
    await useRememberedConsent(store, 'acct-r', 'client-r', read, t0 + 86_400_000 + 2 * HOUR);
    assert.equal(await readConsent(store, 'acct-r', 'client-r'), undefined, 'a removed consent is not written back');
    // Also when the sign-in that read it renews its year (a day on): neither the consent nor its index entry comes back.
    await useRememberedConsent(store, 'acct-r', 'client-r', read, t0 + 3 * 86_400_000);
    assert.equal(await readConsent(store, 'acct-r', 'client-r'), undefined, 'a removed consent is not renewed back');
    assert.deepEqual((await listConnectedApps(store, server.app.registry, 'acct-r')).map((a) => a.clientId), ['client-old'], 'nor listed again');
  });

  it('removing one app leaves the person signed in to the others, with their tokens', async () => {
    const s = await appAndPerson();
    const keep = await server.app.registry.createClient(
      { name: 'Kept app', grants: ['authorization_code', 'refresh_token'], redirectUris: [REDIRECT_URI], scope: SCOPE, backchannelLogoutUri: rp.uri },
      async () => {},
    );
    const kept = { clientId: keep.clientId, secret: keep.secret!, redirectUri: REDIRECT_URI };
    const session = await signedIn(s);
    const keptTokens = (await signInAndRedeem({ issuer: server.issuer, client: kept, scope: SCOPE, jar: session.jar, params: { resource: API_URI } })).tokens;
    const result = await revokeConnectedApp(server.store, s.user.id, s.app.clientId);
    assert.deepEqual(result, { clientId: s.app.clientId, grants: 1, sessions: 1 });
    // The session no longer counts as signed in to the removed app (no second logout notice for it later).
    const sessions = [];
    for (const key of await server.store.setMembers(keys.accountSessions(s.user.id))) {
      const stored = await server.store.getModel(key, { consumable: false });
      if (stored) sessions.push(Object.keys((JSON.parse(stored.payload) as { authorizations: Record<string, unknown> }).authorizations));
    }
    assert.deepEqual(sessions, [[kept.clientId]]);
    const api = endpoints(server.issuer);
    assert.equal((await api.refresh(kept, keptTokens.refresh_token!)).status, 200, 'the other app keeps its refresh token');
    const silent = await signIn({ issuer: server.issuer, client: kept, scope: 'openid', jar: session.jar, params: { prompt: 'none' } });
    assert.ok(silent.code, 'still signed in to the other app');
    assert.deepEqual((await listConnectedApps(server.store, server.app.registry, s.user.id)).map((a) => a.clientId), [kept.clientId]);
  });

  if (storeKind === 'memory') return;

  it('latchkey user apps / revoke-app: lists, removes (audit on stderr), and exits 2 when there is nothing to remove', async () => {
    const s = await appAndPerson();
    const session = await signedIn(s);
    const listed = await cli(redis!.url, ['user', 'apps', s.user.email, '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.equal(listed.stderr, '', 'reading writes no audit line');
    const apps = JSON.parse(listed.stdout).apps;
    assert.deepEqual(apps.map((a: Record<string, unknown>) => [a.client_id, a.name, String(a.scope).split(' ').sort().join(' ')]), [[s.app.clientId, s.app.name, 'api:read offline_access openid profile']]);
    assert.match(apps[0].granted, new RegExp(`^${DAY}T`));
    assert.match(apps[0].last_used, new RegExp(`^${DAY}T`));
    const table = await cli(redis!.url, ['user', 'apps', s.user.id]);
    assert.match(table.stdout, /^CLIENT_ID\s+NAME\s+SCOPE\s+GRANTED\s+LAST_USED$/m);
    assert.match(table.stdout, new RegExp(`^${s.app.clientId}\\s+${s.app.name}\\s`, 'm'));

    const before = rp.received.length;
    const revoked = await cli(redis!.url, ['user', 'revoke-app', s.user.email, s.app.clientId, '--json']);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.deepEqual(JSON.parse(revoked.stdout), { id: s.user.id, email: s.user.email, client_id: s.app.clientId, consent_revoked: true, grants_revoked: 1, sessions_ended: 1 });
    const audit = JSON.parse(revoked.stderr.trim());
    assert.deepEqual([audit.event, audit.source, audit.accountId, audit.clientId, audit.grants, audit.sessions], ['consent_revoked', 'cli', s.user.id, s.app.clientId, 1, 1]);
    const [token] = (await rp.waitFor(before + 1)).slice(before);
    assert.equal((await jwtVerify(token!, jwks, { issuer: server.issuer, audience: s.app.clientId })).payload.sid, session.sid);
    assert.equal((await endpoints(server.issuer).refresh(s.app, session.refreshToken)).body.error, 'invalid_grant');

    const text = await cli(redis!.url, ['user', 'apps', s.user.id]);
    assert.equal(text.stdout.trim(), `No apps have access to ${s.user.email}'s account.`);
    const again = await cli(redis!.url, ['user', 'revoke-app', s.user.id, s.app.clientId]);
    assert.equal(again.code, 2);
    assert.equal(again.stdout, '');
    assert.equal(again.stderr, `latchkey: ${s.user.email} has not granted ${s.app.clientId} access (no remembered consent)\n`);
  });
}

describe('connected apps on Redis', () => suite('redis'));
describe('connected apps on the embedded store', () => suite('memory'));
