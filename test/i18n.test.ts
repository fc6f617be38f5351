import { test } from 'node:test';
import assert from 'node:assert/strict';
import { en } from '../src/i18n/en.ts';
import { de } from '../src/i18n/de.ts';
import { CATALOGUES, inLanguage } from '../src/i18n/catalogue.ts';
import { formatMessage, placeholdersOf } from '../src/i18n/format.ts';
import { fromAcceptLanguage, negotiateLocale } from '../src/i18n/locale.ts';
import { MESSAGES } from '../src/signin/messages.ts';
import { browserInWords, factorsInWords } from '../src/accounts/sessions.ts';
import { readdirSync, readFileSync } from 'node:fs';

test('every language has exactly the English keys, each with the same placeholders and valid plurals', () => {
  for (const [locale, catalogue] of Object.entries(CATALOGUES)) {
    assert.deepEqual(Object.keys(catalogue).sort(), Object.keys(en).sort(), `${locale}: missing or extra keys`);
    for (const [key, english] of Object.entries(en)) {
      const translated = catalogue[key as keyof typeof en];
      assert.ok(translated.trim(), `${locale} ${key} is empty`);
      assert.deepEqual(placeholdersOf(translated), placeholdersOf(english), `${locale} ${key}: placeholders differ`);
      assert.doesNotThrow(() => formatMessage(locale, translated, { count: 2, minutes: 2 }), `${locale} ${key} does not parse`);
    }
  }
  // German is a real translation, not a copy: only names and the few words both languages share stay equal.
  const same = Object.keys(en).filter((k) => en[k as keyof typeof en] === de[k as keyof typeof en] && !/\{/.test(en[k as keyof typeof en]));
  assert.ok(same.length <= 6, `untranslated: ${same.join(', ')}`);
});

test('messages take parameters and plural forms by the language’s rules', () => {
  assert.equal(formatMessage('en', en['mail.minutes'], { count: 1 }), '1 minute');
  assert.equal(formatMessage('en', en['mail.minutes'], { count: 30 }), '30 minutes');
  assert.equal(formatMessage('de', de['mail.days'], { count: 1 }), '1 Tag');
  assert.equal(formatMessage('de', de['mail.days'], { count: 7 }), '7 Tage');
  assert.equal(formatMessage('de', de['upstream.continueWith'], { provider: 'GitHub' }), 'Weiter mit GitHub');
});

test('a sentence the code says in English is shown in the page’s language, with its parameters; other text as it is', () => {
  assert.equal(inLanguage('de', MESSAGES.wrongPassword), 'E-Mail-Adresse oder Passwort ist falsch.');
  assert.equal(inLanguage('de', 'Your passkey “Work laptop” was added.'), 'Ihr Passkey „Work laptop“ wurde hinzugefügt.');
  assert.equal(inLanguage('en', MESSAGES.wrongPassword), 'Wrong email or password.');
  assert.equal(inLanguage('de', 'Read the reports'), 'Read the reports');
});

test('the language: ui_locales, then the switch’s cookie, then the account’s, then Accept-Language by q-value, else English', () => {
  assert.deepEqual(negotiateLocale({ uiLocales: 'fr-CA de en', cookie: 'en', acceptLanguage: 'en' }), { locale: 'de', byApp: true });
  assert.deepEqual(negotiateLocale({ uiLocales: 'fr ja', cookie: 'de', acceptLanguage: 'en' }), { locale: 'de', byApp: false });
  assert.deepEqual(negotiateLocale({ cookie: 'xx', account: 'de', acceptLanguage: 'en' }), { locale: 'de', byApp: false });
  assert.equal(negotiateLocale({ acceptLanguage: 'de-CH, en;q=0.5' }).locale, 'de');
  assert.equal(negotiateLocale({ acceptLanguage: 'fr, en;q=0.3, de;q=0.8' }).locale, 'de');
  assert.equal(negotiateLocale({ acceptLanguage: 'de;q=0, en;q=0.1' }).locale, 'en');
  assert.equal(negotiateLocale({ acceptLanguage: 'fr, ja' }).locale, 'en');
  assert.equal(negotiateLocale({}).locale, 'en');
  assert.equal(fromAcceptLanguage('en-US;q=0.9, de-AT'), 'de');
  assert.equal(fromAcceptLanguage('*;q=1, garbage;;q=x'), undefined);
});

/** The operator's pages (the console, the first-admin link) and development-only pages stay English. */
const ENGLISH_ONLY_VIEWS = new Set(['demo.eta', 'outbox.eta', 'setup.eta']);

test('every people’s page takes its words from the catalogue: no English text in a template, and every key it names exists', () => {
  const dir = new URL('../views/', import.meta.url);
  const namespaces = new Set(Object.keys(en).map((k) => k.slice(0, k.indexOf('.'))));
  const views = readdirSync(dir).filter((f) => f.endsWith('.eta') && !ENGLISH_ONLY_VIEWS.has(f));
  assert.ok(views.length > 25, `${views.length} views`);
  for (const file of views) {
    const source = readFileSync(new URL(file, dir), 'utf8');
    for (const [, key] of source.matchAll(/'([a-zA-Z]+\.[\w.-]+)'/g)) {
      if (namespaces.has(key!.slice(0, key!.indexOf('.')))) assert.ok(key! in en, `${file}: no message ${key}`);
    }
    const text = source.replace(/<%[\s\S]*?%>/g, ' ');
    const words = text.replace(/<[^>]*>/g, ' ').replace(/&\w+;/g, ' ').match(/[A-Za-z]{2,}/g) ?? [];
    assert.deepEqual(words, [], `${file}: text outside the catalogue`);
    const attributes = [...text.matchAll(/\b(?:aria-label|alt|title|placeholder)="([^"]*)"/g)].map((m) => m[1]!).filter((v) => /[a-z]{2,}/.test(v));
    assert.deepEqual(attributes, [], `${file}: an attribute outside the catalogue`);
  }
});

test('a said sentence is matched by its most specific message, and a parameter that is one is translated too', () => {
  assert.equal(inLanguage('de', 'Link expired'), 'Link abgelaufen');
  assert.equal(inLanguage('de', 'Link GitHub'), 'GitHub verknüpfen');
  assert.equal(inLanguage('de', 'The new password is not accepted: the password needs at least 8 characters.'), 'Das neue Passwort wird nicht akzeptiert: das Passwort braucht mindestens 8 Zeichen.');
  assert.equal(inLanguage('de', 'Linking GitHub did not complete (cancelled there).'), 'Das Verknüpfen von GitHub wurde nicht abgeschlossen (dort abgebrochen).');
  // No said message is all parameter: it would take any text for itself.
  for (const [key, text] of Object.entries(en)) if (key.startsWith('said.')) assert.match(text.replace(/\{\w+\}/g, ''), /\p{L}/u, key);
});

test('where you’re signed in: factors and browsers in the page’s language, English as the page always said it', () => {
  assert.equal(factorsInWords(['pwd', 'otp', 'mfa']), 'password and authenticator app');
  assert.equal(factorsInWords(['pwd', 'otp', 'hwk']), 'password, authenticator app and passkey');
  assert.equal(factorsInWords([]), 'unknown');
  assert.equal(factorsInWords(['pwd', 'otp'], 'de'), 'Passwort und Authenticator-App');
  assert.equal(factorsInWords(['hwk', 'user'], 'de'), 'Passkey');
  assert.equal(browserInWords('Firefox 121 on macOS'), 'Firefox 121 on macOS');
  assert.equal(browserInWords('Firefox 121 on macOS', 'de'), 'Firefox 121 unter macOS');
  assert.equal(browserInWords('unknown browser', 'de'), 'unbekannter Browser');
  assert.equal(browserInWords(undefined), 'Unknown browser');
  assert.equal(browserInWords(undefined, 'de'), 'Unbekannter Browser');
});
