import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
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
});
