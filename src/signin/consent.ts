import type { KoaContextWithOIDC } from 'oidc-provider';
import { readStoredConsent, storedConsentOf, useRememberedConsent } from '../accounts/connected-apps.ts';
import type { Store } from '../storage/store.ts';

/** Claims every ID token may carry whatever was granted (oidc-provider never asks consent for them). */
const ALWAYS_ALLOWED_CLAIMS = new Set(['sub', 'sid', 'auth_time', 'acr', 'amr', 'iss']);

/** Whether the app's own `prompt` parameter (not what oidc-provider derives from it) includes consent. */
export function appAskedForConsent(params: { prompt?: unknown } | undefined): boolean {
  return typeof params?.prompt === 'string' && params.prompt.split(' ').includes('consent');
}

export interface ConsentGranted {
  accountId: string;
  clientId: string;
  scopes: string[];
  via: 'first_party' | 'remembered';
}

/** The field of a sign-in's result that hands the resume the person's consent to the app as its last post read it. */
export const CONSENT_AS_READ = 'lkConsentAsRead';
/** How old a consent read by the sign-in's last post may be when its resume decides on it (the redirect between them). */
export const CONSENT_AS_READ_MS = 10_000;

/** What the sign-in's last post read of this person's consent to this app (`raw`: null for none), while fresh. */
export interface ConsentAsRead {
  accountId: string;
  clientId: string;
  raw: string | null;
  /** Epoch ms of the read. */
  at: number;
}

export function consentAsRead(result: unknown, accountId: string, clientId: string): ConsentAsRead | undefined {
  const read = (result as Record<string, unknown> | undefined)?.[CONSENT_AS_READ] as Partial<ConsentAsRead> | undefined;
  if (read?.accountId !== accountId || read.clientId !== clientId || typeof read.at !== 'number') return undefined;
  if (!(typeof read.raw === 'string' || read.raw === null)) return undefined;
  const age = Date.now() - read.at;
  return age >= 0 && age <= CONSENT_AS_READ_MS ? (read as ConsentAsRead) : undefined;
}

/**
 * oidc-provider's `loadExistingGrant`. Its default finds the session's grant for the client; without one,
 * a request that needs no asking — a first-party client, or only scopes this person allowed this app
 * before — gets a new grant holding exactly what it asks for. oidc-provider then issues the code straight
 * away, instead of a consent interaction that would grant the same thing two redirects later.
 * Whatever needs asking is left to the consent page as before: the app sent `prompt=consent`, a device
 * request (always shown), a native app (oidc-provider always asks), `authorization_details`, or a scope
 * the person never allowed.
 */
export function consentWithoutAsking(store: Store, onGranted: (event: ConsentGranted) => void, clock: () => number = Date.now) {
  return async function loadExistingGrant(ctx: KoaContextWithOIDC) {
    const { oidc } = ctx;
    const client = oidc.client!;
    const existing = oidc.result?.consent?.grantId || oidc.session!.grantIdFor(client.clientId);
    if (existing) return oidc.provider.Grant.find(existing);
    const accountId = oidc.session!.accountId;
    const params = oidc.params ?? {};
    if (!accountId || appAskedForConsent(params) || oidc.deviceCode || client.applicationType === 'native' || params.authorization_details) return undefined;

    const oidcScopes = [...oidc.requestParamOIDCScopes];
    const claims = [...oidc.requestParamClaims].filter((c) => !ALWAYS_ALLOWED_CLAIMS.has(c));
    const resourceScopes = Object.entries(oidc.resourceServers ?? {}).map(([indicator, server]) => [indicator, [...oidc.requestParamScopes].filter((s) => server.scopes.has(s))] as const);
    const scopes = [...new Set([...oidcScopes, ...resourceScopes.flatMap(([, s]) => s)])];

    const firstParty = client.first_party === true;
    const asRead = firstParty ? undefined : consentAsRead(oidc.result, accountId, client.clientId);
    const remembered = firstParty ? undefined : asRead ? storedConsentOf(asRead.raw) : await readStoredConsent(store, accountId, client.clientId);
    if (!firstParty && !(remembered && scopes.every((s) => remembered.consent.scopes.includes(s)))) return undefined;

    const grant = new oidc.provider.Grant({ accountId, clientId: client.clientId });
    if (oidcScopes.length) grant.addOIDCScope(oidcScopes.join(' '));
    if (claims.length) grant.addOIDCClaims(claims);
    for (const [indicator, granted] of resourceScopes) if (granted.length) grant.addResourceScope(indicator, granted.join(' '));
    // Remembered consent lasts a year from the day of its last use: marked used with the grant (independent writes, sent together).
    await Promise.all([grant.save(), remembered ? useRememberedConsent(store, accountId, client.clientId, remembered, clock()) : undefined]);
    onGranted({ accountId, clientId: client.clientId, scopes, via: firstParty ? 'first_party' : 'remembered' });
    return grant;
  };
}
