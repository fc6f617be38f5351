import type Router from '@koa/router';
import type { Context, Middleware as KoaMiddleware, Next } from 'koa';
import compose from 'koa-compose';
import type Provider from 'oidc-provider';

/** A Koa middleware, or a router's `routes()`. */
type Middleware = KoaMiddleware | ReturnType<Router['routes']>;

/**
 * One entry of the HTTP edge: a middleware or router in front of oidc-provider's own routes. The edge is
 * one ordered table (src/app.ts `createApp`), so what guards an endpoint — and in which order — is read
 * off one list, and a reordering is a visible change (test/edge.test.ts, docs/architecture.md).
 *
 * Where it acts is declared by `paths` and `oidcRoutes` (both: either); an entry with neither acts on
 * every request. A request meets only the entries that can act on its path (`installEdge`).
 */
export interface EdgeEntry {
  /** Stable name; the test and the architecture page list the entries by it, in order. */
  name: string;
  /** What it guards, limits or rewrites, with the settings that tune it: one line. */
  does: string;
  /** Our paths it acts on: `/x` that path only, `/x/*` that path and every path under it. */
  paths?: readonly string[];
  /** The oidc-provider routes (route names) it acts on, when it acts on some only. */
  oidcRoutes?: ReadonlySet<string>;
  /** Unset when this configuration leaves it out (health on METRICS_PORT, the demo outside development). */
  middleware: Middleware | undefined;
}

/** The edge as compiled at boot: which entries a request of a given path meets, in table order. */
export interface EdgeDispatch {
  /** The installed entries a request for `path` meets, in table order. */
  entriesFor(path: string): readonly EdgeEntry[];
}

/** A path an entry acts on, normalised as a request's path is looked up (`keyOf`). */
interface Place {
  path: string;
  under: boolean;
}

/** oidc-provider 9's route names (lib/helpers/initialize_app.js), the `cors.*` ones aside: a name outside them is a typo. */
const OIDC_ROUTE_NAMES = new Set([
  'authorization', 'resume', 'userinfo', 'token', 'jwks', 'discovery', 'openid_credential_issuer', 'credential', 'challenge',
  'registration', 'client', 'client_update', 'client_delete', 'revocation', 'introspection', 'end_session_confirm', 'end_session',
  'end_session_success', 'device_authorization', 'code_verification', 'device_resume', 'pushed_authorization_request',
  'backchannel_authentication',
]);

/**
 * Where oidc-provider serves what `pathFor` does not name (lib/helpers/initialize_app.js): the second
 * discovery document, and the routes with a parameter, which live under another route's path.
 */
const MORE_OIDC_PATHS: Record<string, (pathFor: (name: string) => string | undefined) => (string | undefined)[]> = {
  discovery: () => ['/.well-known/openid-configuration'],
  resume: (pathFor) => [andBelow(pathFor('authorization'))],
  device_resume: (pathFor) => [andBelow(pathFor('code_verification'))],
  client: (pathFor) => [andBelow(pathFor('registration'))],
  client_update: (pathFor) => [andBelow(pathFor('registration'))],
  client_delete: (pathFor) => [andBelow(pathFor('registration'))],
};

function andBelow(path: string | undefined): string | undefined {
  return path === undefined ? undefined : `${path}/*`;
}

/**
 * Installs the table in its order, with one dispatch instead of a walk through every entry. The entries
 * that act on every request and come first (the request context, issuer pinning, security headers) are
 * installed as they are; for the rest, a request's path is looked up once in maps compiled here, from
 * the whole path and from its first segment to the precomposed chain of the entries that can act on it,
 * in table order. oidc-provider's `use` puts each in front of its own router, so the first entry meets a
 * request first, and its code after `await next()` runs last.
 *
 * The lookup folds ASCII case and one trailing slash, as @koa/router and oidc-provider's router match; a
 * path they might read otherwise (not printable ASCII) meets every entry, as before the dispatch. The
 * path is read after the first entries, so an entry that rewrites it must act on all and come first.
 */
export function installEdge(provider: Provider, edge: readonly EdgeEntry[]): EdgeDispatch {
  const installed = edge.filter((entry) => entry.middleware !== undefined);
  const places = new Map(installed.map((entry) => [entry, placesOf(provider, entry)]));
  const firstScoped = installed.findIndex((entry) => places.get(entry) !== undefined);
  const leading = firstScoped === -1 ? installed : installed.slice(0, firstScoped);
  for (const entry of leading) provider.use(entry.middleware as KoaMiddleware);
  const scoped = installed.slice(leading.length);
  if (scoped.length === 0) return { entriesFor: () => leading };

  const everywhere = chain(scoped.filter((entry) => places.get(entry) === undefined));
  const every = chain(scoped);
  const all = [...places.values()].flatMap((p) => p ?? []);
  const byPath = new Map<string, Chain>();
  const bySegment = new Map<string, Chain>();
  for (const place of all) {
    if (!place.under) byPath.set(place.path, chain(scoped.filter((entry) => places.get(entry)?.some((p) => covers(p, place.path)) ?? true)));
    const segment = firstSegment(place.path);
    bySegment.set(segment, chain(scoped.filter((entry) => places.get(entry)?.some((p) => firstSegment(p.path) === segment) ?? true)));
  }
  const chainFor = (path: string): Chain => {
    if (!PLAIN_PATH.test(path)) return every;
    const key = keyOf(path);
    return byPath.get(key) ?? bySegment.get(firstSegment(key)) ?? everywhere;
  };
  provider.use(function edgeDispatch(ctx, next) {
    return chainFor(ctx.path).run(ctx, next);
  });
  return { entriesFor: (path) => [...leading, ...chainFor(path).entries] };
}

/** Entries in table order, and their middleware composed once. */
interface Chain {
  entries: readonly EdgeEntry[];
  run: (ctx: Context, next: Next) => Promise<void>;
}

function chain(entries: readonly EdgeEntry[]): Chain {
  return { entries, run: compose(entries.map((entry) => entry.middleware as KoaMiddleware)) as Chain['run'] };
}

/** A path the routers read as its bytes, case aside: `/` then printable ASCII. */
const PLAIN_PATH = /^\/[\x21-\x7e]*$/;

/** A path as the lookup keys it: ASCII lower case (what both routers fold), without one trailing slash. */
function keyOf(path: string): string {
  const lower = path.toLowerCase();
  return lower.length > 1 && lower.endsWith('/') ? lower.slice(0, -1) : lower;
}

function firstSegment(key: string): string {
  const end = key.indexOf('/', 1);
  return end === -1 ? key : key.slice(0, end);
}

function covers(place: Place, key: string): boolean {
  return place.under ? key === place.path || key.startsWith(`${place.path}/`) : key === place.path;
}

/** Where an entry acts, as places; undefined when on every request. */
function placesOf(provider: Provider, entry: EdgeEntry): Place[] | undefined {
  if (!entry.paths && !entry.oidcRoutes) return undefined;
  const pathFor = (name: string) => {
    try {
      return provider.pathFor(name);
    } catch {
      return undefined; // not enabled in this configuration, or a route with a parameter (MORE_OIDC_PATHS)
    }
  };
  const declared = [...(entry.paths ?? [])];
  for (const name of entry.oidcRoutes ?? []) {
    if (!OIDC_ROUTE_NAMES.has(name)) throw new Error(`edge entry ${entry.name}: ${name} is not a route of oidc-provider`);
    declared.push(...[pathFor(name), ...(MORE_OIDC_PATHS[name]?.(pathFor) ?? [])].filter((p) => p !== undefined));
  }
  const places: Place[] = declared.map((path) => {
    if (!PLAIN_PATH.test(path) || /\/[:*{(]/.test(path.replace(/\/\*$/, ''))) throw new Error(`edge entry ${entry.name}: ${path} is not a plain path (or one ending in /*)`);
    return path.endsWith('/*') ? { path: keyOf(path.slice(0, -2) || '/'), under: true } : { path: keyOf(path), under: false };
  });
  if (places.some((place) => place.under && place.path === '/')) return undefined;
  // A router's routes must lie where the entry says it acts, or the dispatch would skip some of them.
  const router = (entry.middleware as { router?: Router }).router;
  for (const layer of router?.stack ?? []) {
    if (layer.methods.length === 0) continue; // its middleware runs only with a route of the same router
    const path = keyOf(String(layer.path));
    const prefixOnly = (layer.opts as { end?: boolean }).end === false;
    if (!places.some((place) => covers(place, path) && (place.under || !prefixOnly))) {
      throw new Error(`edge entry ${entry.name}: its route ${String(layer.path)} is not under ${declared.join(', ')}`);
    }
  }
  return places;
}
