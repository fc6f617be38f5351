import type { Middleware } from 'koa';
import Provider, { errors } from 'oidc-provider';
import type { Lockout } from './lockout.ts';

/**
 * Brute-force protection for client authentication at /token, /token/introspection and
 * /token/revocation: failed authentications (401 invalid_client) are counted per client id and per
 * client IP with the sign-in lockout machinery (its own namespace, see app.ts); while either is over
 * the limit the endpoint answers 429 with `Retry-After` and an RFC 6749 §5.2 body, before any
 * secret is checked — so a stolen client id cannot be brute-forced, even slowly across nodes.
 *
 * The client id is taken where oidc-provider itself takes it: its first `Client.find` of the request
 * is client authentication (Basic header or `client_id` in the body, which only oidc-provider parses).
 * A success does not reset a client's counter: a busy client's successes would otherwise wash an
 * attacker's failures away; failures are forgotten after the counting window instead.
 */
export const CLIENT_AUTH_PATHS = new Set(['/token', '/token/introspection', '/token/revocation']);

interface ThrottleState {
  clientAuthId?: string;
}

export function installClientAuthThrottle(provider: Provider, lockout: Lockout): Middleware {
  const find = provider.Client.find.bind(provider.Client);
  provider.Client.find = async (id: string) => {
    const ctx = Provider.ctx;
    const state = ctx?.state as ThrottleState | undefined;
    if (ctx && state && ctx.method === 'POST' && CLIENT_AUTH_PATHS.has(ctx.path) && state.clientAuthId === undefined) {
      state.clientAuthId = id;
      const verdict = await lockout.check({ account: id, ip: ctx.ip });
      if (!verdict.allowed) {
        ctx.set('Retry-After', String(verdict.retryAfterSeconds));
        throw Object.assign(new errors.InvalidClient('too many failed client authentication attempts; try again later', 'client authentication throttled'), {
          status: 429,
          statusCode: 429,
        });
      }
    }
    return find(id);
  };

  return async (ctx, next) => {
    await next();
    const id = (ctx.state as ThrottleState).clientAuthId;
    if (id === undefined || ctx.status !== 401) return;
    const body = ctx.body as { error?: unknown } | undefined;
    if (body?.error === 'invalid_client') await lockout.recordFailure({ factor: 'password', account: id, ip: ctx.ip });
  };
}
