import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { AxeBuilder } from '@axe-core/playwright';
import type { Browser, Page } from 'playwright-core';
import { SCREENSHOTS, currentStep, fillCode, fillLogin, launchBrowser, newContext, submit, watchProblems } from '../helpers/browser.ts';
import { endpoints, signIn, signInAndRedeem } from '../helpers/flow.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { nextTotpCode } from '../helpers/totp.ts';
import { createWorld, type World } from '../helpers/world.ts';
import { keys } from '../../src/storage/keys.ts';
import type { StoredSigningKey } from '../../src/oidc/signing-keys.ts';

/**
 * The console's Overview answers "is it healthy?": a real Chromium admin on the embedded store sees
 * the last hour's sign-ins, failures, tokens and introspections per minute as server-drawn SVG charts
 * (the sampler ticked by hand), the store's state, the signing keys' ages, and what needs them.
 */
const ADMIN = 'root@example.com';
const BARE_ADMIN = 'no-factor@example.com';
const PASSWORD = 'correct horse battery staple';

describe('the Overview in a browser', () => {
  let server: TestServer;
  let browser: Browser;
  let world: World;
  let adminSecret: string;

  before(async () => {
    server = await startServer();
    // Only the test's own ticks sample: the once-a-minute timer could split the counts over two minutes on a slow run.
    server.app.minuteSeries.stop();
    world = await createWorld(server);
    const made = await server.app.ops.createUser({ kind: 'cli' }, { email: ADMIN, password: PASSWORD, admin: true, totp: true });
    adminSecret = new URL(made.totp_uri!).searchParams.get('secret')!;
    await server.app.ops.createUser({ kind: 'cli' }, { email: BARE_ADMIN, password: PASSWORD, admin: true });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  async function signInAdmin(page: Page) {
    await page.goto(`${server.issuer}/admin`);
    assert.equal(await currentStep(page, ''), 'login');
    await fillLogin(page, ADMIN, PASSWORD);
    await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    await fillCode(page, await nextTotpCode(server.issuer, adminSecret));
    await submit(page, page.getByRole('button', { name: 'Verify' }));
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Overview');
  }

  test('charts of the last minutes with their numbers, the embedded store, key ages, and an admin without a second factor', async () => {
    const context = await newContext(browser);
    const problems = watchProblems(context);
    const page = await context.newPage();
    try {
      await signInAdmin(page);
      // The minute of the admin's own sign-in ends here; the next one holds only what follows.
      await server.app.minuteSeries.sample();

      const call = endpoints(server.issuer);
      let tokens = 0;
      for (let i = 0; i < 2; i += 1) {
        const { tokens: t } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid api:read', params: { resource: world.api.uri } });
        tokens += [t.access_token, t.id_token, t.refresh_token].filter(Boolean).length;
        assert.equal((await call.introspect(world.api, t.access_token)).body.active, true);
      }
      const wrong = await signIn({ issuer: server.issuer, client: world.shop, user: { email: world.user.email, password: 'not the password at all' }, scope: 'openid', secondFactor: 'stop' });
      assert.equal(wrong.code, undefined);
      await server.app.minuteSeries.sample();

      const minutes = server.app.minuteSeries.points().length;
      assert.ok(minutes >= 2, `${minutes} minutes kept`);
      await page.goto(`${server.issuer}/admin`);
      const expected = { signIns: 2, signInFailures: 1, tokensIssued: tokens, introspections: 2 };
      for (const [name, last] of Object.entries(expected)) {
        const chart = page.locator(`svg#chart-${name}`);
        assert.equal(await chart.getAttribute('role'), 'img');
        assert.equal(await chart.getAttribute('data-points'), String(minutes));
        const points = (await chart.locator('polyline').getAttribute('points'))!.trim().split(/\s+/);
        assert.equal(points.length, minutes, `${name}: one point a minute`);
        assert.match((await chart.getAttribute('aria-label'))!, new RegExp(`over the last ${minutes} minutes: \\d+ in all, at most \\d+ in a minute, ${last} in the last minute$`), name);
        // The newest minute is the chart's highest point when it is the busiest (y grows downwards).
        assert.equal(Number(points.at(-1)!.split(',')[1]), Math.min(...points.map((p) => Number(p.split(',')[1]))), `${name}: the last minute is the peak`);
      }
      assert.match(await page.locator('#chart-signIns').getAttribute('aria-label') ?? '', /^Sign-ins per minute/);

      const attention = await page.locator('#attention').innerText();
      assert.match(attention, new RegExp(`${BARE_ADMIN.replace('.', '\\.')} is an admin without a second factor`));
      assert.doesNotMatch(attention, new RegExp(ADMIN), 'an admin with TOTP is fine');
      assert.match(attention, /The embedded store is in use/);
      assert.doesNotMatch(attention, /due for rotation/);
      assert.match(await page.locator('#store-state').innerText(), /^Embedded store: \d+ keys in this process's memory; nothing survives a restart\.$/);
      assert.match(await page.locator('#key-ages').innerText(), /^\w+: 0 days old \(current\)/m);

      const { violations } = await new AxeBuilder({ page }).analyze();
      assert.deepEqual(violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`), []);
      mkdirSync(SCREENSHOTS, { recursive: true });
      await page.screenshot({ path: new URL('admin-overview.png', SCREENSHOTS).pathname, fullPage: true });

      // Works without JavaScript: the charts are in the HTML the server sends.
      const html = await (await context.request.get(`${server.issuer}/admin`)).text();
      assert.match(html, /<svg class="spark" id="chart-tokensIssued" role="img" aria-label="Tokens issued per minute/);
      assert.doesNotMatch(html, /<script|style="/, 'no inline script or style for the CSP to refuse');

      // A current signing key older than 90 days is due for rotation.
      const stored = JSON.parse((await server.store.get(keys.signingKeys))!) as StoredSigningKey[];
      const newest = Math.max(...stored.map((k) => k.iat));
      await server.store.set(keys.signingKeys, JSON.stringify(stored.map((k) => (k.iat === newest ? { ...k, iat: k.iat - 100 * 86_400 } : k))));
      await page.goto(`${server.issuer}/admin`);
      assert.match(await page.locator('#attention').innerText(), /The current signing key \S+ is 100 days old: due for rotation/);
      assert.deepEqual(problems.filter((p) => !/status of 4\d\d/.test(p)), []);
    } finally {
      await context.close();
    }
  });
});

describe('the Overview on Redis', () => {
  let redis: TestRedis;
  let server: TestServer;

  before(async () => {
    redis = await startRedis();
    server = await startServer({ redisUrl: redis.url });
    server.app.minuteSeries.stop();
  });

  after(async () => {
    await server?.close();
    await redis?.dispose();
  });

  test('Redis answers with its memory; no embedded-store item; an empty hour is no chart points at all', async () => {
    const overview = await server.app.ops.overview();
    assert.equal(overview.store.up, true);
    assert.ok(overview.store.info?.kind === 'redis' && overview.store.info.usedMemory > 0);
    assert.deepEqual(overview.attention.map((a) => a.kind), []);
    assert.deepEqual(overview.minutes, [], 'only the baseline was read');
    assert.ok(overview.signing_keys.some((k) => k.current && k.age_days === 0));
  });
});
