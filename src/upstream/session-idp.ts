import type { Middleware } from 'koa';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';

/** As long as a session can live (ttl.Session in oidc/provider.ts). */
const SESSION_TTL_SECONDS = 14 * 24 * 3600;

/**
 * Records with the session which upstream provider its sign-in went through, for the `idp` claim
 * (oidc/provider.ts findAccount) and the session's details. Runs on oidc-provider's resume route: the
 * login result of the interaction (`ctx.oidc.result.login.upstream`, signin/policy.ts) is there, and
 * so is the session it was written into. Most sign-ins are neither: they write nothing. A sign-in
 * without an upstream clears the record only when the session was signed in before through a way
 * that may have been one (no password in its `amr`): a new session has no record to clear.
 */
export function recordSessionUpstream(store: Store): Middleware {
  return async (ctx, next) => {
    await next();
    const oidc = (ctx as { oidc?: { route?: string; result?: { login?: { upstream?: unknown } }; session?: { uid?: string }; entities?: { Interaction?: { session?: { uid?: string; amr?: string[] } } } } }).oidc;
    if (oidc?.route !== 'resume') return;
    const login = oidc.result?.login;
    const uid = oidc.session?.uid;
    if (!login || !uid) return;
    if (typeof login.upstream === 'string') return void (await store.set(keys.sessionUpstream(uid), login.upstream, { ttl: SESSION_TTL_SECONDS }));
    const before = oidc.entities?.Interaction?.session;
    if (before?.uid === uid && !(before.amr ?? []).includes('pwd')) await store.del(keys.sessionUpstream(uid));
  };
}

/** The upstream provider a session signed in through, if any. */
export async function sessionUpstream(store: Store, sessionUid: string): Promise<string | undefined> {
  return (await store.get(keys.sessionUpstream(sessionUid))) ?? undefined;
}
