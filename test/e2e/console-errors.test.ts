import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { AxeBuilder } from '@axe-core/playwright';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { SCREENSHOTS, currentStep, fillCode, fillLogin, launchBrowser, newContext, submit } from '../helpers/browser.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { nextTotpCode } from '../helpers/totp.ts';
import { keys } from '../../src/storage/keys.ts';

/**
 * The console when something breaks for real: a stored record that no longer parses (a 500), and Redis
 * stopped under a signed-in admin (a 503). Each is a calm page inside the console's layout with the
 * request id its log line carries, never a stack. Its own redis-server: it is stopped mid-test.
 */
const ADMIN = 'root@example.com';
const PASSWORD = 'correct horse battery staple';

describe('console failures in a browser', () => {
  let redis: TestRedis;
  let server: TestServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;

  before(async () => {
    redis = await startRedis({ ownServer: true, persistence: true });
    server = await startServer({ redisUrl: redis.url, env: { REDIS_TIMEOUT_MS: '300' } });
    const created = await server.app.ops.createUser({ kind: 'cli' }, { email: ADMIN, password: PASSWORD, admin: true, totp: true });
    browser = await launchBrowser();
    context = await newContext(browser);
    page = await context.newPage();
    await page.goto(`${server.issuer}/admin`);
    assert.equal(await currentStep(page, ''), 'login');
    await fillLogin(page, ADMIN, PASSWORD);
    await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    await fillCode(page, await nextTotpCode(server.issuer, new URL(created.totp_uri!).searchParams.get('secret')!));
    await submit(page, page.getByRole('button', { name: 'Verify' }));
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Overview');
  });

  after(async () => {
    await context?.close();
    await browser?.close();
    await server?.close();
    await redis?.dispose();
  });

  async function check(name: string) {
    const { violations } = await new AxeBuilder({ page }).analyze();
    assert.deepEqual(violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => v.id), [], `axe on ${name}`);
    mkdirSync(SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: new URL(`admin-${name}.png`, SCREENSHOTS).pathname, fullPage: true });
  }

  /** The page is the console's (its navigation and header), names the request id it was answered with, and shows no internals. */
  async function insideTheLayout(answer: Awaited<ReturnType<Page['goto']>>, heading: string) {
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), heading);
    assert.ok(await page.getByRole('navigation', { name: 'Console' }).count(), 'the console navigation');
    assert.ok(await page.getByRole('banner').getByRole('link', { name: 'Sign out' }).count(), 'the console header');
    const requestId = await page.locator('#request-id').innerText();
    assert.equal(requestId, answer!.headers()['x-request-id'], 'the request id the answer carries');
    const html = await page.content();
    assert.doesNotMatch(html, /SyntaxError|JSON|StorageUnavailable|\bat [\w.<>]+ \(|node_modules|\.ts:\d+/, 'no error name, stack or file');
    return requestId;
  }

  test('a console page that fails on the server: a 500 page inside the layout with the request id, and one log line with the stack under that id', async () => {
    // A record that no longer parses, as a bad restore or a hand edit would leave it.
    const broken = 'https://broken.example';
    await server.store.set(keys.resource(broken), '{"uri": "https://broken.example", "scopes": [');
    await server.store.setAdd(keys.resources, broken);
    try {
      const answer = await page.goto(`${server.issuer}/admin/apis`);
      assert.equal(answer!.status(), 500);
      const requestId = await insideTheLayout(answer, 'Something went wrong');
      assert.match(await page.getByRole('banner').innerText(), new RegExp(`Signed in as ${ADMIN.replace('.', '\\.')}`));
      assert.match(await page.locator('main').innerText(), /the server's log has the details under the request id/);
      await check('server-error');
      const logged = server.logs.filter((l) => l.requestId === requestId && Number(l.level) >= 50);
      assert.equal(logged.length, 1, 'one error line for the request');
      assert.match(String((logged[0]!.err as { stack?: string }).stack), /SyntaxError/, 'the log has the stack the page does not');
    } finally {
      await server.store.setRemove(keys.resources, broken);
      await server.store.del(keys.resource(broken));
    }
    assert.equal((await page.goto(`${server.issuer}/admin/apis`))!.status(), 200, 'the page works again once the record is gone');
  });

  test('Redis stopped under a signed-in admin: a 503 "storage unavailable" page inside the layout with Retry-After; /account and sign-in answer their own styled page; all back by themselves', async () => {
    const consoleClient = (await server.store.get(keys.adminConsoleClient))!;
    const signIn = `/auth?${new URLSearchParams({ client_id: consoleClient, redirect_uri: `${server.issuer}/admin/callback`, response_type: 'code', scope: 'openid', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' })}`;
    const logsBefore = server.logs.length;
    await redis.stop();
    try {
      for (const path of ['/admin', '/admin/apps', '/admin/users']) {
        const answer = await page.goto(`${server.issuer}${path}`);
        assert.equal(answer!.status(), 503, path);
        assert.ok(Number(answer!.headers()['retry-after']) > 0, `${path}: Retry-After`);
        await insideTheLayout(answer, 'Storage unavailable');
        assert.doesNotMatch(await page.getByRole('banner').innerText(), /Signed in as/, 'who is signed in is not known without storage');
      }
      assert.match(await page.locator('main').innerText(), /cannot reach its storage/);
      await check('storage-unavailable');
      // A form posted during the outage gets the same page (the guard reads the session first).
      const posted = await page.request.post(`${server.issuer}/admin/keys/rotate`, { form: { _csrf: 'x' }, maxRedirects: 0 });
      assert.equal(posted.status(), 503);
      assert.match(await posted.text(), /Storage unavailable/);

      // The account page and the sign-in pages: their own layout's styled page, with the request id.
      for (const path of ['/account', signIn]) {
        const answer = await page.goto(`${server.issuer}${path}`);
        const text = await page.locator('main').innerText();
        assert.equal(answer!.status(), 503, `${path}: ${text}`);
        assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Something went wrong');
        assert.match(text, /temporarily unavailable/i, path);
        assert.ok(text.includes(answer!.headers()['x-request-id']!), `${path}: names its request id`);
      }
      assert.deepEqual(server.logs.slice(logsBefore).filter((l) => Number(l.level) >= 50 && l.event !== 'storage_unavailable').map((l) => l.msg), [], 'an outage is no unhandled error');
    } finally {
      await redis.restart();
    }
    let status = 0;
    for (let i = 0; i < 50 && status !== 200; i += 1) {
      status = (await page.goto(`${server.issuer}/admin/apps`))!.status();
      if (status !== 200) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(status, 200, 'back by itself');
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Applications');
  });
});
