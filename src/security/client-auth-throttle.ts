import type { Context, Middleware } from 'koa';
import { errors } from 'oidc-provider';
import { oidcRouteOf } from '../observability/metrics.ts';
import type { Lockout } from './lockout.ts';

/**
 * Throttling of failed client authentication, per source. Client secrets are 256 random bits, so
 * counting failures per client id would protect nothing and would let anyone who knows an id lock the
 * client out. Failures (401 invalid_client) are counted per client id *and* IP, and per IP, with the
 * sign-in lockout machinery in its own namespace (app.ts): a guessing source is slowed down with
 * 429 + `Retry-After` and an RFC 6749 §5.2 body, even for a right secret, while the real client at
 * another address is untouched.
 *
 * A success does not reset a counter: a busy client's successes would otherwise wash a guesser's
 * failures away from a shared address; failures are forgotten after the counting window instead.
 */

/** oidc-provider's routes that authenticate clients (its route names, so paths and mount points do not matter). */
export const CLIENT_AUTH_ROUTES: ReadonlySet<string> = new Set(['token', 'introspection', 'revocation', 'pushed_authorization_request', 'device_authorization']);

/** Whether the request is one of oidc-provider's client-authenticating routes. */
export function authenticatesClient(ctx: Context): boolean {
  const route = oidcRouteOf(ctx);
  return route !== undefined && CLIENT_AUTH_ROUTES.has(route);
}

/** The lockout "account" of a source: the client id as presented, at the client IP. */
export function clientAuthSource(clientId: string, ip: string): string {
  return `${clientId}@${ip || 'unknown'}`;
}

interface ThrottleState {
  clientAuthId?: string;
}

/**
 * Called on every `Client.find` (provider-internals.ts): the first of a client-authenticating request is
 * its authentication. Throws 429 `invalid_client` while the client id at this IP, or the IP, is locked.
 */
export async function throttleClientAuthentication(ctx: Context, clientId: string, lockout: Lockout): Promise<void> {
  const state = ctx.state as ThrottleState | undefined;
  if (!state || state.clientAuthId !== undefined || ctx.method !== 'POST' || !authenticatesClient(ctx)) return;
  state.clientAuthId = clientId;
  const verdict = await lockout.check({ account: clientAuthSource(clientId, ctx.ip), ip: ctx.ip });
  if (verdict.allowed) return;
  ctx.set('Retry-After', String(verdict.retryAfterSeconds));
  throw Object.assign(new errors.InvalidClient('too many failed client authentication attempts; try again later', 'client authentication throttled'), {
    status: 429,
    statusCode: 429,
  });
}

/** Counts each `401 invalid_client` of a client-authenticating request against its source. */
export function countFailedClientAuthentication(lockout: Lockout): Middleware {
  return async (ctx, next) => {
    await next();
    const id = (ctx.state as ThrottleState).clientAuthId;
    if (id === undefined || ctx.status !== 401) return;
    const body = ctx.body as { error?: unknown } | undefined;
    if (body?.error === 'invalid_client') await lockout.recordFailure({ factor: 'password', account: clientAuthSource(id, ctx.ip), ip: ctx.ip });
  };
}
