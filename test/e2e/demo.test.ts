import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { DEMO_EMAIL } from '../../src/demo/demo.ts';
import { fillLogin, launchBrowser, newContext, submit, watchProblems } from '../helpers/browser.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer } from '../helpers/server.ts';

/**
 * The first run: in development, /demo is a small app that signs in with Latchkey (code + PKCE against
 * itself) and shows the ID token's claims, with a demo account whose password is shown once.
 */
describe('the /demo app (development only)', () => {
  let browser: Browser;

  before(async () => {
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
  });

  test('a newcomer opens /demo, signs in with the demo account and sees the ID token claims', async () => {
    // As `npm start` with no configuration: development, embedded store. No second factor to enrol here.
    const server = await startServer({ env: { NODE_ENV: 'development', MFA_POLICY: 'optional' } });
    const context = await newContext(browser);
    const problems = watchProblems(context);
    try {
      const demo = server.app.demo;
      assert.ok(demo?.password, 'the embedded store gets a fresh demo account, with its password to print');
      assert.equal(demo.email, DEMO_EMAIL);
      const page = await context.newPage();
      await page.goto(`${server.issuer}/demo`);
      assert.match(await page.locator('main').innerText(), new RegExp(DEMO_EMAIL.replace('.', '\\.')));
      await submit(page, page.getByRole('link', { name: 'Sign in with Latchkey' }));

      await fillLogin(page, demo.email, demo.password);
      await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
      // The demo app is an ordinary (third-party) client: the person allows it.
      if (await page.locator('form[action$="/consent"]').count()) await submit(page, page.getByRole('button', { name: 'Allow' }));

      assert.equal(new URL(page.url()).pathname, '/demo/callback');
      await page.getByRole('heading', { name: 'Signed in' }).waitFor();
      const claims = Object.fromEntries(
        await page.locator('table.claims tr').evaluateAll((rows) => rows.map((r) => [r.querySelector('th')?.textContent ?? '', r.querySelector('td')?.textContent ?? ''])),
      );
      assert.equal(claims.iss, server.issuer);
      assert.equal(claims.aud, demo.clientId);
      assert.equal(claims.email, DEMO_EMAIL);
      assert.equal(claims.name, 'Demo Person');
      assert.match(String(claims.sub), /^[0-9a-f-]{36}$/);

      // Signing out of Latchkey returns to the demo.
      await submit(page, page.getByRole('link', { name: 'Sign out of Latchkey' }));
      await submit(page, page.getByRole('button', { name: 'Yes, sign me out' }));
      assert.equal(new URL(page.url()).pathname, '/demo');

      assert.deepEqual(problems, []);
      // The password goes to the terminal once (main.ts), never into a log line.
      assert.ok(!JSON.stringify(server.logs).includes(demo.password));
    } finally {
      await context.close();
      await server.close();
    }
  });

  test('a callback that was not started here is refused', async () => {
    const server = await startServer({ env: { NODE_ENV: 'development', MFA_POLICY: 'optional' } });
    try {
      const res = await fetch(`${server.issuer}/demo/callback?code=x&state=y&iss=${encodeURIComponent(server.issuer)}`);
      assert.equal(res.status, 400);
      assert.match(await res.text(), /not started here/);
    } finally {
      await server.close();
    }
  });

  describe('on Redis', () => {
    let redis: TestRedis;
    before(async () => {
      redis = await startRedis({ ownServer: true });
    });
    after(async () => {
      await redis?.dispose();
    });

    test('in development the demo is created once: a restart keeps the account and prints no new password', async () => {
      const first = await startServer({ redisUrl: redis.url, env: { NODE_ENV: 'development' } });
      const created = first.app.demo;
      await first.close();
      assert.ok(created?.password);
      const second = await startServer({ redisUrl: redis.url, env: { NODE_ENV: 'development' } });
      try {
        assert.equal(second.app.demo?.password, undefined);
        // This test's servers get a new port, so a new ISSUER: the demo client is registered again for it, once.
        const demoClients = (await second.app.registry.listClients()).filter((c) => c.client_name === 'Latchkey demo app');
        assert.deepEqual(demoClients.map((c) => c.client_id), [second.app.demo?.clientId]);
        assert.deepEqual(demoClients[0]?.redirect_uris, [`${second.issuer}/demo/callback`]);
        assert.ok(await second.app.accounts.authenticate(DEMO_EMAIL, created.password), 'the password shown first still works');
      } finally {
        await second.close();
      }
    });

    test('production serves no demo and creates no demo account', async () => {
      const server = await startServer({ redisUrl: redis.url, env: { NODE_ENV: 'production', SECRETS_KEY: Buffer.alloc(32, 7).toString('base64') } });
      try {
        assert.equal(server.app.demo, undefined);
        assert.equal((await fetch(`${server.issuer}/demo`)).status, 404);
        assert.equal((await fetch(`${server.issuer}/demo/login`, { redirect: 'manual' })).status, 404);
      } finally {
        await server.close();
      }
    });
  });
});
