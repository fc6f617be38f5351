import type Koa from 'koa';
import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC, errors } from 'oidc-provider';
import { isProviderRequest, providerRouteOf as oidcRoute } from '../observability/metrics.ts';
import { authenticatesClient } from '../security/client-auth-throttle.ts';
import type { JwtAccessTokens } from './jwt-access-tokens.ts';

/**
 * Answers rewritten where oidc-provider's own words are recognised: bends by another name. oidc-provider
 * has no error class for these cases (its errors are `InvalidRequest` with a sentence, or a detail), so an
 * answer is told apart by what it says. An upgrade that rewords one would silently undo its rewrite:
 * test/provider-internals.test.ts holds a canary for each word below, which triggers it on a real
 * oidc-provider and fails loudly when the wording changed. Listed by src/oidc/provider-internals.ts.
 */
export const UPSTREAM_WORDING = {
  /** lib/shared/client_auth.js: a client-authenticating request without any client authentication. */
  noClientAuthentication: 'no client authentication mechanism provided',
  /** lib/actions/token.js: a grant type the client is not registered for. */
  grantTypeNotAllowed: 'requested grant type is not allowed for this client',
  /** lib/actions/authorization/client.js at device authorization: `${grant type} is not allowed for this client`. */
  deviceGrantNotAllowed: /^\S+ is not allowed for this client$/,
  /** `error_detail` (lib/shared/access_token.js, lib/actions/grants/refresh_token.js): a key-bound token without its key's proof. */
  jktMismatch: 'failed jkt verification',
  /** lib/helpers/re_render_errors.js: the names of the errors `userCodeInputSource` re-renders the code entry for (device-flow.ts). */
  deviceCodeErrors: { notFound: 'NotFoundError', noCode: 'NoCodeError', expired: 'ExpiredError', alreadyUsed: 'AlreadyUsedError', aborted: 'AbortedError' },
} as const;

type ErrorBody = { error?: unknown; error_description?: unknown };

function isObject(body: unknown): body is Record<string, unknown> {
  return typeof body === 'object' && body !== null && !Buffer.isBuffer(body);
}

/** RFC 6749 §5.2: no client authentication at all is `401 invalid_client`; oidc-provider answers 400 invalid_request. */
export async function missingClientAuthIsInvalidClient(ctx: Koa.Context, next: Koa.Next) {
  await next();
  const body = ctx.body as ErrorBody | undefined;
  if (
    ctx.status === 400 &&
    authenticatesClient(ctx) &&
    body?.error === 'invalid_request' &&
    body.error_description === UPSTREAM_WORDING.noClientAuthentication
  ) {
    ctx.status = 401;
    ctx.body = { error: 'invalid_client', error_description: 'client authentication is required' };
    ctx.set('WWW-Authenticate', 'Basic realm="latchkey"');
  }
}

/** RFC 8628 §3.2 → RFC 6749 §5.2: a client without the device grant is unauthorized_client (oidc-provider: invalid_request). */
export async function deviceGrantNotAllowedIsUnauthorizedClient(ctx: Koa.Context, next: Koa.Next) {
  await next();
  if (oidcRoute(ctx) === 'device_authorization' && ctx.status === 400 && isObject(ctx.body) && UPSTREAM_WORDING.deviceGrantNotAllowed.test(String(ctx.body.error_description))) {
    ctx.body = { error: 'unauthorized_client', error_description: 'this client may not use the device authorization grant' };
  }
}

/**
 * Why an error happened, in words a developer can act on. oidc-provider keeps the reason in
 * `error_detail` (logged, not sent); its event hands us the error right after the body is set.
 */
export function clearerErrors(provider: Provider, jwts: JwtAccessTokens) {
  const details = new WeakMap<object, string>();
  const remember = (ctx: KoaContextWithOIDC, err: errors.OIDCProviderError) => {
    if (ctx && typeof err?.error_detail === 'string') details.set(ctx, err.error_detail);
  };
  provider.on('grant.error', remember);
  provider.on('userinfo.error', remember);

  return async function clearerErrorDescriptions(ctx: Koa.Context, next: Koa.Next) {
    await next();
    if (!isProviderRequest(ctx)) return;
    const route = ctx.oidc?.route;
    const body = ctx.body as ErrorBody | undefined;
    if (!route || !body || typeof body !== 'object' || typeof body.error !== 'string') return;
    const detail = details.get(ctx);
    const dpopSent = ctx.get('DPoP') !== '';

    if (route === 'token' && body.error === 'invalid_request' && body.error_description === UPSTREAM_WORDING.grantTypeNotAllowed) {
      // RFC 6749 §5.2: a grant type the client is not registered for.
      ctx.body = { error: 'unauthorized_client', error_description: `this client may not use the grant type ${String(ctx.oidc.params?.grant_type)}` };
    } else if (route === 'token' && body.error === 'invalid_grant' && detail === UPSTREAM_WORDING.jktMismatch) {
      ctx.body = { ...body, error_description: dpopSent ? 'the DPoP proof is not signed by the key this refresh token is bound to' : 'this refresh token is DPoP-bound: send a DPoP proof signed by its key' };
    } else if (route === 'userinfo' && (body.error === 'invalid_token' || body.error === 'insufficient_scope')) {
      const description = detail === UPSTREAM_WORDING.jktMismatch
        ? dpopSent ? 'the DPoP proof is not signed by the key this access token is bound to' : 'this access token is DPoP-bound: send it as Authorization: DPoP with a DPoP proof of its key'
        : (await isForAnApi(ctx, jwts))
          ? "this access token is for an API, not for userinfo: the ID token carries the signed-in person's claims"
          : undefined;
      if (description) {
        ctx.body = { ...body, error_description: description };
        // The challenge repeats the description (RFC 6750 §3); keep the two the same.
        const challenge = ctx.response.get('WWW-Authenticate');
        if (challenge && typeof body.error_description === 'string') ctx.set('WWW-Authenticate', challenge.replace(`error_description="${body.error_description}"`, `error_description="${description}"`));
      }
    }
  };
}

/** An opaque token found with an audience, or a JWT access token of ours (not stored, so not found). */
async function isForAnApi(ctx: Koa.Context & KoaContextWithOIDC, jwts: JwtAccessTokens): Promise<boolean> {
  const found = ctx.oidc.entities.AccessToken;
  if (found) return found.aud !== undefined;
  const [, value] = /^(?:Bearer|DPoP) +(\S+)$/i.exec(ctx.get('Authorization')) ?? [];
  if (!value) return false;
  return (await jwts.verify(value))?.aud !== undefined;
}
