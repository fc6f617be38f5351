import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { revokeConnectedApp } from '../src/accounts/connected-apps.ts';
import { CONSENT_AS_READ, CONSENT_AS_READ_MS, consentAsRead } from '../src/signin/consent.ts';
import { GRANT_TAG_LENGTH, grantIndexForTag } from '../src/storage/keys.ts';
import type { RedisStore } from '../src/storage/redis-store.ts';
import { CookieJar, endpoints, signIn, type SignInResult } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { useWorld, type World } from './helpers/world.ts';

/**
 * Consent that needs no page (signin/consent.ts): a first-party app, or scopes the
 * person allowed this app before, get their grant when the sign-in resumes, and the code comes straight
 * after the last factor, without the consent interaction's two redirects. Anything to ask still asks.
 */
describe('consent without asking', () => {
  let server: TestServer;
  let world: World;
  useWorld({}, (setup) => ({ server, world } = setup));

  /** The sign-in's interactions (by uid) and resumes (`/auth/:uid`), in the order visited. */
  const interactionsOf = (flow: SignInResult) => new Set(flow.visited.map((u) => /^\/interaction\/([^/]+)$/.exec(u.pathname)?.[1]).filter(Boolean));
  const resumesOf = (flow: SignInResult) => flow.visited.filter((u) => /^\/auth\/[^/]+$/.test(u.pathname)).length;

  async function redeemedScope(client: { clientId: string; secret: string; redirectUri: string }, flow: SignInResult) {
    assert.ok(flow.code, `a code (stopped at ${flow.page?.url.pathname}: ${flow.page?.html.slice(0, 200)})`);
    const token = await endpoints(server.issuer).redeem(client, flow.code, flow.verifier);
    assert.equal(token.status, 200);
    return new Set(String(token.body.scope).split(' '));
  }

  it('an app the person allowed before: the code follows the second factor, with no consent interaction', async () => {
    const app = await world.newApp('Remembered app');
    const first = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid profile offline_access' });
    assert.ok(first.consentPage, 'asked the first time');
    assert.equal(resumesOf(first), 2, 'the first time: login, then consent');

    const again = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid profile offline_access', jar: new CookieJar() });
    assert.equal(again.consentPage, undefined, 'not asked again');
    assert.equal(interactionsOf(again).size, 1, 'one interaction: the sign-in itself');
    assert.equal(resumesOf(again), 1, 'one resume, straight to the code');
    assert.deepEqual(await redeemedScope(app, again), new Set(['openid', 'profile', 'offline_access']));
  });

  it('an app the person disconnects while at their second factor: the resume asks again (the last post reads the consent it hands over)', async () => {
    const app = await world.newApp('Disconnected midway');
    const first = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid profile' });
    assert.ok(first.consentPage, 'asked the first time');
    // The password post names the person: the code post reads their consent with the interaction.
    const midway = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid profile', jar: new CookieJar(), secondFactor: 'stop' });
    assert.ok(midway.mfaPage && midway.page);
    assert.ok(await revokeConnectedApp(server.store, world.user.id, app.clientId), 'disconnected on /account meanwhile');
    const rest = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid profile', jar: midway.jar, start: { page: midway.page, chain: [] }, consent: 'stop' });
    assert.ok(rest.consentPage, 'asked again, not signed in on the consent as it was before');
    assert.equal(rest.code, undefined);
  });

  it('the consent a sign-in’s last post read is used by its resume only for that person and app, while fresh', () => {
    const read = { accountId: 'a', clientId: 'c', raw: '{"scopes":["openid"]}', at: Date.now() };
    assert.deepEqual(consentAsRead({ [CONSENT_AS_READ]: read }, 'a', 'c'), read);
    assert.deepEqual(consentAsRead({ [CONSENT_AS_READ]: { ...read, raw: null } }, 'a', 'c'), { ...read, raw: null }, 'read and found none: asked');
    assert.equal(consentAsRead({ [CONSENT_AS_READ]: read }, 'b', 'c'), undefined, 'another person');
    assert.equal(consentAsRead({ [CONSENT_AS_READ]: read }, 'a', 'd'), undefined, 'another app');
    assert.equal(consentAsRead({ [CONSENT_AS_READ]: { ...read, at: Date.now() - CONSENT_AS_READ_MS - 1 } }, 'a', 'c'), undefined, 'read too long ago: read again');
    assert.equal(consentAsRead({ [CONSENT_AS_READ]: { ...read, raw: 42 } }, 'a', 'c'), undefined);
    assert.equal(consentAsRead({}, 'a', 'c'), undefined);
  });

  it('a first-party app: no consent interaction, from the first sign-in', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.firstParty, user: world.user, scope: 'openid email' });
    assert.equal(flow.consentPage, undefined);
    assert.equal(resumesOf(flow), 1);
    assert.deepEqual(await redeemedScope(world.firstParty, flow), new Set(['openid', 'email']));
  });

  it('a scope never allowed: the consent page asks for that one only, then it is remembered with the rest', async () => {
    const app = await world.newApp('Growing app');
    await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid profile' });
    const more = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid profile email api:read', jar: new CookieJar() });
    assert.ok(more.consentPage, 'asked for the new scopes');
    const items = more.consentPage.html;
    assert.match(items, /email address/i);
    assert.doesNotMatch(items, /your name/i, 'profile was allowed before: not listed');
    // With an API scope the access token is for the API; the ID token carries what the OpenID scopes allow.
    assert.deepEqual(await redeemedScope(app, more), new Set(['api:read']));

    const third = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid email api:read', jar: new CookieJar() });
    assert.equal(third.consentPage, undefined);
    assert.deepEqual(await redeemedScope(app, third), new Set(['api:read']));
  });

  it('prompt=consent still shows the page, every scope listed', async () => {
    const app = await world.newApp('Asking app');
    await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid profile' });
    const asked = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid profile', jar: new CookieJar(), params: { prompt: 'consent' }, consent: 'stop' });
    assert.ok(asked.consentPage, 'the app asked for the page');
    assert.match(asked.consentPage.html, /your name/i);
  });

  it('prompt=none: silent for another app the person allowed before, consent_required for one never allowed', async () => {
    const allowed = await world.newApp('Allowed app');
    const never = await world.newApp('Never allowed app');
    const home = await world.newApp('Home app');
    await signIn({ issuer: server.issuer, client: allowed, user: world.user, scope: 'openid profile' });

    const session = await signIn({ issuer: server.issuer, client: home, user: world.user, scope: 'openid', jar: new CookieJar() });
    assert.ok(session.code);
    const silent = await signIn({ issuer: server.issuer, client: allowed, jar: session.jar, scope: 'openid profile', params: { prompt: 'none' } });
    assert.deepEqual(await redeemedScope(allowed, silent), new Set(['openid', 'profile']));

    const refused = await signIn({ issuer: server.issuer, client: never, jar: session.jar, scope: 'openid', params: { prompt: 'none' } });
    assert.equal(refused.callback?.searchParams.get('error'), 'consent_required');
  });

  it('the grant made without asking is stored with its code: one index lists both, living as long as the grant, and its revocation takes the code', async () => {
    const app = await world.newApp('Indexed app');
    await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid profile' });
    const again = await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid profile', jar: new CookieJar() });
    assert.ok(again.code && !again.consentPage);
    const index = grantIndexForTag(again.code.slice(0, GRANT_TAG_LENGTH));
    const listed = await server.store.setMembers(index);
    assert.deepEqual(listed.map((key) => key.split(':')[2]).sort(), ['AuthorizationCode', 'Grant'], listed.join(' '));
    const grant = await server.store.getModel(listed.find((key) => key.includes(':Grant:'))!, { consumable: false });
    assert.equal((JSON.parse(grant!.payload) as { clientId?: string }).clientId, app.clientId);
    if (server.store.kind === 'redis') {
      const ttl = await (server.store as RedisStore).client.ttl(index);
      assert.ok(ttl > 29 * 24 * 3600, `the index lives as long as the grant (${ttl} s)`);
    }
    await server.store.deleteIndexed(index);
    assert.equal((await endpoints(server.issuer).redeem(app, again.code, again.verifier)).status, 400);
  });

  it('a grant made without asking at /auth whose request goes on to a sign-in, not a code, is stored all the same: the sign-in ends with the code, unasked', async () => {
    const app = await world.newApp('Signed in again app');
    await signIn({ issuer: server.issuer, client: app, user: world.user, scope: 'openid profile' });
    const session = await signIn({ issuer: server.issuer, client: world.firstParty, user: world.user, scope: 'openid', jar: new CookieJar() });
    assert.ok(session.code);
    // max_age=0: the grant is made (nothing to ask), then the sign-in is asked for again before any code.
    const again = await signIn({ issuer: server.issuer, client: app, user: world.user, jar: session.jar, scope: 'openid profile', params: { max_age: '0' } });
    assert.ok(again.loginPage, 'signed in again');
    assert.equal(resumesOf(again), 1, 'the grant made before the sign-in was kept: the resume issues the code, no consent interaction');
    assert.deepEqual(await redeemedScope(app, again), new Set(['openid', 'profile']));
  });
});
