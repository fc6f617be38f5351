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

export class WayBack {
  readonly #store: Store;
  constructor(store: Store) {
    this.#store = store;
  }

  async remember(uid: string, origin: SignInOrigin): Promise<void> {
    await this.#store.set(keys.signInOrigin(uid), JSON.stringify(origin), { ttl: WAY_BACK_TTL_SECONDS });
  }

  /**
   * Where the sign-in `uid` came from. Once the interaction got its answer (its resume left its mark in the
   * interaction's place, storage/oidc-adapter.ts ANSWERED_INTERACTION), going back continues to the app
   * rather than repeating the request: no `restart`. A lost or expired interaction leaves no mark.
   */
  async find(uid: string): Promise<SignInOrigin | undefined> {
    if (uid.length > 64) return undefined;
    const [raw, interaction] = await Promise.all([this.#store.get(keys.signInOrigin(uid)), this.#store.getModel(keys.model('Interaction', uid), { consumable: false })]);
    if (!raw) return undefined;
    const { restart, ...origin } = JSON.parse(raw) as SignInOrigin;
    return interaction?.payload === ANSWERED_INTERACTION || restart === undefined ? origin : { ...origin, restart };
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
