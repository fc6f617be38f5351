import type Provider from 'oidc-provider';
import type { AuditEvent, AuditSource } from '../observability/audit.ts';
import { keys } from '../storage/keys.ts';
import { enqueueLogouts, type LogoutNotice } from '../storage/logout-queue.ts';
import type { Store } from '../storage/store.ts';

/**
 * Connected apps: the clients a person allowed on the consent page (remembered consent), when, and when
 * each last got tokens; and taking that access back. Self-contained (a store and ids), so the account
 * page, the CLI and an admin API call the same functions.
 *
 * A consent is `keys.consent(account, client)`: JSON `{ scopes, grantedAt, lastUsedAt }` (epoch ms), or
 * a plain array of scopes as written before the dates were kept. `keys.accountConsents(account)` lists
 * the client ids, so a person's apps are found without SCAN; first-party clients remember no consent.
 */
export const CONSENT_TTL = 365 * 24 * 60 * 60;
/**
 * `lastUsedAt` is an hour-resolution fact: written at most once an hour per person and app. People see it
 * as a day (the account page) or a time to the hour (the CLI, the admin API); a person signing in all day
 * costs one compare-and-set an hour instead of one per sign-in.
 */
export const LAST_USED_RESOLUTION_MS = 60 * 60_000;
/** A consent's year (its TTL, and its entry in the person's index of apps) is written again at most once a day of use. */
const RENEW_AFTER_MS = 24 * 60 * 60 * 1000;

export interface Consent {
  scopes: string[];
  /** Epoch ms; absent for a consent remembered before dates were kept. */
  grantedAt?: number;
  lastUsedAt?: number;
}

export interface ConnectedApp extends Consent {
  clientId: string;
  /** The app's registered name, or its id when the app was deleted since. */
  name: string;
}

export interface RevokedApp {
  clientId: string;
  /** Grants revoked, each with every code, access and refresh token issued under it. */
  grants: number;
  /** Sessions that were signed in to the app: each no longer is, and the app got a logout notice. */
  sessions: number;
}

function parseConsent(raw: string): Consent {
  const value = JSON.parse(raw) as unknown;
  if (Array.isArray(value)) return { scopes: value.filter((s): s is string => typeof s === 'string') };
  const record = value as Partial<Consent>;
  return {
    scopes: Array.isArray(record.scopes) ? record.scopes : [],
    ...(typeof record.grantedAt === 'number' ? { grantedAt: record.grantedAt } : {}),
    ...(typeof record.lastUsedAt === 'number' ? { lastUsedAt: record.lastUsedAt } : {}),
  };
}

export async function readConsent(store: Store, accountId: string, clientId: string): Promise<Consent | undefined> {
  return (await readStoredConsent(store, accountId, clientId))?.consent;
}

/**
 * A remembered consent as stored: what it says, the stored value (for compare-and-set), and when its
 * year (its TTL and the person's index of apps) was last written (`renewedAt`, epoch ms; absent when
 * written by an earlier version). `renewedAt` is bookkeeping, never shown.
 */
export interface StoredConsent {
  consent: Consent;
  raw: string;
  renewedAt?: number;
}

export async function readStoredConsent(store: Store, accountId: string, clientId: string): Promise<StoredConsent | undefined> {
  return storedConsentOf(await store.get(keys.consent(accountId, clientId)));
}

/** A consent's stored value (`keys.consent`, as read: null when there is none) as a StoredConsent. */
export function storedConsentOf(raw: string | null): StoredConsent | undefined {
  if (!raw) return undefined;
  const renewedAt = (JSON.parse(raw) as { renewedAt?: unknown }).renewedAt;
  return { consent: parseConsent(raw), raw, ...(typeof renewedAt === 'number' ? { renewedAt } : {}) };
}

/** The stored value of `stored` used now: its year as it was (`renewedAt` kept). */
function usedNow(stored: StoredConsent, now: number): string {
  return JSON.stringify({ ...stored.consent, ...(stored.renewedAt !== undefined ? { renewedAt: stored.renewedAt } : {}), lastUsedAt: now });
}

/**
 * Remembers `scopes` on top of `previous` (what readConsent gave): the first grant's date stays, and
 * the app counts as used now. The index is written with it, so the app is listed.
 */
export async function rememberConsent(store: Store, accountId: string, clientId: string, previous: Consent | undefined, scopes: string[], now = Date.now()): Promise<void> {
  await Promise.all([
    store.set(keys.consent(accountId, clientId), remembered(previous, scopes, now), { ttl: CONSENT_TTL }),
    store.indexAdd(keys.accountConsents(accountId), clientId, CONSENT_TTL),
  ]);
}

/** The stored value of a consent remembered (or renewed) now: `scopes` on top of `previous`, its first grant's date kept, used now. */
function remembered(previous: Consent | undefined, scopes: string[], now: number): string {
  const consent: Consent = { scopes: [...new Set([...(previous?.scopes ?? []), ...scopes])], grantedAt: previous?.grantedAt ?? now, lastUsedAt: now };
  return JSON.stringify({ ...consent, renewedAt: now });
}

/**
 * Records that the app got tokens for the person now. A no-op without a remembered consent (first-party
 * apps), or when the recorded use is less than an hour old (LAST_USED_RESOLUTION_MS). Compare-and-set:
 * a consent changed or revoked meanwhile is left as it is. Resolves whether it wrote.
 */
export async function markAppUsed(store: Store, accountId: string, clientId: string, now = Date.now()): Promise<boolean> {
  const stored = await readStoredConsent(store, accountId, clientId);
  if (!stored || usedWithin(stored.consent, now)) return false;
  return store.replaceIf(keys.consent(accountId, clientId), stored.raw, usedNow(stored, now));
}

const usedWithin = (consent: Consent, now: number) => consent.lastUsedAt !== undefined && now - consent.lastUsedAt < LAST_USED_RESOLUTION_MS;

/**
 * A sign-in used the remembered consent `stored` (as read for it): it lasts a year from the day of its last use.
 * Its last use is written at most once an hour, compare-and-set (a consent revoked or changed meanwhile
 * is left as it is, also when its year is renewed); its year — the TTL and the person's index of apps,
 * several commands — at most once a day (`RENEW_AFTER_MS`), so a person signing in all day costs one
 * compare-and-set an hour.
 */
export async function useRememberedConsent(store: Store, accountId: string, clientId: string, stored: StoredConsent, now = Date.now()): Promise<void> {
  if (usedWithin(stored.consent, now)) return;
  const key = keys.consent(accountId, clientId);
  if (stored.renewedAt !== undefined && now - stored.renewedAt < RENEW_AFTER_MS) {
    await store.replaceIf(key, stored.raw, usedNow(stored, now));
    return;
  }
  // Its year: the record with a new TTL (compare-and-set too), then its entry in the index, only when it was still there.
  if (await store.replaceIf(key, stored.raw, remembered(stored.consent, [], now), { ttl: CONSENT_TTL })) {
    await store.indexAdd(keys.accountConsents(accountId), clientId, CONSENT_TTL);
  }
}

/**
 * Calls markAppUsed on token issue (`grant.success`), off the response's path. A per-process memory of
 * the last call per person and app keeps it to one storage read an hour each, first-party apps too.
 */
export function watchAppUse(provider: Provider, store: Store, onError: (err: unknown) => void, clock: () => number = Date.now): AppUse {
  const lastChecked = new Map<string, number>();
  /** Whether the pair was checked within the hour; if not, it is now. */
  const checkedNow = (accountId: string, clientId: string, now: number) => {
    const pair = `${accountId} ${clientId}`;
    if (now - (lastChecked.get(pair) ?? 0) < LAST_USED_RESOLUTION_MS) return true;
    // Bounded: forgetting only costs one more read per pair.
    if (lastChecked.size >= 10_000) lastChecked.clear();
    lastChecked.set(pair, now);
    return false;
  };
  const used = (accountId: string, clientId: string) => {
    const now = clock();
    if (!checkedNow(accountId, clientId, now)) markAppUsed(store, accountId, clientId, now).catch(onError);
  };
  provider.on('grant.success', (ctx) => {
    const grant = ctx.oidc.entities.Grant;
    if (grant?.accountId && grant.clientId) used(grant.accountId, grant.clientId);
  });
  return { used, usedBySignIn: (accountId, clientId) => void checkedNow(accountId, clientId, clock()) };
}

export interface AppUse {
  /** Tokens issued outside oidc-provider's `grant.success` (the lean path's refreshes, oidc/lean-path.ts). */
  used(accountId: string, clientId: string): void;
  /**
   * A sign-in granted without asking (first party, or consent remembered, signin/consent.ts): its last
   * use is as fresh as it gets, so the code's tokens need no read to mark it.
   */
  usedBySignIn(accountId: string, clientId: string): void;
}

/** Where the apps' names come from (the client registry), without this room depending on oidc/. */
export interface ClientNames {
  findClient(clientId: string): Promise<{ client_name?: unknown } | undefined>;
}

/** The apps the person granted access to, by name; consents that expired are dropped from the index. */
export async function listConnectedApps(store: Store, registry: ClientNames, accountId: string): Promise<ConnectedApp[]> {
  const index = keys.accountConsents(accountId);
  const apps: ConnectedApp[] = [];
  for (const clientId of await store.setMembers(index)) {
    const consent = await readConsent(store, accountId, clientId);
    if (!consent) {
      await store.setRemove(index, clientId);
      continue;
    }
    const client = await registry.findClient(clientId);
    apps.push({ clientId, name: typeof client?.client_name === 'string' && client.client_name ? client.client_name : clientId, ...consent });
  }
  return apps.sort((a, b) => a.name.localeCompare(b.name) || a.clientId.localeCompare(b.clientId));
}

/**
 * Takes an app's access away: forgets the consent (the next sign-in asks again), revokes every grant
 * of the person for the app with all its tokens, and signs every session of the person out of that
 * app (the session stays signed in to the others) with a back-channel logout notice for each.
 * One command per key: the consent, the indexes and each grant live in different cluster slots.
 * Undefined when the person has no remembered consent for the app (nothing is changed).
 */
export async function revokeConnectedApp(store: Store, accountId: string, clientId: string, clock: () => number = Date.now): Promise<RevokedApp | undefined> {
  const consentKey = keys.consent(accountId, clientId);
  if ((await store.get(consentKey)) === null) return undefined;
  await store.del(consentKey);
  await store.setRemove(keys.accountConsents(accountId), clientId);

  const accountGrants = keys.accountGrants(accountId);
  let grants = 0;
  for (const grantIndex of await store.setMembers(accountGrants)) {
    // A grant's index lists the Grant record itself, which names its client.
    const grantKey = (await store.setMembers(grantIndex)).find((member) => member.includes(':Grant:'));
    const grant = grantKey ? await store.getModel(grantKey, { consumable: false }) : null;
    if (!grant || (JSON.parse(grant.payload) as { clientId?: unknown }).clientId !== clientId) continue;
    await store.deleteIndexed(grantIndex);
    await store.setRemove(accountGrants, grantIndex);
    grants += 1;
  }

  const notices: LogoutNotice[] = [];
  let sessions = 0;
  const nowSeconds = Math.floor(clock() / 1000);
  for (const sessionKey of await store.setMembers(keys.accountSessions(accountId))) {
    const stored = await store.getModel(sessionKey, { consumable: false });
    if (!stored) continue;
    const session = JSON.parse(stored.payload) as { exp?: number; authorizations?: Record<string, { sid?: unknown }> };
    const signedIn = session.authorizations?.[clientId];
    if (!signedIn) continue;
    sessions += 1;
    if (typeof signedIn.sid === 'string') notices.push({ clientId, sub: accountId, sid: signedIn.sid });
    // Without the app's entry the session no longer counts as signed in to it; it keeps its expiry.
    delete session.authorizations![clientId];
    const ttl = (session.exp ?? 0) - nowSeconds;
    if (ttl > 0) await store.putModel(sessionKey, JSON.stringify(session), ttl, undefined, { consumable: false });
  }
  await enqueueLogouts(store, notices);
  return { clientId, grants, sessions };
}

/** The `consent_revoked` audit event of a revocation; `source` where the caller's logger does not name it. */
export function consentRevokedEvent(accountId: string, revoked: RevokedApp, source?: AuditSource): { event: AuditEvent; fields: Record<string, unknown>; msg: string } {
  return {
    event: 'consent_revoked',
    fields: { accountId, clientId: revoked.clientId, grants: revoked.grants, sessions: revoked.sessions, ...(source ? { source } : {}) },
    msg: 'app access removed: consent forgotten, its grants revoked, its sessions ended',
  };
}
