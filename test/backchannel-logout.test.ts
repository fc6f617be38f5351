import { createLogger } from '../src/observability/logger.ts';
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { Accounts } from '../src/accounts/accounts.ts';
import { COMMANDS, commandContext } from '../src/cli/commands.ts';
import { Registry, RegistryError } from '../src/oidc/registry.ts';
import { connectRedis, RedisStore } from '../src/storage/redis-store.ts';
import { browse, CookieJar, follow, formAction, hiddenField, signInAndRedeem, type ClientCreds, type Followed, type Page } from './helpers/flow.ts';
import { startLogoutReceiver, type LogoutReceiver } from './helpers/logout-receiver.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { nextTotpCode } from './helpers/totp.ts';
import { createWorld, POST_LOGOUT_URI, REDIRECT_URI, type World } from './helpers/world.ts';

/**
 * OpenID Connect Back-Channel Logout 1.0: a small relying party on a loopback port receives the logout
 * tokens and verifies each with jose against /jwks, for every way a person's session ends.
 */
const EVENT = 'http://schemas.openid.net/event/backchannel-logout';
const SCOPE = 'openid offline_access';

/** The browser at the end_session_endpoint: confirms "sign out", follows what comes back. */
async function rpInitiatedLogout(issuer: string, jar: CookieJar, idToken: string) {
  const start = new URL(`/session/end?${new URLSearchParams({ id_token_hint: idToken, post_logout_redirect_uri: POST_LOGOUT_URI })}`, issuer);
  const first = await follow(jar, issuer, await browse(jar, start), start);
  const html = first.page?.html ?? '';
  const action = html.match(/<form[^>]*id="op.logoutForm"[^>]*action="([^"]+)"/)?.[1] ?? html.match(/<form[^>]*action="([^"]+)"[^>]*id="op.logoutForm"/)?.[1];
  assert.ok(action, 'the sign-out confirmation');
  const url = new URL(action, issuer);
  return follow(jar, issuer, await browse(jar, url, { form: { xsrf: hiddenField(html, 'xsrf')!, logout: 'yes' } }), url);
}

function suite(storeKind: 'redis' | 'memory') {
  let redis: TestRedis | undefined;
  let server: TestServer;
  let world: World;
  let rp: LogoutReceiver;
  let app: ClientCreds & { secret: string };
  let jwks: ReturnType<typeof createRemoteJWKSet>;

  before(async () => {
    if (storeKind === 'redis') redis = await startRedis();
    server = await startServer({ ...(redis ? { redisUrl: redis.url } : {}), logoutDelivery: { timeoutMs: 400, retryDelaysMs: [20, 20], pollMs: 200 } });
    world = await createWorld(server);
    rp = await startLogoutReceiver();
    app = await newApp(rp.uri);
    jwks = createRemoteJWKSet(new URL('/jwks', server.issuer));
  });
  after(async () => {
    await rp?.close();
    await server?.close();
    await redis?.dispose();
  });

  async function newApp(backchannelLogoutUri: string) {
    const created = await server.app.registry.createClient(
      { name: 'Back-channel app', grants: ['authorization_code', 'refresh_token'], redirectUris: [REDIRECT_URI], postLogoutRedirectUris: [POST_LOGOUT_URI], scope: SCOPE, backchannelLogoutUri },
      async () => {},
    );
    return { clientId: created.clientId, secret: created.secret!, redirectUri: REDIRECT_URI };
  }

  /** Every check Back-Channel Logout 1.0 §2.6 asks of the RP, with jose against the issuer's /jwks. */
  async function verifyLogoutToken(token: string, clientId: string) {
    const { payload, protectedHeader } = await jwtVerify(token, jwks, { issuer: server.issuer, audience: clientId, typ: 'logout+jwt', maxTokenAge: '2 minutes' });
    assert.equal(protectedHeader.typ, 'logout+jwt');
    assert.deepEqual(payload.events, { [EVENT]: {} });
    assert.equal(payload.nonce, undefined, 'no nonce');
    assert.equal(typeof payload.jti, 'string');
    assert.equal(typeof payload.iat, 'number');
    assert.equal(typeof payload.sub, 'string');
    assert.equal(typeof payload.sid, 'string');
    return payload;
  }

  /** Signs the person in to the app; the ID token's `sid` is what a logout token must name. */
  async function signedIn(jar = new CookieJar()) {
    const { tokens, flow } = await signInAndRedeem({ issuer: server.issuer, client: app, user: world.user, scope: SCOPE, jar });
    const sid = decodeJwt(tokens.id_token!).sid;
    assert.equal(typeof sid, 'string', 'the ID token carries sid');
    return { jar: flow.jar, idToken: tokens.id_token!, sid: sid as string, refreshToken: tokens.refresh_token! };
  }

  it('RP-initiated logout: the app gets a logout token for the session, verified against /jwks', async () => {
    const before = rp.received.length;
    const session = await signedIn();
    const out = await rpInitiatedLogout(server.issuer, session.jar, session.idToken);
    assert.equal(out.leftTo?.origin + out.leftTo!.pathname, POST_LOGOUT_URI);
    const [token] = (await rp.waitFor(before + 1)).slice(before);
    const claims = await verifyLogoutToken(token!, app.clientId);
    assert.equal(claims.sub, world.user.id);
    assert.equal(claims.sid, session.sid);
  });

  it('discovery says what is implemented: back-channel logout, with sid', async () => {
    const meta = (await (await fetch(new URL('/.well-known/openid-configuration', server.issuer))).json()) as Record<string, unknown>;
    assert.equal(meta.backchannel_logout_supported, true);
    assert.equal(meta.backchannel_logout_session_supported, true);
  });

  if (storeKind === 'memory') return;

  it('user revoke-sessions, from the CLI (no provider in it): every session of the person with the app is notified', async () => {
    const sessions = [await signedIn(), await signedIn()];
    const before = rp.received.length;
    const cli = new RedisStore(connectRedis(redis!.url, 2000));
    await cli.ready(5000);
    try {
      await COMMANDS['user revoke-sessions']!.run(commandContext({ store: cli, registry: new Registry(cli), accounts: new Accounts(cli), logger: createLogger({ level: 'silent' }), validateClient: async () => {}, issuer: server.issuer, actor: { kind: 'cli', operator: 'test' } }), {}, [world.user.id]);
    } finally {
      await cli.close();
    }
    const tokens = (await rp.waitFor(before + 2)).slice(before);
    const sids = await Promise.all(tokens.map(async (t) => (await verifyLogoutToken(t, app.clientId)).sid));
    assert.deepEqual(sids.sort(), sessions.map((s) => s.sid).sort());
  });

  /** /account in a jar that is also signed in to the app (one session, single sign-on). */
  async function accountPage(jar: CookieJar): Promise<Page> {
    const start = new URL('/account', server.issuer);
    let followed: Followed = await follow(jar, server.issuer, await browse(jar, start), start);
    if (followed.page && formAction(followed.page.html, '/login')) {
      followed = await postForm(jar, followed.page, '/login', { email: world.user.email, password: world.user.password });
      followed = await postForm(jar, followed.page!, '/mfa', { code: await nextTotpCode(server.issuer, world.user.totpSecret) });
    }
    assert.equal(followed.page?.url.pathname, '/account');
    return followed.page!;
  }
  async function postForm(jar: CookieJar, page: Page, suffix: string, fields: Record<string, string>) {
    const action = formAction(page.html, suffix);
    assert.ok(action, `a form posting to …${suffix}`);
    const url = new URL(action, page.url);
    return follow(jar, server.issuer, await browse(jar, url, { form: { _csrf: hiddenField(page.html, '_csrf')!, ...fields } }), url);
  }

  it('"Sign out everywhere" on /account: the app is notified of the session', async () => {
    const session = await signedIn();
    const page = await accountPage(session.jar);
    const before = rp.received.length;
    const out = await postForm(session.jar, page, '/account/sign-out-everywhere', {});
    assert.match(out.page!.html, /signed out on every device/);
    const [token] = (await rp.waitFor(before + 1)).slice(before);
    assert.equal((await verifyLogoutToken(token!, app.clientId)).sid, session.sid);
  });

  it('a password change on /account: the app is notified of the other sessions, not of the browser that changed it', async () => {
    const other = await signedIn();
    const here = await signedIn();
    const page = await accountPage(here.jar);
    const before = rp.received.length;
    const next = 'another long passphrase';
    const changed = await postForm(here.jar, page, '/account/password', { current_password: world.user.password, code: await nextTotpCode(server.issuer, world.user.totpSecret), new_password: next });
    assert.match(changed.page!.html, /Your password was changed/);
    world.user.password = next;
    const [token] = (await rp.waitFor(before + 1)).slice(before);
    assert.equal((await verifyLogoutToken(token!, app.clientId)).sid, other.sid);
    // The browser that changed it stays signed in (its session was kept), and its session was not announced.
    assert.equal((await browse(here.jar, new URL('/account', server.issuer))).status, 200);
    assert.equal(rp.received.length, before + 1);
  });

  it('an app that does not answer does not hold up the sign-out; the failure is retried, then logged and counted', async () => {
    const down = await startLogoutReceiver('hang');
    const saved = app;
    try {
      app = await newApp(down.uri);
      const session = await signedIn();
      const logged = server.logs.length;
      const started = performance.now();
      const out = await rpInitiatedLogout(server.issuer, session.jar, session.idToken);
      const tookMs = performance.now() - started;
      assert.ok(out.leftTo, 'signed out and back to the app');
      assert.ok(tookMs < 400, `the sign-out took ${Math.round(tookMs)} ms, less than one delivery attempt's deadline`);
      for (let i = 0; i < 250 && !server.logs.slice(logged).some((l) => l.event === 'backchannel_logout_failed'); i += 1) await new Promise((r) => setTimeout(r, 20));
      const failure = server.logs.slice(logged).find((l) => l.event === 'backchannel_logout_failed');
      assert.ok(failure, 'backchannel_logout_failed logged');
      assert.equal(failure.clientId, app.clientId);
      assert.equal(failure.attempts, 3);
      assert.equal(down.received.length, 3, 'three attempts reached the app');
      assert.ok(!JSON.stringify(failure).includes(down.received[0]!), 'the token is not in the log');
      const metrics = await server.app.metrics.registry.metrics();
      assert.match(metrics, /^latchkey_backchannel_logout_total\{result="failed"\} [1-9]/m);
      assert.match(metrics, /^latchkey_backchannel_logout_total\{result="delivered"\} [1-9]/m);
    } finally {
      app = saved;
      await down.close();
    }
  });

  it('--backchannel-logout-uri: https, or http to a loopback host; only for apps that sign people in', async () => {
    const create = (uri: string, grants: ('authorization_code' | 'client_credentials')[] = ['authorization_code']) =>
      server.app.registry.createClient({ name: 'x', grants, redirectUris: grants.includes('authorization_code') ? [REDIRECT_URI] : [], scope: 'openid', backchannelLogoutUri: uri }, async () => {});
    assert.equal((await create('https://app.example/logout')).metadata.backchannel_logout_uri, 'https://app.example/logout');
    await assert.rejects(create('http://app.example/logout'), (err: Error) => err instanceof RegistryError && /--backchannel-logout-uri must use https/.test(err.message));
    await assert.rejects(create('https://app.example/logout#x'), /must not have a fragment/);
    await assert.rejects(create('not a uri'), /must be an absolute URI/);
    await assert.rejects(create('https://app.example/logout', ['client_credentials']), /--backchannel-logout-uri needs the authorization_code grant/);
  });
}

describe('back-channel logout on Redis', () => suite('redis'));
describe('back-channel logout on the embedded store', () => suite('memory'));
