import { Eta } from 'eta';
import { fileURLToPath } from 'node:url';
import type { Context } from 'koa';
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
    ctx.body = this.#eta.render(name, { title: this.brand.name, ...data, clientLogo: clientLogo ? data.clientLogo : undefined, brand: this.brand });
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
