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
/** `lastUsedAt` is a minute-resolution fact: written at most once a minute per person and app. */
const LAST_USED_RESOLUTION_MS = 60_000;

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
  const raw = await store.get(keys.consent(accountId, clientId));
  return raw ? parseConsent(raw) : undefined;
}

/**
 * Remembers `scopes` on top of `previous` (what readConsent gave): the first grant's date stays, and
 * the app counts as used now. The index is written with it, so the app is listed.
 */
export async function rememberConsent(store: Store, accountId: string, clientId: string, previous: Consent | undefined, scopes: string[], now = Date.now()): Promise<void> {
  const consent: Consent = { scopes: [...new Set([...(previous?.scopes ?? []), ...scopes])], grantedAt: previous?.grantedAt ?? now, lastUsedAt: now };
  await Promise.all([
    store.set(keys.consent(accountId, clientId), JSON.stringify(consent), { ttl: CONSENT_TTL }),
    store.indexAdd(keys.accountConsents(accountId), clientId, CONSENT_TTL),
  ]);
}

/**
 * Records that the app got tokens for the person now. A no-op without a remembered consent (first-party
 * apps), or when the recorded use is less than a minute old. Compare-and-set: a consent changed or
 * revoked meanwhile is left as it is. Resolves whether it wrote.
 */
export async function markAppUsed(store: Store, accountId: string, clientId: string, now = Date.now()): Promise<boolean> {
  const key = keys.consent(accountId, clientId);
  const raw = await store.get(key);
  if (!raw) return false;
  const consent = parseConsent(raw);
  if (consent.lastUsedAt !== undefined && now - consent.lastUsedAt < LAST_USED_RESOLUTION_MS) return false;
  return store.replaceIf(key, raw, JSON.stringify({ ...consent, lastUsedAt: now }));
}

/**
 * Calls markAppUsed on token issue (`grant.success`), off the response's path. A per-process memory of
 * the last call per person and app keeps it to one storage read a minute each, first-party apps too.
 */
export function watchAppUse(provider: Provider, store: Store, onError: (err: unknown) => void, clock: () => number = Date.now): (accountId: string, clientId: string) => void {
  const lastChecked = new Map<string, number>();
  const used = (accountId: string, clientId: string) => {
    const now = clock();
    const pair = `${accountId} ${clientId}`;
    if (now - (lastChecked.get(pair) ?? 0) < LAST_USED_RESOLUTION_MS) return;
    // Bounded: forgetting only costs one more read per pair.
    if (lastChecked.size >= 10_000) lastChecked.clear();
    lastChecked.set(pair, now);
    markAppUsed(store, accountId, clientId, now).catch(onError);
  };
  provider.on('grant.success', (ctx) => {
    const grant = ctx.oidc.entities.Grant;
    if (grant?.accountId && grant.clientId) used(grant.accountId, grant.clientId);
  });
  // The lean path's refreshes (oidc/lean-path.ts) are not oidc-provider's grant.success: it calls this itself.
  return used;
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
