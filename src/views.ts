import { Eta } from 'eta';
import { fileURLToPath } from 'node:url';
import type { Context } from 'koa';
import { inLanguage, translator } from './i18n/catalogue.ts';
import { LOCALE_COOKIE, LOCALES, localeOfRequest } from './i18n/locale.ts';
import { brandImageSources, brandOf, DEFAULT_ACCENT, DEFAULT_BRAND_NAME, type Brand } from './brand.ts';

const VIEWS_DIR = fileURLToPath(new URL('../views/', import.meta.url));

/** The Content-Security-Policy of our pages. `form-action` names the client's origin too, because
 * Chromium applies it to the redirect that follows a sign-in or consent post, so `'self'` alone would
 * block the way back to the client. `imageSources`: the https origins of the brand's logo and of the
 * app's logo on its sign-in and consent pages, each exactly, never a wildcard. */
export function contentSecurityPolicy(formTargets: string[] = [], imageSources: string[] = []): string {
  return [
    "default-src 'none'",
    // Our two files only (the passkey ceremonies): no inline script.
    "script-src 'self'",
    "style-src 'self'",
    `img-src 'self' data:${[...new Set(imageSources)].map((s) => ` ${s}`).join('')}`,
    `form-action 'self'${formTargets.map((t) => ` ${t}`).join('')}`,
    "frame-ancestors 'none'",
    "base-uri 'none'",
  ].join('; ');
}

/** The origin of an app's registered logo, when it is https (the registry refuses anything else). */
export function clientLogoOrigin(logo: unknown): string | undefined {
  const url = typeof logo === 'string' ? URL.parse(logo) : null;
  return url?.protocol === 'https:' ? url.origin : undefined;
}

/** What a person is told for an OAuth error code: short, actionable, no internals. */
const ERROR_HELP: Record<string, string> = {
  invalid_request: 'The application sent a request this server cannot accept. Go back to the application and try again; if it keeps happening, tell its developers.',
  invalid_client: 'The application is not registered here.',
  unauthorized_client: 'The application may not sign people in this way.',
  access_denied: 'The request was denied.',
  unsupported_response_type: 'The application asked for a kind of response this server does not give.',
  invalid_scope: 'The application asked for permissions that do not exist.',
  invalid_target: 'The application asked for access to an API that is not registered here.',
  invalid_redirect_uri: 'The application asked to return to an address that is not registered for it.',
  login_required: 'You need to sign in.',
  consent_required: 'Your consent is needed.',
  temporarily_unavailable: 'The service is temporarily unavailable. Please try again in a moment.',
  server_error: 'Something went wrong on our side. Please try again; if it keeps happening, give the request id below to the operator.',
  session_not_found: 'Your sign-in attempt expired or was started in another browser. Go back to the application and start again.',
};

/** Each language in its own name, as the switch offers it. */
const LANGUAGE_NAMES = { en: 'English', de: 'Deutsch' } as const;

/**
 * Where the switch sends the browser back to: this page when it is a GET. A refused request's query is
 * not echoed into its error page (it may name a redirect target the server just refused): its path only.
 */
function backOf(ctx: Context): string {
  if (ctx.method === 'GET') return ctx.status >= 400 ? ctx.path : ctx.originalUrl;
  // A form's answer: the sign-in step's own page, else the account page.
  return /^\/interaction\/[^/]+/.exec(ctx.path)?.[0] ?? '/account';
}

export function setLocaleCookie(ctx: Context, locale: string) {
  ctx.cookies.set(LOCALE_COOKIE, locale, { httpOnly: true, sameSite: 'lax', path: '/', maxAge: 365 * 86400 * 1000, signed: false, overwrite: true });
}

/** A same-site path to return to (never another origin: `//host` and `/\\host` are refused). */
export function safeBack(back: unknown): string {
  return typeof back === 'string' && /^\/(?![/\\])/.test(back) ? back : '/account';
}

export class Views {
  readonly #eta = new Eta({ views: VIEWS_DIR, cache: true, autoEscape: true, autoTrim: false });
  readonly brand: Brand;
  constructor(brand: Brand = brandOf({ BRAND_NAME: DEFAULT_BRAND_NAME, BRAND_ACCENT: DEFAULT_ACCENT, ISSUER: '' })) {
    this.brand = brand;
  }

  /**
   * Renders a page with the security headers that fit it, in the brand's name and colours. `clientLogo`
   * in the data (an app's https `logo_uri`) is shown by the layout and allowed, its origin only, in this
   * answer's `img-src`.
   */
  render(ctx: Context, name: string, data: Record<string, unknown>, formTargets: string[] = []) {
    const clientLogo = clientLogoOrigin(data.clientLogo);
    ctx.type = 'html';
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Content-Security-Policy', contentSecurityPolicy(formTargets, [...brandImageSources(this.brand), ...(clientLogo ? [clientLogo] : [])]));
    const { locale, byApp } = localeOfRequest(ctx);
    // The language an app asked for (ui_locales) stays this browser's for the pages that follow (/account, mail).
    if (byApp && ctx.cookies.get(LOCALE_COOKIE) !== locale) setLocaleCookie(ctx, locale);
    ctx.body = this.#eta.render(name, {
      title: this.brand.name,
      ...data,
      clientLogo: clientLogo ? data.clientLogo : undefined,
      brand: this.brand,
      lang: locale,
      t: translator(locale),
      // For a parameter inside a message that holds markup (`<strong>{app}</strong>`, printed with <%~ %>).
      e: (text: string | number | undefined) => String(text ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`),
      said: (text: unknown) => (typeof text === 'string' ? inLanguage(locale, text) : text),
      // The switch: not where the app's ui_locales decides, which would win over it.
      languages: byApp ? undefined : LOCALES.map((l) => ({ locale: l, name: LANGUAGE_NAMES[l], current: l === locale, href: `/language?to=${l}&back=${encodeURIComponent(backOf(ctx))}` })),
    });
  }

  renderError(ctx: Context, out: { error?: string; error_description?: string }) {
    const error = out.error ?? 'server_error';
    const sessionLost = /session/i.test(out.error_description ?? '') && error === 'invalid_request';
    this.render(ctx, 'error', {
      title: 'Something went wrong',
      error,
      help: ERROR_HELP[sessionLost ? 'session_not_found' : error] ?? ERROR_HELP.invalid_request,
      // oidc-provider's descriptions are written for people and hold no internals; 5xx get none.
      description: error === 'server_error' ? undefined : out.error_description,
      requestId: ctx.state.requestId,
    });
  }
}
