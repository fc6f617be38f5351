import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { browse, CookieJar, follow, formAction, hiddenField } from './helpers/flow.ts';
import { startServer } from './helpers/server.ts';

/**
 * Without a mail server: the development outbox (no SMTP_URL) lists what was sent with its links, so
 * a reset can be followed from `npm start` alone; and with EMAIL=off the sign-in page still tells a
 * person who forgot their password what to do.
 */
async function askForReset(issuer: string, email: string) {
  const jar = new CookieJar();
  const url = new URL('/password/forgot', issuer);
  const form = await follow(jar, issuer, await browse(jar, url), url);
  const action = new URL(formAction(form.page!.html, '/password/forgot')!, issuer);
  return follow(jar, issuer, await browse(jar, action, { form: { email } }), action);
}

describe('without a mail server', () => {
  it('the development outbox lists the message with its link, which works', async () => {
    const server = await startServer({ mail: { outboxPage: true, pollMs: 50 } });
    try {
      await server.app.accounts.create({ email: 'dev@example.org', password: 'correct horse battery staple' });
      await askForReset(server.issuer, 'dev@example.org');
      let html = '';
      for (let i = 0; i < 100 && !html.includes('/password/reset?token='); i += 1) {
        html = await fetch(new URL('/dev/outbox', server.issuer)).then((r) => r.text());
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.match(html, /Reset your Latchkey password/);
      const href = html.match(/<a href="([^"]+\/password\/reset\?token=[^"]+)">/)?.[1];
      assert.ok(href, 'the link is clickable');
      const page = await fetch(href.replaceAll('&#38;', '&'));
      assert.equal(page.status, 200);
      assert.match(await page.text(), /Choose a new password/);
    } finally {
      await server.close();
    }
  });

  it('is not served outside development unless asked for', async () => {
    const server = await startServer();
    try {
      assert.equal((await fetch(new URL('/dev/outbox', server.issuer))).status, 404);
    } finally {
      await server.close();
    }
  });

  it('EMAIL=off: the sign-in page and /password/forgot say to ask the administrator; nothing is sent', async () => {
    const server = await startServer({ env: { EMAIL: 'off' } });
    try {
      const client = await server.app.registry.createClient({ name: 'App', grants: ['authorization_code'], redirectUris: ['http://127.0.0.1:9/cb'], scope: 'openid' }, async () => {});
      const jar = new CookieJar();
      const auth = new URL(`/auth?client_id=${client.clientId}&redirect_uri=${encodeURIComponent('http://127.0.0.1:9/cb')}&response_type=code&scope=openid&code_challenge=${'a'.repeat(43)}&code_challenge_method=S256`, server.issuer);
      const login = await follow(jar, server.issuer, await browse(jar, auth), auth);
      assert.ok(hiddenField(login.page!.html, '_csrf'));
      assert.match(login.page!.html, /Forgot your password\? Ask your administrator/);
      assert.doesNotMatch(login.page!.html, /href="\/password\/forgot"/);
      const forgot = await fetch(new URL('/password/forgot', server.issuer)).then((r) => r.text());
      assert.match(forgot, /Ask your administrator/);
      const posted = await fetch(new URL('/password/forgot', server.issuer), { method: 'POST', headers: { origin: server.issuer, 'content-type': 'application/x-www-form-urlencoded' }, body: 'email=a%40example.org', redirect: 'manual' });
      assert.equal(posted.status, 400);
      assert.equal(await server.app.mailQueue.pending(), 0);
    } finally {
      await server.close();
    }
  });
});
