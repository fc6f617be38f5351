import { AsyncLocalStorage } from 'node:async_hooks';
import Provider, { errors, type Adapter, type AdapterPayload } from 'oidc-provider';
import { enqueueLogouts, noticesOfSession, type LogoutNotice } from './logout-queue.ts';
import { digest, GRANT_BOUND_MODELS, GRANT_TAG_LENGTH, grantIndexForTag, keys, sessionHandle, tagFor } from './keys.ts';
import { pageWriteId, writtenInteractions } from './written-interactions.ts';
import type { ConsumeResult, PutModelOptions, RotatedRecord, Store, TakeLeaving } from './store.ts';

/** Upper bound for any record oidc-provider hands us without a TTL: every key expires. */
const MAX_TTL = 60 * 60 * 24 * 30;

/** Models that are used once; their records carry a "consumed" mark set atomically. */
const CONSUMABLE = new Set([
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'PushedAuthorizationRequest',
]);

/**
 * Signs a person out everywhere: deletes every session of the account and every grant with all of its
 * tokens (codes, access and refresh tokens). One command per record — a session, a grant's index — since
 * the account's indexes and what they list live in different cluster slots. `keepSessionId`: the session
 * that asked (a password change on /account) stays signed in; its grants are revoked like the others.
 * Every app signed in to in a deleted session gets a back-channel logout notice (storage/logout-queue.ts).
 * Returns the live sessions deleted and the grants revoked.
 */
export async function revokeAccountSessions(store: Store, accountId: string, options: { keepSessionId?: string } = {}): Promise<{ sessions: number; grants: number }> {
  const sessionIndex = keys.accountSessions(accountId);
  const grantIndex = keys.accountGrants(accountId);
  const kept = options.keepSessionId === undefined ? undefined : keys.model('Session', options.keepSessionId);
  const [sessions, grants] = await Promise.all([store.setMembers(sessionIndex), store.setMembers(grantIndex)]);
  let deleted = 0;
  const notices: LogoutNotice[] = [];
  for (const sessionKey of sessions) {
    if (sessionKey === kept) continue;
    const stored = await store.getModel(sessionKey, { consumable: false });
    if (stored) notices.push(...noticesOfSession(stored.payload));
    deleted += await store.del(sessionKey);
    await store.setRemove(sessionIndex, sessionKey);
  }
  await enqueueLogouts(store, notices);
  // Members only, not the whole index: a session or grant saved meanwhile stays listed for next time.
  for (const index of grants) {
    await store.deleteIndexed(index);
    await store.setRemove(grantIndex, index);
  }
  return { sessions: deleted, grants: grants.length };
}

/**
 * Ends one session of a person, named by its handle (accounts/sessions.ts): the session record goes, the
 * grants of the apps it signed in to are revoked, and those apps get back-channel logout notices.
 * Returns the grants revoked, or undefined when the person has no live session with that handle.
 */
export async function endAccountSession(store: Store, accountId: string, handle: string): Promise<{ grants: number } | undefined> {
  const sessionIndex = keys.accountSessions(accountId);
  const sessionKey = (await store.setMembers(sessionIndex)).find((key) => sessionHandle(key) === handle);
  const stored = sessionKey ? await store.getModel(sessionKey, { consumable: false }) : undefined;
  if (!sessionKey || !stored) return undefined;
  const session = JSON.parse(stored.payload) as { accountId?: unknown; authorizations?: Record<string, { grantId?: unknown }> };
  if (session.accountId !== accountId) return undefined;
  await store.del(sessionKey, keys.sessionDevice(handle));
  await store.setRemove(sessionIndex, sessionKey);
  await enqueueLogouts(store, noticesOfSession(stored.payload));
  const grantIds = Object.values(session.authorizations ?? {}).flatMap(({ grantId }) => (typeof grantId === 'string' ? [grantId] : []));
  for (const grantId of grantIds) {
    await store.deleteIndexed(keys.grantIndex(grantId));
    await store.setRemove(keys.accountGrants(accountId), keys.grantIndex(grantId));
  }
  return { grants: grantIds.length };
}

const DAY_MS = 24 * 60 * 60 * 1000;
/** The day a client's index set is named after (keys.clientGrants, keys.clientTokens). */
const dayOf = (ms: number) => Math.floor(ms / DAY_MS);

/** Deletes at most this many records at once while a client's tokens are revoked: pipelined, yet bounded. */
const DELETE_BATCH = 100;

/**
 * Revokes everything a client was issued: every grant (with its codes, access and refresh tokens) and
 * every client-credentials token, read from the client's day-by-day indexes — no SCAN. Every record
 * is written with a TTL of at most MAX_TTL, so indexes older than that list nothing alive and are not read.
 * One command per record, as the indexes and what they list live in different cluster slots. Tokens are
 * listed by the digests of their ids; a set of record keys written by an earlier version is read too.
 * Call it once the client record is gone (nothing new can be issued to it). Returns the grants and tokens revoked.
 */
export async function revokeClientGrants(store: Store, clientId: string, now: number = Date.now()): Promise<{ grants: number; tokens: number }> {
  const today = dayOf(now);
  const grants = new Set<string>();
  let tokens = 0;
  for (let day = today; day >= today - Math.ceil(MAX_TTL * 1000 / DAY_MS); day -= 1) {
    const grantSet = keys.clientGrants(clientId, day);
    const tokenList = keys.clientTokens(clientId, day);
    const tokenSet = keys.clientTokenSet(clientId, day);
    const [grantIndexes, tokenDigests, tokenKeys] = await Promise.all([store.setMembers(grantSet), store.listMembers(tokenList), store.setMembers(tokenSet)]);
    for (const index of grantIndexes) {
      if (grants.has(index)) continue;
      grants.add(index);
      await store.deleteIndexed(index);
    }
    const records = [...tokenDigests.map(keys.clientCredentialsOfDigest), ...tokenKeys];
    for (let i = 0; i < records.length; i += DELETE_BATCH) tokens += await store.del(...records.slice(i, i + DELETE_BATCH));
    await store.del(grantSet, tokenList, tokenSet);
  }
  return { grants: grants.size, tokens };
}

/** A sign-in's index writes: plain commands rather than scripts (Store.indexAdd). */
const PIPELINED = { pipelined: true };

/** Token models presented by value (introspection, userinfo, the admin API, refresh): none outlives its client. */
const ISSUED_TO_CLIENT = new Set(['AccessToken', 'ClientCredentials', 'RefreshToken']);

/**
 * One refresh-token grant (run inside one by `refreshGraceWindow`, oidc/provider-internals.ts): what the
 * adapter read for it and what it defers. oidc-provider consumes the presented token, then saves the
 * new refresh token, then the access token, each with the token id only; the adapter keeps the first
 * two and sends all three, with their index entries, as one atomic store call (`Store.rotateModel`)
 * when the access token is saved, or when the grant ends (a JWT access token is not saved).
 */
export class RefreshRotation {
  /** The client's grace window in seconds (0: none): within it a repeat is answered, not revoked. */
  readonly grace: number;
  /** The presented refresh token as read (its record, without its mark). */
  presented?: { id: string; key: string; payload: string };
  /** When the grant expires (epoch s): its index lives at least as long, so records that end before need no TTL read. */
  grantExpiresAt?: number;
  /** The consume oidc-provider asked for and the records saved since, not yet sent. */
  pending?: { records: RotatedRecord[]; send(records: RotatedRecord[]): Promise<void> };
  constructor(grace: number) {
    this.grace = grace;
  }

  /** Sends what is still deferred; throws as the consume would have (reuse, a repeat, a revoked token). */
  async settle(): Promise<void> {
    const pending = this.pending;
    if (!pending) return;
    this.pending = undefined;
    await pending.send(pending.records);
  }
}

/** Set around each refresh-token grant (oidc/provider-internals.ts `refreshGraceWindow`). */
export const refreshRotation = new AsyncLocalStorage<RefreshRotation>();

/**
 * One authorization code's redemption (run inside one by `batchedCodeRedemption`, oidc/provider-internals.ts):
 * the tokens it issues (access and refresh token) are records of the grant the request read, whose index
 * outlives them, so they are kept here and written together when the grant ends — before the response
 * leaves (`Store.putIndexed`: a SET each and one SADD that also names the grant's record, the index's
 * holder). A grant that fails writes none of them; one revoked while they were issued (the SADD found its
 * index deleted, and the grant is gone) keeps none of them, and the request answers `invalid_grant`.
 */
export class TokenBatch {
  readonly #records = new Map<string, { holder: string; records: RotatedRecord[] }>();

  add(indexKey: string, holder: string, record: RotatedRecord): void {
    const batch = this.#records.get(indexKey);
    if (batch) batch.records.push(record);
    else this.#records.set(indexKey, { holder, records: [record] });
  }

  async write(store: Store): Promise<void> {
    const batches = [...this.#records];
    this.#records.clear();
    const kept = await Promise.all(batches.map(([index, { holder, records }]) => store.putIndexed(records, index, holder)));
    if (kept.includes(false)) throw new errors.InvalidGrant('grant revoked');
  }
}

/** Set around each authorization code grant (oidc/provider-internals.ts `batchedCodeRedemption`). */
export const tokenBatch = new AsyncLocalStorage<TokenBatch>();

/**
 * A refresh token presented again within its client's grace window, while or after another request
 * rotated it: that request's response is the answer (provider-internals.ts waits for it). An
 * `invalid_grant` should it ever escape, and nothing is revoked.
 */
export class RepeatedRefresh extends errors.InvalidGrant {
  constructor() {
    super('refresh token already rotated within its grace window');
  }
}

/**
 * Set around a sign-in page's request (interactions/routes.ts): the Interaction records read in it, by
 * key, as stored. The sign-in step rides in the interaction's record (signin/steps.ts), so the step
 * costs no read of its own.
 */
export const interactionReads = new AsyncLocalStorage<Map<string, string>>();

/** Records that name the session they were issued in, and carry its upstream provider (`idp`). */
const SESSION_BOUND = new Set(['AuthorizationCode', 'DeviceCode', 'BackchannelAuthenticationRequest', 'RefreshToken', 'AccessToken']);

/**
 * A map kept for the duration of one oidc-provider request (its context), or undefined outside one.
 * `create`: make it on first use (a write); a read of a request that stored nothing finds none.
 */
function perRequest<V>(): (create: boolean) => Map<string, V> | undefined {
  const maps = new WeakMap<object, Map<string, V>>();
  return (create) => {
    const ctx = Provider.ctx;
    if (!ctx) return undefined;
    let map = maps.get(ctx);
    if (!map && create) maps.set(ctx, (map = new Map<string, V>()));
    return map;
  };
}

/** Per request: the upstream provider of each session uid read in a record. */
const idpsOfRequest = perRequest<string>();

/**
 * The upstream provider a session signed in through, as a token record of this request holds it: ''
 * for none, undefined when no record read in this request says (one written by an earlier version).
 * The `idp` claim reads it here instead of from Redis on every ID token and userinfo answer.
 */
export function sessionIdpOfRequest(sessionUid: string): string | undefined {
  return idpsOfRequest(false)?.get(sessionUid);
}

/** Per request: consumable records as read in it (payload without the mark), by key, so that `consume` needs no read. */
const recordsOfRequest = perRequest<string>();

/** Per request: when each grant read or saved in it expires (epoch s), so its tokens' index writes need no TTL read. */
const grantsOfRequest = perRequest<number>();

/** The field of a session's record that holds where and how it was signed in (accounts/sessions.ts reads it). */
export const SESSION_DEVICE = 'lkDevice';

/** Per request: the device of each session record read in it, by key, carried into its next save. */
const devicesOfRequest = perRequest<object>();

/** Per request: records read and deleted in one command (the interaction its resume uses up), whose `destroy` is done. */
const takenInRequest = perRequest<true>();

/**
 * Per request, by grant index key: a grant saved at the authorization endpoint or its resume, not written
 * yet. Its first record (the code) or the session that names it, saved later in the same request, takes
 * it along: the grant and its code share one SADD and one EXPIRE NX (`Store.putIndexed`).
 */
const heldGrantsOfRequest = perRequest<RotatedRecord>();

/** Where the grant a request saves is followed by its code and the session in the same request (signin/consent.ts). */
const HOLDS_GRANTS = new Set(['authorization', 'resume']);
const holdsGrants = () => HOLDS_GRANTS.has(String(Provider.ctx?.oidc?.route));

/**
 * oidc-provider's resume reads the interaction, then destroys it unless it refuses the resume (a mismatch,
 * after which the interaction is of no use) or saves it again (signing another account out first).
 */
const takesInteraction = () => Provider.ctx?.oidc?.route === 'resume';

/**
 * What the resume leaves in place of the interaction it takes: it was answered, so going back to its page
 * continues to the app rather than sending its authorization request again (signin/way-back.ts). Nothing
 * reads it as an interaction: here it is not found, and `exp` 0 makes any other reader's oidc-provider (an
 * earlier version's, sharing the store) find it expired. It lives as long as the sign-in origin it qualifies.
 */
export const ANSWERED_INTERACTION = '{"exp":0,"lkAnswered":true}';
const ANSWERED_INTERACTION_TTL = 24 * 60 * 60;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function throwUnlessConsumed(result: ConsumeResult, model: string): void {
  if (result === 'repeated') throw new RepeatedRefresh();
  // Two redemptions raced past oidc-provider's own "already consumed" check: only one may win,
  // and the grant is revoked as for any reuse (RFC 9700 §4.14, §2.2.2).
  if (result !== 'consumed') throw new errors.InvalidGrant(`${model === 'RefreshToken' ? 'refresh token' : 'grant'} already used`);
}

/** The shape of an account id (accounts/accounts.ts): anything else is not read. */
const ACCOUNT_ID = /^[0-9a-f-]{36}$/;

/** oidc-provider's opaque ids: 256 random bits (its default `bitsOfOpaqueRandomness`) in base64url. */
const OPAQUE_ID_LENGTH = 43;

/** Tokens issued within a grant carry its tag in front (`tagTokenIdsWithGrant` in oidc/provider-internals.ts); client-credentials ids do not. */
const ISSUED_IN_GRANT = new Set(['AccessToken', 'RefreshToken', 'AuthorizationCode']);

function idFitsModel(model: string, id: string): boolean {
  if (ISSUED_IN_GRANT.has(model)) return id.length === GRANT_TAG_LENGTH + OPAQUE_ID_LENGTH;
  if (model === 'ClientCredentials') return id.length === OPAQUE_ID_LENGTH;
  return true;
}

/**
 * The oidc-provider adapter over a Store. Notes:
 * - Bearer values are only ever digested into key names; payloads are stored without their `jti`
 *   (for opaque tokens and sessions, the bearer value or the session cookie's value) and get it back on read.
 * - Grant-bound records are listed in their grant's index so a revocation deletes them in one step.
 * - `consume` is atomic: a second consumer gets `invalid_grant` and the whole grant is revoked.
 */
export function createAdapterClass(
  store: Store,
  clients: { find(id: string): Promise<AdapterPayload | undefined> },
  clock: () => number = Date.now,
  /**
   * Where and how a sign-in happened (oidc/provider.ts), asked as each signed-in session is saved: kept in
   * the session's record (`lkDevice`, which oidc-provider does not know), or undefined to keep what it held.
   */
  signInDevice: (payload: AdapterPayload) => object | undefined = () => undefined,
  /** The upstream provider ('' for none) of a session a code is issued in, when no record of the request says it (oidc/provider.ts). */
  sessionIdp: (sessionUid: string) => Promise<string> = async () => '',
  /** Whether an answered interaction of this client leaves its mark (ANSWERED_INTERACTION): not the server's own pages'. */
  leavesWayBack: (clientId: string) => boolean = () => true,
) {
  const epoch = () => Math.floor(clock() / 1000);
  /** The interactions this process wrote, for the pages their steps redirect to (written-interactions.ts). */
  const written = writtenInteractions(store);
  /** A grant held for its code (heldGrantsOfRequest) written on its own, as its save would have: it owns its index. */
  const writeHeldGrant = (grant: RotatedRecord, index: string) => store.putModel(grant.key, grant.payload, grant.ttl, index, { consumable: false, index: 'owner' });
  /**
   * A code's redemption and a refresh read the presented code or token, then its grant, then its account
   * (oidc-provider's order, one round trip each). The record names both: within the token request's
   * read-ahead scope (the `tokenReadAhead` edge entry; the lean refresh opens its own) they go out in one
   * command (`Store.readAhead`: MGET) as soon as it is read, for one that will get that far (its client's,
   * unused); the grant's `getModel` and the account's `get` take the answers.
   */
  const readGrantAndAccountAhead = (token: AdapterPayload, tokenId: string) => {
    const { grantId, accountId, clientId } = token;
    const consumed: unknown = token.consumed;
    if (consumed !== undefined || clientId !== Provider.ctx?.oidc?.client?.clientId) return;
    if (typeof grantId !== 'string' || typeof accountId !== 'string' || !ACCOUNT_ID.test(accountId)) return;
    const grantAndAccount = [keys.model('Grant', grantId), keys.account(accountId)];
    store.readAhead(grantAndAccount);
    rememberChain(tokenId, grantAndAccount);
  };
  /**
   * By grant tag (the first characters of its tokens' ids): the keys of the grant and its account, as
   * the last code or refresh token of that grant read here named them. A grant's id and account never
   * change, so the next refresh of the chain reads its token, grant and account in one command; a token
   * that names others (it cannot, but a guess costs nothing) has its own read after the first.
   */
  const chains = new Map<string, string[]>();
  const rememberChain = (tokenId: string, grantAndAccount: string[]) => {
    if (tokenId.length <= GRANT_TAG_LENGTH) return;
    if (chains.size >= 50_000) chains.clear();
    chains.set(tokenId.slice(0, GRANT_TAG_LENGTH), grantAndAccount);
  };
  const readChainAhead = (tokenKey: string, tokenId: string) => {
    const grantAndAccount = tokenId.length > GRANT_TAG_LENGTH ? chains.get(tokenId.slice(0, GRANT_TAG_LENGTH)) : undefined;
    if (grantAndAccount) store.readAhead([tokenKey, ...grantAndAccount]);
  };
  return class StoreAdapter implements Adapter {
    readonly name: string;
    readonly #grantBound: boolean;
    readonly #consumable: boolean;

    constructor(name: string) {
      this.name = name;
      this.#grantBound = GRANT_BOUND_MODELS.has(name) || name === 'Grant';
      this.#consumable = CONSUMABLE.has(name);
    }

    async upsert(id: string, payload: AdapterPayload, expiresIn: number) {
      const ttl = Math.min(Math.max(1, Math.ceil(expiresIn || MAX_TTL)), MAX_TTL);
      const key = keys.model(this.name, id);
      const grantId = this.name === 'Grant' ? id : payload.grantId;
      const index = this.#grantBound && grantId ? keys.grantIndex(grantId) : undefined;
      // `kind` is the model's name, given back on read: stored once per model, not once per record.
      const { jti: _jti, kind: _kind, ...stored } = payload;
      // An interaction names its browser's session id (`session.cookie`), which nothing reads back: the
      // session cookie's value is kept nowhere in storage, only digested into its record's key.
      if (this.name === 'Interaction' && isRecord(stored.session) && 'cookie' in stored.session) {
        const { cookie: _cookie, ...session } = stored.session;
        stored.session = session;
      }
      // The session's upstream provider travels with its tokens (code → refresh → access token), so the
      // `idp` claim needs no read of its own; only a code or device code of a new request looks it up.
      if (SESSION_BOUND.has(this.name) && typeof payload.sessionUid === 'string') {
        const known = idpsOfRequest(false)?.get(payload.sessionUid);
        stored.idp = known ?? (this.name === 'RefreshToken' || this.name === 'AccessToken' ? undefined : await sessionIdp(payload.sessionUid));
        if (typeof stored.idp === 'string') idpsOfRequest(true)?.set(payload.sessionUid, stored.idp);
      }
      // The device rides in the session's record: a new sign-in's, or the one this request read (oidc-provider drops fields it does not know).
      if (this.name === 'Session') {
        const device = (typeof payload.accountId === 'string' ? signInDevice(payload) : undefined) ?? devicesOfRequest(false)?.get(key);
        if (device) stored[SESSION_DEVICE] = device;
      }
      // A record written again is no longer as it was read: its consume goes through the script.
      if (this.#consumable) recordsOfRequest(false)?.delete(key);
      takenInRequest(false)?.delete(key);
      const rotation = refreshRotation.getStore();
      if (rotation?.pending && index && (this.name === 'RefreshToken' || this.name === 'AccessToken')) {
        rotation.pending.records.push({ key, payload: JSON.stringify(stored), ttl, consumable: this.#consumable });
        // The access token is the last record of a rotation: send everything now, before it is handed out.
        if (this.name === 'AccessToken') await rotation.settle();
        return;
      }
      // The grant's index lives as long as the grant: a token of a grant this request read or saved, that
      // ends before it, is only added to the index (PutModelOptions).
      let indexUse: PutModelOptions['index'];
      if (this.name === 'Grant') {
        indexUse = 'owner';
        if (typeof payload.exp === 'number') grantsOfRequest(true)?.set(id, payload.exp);
      } else if (index && typeof grantId === 'string') {
        const grantEnds = grantsOfRequest(false)?.get(grantId);
        if (grantEnds !== undefined && epoch() + ttl <= grantEnds) indexUse = 'outlives';
      }
      const batch = tokenBatch.getStore();
      if (batch && index && indexUse === 'outlives' && (this.name === 'AccessToken' || this.name === 'RefreshToken')) {
        batch.add(index, keys.model('Grant', grantId as string), { key, payload: JSON.stringify(stored), ttl, consumable: this.#consumable });
        return;
      }
      const record: RotatedRecord = { key, payload: JSON.stringify(stored), ttl, consumable: this.#consumable };
      const held = index ? heldGrantsOfRequest(false) : undefined;
      const grant = index ? held?.get(index) : undefined;
      if (index && grant) held!.delete(index);
      // Independent writes, sent together (one round trip with auto-pipelining). A client-credentials token
      // and its entry in its client's index of the day are one store call (putListed: one script).
      const listed = this.name === 'ClientCredentials' && typeof payload.clientId === 'string';
      const writes: Promise<unknown>[] = [];
      if (this.name === 'Grant' && index && holdsGrants()) {
        // Held for its code, which this request saves next (heldGrantsOfRequest).
        heldGrantsOfRequest(true)!.set(index, record);
      } else if (grant && indexUse === 'outlives') {
        writes.push(store.putIndexed([grant, record], index!));
      } else {
        if (grant) writes.push(writeHeldGrant(grant, index!));
        writes.push(listed
          ? store.putListed(key, record.payload, ttl, keys.clientTokens(payload.clientId as string, dayOf(clock())), digest(id))
          : store.putModel(key, record.payload, ttl, index, { consumable: this.#consumable, ...(indexUse ? { index: indexUse } : {}) }));
      }
      // The session names the grants of this request: none of them is left unwritten once it is saved.
      if (this.name === 'Session') {
        const grants = heldGrantsOfRequest(false);
        for (const [grantIndex, g] of grants ?? []) writes.push(writeHeldGrant(g, grantIndex));
        grants?.clear();
      }
      // By uid, a session is found through its record's key, never through its id (the cookie's value).
      if (this.name === 'Session' && payload.uid) writes.push(store.set(keys.sessionUid(payload.uid), key, { ttl }));
      // Per-account indexes (separate keys, possibly in other cluster slots: separate commands), so
      // that `latchkey user revoke-sessions` finds every session and grant of a person.
      if (typeof payload.accountId === 'string') {
        if (this.name === 'Session') writes.push(store.indexAdd(keys.accountSessions(payload.accountId), key, ttl, PIPELINED));
        else if (this.name === 'Grant') writes.push(store.indexAdd(keys.accountGrants(payload.accountId), keys.grantIndex(id), ttl, PIPELINED));
      }
      // Per-client indexes, so that deleting a client revokes what it was issued (revokeClientGrants).
      if (this.name === 'Grant' && typeof payload.clientId === 'string') writes.push(store.indexAdd(keys.clientGrants(payload.clientId, dayOf(clock())), keys.grantIndex(id), ttl, PIPELINED));
      if (payload.userCode) writes.push(store.set(keys.userCode(payload.userCode), id, { ttl }));
      await Promise.all(writes);
      if (this.name === 'Interaction') written.remember(key, record.payload, ttl);
    }

    async find(id: string): Promise<AdapterPayload | undefined> {
      if (this.name === 'Client') return clients.find(id);
      // oidc-provider looks a presented token up as each kind in turn (introspection, revocation,
      // userinfo); an id of the wrong shape for this model cannot be stored under it: skip the round trip.
      if (!idFitsModel(this.name, id)) return undefined;
      const key = keys.model(this.name, id);
      // A grant this request saved and holds: as it saved it (the store has not got it yet).
      const heldGrant = this.name === 'Grant' ? heldGrantsOfRequest(false)?.get(keys.grantIndex(id)) : undefined;
      if (heldGrant) return { ...(JSON.parse(heldGrant.payload) as AdapterPayload), kind: this.name, jti: id };
      const take = this.name === 'Interaction' && takesInteraction();
      if (this.name === 'RefreshToken') readChainAhead(key, id);
      const read = await this.#read(key, take ? { leave: ANSWERED_INTERACTION, ttl: ANSWERED_INTERACTION_TTL } : false);
      if (take) {
        written.forget(key);
        takenInRequest(true)?.set(key, true);
        // No interaction was there to answer (or its client's pages keep no way back): the mark goes too.
        const clientId = isRecord(read?.payload.params) ? String(read.payload.params.client_id) : undefined;
        if (clientId === undefined || !leavesWayBack(clientId)) await store.del(key);
      }
      if (!read) return undefined;
      const { payload } = read;
      if (this.name === 'AuthorizationCode' || this.name === 'RefreshToken') readGrantAndAccountAhead(payload, id);
      const rotation = refreshRotation.getStore();
      // A token of a deleted client is no token (deletion revokes them; this covers any it could not list),
      // so introspection answers active: false instead of failing on the missing client.
      if (ISSUED_TO_CLIENT.has(this.name) && typeof payload.clientId === 'string' && !(await clients.find(payload.clientId))) return undefined;
      payload.jti = id;
      if (typeof payload.sessionUid === 'string' && typeof payload.idp === 'string') idpsOfRequest(true)?.set(payload.sessionUid, payload.idp);
      if (this.name === 'Grant' && typeof payload.exp === 'number') grantsOfRequest(true)?.set(id, payload.exp);
      if (this.#consumable) recordsOfRequest(true)?.set(key, read.stored);
      if (this.name === 'Interaction') interactionReads.getStore()?.set(key, read.stored);
      if (this.name === 'Session' && isRecord(payload[SESSION_DEVICE])) {
        devicesOfRequest(true)?.set(key, payload[SESSION_DEVICE]);
        delete payload[SESSION_DEVICE];
      }
      if (rotation) {
        // What the rotation's one script needs: the presented token's record, and how long its grant's index lives.
        if (this.name === 'RefreshToken') rotation.presented = { id, key, payload: read.stored };
        else if (this.name === 'Grant' && typeof payload.exp === 'number') rotation.grantExpiresAt = payload.exp;
      }
      // Within its client's grace window a used refresh token reads as unused, so the grant goes on to
      // `consume`, whose script decides atomically (a repeat, or reuse once the window has passed).
      return payload;
    }

    /** The record under `key` without its id; `consumed` as `find` must report it. `stored`: the payload as stored. */
    async #read(key: string, take: boolean | TakeLeaving = false): Promise<{ payload: AdapterPayload; stored: string } | undefined> {
      // A page addressed with the write id of this process's last write of its interaction renders from that write.
      const writeId = this.name === 'Interaction' && !take ? pageWriteId.getStore() : undefined;
      const remembered = writeId ? written.read(key, writeId) : undefined;
      const stored = remembered !== undefined ? { payload: remembered } : await store.getModel(key, { consumable: this.#consumable, ...(take ? { take } : {}) });
      if (!stored || (this.name === 'Interaction' && stored.payload === ANSWERED_INTERACTION)) return undefined;
      const payload = JSON.parse(stored.payload) as AdapterPayload;
      // A session written by an earlier version kept its id in clear: not trusted, the person signs in again.
      if (this.name === 'Session' && payload.jti !== undefined) return undefined;
      payload.kind = this.name;
      const grace = this.name === 'RefreshToken' ? (refreshRotation.getStore()?.grace ?? 0) : 0;
      if (stored.consumed !== undefined && !(grace > 0 && epoch() - stored.consumed <= grace)) payload.consumed = stored.consumed;
      return { payload, stored: stored.payload };
    }

    /**
     * oidc-provider reads a session by uid only to compare its account and grants (interaction details,
     * tokens bound to a session), never to save it: the record comes back without its id, which is not stored.
     */
    async findByUid(uid: string) {
      const key = await store.get(keys.sessionUid(uid));
      // An index entry of an earlier version held the session id itself: such sessions are not found.
      const payload = key?.startsWith('lk:') ? (await this.#read(key))?.payload : undefined;
      if (payload) delete payload[SESSION_DEVICE];
      return payload;
    }

    async findByUserCode(userCode: string) {
      const id = await store.get(keys.userCode(userCode));
      return id ? this.find(id) : undefined;
    }

    async consume(id: string) {
      if (!CONSUMABLE.has(this.name)) return;
      const index = GRANT_BOUND_MODELS.has(this.name) ? grantIndexForTag(tagFor(this.name, id)) : undefined;
      const rotation = this.name === 'RefreshToken' ? refreshRotation.getStore() : undefined;
      const grace = rotation?.grace ?? 0;
      const presented = rotation?.presented;
      if (rotation && index && presented?.id === id && !rotation.pending) {
        // Deferred: consumed together with the records that replace it (RefreshRotation).
        rotation.pending = {
          records: [],
          send: async (records) => {
            const now = epoch();
            const longest = Math.max(0, ...records.map((r) => r.ttl));
            const outlived = rotation.grantExpiresAt !== undefined && longest <= rotation.grantExpiresAt - now;
            const result = await store.rotateModel(presented, index, records, now, { graceSeconds: grace, ...(outlived ? {} : { indexTtl: longest }) });
            throwUnlessConsumed(result, this.name);
          },
        };
        return;
      }
      const key = keys.model(this.name, id);
      throwUnlessConsumed(await store.consumeModel(key, index, epoch(), grace, recordsOfRequest(false)?.get(key)), this.name);
    }

    async destroy(id: string) {
      const key = keys.model(this.name, id);
      if (this.name === 'Interaction') written.forget(key);
      if (takenInRequest(false)?.delete(key)) return;
      await store.del(key);
    }

    // oidc-provider calls this once per model (AccessToken, RefreshToken, …) and destroys the Grant
    // itself only when its revokeGrantPolicy says so: delete this model's records of the grant only.
    async revokeByGrantId(grantId: string) {
      await store.deleteIndexed(keys.grantIndex(grantId), this.name);
    }
  };
}
