import { createLogger } from '../src/observability/logger.ts';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { lookup as dnsLookup } from 'node:dns';
import { createServer } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type LookupFunction, type Server as NetServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { Accounts } from '../src/accounts/accounts.ts';
import { COMMANDS, commandContext } from '../src/cli/commands.ts';
import { guardedLookup, RefusedTarget } from '../src/oidc/backchannel-targets.ts';
import { Registry, RegistryError } from '../src/oidc/registry.ts';
import { enqueueLogouts } from '../src/storage/logout-queue.ts';
import { MemoryStore } from '../src/storage/memory-store.ts';
import { connectRedis, RedisStore } from '../src/storage/redis-store.ts';
import { browse, CookieJar, follow, formAction, hiddenField, signInAndRedeem, type ClientCreds, type Followed, type Page } from './helpers/flow.ts';
import { startLogoutReceiver, type LogoutReceiver } from './helpers/logout-receiver.ts';
import { freePort, startRedis, type TestRedis } from './helpers/redis.ts';
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
    return followed.page;
  }
  async function postForm(jar: CookieJar, page: Page, suffix: string, fields: Record<string, string>) {
    const action = formAction(page.html, suffix);
    assert.ok(action, `a form posting to …${suffix}`);
    const url = new URL(action, page.url);
    return follow(jar, server.issuer, await browse(jar, url, { form: { _csrf: hiddenField(page.html, '_csrf')!, ...fields } }), url);
  }

  it('"Sign out everywhere" on /account: the app is notified of the session', async () => {
    const session = await signedIn();
    await accountPage(session.jar);
    const before = rp.received.length;
    const url = new URL('/account/sign-out-everywhere', server.issuer);
    const asked = (await follow(session.jar, server.issuer, await browse(session.jar, url), url)).page!;
    const out = await postForm(session.jar, asked, '/account/sign-out-everywhere', { confirm: 'yes' });
    assert.match(out.page!.html, /signed out on every device/);
    const [token] = (await rp.waitFor(before + 1)).slice(before);
    assert.equal((await verifyLogoutToken(token!, app.clientId)).sid, session.sid);
  });

  it('a password change on /account: the app is notified of the other sessions, not of the browser that changed it', async () => {
    const other = await signedIn();
    const here = await signedIn();
    const page = (await postForm(here.jar, await accountPage(here.jar), '/account/sudo', { current_password: world.user.password, code: await nextTotpCode(server.issuer, world.user.totpSecret) })).page!;
    const before = rp.received.length;
    const next = 'another long passphrase';
    const changed = await postForm(here.jar, page, '/account/password', { new_password: next });
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
      assert.equal(failure.reason, 'timeout');
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
    // The registry's refusal is typed (code and field); each front words the field its own way (the CLI: --backchannel-logout-uri).
    const refusedAs = (code: string) => (err: Error) => err instanceof RegistryError && err.code === code && err.field === 'backchannel_logout_uri';
    await assert.rejects(create('http://app.example/logout'), (err: Error) => refusedAs('uri_plain_http')(err) && /backchannel_logout_uri must use https/.test(err.message));
    await assert.rejects(create('https://app.example/logout#x'), /must not have a fragment/);
    await assert.rejects(create('app.example/logout'), /must be an absolute URI/);
    await assert.rejects(create('https://app.example/logout', ['client_credentials']), (err: Error) => refusedAs('needs_code_grant')(err) && /needs the authorization_code grant/.test(err.message));
  });

  it('a failed delivery is recorded with a coarse reason (an HTTP status, connection_failed), never the connection\'s error text', async () => {
    const answers500 = createServer((_req, res) => {
      res.statusCode = 500;
      res.end('stack trace of the app');
    });
    await new Promise<void>((resolve) => answers500.listen(0, '127.0.0.1', resolve));
    const closedPort = await freePort();
    try {
      const failing = await newApp(`http://127.0.0.1:${(answers500.address() as AddressInfo).port}/bc`);
      const unreachable = await newApp(`http://127.0.0.1:${closedPort}/bc`);
      const logged = server.logs.length;
      await enqueueLogouts(server.store, [{ clientId: failing.clientId, sub: world.user.id, sid: 's1' }, { clientId: unreachable.clientId, sub: world.user.id, sid: 's2' }]);
      const failureOf = (clientId: string) => server.logs.slice(logged).find((l) => l.event === 'backchannel_logout_failed' && l.clientId === clientId);
      for (let i = 0; i < 250 && !(failureOf(failing.clientId) && failureOf(unreachable.clientId)); i += 1) await new Promise((r) => setTimeout(r, 20));
      assert.equal(failureOf(failing.clientId)?.reason, 'http_status 500');
      assert.equal(failureOf(unreachable.clientId)?.reason, 'connection_failed');
      await server.app.activity.flush();
      const { events } = await server.app.activity.query({ events: ['backchannel_logout_failed'] }, { limit: 100 });
      const recorded = events.filter((e) => [failing.clientId, unreachable.clientId].includes(String(e.clientId)));
      assert.deepEqual(recorded.map((e) => e.reason).sort(), ['connection_failed', 'http_status 500'], 'the activity log keeps the same words');
      const text = JSON.stringify([...server.logs.slice(logged), ...recorded]);
      assert.doesNotMatch(text, /ECONNREFUSED|connect |stack trace|fetch failed/, 'no OS error text, nothing the target answered');
    } finally {
      answers500.closeAllConnections();
      await new Promise((r) => answers500.close(r));
    }
  });

  it('outside production: loopback and private targets are allowed, link-local and this server are not', async () => {
    const create = (uri: string) => server.app.registry.createClient({ name: 'x', grants: ['authorization_code'], redirectUris: [REDIRECT_URI], scope: 'openid', backchannelLogoutUri: uri }, async () => {});
    for (const uri of ['http://127.0.0.1:8080/bc', 'http://localhost:8080/bc', 'https://10.0.0.8/bc', 'https://[fd00::1]/bc']) assert.ok((await create(uri)).clientId, uri);
    await assert.rejects(create('https://169.254.169.254/latest/meta-data'), /must not point at a link-local address \(169\.254\.169\.254\)/);
    await assert.rejects(create('https://[fe80::1]/bc'), /link-local/);
    await assert.rejects(create(`${server.issuer}/admin/api/v1/users`), /must not point at this server/);
    await assert.rejects(create(`http://127.0.0.1:${server.port}/admin/api/v1/users`), /must not point at this server/);
  });
}

describe('back-channel logout on Redis', () => suite('redis'));
describe('back-channel logout on the embedded store', () => suite('memory'));

describe('back-channel logout targets under production rules', () => {
  const ISSUER = 'https://login.example.com';
  const production = { production: true, allowPrivate: false, issuer: ISSUER };
  const registryUnder = (rules: typeof production) => new Registry(new MemoryStore(), { backchannelTargets: rules });
  const create = (registry: Registry, uri: string) =>
    registry.createClient({ name: 'x', grants: ['authorization_code'], redirectUris: [REDIRECT_URI], scope: 'openid', backchannelLogoutUri: uri }, async () => {});

  it('registration refuses loopback, link-local, private addresses, localhost and this server; public names and addresses pass', async () => {
    const registry = registryUnder(production);
    const refused: [string, RegExp][] = [
      ['http://localhost:8080/bc', /a loopback address \(localhost\) in production; set BACKCHANNEL_LOGOUT_ALLOW_PRIVATE=true/],
      ['http://127.0.0.1:8080/bc', /loopback/],
      ['http://[::1]:8080/bc', /loopback/],
      ['https://app.localhost/bc', /loopback/],
      ['https://0x7f.1/bc', /loopback address \(127\.0\.0\.1\)/],
      ['https://2130706433/bc', /loopback/],
      ['https://0.0.0.0/bc', /loopback/],
      ['https://169.254.169.254/latest/meta-data', /link-local/],
      ['https://[fe80::1]/bc', /link-local/],
      ['https://[::ffff:169.254.169.254]/bc', /link-local/],
      ['https://10.1.2.3/bc', /a private address/],
      ['https://172.16.0.1/bc', /private/],
      ['https://192.168.1.10/bc', /private/],
      ['https://100.64.0.1/bc', /private/],
      ['https://[fd12::1]/bc', /private/],
      ['https://[::ffff:10.0.0.1]/bc', /private/],
      ['https://[64:ff9b::a00:1]/bc', /private/],
      ['https://login.example.com/admin/api/v1/clients', /must not point at this server \(https:\/\/login\.example\.com\)/],
      ['https://LOGIN.example.com:443/x', /this server/],
    ];
    for (const [uri, message] of refused) await assert.rejects(create(registry, uri), (err: Error) => err instanceof RegistryError && message.test(err.message), uri);
    for (const uri of ['https://app.example/bc', 'https://8.8.8.8/bc', 'https://[2001:4860:4860::8888]/bc', 'https://login.example.com:8443/bc']) assert.ok((await create(registry, uri)).clientId, uri);
  });

  it('BACKCHANNEL_LOGOUT_ALLOW_PRIVATE=true lets internal addresses through, never this server', async () => {
    const registry = registryUnder({ ...production, allowPrivate: true });
    for (const uri of ['http://localhost:8080/bc', 'https://10.1.2.3/bc', 'https://169.254.10.1/bc', 'https://[fd12::1]/bc']) assert.ok((await create(registry, uri)).clientId, uri);
    await assert.rejects(create(registry, 'https://login.example.com/admin/api/v1/clients'), /this server/);
  });

  it('a resolver answer with any refused address refuses the name; an allowed one is passed on as asked', async () => {
    const answering = (addresses: { address: string; family: number }[]) =>
      ((_host: string, _options: object, callback: (err: null, all: typeof addresses) => void) => callback(null, addresses)) as unknown as LookupFunction;
    const ask = (resolve: LookupFunction, all: boolean) =>
      new Promise<unknown>((done) => guardedLookup(production, resolve)('rp.example', { all }, (err, address) => done(err ?? address)));
    const mixed = answering([{ address: '93.184.216.34', family: 4 }, { address: '127.0.0.1', family: 4 }]);
    assert.ok((await ask(mixed, false)) instanceof RefusedTarget);
    assert.ok((await ask(answering([{ address: '::ffff:7f00:1', family: 6 }]), true)) instanceof RefusedTarget);
    assert.equal(await ask(answering([{ address: '93.184.216.34', family: 4 }]), false), '93.184.216.34');
    assert.deepEqual(await ask(answering([{ address: '93.184.216.34', family: 4 }]), true), [{ address: '93.184.216.34', family: 4 }]);
  });

  describe('delivery: the address a name resolves to when the notice goes out', () => {
    let redis: TestRedis;
    let target: NetServer;
    let connections = 0;
    const resolved: string[] = [];
    // A public-looking name that resolves to the loopback address at delivery (DNS rebinding, or a name the
    // admin controls): the resolver is injected, the connection is real.
    const resolve = ((host: string, options: object, callback: (...args: unknown[]) => void) =>
      host === 'rp.example.test' ? (resolved.push(host), dnsLookup('127.0.0.1', options, callback as never)) : dnsLookup(host, options, callback as never)) as unknown as LookupFunction;

    before(async () => {
      redis = await startRedis({ ownServer: true });
      target = createNetServer((socket) => {
        connections += 1;
        socket.destroy();
      });
      await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
    });
    after(async () => {
      await new Promise((r) => target.close(r));
      await redis.dispose();
    });

    async function deliverUnder(env: Record<string, string>) {
      const server = await startServer({ redisUrl: redis.url, env: { NODE_ENV: 'production', SECRETS_KEY: randomBytes(32).toString('base64'), ...env }, logoutDelivery: { timeoutMs: 400, retryDelaysMs: [20, 20], pollMs: 200, resolve } });
      try {
        const uri = `https://rp.example.test:${(target.address() as AddressInfo).port}/backchannel-logout`;
        const { clientId } = await server.app.registry.createClient({ name: 'Rebound', grants: ['authorization_code'], redirectUris: [REDIRECT_URI], scope: 'openid', backchannelLogoutUri: uri }, async () => {});
        const logged = server.logs.length;
        await enqueueLogouts(server.store, [{ clientId, sub: 'someone', sid: 'a-session' }]);
        const failure = () => server.logs.slice(logged).find((l) => l.event === 'backchannel_logout_failed' && l.clientId === clientId);
        for (let i = 0; i < 250 && !failure(); i += 1) await new Promise((r) => setTimeout(r, 20));
        assert.ok(failure(), 'backchannel_logout_failed logged');
        return failure()!;
      } finally {
        await server.close();
      }
    }

    it('a name that resolves to 127.0.0.1 is refused at delivery, without a connection: refused_target', async () => {
      const before = { connections, resolved: resolved.length };
      const failure = await deliverUnder({});
      assert.ok(resolved.length > before.resolved, 'the name was resolved at delivery');
      assert.equal(connections, before.connections, 'nothing connected to the loopback address');
      assert.equal(failure.reason, 'refused_target');
      assert.equal(failure.attempts, 1, 'not retried: it would resolve to the same refusal');
    });

    it('with BACKCHANNEL_LOGOUT_ALLOW_PRIVATE=true the same name is connected to (and fails as an unreachable app does)', async () => {
      const before = connections;
      const failure = await deliverUnder({ BACKCHANNEL_LOGOUT_ALLOW_PRIVATE: 'true' });
      assert.ok(connections > before, 'the loopback target was reached');
      assert.equal(failure.reason, 'connection_failed');
      assert.equal(failure.attempts, 3);
      assert.doesNotMatch(JSON.stringify(failure), /ECONNRESET|socket|TLS/i);
    });
  });
});
