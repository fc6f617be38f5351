import type Koa from 'koa';
import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import type { JwtAccessTokens } from './jwt-access-tokens.ts';
import type { Registry } from './registry.ts';

/**
 * Answers of oidc-provider that common client libraries stumble on, made what the RFCs and those
 * libraries expect. Each is a Koa middleware that rewrites a finished answer (no bend of oidc-provider).
 */
function oidcRoute(ctx: Koa.Context): string | undefined {
  return Object.hasOwn(ctx, 'oidc') ? (ctx as unknown as KoaContextWithOIDC).oidc?.route : undefined;
}

type ErrorBody = { error?: unknown; error_description?: unknown };

/** RFC 7009 §2.2 says only "200"; strict JSON clients (simple-oauth2) throw on an empty body. */
export async function revocationAnswersJson(ctx: Koa.Context, next: Koa.Next) {
  await next();
  if (oidcRoute(ctx) === 'revocation' && ctx.status === 200 && (ctx.body === '' || ctx.body == null)) ctx.body = {};
}

/**
 * Why an error happened, in words a developer can act on. oidc-provider keeps the reason in
 * `error_detail` (logged, not sent); its event hands us the error right after the body is set.
 */
export function clearerErrors(provider: Provider, jwts: JwtAccessTokens) {
  const details = new WeakMap<object, string>();
  for (const event of ['grant.error', 'userinfo.error']) {
    (provider as unknown as { on(e: string, l: (ctx: object, err: { error_detail?: string }) => void): void }).on(event, (ctx, err) => {
      if (ctx && typeof err?.error_detail === 'string') details.set(ctx, err.error_detail);
    });
  }

  return async function clearerErrorDescriptions(ctx: Koa.Context, next: Koa.Next) {
    await next();
    const route = oidcRoute(ctx);
    const body = ctx.body as ErrorBody | undefined;
    if (!route || !body || typeof body !== 'object' || typeof body.error !== 'string') return;
    const detail = details.get(ctx);
    const dpopSent = ctx.get('DPoP') !== '';

    if (route === 'token' && body.error === 'invalid_request' && body.error_description === 'requested grant type is not allowed for this client') {
      // RFC 6749 §5.2: a grant type the client is not registered for.
      ctx.body = { error: 'unauthorized_client', error_description: `this client may not use the grant type ${String((ctx as unknown as KoaContextWithOIDC).oidc.params?.grant_type)}` };
    } else if (route === 'token' && body.error === 'invalid_grant' && detail === 'failed jkt verification') {
      ctx.body = { ...body, error_description: dpopSent ? 'the DPoP proof is not signed by the key this refresh token is bound to' : 'this refresh token is DPoP-bound: send a DPoP proof signed by its key' };
    } else if (route === 'userinfo' && (body.error === 'invalid_token' || body.error === 'insufficient_scope')) {
      const description = detail === 'failed jkt verification'
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
async function isForAnApi(ctx: Koa.Context, jwts: JwtAccessTokens): Promise<boolean> {
  const found = (ctx as unknown as KoaContextWithOIDC).oidc.entities.AccessToken;
  if (found) return found.aud !== undefined;
  const [, value] = /^(?:Bearer|DPoP) +(\S+)$/i.exec(ctx.get('Authorization')) ?? [];
  if (!value) return false;
  return (await jwts.verify(value))?.aud !== undefined;
}
/**
 * Discovery lists the API scopes (except those of an API created with `--private-scopes`), so clients
 * that check `scopes_supported` before asking (oidc-agent, some SDKs) find them.
 */
export function discoveryListsApiScopes(registry: Registry) {
  return async function apiScopesInDiscovery(ctx: Koa.Context, next: Koa.Next) {
    await next();
    const body = ctx.body as { scopes_supported?: unknown } | undefined;
    if (oidcRoute(ctx) !== 'discovery' || ctx.status !== 200 || !Array.isArray(body?.scopes_supported)) return;
    const apis = await registry.listResources();
    const apiScopes = apis.filter((api) => !api.privateScopes).flatMap((api) => api.scopes);
    body.scopes_supported = [...new Set([...body.scopes_supported, ...apiScopes])];
  };
}
