import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { keys } from '../src/storage/keys.ts';
import { ANSWERED_INTERACTION } from '../src/storage/oidc-adapter.ts';
import { ORIGIN_COOKIE } from '../src/signin/way-back.ts';
import { browse, CookieJar, formAction, hiddenField, signIn } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { useWorld, type World } from './helpers/world.ts';

/**
 * The way back (signin/way-back.ts) over HTTP: a page of a sign-in whose interaction is gone offers the
 * app's authorization request again only while that request has no answer. The answer is known from the
 * mark the resume leaves in the interaction's place; a lost or expired interaction leaves none.
 */
describe('the way back', () => {
  let server: TestServer;
  let world: World;
  useWorld({}, (setup) => ({ server, world } = setup));

  const uidOf = (url: URL) => url.pathname.split('/')[2]!;
  /** The link of the way-forward page of `uid` in `jar`. */
  async function wayForward(jar: CookieJar, uid: string) {
    const res = await browse(jar, new URL(`/interaction/${uid}`, server.issuer));
    const html = await res.text();
    return { status: res.status, href: /<a class="button" href="([^"]*)"/.exec(html)?.[1]?.replaceAll('&amp;', '&') };
  }

  it('back after signing in: continue to the app, and the interaction’s key holds only the answered mark', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.firstParty, user: world.user, scope: 'openid' });
    assert.ok(flow.code);
    const uid = uidOf(flow.loginPage!.url);
    assert.equal((await server.store.getModel(keys.model('Interaction', uid), { consumable: false }))?.payload, ANSWERED_INTERACTION);
    assert.ok((JSON.parse(ANSWERED_INTERACTION) as { exp: number }).exp < Date.now() / 1000, 'read as an interaction by an earlier version: an expired one');
    const back = await wayForward(flow.jar, uid);
    assert.equal(back.status, 200);
    assert.equal(back.href, `${new URL(world.firstParty.redirectUri).origin}/`, 'the app, not its request again');
    // The page as the authorization request addressed it (with the id of its write, which this process
    // rendered from memory): the resume that took the interaction made it read Redis again.
    assert.match(flow.loginPage!.url.search, /^\?v=/);
    const addressed = await browse(flow.jar, flow.loginPage!.url);
    assert.equal(addressed.status, 200);
    assert.match(await addressed.text(), /<a class="button" href="http:\/\/[^"]*\/"/, 'the way forward, not the sign-in form again');
  });

  it('back after cancelling: not signed in, the app’s home, not its answered request again', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid' });
    const page = flow.page!;
    const abort = formAction(page.html, '/abort')!;
    const res = await browse(flow.jar, new URL(abort, page.url), { form: { _csrf: hiddenField(page.html, '_csrf')! } });
    assert.equal(res.status, 303);
    // The resume answers access_denied to the app.
    const resumed = await browse(flow.jar, new URL(res.headers.get('location')!, page.url));
    assert.match(resumed.headers.get('location') ?? '', /error=access_denied/);
    const back = await wayForward(flow.jar, uidOf(page.url));
    assert.equal(back.status, 400);
    assert.equal(back.href, `${new URL(world.shop.redirectUri).origin}/`);
  });

  it('a lost interaction (gone before its answer): start again with the same request', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid' });
    const uid = uidOf(flow.page!.url);
    await server.store.del(keys.model('Interaction', uid));
    const back = await wayForward(flow.jar, uid);
    assert.equal(back.status, 400);
    assert.match(back.href ?? '', /^\/auth\?.*client_id=/, 'the authorization request again');
    assert.equal(new URLSearchParams(back.href!.split('?')[1]).get('client_id'), world.shop.clientId);
  });

  it('the origin is kept by the browser: a signed cookie for that interaction’s pages only, a day, nothing in the store', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid' });
    const uid = uidOf(flow.page!.url);
    const line = flow.jar.setCookieLines.find((l) => l.startsWith(`${ORIGIN_COOKIE}=`));
    assert.ok(line, 'set with the answer to the authorization request');
    assert.match(line, new RegExp(`; path=/interaction/${uid}(;|$)`));
    const expires = Date.parse(/; expires=([^;]+)/i.exec(line)?.[1] ?? '');
    assert.ok(Math.abs(expires - (Date.now() + 86_400_000)) < 60_000, `kept a day: ${line}`);
    assert.match(line, /; httponly/i);
    assert.match(line, /; samesite=lax/i);
    assert.ok(flow.jar.setCookieLines.some((l) => l.startsWith(`${ORIGIN_COOKIE}.sig=`)), 'signed');
    assert.equal(await server.store.get(keys.signInOrigin(uid)), null);
    assert.ok(!flow.jar.header(new URL('/auth', server.issuer)).includes(ORIGIN_COOKIE), 'not sent anywhere else');
  });

  it('a forged origin cookie is not believed: no way forward to where it points', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid' });
    const uid = uidOf(flow.page!.url);
    await server.store.del(keys.model('Interaction', uid));
    const forged = Buffer.from(JSON.stringify({ clientId: world.shop.clientId, redirectUri: 'https://evil.example/cb', restart: '/auth?client_id=x' })).toString('base64url');
    flow.jar.storeLines([`${ORIGIN_COOKIE}=${forged}; path=/interaction/${uid}`]);
    const back = await wayForward(flow.jar, uid);
    assert.equal(back.status, 400);
    assert.equal(back.href, undefined, 'the plain error, no link');
  });

  it('a sign-in begun by an earlier version (its origin in the store) still finds its way', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid' });
    const uid = uidOf(flow.page!.url);
    await server.store.del(keys.model('Interaction', uid));
    await server.store.set(keys.signInOrigin(uid), JSON.stringify({ clientId: world.shop.clientId, redirectUri: world.shop.redirectUri, restart: '/auth?client_id=earlier' }), { ttl: 60 });
    const back = await wayForward(new CookieJar(), uid);
    assert.equal(back.status, 400);
    assert.equal(back.href, '/auth?client_id=earlier');
  });

  it('a resume of an interaction that is gone leaves no mark (it was never answered)', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid', secondFactor: 'stop' });
    const uid = uidOf(flow.page!.url);
    await server.store.del(keys.model('Interaction', uid));
    const res = await browse(flow.jar, new URL(`/auth/${uid}`, server.issuer));
    assert.ok(res.status >= 400 && res.status < 500, `refused with a 4xx (${res.status})`);
    assert.equal(await server.store.getModel(keys.model('Interaction', uid), { consumable: false }), null);
    assert.match((await wayForward(flow.jar, uid)).href ?? '', /^\/auth\?/, 'still the request again');
  });

  it('the account page’s own sign-in leaves nothing in the interaction’s place', async () => {
    const jar = new CookieJar();
    const start = await browse(jar, new URL('/account', server.issuer));
    const location = start.headers.get('location');
    assert.ok(location, 'the account page sends the browser to sign in');
    const flow = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid', jar, authUrl: new URL(location, server.issuer) });
    assert.ok(flow.callback ?? flow.page, 'signed in');
    const uid = uidOf(flow.loginPage!.url);
    assert.equal(await server.store.getModel(keys.model('Interaction', uid), { consumable: false }), null);
  });
});
