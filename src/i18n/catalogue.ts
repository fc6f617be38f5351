import { de } from './de.ts';
import { en, type Catalogue, type MessageKey } from './en.ts';
import { formatMessage, type MessageParams } from './format.ts';
import type { Locale } from './locale.ts';

export const CATALOGUES: Record<Locale, Catalogue> = { en, de };

/** The words of a page or mail in `locale`. */
export type Translate = (key: MessageKey, params?: MessageParams) => string;

export function translator(locale: Locale): Translate {
  return (key, params) => formatMessage(locale, CATALOGUES[locale][key], params);
}

/** A `said.` message as a pattern over its English text, so a sentence the code made (with its parameters) is recognised. */
const SAID = (Object.keys(en) as MessageKey[])
  .filter((key) => key.startsWith('said.'))
  .map((key) => {
    const names: string[] = [];
    const source = en[key].replace(/\{(\w+)\}|[.*+?^$()|[\]\\]/g, (m, name?: string) => {
      if (!name) return `\\${m}`;
      names.push(name);
      return '(.+?)';
    });
    return { key, names, pattern: new RegExp(`^${source}$`, 's'), literal: en[key].replace(/\{\w+\}/g, '').length };
  })
  // The most specific first: `Link expired` is itself, not `Link {provider}` with "expired" for a name.
  .sort((a, b) => b.literal - a.literal);

/**
 * A sentence the code said in English (an error, a notice, a title: the `said.` messages, which tests and
 * logs read in English), in `locale`; anything else as it is (an operator's API description, a name).
 */
export function inLanguage(locale: Locale, text: string): string {
  if (locale === 'en') return text;
  for (const { key, names, pattern } of SAID) {
    const match = pattern.exec(text);
    // A parameter may be a said sentence too (`for 30 minutes`, a password rule's reason): it is translated as well.
    if (match) return formatMessage(locale, CATALOGUES[locale][key], Object.fromEntries(names.map((n, i) => [n, inLanguage(locale, match[i + 1] ?? '')])));
  }
  return text;
}

/** A day (`15 March 2026` / `15. März 2026`), in UTC like the server's clock. */
export function formatDay(locale: Locale, epochMs: number): string {
  return new Intl.DateTimeFormat(locale === 'en' ? 'en-GB' : locale, { dateStyle: 'long', timeZone: 'UTC' }).format(epochMs);
}

/** A moment (`15 March 2026, 14:05 UTC`). */
export function formatMoment(locale: Locale, epochMs: number): string {
  return new Intl.DateTimeFormat(locale === 'en' ? 'en-GB' : locale, { dateStyle: 'long', timeStyle: 'short', timeZone: 'UTC' }).format(epochMs) + ' UTC';
}
