import { hash } from 'node:crypto';

/**
 * Key names. Rules: everything of one grant shares one Redis Cluster hash tag; a bearer
 * value (token, code, session cookie) never appears in a key name, only a digest of it.
 */
// 96 bits: the tag alone names a grant (its index key), so two live grants must never share one.
export const GRANT_TAG_LENGTH = 16;
const TAG_LENGTH = GRANT_TAG_LENGTH;

/**
 * A session's handle: a digest of its record's key (itself a digest of the session id), so it names a
 * session for listing and ending it, and cannot be turned into the cookie that presents it.
 */
export function sessionHandle(sessionKey: string): string {
  return hash('sha256', `handle:${sessionKey}`, 'base64url').slice(0, 22);
}

export function digest(value: string): string {
  return hash('sha256', value, 'base64url').slice(0, 27);
}

/** The hash tag of a grant: a short digest of its id. Tokens of the grant carry it as their prefix. */
export function grantTag(grantId: string): string {
  return digest(grantId).slice(0, TAG_LENGTH);
}

/**
 * Models whose ids start with their grant's tag (see `tagTokenIdsWithGrant` in oidc/provider-internals.ts).
 * Not DeviceCode: its id is made before the person approves, so before its grant exists;
 * it gets a digest tag like any other record and is never listed in a grant's index (another slot).
 */
export const GRANT_BOUND_MODELS = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken']);

/** `idDigest`: `digest(id)` when the caller has it (a record key's own), so a key costs one hash, not two. */
export function tagFor(model: string, id: string, idDigest?: string): string {
  if (GRANT_BOUND_MODELS.has(model) && id.length > TAG_LENGTH) return id.slice(0, TAG_LENGTH);
  // A grant's tag (grantTag) and any other record's: the first characters of the id's digest.
  return (idDigest ?? digest(id)).slice(0, TAG_LENGTH);
}

/** Digests of client ids (not secrets), which name a client's indexes on every token: the few busy clients are hashed once. */
const clientDigests = new Map<string, string>();
function clientDigest(clientId: string): string {
  let known = clientDigests.get(clientId);
  if (known === undefined) {
    if (clientDigests.size >= 10_000) clientDigests.clear();
    known = digest(clientId);
    clientDigests.set(clientId, known);
  }
  return known;
}

/** The index of a grant, found from the tag that its tokens' ids start with. */
export function grantIndexForTag(tag: string): string {
  return `lk:{${safeTag(tag)}}:grant`;
}

/** Keeps the tag to the URL-safe alphabet so a crafted token value cannot break out of `{…}`. */
function safeTag(tag: string): string {
  return /^[A-Za-z0-9_-]+$/.test(tag) ? tag : digest(tag).slice(0, TAG_LENGTH);
}

export const keys = {
  model: (model: string, id: string) => {
    const idDigest = digest(id);
    return `lk:{${safeTag(tagFor(model, id, idDigest))}}:${model}:${idDigest}`;
  },
  grantIndex: (grantId: string) => grantIndexForTag(grantTag(grantId)),
  /**
   * The sealed token response to a refresh token's first use, kept for the client's grace window
   * (oidc/provider-internals.ts `refreshGraceWindow`); in the token's grant slot and listed in its index.
   */
  refreshResponse: (refreshTokenId: string) => `lk:{${safeTag(tagFor('RefreshToken', refreshTokenId))}}:RefreshResponse:${digest(refreshTokenId)}`,
  sessionUid: (uid: string) => `lk:{${digest(uid).slice(0, TAG_LENGTH)}}:Session:uid:${digest(uid)}`,
  userCode: (code: string) => `lk:{${digest(code).slice(0, TAG_LENGTH)}}:user_code:${digest(code)}`,
  /** When a device last polled with a pending device code, and its interval (RFC 8628 §3.5 slow_down). */
  devicePoll: (deviceCode: string) => `lk:{${digest(deviceCode).slice(0, TAG_LENGTH)}}:DevicePoll:${digest(deviceCode)}`,
  client: (clientId: string) => `lk:client:${clientId}`,
  clients: 'lk:clients',
  resource: (uri: string) => `lk:resource:${digest(uri)}`,
  resources: 'lk:resources',
  scopeOwner: (scope: string) => `lk:scope:${digest(scope)}`,
  /** A revoked JWT access token, by a digest of its `jti`; lives as long as the token would have. */
  revokedJwt: (jti: string) => `lk:revoked-jwt:${digest(jti)}`,
  /** A DPoP proof already presented at the admin API, by a digest of its key and `jti`; lives while its `iat` is acceptable. */
  dpopProof: (jkt: string, jti: string) => `lk:dpop-proof:${digest(`${jkt}:${jti}`)}`,
  account: (id: string) => `lk:account:${id}`,
  accountEmail: (email: string) => `lk:account-email:${digest(email.toLowerCase())}`,
  accounts: 'lk:accounts',
  /** Accounts in email order (members `<email> <id>`, score 0): paging and email-prefix search without reading them all. */
  accountsByEmail: 'lk:idx:accounts',
  /** Client ids in order (score 0): paging without reading every client. */
  clientsById: 'lk:idx:clients',
  /** The activity log: every audit event, a capped stream (observability/activity.ts). */
  activity: 'lk:activity',
  /** What anonymous callers can cause (refusals, aggregated per source and minute), capped apart (activity.ts). */
  activityAnonymous: 'lk:activity:anonymous',
  /**
   * Tokens issued, counted per app, grant type and minute (activity.ts): a hash per minute (fields: JSON
   * `[client id, grant type]`) and the minutes that have one, scored by minute; one slot, so a write is one script.
   */
  tokenCounts: (minute: number) => `lk:{activity-tokens}:minute:${minute}`,
  tokenCountMinutes: 'lk:{activity-tokens}:minutes',
  /** Current lockouts: subject keys scored by the end of their lockout (epoch ms). */
  lockouts: 'lk:lockouts',
  consent: (accountId: string, clientId: string) => `lk:consent:${accountId}:${clientId}`,
  /** The client ids an account has a remembered consent for (an index: TTL of its longest-lived member). */
  accountConsents: (accountId: string) => `lk:account-consents:${digest(accountId)}`,
  /** The record keys of an account's sessions (an index: TTL of its longest-lived member). */
  accountSessions: (accountId: string) => `lk:account-sessions:${digest(accountId)}`,
  /** Where and how a session was signed in to (IP, browser), by the session's handle (sessionHandle in accounts/sessions.ts); the session's TTL. */
  sessionDevice: (handle: string) => `lk:session-device:${handle}`,
  /** The account page's sudo mode of one session (accounts/sudo-mode.ts), by its uid: `{accountId, until}`, ACCOUNT_SUDO_SECONDS. */
  accountSudo: (sessionUid: string) => `lk:account-sudo:${digest(`sudo:${sessionUid}`)}`,
  /** The grant index keys of an account's grants (an index: TTL of its longest-lived member). */
  accountGrants: (accountId: string) => `lk:account-grants:${digest(accountId)}`,
  /**
   * A client's grants (their grant index keys, a set) and client-credentials tokens (a list of the digests
   * of their ids, `clientCredentialsOfDigest`), one key per UTC day of issue (`day`: days since the epoch),
   * each with the TTL of its longest-lived member: a day's index stops growing at its end, so it goes with
   * what it lists. Deleting the client reads them all. A list of 27-character digests costs about 30 B a
   * token; the set of record keys of earlier versions (`clientTokenSet`) cost about 120 B.
   */
  clientGrants: (clientId: string, day: number) => `lk:client-grants:${clientDigest(clientId)}:${day}`,
  clientTokens: (clientId: string, day: number) => `lk:client-token-digests:${clientDigest(clientId)}:${day}`,
  /** Written by earlier versions (a set of ClientCredentials record keys): still read when a client is deleted. */
  clientTokenSet: (clientId: string, day: number) => `lk:client-tokens:${digest(clientId)}:${day}`,
  /** A client-credentials token's record key from the digest of its id: `keys.model('ClientCredentials', id)` is this of `digest(id)`. */
  clientCredentialsOfDigest: (idDigest: string) => `lk:{${safeTag(idDigest.slice(0, TAG_LENGTH))}}:ClientCredentials:${idDigest}`,
  /** The client id of the account page, which signs people in through the ordinary flow (interactions/account-page.ts). */
  accountPageClient: 'lk:account-page:client',
  /** The client id of the admin console, which signs admins in through the ordinary flow (admin/console.ts). */
  adminConsoleClient: 'lk:admin-console:client',
  /** A one-time link that creates the first admin (admin/first-admin.ts), by the digest of its token; its TTL is the link's. */
  setupLink: (token: string) => `lk:setup:${digest(token)}`,
  /** The development demo app's client id (src/demo). */
  demoClient: 'lk:demo:client',
  /** The last TOTP time step accepted for an account (advanceCounter: never accepted twice). */
  totpLastStep: (accountId: string) => `lk:totp-step:${accountId}`,
  /** Marks a pending TOTP enrollment (by digest) as used: it activates once. */
  totpEnrollmentUsed: (pendingDigest: string) => `lk:totp-enrollment:${pendingDigest}`,
  /** One generation of an account's recovery-code digests; a new generation replaces the key. */
  recoveryCodes: (accountId: string, generation: string) => `lk:recovery:${accountId}:${generation}`,
  /** Where a sign-in came from (signin/way-back.ts): its app and how to start it again, for a day after the interaction. */
  signInOrigin: (uid: string) => `lk:{${digest(uid).slice(0, TAG_LENGTH)}}:SignInOrigin:${digest(uid)}`,
  /** The account a passkey (by its credential id) belongs to: one lookup at a passwordless sign-in. */
  passkeyCredential: (credentialId: string) => `lk:passkey-credential:${digest(credentialId)}`,
  /** A WebAuthn challenge that was answered (set-if-absent, 5 minutes): each is used once (accounts/passkeys.ts). */
  passkeyChallengeUsed: (challenge: string) => `lk:passkey-challenge-used:${digest(challenge)}`,
  /** A lockout record of an account or a client IP (subject is already a digest). */
  lockout: (subject: string) => `lk:lockout:${subject}`,
  /** A single-use emailed link (accounts/email-links.ts), by a digest of its token: a set of one member, TTL = its expiry. */
  emailLink: (token: string) => `lk:email-link:${digest(token)}`,
  /** The same key by the digest alone (`ref`: to cancel a link without its token). */
  emailLinkByRef: (ref: string) => `lk:email-link:${ref}`,
  /** A pending invitation (accounts/invitations.ts), by a digest of the invited address; TTL = its link's. */
  invitation: (email: string) => `lk:invitation:${digest(email.toLowerCase())}`,
  /** The invited addresses (listing without SCAN); a member whose record expired is dropped when read. */
  invitations: 'lk:invitations',
  /** Mail waiting to be sent (mail/queue.ts): message ids scored by when they are due. */
  mailQueue: 'lk:mail:queue',
  /** One queued message, sealed under SECRETS_KEY (it holds links), with its attempts. */
  mailMessage: (id: string) => `lk:mail:message:${id}`,
  /** The server sending a message holds this; it expires if that server dies, and another retries. */
  mailLease: (id: string) => `lk:mail:lease:${id}`,
  /** An upstream identity provider (upstream/providers.ts), by the operator's id for it (a slug, never a secret). */
  upstreamProvider: (id: string) => `lk:upstream-provider:${id}`,
  upstreamProviders: 'lk:upstream-providers',
  /** The account an upstream identity signs in to, by a digest of its issuer and subject (never by address). */
  upstreamIdentity: (iss: string, sub: string) => `lk:upstream-identity:${digest(`${iss}\n${sub}`)}`,
  /** The identity digests linked to an account (listing and unlinking). */
  accountUpstreams: (accountId: string) => `lk:account-upstreams:${digest(accountId)}`,
  /** A sign-in sent to an upstream, by a digest of its `state` (sealed: it holds the PKCE verifier); 10 min. */
  upstreamState: (state: string) => `lk:upstream-state:${digest(state)}`,
  /** Marks a `state` as answered: a callback is taken once. */
  upstreamStateUsed: (state: string) => `lk:upstream-state-used:${digest(state)}`,
  /** An upstream identity waiting for the person to confirm linking it to their account, by interaction uid. */
  upstreamPendingLink: (uid: string) => `lk:upstream-link:${digest(uid)}`,
  /** The upstream provider a session was signed in through (the `idp` claim), by a digest of the session uid. */
  sessionUpstream: (sessionUid: string) => `lk:session-upstream:${digest(sessionUid)}`,
  secretsKey: 'lk:keys:secrets',
  signingKeys: 'lk:keys:signing',
  cookieKeys: 'lk:keys:cookies',
  dpopNonceSecret: 'lk:keys:dpop-nonce',
};
