import type { Context } from 'koa';

/** The languages of the pages people see and the mail they get; English is the fallback. */
export const LOCALES = ['en', 'de'] as const;
export type Locale = (typeof LOCALES)[number];
export const DEFAULT_LOCALE: Locale = 'en';

/** The cookie the language switch sets (a preference, not a secret). */
export const LOCALE_COOKIE = 'lk_lang';

/** One of ours for a BCP 47 tag: `de-CH` → `de`; anything else undefined. */
export function supportedLocale(tag: unknown): Locale | undefined {
  if (typeof tag !== 'string') return undefined;
  const primary = tag.trim().toLowerCase().split(/[-_]/)[0] ?? '';
  return (LOCALES as readonly string[]).includes(primary) ? (primary as Locale) : undefined;
}

/** Accept-Language (RFC 9110 §12.5.4): the supported language of the highest q, the header's order breaking ties; q=0 is "not this". */
export function fromAcceptLanguage(header: string | undefined): Locale | undefined {
  if (!header) return undefined;
  const ranked = header
    .split(',')
    .map((part, index) => {
      const [tag, ...attributes] = part.trim().split(';');
      const q = attributes.map((a) => /^\s*q\s*=\s*([\d.]+)\s*$/.exec(a)).find(Boolean);
      const weight = q ? Number(q[1]) : 1;
      return { locale: supportedLocale(tag), weight: Number.isFinite(weight) ? weight : 0, index };
    })
    .filter((r) => r.locale !== undefined && r.weight > 0)
    .sort((a, b) => b.weight - a.weight || a.index - b.index);
  return ranked[0]?.locale;
}

/** `ui_locales` (OIDC Core §3.1.2.1): space-separated tags in order of preference; the first we have. */
export function fromUiLocales(uiLocales: unknown): Locale | undefined {
  if (typeof uiLocales !== 'string') return undefined;
  for (const tag of uiLocales.split(' ')) {
    const locale = supportedLocale(tag);
    if (locale) return locale;
  }
  return undefined;
}

export interface LocaleHints {
  /** The authorization request's `ui_locales`, on its sign-in pages. */
  uiLocales?: unknown;
  /** The language switch's cookie. */
  cookie?: unknown;
  /** The language stored on the signed-in person's account (their last pick or sign-in). */
  account?: unknown;
  acceptLanguage?: string;
}

/** The page's language, and whether the app's `ui_locales` decided it (the switch is not offered then). */
export function negotiateLocale(hints: LocaleHints): { locale: Locale; byApp: boolean } {
  const byApp = fromUiLocales(hints.uiLocales);
  if (byApp) return { locale: byApp, byApp: true };
  const locale = supportedLocale(hints.cookie) ?? supportedLocale(hints.account) ?? fromAcceptLanguage(hints.acceptLanguage) ?? DEFAULT_LOCALE;
  return { locale, byApp: false };
}

/** This request's language: what the routes learned (ctx.state.uiLocales, ctx.state.accountLocale), the cookie, the header. */
export function localeOfRequest(ctx: Context): { locale: Locale; byApp: boolean } {
  return negotiateLocale({
    uiLocales: ctx.state.uiLocales,
    cookie: ctx.cookies.get(LOCALE_COOKIE),
    account: ctx.state.accountLocale,
    acceptLanguage: ctx.get('Accept-Language') || undefined,
  });
}
