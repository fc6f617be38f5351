import { hash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { AdapterPayload, ClientMetadata } from 'oidc-provider';
import { OIDC_SCOPES } from '../signin/scope-words.ts';
import { Refusal, refusalOf, type RefusalCode } from '../problems.ts';
import { keys } from '../storage/keys.ts';
import { backchannelTargetProblem, DEVELOPMENT_TARGETS, type BackchannelTargetRules } from './backchannel-targets.ts';
import { revokeClientGrants } from '../storage/oidc-adapter.ts';
import type { Store } from '../storage/store.ts';

/**
 * Clients and resource servers (APIs), kept in storage and managed with the CLI.
 * Client secrets are stored as a SHA-256 digest: they are 256-bit random values, so a fast hash is
 * enough, and a copy of Redis does not hand out working credentials.
 */
export class RegistryError extends Refusal {}

export const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
export const GRANT_TYPES = ['authorization_code', 'refresh_token', 'client_credentials', DEVICE_CODE_GRANT] as const;
export type GrantType = (typeof GRANT_TYPES)[number];
/** Short names the CLI accepts for a grant type (`--grants device_code`). */
export const GRANT_SHORTHANDS: Readonly<Record<string, GrantType>> = { device_code: DEVICE_CODE_GRANT };
// Defined in the sign-in core (below oidc/), which words them on the consent page.
export { OIDC_SCOPES };

/** The admin API's resource indicator (audience) on a server with this issuer. */
export const adminApiUri = (issuer: string) => `${issuer}/admin/api`;

export interface ResourceServer {
  uri: string;
  scopes: string[];
  tokenFormat: 'opaque' | 'jwt';
  /** Access token lifetime in seconds. */
  ttl: number;
  /** The client that represents the API at the introspection and revocation endpoints. */
  clientId: string;
  createdAt: number;
  /** Its scopes are left out of discovery's `scopes_supported` (`resource create --private-scopes`). */
  privateScopes?: boolean;
  /** What each scope lets an app do, in the operator's words, for the consent page (records made before these have none). */
  scopeDescriptions?: Record<string, string>;
}

/** Scope descriptions as given: a text sets one, null or a blank text removes it. */
export type ScopeDescriptionChanges = Record<string, string | null>;

export interface ClientInput {
  name: string;
  grants: GrantType[];
  redirectUris?: string[];
  postLogoutRedirectUris?: string[];
  scope: string;
  public?: boolean;
  firstParty?: boolean;
  /** Every sign-in for this client uses a second factor, even under MFA_POLICY=optional. */
  requireMfa?: boolean;
  /** Authorization requests must be pushed first (RFC 9126 PAR): a plain GET /auth is refused. */
  requirePar?: boolean;
  /** A native app (RFC 8252): public, and its loopback redirect URIs match on any port. */
  native?: boolean;
  /** `optional`: a confidential client may leave PKCE out when it sends a nonce (RFC 9700 §2.1.1). */
  pkce?: 'required' | 'optional';
  /** How a confidential client sends its secret: the Basic header (default), or the body (passport-openidconnect). */
  secretIn?: 'header' | 'body';
  /** Seconds after a refresh token's use in which presenting it again returns the same new tokens (0: reuse revokes at once). */
  refreshGrace?: number;
  /** Where the app is told, server to server, that a person signed out (OpenID Connect Back-Channel Logout). */
  backchannelLogoutUri?: string;
  /** The app's logo on its sign-in and consent pages (OpenID Connect Dynamic Client Registration `logo_uri`): https only. */
  logoUri?: string;
}

/**
 * What `client update` may change; the id, grants and whether it is native stay. `backchannelLogoutUri: null` removes it.
 * `public` and `secretIn` are its token endpoint authentication method: made public, it loses its secret;
 * made confidential, it gets a new one (answered once).
 */
export type ClientChanges = Partial<Pick<ClientInput, 'name' | 'redirectUris' | 'postLogoutRedirectUris' | 'scope' | 'firstParty' | 'requireMfa' | 'requirePar' | 'pkce' | 'refreshGrace' | 'public' | 'secretIn'>> & {
  backchannelLogoutUri?: string | null;
  logoUri?: string | null;
};

/** A stored client's settings, as `createClient` took them. */
export function clientInputOf(c: ClientMetadata): ClientInput {
  return {
    name: String(c.client_name ?? ''),
    grants: (c.grant_types ?? []) as GrantType[],
    redirectUris: [...(c.redirect_uris ?? [])],
    postLogoutRedirectUris: [...(c.post_logout_redirect_uris ?? [])],
    scope: String(c.scope ?? ''),
    public: c.token_endpoint_auth_method === 'none',
    native: c.native_app === true,
    firstParty: c.first_party === true,
    requireMfa: c.require_mfa === true,
    requirePar: c.require_pushed_authorization_requests === true,
    pkce: c.pkce_optional === true ? 'optional' : 'required',
    secretIn: c.token_endpoint_auth_method === 'client_secret_post' ? 'body' : 'header',
    refreshGrace: typeof c.refresh_grace_seconds === 'number' ? c.refresh_grace_seconds : 0,
    ...(typeof c.backchannel_logout_uri === 'string' ? { backchannelLogoutUri: c.backchannel_logout_uri } : {}),
    ...(typeof c.logo_uri === 'string' ? { logoUri: c.logo_uri } : {}),
  };
}

/** The longest refresh grace window: a window is for requests racing each other, not for replays. */
export const MAX_REFRESH_GRACE_SECONDS = 60;

export function secretDigest(secret: string): string {
  return hash('sha256', secret, 'base64url');
}

export function secretMatches(storedDigest: string | undefined, presented: string): boolean {
  return digestMatches(storedDigest, secretDigest(presented));
}

/** Whether a stored secret digest is the presented secret's digest, in constant time. */
function digestMatches(storedDigest: string | undefined, presentedDigest: string): boolean {
  if (!storedDigest) return false;
  const a = Buffer.from(storedDigest);
  const b = Buffer.from(presentedDigest);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The secret a rotation replaced, kept working until `expires_at` (epoch seconds) so apps can switch without an outage. */
export interface PreviousSecret {
  digest: string;
  /** When that secret was made (epoch seconds; unknown for secrets made before ages were kept). */
  created_at?: number;
  expires_at: number;
}

/** The previous secret of a client record while it still works at `nowSeconds`, else undefined. */
export function livePreviousSecret(client: object, nowSeconds: number): PreviousSecret | undefined {
  const previous = (client as { previous_client_secret?: PreviousSecret }).previous_client_secret;
  return previous && typeof previous.digest === 'string' && previous.expires_at > nowSeconds ? previous : undefined;
}

/** Whether a presented secret is the client's current one or its unexpired previous one; both are compared, in constant time each. */
export function clientSecretMatches(client: { client_secret?: unknown; previous_client_secret?: unknown }, presented: string, nowSeconds: number): boolean {
  const presentedDigest = secretDigest(presented);
  const current = digestMatches(typeof client.client_secret === 'string' ? client.client_secret : undefined, presentedDigest);
  const previous = livePreviousSecret(client, nowSeconds);
  const old = previous !== undefined && digestMatches(previous.digest, presentedDigest);
  return current || old;
}

/** The longest a rotated-out secret may keep working: an overlap is for redeploying apps, not for keeping two secrets. */
export const MAX_KEEP_OLD_SECONDS = 30 * 86400;

/** A stored client's secret fields, its previous secret left out once expired (dropped at every write). */
function secretFieldsOf(stored: ClientMetadata, nowSeconds: number) {
  const previous = livePreviousSecret(stored, nowSeconds);
  return {
    client_secret: stored.client_secret,
    ...(typeof stored.client_secret_created_at === 'number' ? { client_secret_created_at: stored.client_secret_created_at } : {}),
    ...(previous ? { previous_client_secret: previous } : {}),
  };
}

/** RFC 8252 §7.3: the loopback redirect of a native app (or a developer's machine) may be plain http. */
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);
/** RFC 8252 §7.1: a private-use scheme is a reverse domain name that the app owns, e.g. com.example.app. */
const PRIVATE_USE_SCHEME = /^[a-z][a-z0-9+-]*(\.[a-z0-9+-]+)+$/;

/**
 * Where a client may send people back to (redirect and post-logout URIs): https; plain http only to
 * loopback; a reverse-DNS private-use scheme only for a public (native) client. An http redirect
 * elsewhere hands codes to anyone on the path. Returns the problem, or undefined when the URI is fine.
 */
export function redirectUriProblem(uri: string, field: string, isPublic: boolean): RegistryError | undefined {
  const problem = (code: RefusalCode, params: Record<string, string> = {}) => new RegistryError(code, { field, params });
  // Checked on the URI as given: the URL parser drops tabs and line breaks, and the URI is stored as given.
  // Not echoed: it may carry a password, and its control characters would land in a terminal or a log.
  if (/[\p{Cc}\s]/u.test(uri)) return problem('uri_control_characters');
  const url = URL.parse(uri);
  if (!url) return problem('uri_not_absolute', { uri: JSON.stringify(uri) });
  // Not echoed: a user name or password in the URI may be a secret.
  if (url.username || url.password || /^[^:]+:\/\/[^/?#]*@/.test(uri)) return problem('uri_credentials');
  if (uri.includes('#')) return problem('uri_fragment', { uri });
  if (uri.includes('*')) return problem('uri_wildcard', { uri });
  const scheme = url.protocol.slice(0, -1);
  if (scheme === 'https') return undefined;
  if (scheme === 'http') return LOOPBACK_HOSTS.has(url.hostname) ? undefined : problem('uri_plain_http', { uri });
  if (!PRIVATE_USE_SCHEME.test(scheme)) return problem('uri_scheme', { uri });
  return isPublic ? undefined : problem('uri_private_scheme_confidential', { uri, scheme });
}

/**
 * A `logo_uri` is shown on the app's sign-in and consent pages, whose CSP then allows its origin for
 * images: https only (an http image on an https page is mixed content), no credentials, no control
 * characters. Returns the problem, or undefined.
 */
export function logoUriProblem(uri: string): RegistryError | undefined {
  const problem = (code: RefusalCode, params: Record<string, string> = {}) => new RegistryError(code, { field: 'logo_uri', params });
  if (/[\p{Cc}\s]/u.test(uri)) return problem('uri_control_characters');
  const url = URL.parse(uri);
  if (!url) return problem('uri_not_absolute', { uri: JSON.stringify(uri) });
  if (url.username || url.password || /^[^:]+:\/\/[^/?#]*@/.test(uri)) return problem('uri_credentials');
  if (url.protocol !== 'https:') return problem('logo_uri_https', { uri });
  return undefined;
}

const newSecret = () => randomBytes(32).toString('base64url');
/** 96 random bits; never starting with '-' or '_', so an id is never read as a command-line option. */
function newClientId(): string {
  for (;;) {
    const id = randomBytes(12).toString('base64url');
    if (/^[A-Za-z0-9]/.test(id)) return id;
  }
}

/** Where every process announces a change of a client or API, so caches drop what they hold. */
export const REGISTRY_CHANGES = 'lk:changes:registry';
/** A safety net under the invalidation messages: nothing cached is older than this. */
const CACHE_TTL_MS = 60_000;
const CACHE_MAX_ENTRIES = 10_000;

/**
 * A read-through cache of the registry for the hot paths (every token and introspection request
 * looks up its client, and often an API): clients and APIs change rarely, through the CLI, which
 * announces each change on REGISTRY_CHANGES; every server drops its whole cache on such a message,
 * and when its subscription was interrupted (messages may have been missed).
 */
class ReadCache {
  readonly #entries = new Map<string, { value: unknown; expires: number }>();
  readonly #now: () => number;

  constructor(now: () => number) {
    this.#now = now;
  }

  async get<T>(key: string, load: () => Promise<T>): Promise<T> {
    const now = this.#now();
    const hit = this.#entries.get(key);
    if (hit && hit.expires > now) return hit.value as T;
    const value = await load();
    if (this.#entries.size >= CACHE_MAX_ENTRIES) this.#entries.clear();
    this.#entries.set(key, { value, expires: now + CACHE_TTL_MS });
    return value;
  }

  /** The entry `get` would answer without loading, or undefined: synchronous, for the hot paths' hits. */
  peek<T>(key: string): { readonly value: T } | undefined {
    const hit = this.#entries.get(key);
    return hit && hit.expires > this.#now() ? (hit as { value: T }) : undefined;
  }

  clear() {
    this.#entries.clear();
  }
}

/** An API's scopes as given (`--scope "a b"`): at least one, valid tokens, none of OpenID's. */
function apiScopes(scope: string): string[] {
  const scopes = [...new Set(scope.split(/\s+/).filter(Boolean))];
  if (scopes.length === 0) throw new RegistryError('scope_missing', { field: 'scope' });
  for (const s of scopes) {
    if (OIDC_SCOPES.has(s)) throw new RegistryError('scope_is_openid', { field: 'scope', params: { scope: s } });
    if (!/^[\x21\x23-\x5b\x5d-\x7e]+$/.test(s)) throw new RegistryError('scope_malformed', { field: 'scope', params: { scope: s } });
  }
  return scopes;
}

/** The longest scope description, in characters: one line on the consent page. */
export const MAX_SCOPE_DESCRIPTION = 200;
/** Control characters, line and paragraph separators and bidirectional overrides: a description is one line of plain text that reads as written. */
const NOT_PLAIN_TEXT = /[\p{Cc}\u2028\u2029\u202a-\u202e\u2066-\u2069]/u;

/** A description kept for this scope (an own property only: a scope may be named `constructor`). */
function describedAs(descriptions: Record<string, string> | undefined, scope: string): string | undefined {
  return descriptions && Object.hasOwn(descriptions, scope) ? descriptions[scope] : undefined;
}

/**
 * An API's scope descriptions after `changes`, for its `scopes` only (a removed scope's description
 * goes with it), in the scopes' order. Every problem of the changes is refused at once.
 */
function scopeDescriptionsOf(scopes: string[], before: Record<string, string> | undefined, changes: ScopeDescriptionChanges = {}): Record<string, string> {
  const kept = new Map(scopes.flatMap((s) => { const d = describedAs(before, s); return d === undefined ? [] : [[s, d] as const]; }));
  const problems: Refusal[] = [];
  for (const [scope, text] of Object.entries(changes)) {
    const problem = (code: RefusalCode, params: Record<string, string | number> = {}) => problems.push(new RegistryError(code, { field: 'scope_descriptions', params: { scope, ...params } }));
    if (!scopes.includes(scope)) problem('scope_description_unknown');
    else if (typeof text === 'string' && NOT_PLAIN_TEXT.test(text)) problem('scope_description_control_characters');
    else if (typeof text === 'string' && [...text.trim()].length > MAX_SCOPE_DESCRIPTION) problem('scope_description_too_long', { max: MAX_SCOPE_DESCRIPTION });
    else if (typeof text === 'string' && text.trim()) kept.set(scope, text.trim());
    else kept.delete(scope);
  }
  if (problems.length) throw refusalOf(problems);
  return Object.fromEntries(scopes.filter((s) => kept.has(s)).map((s) => [s, kept.get(s)!]));
}

export class Registry {
  readonly #store: Store;
  readonly #cache?: ReadCache;
  readonly #targets: BackchannelTargetRules;
  /**
   * `cache: true` for the server (call `watch()`); the CLI reads and writes storage directly.
   * `backchannelTargets`: where back-channel logout URIs may point (the configuration's; development rules when left out).
   * `clock`: when a rotated-out secret's overlap ends (tests inject one).
   */
  constructor(store: Store, options: { cache?: boolean; backchannelTargets?: BackchannelTargetRules; clock?: () => number } = {}) {
    this.#store = store;
    if (options.cache) this.#cache = new ReadCache(options.clock ?? Date.now);
    this.#targets = options.backchannelTargets ?? DEVELOPMENT_TARGETS;
    this.#clock = options.clock ?? Date.now;
  }

  readonly #clock: () => number;
  /** Now, in epoch seconds, by the registry's clock (what a previous secret's expiry is compared with). */
  nowSeconds() {
    return Math.floor(this.#clock() / 1000);
  }

  /** Drops the cache whenever any process announces a change. Returns the function that stops it. */
  watch(): Promise<() => Promise<void>> {
    return this.#store.subscribe(REGISTRY_CHANGES, () => this.#forget(), () => this.#forget());
  }

  readonly #changeListeners: (() => void)[] = [];

  /** Calls `listener` whenever what was read may have changed (for caches built on top of this one). */
  onChange(listener: () => void) {
    this.#changeListeners.push(listener);
  }

  #forget() {
    this.#cache?.clear();
    for (const listener of this.#changeListeners) listener();
  }

  #cached<T>(key: string, load: () => Promise<T>): Promise<T> {
    return this.#cache ? this.#cache.get(key, load) : load();
  }

  async #changed() {
    this.#forget();
    await this.#store.publish(REGISTRY_CHANGES, 'changed');
  }

  // ---- clients ----

  async findClient(clientId: string): Promise<AdapterPayload | undefined> {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(clientId)) return undefined;
    return this.#cached(`client:${clientId}`, async () => {
      const raw = await this.#store.get(keys.client(clientId));
      return raw ? (JSON.parse(raw) as AdapterPayload) : undefined;
    });
  }

  /**
   * Builds the oidc-provider metadata of a new client; `validate` (oidc-provider's own schema) may throw.
   * `ownOrigin`: the server's origin, for the clients of its own pages (their URIs are not input).
   * `clientId`: a fixed id, for the server's own clients that a program must know without asking (the CLI's).
   */
  async createClient(input: ClientInput, validate: (metadata: ClientMetadata) => Promise<void>, options: { ownOrigin?: string; clientId?: string } = {}) {
    const clientId = options.clientId ?? newClientId();
    const secret = input.public || input.native ? undefined : newSecret();
    const metadata = await this.#clientMetadata(clientId, input, options);
    if (secret) Object.assign(metadata, { client_secret: secretDigest(secret), client_secret_created_at: this.nowSeconds() });
    await validate(metadata);
    await this.#saveClient(metadata);
    return { clientId, secret, metadata };
  }

  /**
   * Changes an existing client's settings (`changes` left undefined stay as they are) under the same rules
   * as `createClient`; its id, grants and whether it is native stay. Returns the names of the ClientInput
   * fields whose value changed, and `secret` when it became confidential (a new secret, never stored as is).
   */
  async updateClient(clientId: string, changes: ClientChanges, validate: (metadata: ClientMetadata) => Promise<void>, options: { ownOrigin?: string } = {}) {
    const defined = Object.fromEntries(Object.entries(changes).filter(([, value]) => value !== undefined)) as ClientChanges;
    let changed: (keyof ClientChanges)[] = [];
    let secret: string | undefined;
    let madePublic = false;
    const metadata = await this.#changeClient(clientId, async (stored) => {
      secret = undefined;
      madePublic = false;
      const api = apiOfClient(stored);
      if (api) throw new RegistryError('client_of_api', { params: { client_id: clientId, resource: api } });
      const before = clientInputOf(stored);
      const { backchannelLogoutUri, logoUri, ...rest } = defined;
      const after: ClientInput = { ...before, ...rest };
      // A native app cannot keep a secret (RFC 8252 §8.5): it stays public.
      if (rest.public === false && after.native) throw new RegistryError('native_is_public', { field: 'token_endpoint_auth_method' });
      // A public client has no way to send a secret: the neutral value, as clientInputOf reads one.
      if (after.public) after.secretIn = 'header';
      if (backchannelLogoutUri === null) delete after.backchannelLogoutUri;
      else if (backchannelLogoutUri !== undefined) after.backchannelLogoutUri = backchannelLogoutUri;
      if (logoUri === null) delete after.logoUri;
      else if (logoUri !== undefined) after.logoUri = logoUri;
      const next = await this.#clientMetadata(clientId, after, options);
      const now = this.nowSeconds();
      // Made public, its secrets are dropped (none is asked any more); made confidential, it gets one.
      if (next.token_endpoint_auth_method !== 'none') {
        if (typeof stored.client_secret === 'string') Object.assign(next, secretFieldsOf(stored, now));
        else {
          secret = newSecret();
          Object.assign(next, { client_secret: secretDigest(secret), client_secret_created_at: now });
        }
      }
      await validate(next);
      changed = (Object.keys(defined) as (keyof ClientChanges)[]).filter((k) => JSON.stringify(before[k] ?? null) !== JSON.stringify(after[k] ?? null));
      madePublic = stored.token_endpoint_auth_method !== 'none' && next.token_endpoint_auth_method === 'none';
      return changed.length ? next : undefined;
    });
    // Made public: refresh tokens issued while it proved a secret would now work without one. They go,
    // and its people sign in to it again.
    const revoked = madePublic && changed.length ? await revokeClientGrants(this.#store, clientId) : undefined;
    return { metadata, changed, ...(secret && changed.length ? { secret } : {}), ...(revoked ? { revoked } : {}) };
  }

  /**
   * Changes a stored client by compare-and-set on the record as stored now, never a cached copy: a
   * change made meanwhile (an update, a secret rotation, from another process) is read again and
   * `change` applied to it, not overwritten. `change` answers the new record, or undefined for none.
   */
  async #changeClient(clientId: string, change: (stored: ClientMetadata) => Promise<ClientMetadata | undefined>): Promise<ClientMetadata> {
    const key = keys.client(clientId);
    for (let attempt = 0; attempt < 20; attempt += 1) {
      const raw = /^[A-Za-z0-9_-]{1,64}$/.test(clientId) ? await this.#store.get(key) : null;
      if (!raw) throw new RegistryError('client_not_found', { params: { client_id: clientId } });
      const stored = JSON.parse(raw) as ClientMetadata;
      const next = await change(stored);
      if (!next) return stored;
      if (await this.#store.replaceIf(key, raw, JSON.stringify(next))) {
        await this.#changed();
        return next;
      }
    }
    throw new RegistryError('client_busy', { params: { client_id: clientId } });
  }

  /** The one set of rules for a client's settings, at creation and at every update. */
  async #clientMetadata(clientId: string, input: ClientInput, options: { ownOrigin?: string }): Promise<ClientMetadata> {
    const grants = [...new Set(input.grants)];
    if (grants.length === 0) throw new RegistryError('grants_missing', { field: 'grant_types', params: { known: GRANT_TYPES.join(', ') } });
    for (const g of grants) if (!GRANT_TYPES.includes(g)) throw new RegistryError('grant_unknown', { field: 'grant_types', params: { grant: g, known: GRANT_TYPES.join(', ') } });
    // A native app cannot keep a secret (RFC 8252 §8.5): it is a public client.
    const isPublic = input.public === true || input.native === true;
    const interactive = grants.includes('authorization_code');
    if (input.native && !interactive) throw new RegistryError('native_needs_code', { field: 'native' });
    if (isPublic && grants.includes('client_credentials')) throw new RegistryError('public_client_credentials', { field: 'grant_types' });
    // A device (RFC 8628) signs a person in too, on another screen: it may get refresh tokens.
    if (grants.includes('refresh_token') && !interactive && !grants.includes(DEVICE_CODE_GRANT)) throw new RegistryError('refresh_needs_interactive', { field: 'grant_types', params: { device_grant: DEVICE_CODE_GRANT } });
    if (interactive && !input.redirectUris?.length) throw new RegistryError('redirect_uri_missing', { field: 'redirect_uris' });
    if (!interactive && input.redirectUris?.length) throw new RegistryError('needs_code_grant', { field: 'redirect_uris' });
    if (!interactive && input.requirePar) throw new RegistryError('needs_code_grant', { field: 'require_pushed_authorization_requests' });
    const pkce = input.pkce ?? 'required';
    if (pkce !== 'required' && pkce !== 'optional') throw new RegistryError('pkce_unknown', { field: 'pkce', params: { value: JSON.stringify(pkce) } });
    if (pkce === 'optional' && isPublic) throw new RegistryError('pkce_optional_public', { field: 'pkce' });
    if (pkce === 'optional' && !interactive) throw new RegistryError('pkce_optional_needs_code', { field: 'pkce' });
    const secretIn = input.secretIn ?? 'header';
    if (secretIn !== 'header' && secretIn !== 'body') throw new RegistryError('secret_in_unknown', { field: 'token_endpoint_auth_method', params: { value: JSON.stringify(secretIn) } });
    if (secretIn === 'body' && isPublic) throw new RegistryError('secret_in_public', { field: 'token_endpoint_auth_method' });
    const refreshGrace = input.refreshGrace ?? 0;
    if (!Number.isInteger(refreshGrace) || refreshGrace < 0 || refreshGrace > MAX_REFRESH_GRACE_SECONDS) {
      throw new RegistryError('refresh_grace_range', { field: 'refresh_grace_seconds', params: { max: MAX_REFRESH_GRACE_SECONDS } });
    }
    if (refreshGrace > 0 && !grants.includes('refresh_token')) throw new RegistryError('refresh_grace_needs_refresh', { field: 'refresh_grace_seconds' });
    const targets = [
      ...(input.redirectUris ?? []).map((uri) => ({ uri, field: 'redirect_uris' })),
      ...(input.postLogoutRedirectUris ?? []).map((uri) => ({ uri, field: 'post_logout_redirect_uris' })),
    ];
    if (input.backchannelLogoutUri !== undefined) {
      if (!interactive) throw new RegistryError('needs_code_grant', { field: 'backchannel_logout_uri' });
      // Server to server: https, or http to a loopback host (an app on the same machine, in development).
      const problem = redirectUriProblem(input.backchannelLogoutUri, 'backchannel_logout_uri', false);
      if (problem) throw problem;
      const target = backchannelTargetProblem(input.backchannelLogoutUri, this.#targets);
      if (target) throw new RegistryError('backchannel_target_refused', { field: 'backchannel_logout_uri', params: { reason: target } });
    }
    if (input.logoUri !== undefined) {
      const problem = logoUriProblem(input.logoUri);
      if (problem) throw problem;
    }
    for (const { uri, field } of targets) {
      // The server's own pages (demo, /account) follow ISSUER, which is https in production.
      if (options.ownOrigin && URL.parse(uri)?.origin === options.ownOrigin) continue;
      const problem = redirectUriProblem(uri, field, isPublic);
      if (problem) throw problem;
    }
    // oidc-provider accepts private-use schemes from native clients only; a native client's loopback
    // redirect URIs match on any port (RFC 8252 §7.3), which oidc-provider does for application_type native.
    const native = input.native === true || targets.some(({ uri }) => !['http:', 'https:'].includes(URL.parse(uri)!.protocol));
    const scopes = input.scope.split(/\s+/).filter(Boolean);
    await this.#checkScopesExist(scopes);

    return {
      client_id: clientId,
      client_name: input.name,
      grant_types: grants,
      response_types: interactive ? ['code'] : [],
      redirect_uris: input.redirectUris ?? [],
      post_logout_redirect_uris: input.postLogoutRedirectUris ?? [],
      scope: scopes.join(' '),
      token_endpoint_auth_method: isPublic ? 'none' : secretIn === 'body' ? 'client_secret_post' : 'client_secret_basic',
      ...(native ? { application_type: 'native' as const } : {}),
      ...(input.native ? { native_app: true } : {}),
      ...(input.firstParty ? { first_party: true } : {}),
      ...(input.requireMfa ? { require_mfa: true } : {}),
      ...(input.requirePar ? { require_pushed_authorization_requests: true } : {}),
      ...(pkce === 'optional' ? { pkce_optional: true } : {}),
      ...(refreshGrace > 0 ? { refresh_grace_seconds: refreshGrace } : {}),
      // Every logout token carries `sid` (and every ID token of the app, so it can match them).
      ...(input.backchannelLogoutUri ? { backchannel_logout_uri: input.backchannelLogoutUri, backchannel_logout_session_required: true } : {}),
      ...(input.logoUri ? { logo_uri: input.logoUri } : {}),
    };
  }

  async #checkScopesExist(scopes: string[]) {
    for (const scope of scopes) {
      if (OIDC_SCOPES.has(scope)) continue;
      if (!(await this.#store.get(keys.scopeOwner(scope)))) {
        throw new RegistryError('scope_unowned', { field: 'scope', params: { scope } });
      }
    }
  }

  async #saveClient(metadata: ClientMetadata) {
    await this.#store.set(keys.client(metadata.client_id), JSON.stringify(metadata));
    await this.#store.setAdd(keys.clients, metadata.client_id);
    await this.#store.sortedAdd(keys.clientsById, metadata.client_id);
    await this.#changed();
  }

  async listClients(): Promise<ClientMetadata[]> {
    const ids = await this.#store.setMembers(keys.clients);
    const found = await Promise.all(ids.map((id) => this.findClient(id)));
    return found.filter((c): c is ClientMetadata => !!c);
  }

  /** Deletes a client, then revokes its grants and tokens (none can be issued to it any more by then). Returns how many. */
  async deleteClient(clientId: string): Promise<{ grants: number; tokens: number }> {
    const client = await this.findClient(clientId);
    if (!client) throw new RegistryError('client_not_found', { params: { client_id: clientId } });
    const api = apiOfClient(client);
    if (api) throw new RegistryError('client_of_api_delete', { params: { client_id: clientId, resource: api } });
    await this.#store.del(keys.client(clientId));
    await this.#store.setRemove(keys.clients, clientId);
    await this.#store.sortedRemove(keys.clientsById, clientId);
    await this.#changed();
    return revokeClientGrants(this.#store, clientId);
  }

  /**
   * A new secret for a confidential client. `keepOldSeconds` > 0: the secret it replaces keeps working
   * that long (one previous secret at most: a second rotation drops the older one); 0: it dies now.
   */
  async rotateSecret(clientId: string, options: { keepOldSeconds?: number } = {}): Promise<string> {
    const keepOld = options.keepOldSeconds ?? 0;
    if (!Number.isInteger(keepOld) || keepOld < 0 || keepOld > MAX_KEEP_OLD_SECONDS) {
      throw new RegistryError('keep_old_range', { field: 'keep_old_seconds', params: { max: MAX_KEEP_OLD_SECONDS } });
    }
    const secret = newSecret();
    const now = this.nowSeconds();
    await this.#changeClient(clientId, async (client) => {
      if (client.token_endpoint_auth_method === 'none') throw new RegistryError('client_public_no_secret', { params: { client_id: clientId } });
      const { previous_client_secret: _dropped, ...rest } = client;
      const created = typeof client.client_secret_created_at === 'number' ? { created_at: client.client_secret_created_at } : {};
      const previous: PreviousSecret | undefined = keepOld > 0 && typeof client.client_secret === 'string' ? { digest: client.client_secret, ...created, expires_at: now + keepOld } : undefined;
      return { ...rest, client_secret: secretDigest(secret), client_secret_created_at: now, ...(previous ? { previous_client_secret: previous } : {}) };
    });
    return secret;
  }

  /** Ends a client's previous secret now. Returns whether there was one still working. */
  async revokeOldSecret(clientId: string): Promise<boolean> {
    let had = false;
    await this.#changeClient(clientId, async (client) => {
      if (client.token_endpoint_auth_method === 'none') throw new RegistryError('client_public_no_secret', { params: { client_id: clientId } });
      had = livePreviousSecret(client, this.nowSeconds()) !== undefined;
      if (client.previous_client_secret === undefined) return undefined;
      const { previous_client_secret: _dropped, ...rest } = client;
      return rest;
    });
    return had;
  }

  // ---- resource servers ----

  async findResource(uri: string): Promise<ResourceServer | undefined> {
    return this.#cached(`resource:${uri}`, async () => {
      const raw = await this.#store.get(keys.resource(uri));
      return raw ? (JSON.parse(raw) as ResourceServer) : undefined;
    });
  }

  /** The API that owns a scope, if any. */
  async resourceForScope(scope: string): Promise<string | undefined> {
    return this.#cached(`scope:${scope}`, async () => (await this.#store.get(keys.scopeOwner(scope))) ?? undefined);
  }

  /** `resourceForScope` and `findResource` as cached, without reading storage; undefined when not cached (ask them). */
  cachedScopeOwner(scope: string) {
    return this.#cache?.peek<string | undefined>(`scope:${scope}`);
  }

  cachedResource(uri: string) {
    return this.#cache?.peek<ResourceServer | undefined>(`resource:${uri}`);
  }

  /** What the operator wrote that an API scope lets an app do, if anything (the consent page's words). */
  async scopeDescription(scope: string): Promise<string | undefined> {
    const owner = await this.resourceForScope(scope);
    return owner ? describedAs((await this.findResource(owner))?.scopeDescriptions, scope) : undefined;
  }

  async createResource(input: { uri: string; scope: string; tokenFormat?: 'opaque' | 'jwt'; ttl?: number; privateScopes?: boolean; scopeDescriptions?: ScopeDescriptionChanges }) {
    let url: URL;
    try {
      url = new URL(input.uri);
    } catch {
      throw new RegistryError('uri_not_absolute', { field: 'uri', params: { uri: JSON.stringify(input.uri) } });
    }
    if (url.hash) throw new RegistryError('resource_uri_fragment', { field: 'uri' });
    const uri = input.uri;
    const scopes = apiScopes(input.scope);
    const ttl = input.ttl ?? 3600;
    if (!Number.isInteger(ttl) || ttl < 60 || ttl > 86400) throw new RegistryError('ttl_range', { field: 'ttl' });
    const tokenFormat = input.tokenFormat ?? 'opaque';
    if (tokenFormat !== 'opaque' && tokenFormat !== 'jwt') throw new RegistryError('token_format_unknown', { field: 'token_format' });
    const descriptions = scopeDescriptionsOf(scopes, undefined, input.scopeDescriptions);
    if (await this.findResource(uri)) throw new RegistryError('resource_exists', { field: 'uri', params: { uri } });
    for (const s of scopes) {
      const owner = await this.resourceForScope(s);
      if (owner) throw new RegistryError('scope_taken', { field: 'scope', params: { scope: s, owner } });
    }
    // Claim the scopes first, so two APIs can never own one scope; undo on conflict.
    await this.#claimScopes(uri, scopes);
    const clientId = newClientId();
    const secret = newSecret();
    const resource: ResourceServer = {
      uri, scopes, tokenFormat, ttl, clientId, createdAt: Date.now(), ...(input.privateScopes ? { privateScopes: true } : {}), ...(Object.keys(descriptions).length ? { scopeDescriptions: descriptions } : {}),
    };
    await this.#store.set(keys.resource(uri), JSON.stringify(resource));
    await this.#store.setAdd(keys.resources, uri);
    // The API's own client: it only authenticates at introspection and revocation.
    await this.#saveClient({
      client_id: clientId,
      client_name: `API ${uri}`,
      client_secret: secretDigest(secret),
      grant_types: [],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      resource_server: uri,
    });
    return { resource, secret };
  }

  async listResources(): Promise<ResourceServer[]> {
    const uris = await this.#store.setMembers(keys.resources);
    const found = await Promise.all(uris.map((u) => this.findResource(u)));
    return found.filter((r): r is ResourceServer => !!r).sort((a, b) => a.createdAt - b.createdAt);
  }

  async deleteResource(uri: string): Promise<void> {
    const resource = await this.findResource(uri);
    if (!resource) throw new RegistryError('resource_not_found', { params: { uri } });
    await this.#store.del(keys.resource(uri), keys.client(resource.clientId), ...resource.scopes.map((s) => keys.scopeOwner(s)));
    await this.#store.setRemove(keys.resources, uri);
    await this.#store.setRemove(keys.clients, resource.clientId);
    await this.#store.sortedRemove(keys.clientsById, resource.clientId);
    await this.#changed();
  }

  /**
   * Changes an API's token lifetime or format, its scopes (the list given replaces the list), whether
   * discovery lists them, or their descriptions (those named change, the others stay; a removed scope's
   * goes with it), under the creation rules; its URI and client stay. A scope added is claimed as
   * at creation (never one another API owns); the record is written only if nobody changed it meanwhile,
   * and a removed scope is given up after that. Returns what changed.
   */
  async updateResource(uri: string, changes: { tokenFormat?: 'opaque' | 'jwt'; ttl?: number; scope?: string; privateScopes?: boolean; scopeDescriptions?: ScopeDescriptionChanges }) {
    const raw = await this.#store.get(keys.resource(uri));
    if (!raw) throw new RegistryError('resource_not_found', { params: { uri } });
    const resource = JSON.parse(raw) as ResourceServer;
    const ttl = changes.ttl ?? resource.ttl;
    if (!Number.isInteger(ttl) || ttl < 60 || ttl > 86400) throw new RegistryError('ttl_range', { field: 'ttl' });
    const tokenFormat = changes.tokenFormat ?? resource.tokenFormat;
    if (tokenFormat !== 'opaque' && tokenFormat !== 'jwt') throw new RegistryError('token_format_unknown', { field: 'token_format' });
    const scopes = changes.scope === undefined ? resource.scopes : apiScopes(changes.scope);
    const privateScopes = changes.privateScopes ?? resource.privateScopes === true;
    const descriptions = scopeDescriptionsOf(scopes, resource.scopeDescriptions, changes.scopeDescriptions);
    const { privateScopes: _was, scopeDescriptions: _described, ...rest } = resource;
    const updated: ResourceServer = { ...rest, ttl, tokenFormat, scopes, ...(privateScopes ? { privateScopes: true } : {}), ...(Object.keys(descriptions).length ? { scopeDescriptions: descriptions } : {}) };
    const added = scopes.filter((s) => !resource.scopes.includes(s));
    const removed = resource.scopes.filter((s) => !scopes.includes(s));
    const changed = [
      ...(['ttl', 'tokenFormat'] as const).filter((k) => updated[k] !== resource[k]),
      ...(added.length || removed.length ? ['scopes'] : []),
      ...(privateScopes !== (resource.privateScopes === true) ? ['privateScopes'] : []),
      ...(JSON.stringify(descriptions) !== JSON.stringify(resource.scopeDescriptions ?? {}) ? ['scopeDescriptions'] : []),
    ];
    if (!changed.length) return { resource, changed };
    const claimed = await this.#claimScopes(uri, added);
    if (!(await this.#store.replaceIf(keys.resource(uri), raw, JSON.stringify(updated)))) {
      await this.#store.del(...claimed.map((c) => keys.scopeOwner(c)));
      throw new RegistryError('resource_busy', { params: { uri } });
    }
    if (removed.length) await this.#store.del(...removed.map((s) => keys.scopeOwner(s)));
    await this.#changed();
    return { resource: updated, changed };
  }

  /** Claims scopes for an API, all or none: two APIs can never own one scope. */
  async #claimScopes(uri: string, scopes: string[]): Promise<string[]> {
    const claimed: string[] = [];
    for (const s of scopes) {
      if (!(await this.#store.set(keys.scopeOwner(s), uri, { ifAbsent: true }))) {
        if (claimed.length) await this.#store.del(...claimed.map((c) => keys.scopeOwner(c)));
        const owner = await this.#store.get(keys.scopeOwner(s));
        throw owner === uri ? new RegistryError('resource_busy', { params: { uri } }) : new RegistryError('scope_taken', { field: 'scope', params: { scope: s, owner: owner ?? 'another API' } });
      }
      claimed.push(s);
    }
    return claimed;
  }

  /** One page of clients in id order, after the cursor (the last id of the previous page). */
  async clientPage(options: { after?: string; limit: number }): Promise<{ clients: ClientMetadata[]; last?: string }> {
    const ids = await this.#store.sortedRangeByLex(keys.clientsById, { after: options.after, limit: options.limit });
    const found = await Promise.all(ids.map((id) => this.findClient(id)));
    return { clients: found.filter((c): c is ClientMetadata => !!c), last: ids.length === options.limit ? ids.at(-1) : undefined };
  }

  /** Indexes clients written before the index existed (at start: only when the index has fewer entries than the set). */
  async backfillIndex(): Promise<number> {
    if ((await this.#store.sortedCount(keys.clientsById)) >= (await this.#store.setCount(keys.clients))) return 0;
    const ids = await this.#store.setMembers(keys.clients);
    for (const id of ids) await this.#store.sortedAdd(keys.clientsById, id);
    return ids.length;
  }
}

/**
 * Registers one of the server's own first-party public clients (the account page, the console) once per
 * issuer, so every node finds the same one; registered again when the issuer's callback changed.
 * Called at start, before the provider is configured: their grants live only as long as a sign-in needs.
 */
export async function ensureOwnClient(
  { store, registry, issuer }: { store: Store; registry: Registry; issuer: string },
  own: { key: string; name: string; callbackPath: string },
): Promise<string> {
  const callback = `${issuer}${own.callbackPath}`;
  const id = await store.get(own.key);
  const existing = id ? await registry.findClient(id) : undefined;
  if (id && existing && ((existing.redirect_uris ?? []) as string[]).includes(callback)) return id;
  if (id && existing) await registry.deleteClient(id).catch(() => {});
  const created = await registry.createClient(
    { name: own.name, grants: ['authorization_code'], redirectUris: [callback], scope: 'openid', public: true, firstParty: true },
    async () => {},
    { ownOrigin: new URL(issuer).origin },
  );
  await store.set(own.key, created.clientId);
  return created.clientId;
}

/**
 * Where an own client's page sends a visitor it cannot serve yet: `/auth` as that client. PKCE is
 * required of every client; the code is never redeemed (the session is what the page uses), so the
 * verifier is not kept. `extra`: more authorization parameters (`acr_values`, `prompt`).
 */
export function ownSignInUrl(issuer: string, clientId: string, callback: string, extra: Record<string, string> = {}): string {
  const url = new URL('/auth', issuer);
  url.search = new URLSearchParams({
    client_id: clientId,
    redirect_uri: callback,
    response_type: 'code',
    scope: 'openid',
    code_challenge: randomBytes(32).toString('base64url'),
    code_challenge_method: 'S256',
    ...extra,
  }).toString();
  return url.href;
}

/** The API a client belongs to (its machine identity), by the API's URI. */
function apiOfClient(client: { [key: string]: unknown }): string | undefined {
  return typeof client.resource_server === 'string' && client.resource_server ? client.resource_server : undefined;
}
