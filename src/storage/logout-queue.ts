import type { Store } from './store.ts';

/**
 * Back-channel logout notifications waiting to be delivered (oidc/backchannel-logout.ts delivers them).
 * Whatever ends a session — RP-initiated logout, "Sign out everywhere", a CLI command with no running
 * provider — only adds to this queue, so no sign-out waits for an app; every server takes items from it
 * (each item once, on any node) when told on LOGOUT_CHANNEL, and every few seconds.
 */
export interface LogoutNotice {
  clientId: string;
  /** The person (`sub` of the logout token). */
  sub: string;
  /** The session's id for that client (`sid`, as in the ID tokens the client got). */
  sid: string;
}

export const LOGOUT_QUEUE = 'lk:backchannel-logout:queue';
export const LOGOUT_CHANNEL = 'lk:changes:backchannel-logout';
/** A queue nobody drains (no server running) keeps a day of notices, at most this many. */
const QUEUE_MAX = 10_000;
const QUEUE_TTL_SECONDS = 24 * 60 * 60;

export async function enqueueLogouts(store: Store, notices: LogoutNotice[]): Promise<void> {
  if (notices.length === 0) return;
  for (const notice of notices) await store.queuePush(LOGOUT_QUEUE, JSON.stringify(notice), QUEUE_MAX, QUEUE_TTL_SECONDS);
  await store.publish(LOGOUT_CHANNEL, 'queued');
}

export async function takeLogout(store: Store): Promise<LogoutNotice | undefined> {
  const raw = await store.queueTake(LOGOUT_QUEUE);
  return raw ? (JSON.parse(raw) as LogoutNotice) : undefined;
}

/** The notices a stored oidc-provider Session stands for: one per app the person signed in to in it. */
export function noticesOfSession(payload: string): LogoutNotice[] {
  const session = JSON.parse(payload) as { accountId?: unknown; authorizations?: Record<string, { sid?: unknown }> };
  if (typeof session.accountId !== 'string') return [];
  return Object.entries(session.authorizations ?? {}).flatMap(([clientId, { sid }]) => (typeof sid === 'string' ? [{ clientId, sub: session.accountId as string, sid }] : []));
}
