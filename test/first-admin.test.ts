import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { launchBrowser, newContext, SCREENSHOTS, submit, currentStep, fillLogin, enrollOnPage, watchProblems } from './helpers/browser.ts';
import { SECRETS_KEY } from './helpers/config.ts';
import { browse, CookieJar, hiddenField } from './helpers/flow.ts';
import { runLatchkeyToExit, spawnLatchkey, type LatchkeyProcess } from './helpers/process.ts';
import { freePort, startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';

/**
 * The first admin of a new install: a production start without an admin prints a one-time setup link
 * on stderr (never in the log), the page creates the admin, and the console's sign-in makes them set up
 * a second factor; for automation, the bootstrap settings do it from a password file.
 */
const STRONG = 'correct horse battery staple 7';
const LINK = /Latchkey has no admin yet\. Open (\S+\/setup\/([A-Za-z0-9_-]{43})) within 60 minutes to create the first one\./;

let redis: TestRedis;
before(async () => {
  redis = await startRedis();
});
after(() => redis.dispose());

/** A production server on its own Redis database (`db`), issuer http://127.0.0.1:PORT (or `issuer`: another node of one install). */
async function production(db: number, env: Record<string, string> = {}, issuer?: string): Promise<LatchkeyProcess> {
  const port = await freePort();
  return spawnLatchkey({ NODE_ENV: 'production', REDIS_URL: `${redis.url}/${db}`, SECRETS_KEY, ISSUER: issuer ?? `http://127.0.0.1:${port}`, ...env }, { port });
}

function linkOf(server: LatchkeyProcess): { url: string; token: string } {
  const m = LINK.exec(server.stderr());
  assert.ok(m, `a setup link on stderr, got: ${server.stderr()}`);
  return { url: m[1]!, token: m[2]! };
}

describe('a production start without an admin', () => {
  test('prints a setup link on stderr only; Chromium creates the admin, enrols TOTP and reaches the console; then every link is dead', async () => {
    const first = await production(1);
    const second = await production(1, {}, first.url);
    const browser = await launchBrowser();
    try {
      const link = linkOf(first);
      const otherStart = linkOf(second);
      assert.notEqual(link.token, otherStart.token, 'each start prints its own link');
      assert.equal(new URL(link.url).origin, first.url);
      for (const server of [first, second]) {
        const logged = JSON.stringify(server.lines);
        assert.ok(!logged.includes(link.token) && !logged.includes(otherStart.token), 'no setup token in any log line');
      }

      // /admin says what to do instead of sending to a sign-in nobody can pass.
      const help = await fetch(`${first.url}/admin`, { redirect: 'manual' });
      assert.equal(help.status, 200);
      assert.match(await help.text(), /No admin yet[\s\S]*ADMIN_BOOTSTRAP_PASSWORD_FILE/);

      const context = await newContext(browser);
      const problems = watchProblems(context);
      const page = await context.newPage();
      await page.goto(`${first.url}/admin`);
      await page.screenshot({ path: fileURLToPath(new URL('admin-no-admin.png', SCREENSHOTS)), fullPage: true });

      await page.goto(link.url);
      assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Create the first admin');
      await page.screenshot({ path: fileURLToPath(new URL('setup.png', SCREENSHOTS)) });
      // The one password rule: refused next to the form, and the link still works.
      await page.getByLabel('Email').fill('first@example.com');
      await page.getByLabel('Password').fill('password');
      await submit(page, page.getByRole('button', { name: 'Create the admin' }));
      assert.match(await page.getByRole('alert').innerText(), /among the most common/);
      await page.getByLabel('Password').fill(STRONG);
      await submit(page, page.getByRole('button', { name: 'Create the admin' }));
      assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'The first admin is ready');

      // The console's sign-in: the password, then a second factor must be set up before getting in.
      await submit(page, page.getByRole('link', { name: 'Sign in to the console' }));
      assert.equal(await currentStep(page, ''), 'login', `${page.url()}: ${await page.locator('main').innerText()}`);
      await fillLogin(page, 'first@example.com', STRONG);
      await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
      assert.equal(await currentStep(page, ''), 'enroll', 'an admin without a second factor is made to set one up');
      await enrollOnPage(page);
      assert.equal(await currentStep(page, ''), 'recovery-codes');
      await submit(page, page.getByRole('button', { name: 'I have saved them' }));
      assert.equal(new URL(page.url()).pathname, '/admin');
      assert.match(await page.locator('body').innerText(), /Signed in as first@example\.com/);
      // The refused password's page is a 400 (Chromium reports it); nothing else went wrong.
      assert.deepEqual(problems.filter((p) => !/status of 400 .*\/setup\//.test(p)), []);
      await context.close();

      // Used: refused; another start's link: dead now that an admin exists (on either server).
      for (const url of [link.url, otherStart.url, `${second.url}/setup/${otherStart.token}`]) {
        const res = await fetch(url);
        assert.equal(res.status, 404, url);
        assert.match(await res.text(), /This setup link does not work/);
      }
      const posted = await fetch(otherStart.url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ email: 'second@example.com', password: STRONG }) });
      assert.equal(posted.status, 404);
      assert.equal(first.lines.filter((l) => l.event === 'admin_setup_completed').length, 1);
      // With an admin, /admin is the sign-in again.
      assert.equal((await fetch(`${first.url}/admin`, { redirect: 'manual' })).status, 303);
    } finally {
      await browser.close();
      await first.stop();
      await second.stop();
    }
    // A restart of an install with an admin prints no link.
    const again = await production(1, {}, first.url);
    await again.stop();
    assert.doesNotMatch(again.stderr(), /no admin yet/);
  });

  test('with several workers, one link is printed', async () => {
    const server = await production(4, { WORKERS: '2' });
    await server.stop();
    assert.equal(server.stderr().match(new RegExp(LINK.source, 'g'))?.length, 1, server.stderr());
  });

  test('ADMIN_BOOTSTRAP_EMAIL + ADMIN_BOOTSTRAP_PASSWORD_FILE create the admin once, without a browser', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'latchkey-bootstrap-'));
    try {
      const file = join(dir, 'admin-password');
      await writeFile(file, `${STRONG}\n`);
      const env = { ADMIN_BOOTSTRAP_EMAIL: 'ops@example.com', ADMIN_BOOTSTRAP_PASSWORD_FILE: file };
      const server = await production(2, env);
      try {
        assert.equal(server.lines.filter((l) => l.event === 'admin_bootstrapped').length, 1);
        assert.doesNotMatch(server.stderr(), /no admin yet/, 'no setup link once the admin exists');
        assert.ok(!JSON.stringify(server.lines).includes(STRONG), 'the password is in no log line');
        assert.equal((await fetch(`${server.url}/admin`, { redirect: 'manual' })).status, 303, '/admin is a sign-in now');
        // The password of the file signs in (the second factor comes next).
        const jar = new CookieJar();
        let res = await browse(jar, `${server.url}/admin`);
        while (res.status >= 300 && res.status < 400) res = await browse(jar, new URL(res.headers.get('location')!, server.url));
        const html = await res.text();
        const action = /action="([^"]+\/login)"/.exec(html)![1]!;
        res = await browse(jar, new URL(action, server.url), { method: 'POST', form: { _csrf: hiddenField(html, '_csrf')!, email: 'ops@example.com', password: STRONG } });
        assert.equal(res.status, 303);
        const next = await (await browse(jar, new URL(res.headers.get('location')!, server.url))).text();
        assert.match(next, /action="[^"]+\/enroll"/, 'the next step sets up a second factor');
      } finally {
        await server.stop();
      }
      // Idempotent: a restart with the same settings creates nothing.
      const restarted = await production(2, env);
      await restarted.stop();
      assert.equal(restarted.lines.filter((l) => l.event === 'admin_bootstrapped').length, 0);

      // A password the password rule refuses stops the boot, with a line that says why (and not the password).
      const weak = join(dir, 'weak');
      await writeFile(weak, 'password\n');
      const port = await freePort();
      const refused = await runLatchkeyToExit({
        NODE_ENV: 'production', PORT: String(port), HOST: '127.0.0.1', WORKERS: '1', LOG_FORMAT: 'json', REDIS_URL: `${redis.url}/3`, SECRETS_KEY,
        ISSUER: `http://127.0.0.1:${port}`, ADMIN_BOOTSTRAP_EMAIL: 'ops@example.com', ADMIN_BOOTSTRAP_PASSWORD_FILE: weak,
      }, { dropFromEnv: ['REDIS_URL', 'NODE_ENV'] });
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, /latchkey: ADMIN_BOOTSTRAP_PASSWORD_FILE: this password is among the most common ones/);
      assert.doesNotMatch(refused.stderr, /no admin yet/, 'no setup link when the boot stops');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the setup link (in process, on a test clock)', () => {
  let server: TestServer;
  let now = Date.now();
  before(async () => {
    server = await startServer({ clock: () => now });
  });
  after(() => server.close());

  const form = async (token: string) => {
    const jar = new CookieJar();
    const res = await browse(jar, `${server.issuer}/setup/${token}`);
    return { status: res.status, csrf: hiddenField(await res.text(), '_csrf'), jar };
  };
  const post = (jar: CookieJar, token: string, fields: Record<string, string>, headers: Record<string, string> = {}) =>
    browse(jar, `${server.issuer}/setup/${token}`, { method: 'POST', form: fields, headers });

  test('bad tokens are a 404 page, never a 5xx', async () => {
    for (const path of ['/setup/x', `/setup/${'A'.repeat(43)}`, '/setup/%00', `/setup/${'a'.repeat(5000)}`, '/setup/..%2f..%2fetc']) {
      for (const method of ['GET', 'POST']) {
        const res = await fetch(`${server.issuer}${path}`, { method, headers: { accept: 'text/html' }, ...(method === 'POST' ? { body: 'email=a', headers: { 'content-type': 'application/x-www-form-urlencoded' } } : {}) });
        assert.ok(res.status === 404 || res.status === 400, `${method} ${path.slice(0, 30)}: ${res.status}`);
      }
    }
  });

  test('expires after SETUP_LINK_TTL_SECONDS; refuses a foreign origin and a missing CSRF token', async () => {
    const token = (await server.app.firstAdmin.issueLink())!;
    const shown = await form(token);
    assert.equal(shown.status, 200);
    assert.equal((await post(shown.jar, token, { email: 'a@example.com', password: STRONG })).status, 403, 'no CSRF token');
    assert.equal((await post(shown.jar, token, { _csrf: shown.csrf!, email: 'a@example.com', password: STRONG }, { origin: 'https://evil.example' })).status, 403, 'another origin');
    now += 3600 * 1000;
    assert.equal((await form(token)).status, 404, 'expired');
    assert.equal((await post(shown.jar, token, { _csrf: shown.csrf!, email: 'a@example.com', password: STRONG })).status, 404);
    assert.equal(await server.app.firstAdmin.adminExists(), false);
  });

  test('single use under a race: of parallel posts of one link exactly one creates an admin', async () => {
    const token = (await server.app.firstAdmin.issueLink())!;
    const shown = await form(token);
    const answers = await Promise.all(
      ['r1@example.com', 'r2@example.com', 'r3@example.com', 'r4@example.com'].map((email) => post(shown.jar, token, { _csrf: shown.csrf!, email, password: STRONG })),
    );
    assert.deepEqual(answers.map((r) => r.status).sort(), [200, 404, 404, 404]);
    const admins = (await server.app.accounts.list()).filter((a) => a.admin);
    assert.equal(admins.length, 1);
    assert.equal(server.logs.filter((l) => l.event === 'admin_setup_completed').length, 1);
    assert.equal(await server.app.firstAdmin.issueLink(), undefined, 'no link once an admin exists');
  });
});
