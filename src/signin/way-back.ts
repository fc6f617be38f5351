import type { Context } from 'koa';
import { keys } from '../storage/keys.ts';
import { ANSWERED_INTERACTION } from '../storage/oidc-adapter.ts';
import type { Store } from '../storage/store.ts';

/** How long after its start a sign-in page can still offer a way forward (the interaction itself lives an hour). */
export const WAY_BACK_TTL_SECONDS = 24 * 60 * 60;

/**
 * Where a sign-in came from, kept past its interaction: the back button after signing in, or a tab left
 * open until the interaction expired, then finds a way forward instead of an error. `restart` is the
 * authorization request to run again (the app still waits for its answer); it is dropped once the
 * interaction has an answer, since the app has used its `state` by then. Parameters of the request only
 * (the app put them in the browser's address bar already), never anything of the person.
 */
export interface SignInOrigin {
  clientId: string;
  redirectUri?: string;
  /** Path and query of the authorization request, when it can be sent again as it is (not for PAR-only apps). */
  restart?: string;
}

/** The browser's copy of a sign-in's origin: a signed cookie scoped to the interaction's pages. */
export const ORIGIN_COOKIE = 'lk_origin';
/** Longer origins (a very long authorization request) are kept in the store instead (a cookie holds ~4 KB). */
const MAX_COOKIE_VALUE = 3000;

export class WayBack {
  readonly #store: Store;
  constructor(store: Store) {
    this.#store = store;
  }

  /**
   * Kept by the browser that runs the sign-in, in a signed cookie sent only to that interaction's pages
   * (`/interaction/<uid>`, as oidc-provider's own interaction cookie), so a sign-in writes nothing more to
   * the store for it; an origin too long for a cookie goes to the store.
   */
  async remember(ctx: Context, uid: string, origin: SignInOrigin): Promise<void> {
    const value = Buffer.from(JSON.stringify(origin)).toString('base64url');
    if (value.length <= MAX_COOKIE_VALUE) {
      ctx.cookies.set(ORIGIN_COOKIE, value, { signed: true, httpOnly: true, sameSite: 'lax', path: `/interaction/${uid}`, maxAge: WAY_BACK_TTL_SECONDS * 1000, overwrite: true });
      return;
    }
    await this.#store.set(keys.signInOrigin(uid), JSON.stringify(origin), { ttl: WAY_BACK_TTL_SECONDS });
  }

  /**
   * Where the sign-in `uid` came from: the cookie this browser got with it, else the store (long origins,
   * and sign-ins begun by an earlier version). Once the interaction got its answer (its resume left its
   * mark in the interaction's place, storage/oidc-adapter.ts ANSWERED_INTERACTION), going back continues
   * to the app rather than repeating the request: no `restart`. A lost or expired interaction leaves no mark.
   */
  async find(ctx: Context, uid: string): Promise<SignInOrigin | undefined> {
    if (uid.length > 64) return undefined;
    const cookie = originOf(ctx.cookies.get(ORIGIN_COOKIE, { signed: true }));
    const [raw, interaction] = await Promise.all([cookie ? undefined : this.#store.get(keys.signInOrigin(uid)), this.#store.getModel(keys.model('Interaction', uid), { consumable: false })]);
    const found = cookie ?? (raw ? originOf(raw, 'json') : undefined);
    if (!found) return undefined;
    const { restart, ...origin } = found;
    return interaction?.payload === ANSWERED_INTERACTION || restart === undefined ? origin : { ...origin, restart };
  }
}

/** A stored or sent origin, checked for shape (a cookie's is signed, but may come from an earlier version). */
function originOf(value: string | undefined | null, encoding: 'base64url' | 'json' = 'base64url'): SignInOrigin | undefined {
  if (!value) return undefined;
  try {
    const parsed = JSON.parse(encoding === 'json' ? value : Buffer.from(value, 'base64url').toString()) as Partial<SignInOrigin>;
    if (typeof parsed.clientId !== 'string') return undefined;
    return {
      clientId: parsed.clientId,
      ...(typeof parsed.redirectUri === 'string' ? { redirectUri: parsed.redirectUri } : {}),
      ...(typeof parsed.restart === 'string' && parsed.restart.startsWith('/') && !parsed.restart.startsWith('//') ? { restart: parsed.restart } : {}),
    };
  } catch {
    return undefined;
  }
}

/** The authorization request as a path and query to send again; `authPath` is oidc-provider's. */
export function restartOf(authPath: string, params: Record<string, unknown>): string {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const v of [value].flat()) if (typeof v === 'string' || typeof v === 'number') query.append(name, String(v));
  }
  return `${authPath}?${query.toString()}`;
}

/**
 * Where "continue to the app" leads: its registered `initiate_login_uri` (OIDC Core §4), else its
 * `client_uri`, else the origin of the redirect URI it used — only http(s) addresses.
 */
export function appHomeOf(client: { initiateLoginUri?: string | undefined; clientUri?: string | undefined }, redirectUri: string | undefined, issuer: string): string | undefined {
  const web = (u: string | undefined) => {
    try {
      return u && /^https?:$/.test(new URL(u).protocol) ? new URL(u) : undefined;
    } catch {
      return undefined;
    }
  };
  const initiate = web(client.initiateLoginUri);
  if (initiate) {
    initiate.searchParams.set('iss', issuer);
    return initiate.href;
  }
  return web(client.clientUri)?.href ?? (web(redirectUri) ? `${web(redirectUri)!.origin}/` : undefined);
}
