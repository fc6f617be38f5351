import { z } from 'zod';
import type { Accounts } from '../accounts/accounts.ts';
import { Refusal, refusalOf } from '../problems.ts';
import type { SecretBox } from '../security/secret-box.ts';
import type { Store } from '../storage/store.ts';
import { lastWayIn, passwordKnown, UpstreamIdentities } from './identities.ts';
import { ID_PATTERN, PRESETS, presetDefaults, UpstreamProviders, type UpstreamProvider } from './providers.ts';

/**
 * The operator's side of upstream providers, for Operations (CLI, admin API, console): the input
 * schemas (named as the admin API names them), the rules, and what is shown — never the client secret.
 */
const text = (max: number) => z.string({ error: 'required' }).trim().min(1, 'empty').max(max);
const domain = z.string().trim().toLowerCase().regex(/^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/, 'not a domain name');
const claimName = z.string().trim().min(1, 'empty').max(100);
const claims = z.strictObject({ name: claimName.optional(), email: claimName.optional(), email_verified: claimName.optional() });

const settings = {
  name: text(100).optional(),
  issuer: text(2000).optional(),
  client_id: text(500),
  client_secret: z.string({ error: 'required' }).min(1, 'empty').max(2000),
  scope: text(1000).optional(),
  display: z.enum(['button', 'hint']).optional(),
  create_accounts: z.boolean().optional(),
  allowed_domains: z.array(domain).max(50).optional(),
  claims: claims.optional(),
  trusted_for_email: z.boolean().optional(),
  require_mfa: z.boolean().optional(),
  authorization_endpoint: text(2000).optional(),
  token_endpoint: text(2000).optional(),
  api_base: text(2000).optional(),
};

export const providerCreate = z.strictObject({
  id: z.string({ error: 'required' }).trim().min(1, 'empty').max(40),
  preset: z.enum(PRESETS),
  tenant: z.string().trim().regex(/^[A-Za-z0-9.-]{1,100}$/, 'a tenant id or domain').optional(),
  ...settings,
});
export type ProviderCreate = z.output<typeof providerCreate>;

export const providerUpdate = z
  .strictObject({ ...settings, client_id: settings.client_id.optional(), client_secret: settings.client_secret.optional() })
  .refine((v) => Object.values(v).some((value) => value !== undefined), 'nothing_to_change');
export type ProviderUpdate = z.output<typeof providerUpdate>;

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

/** https, or plain http on loopback (development and tests): a sign-in answer must not cross a network in clear. */
function urlProblem(value: string | undefined, field: string): Refusal | undefined {
  if (value === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return new Refusal('uri_not_absolute', { field, params: { uri: value } });
  }
  if (url.username || url.password) return new Refusal('uri_credentials', { field });
  if (url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK.has(url.hostname))) return undefined;
  return new Refusal('uri_plain_http', { field, params: { uri: value } });
}

/** What is shown of a provider: never its secret. */
export function providerView(p: UpstreamProvider) {
  return {
    id: p.id, preset: p.preset, name: p.name, issuer: p.issuer, client_id: p.clientId, scope: p.scope, display: p.display,
    create_accounts: p.createAccounts, allowed_domains: p.allowedDomains, claims: p.claims, trusted_for_email: p.trustedForEmail, require_mfa: p.requireMfa,
    ...(p.endpoints ? { authorization_endpoint: p.endpoints.authorization, token_endpoint: p.endpoints.token, api_base: p.endpoints.api } : {}),
    created: new Date(p.createdAt).toISOString(),
  };
}

/** The rules past the schema, every problem at once. */
function ruleProblems(base: Partial<UpstreamProvider> & Pick<UpstreamProvider, 'id' | 'preset'>, input: Partial<ProviderCreate>): Refusal[] {
  const problems: Refusal[] = [];
  if (!ID_PATTERN.test(base.id)) problems.push(new Refusal('provider_id_invalid', { field: 'id', params: { value: JSON.stringify(base.id) } }));
  const issuer = input.issuer ?? base.issuer;
  if (!issuer) problems.push(base.preset === 'entra' ? new Refusal('provider_tenant_needed', { field: 'tenant' }) : new Refusal('provider_issuer_needed', { field: 'issuer', params: { preset: base.preset } }));
  for (const [field, value] of [['issuer', input.issuer], ['authorization_endpoint', input.authorization_endpoint], ['token_endpoint', input.token_endpoint], ['api_base', input.api_base]] as const) {
    const problem = urlProblem(value, field);
    if (problem) problems.push(problem);
  }
  if (base.preset !== 'github' && (input.authorization_endpoint || input.token_endpoint || input.api_base)) {
    problems.push(new Refusal('invalid_field', { field: 'authorization_endpoint', params: { detail: 'endpoints are set for the github preset only (the others use discovery)' } }));
  }
  return problems;
}

/**
 * A creation body the schema refused, with the rules' problems of the fields it did not refuse added,
 * so a form shows every problem at once (an empty id and a missing issuer together).
 */
export function withRuleProblems(refused: Refusal, body: unknown): Refusal {
  const raw = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>;
  const str = (k: string) => (typeof raw[k] === 'string' && raw[k] !== '' ? String(raw[k]).trim() : undefined);
  const preset = (PRESETS as readonly string[]).includes(String(raw.preset)) ? (raw.preset as ProviderCreate['preset']) : undefined;
  if (!preset) return refused;
  const defaults = presetDefaults(preset, str('tenant'));
  const input: Partial<ProviderCreate> = Object.fromEntries(['issuer', 'authorization_endpoint', 'token_endpoint', 'api_base'].flatMap((k) => (str(k) ? [[k, str(k)]] : [])));
  const taken = new Set(refused.all.map((r) => r.field));
  const more = ruleProblems({ ...defaults, id: str('id') ?? 'x', preset }, input).filter((r) => !taken.has(r.field) && !(r.field === 'tenant' && taken.has('tenant')));
  return more.length ? refusalOf([...refused.all, ...more]) : refused;
}

/** The record a creation or an update makes; every rule checked, all problems at once. */
function build(base: Partial<UpstreamProvider> & Pick<UpstreamProvider, 'id' | 'preset'>, input: Partial<ProviderCreate>, providers: UpstreamProviders, now: number): UpstreamProvider {
  const problems = ruleProblems(base, input);
  if (problems.length) throw refusalOf(problems);
  const issuer = input.issuer ?? base.issuer;
  const endpoints = base.endpoints
    ? { authorization: input.authorization_endpoint ?? base.endpoints.authorization, token: input.token_endpoint ?? base.endpoints.token, api: input.api_base ?? base.endpoints.api }
    : undefined;
  const secret = input.client_secret !== undefined ? providers.sealSecret(base.id, input.client_secret) : base.clientSecretSealed;
  return {
    id: base.id,
    preset: base.preset,
    name: input.name ?? base.name ?? base.id,
    issuer: issuer!,
    clientId: input.client_id ?? base.clientId!,
    clientSecretSealed: secret!,
    scope: input.scope ?? base.scope ?? 'openid email profile',
    display: input.display ?? base.display ?? 'button',
    createAccounts: input.create_accounts ?? base.createAccounts ?? false,
    allowedDomains: input.allowed_domains ?? base.allowedDomains ?? [],
    claims: { ...base.claims!, ...input.claims },
    trustedForEmail: input.trusted_for_email ?? base.trustedForEmail ?? false,
    // Latchkey's own second factor after the upstream unless the operator says the upstream's is enough.
    requireMfa: input.require_mfa ?? base.requireMfa ?? true,
    ...(endpoints ? { endpoints } : {}),
    createdAt: base.createdAt ?? now,
  };
}

export class UpstreamAdmin {
  readonly providers: UpstreamProviders;
  readonly identities: UpstreamIdentities;
  readonly #accounts: Accounts;
  /** Whether a registered passkey signs in alone (PASSKEYS is not `off`): then it is a way in (identities.ts lastWayIn). */
  readonly #passkeysOn: boolean;
  constructor(store: Store, box: SecretBox, accounts: Accounts, passkeysOn: boolean) {
    this.providers = new UpstreamProviders(store, box);
    this.identities = new UpstreamIdentities(store);
    this.#accounts = accounts;
    this.#passkeysOn = passkeysOn;
  }

  /** `input`: parsed with `providerCreate` (admin/inputs.ts parseInput, by the caller). */
  async add(input: ProviderCreate): Promise<UpstreamProvider> {
    const defaults = presetDefaults(input.preset, input.tenant);
    const record = build({ ...defaults, id: input.id, preset: input.preset }, input, this.providers, Date.now());
    await this.providers.add(record);
    return record;
  }

  async find(id: string): Promise<UpstreamProvider> {
    const found = await this.providers.find(id);
    if (!found) throw new Refusal('provider_not_found', { params: { id } });
    return found;
  }

  async update(id: string, input: ProviderUpdate): Promise<{ provider: UpstreamProvider; changed: string[] }> {
    const before = await this.find(id);
    const after = build(before, input, this.providers, before.createdAt);
    const changed = Object.entries(input).filter(([, v]) => v !== undefined).map(([k]) => k);
    await this.providers.replace(before, after);
    return { provider: after, changed };
  }

  /** Removes the provider; identities linked through it stay (re-adding it with the same issuer finds them again). */
  async remove(id: string): Promise<UpstreamProvider> {
    const found = await this.find(id);
    await this.providers.remove(id);
    return found;
  }

  async linked(accountId: string) {
    const all = await this.identities.ofAccount(accountId);
    const account = await this.#accounts.find(accountId);
    return all.map((i) => ({
      provider: i.provider, iss: i.iss, sub: i.sub, email: i.email ?? null, via: i.via, linked: new Date(i.linkedAt).toISOString(),
      ...(i.lastUsedAt ? { last_used: new Date(i.lastUsedAt).toISOString() } : {}),
      // Unlinking it would leave no way to sign in: the console does not offer it, Operations refuses it.
      last_way_in: account ? lastWayIn(account, all, all.filter((o) => o.provider === i.provider), this.#passkeysOn) : false,
    }));
  }

  /** Whether the person knows a password (false for an account an upstream created, until one is set). */
  async passwordKnown(accountId: string): Promise<boolean> {
    const account = await this.#accounts.find(accountId);
    return account ? passwordKnown(account, await this.identities.ofAccount(accountId)) : false;
  }

  async unlink(accountId: string, provider: string) {
    const all = await this.identities.ofAccount(accountId);
    const linked = all.filter((i) => i.provider === provider);
    const account = await this.#accounts.find(accountId);
    if (!linked.length || !account) throw new Refusal('identity_not_linked', { params: { provider, sub: '*' } });
    if (lastWayIn(account, all, linked, this.#passkeysOn)) throw new Refusal('identity_last_way_in', { params: { provider } });
    for (const identity of linked) await this.identities.unlink(accountId, identity.iss, identity.sub);
    return linked.length;
  }
}
