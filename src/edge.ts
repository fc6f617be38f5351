import type Router from '@koa/router';
import type { Middleware as KoaMiddleware } from 'koa';
import type Provider from 'oidc-provider';

/** A Koa middleware, or a router's `routes()`. */
type Middleware = KoaMiddleware | ReturnType<Router['routes']>;

/**
 * One entry of the HTTP edge: a middleware or router in front of oidc-provider's own routes. The edge is
 * one ordered table (src/app.ts `createApp`), so what guards an endpoint — and in which order — is read
 * off one list, and a reordering is a visible change (test/edge.test.ts, docs/architecture.md).
 */
export interface EdgeEntry {
  /** Stable name; the test and the architecture page list the entries by it, in order. */
  name: string;
  /** What it guards, limits or rewrites, with the settings that tune it: one line. */
  does: string;
  /** The oidc-provider routes (route names) it acts on, when it acts on some only. */
  oidcRoutes?: ReadonlySet<string>;
  /** Unset when this configuration leaves it out (health on METRICS_PORT, the demo outside development). */
  middleware: Middleware | undefined;
}

/**
 * Installs the table in its order. oidc-provider's `use` puts each in front of its own router, so the first
 * entry meets a request first, and its code after `await next()` runs last.
 */
export function installEdge(provider: Provider, edge: readonly EdgeEntry[]): void {
  for (const entry of edge) if (entry.middleware) provider.use(entry.middleware as KoaMiddleware);
}
