import type { Middleware } from 'koa';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';

/** As long as a session can live (ttl.Session in oidc/provider.ts). */
const SESSION_TTL_SECONDS = 14 * 24 * 3600;

/**
 * Records with the session which upstream provider its sign-in went through, for the `idp` claim
 * (oidc/provider.ts findAccount) and the session's details. Runs on oidc-provider's resume route: the
 * login result of the interaction (`ctx.oidc.result.login.upstream`, signin/policy.ts) is there, and
 * so is the session it was written into. A sign-in without an upstream clears an earlier record.
 */
export function recordSessionUpstream(store: Store): Middleware {
  return async (ctx, next) => {
    await next();
    const oidc = (ctx as { oidc?: { result?: { login?: { upstream?: unknown } }; session?: { uid?: string } } }).oidc;
    if ((ctx as { oidc?: { route?: string } }).oidc?.route !== 'resume') return;
    const login = oidc?.result?.login;
    const uid = oidc?.session?.uid;
    if (!login || !uid) return;
    if (typeof login.upstream === 'string') await store.set(keys.sessionUpstream(uid), login.upstream, { ttl: SESSION_TTL_SECONDS });
    else await store.del(keys.sessionUpstream(uid));
  };
}

/** The upstream provider a session signed in through, if any. */
export async function sessionUpstream(store: Store, sessionUid: string): Promise<string | undefined> {
  return (await store.get(keys.sessionUpstream(sessionUid))) ?? undefined;
}
