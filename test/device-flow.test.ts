import assert from 'node:assert/strict';
import { request } from 'node:http';
import { describe, test } from 'node:test';
import { DEVICE_MESSAGES, POLL_INTERVAL_SECONDS } from '../src/oidc/device-flow.ts';
import { DEVICE_CODE_GRANT } from '../src/oidc/registry.ts';
import { keys } from '../src/storage/keys.ts';
import { withClockAhead } from './conformance/op.ts';
import { approveDevice, device, deviceRoundTrip, enterUserCode, type DeviceClient } from './helpers/device.ts';
import { browse, CookieJar, endpoints, hiddenField } from './helpers/flow.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { createWorld, useWorld, type World } from './helpers/world.ts';

/**
 * The device authorization grant (RFC 8628) over HTTP, on Redis: the device side with plain requests,
 * the person through the HTML forms (test/e2e/device.test.ts does it in Chromium with oauth4webapi).
 */
let server: TestServer;
let world: World;
let tv: DeviceClient;
let cli: DeviceClient;

const SCOPE = 'openid profile offline_access api:read';
const USER_CODE = /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/;

useWorld(async (setup) => {
  ({ server, world } = setup);
  const noValidation = async () => {};
  const { registry } = server.app;
  const publicTv = await registry.createClient({ name: 'Living room TV', grants: [DEVICE_CODE_GRANT, 'refresh_token'], scope: SCOPE, public: true }, noValidation);
  tv = { clientId: publicTv.clientId };
  const confidential = await registry.createClient({ name: 'Deploy CLI', grants: [DEVICE_CODE_GRANT], scope: 'openid api:read' }, noValidation);
  cli = { clientId: confidential.clientId, secret: confidential.secret! };
});

const person = () => ({ email: world.user.email, password: world.user.password });

describe('device authorization grant', () => {
  test('discovery names the device authorization endpoint and the grant, as implemented', async () => {
    const meta = (await (await fetch(new URL('/.well-known/openid-configuration', server.issuer))).json()) as Record<string, unknown>;
    assert.equal(meta.device_authorization_endpoint, `${server.issuer}/device/auth`);
    assert.ok((meta.grant_types_supported as string[]).includes(DEVICE_CODE_GRANT));
  });

  test('the device gets a short code of unambiguous letters, both URIs, its lifetime and the polling interval', async () => {
    const started = await device(server.issuer, tv).start('openid');
    assert.match(started.user_code, USER_CODE);
    assert.equal(started.verification_uri, `${server.issuer}/device`);
    assert.equal(started.verification_uri_complete, `${server.issuer}/device?user_code=${started.user_code}`);
    assert.equal(started.expires_in, 600);
    assert.equal(started.interval, POLL_INTERVAL_SECONDS);
    const keyNames = await allKeyNames();
    for (const secret of [started.device_code, started.user_code, started.user_code.replace('-', '')]) {
      assert.ok(!keyNames.some((k) => k.includes(secret)), 'neither code is part of a key name');
    }
  });

  test('approve: pending until the person allows, then tokens (public client, code typed in lowercase without its dash)', async () => {
    const d = device(server.issuer, tv);
    const started = await d.start(SCOPE);
    const pending = await d.poll(started.device_code);
    assert.equal(pending.status, 400);
    assert.equal(pending.body.error, 'authorization_pending');

    // A typo first: the page says so and takes the code again in the same form.
    const jar = new CookieJar();
    const typo = await enterUserCode(server.issuer, jar, 'BCDF-BCDF');
    assert.match(typo.followed.page!.html, new RegExp(escape(DEVICE_MESSAGES.wrongCode)));
    const typed = started.user_code.replace('-', '').toLowerCase();
    const { consentPage, page } = await approveDevice({ issuer: server.issuer, userCode: typed, user: person(), jar, retry: typo.followed.page! });
    assert.ok(consentPage, 'the device request is shown after sign-in');
    assert.match(consentPage.html, /Living room TV/);
    assert.match(consentPage.html, new RegExp(started.user_code));
    assert.match(consentPage.html, /Only allow this if you started it yourself/);
    assert.match(consentPage.html, /Stay connected while you are away/);
    assert.match(consentPage.html, /127\.0\.0\.1|::1/, 'the address of the device');
    assert.match(page!.html, /Device connected/);

    const tokens = await d.poll(started.device_code);
    assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
    assert.equal(typeof tokens.body.access_token, 'string');
    assert.equal(typeof tokens.body.refresh_token, 'string');
    assert.equal(typeof tokens.body.id_token, 'string');
    const approved = server.logs.filter((l) => l.event === 'device_approved');
    assert.deepEqual(approved.map((l) => [l.clientId, l.accountId]), [[tv.clientId, world.user.id]]);

    // Single use: the code cannot be entered again, and the device code cannot be redeemed again.
    const again = await enterUserCode(server.issuer, new CookieJar(), started.user_code);
    assert.match(again.followed.page!.html, new RegExp(escape(DEVICE_MESSAGES.used)));
    const replay = await d.poll(started.device_code);
    assert.equal(replay.status, 400);
    assert.equal(replay.body.error, 'invalid_grant');
    const introspected = await endpoints(server.issuer).introspect(world.api, String(tokens.body.access_token));
    assert.equal(introspected.body.active, false, 'a replayed device code revokes what it gave');
  });

  test('a confidential client (Basic auth), the code from verification_uri_complete', async () => {
    const d = device(server.issuer, cli);
    const started = await d.start('openid api:read');
    const { entryPage, page } = await approveDevice({ issuer: server.issuer, userCode: started.user_code, user: person(), prefilled: true });
    assert.match(entryPage.html, new RegExp(`id="user_code"[^>]*value="${started.user_code}"`), 'the code is filled in, in the visible field');
    assert.doesNotMatch(entryPage.html, /<script/, 'no script (the CSP would block it)');
    assert.match(page!.html, /Device connected/);
    const tokens = await d.poll(started.device_code);
    assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
    assert.equal(tokens.body.refresh_token, undefined, 'no refresh_token grant, no refresh token');
  });

  test('a person already signed in still sees the request and answers it, every time', async () => {
    const d = device(server.issuer, tv);
    const first = await d.start('openid');
    const { jar } = await approveDevice({ issuer: server.issuer, userCode: first.user_code, user: person() });
    const second = await d.start('openid');
    const { consentPage, page } = await approveDevice({ issuer: server.issuer, userCode: second.user_code, jar });
    assert.ok(consentPage, 'no sign-in, but the device request is shown again');
    assert.match(page!.html, /Device connected/);
    assert.equal((await d.poll(second.device_code)).status, 200);
  });

  test('deny: the device hears access_denied', async () => {
    const d = device(server.issuer, tv);
    const started = await d.start(SCOPE);
    const { page } = await approveDevice({ issuer: server.issuer, userCode: started.user_code, user: person(), answer: 'deny' });
    assert.match(page!.html, /Device not connected/);
    const denied = await d.poll(started.device_code);
    assert.equal(denied.status, 400);
    assert.equal(denied.body.error, 'access_denied');
    assert.ok(server.logs.some((l) => l.event === 'device_denied' && l.clientId === tv.clientId));
    const metrics = await server.app.metrics.text();
    assert.match(metrics, /latchkey_device_flow_total\{outcome="denied"\} [1-9]/);
    assert.match(metrics, /latchkey_device_flow_total\{outcome="approved"\} [1-9]/);
  });

  test('expiry (clock 10 minutes ahead): expired_token to the device, "expired" to the person', async () => {
    const d = device(server.issuer, tv);
    const started = await d.start('openid');
    await withClockAhead(601, async () => {
      const expired = await d.poll(started.device_code);
      assert.equal(expired.status, 400);
      assert.equal(expired.body.error, 'expired_token');
      const { followed } = await enterUserCode(server.issuer, new CookieJar(), started.user_code);
      assert.match(followed.page!.html, new RegExp(escape(DEVICE_MESSAGES.expired)));
    });
  });

  test('slow_down: a poll sooner than the interval, which then grows by 5 seconds', async () => {
    const d = device(server.issuer, tv);
    const { device_code: code } = await d.start('openid');
    const start = Date.now();
    const pollAt = (seconds: number) => withClockAhead((start - Date.now()) / 1000 + seconds, () => d.poll(code));
    assert.equal((await pollAt(0)).body.error, 'authorization_pending');
    assert.equal((await pollAt(1)).body.error, 'slow_down', 'one second later');
    assert.equal((await pollAt(7)).body.error, 'slow_down', '6 s later: the interval is 10 s now');
    assert.equal((await pollAt(22)).body.error, 'authorization_pending', '15 s later: the interval (15 s) was kept');
    assert.equal((await pollAt(37)).body.error, 'authorization_pending');
  });

  test('two polls at the same moment: one is pending, the other slow_down', async () => {
    const d = device(server.issuer, tv);
    const { device_code: code } = await d.start('openid');
    const errors = (await Promise.all([d.poll(code), d.poll(code)])).map((r) => r.body.error).sort();
    assert.deepEqual(errors, ['authorization_pending', 'slow_down']);
  });

  test('guessed user codes: after 10 wrong codes the address gets 429, even for a right code; other addresses do not', async () => {
    const started = await device(server.issuer, tv).start('openid');
    const from = '127.0.0.5';
    const statuses: number[] = [];
    for (let i = 0; i < 10; i += 1) statuses.push((await enterCodeFrom(from, `BCDF-${'GHJK'.slice(0, 3)}${'LMNPQRSTVW'[i]}`)).status);
    assert.deepEqual(statuses, [...Array<number>(9).fill(200), 429]);
    const right = await enterCodeFrom(from, started.user_code);
    assert.equal(right.status, 429, 'the right code too, while locked');
    assert.ok(Number(right.retryAfter) > 0);
    assert.match(right.html, new RegExp(escape(DEVICE_MESSAGES.locked)));
    const elsewhere = await enterCodeFrom('127.0.0.6', started.user_code);
    assert.equal(elsewhere.status, 303, `another address goes on to sign in: ${elsewhere.html.slice(0, 200)}`);
    const locked = server.logs.filter((l) => l.event === 'lockout_started' && l.scope === 'device');
    assert.deepEqual(locked.map((l) => [l.subject, l.ip]), [['account', from]]);
    assert.ok(!JSON.stringify(server.logs).includes('BCDF-GHJ'), 'no typed code in a log line');
  });

  test('bad input at /device/auth, /device and the token endpoint: 4xx with a clear error, never a 5xx', async () => {
    const post = (path: string, body: string, headers: Record<string, string> = {}) =>
      fetch(new URL(path, server.issuer), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...headers }, body });
    const noClient = await post('/device/auth', 'scope=openid');
    assert.equal(noClient.status, 401);
    assert.equal(((await noClient.json()) as { error: string }).error, 'invalid_client');
    const unknown = await post('/device/auth', 'scope=openid&client_id=nobody');
    assert.equal(unknown.status, 401);
    const notAllowed = await device(server.issuer, { clientId: world.shop.clientId, secret: world.shop.secret }).authorize('openid');
    assert.equal(notAllowed.status, 400);
    assert.equal(notAllowed.body.error, 'unauthorized_client', JSON.stringify(notAllowed.body));

    const d = device(server.issuer, tv);
    const noCode = await post('/token', new URLSearchParams({ grant_type: DEVICE_CODE_GRANT, client_id: tv.clientId }).toString());
    assert.equal(noCode.status, 400);
    assert.equal(((await noCode.json()) as { error: string }).error, 'invalid_request');
    assert.equal((await d.poll('made-up')).body.error, 'invalid_grant');
    const theirs = await device(server.issuer, cli).start('openid');
    assert.equal((await d.poll(theirs.device_code)).body.error, 'invalid_grant', "another client's device code");

    const html = { accept: 'text/html' };
    for (const body of ['', 'user_code=BCDF-GHJK', 'xsrf=nope&user_code=BCDF-GHJK&confirm=yes', 'user_code=a&user_code=b', '%zz=%zz']) {
      const res = await post('/device', body, html);
      assert.ok(res.status >= 400 && res.status < 500, `POST /device ${JSON.stringify(body)}: ${res.status} ${JSON.stringify(server.logs.filter((l) => Number(l.level) >= 50))}`);
    }
    const crossSite = await post('/device', 'user_code=BCDF-GHJK', { ...html, origin: 'https://evil.example' });
    assert.equal(crossSite.status, 403);
    for (const query of ['?user_code=', '?user_code=x&user_code=y', `?user_code=${'B'.repeat(5000)}`]) {
      const res = await fetch(new URL(`/device${query}`, server.issuer), { headers: html });
      assert.ok(res.status < 500, `GET /device${query}: ${res.status}`);
    }
    // Markup in a prefilled code comes back as text in the input's value, never as markup.
    const markup = await fetch(new URL(`/device?user_code=${encodeURIComponent('"><script>x()</script>')}`, server.issuer), { headers: html });
    assert.equal(markup.status, 200);
    const page = await markup.text();
    assert.match(page, /<input id="user_code"[^>]* value="&quot;&gt;&lt;script&gt;x\(\)&lt;\/script&gt;">/);
    assert.doesNotMatch(page, /<script>x\(\)/);
  });

  test('the device code and the user code are stored by digest only; the poll record expires with the code', async () => {
    const started = await device(server.issuer, tv).start('openid');
    await device(server.issuer, tv).poll(started.device_code);
    const ttl = await server.store.get(keys.devicePoll(started.device_code));
    assert.ok(ttl, 'a poll record under a digest of the device code');
  });
});

function escape(text: string) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

async function allKeyNames(): Promise<string[]> {
  const client = (server.store as unknown as { client: { keys(pattern: string): Promise<string[]> } }).client;
  return client.keys('*');
}

/** The code entry form posted from a chosen loopback address (the server sees it as the client IP). */
async function enterCodeFrom(from: string, userCode: string): Promise<{ status: number; retryAfter?: string; html: string }> {
  const jar = new CookieJar();
  const entry = await browse(jar, new URL('/device', server.issuer));
  const xsrf = hiddenField(await entry.text(), 'xsrf')!;
  const body = new URLSearchParams({ xsrf, confirm: 'yes', user_code: userCode }).toString();
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: server.port,
        localAddress: from,
        method: 'POST',
        path: '/device',
        headers: { host: new URL(server.issuer).host, cookie: jar.header(new URL('/device', server.issuer)), 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        let html = '';
        res.on('data', (d) => (html += d));
        res.on('end', () => resolve({ status: res.statusCode!, retryAfter: res.headers['retry-after'], html }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('device authorization grant on the embedded store', () => {
  test('approve, tokens, refresh, replay refused', async () => {
    const embedded = await startServer();
    try {
      assert.equal(embedded.store.kind, 'memory');
      const people = await createWorld(embedded);
      const { tokens } = await deviceRoundTrip(embedded.issuer, embedded.app.registry, { email: people.user.email, password: people.user.password });
      assert.equal(typeof tokens.access_token, 'string');
    } finally {
      await embedded.close();
    }
  });
});
