import { REGISTRY_CHANGES } from '../oidc/registry.ts';
import { Refusal } from '../problems.ts';
import type { SecretBox } from '../security/secret-box.ts';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';

/**
 * Upstream identity providers an operator registered: people may sign in through them (routes.ts).
 * A generic OpenID Connect provider is named by its issuer (discovery); the presets fill in what is
 * known of Google, Microsoft Entra ID (one tenant's issuer) and GitHub (OAuth 2.0 and its REST API, not
 * OpenID Connect). The client secret is sealed (SecretBox, bound to the provider id); nothing here is
 * ever shown with it.
 */
export const PRESETS = ['oidc', 'google', 'entra', 'github'] as const;
export type Preset = (typeof PRESETS)[number];

/** Which upstream claims carry the name, the address and whether the upstream verified that address. */
export interface ClaimMap {
  name: string;
  email: string;
  email_verified: string;
}

export interface UpstreamProvider {
  /** The operator's name for it: lower-case letters, digits and dashes; in URLs and the `upstream` hint. */
  id: string;
  preset: Preset;
  /** Shown as "Continue with <name>". */
  name: string;
  issuer: string;
  clientId: string;
  /** Sealed under SECRETS_KEY with the provider id as AAD. */
  clientSecretSealed: string;
  scope: string;
  /** `button`: on every sign-in page; `hint`: only when the request names it (`upstream=<id>`). */
  display: 'button' | 'hint';
  /** A first sign-in with no account of that address creates one. */
  createAccounts: boolean;
  /** When not empty, accounts are created only for verified addresses of these domains. */
  allowedDomains: string[];
  claims: ClaimMap;
  /** The upstream's *verified* addresses may link to an existing account of that address (still confirmed with one of its factors). */
  trustedForEmail: boolean;
  /** Latchkey asks its own second factor after the upstream. */
  requireMfa: boolean;
  /** OAuth 2.0 endpoints of a provider without discovery (GitHub, GitHub Enterprise Server). */
  endpoints?: { authorization: string; token: string; api: string };
  createdAt: number;
}

export const ID_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$/;

export const GITHUB = {
  issuer: 'https://github.com',
  endpoints: { authorization: 'https://github.com/login/oauth/authorize', token: 'https://github.com/login/oauth/access_token', api: 'https://api.github.com' },
  scope: 'read:user user:email',
};

/** What each preset starts from; the operator's settings override. */
export function presetDefaults(preset: Preset, tenant?: string): Partial<UpstreamProvider> {
  const oidcClaims: ClaimMap = { name: 'name', email: 'email', email_verified: 'email_verified' };
  switch (preset) {
    case 'google':
      return { name: 'Google', issuer: 'https://accounts.google.com', scope: 'openid email profile', claims: oidcClaims };
    case 'entra':
      // Entra ID asserts an address as verified only with the optional claim xms_edov (email domain owner verified).
      return { name: 'Microsoft', ...(tenant ? { issuer: `https://login.microsoftonline.com/${tenant}/v2.0` } : {}), scope: 'openid email profile', claims: { ...oidcClaims, email_verified: 'xms_edov' } };
    case 'github':
      return { name: 'GitHub', issuer: GITHUB.issuer, endpoints: GITHUB.endpoints, scope: GITHUB.scope, claims: oidcClaims };
    case 'oidc':
      return { scope: 'openid email profile', claims: oidcClaims };
  }
}

/** A safety net under the change messages, as for the registry's cache: the list is never older than this. */
const LIST_TTL_MS = 60_000;

export class UpstreamProviders {
  readonly #store: Store;
  readonly #box: SecretBox;
  readonly #cache: boolean;
  /** The list as last read (`cache: true`): every sign-in page shows it. Dropped on REGISTRY_CHANGES (`forget`). */
  #listed: { value: Promise<UpstreamProvider[]>; expires: number } | undefined;

  /** `cache: true` for the server, which calls `forget` on every registry change message; the CLI reads storage directly. */
  readonly #now: () => number;

  /** `now`: the clock of the cached list's age (tests inject one). */
  constructor(store: Store, box: SecretBox, options: { cache?: boolean; now?: () => number } = {}) {
    this.#store = store;
    this.#box = box;
    this.#cache = options.cache === true;
    this.#now = options.now ?? Date.now;
  }

  /** Drops the cached list (a change here or on another server, or a missed message). */
  forget(): void {
    this.#listed = undefined;
  }

  /** After a write: this server forgets now, every other one when the message reaches it. */
  async #changed(): Promise<void> {
    this.forget();
    await this.#store.publish(REGISTRY_CHANGES, 'changed');
  }

  static secretContext(id: string): string {
    return `upstream-provider:${id}`;
  }

  sealSecret(id: string, secret: string): string {
    return this.#box.seal(secret, UpstreamProviders.secretContext(id));
  }

  clientSecret(provider: UpstreamProvider): string {
    return this.#box.open(provider.clientSecretSealed, UpstreamProviders.secretContext(provider.id));
  }

  async find(id: string): Promise<UpstreamProvider | undefined> {
    if (!ID_PATTERN.test(id)) return undefined;
    const raw = await this.#store.get(keys.upstreamProvider(id));
    return raw ? (JSON.parse(raw) as UpstreamProvider) : undefined;
  }

  async list(): Promise<UpstreamProvider[]> {
    if (!this.#cache) return this.#read();
    const now = this.#now();
    if (!this.#listed || this.#listed.expires <= now) {
      const listed = { value: this.#read(), expires: now + LIST_TTL_MS };
      this.#listed = listed;
      // A failed read is not kept: the next page asks storage again.
      listed.value.catch(() => {
        if (this.#listed === listed) this.#listed = undefined;
      });
    }
    return this.#listed.value;
  }

  async #read(): Promise<UpstreamProvider[]> {
    const ids = (await this.#store.setMembers(keys.upstreamProviders)).sort();
    const found = await Promise.all(ids.map((id) => this.find(id)));
    return found.filter((p): p is UpstreamProvider => p !== undefined);
  }

  /** Claims the id first, so of two concurrent additions only one wins. */
  async add(provider: UpstreamProvider): Promise<void> {
    if (!(await this.#store.set(keys.upstreamProvider(provider.id), JSON.stringify(provider), { ifAbsent: true }))) {
      throw new Refusal('provider_exists', { field: 'id', params: { id: provider.id } });
    }
    await this.#store.setAdd(keys.upstreamProviders, provider.id);
    await this.#changed();
  }

  /** Compare-and-set on the record as read: a concurrent change loses with a 409. */
  async replace(before: UpstreamProvider, after: UpstreamProvider): Promise<void> {
    const raw = await this.#store.get(keys.upstreamProvider(before.id));
    if (!raw || !(await this.#store.replaceIf(keys.upstreamProvider(before.id), raw, JSON.stringify(after)))) {
      throw new Refusal('provider_busy', { params: { id: before.id } });
    }
    await this.#changed();
  }

  async remove(id: string): Promise<boolean> {
    const removed = (await this.#store.del(keys.upstreamProvider(id))) > 0;
    await this.#store.setRemove(keys.upstreamProviders, id);
    await this.#changed();
    return removed;
  }
}
