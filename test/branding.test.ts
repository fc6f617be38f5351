import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { contrastRatio, DEFAULT_ACCENT } from '../src/brand.ts';
import { ConfigError, loadConfig } from '../src/config.ts';
import { browse, CookieJar, follow, pkcePair } from './helpers/flow.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { startSmtpCatcher, type SmtpCatcher } from './helpers/smtp.ts';

/**
 * Branding (BRAND_NAME, BRAND_ACCENT, BRAND_LOGO) on pages, in the CSP and in mail, and an app's
 * registered https logo_uri on its sign-in page, allowed by that answer's CSP only.
 */
const problemsOf = (env: Record<string, string>): string[] => {
  try {
    loadConfig(env);
    return [];
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.problems;
  }
};
const dir = mkdtempSync(join(tmpdir(), 'latchkey-brand-'));
const file = (name: string, content: string | Buffer) => {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
};
const SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><rect width="10" height="10" fill="#0a7"/></svg>';

describe('branding settings', () => {
  it('refuses an accent that is not #rrggbb', () => {
    assert.match(problemsOf({ BRAND_ACCENT: 'blue' }).join('\n'), /BRAND_ACCENT: must be a colour written #rrggbb/);
    assert.match(problemsOf({ BRAND_ACCENT: '#12345' }).join('\n'), /BRAND_ACCENT/);
  });

  it('refuses an accent on which neither white nor dark text is readable, saying the ratios', () => {
    const [problem] = problemsOf({ BRAND_ACCENT: '#7a7a7a' });
    assert.match(problem!, /^BRAND_ACCENT: text on it would not be readable: white has a contrast of 4\.\d\d:1 and dark text 4\.\d\d:1, WCAG AA needs 4\.5:1/);
  });

  it('the accent as text on dark pages: the accent where it reads there, else a lighter tint of it that does (WCAG AA)', async () => {
    const { brandOf } = await import('../src/brand.ts');
    for (const accent of ['#2f5bd3', '#0b6e4f', '#000080', '#b3261e', '#ffcc00', '#7c3aed']) {
      const brand = brandOf(loadConfig({ BRAND_ACCENT: accent }));
      for (const canvas of ['#121212', '#1c1b22']) assert.ok(contrastRatio(brand.accentInkDark, canvas) >= 4.5, `${accent} → ${brand.accentInkDark} on ${canvas}`);
    }
    // The default blue was 3.2:1 on Chromium's dark Canvas; a light accent that reads already stays itself.
    assert.ok(contrastRatio(DEFAULT_ACCENT, '#121212') < 4.5);
    assert.notEqual(brandOf(loadConfig({})).accentInkDark, DEFAULT_ACCENT);
    assert.equal(brandOf(loadConfig({ BRAND_ACCENT: '#ffcc00' })).accentInkDark, '#ffcc00');
    // style.css's own dark value is the default accent's.
    const css = readFileSync(new URL('../views/style.css', import.meta.url), 'utf8');
    assert.match(css, new RegExp(`@media \\(prefers-color-scheme: dark\\) \\{ :root \\{ --accent-ink: ${brandOf(loadConfig({})).accentInkDark};`));
  });

  it('takes a light accent with dark text on it, and a darker shade of it for links', async () => {
    const { brandOf } = await import('../src/brand.ts');
    const brand = brandOf(loadConfig({ BRAND_ACCENT: '#FFCC00' }));
    assert.equal(brand.accent, '#ffcc00');
    assert.equal(brand.onAccent, '#1b1b1f');
    assert.ok(contrastRatio(brand.accentInk, '#ffffff') >= 4.5, `${brand.accentInk} reads on white`);
    assert.equal(brandOf(loadConfig({})).onAccent, '#ffffff', 'the default blue keeps white text');
  });

  it('refuses an http logo, a logo file of another type or too large, and one that cannot be read', () => {
    assert.match(problemsOf({ BRAND_LOGO: 'http://cdn.example/logo.png' }).join('\n'), /BRAND_LOGO: must be an https:\/\/ URL/);
    assert.match(problemsOf({ BRAND_LOGO: file('logo.gif', 'GIF89a') }).join('\n'), /BRAND_LOGO: must be an https:\/\/ URL, or a file ending in \.png, \.svg or \.webp/);
    assert.match(problemsOf({ BRAND_LOGO: file('fake.png', SVG) }).join('\n'), /BRAND_LOGO: is not a PNG file/);
    assert.match(problemsOf({ BRAND_LOGO: file('big.svg', `${SVG}${' '.repeat(300 * 1024)}`) }).join('\n'), /BRAND_LOGO: is a file of \d+ bytes: at most 262144/);
    assert.match(problemsOf({ BRAND_LOGO: join(dir, 'missing.svg') }).join('\n'), /BRAND_LOGO: names a file that cannot be read/);
    assert.deepEqual(problemsOf({ BRAND_LOGO: 'https://cdn.example/logo.png', BRAND_NAME: 'Acme Accounts', BRAND_ACCENT: '#0b6e4f' }), []);
  });

  it('refuses a name with a line break (it goes into mail headers)', () => {
    assert.match(problemsOf({ BRAND_NAME: 'Acme\nBcc: x@example.org' }).join('\n'), /BRAND_NAME: must be plain text on one line/);
  });
});

describe('a branded server', () => {
  let redis: TestRedis;
  let smtp: SmtpCatcher;
  let server: TestServer;
  let clientId: string;
  const redirectUri = 'http://127.0.0.1:9/cb';

  before(async () => {
    redis = await startRedis();
    smtp = await startSmtpCatcher();
    server = await startServer({
      redisUrl: redis.url,
      env: { SMTP_URL: smtp.url, BRAND_NAME: 'Acme Accounts', BRAND_ACCENT: '#0B6E4F', BRAND_LOGO: 'https://cdn.acme.example/brand/logo.svg' },
      mail: { pollMs: 50 },
    });
    const app = await server.app.registry.createClient(
      { name: 'Acme Notes', grants: ['authorization_code'], redirectUris: [redirectUri], scope: 'openid email', logoUri: 'https://notes.example/static/logo.png' },
      async () => {},
    );
    clientId = app.clientId;
  });
  after(async () => {
    await server?.close();
    await smtp?.stop();
    await redis?.dispose();
  });

  const signInPage = async (client: string) => {
    const jar = new CookieJar();
    const url = new URL('/auth', server.issuer);
    url.search = new URLSearchParams({ client_id: client, response_type: 'code', redirect_uri: redirectUri, scope: 'openid email', code_challenge: pkcePair().challenge, code_challenge_method: 'S256' }).toString();
    const { page, leftTo } = await follow(jar, server.issuer, await browse(jar, url), url);
    assert.ok(page, `a page, not a redirect to ${leftTo?.href}`);
    return page;
  };
  const imgSrc = (csp: string | null) => csp?.split('; ').find((d) => d.startsWith('img-src '));

  it("shows the product name, the logo and the app's name and logo on the sign-in page; the CSP allows exactly those two origins", async () => {
    const page = await signInPage(clientId);
    assert.equal(page.status, 200);
    assert.match(page.html, /<title>Sign in · Acme Accounts<\/title>/);
    assert.match(page.html, /<p class="brand"><img class="logo" src="https:\/\/cdn\.acme\.example\/brand\/logo\.svg" alt="" height="28">Acme Accounts<\/p>/);
    assert.match(page.html, /<img class="client-logo" src="https:\/\/notes\.example\/static\/logo\.png"/);
    assert.match(page.html, /to continue to <strong>Acme Notes<\/strong>/);
    assert.doesNotMatch(page.html, /Latchkey/);
    assert.equal(imgSrc(page.headers.get('content-security-policy')), "img-src 'self' data: https://cdn.acme.example https://notes.example");
  });

  it("gives other pages the brand's logo origin only", async () => {
    const res = await fetch(new URL('/password/forgot', server.issuer));
    assert.match(await res.text(), /· Acme Accounts<\/title>/);
    assert.equal(imgSrc(res.headers.get('content-security-policy')), "img-src 'self' data: https://cdn.acme.example");
    const json = await fetch(new URL('/.well-known/openid-configuration', server.issuer));
    assert.equal(imgSrc(json.headers.get('content-security-policy')), "img-src 'self' data: https://cdn.acme.example");
  });

  it("serves the accent in the stylesheet, white text on it when it reads, and a lighter ink for the dark scheme", async () => {
    const css = await (await fetch(new URL('/static/style.css', server.issuer))).text();
    const dark = /@media \(prefers-color-scheme: dark\) \{ :root \{ --accent-ink: (#[0-9a-f]{6}); \} \}\s*$/.exec(css);
    assert.ok(dark, 'the dark ink comes last, after the light one it replaces');
    assert.match(css, /:root \{ --accent: #0b6e4f; --on-accent: #ffffff; --accent-ink: #0b6e4f; \}\n@media/);
    assert.ok(contrastRatio('#0b6e4f', '#121212') < 4.5, 'the accent itself does not read on a dark page');
    assert.ok(contrastRatio(dark[1]!, '#121212') >= 4.5 && contrastRatio(dark[1]!, '#1c1b22') >= 4.5, `${dark[1]} reads on the dark scheme`);
  });

  it('refuses an http logo_uri at registration, and no logo means no image and no extra origin', async () => {
    await assert.rejects(
      server.app.registry.createClient({ name: 'Plain', grants: ['authorization_code'], redirectUris: [redirectUri], scope: 'openid', logoUri: 'http://plain.example/logo.png' }, async () => {}),
      (err: Error & { code?: string; field?: string }) => err.code === 'logo_uri_https' && err.field === 'logo_uri',
    );
    const plain = await server.app.registry.createClient({ name: 'Plain', grants: ['authorization_code'], redirectUris: [redirectUri], scope: 'openid email' }, async () => {});
    const page = await signInPage(plain.clientId);
    assert.doesNotMatch(page.html, /client-logo/);
    assert.equal(imgSrc(page.headers.get('content-security-policy')), "img-src 'self' data: https://cdn.acme.example");
  });

  it('writes mail in the product name, colour and logo (caught over real SMTP)', async () => {
    const email = 'mia@example.org';
    await server.app.accounts.create({ email, password: 'correct horse battery staple' });
    const res = await fetch(new URL('/password/forgot', server.issuer), { method: 'POST', headers: { origin: server.issuer, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ email }) });
    assert.equal(res.status, 200);
    const mail = await smtp.waitFor(email, /Reset your/);
    assert.equal(mail.subject, 'Reset your Acme Accounts password');
    assert.equal(mail.from?.value[0]?.name, 'Acme Accounts');
    assert.match(mail.text ?? '', /— Acme Accounts$/);
    assert.doesNotMatch(`${mail.text}${mail.html}`, /Latchkey/);
    assert.match(String(mail.html), /<img src="https:\/\/cdn\.acme\.example\/brand\/logo\.svg" alt=""/);
    assert.match(String(mail.html), /background:#0b6e4f;color:#ffffff/);
  });
});

describe('a logo file', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ env: { BRAND_LOGO: file('acme.svg', SVG), BRAND_ACCENT: '#ffcc00' } });
  });
  after(() => server?.close());

  it('is served at /static/logo as an image only, and the pages need no other image origin', async () => {
    const page = await fetch(new URL('/password/forgot', server.issuer));
    const html = await page.text();
    const src = html.match(/<img class="logo" src="([^"]+)"/)?.[1];
    assert.match(src!, /^\/static\/logo\?v=[0-9a-f]{12}$/);
    assert.match(page.headers.get('content-security-policy')!, /img-src 'self' data:;/);
    const logo = await fetch(new URL(src!, server.issuer));
    assert.equal(logo.status, 200);
    assert.equal(logo.headers.get('content-type'), 'image/svg+xml');
    assert.equal(logo.headers.get('content-security-policy'), "default-src 'none'; style-src 'unsafe-inline'; sandbox");
    assert.equal(logo.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(await logo.text(), SVG);
  });

  it('puts dark text on a light accent', async () => {
    const css = await (await fetch(new URL('/static/style.css', server.issuer))).text();
    assert.match(css, /--accent: #ffcc00; --on-accent: #1b1b1f; --accent-ink: #[0-9a-f]{6};/);
  });
});
