import type Koa from 'koa';
import { RateLimiterRes } from 'rate-limiter-flexible';
import { isProviderRequest, oidcRouteOf } from '../observability/metrics.ts';
import { createLimiter } from '../storage/limiters.ts';
import type { Store } from '../storage/store.ts';

/**
 * Introspection answers whether any token is active, so an API credential could ask about token after
 * made-up token. Answers `active: false` are counted per authenticated client (the API's credential),
 * `perMinute` a minute, in Redis (or memory with the embedded store) like the lockouts; past that, such
 * answers become 429 with `Retry-After` and an RFC 6749 §5.2 body until the minute is over.
 *
 * An API's real traffic is never slowed: an `active: true` answer is never counted and never refused, so
 * the limit is applied to the finished answer, after the lookup. The first refusal of a credential in a
 * minute is reported (`onThrottled`: the audit event), the others only answered.
 */
export interface IntrospectionThrottled {
  clientId: string;
  retryAfterSeconds: number;
  requestId?: string;
}

export function limitInactiveIntrospections(store: Store, perMinute: number, onThrottled: (event: IntrospectionThrottled) => void = () => {}): Koa.Middleware {
  const limiter = createLimiter(store, { keyPrefix: 'lk:introspection-inactive', points: perMinute, duration: 60 });

  return async function inactiveIntrospectionLimit(ctx, next) {
    await next();
    if (oidcRouteOf(ctx) !== 'introspection' || ctx.status !== 200 || (ctx.body as { active?: unknown } | undefined)?.active !== false) return;
    const clientId = isProviderRequest(ctx) ? ctx.oidc.client?.clientId : undefined;
    if (!clientId) return;
    try {
      await limiter.consume(clientId);
    } catch (err) {
      // Storage trouble leaves the (inactive) answer as it is: this limit never turns into an outage of its own.
      if (!(err instanceof RateLimiterRes)) return;
      const seconds = Math.max(1, Math.ceil(err.msBeforeNext / 1000));
      ctx.status = 429;
      ctx.set('Retry-After', String(seconds));
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { error: 'invalid_request', error_description: `too many introspections of inactive tokens by this client; try again in ${seconds} s` };
      if (err.consumedPoints === perMinute + 1) onThrottled({ clientId, retryAfterSeconds: seconds, requestId: (ctx.state as { requestId?: string }).requestId });
    }
  };
}
