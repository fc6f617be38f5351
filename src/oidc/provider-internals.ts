import { createHash } from 'node:crypto';
import Provider, { errors, type JWKS, type KoaContextWithOIDC, type ResourceServer } from 'oidc-provider';
// @ts-expect-error oidc-provider's internals ship no types; test/live-signing-keys.test.ts guards this import.
import initializeKeystore from 'oidc-provider/lib/helpers/initialize_keystore.js';
// @ts-expect-error as above; test/provider-internals.test.ts guards this import (refreshGraceWindow).
import instance from 'oidc-provider/lib/helpers/weak_cache.js';
import { throttleClientAuthentication } from '../security/client-auth-throttle.ts';
import type { Lockout } from '../security/lockout.ts';
import type { SecretBox } from '../security/secret-box.ts';
import { GRANT_BOUND_MODELS, grantTag, keys } from '../storage/keys.ts';
import { enqueueLogouts } from '../storage/logout-queue.ts';
import { RefreshRotation, refreshRotation, RepeatedRefresh, TokenBatch, tokenBatch } from '../storage/oidc-adapter.ts';
import type { Store } from '../storage/store.ts';
import { clientSecretMatches, type Registry } from './registry.ts';

/**
 * Every place where Latchkey replaces a method of oidc-provider (a "bend"), rather than configuring
 * it. Each bend is a small function below, installed by `bendProviderInternals` in a fixed order;
 * test/provider-internals.test.ts holds a canary for each, so an upgrade that moves what a bend relies
 * on fails there first. docs/architecture.md "Bends of oidc-provider" lists them with their reasons.
 * Their sibling, src/oidc/provider-wording.ts, holds the bends by another name: answers rewritten where
 * oidc-provider's own wording is recognised (its words in one list, a canary for each in the same test).
 */
export interface InternalsDeps {
  store: Store;
  registry: Registry;
  /** Failed client authentication, counted per source (security/client-auth-throttle.ts). */
  clientLockout: Lockout;
  /** The configured `features.resourceIndicators.getResourceServerInfo`. */
  getResourceServerInfo: (ctx: KoaContextWithOIDC, resource: string, client: ClientLike) => Promise<ResourceServer>;
  /** Seals the token response kept for a refresh token's grace window. */
  box: SecretBox;
  /** When a rotated-out client secret stops working (ms); tests inject one. */
  clock?: () => number;
}

type ClientLike = NonNullable<KoaContextWithOIDC['oidc']['client']>;

/**
 * Installs every bend, once, right after `new Provider`. The order matters where two bends wrap one
 * method: the later wraps the earlier, so it runs first (the throttle before the client cache).
 * One more bend is not installed here but called at run time: `replaceSigningKeys` (key rotation).
 */
export function bendProviderInternals(provider: Provider, deps: InternalsDeps): void {
  tagTokenIdsWithGrant(provider);
  atomicReplayDetection(provider, deps.store);
  digestedClientSecrets(provider, deps.clock);
  registeredSecretPlacement(provider);
  cachedClientsWithApiScopes(provider, deps.registry);
  throttledClientAuthentication(provider, deps.clientLockout);
  targetCheckedBeforeRotation(provider, deps.getResourceServerInfo);
  offlineAccessWithoutPromptConsent(provider);
  refreshGraceWindow(provider, deps.store, deps.box);
  batchedCodeRedemption(provider, deps.store);
  queuedBackchannelLogout(provider, deps.store);
}

type TokenModel = { prototype: { generateTokenId(): string; grantId?: string; format?: string } };

/**
 * Why: a token's storage key comes from its id alone (oidc-provider looks tokens up by value), so the
 * id starts with its grant's tag, which keeps all records of a grant in one Redis Cluster slot.
 */
export function tagTokenIdsWithGrant(provider: Provider): void {
  // @types/oidc-provider does not declare the models' generateTokenId, and names them as known keys only.
  const models = provider as unknown as Record<string, TokenModel | undefined>;
  for (const name of GRANT_BOUND_MODELS) {
    const Model = models[name];
    if (!Model) throw new Error(`oidc-provider has no ${name} model to tag`);
    // eslint-disable-next-line @typescript-eslint/unbound-method -- the original, called below with the token as `this`
    const original = Model.prototype.generateTokenId;
    Model.prototype.generateTokenId = function generateTokenId() {
      const id = original.call(this);
      // JWT access tokens are not stored; their jti is not a storage key. The random part stays upstream's.
      return this.grantId && this.format !== 'jwt' ? `${grantTag(this.grantId)}${id}` : id;
    };
  }
}

/**
 * Why: upstream's `unique` (DPoP proofs, client assertions) is a find then a save, so two nodes or two
 * parallel requests could both accept one proof; one SET NX is atomic, and one round trip.
 */
export function atomicReplayDetection(provider: Provider, store: Store): void {
  provider.ReplayDetection.unique = async (iss, jti, exp) => {
    const id = createHash('sha256').update(`${iss}${jti}`).digest('base64url');
    const ttl = Math.max(1, Math.ceil(exp - Date.now() / 1000));
    return store.set(keys.model('ReplayDetection', id), '1', { ttl, ifAbsent: true });
  };
}

/** Why: client secrets are stored as SHA-256 digests (registry.ts): compare the digest of what was presented. */
export function digestedClientSecrets(provider: Provider, clock: () => number = Date.now): void {
  provider.Client.prototype.compareClientSecret = function compareClientSecret(this: { clientSecret?: string; previous_client_secret?: unknown }, presented: string) {
    // The secret a rotation replaced works until its overlap ends (`client rotate-secret --keep-old`).
    return clientSecretMatches({ client_secret: this.clientSecret, previous_client_secret: this.previous_client_secret }, presented, Math.floor(clock() / 1000));
  };
}

/**
 * Why: oidc-provider accepts a secret in the Basic header or in the body for a client registered with
 * either method (client_auth.js offers both placements for both), so a `client_secret_basic` client could
 * post its secret and a `client_secret_post` one send it in the header. The way it was registered with is
 * the only one accepted, at every client-authenticating endpoint: checked before the secret is compared.
 */
export function registeredSecretPlacement(provider: Provider): void {
  const prototype = provider.Client.prototype;
  // eslint-disable-next-line @typescript-eslint/unbound-method -- the original, called below with the client as `this`
  const compare = prototype.compareClientSecret;
  prototype.compareClientSecret = function compareClientSecret(this: { clientAuthMethod?: string }, presented: string) {
    const ctx = Provider.ctx;
    const registered = this.clientAuthMethod;
    if (ctx && (registered === 'client_secret_basic' || registered === 'client_secret_post')) {
      const used = ctx.oidc.params?.client_secret !== undefined ? 'client_secret_post' : 'client_secret_basic';
      if (used !== registered) throw secretSentTheWrongWay(registered);
    }
    return compare.call(this, presented);
  };
}

function secretSentTheWrongWay(registered: 'client_secret_basic' | 'client_secret_post') {
  const description = registered === 'client_secret_basic'
    ? 'this client is registered to send its secret in the Authorization header (client_secret_basic), not in the request body'
    : 'this client is registered to send its secret in the request body (client_secret_post), not in the Authorization header';
  // RFC 6749 §5.2: invalid_client is a 401.
  return Object.assign(new errors.InvalidClient(description, `client authentication method ${registered} expected`), { status: 401, statusCode: 401 });
}

const cachedClients = new WeakMap<Provider, (id: string) => Awaited<ReturnType<Provider['Client']['find']>>>();

/**
 * The client `provider.Client.find(id)` would answer from its cache (`cachedClientsWithApiScopes`), or
 * undefined when it would build one (or has none): the lean path's hit then costs no promise.
 */
export function cachedClient(provider: Provider, id: string) {
  return cachedClients.get(provider)?.(id);
}

/**
 * Why: oidc-provider validates a client with its OpenID scopes only (providerClientMetadata), so its API
 * scopes are put back once built; and the built client is kept until the registry changes (at most 60 s),
 * since every token request finds its client and building re-serializes and hashes the metadata.
 */
export function cachedClientsWithApiScopes(provider: Provider, registry: Registry): void {
  const find = provider.Client.find.bind(provider.Client);
  const built = new Map<string, { client: Awaited<ReturnType<typeof find>>; expires: number }>();
  registry.onChange(() => built.clear());
  cachedClients.set(provider, (id) => {
    const hit = built.get(id);
    return hit && hit.expires > Date.now() ? hit.client : undefined;
  });
  provider.Client.find = async (id: string) => {
    const hit = built.get(id);
    if (hit && hit.expires > Date.now()) return hit.client;
    const client = await find(id);
    const api = client?.api_scopes;
    if (client && typeof api === 'string') {
      const all = new Set([...String(client.scope ?? '').split(' '), ...api.split(' ')].filter(Boolean));
      Object.assign(client, { scope: [...all].join(' ') });
    }
    if (client) {
      if (built.size >= 10_000) built.clear();
      built.set(id, { client, expires: Date.now() + 60_000 });
    }
    return client;
  };
}

/**
 * Why: the first `Client.find` of a client-authenticating request is its authentication (Basic header or
 * body `client_id`, which only oidc-provider parses), so that is where a throttled source is refused,
 * before any secret is compared.
 */
export function throttledClientAuthentication(provider: Provider, lockout: Lockout): void {
  const find = provider.Client.find.bind(provider.Client);
  provider.Client.find = async (id: string) => {
    const ctx = Provider.ctx;
    if (ctx) await throttleClientAuthentication(ctx, id, lockout);
    return find(id);
  };
}

type RotatedToken = { resource?: string | string[]; resourceIndicators: Set<string>; consume(): Promise<void> };

/**
 * Why: the refresh grant consumes the refresh token before it resolves the access token's resource, so a
 * refused `resource` burned the token and the client's retry looked like reuse (grant revoked). The same
 * resolution is checked here first, so a refused request leaves the token usable.
 */
export function targetCheckedBeforeRotation(provider: Provider, getResourceServerInfo: InternalsDeps['getResourceServerInfo']): void {
  // @types/oidc-provider declares neither a refresh token's `resource` nor its `consume`.
  const prototype = (provider.RefreshToken as unknown as { prototype: RotatedToken }).prototype;
  // eslint-disable-next-line @typescript-eslint/unbound-method -- the original, called below with the token as `this`
  const consume = prototype.consume;
  prototype.consume = async function consumeAfterTargetCheck(this: RotatedToken) {
    const ctx = Provider.ctx;
    if (ctx && ctx.oidc.route === 'token' && ctx.oidc.params?.grant_type === 'refresh_token') {
      await checkRefreshTarget(ctx, this, getResourceServerInfo);
    }
    return consume.call(this);
  };
}

/**
 * What oidc-provider's resolve_resource.js and then `getResourceServerInfo` will decide for the new access
 * token, for our configuration (`useGrantedResource` is always true, `defaultResource` keeps a list as is).
 */
async function checkRefreshTarget(ctx: KoaContextWithOIDC, token: RotatedToken, getResourceServerInfo: InternalsDeps['getResourceServerInfo']) {
  const resource = (ctx.oidc.params?.resource as string | string[] | undefined) ?? token.resource;
  if (resource === undefined || (Array.isArray(resource) && resource.length === 0)) return;
  if (Array.isArray(resource)) throw new errors.InvalidTarget('only a single resource indicator value must be requested/resolved during Access Token Request');
  if (!token.resourceIndicators.has(resource)) throw new errors.InvalidTarget();
  await getResourceServerInfo(ctx, resource, ctx.oidc.client!);
}

/**
 * Why: `latchkey keys rotate` must take effect without a restart, and oidc-provider reads
 * `configuration.jwks` once, at construction, through this same initializer. It validates every key and
 * only then replaces `instance(provider).keystore` and `.jwks` (a bad key throws and leaves the old set).
 * ID tokens and JWT access tokens sign with the first key of their algorithm: list the current keys first.
 */
export function replaceSigningKeys(provider: Provider, jwks: JWKS): void {
  (initializeKeystore as (this: Provider, jwks: JWKS) => void).call(provider, jwks);
}

/** How long a repeated refresh waits for the first one's response: that request is already past its consume. */
const REPEATED_REFRESH_WAIT_MS = 5000;
const REPEATED_REFRESH_POLL_MS = 20;

type GrantHandler = (ctx: KoaContextWithOIDC) => Promise<void>;

/**
 * Why: apps that refresh from two tabs at once present one refresh token twice, which is reuse and
 * revokes the grant. For a client with `refresh_grace_seconds`, the refresh grant runs with that window
 * (`RefreshRotation.grace`, read by the adapter): within it, a repeat is decided by the atomic rotation
 * script and answered with the first use's response, kept sealed for the window under the grant's hash
 * tag; the repeat waits for it when the first use is still running. And for every client, the grant runs
 * inside one `RefreshRotation`, so the adapter consumes, saves and indexes in one store call (sent here
 * at the end when the access token is a JWT, which is never saved). oidc-provider offers no hook around
 * its grant handlers, so the registered `refresh_token` handler is wrapped.
 */
export function refreshGraceWindow(provider: Provider, store: Store, box: SecretBox): void {
  // eslint-disable-next-line @typescript-eslint/no-unsafe-call -- an untyped internal (see its import above)
  const handlers = (instance(provider) as { grantTypeHandlers: Map<string, GrantHandler> }).grantTypeHandlers;
  const refresh = handlers.get('refresh_token');
  if (!refresh) throw new Error('oidc-provider has no refresh_token grant handler to wrap');
  handlers.set('refresh_token', async (ctx) => {
    const grace = Number(ctx.oidc.client?.['refresh_grace_seconds'] ?? 0);
    const rotation = new RefreshRotation(grace > 0 ? grace : 0);
    const rotate = () =>
      refreshRotation.run(rotation, async () => {
        await refresh(ctx);
        await rotation.settle();
      });
    if (!(grace > 0)) return rotate();
    const presented = String(ctx.oidc.params?.refresh_token);
    try {
      await rotate();
    } catch (err) {
      if (!(err instanceof RepeatedRefresh)) throw err;
      ctx.body = JSON.parse(box.open(await firstResponse(store, presented), keys.refreshResponse(presented)));
      return;
    }
    const rotated = ctx.oidc.entities.RotatedRefreshToken as { jti: string; grantId: string } | undefined;
    if (!rotated) return;
    const key = keys.refreshResponse(rotated.jti);
    await store.putModel(key, box.seal(JSON.stringify(ctx.body), key), Math.ceil(grace), keys.grantIndex(rotated.grantId), { consumable: false });
  });
}

/**
 * Why: a code's redemption saves the access token, then the refresh token, each with its own entry in the
 * grant's index (SET, SADD, EXPIRE NX: six commands). Inside one `TokenBatch` the adapter keeps them and
 * they are written together when the handler ends, before the response is sent (four). oidc-provider offers
 * no hook around its grant handlers, so the registered `authorization_code` handler is wrapped.
 */
export function batchedCodeRedemption(provider: Provider, store: Store): void {
  // eslint-disable-next-line @typescript-eslint/no-unsafe-call -- an untyped internal (see its import above)
  const handlers = (instance(provider) as { grantTypeHandlers: Map<string, GrantHandler> }).grantTypeHandlers;
  const redeem = handlers.get('authorization_code');
  if (!redeem) throw new Error('oidc-provider has no authorization_code grant handler to wrap');
  handlers.set('authorization_code', async (ctx) => {
    const batch = new TokenBatch();
    await tokenBatch.run(batch, async () => {
      await redeem(ctx);
      await batch.write(store);
    });
  });
}

/** The sealed response of a refresh token's first use, once that request has saved it (bounded wait). */
async function firstResponse(store: Store, refreshTokenId: string): Promise<string> {
  const key = keys.refreshResponse(refreshTokenId);
  const deadline = performance.now() + REPEATED_REFRESH_WAIT_MS;
  for (;;) {
    const stored = await store.getModel(key, { consumable: false });
    if (stored) return stored.payload;
    if (performance.now() > deadline) throw new errors.InvalidGrant('refresh token already rotated, and the response to its first use is not available');
    await new Promise((resolve) => setTimeout(resolve, REPEATED_REFRESH_POLL_MS));
  }
}

/**
 * Why: oidc-provider's sign-out (end_session) awaits `client.backchannelLogout(sub, sid)` for each app,
 * once and with its 2.5 s deadline, so a slow app delays the person's sign-out and a failed one is lost.
 * The notice is queued instead; oidc/backchannel-logout.ts signs and delivers it, with retries.
 */
export function queuedBackchannelLogout(provider: Provider, store: Store): void {
  // @types/oidc-provider does not declare Client#backchannelLogout.
  const prototype = provider.Client.prototype as unknown as { backchannelLogout(sub: string, sid: string): Promise<void> };
  prototype.backchannelLogout = async function backchannelLogout(this: { clientId: string }, sub: string, sid: string) {
    await enqueueLogouts(store, [{ clientId: this.clientId, sub, sid }]);
  };
}

/** What oidc-provider's `checkScope` asks before it keeps `offline_access`: whether `prompt` includes consent. */
class PromptsKeepingOfflineAccess extends Set<string> {
  override has(value: string): boolean {
    return value === 'consent' || super.has(value);
  }
}

/**
 * Why: oidc-provider drops `offline_access` unless `prompt` includes consent (OIDC Core §11), in
 * `checkScope`, on the resolved parameters of GET and POST /auth, of PAR and of a loaded `request_uri`.
 * Our consent page names offline access and is asked once per person and client (the consent §11
 * wants), so when the request asks for it, `prompts.has('consent')` answers yes. Only membership is
 * bent: iterating the set, and so `params.prompt` (which checkMaxAge rebuilds from it), stay what the
 * app sent, and the consent prompt's own check reads `params.prompt` (provider.ts `signInPolicy`).
 */
export function offlineAccessWithoutPromptConsent(provider: Provider): void {
  const prototype: object = provider.OIDCContext.prototype;
  // eslint-disable-next-line @typescript-eslint/unbound-method -- the original getter, called below with the context as `this`
  const prompts = Object.getOwnPropertyDescriptor(prototype, 'prompts')?.get;
  if (!prompts) throw new Error('oidc-provider has no OIDCContext#prompts getter to bend');
  Object.defineProperty(prototype, 'prompts', {
    configurable: true,
    get(this: { params?: { scope?: unknown } }) {
      const sent = prompts.call(this) as Set<string>;
      const scope = this.params?.scope;
      return typeof scope === 'string' && scope.split(' ').includes('offline_access') ? new PromptsKeepingOfflineAccess(sent) : sent;
    },
  });
}
