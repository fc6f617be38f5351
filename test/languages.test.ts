import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { signIn } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { useWorld, type World } from './helpers/world.ts';

/** The people's pages in the language the app (ui_locales), the switch or the browser asks for. */
let server: TestServer;
let world: World;

useWorld({}, (setup) => ({ server, world } = setup));

const errorOf = (html: string) => html.match(/<p class="error"[^>]*>([^<]*)<\/p>/)?.[1];

describe('languages', () => {
  it('shows the sign-in page in German for ui_locales=de-CH, <html lang="de">, and its errors in German', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid', params: { ui_locales: 'de-CH en' } });
    const html = flow.page!.html;
    assert.match(html, /<html lang="de">/);
    assert.match(html, /<h1>Anmelden<\/h1>/);
    assert.match(html, /<label for="password">Passwort<\/label>/);
    assert.doesNotMatch(html, /class="languages"/, 'the app decided: no switch that would not win');
    const wrong = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid', user: { email: world.user.email, password: 'not it' }, params: { ui_locales: 'de' } });
    assert.equal(errorOf(wrong.page!.html), 'E-Mail-Adresse oder Passwort ist falsch.');
  });

  it('follows Accept-Language without ui_locales, and English stays the fallback, with the switch offered', async () => {
    const german = await fetch(new URL('/no-such-page', server.issuer), { headers: { accept: 'text/html', 'accept-language': 'fr;q=1, de-AT;q=0.8, en;q=0.5' } });
    const gHtml = await german.text();
    assert.equal(german.status, 404);
    assert.match(gHtml, /<html lang="de">/);
    assert.match(gHtml, /Seite nicht gefunden/);
    const other = await fetch(new URL('/no-such-page', server.issuer), { headers: { accept: 'text/html', 'accept-language': 'ja' } });
    const oHtml = await other.text();
    assert.match(oHtml, /<html lang="en">/);
    assert.match(oHtml, /Page not found/);
    assert.match(oHtml, /<a href="\/language\?to=de&amp;back=%2Fno-such-page" lang="de" hreflang="de">Deutsch<\/a>/);
  });

  it('the switch keeps the pick in a cookie that wins over Accept-Language, and goes back to this site only', async () => {
    const picked = await fetch(new URL('/language?to=de&back=%2Faccount', server.issuer), { redirect: 'manual' });
    assert.equal(picked.status, 303);
    assert.equal(new URL(picked.headers.get('location')!, server.issuer).pathname, '/account');
    const cookie = picked.headers.getSetCookie().find((c) => c.startsWith('lk_lang='))!;
    assert.match(cookie, /lk_lang=de;.*samesite=lax/i);
    const page = await fetch(new URL('/nothing', server.issuer), { headers: { accept: 'text/html', 'accept-language': 'en', cookie: cookie.split(';')[0]! } });
    assert.match(await page.text(), /<html lang="de">/);
    for (const back of ['//evil.example/x', 'https://evil.example/', '/\\evil.example']) {
      const away = await fetch(new URL(`/language?to=de&back=${encodeURIComponent(back)}`, server.issuer), { redirect: 'manual' });
      assert.equal(new URL(away.headers.get('location')!, server.issuer).origin, new URL(server.issuer).origin, back);
    }
  });
});
