import { randomBytes } from 'node:crypto';
import { hasFactor, isEmailVerified, normalizeEmail, recoveryOf } from '../accounts/accounts.ts';
import { authenticatorName, passkeysOf } from '../accounts/passkeys.ts';
import { consentRevokedEvent, listConnectedApps, revokeConnectedApp } from '../accounts/connected-apps.ts';
import type { ClientMetadata } from 'oidc-provider';
import type { Account, Accounts } from '../accounts/accounts.ts';
import { SecondFactor } from '../accounts/second-factor.ts';
import { totpCodeAt } from '../accounts/totp.ts';
import { audit, type AuditEvent } from '../observability/audit.ts';
import { Refusal } from '../problems.ts';
import type { Logger } from '../observability/logger.ts';
import { type ClientChanges, type ClientInput, type Registry, type ResourceServer, type ScopeDescriptionChanges, adminApiUri, livePreviousSecret } from '../oidc/registry.ts';
import { loadSigningKeys, rotateSigningKeys, signingKeyRetentionSeconds, signingOrder, type StoredSigningKey } from '../oidc/signing-keys.ts';
import { Lockout, lockoutOptions, lockoutScopeOf, type LockoutSettings } from '../security/lockout.ts';
import { loadSecretBox } from '../security/secret-box.ts';
import { digest, keys } from '../storage/keys.ts';
import { EmailLinks, passwordStamp } from '../accounts/email-links.ts';
import { Email, type EmailSettings } from '../accounts/email.ts';
import { Invitations, type Invitation } from '../accounts/invitations.ts';
import { MailQueue } from '../mail/queue.ts';
import type { Brand } from '../brand.ts';
import { endAccountSession, revokeAccountSessions } from '../storage/oidc-adapter.ts';
import { factorsInWords, liveSessions } from '../accounts/sessions.ts';
import type { Store, StoreInfo } from '../storage/store.ts';
import type { MinuteSeries } from '../observability/minute-series.ts';
import { CLI_CLIENT_ID } from './cli-client.ts';
import { parseInput } from './inputs.ts';
import type { Locale } from '../i18n/locale.ts';
import { providerCreate, providerUpdate, providerView, UpstreamAdmin, withRuleProblems } from '../upstream/admin.ts';

/**
 * What an operator can do to Latchkey, whichever way they ask: the `latchkey` CLI (src/cli/commands.ts
 * parses, calls one of these, prints) and the admin API (src/admin/api.ts validates, calls, answers).
 * The rules of what is valid stay where they were (Registry, Accounts); every change writes one audit
 * event naming its actor. Results are plain JSON: never a secret, except the one returned by a creation
 * or rotation, shown once.
 */
export type Actor = { kind: 'cli'; operator?: string } | { kind: 'account'; accountId: string } | { kind: 'client'; clientId: string };

/** The admin API's resource URI: it follows ISSUER. */
export { adminApiUri };

/** A refusal of an operation (src/problems.ts: each front renders it in its words). */
export class OperationError extends Refusal {}

export interface OperationsDeps {
  store: Store;
  registry: Registry;
  accounts: Accounts;
  /** Audit events go here (and, through it, to the activity log). */
  logger: Logger;
  /** oidc-provider's own client schema (src/oidc/client-metadata.ts), so nothing is saved that the server would refuse. */
  validateClient: (metadata: ClientMetadata) => Promise<void>;
  /** The server's ISSUER: authenticator apps show its host name next to the account. */
  issuer: string;
  secretsKey?: string;
  signingKeysFile?: string;
  /** INVITATION_TTL_SECONDS (default 7 days) and whether EMAIL is on: invitations are mailed, so off refuses them. */
  invitations?: { ttlSeconds: number; emailOn: boolean };
  /** EMAIL and its links' settings (the server's configuration): security notices, verification and reset mail. Unset: email off. */
  email?: Omit<EmailSettings, 'issuer'>;
  /** The server's lockout thresholds (`lockoutSettings` of the configuration); unset: the defaults. */
  lockouts?: LockoutSettings;
  /** This process's per-minute counts (the overview's charts); unset: no charts. */
  minuteSeries?: MinuteSeries;
  now?: () => number;
  /** Whose name, colours and logo mail is written in (BRAND_*); unset: Latchkey's. */
  brand?: Brand;
  /** PASSKEYS: unless `off`, a registered passkey signs in alone, so it counts as a way in; unset: `optional`, the default. */
  passkeyMode?: 'off' | 'optional' | 'preferred';
}

/** A current signing key older than this is due for rotation (the overview says so). */
export const KEY_ROTATION_DAYS = 90;
/** The overview reads at most this many accounts looking for admins without a second factor. */
export const ADMIN_SCAN_LIMIT = 2000;
const DAY_MS = 86_400_000;

/** What needs the operator, as the overview lists it. */
export type AttentionItem =
  | { kind: 'admin_without_second_factor'; id: string; email: string }
  | { kind: 'admins_not_all_checked'; checked: number }
  | { kind: 'signing_key_due'; kid: string; age_days: number }
  | { kind: 'embedded_store' }
  | { kind: 'storage_down' };

// ---- views: what is shown of stored things (never a secret, a hash or a private key) ----

/** A confidential client's secrets as shown: their ages, and the previous one's expiry while it still works. Never a digest. */
function secretsView(c: ClientMetadata, nowSeconds: number) {
  if (c.token_endpoint_auth_method === 'none' || typeof c.client_secret !== 'string') return {};
  const previous = livePreviousSecret(c, nowSeconds);
  const created = typeof c.client_secret_created_at === 'number' ? isoSeconds(c.client_secret_created_at) : null;
  return {
    secret: { created, ...(previous ? { previous: { created: previous.created_at ? isoSeconds(previous.created_at) : null, expires: isoSeconds(previous.expires_at) } } : {}) },
  };
}

/** A pending invitation as shown: never its link. */
export function invitationView(i: Invitation) {
  return { email: i.email, name: i.name ?? null, admin: i.admin === true, invited: new Date(i.invitedAt).toISOString(), expires: new Date(i.expiresAt).toISOString() };
}

/** `nowSeconds`: what decides whether a rotated-out secret still works (the registry's clock). */
export function clientView(c: ClientMetadata, nowSeconds = Math.floor(Date.now() / 1000)) {
  return {
    client_id: c.client_id,
    client_name: c.client_name,
    public: c.token_endpoint_auth_method === 'none',
    native: c.native_app === true,
    token_endpoint_auth_method: c.token_endpoint_auth_method,
    grant_types: c.grant_types ?? [],
    redirect_uris: c.redirect_uris ?? [],
    post_logout_redirect_uris: c.post_logout_redirect_uris ?? [],
    scope: c.scope ?? '',
    first_party: c.first_party === true,
    require_mfa: c.require_mfa === true,
    require_pushed_authorization_requests: c.require_pushed_authorization_requests === true,
    pkce: c.pkce_optional === true ? 'optional' : 'required',
    refresh_grace_seconds: typeof c.refresh_grace_seconds === 'number' ? c.refresh_grace_seconds : 0,
    ...(typeof c.backchannel_logout_uri === 'string' ? { backchannel_logout_uri: c.backchannel_logout_uri } : {}),
    ...(typeof c.logo_uri === 'string' ? { logo_uri: c.logo_uri } : {}),
    ...(typeof c.resource_server === 'string' ? { resource_server: c.resource_server } : {}),
    ...secretsView(c, nowSeconds),
  };
}

export function resourceView(r: ResourceServer) {
  return {
    resource: r.uri, scope: r.scopes.join(' '), scope_descriptions: { ...r.scopeDescriptions }, token_format: r.tokenFormat, ttl: r.ttl, private_scopes: r.privateScopes === true, client_id: r.clientId,
    created: new Date(r.createdAt).toISOString(),
  };
}

export function userView(a: Account) {
  // `mfa`: any second factor (an authenticator app or a passkey).
  return { id: a.id, email: a.email, email_verified: isEmailVerified(a), name: a.name ?? null, disabled: a.disabled, mfa: hasFactor(a), passkeys: passkeysOf(a).length, admin: a.admin === true, created: new Date(a.createdAt).toISOString() };
}

const isoSeconds = (epochSeconds: number) => new Date(epochSeconds * 1000).toISOString();

/** `state`: current (signs), retired until a date (published, verifies only), or retired at the next rotation (kept by an older version). */
function keyView(k: StoredSigningKey, current: boolean) {
  const state = current ? 'current' : k.retiredUntil ? `retired until ${isoSeconds(k.retiredUntil)}` : 'retired at the next rotation';
  return { kid: k.kid, alg: k.alg, kty: k.kty, ...(k.crv ? { crv: k.crv } : {}), use: k.use, created: isoSeconds(k.iat), current, state };
}

function keyList(all: StoredSigningKey[]) {
  const newest = Math.max(...all.map((k) => k.iat));
  return signingOrder(all).map((k) => keyView(k, k.iat === newest));
}

/** Paging cursors are opaque to callers: the index position, base64url. */
export const cursor = {
  encode: (position: string | undefined) => (position === undefined ? undefined : Buffer.from(position).toString('base64url')),
  decode(value: string | undefined): string | undefined {
    if (value === undefined) return undefined;
    const position = Buffer.from(value, 'base64url').toString('utf8');
    // Ours encode printable text exactly; anything else was made up or cut short.
    if (!position || cursor.encode(position) !== value || /[\p{Cc}\uFFFD]/u.test(position)) throw new OperationError('cursor_invalid', { field: 'cursor' });
    return position;
  },
};

export class Operations {
  readonly #d: OperationsDeps;
  constructor(deps: OperationsDeps) {
    this.#d = deps;
  }

  #audit(actor: Actor, event: AuditEvent, fields: Record<string, unknown>, msg: string) {
    audit(this.#d.logger, event, { ...fields, actor, source: actor.kind === 'cli' ? 'cli' : 'admin_api' }, msg);
  }

  /** The invitations over this store: mail is queued here and sent by whichever server delivers the queue. */
  async #invitations(write: boolean): Promise<Invitations> {
    const { store, accounts, secretsKey, issuer, brand, invitations = { ttlSeconds: 7 * 24 * 3600, emailOn: true } } = this.#d;
    if (write && !invitations.emailOn) throw new OperationError('invitation_needs_email');
    const queue = new MailQueue(store, await loadSecretBox(store, secretsKey), undefined, brand);
    return new Invitations({ store, accounts, links: new EmailLinks(store), queue, issuer, ttlSeconds: invitations.ttlSeconds });
  }

  #email?: Promise<Email>;
  /** What Latchkey mails people (accounts/email.ts), over this store's queue: whichever server delivers it sends it. */
  #mail(): Promise<Email> {
    const { store, accounts, logger, secretsKey, issuer, now, brand } = this.#d;
    const settings = this.#d.email ?? { on: false, resetTtlSeconds: 1800, verifyTtlSeconds: 86400, perAddressPerHour: 5 };
    this.#email ??= loadSecretBox(store, secretsKey).then((box) => new Email({ store, queue: new MailQueue(store, box, now, brand), accounts, logger, links: new EmailLinks(store, now), settings: { ...settings, issuer } }));
    return this.#email;
  }

  /** Whether this server sends mail (EMAIL=on): the console offers invitations and reset links only then. */
  get emailOn(): boolean {
    return this.#d.email?.on ?? false;
  }

  /** An admin cannot lock themself out by mistake (another admin can): disabling, un-admining or deleting one's own account. */
  #notOwnAccount(actor: Actor, account: Account, action: string) {
    if (actor.kind === 'account' && actor.accountId === account.id) throw new OperationError('own_account', { params: { action } });
  }

  async #secondFactor(): Promise<SecondFactor> {
    const { store, accounts, secretsKey, issuer } = this.#d;
    return new SecondFactor({ store, accounts, box: await loadSecretBox(store, secretsKey), issuer: new URL(issuer).host });
  }

  // ---- clients ----

  async createClient(actor: Actor, input: ClientInput) {
    const { clientId, secret, metadata } = await this.#d.registry.createClient(input, this.#d.validateClient);
    const view = clientView(metadata);
    this.#audit(actor, 'client_created', {
      clientId, grantTypes: view.grant_types, public: !secret, native: view.native, pkce: view.pkce, firstParty: view.first_party, requireMfa: view.require_mfa, requirePar: view.require_pushed_authorization_requests,
      refreshGraceSeconds: view.refresh_grace_seconds, backchannelLogout: view.backchannel_logout_uri !== undefined, scope: view.scope,
    }, 'client created');
    return { client: view, ...(secret ? { client_secret: secret } : {}) };
  }

  async clientPage(page: { cursor?: string; limit: number }) {
    const { clients, last } = await this.#d.registry.clientPage({ after: cursor.decode(page.cursor), limit: page.limit });
    return { clients: clients.map(clientView), next: cursor.encode(last) };
  }

  async client(clientId: string) {
    const client = (await this.#d.registry.findClient(clientId)) as ClientMetadata | undefined;
    if (!client) throw new OperationError('client_not_found', { params: { client_id: clientId } });
    return clientView(client, this.#d.registry.nowSeconds());
  }

  /** Changes left undefined stay; a URI list given replaces the whole list. Idempotent: the same changes twice change nothing the second time. */
  async updateClient(actor: Actor, clientId: string, changes: ClientChanges) {
    await this.client(clientId);
    const { metadata, changed, secret, revoked } = await this.#d.registry.updateClient(clientId, changes, this.#d.validateClient);
    const view = clientView(metadata, this.#d.registry.nowSeconds());
    if (changed.length) {
      this.#audit(actor, 'client_updated', {
        clientId, changed, scope: view.scope, firstParty: view.first_party, tokenEndpointAuthMethod: view.token_endpoint_auth_method, requireMfa: view.require_mfa,
        requirePar: view.require_pushed_authorization_requests, pkce: view.pkce, refreshGraceSeconds: view.refresh_grace_seconds, backchannelLogout: view.backchannel_logout_uri !== undefined,
        ...(secret ? { secretIssued: true } : {}), ...(revoked ? { grantsRevoked: revoked.grants, tokensRevoked: revoked.tokens } : {}),
      }, 'client updated');
    }
    // Made confidential: its new secret, in this answer only.
    return { client: view, changed, ...(secret ? { client_secret: secret } : {}) };
  }

  /** `keepOldSeconds`: how long the secret it replaces keeps working (0, the default: it stops now). */
  async rotateClientSecret(actor: Actor, clientId: string, keepOldSeconds = 0) {
    await this.client(clientId);
    const secret = await this.#d.registry.rotateSecret(clientId, { keepOldSeconds });
    const oldExpires = (await this.client(clientId)).secret?.previous?.expires;
    this.#audit(actor, 'client_secret_rotated', { clientId, keepOldSeconds, ...(oldExpires ? { oldSecretExpires: oldExpires } : {}) }, 'client secret rotated');
    return { client_id: clientId, client_secret: secret, old_secret_expires: oldExpires ?? null };
  }

  /** Ends a client's previous secret now (the overlap of a rotation, cut short). */
  async revokeOldClientSecret(actor: Actor, clientId: string) {
    await this.client(clientId);
    const revoked = await this.#d.registry.revokeOldSecret(clientId);
    if (revoked) this.#audit(actor, 'client_old_secret_revoked', { clientId }, 'previous client secret revoked');
    return { client_id: clientId, old_secret_revoked: revoked };
  }

  async deleteClient(actor: Actor, clientId: string) {
    await this.client(clientId);
    const { grants, tokens } = await this.#d.registry.deleteClient(clientId);
    this.#audit(actor, 'client_deleted', { clientId, grants, tokens }, 'client deleted; its grants and tokens revoked');
    return { client_id: clientId, deleted: true, grants_revoked: grants, tokens_revoked: tokens };
  }

  // ---- APIs (resource servers) ----

  async createResource(actor: Actor, input: { uri: string; scope: string; tokenFormat?: 'opaque' | 'jwt'; ttl?: number; privateScopes?: boolean; scopeDescriptions?: ScopeDescriptionChanges }) {
    if (await this.#d.registry.findResource(input.uri)) throw new OperationError('resource_exists', { field: 'uri', params: { uri: input.uri } });
    const { resource, secret } = await this.#d.registry.createResource(input);
    this.#audit(actor, 'resource_created', { resource: resource.uri, clientId: resource.clientId, scope: resource.scopes.join(' '), tokenFormat: resource.tokenFormat, ttl: resource.ttl, privateScopes: resource.privateScopes === true }, 'API created');
    return { resource: resourceView(resource), client_secret: secret };
  }

  /** Every API: there are few (each is a service), unlike clients and people. */
  async resources() {
    return (await this.#d.registry.listResources()).map(resourceView);
  }

  async resource(uri: string) {
    const resource = await this.#d.registry.findResource(uri);
    if (!resource) throw new OperationError('resource_not_found', { params: { uri } });
    return resource;
  }

  /** `scope` replaces the API's scopes: those added are claimed (409 when another API owns one), those removed given up; `scopeDescriptions` changes the descriptions it names. */
  async updateResource(actor: Actor, uri: string, changes: { tokenFormat?: 'opaque' | 'jwt'; ttl?: number; scope?: string; privateScopes?: boolean; scopeDescriptions?: ScopeDescriptionChanges }) {
    await this.resource(uri);
    // The admin API reads its tokens by lookup: a JWT would lock every caller out.
    if (uri === adminApiUri(this.#d.issuer) && changes.tokenFormat === 'jwt') throw new OperationError('admin_api_opaque_only', { field: 'token_format' });
    const { resource, changed } = await this.#d.registry.updateResource(uri, changes);
    if (changed.length) {
      this.#audit(actor, 'resource_updated', { resource: uri, changed, scope: resource.scopes.join(' '), tokenFormat: resource.tokenFormat, ttl: resource.ttl, privateScopes: resource.privateScopes === true }, 'API updated');
    }
    return { resource: resourceView(resource), changed };
  }

  async deleteResource(actor: Actor, uri: string) {
    await this.resource(uri);
    if (uri === adminApiUri(this.#d.issuer)) throw new OperationError('admin_api_undeletable');
    await this.#d.registry.deleteResource(uri);
    this.#audit(actor, 'resource_deleted', { resource: uri }, 'API and its client deleted');
    return { resource: uri, deleted: true };
  }

  // ---- people ----

  /** By id, or by email for convenience. */
  async findUser(idOrEmail: string): Promise<Account> {
    const { accounts } = this.#d;
    const account = idOrEmail.includes('@') ? await accounts.findByEmail(idOrEmail) : await accounts.find(idOrEmail);
    if (!account) throw new OperationError('user_not_found', { params: { by: idOrEmail.includes('@') ? 'email' : 'id', value: idOrEmail } });
    return account;
  }

  /** A person and their factors, as an operator helping them needs to see them (names and dates, never key material). */
  async user(idOrEmail: string) {
    const account = await this.findUser(idOrEmail);
    const factors = [
      ...(account.mfa ? [{ type: 'totp', name: 'Authenticator app', created: new Date(account.mfa.enrolledAt).toISOString() }] : []),
      ...passkeysOf(account).map((p) => ({
        type: 'passkey',
        name: p.name,
        authenticator: authenticatorName(p.aaguid) ?? null,
        created: new Date(p.createdAt).toISOString(),
        last_used: p.lastUsedAt ? new Date(p.lastUsedAt).toISOString() : null,
      })),
    ];
    return { ...userView(account), factors };
  }

  /** The apps a person granted access to (remembered consent), with their scopes and dates. */
  async connectedApps(idOrEmail: string) {
    const account = await this.findUser(idOrEmail);
    const apps = (await listConnectedApps(this.#d.store, this.#d.registry, account.id)).map((a) => ({
      client_id: a.clientId,
      name: a.name,
      scope: a.scopes.join(' '),
      granted: a.grantedAt === undefined ? null : new Date(a.grantedAt).toISOString(),
      last_used: a.lastUsedAt === undefined ? null : new Date(a.lastUsedAt).toISOString(),
    }));
    return { id: account.id, email: account.email, apps };
  }

  /** Forgets the consent, revokes the app's grants with their tokens and ends its sessions (back-channel logout). */
  async revokeConnectedApp(actor: Actor, idOrEmail: string, clientId: string) {
    const account = await this.findUser(idOrEmail);
    const revoked = await revokeConnectedApp(this.#d.store, account.id, clientId);
    if (!revoked) throw new OperationError('app_not_connected', { params: { email: account.email, client_id: clientId } });
    const event = consentRevokedEvent(account.id, revoked);
    this.#audit(actor, event.event, event.fields, event.msg);
    return { id: account.id, email: account.email, client_id: clientId, consent_revoked: true, grants_revoked: revoked.grants, sessions_ended: revoked.sessions };
  }

  /** `emailPrefix`: only emails that start with it (a search box). */
  async userPage(page: { cursor?: string; limit: number; emailPrefix?: string }) {
    const { accounts, last } = await this.#d.accounts.page({ after: cursor.decode(page.cursor), emailPrefix: page.emailPrefix, limit: page.limit });
    return { users: accounts.map(userView), next: cursor.encode(last) };
  }

  /**
   * `totp`: the second factor is active at once; the answer carries its otpauth:// URI (the secret),
   * shown once, for the operator to hand to the person's app.
   */
  async createUser(actor: Actor, input: { email: string; name?: string; password?: string; setPasswordLink?: boolean; admin?: boolean; totp?: boolean }) {
    if ((input.password !== undefined) === (input.setPasswordLink === true)) throw new OperationError('password_or_link', { field: 'password' });
    // With a link, the account starts with a password nobody knows: the person's own replaces it.
    const password = input.password ?? randomBytes(32).toString('base64url');
    const account = await this.#d.accounts.create({ email: input.email, password, ...(input.name ? { name: input.name } : {}), ...(input.admin ? { admin: true } : {}) });
    let totpUri: string | undefined;
    if (input.totp) {
      const factor = await this.#secondFactor();
      const started = await factor.startEnrollment(account);
      // The previous step's code (accepted: ± one step) is what activation records, so the person's first code is not "already used".
      const previousCode = async () => totpCodeAt(started.secret.replaceAll(' ', ''), Date.now() - 30_000);
      let enrolled = await factor.enroll(account.id, started.pending, await previousCode());
      // A step boundary passed between making the code and checking it (a loaded machine): the code is now two steps old.
      if (!enrolled.ok && enrolled.reason === 'invalid') enrolled = await factor.enroll(account.id, started.pending, await previousCode());
      if (!enrolled.ok) throw new Error(`could not enroll the second factor (${enrolled.reason})`);
      totpUri = started.uri;
    }
    const link = input.setPasswordLink ? await this.#setPasswordLink(account) : undefined;
    this.#audit(actor, 'user_created', { accountId: account.id, mfa: input.totp === true, admin: input.admin === true, setPasswordLink: link !== undefined }, 'user created');
    const user = userView((await this.#d.accounts.find(account.id)) ?? account);
    return { user, ...(totpUri ? { totp_uri: totpUri } : {}), ...(link ? { set_password_link: link.url, set_password_link_expires: link.expires } : {}) };
  }

  /**
   * A one-time link for the operator to hand over (EMAIL off, or no mailbox to trust): a password-reset
   * link (accounts/email-links.ts) marked `handover`, which works with EMAIL off and proves no address.
   * It works once, until INVITATION_TTL_SECONDS, and dies when the password changes another way.
   */
  async #setPasswordLink(account: Account) {
    if (account.disabled) throw new OperationError('user_disabled_no_link', { params: { email: account.email } });
    const { store, issuer, invitations, now = Date.now } = this.#d;
    const ttl = invitations?.ttlSeconds ?? 7 * 24 * 3600;
    const token = await new EmailLinks(store, now).issue('password-reset', { accountId: account.id, email: account.email, stamp: passwordStamp(account.passwordHash), data: { handover: 'yes' } }, ttl);
    return { url: `${issuer}/password/reset?token=${token}`, expires: new Date(now() + ttl * 1000).toISOString() };
  }

  /** A new one-time set-password link for a person (in this answer only); their current password keeps working until it is used. */
  async createPasswordLink(actor: Actor, idOrEmail: string) {
    const account = await this.findUser(idOrEmail);
    const link = await this.#setPasswordLink(account);
    this.#audit(actor, 'password_link_created', { accountId: account.id, expires: link.expires }, 'one-time set-password link made for an operator to hand over');
    return { id: account.id, email: account.email, set_password_link: link.url, expires: link.expires };
  }

  /** The normal password reset mail, sent to the person's address (EMAIL on). */
  async sendPasswordReset(actor: Actor, idOrEmail: string) {
    const account = await this.findUser(idOrEmail);
    const email = await this.#mail();
    if (!email.on) throw new OperationError('password_reset_needs_email');
    if (account.disabled) throw new OperationError('user_disabled_no_link', { params: { email: account.email } });
    if (!(await email.sendPasswordReset(account))) throw new OperationError('links_per_address', { params: { email: account.email } });
    this.#audit(actor, 'password_reset_requested', { accountId: account.id, sent: true }, 'password reset link sent by an operator');
    return { id: account.id, email: account.email, password_reset_sent: true };
  }

  /**
   * A person's name (null or empty: none) and address. A new address is unverified: with EMAIL on a
   * verification link goes to it, and the old address gets the security notice of a change.
   */
  async updateUser(actor: Actor, idOrEmail: string, changes: { name?: string | null; email?: string }) {
    const before = await this.findUser(idOrEmail);
    const { accounts } = this.#d;
    const changed: string[] = [];
    let account = before;
    const name = changes.name?.trim() || undefined;
    if (changes.name !== undefined && name !== before.name) {
      account = await accounts.setName(before.id, name);
      changed.push('name');
    }
    let verificationSent = false;
    if (changes.email !== undefined && normalizeEmail(changes.email) !== before.email) {
      account = await accounts.changeEmail(before.id, before.email, changes.email, { verified: false });
      changed.push('email');
      const email = await this.#mail();
      await email.notify(before, 'address-changed', before.email, { byAdministrator: true });
      if (email.on) verificationSent = await email.sendVerification(account, actor.kind === 'cli' ? 'cli' : 'admin_api');
    }
    if (changed.length) this.#audit(actor, 'user_updated', { accountId: account.id, changed, ...(changed.includes('email') ? { verificationSent } : {}) }, 'user updated');
    return { user: userView(account), changed, verification_sent: verificationSent };
  }

  // ---- invitations ----

  /** Mails a single-use link that creates the account; an address with an account is refused (account_exists). */
  /** `locale`: the language of the mail (the console's page; the API and the CLI send the default). */
  async inviteUser(actor: Actor, input: { email: string; name?: string; admin?: boolean }, locale?: Locale) {
    const invitation = await (await this.#invitations(true)).invite(input, locale);
    this.#audit(actor, 'invitation_sent', { emailDigest: digest(invitation.email), admin: invitation.admin === true }, 'invitation sent');
    return { invitation: invitationView(invitation) };
  }

  async listInvitations() {
    return { invitations: (await (await this.#invitations(false)).list()).map(invitationView) };
  }

  /** The link stops working at once. */
  async revokeInvitation(actor: Actor, email: string) {
    const invitation = await (await this.#invitations(false)).revoke(email);
    this.#audit(actor, 'invitation_revoked', { emailDigest: digest(invitation.email) }, 'invitation revoked');
    return { invitation: invitationView(invitation), revoked: true };
  }

  /** A new link with a fresh lifetime; the previous link stops working. */
  async resendInvitation(actor: Actor, email: string) {
    const invitation = await (await this.#invitations(true)).resend(email);
    this.#audit(actor, 'invitation_sent', { emailDigest: digest(invitation.email), admin: invitation.admin === true, resent: true }, 'invitation sent again; the previous link no longer works');
    return { invitation: invitationView(invitation) };
  }

  /** Idempotent: disabling a disabled person changes nothing more (their sessions are ended again). */
  async setUserDisabled(actor: Actor, idOrEmail: string, disabled: boolean) {
    const found = await this.findUser(idOrEmail);
    if (disabled) this.#notOwnAccount(actor, found, 'disable');
    const account = await this.#d.accounts.setDisabled(found.id, disabled);
    if (disabled) {
      // A disabled person is signed out everywhere too: their sessions end and their tokens die now.
      const { sessions, grants } = await revokeAccountSessions(this.#d.store, account.id);
      this.#audit(actor, 'user_disabled', { accountId: account.id, sessions, grants }, 'user disabled and signed out everywhere');
    } else {
      this.#audit(actor, 'user_enabled', { accountId: account.id }, 'user enabled');
    }
    return userView(account);
  }

  async setUserAdmin(actor: Actor, idOrEmail: string, admin: boolean) {
    const before = await this.findUser(idOrEmail);
    if (!admin) this.#notOwnAccount(actor, before, 'take the admin role from');
    const account = await this.#d.accounts.setAdmin(before.id, admin);
    if ((before.admin === true) !== admin) {
      this.#audit(actor, admin ? 'admin_granted' : 'admin_revoked', { accountId: account.id }, admin ? 'admin role granted' : 'admin role revoked');
    }
    return { user: userView(account), changed: (before.admin === true) !== admin };
  }

  async setUserPassword(actor: Actor, idOrEmail: string, password: string) {
    const account = await this.#d.accounts.setPassword((await this.findUser(idOrEmail)).id, password);
    // Whoever knew the old password is signed out, and their tokens die.
    const { sessions, grants } = await revokeAccountSessions(this.#d.store, account.id);
    this.#audit(actor, 'password_changed', { accountId: account.id, sessions, grants }, 'password changed; signed out everywhere');
    await (await this.#mail()).notify(account, 'password-changed', account.email, { byAdministrator: true });
    return { id: account.id, email: account.email, password_changed: true, sessions_revoked: sessions, grants_revoked: grants };
  }

  async resetUserMfa(actor: Actor, idOrEmail: string) {
    const account = await this.findUser(idOrEmail);
    const passkeys = passkeysOf(account).length;
    const removed = await (await this.#secondFactor()).resetMfa(account.id);
    // Nothing removed, nothing changed: no audit event, nobody signed out.
    if (!removed) return { id: account.id, email: account.email, mfa_removed: false };
    // Sessions signed in with the lost factor end, and their tokens die.
    const { sessions, grants } = await revokeAccountSessions(this.#d.store, account.id);
    this.#audit(actor, 'second_factor_removed', { accountId: account.id, reason: 'reset', passkeys, sessions, grants }, 'second factor, passkeys and recovery codes removed; signed out everywhere');
    await (await this.#mail()).notify(account, 'second-factor-reset', account.email, { byAdministrator: true });
    return { id: account.id, email: account.email, mfa_removed: true, passkeys_removed: passkeys, sessions_revoked: sessions, grants_revoked: grants };
  }

  async unlockUser(actor: Actor, idOrEmail: string) {
    const account = await this.findUser(idOrEmail);
    // The lockout counts by normalized email (unknown accounts too), so that is what is unlocked.
    const wasLocked = await new Lockout(this.#d.store, lockoutOptions('signin', this.#d.lockouts)).unlock({ account: account.email });
    this.#audit(actor, 'user_unlocked', { accountId: account.id, wasLocked }, 'lockout ended and failed attempts forgotten');
    return { id: account.id, email: account.email, was_locked: wasLocked };
  }

  async revokeUserSessions(actor: Actor, idOrEmail: string) {
    const account = await this.findUser(idOrEmail);
    const { sessions, grants } = await revokeAccountSessions(this.#d.store, account.id);
    this.#audit(actor, 'sessions_revoked', { accountId: account.id, sessions, grants }, 'signed out everywhere');
    return { id: account.id, email: account.email, sessions_revoked: sessions, grants_revoked: grants };
  }

  async deleteUser(actor: Actor, idOrEmail: string) {
    const found = await this.findUser(idOrEmail);
    this.#notOwnAccount(actor, found, 'delete');
    const { sessions, grants } = await revokeAccountSessions(this.#d.store, found.id);
    // Its upstream identities would otherwise sign in to nothing, and could never be linked again.
    await (await this.#upstream()).identities.unlinkAll(found.id);
    const account = await this.#d.accounts.delete(found.id);
    this.#audit(actor, 'user_deleted', { accountId: account.id, sessions, grants }, 'user deleted and signed out everywhere');
    return { id: account.id, email: account.email, deleted: true };
  }

  /**
   * A person's sessions that are still alive: when they signed in, how (acr, amr), until when, and which
   * apps they used it for. Never the session id (it is the cookie's value).
   */
  async userSessions(idOrEmail: string) {
    const account = await this.findUser(idOrEmail);
    const sessions = (await liveSessions(this.#d.store, account.id)).map((s) => ({
      handle: s.handle, signed_in: s.loginTs ? isoSeconds(s.loginTs) : null, expires: s.exp ? isoSeconds(s.exp) : null,
      ip: s.ip ?? null, browser: s.browser ?? null, acr: s.acr ?? null, amr: s.amr, factors: factorsInWords(s.amr), clients: s.clients,
    }));
    return { id: account.id, sessions: sessions.sort((a, b) => String(b.signed_in).localeCompare(String(a.signed_in))) };
  }

  /** Ends one session of a person (by its handle from `userSessions`): its apps' grants are revoked and they are told (back-channel logout). */
  async endUserSession(actor: Actor, idOrEmail: string, handle: string) {
    const account = await this.findUser(idOrEmail);
    const ended = /^[A-Za-z0-9_-]{22}$/.test(handle) ? await endAccountSession(this.#d.store, account.id, handle) : undefined;
    if (!ended) throw new OperationError('session_not_found', { params: { email: account.email } });
    this.#audit(actor, 'session_ended', { accountId: account.id, session: handle, grants: ended.grants }, 'a session was ended');
    return { id: account.id, email: account.email, session: handle, ended: true, grants_revoked: ended.grants };
  }

  /** How many of a person's recovery codes are unused, and whether they have a set at all. */
  async recoveryCodes(idOrEmail: string) {
    const account = await this.findUser(idOrEmail);
    const has = recoveryOf(account) !== undefined;
    return { id: account.id, has_recovery_codes: has, unused: has ? await (await this.#secondFactor()).recoveryCodesLeft(account) : 0 };
  }

  /** The server's own clients (the console, the account page, the CLI's, each API's introspection client): not an operator's to change. */
  async isOwnClient(client: { client_id: string; resource_server?: string }) {
    if (client.resource_server !== undefined || client.client_id === CLI_CLIENT_ID) return true;
    const own = await Promise.all([this.#d.store.get(keys.adminConsoleClient), this.#d.store.get(keys.accountPageClient)]);
    return own.includes(client.client_id);
  }

  /** Whether storage answers now (the console's overview). */
  async storageAnswers() {
    return this.#d.store.ping().then(() => true, () => false);
  }

  /**
   * "Is it healthy?": the last hour per minute (this process's counters), the store's state, the
   * signing keys' ages, and what needs the operator.
   */
  async overview() {
    const now = (this.#d.now ?? Date.now)();
    const { store } = this.#d;
    const info: StoreInfo | undefined = await store.info().catch(() => undefined);
    const attention: AttentionItem[] = [];
    if (!info) attention.push({ kind: 'storage_down' });
    if (store.kind === 'memory') attention.push({ kind: 'embedded_store' });
    const signingKeys = info ? (await this.signingKeys()).map((k) => ({ ...k, age_days: Math.floor((now - Date.parse(k.created)) / DAY_MS) })) : [];
    for (const k of signingKeys) if (k.current && k.age_days >= KEY_ROTATION_DAYS) attention.push({ kind: 'signing_key_due', kid: k.kid, age_days: k.age_days });
    if (info) attention.push(...(await this.#adminsWithoutSecondFactor()));
    const minutes = (this.#d.minuteSeries?.points() ?? []).map((p) => ({ at: new Date(p.at).toISOString(), ...p.counts }));
    return { minutes, store: { kind: store.kind, up: info !== undefined, ...(info ? { info } : {}) }, signing_keys: signingKeys, attention };
  }

  /** Admins whose account has no second factor, from the accounts index (at most ADMIN_SCAN_LIMIT accounts read). */
  async #adminsWithoutSecondFactor(): Promise<AttentionItem[]> {
    const found: AttentionItem[] = [];
    let after: string | undefined;
    let checked = 0;
    do {
      const page = await this.#d.accounts.page({ limit: 200, ...(after ? { after } : {}) });
      checked += page.accounts.length;
      for (const a of page.accounts) if (a.admin === true && !a.disabled && !hasFactor(a)) found.push({ kind: 'admin_without_second_factor', id: a.id, email: a.email });
      after = page.last;
    } while (after && checked < ADMIN_SCAN_LIMIT);
    if (after) found.push({ kind: 'admins_not_all_checked', checked });
    return found;
  }

  // ---- lockouts ----

  async lockouts(limit = 100) {
    return Lockout.current(this.#d.store, { limit });
  }

  /** Ends a listed lockout (sign-in: account or IP; client authentication: client at an IP, or IP; device user codes: IP) by its key. */
  async unlockLockout(actor: Actor, key: string) {
    const scope = lockoutScopeOf(key);
    if (!scope) throw new OperationError('lockout_not_found');
    const listed = (await this.lockouts(1000)).find((l) => l.key === key);
    const lockout = new Lockout(this.#d.store, lockoutOptions(scope, this.#d.lockouts));
    const wasLocked = await lockout.unlockKey(key);
    const { key: _key, until: _until, ...who } = listed ?? { key, until: '' };
    this.#audit(actor, 'lockout_ended', { ...who, reason: 'unlocked', wasLocked }, 'lockout ended by an operator and failed attempts forgotten');
    return { key, was_locked: wasLocked };
  }

  // ---- signing keys ----

  async #storedKeys(): Promise<StoredSigningKey[]> {
    if (this.#d.signingKeysFile) return loadSigningKeys(this.#d.store, this.#d.signingKeysFile);
    return JSON.parse((await this.#d.store.get(keys.signingKeys)) ?? '[]') as StoredSigningKey[];
  }

  async signingKeys() {
    return keyList(await this.#storedKeys());
  }

  async rotateSigningKeys(actor: Actor) {
    if (this.#d.signingKeysFile) throw new OperationError('keys_from_file');
    const retentionSeconds = signingKeyRetentionSeconds(await this.#d.registry.listResources());
    const { kept, retired, retiredUntil, removed } = await rotateSigningKeys(this.#d.store, { retentionSeconds });
    const all = keyList(kept);
    const result = { keys: all, retired: retired.map((k) => k.kid), retired_until: isoSeconds(retiredUntil), removed: removed.map((k) => k.kid) };
    // Key ids only: they are public (/jwks).
    this.#audit(actor, 'signing_keys_rotated', { current: all.filter((k) => k.current).map((k) => k.kid), retired: result.retired, retiredUntil: result.retired_until, removed: result.removed }, 'signing keys rotated');
    return result;
  }
  // ---- upstream providers (src/upstream: sign in through another provider) ----

  async #upstream(): Promise<UpstreamAdmin> {
    const { store, accounts, secretsKey, passkeyMode = 'optional' } = this.#d;
    return new UpstreamAdmin(store, await loadSecretBox(store, secretsKey), accounts, passkeyMode !== 'off');
  }

  /** `body` as the admin API names it (upstream/admin.ts providerCreate); the client secret is sealed and never shown again. */
  async addProvider(actor: Actor, body: unknown) {
    let input;
    try {
      input = parseInput(providerCreate, body);
    } catch (err) {
      throw err instanceof Refusal ? withRuleProblems(err, body) : err;
    }
    const provider = await (await this.#upstream()).add(input);
    this.#audit(actor, 'upstream_provider_added', { provider: provider.id, preset: provider.preset, issuer: provider.issuer, display: provider.display, createAccounts: provider.createAccounts, trustedForEmail: provider.trustedForEmail, requireMfa: provider.requireMfa }, 'upstream provider added');
    return { provider: providerView(provider) };
  }

  async providers() {
    return (await (await this.#upstream()).providers.list()).map(providerView);
  }

  async provider(id: string) {
    return providerView(await (await this.#upstream()).find(id));
  }

  /** Settings left out stay; `client_secret` given replaces the sealed one. */
  async updateProvider(actor: Actor, id: string, body: unknown) {
    const { provider, changed } = await (await this.#upstream()).update(id, parseInput(providerUpdate, body));
    this.#audit(actor, 'upstream_provider_updated', { provider: id, changed }, 'upstream provider updated');
    return { provider: providerView(provider), changed };
  }

  /** People stop seeing it; their linked identities stay, and work again if it is added back with the same issuer. */
  async removeProvider(actor: Actor, id: string) {
    const provider = await (await this.#upstream()).remove(id);
    this.#audit(actor, 'upstream_provider_removed', { provider: provider.id }, 'upstream provider removed');
    return { id: provider.id, removed: true };
  }

  /** The upstream identities linked to a person (provider, issuer, subject, how, when). */
  async userUpstreams(idOrEmail: string) {
    const found = await this.findUser(idOrEmail);
    return { id: found.id, email: found.email, identities: await (await this.#upstream()).linked(found.id) };
  }

  async unlinkUserUpstream(actor: Actor, idOrEmail: string, provider: string) {
    const found = await this.findUser(idOrEmail);
    const unlinked = await (await this.#upstream()).unlink(found.id, provider);
    this.#audit(actor, 'upstream_unlinked', { accountId: found.id, provider, identities: unlinked }, 'upstream identity unlinked');
    return { id: found.id, provider, unlinked };
  }
}
