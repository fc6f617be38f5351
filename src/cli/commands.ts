import type { ParseArgsOptionsConfig } from 'node:util';
import type { ClientMetadata } from 'oidc-provider';
import type { Account, Accounts } from '../accounts/accounts.ts';
import { authenticatorName, passkeysOf } from '../accounts/passkeys.ts';
import { consentRevokedEvent, listConnectedApps, revokeConnectedApp } from '../accounts/connected-apps.ts';
import { SecondFactor } from '../accounts/second-factor.ts';
import { totpCodeAt } from '../accounts/totp.ts';
import { Lockout } from '../security/lockout.ts';
import { loadSecretBox } from '../security/secret-box.ts';
import { GRANT_SHORTHANDS, GRANT_TYPES, type GrantType, type Registry, type ResourceServer } from '../oidc/registry.ts';
import { loadSigningKeys, rotateSigningKeys, signingKeyRetentionSeconds, signingOrder, type StoredSigningKey } from '../oidc/signing-keys.ts';
import { keys } from '../storage/keys.ts';
import { revokeAccountSessions } from '../storage/oidc-adapter.ts';
import type { Store } from '../storage/store.ts';
import { validateClientMetadata } from './client-metadata.ts';
import { CliError, fields, table, type Output } from './output.ts';

export interface Context {
  store: Store;
  registry: Registry;
  accounts: Accounts;
  signingKeysFile?: string;
  /** Read from stdin when the command takes `--password-stdin`. */
  password?: string;
  /** SECRETS_KEY, when configured (else the key the server generated and kept in storage). */
  secretsKey?: string;
  /** The server's ISSUER: authenticator apps show its host name next to the account. */
  issuer?: string;
}

async function secondFactorOf(ctx: Context): Promise<SecondFactor> {
  const box = await loadSecretBox(ctx.store, ctx.secretsKey);
  return new SecondFactor({ store: ctx.store, accounts: ctx.accounts, box, issuer: new URL(ctx.issuer ?? 'http://localhost:3000').host });
}

export type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

export interface Command {
  /** What follows `latchkey <group> <action>`, for usage lines. */
  usage: string;
  options?: ParseArgsOptionsConfig;
  /** Names of the positional arguments, all required. */
  args?: string[];
  /** Reads the password from stdin (`--password-stdin` required). */
  password?: boolean;
  run(ctx: Context, values: Values, args: string[]): Promise<Output>;
}

// ---- argument helpers ----

function required(values: Values, name: string): string {
  const value = values[name];
  if (typeof value !== 'string' || value.trim() === '') throw new CliError(`--${name} is required`);
  return value;
}

function optional(values: Values, name: string): string | undefined {
  const value = values[name];
  return typeof value === 'string' ? value : undefined;
}

function list(values: Values, name: string): string[] {
  const value = values[name];
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

// ---- views: what is shown of stored things (never a secret, a hash or a private key) ----

function clientView(c: ClientMetadata) {
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
    ...(typeof c.resource_server === 'string' ? { resource_server: c.resource_server } : {}),
  };
}

function resourceView(r: ResourceServer) {
  return { resource: r.uri, scope: r.scopes.join(' '), token_format: r.tokenFormat, ttl: r.ttl, private_scopes: r.privateScopes === true, client_id: r.clientId, created: new Date(r.createdAt).toISOString() };
}

function userView(a: Account) {
  return { id: a.id, email: a.email, name: a.name ?? null, disabled: a.disabled, mfa: a.mfa !== undefined, created: new Date(a.createdAt).toISOString() };
}

const isoSeconds = (epochSeconds: number) => new Date(epochSeconds * 1000).toISOString();

/** `state`: current (signs), retired until a date (published, verifies only), or retired at the next rotation (kept by an older version). */
function keyView(k: StoredSigningKey, current: boolean) {
  const state = current ? 'current' : k.retiredUntil ? `retired until ${isoSeconds(k.retiredUntil)}` : 'retired at the next rotation';
  return { kid: k.kid, alg: k.alg, kty: k.kty, ...(k.crv ? { crv: k.crv } : {}), use: k.use, created: isoSeconds(k.iat), current, state };
}

/** `--pkce required|optional`, checked by the registry. */
function pkceOption(values: Values): 'required' | 'optional' | undefined {
  return optional(values, 'pkce') as 'required' | 'optional' | undefined;
}

const SHOWN_ONCE = 'The client secret is shown only now: store it safely.';

// ---- users: by id, or by email for convenience ----

async function findUser(accounts: Accounts, idOrEmail: string): Promise<Account> {
  const account = idOrEmail.includes('@') ? await accounts.findByEmail(idOrEmail) : await accounts.find(idOrEmail);
  if (!account) throw new CliError(`no user with ${idOrEmail.includes('@') ? 'email' : 'id'} ${idOrEmail}`);
  return account;
}

async function setDisabled(ctx: Context, idOrEmail: string, disabled: boolean): Promise<Output> {
  const account = await ctx.accounts.setDisabled((await findUser(ctx.accounts, idOrEmail)).id, disabled);
  // A disabled person is signed out everywhere too: their sessions end and their tokens die now.
  const revoked = disabled ? await revokeAccountSessions(ctx.store, account.id) : undefined;
  const json = { id: account.id, email: account.email, disabled: account.disabled };
  const audit = disabled
    ? { event: 'user_disabled' as const, fields: { accountId: account.id, sessions: revoked!.sessions, grants: revoked!.grants }, msg: 'user disabled and signed out everywhere' }
    : { event: 'user_enabled' as const, fields: { accountId: account.id }, msg: 'user enabled' };
  return { json, text: `${disabled ? 'Disabled' : 'Enabled'} user ${account.email} (${account.id})${disabled ? ' and signed them out everywhere' : ''}.`, audit };
}

// ---- signing keys ----

async function storedKeys(ctx: Context): Promise<StoredSigningKey[]> {
  if (ctx.signingKeysFile) return loadSigningKeys(ctx.store, ctx.signingKeysFile);
  return JSON.parse((await ctx.store.get(keys.signingKeys)) ?? '[]') as StoredSigningKey[];
}

function keyList(all: StoredSigningKey[]) {
  const newest = Math.max(...all.map((k) => k.iat));
  return signingOrder(all).map((k) => keyView(k, k.iat === newest));
}

export const COMMANDS: Record<string, Command> = {
  'client create': {
    usage:
      '--name NAME --grants GRANT[,GRANT] (authorization_code, refresh_token, client_credentials, device_code) [--redirect-uri URI]... [--post-logout-redirect-uri URI]... --scope "SCOPES" [--public | --native] [--first-party] [--require-mfa] [--require-par] [--pkce required|optional] [--secret-in header|body] [--refresh-grace SECONDS] [--backchannel-logout-uri URI]',
    options: {
      name: { type: 'string' },
      grants: { type: 'string' },
      'redirect-uri': { type: 'string', multiple: true },
      'post-logout-redirect-uri': { type: 'string', multiple: true },
      scope: { type: 'string' },
      public: { type: 'boolean' },
      'first-party': { type: 'boolean' },
      'require-mfa': { type: 'boolean' },
      'require-par': { type: 'boolean' },
      native: { type: 'boolean' },
      pkce: { type: 'string' },
      'secret-in': { type: 'string' },
      'refresh-grace': { type: 'string' },
      'backchannel-logout-uri': { type: 'string' },
    },
    async run(ctx, values) {
      const refreshGrace = optional(values, 'refresh-grace');
      const grants = required(values, 'grants').split(',').map((g) => g.trim()).filter(Boolean).map((g) => GRANT_SHORTHANDS[g] ?? g);
      for (const g of grants) {
        if (!(GRANT_TYPES as readonly string[]).includes(g)) throw new CliError(`unknown grant "${g}" (known: ${GRANT_TYPES.join(', ')})`);
      }
      const { clientId, secret } = await ctx.registry.createClient(
        {
          name: required(values, 'name'),
          grants: grants as GrantType[],
          redirectUris: list(values, 'redirect-uri'),
          postLogoutRedirectUris: list(values, 'post-logout-redirect-uri'),
          scope: required(values, 'scope'),
          public: values.public === true,
          firstParty: values['first-party'] === true,
          requireMfa: values['require-mfa'] === true,
          requirePar: values['require-par'] === true,
          native: values.native === true,
          pkce: pkceOption(values),
          secretIn: optional(values, 'secret-in') as 'header' | 'body' | undefined,
          ...(refreshGrace === undefined ? {} : { refreshGrace: /^\d+$/.test(refreshGrace) ? Number(refreshGrace) : NaN }),
          ...(values['backchannel-logout-uri'] === undefined ? {} : { backchannelLogoutUri: optional(values, 'backchannel-logout-uri') }),
        },
        validateClientMetadata,
      );
      const json = { client_id: clientId, ...(secret ? { client_secret: secret } : {}) };
      const audit = { clientId, grantTypes: grants, public: !secret, native: values.native === true, pkce: pkceOption(values) ?? 'required', firstParty: values['first-party'] === true, requireMfa: values['require-mfa'] === true, requirePar: values['require-par'] === true, refreshGraceSeconds: refreshGrace === undefined ? 0 : Number(refreshGrace), backchannelLogout: values['backchannel-logout-uri'] !== undefined, scope: required(values, 'scope') };
      return { json, text: fields(json) + (secret ? `\n${SHOWN_ONCE}` : ''), audit: { event: 'client_created', fields: audit, msg: 'client created' } };
    },
  },
  'client update': {
    usage:
      'CLIENT_ID [--name NAME] [--redirect-uri URI]... [--post-logout-redirect-uri URI]... [--scope "SCOPES"] [--[no-]require-mfa] [--[no-]require-par] [--pkce required|optional]',
    args: ['CLIENT_ID'],
    options: {
      name: { type: 'string' },
      'redirect-uri': { type: 'string', multiple: true },
      'post-logout-redirect-uri': { type: 'string', multiple: true },
      scope: { type: 'string' },
      'require-mfa': { type: 'boolean' },
      'require-par': { type: 'boolean' },
      pkce: { type: 'string' },
    },
    async run(ctx, values, [id]) {
      const name = optional(values, 'name');
      if (name !== undefined && name.trim() === '') throw new CliError('--name must not be empty');
      const scope = optional(values, 'scope');
      if (scope !== undefined && scope.trim() === '') throw new CliError('--scope must not be empty');
      // A repeated URI option replaces the whole list.
      const uris = (flag: string) => (values[flag] === undefined ? undefined : list(values, flag));
      const changes = {
        name,
        redirectUris: uris('redirect-uri'),
        postLogoutRedirectUris: uris('post-logout-redirect-uri'),
        scope,
        requireMfa: values['require-mfa'] as boolean | undefined,
        requirePar: values['require-par'] as boolean | undefined,
        pkce: pkceOption(values),
      };
      if (Object.values(changes).every((v) => v === undefined)) throw new CliError(`nothing to change; usage: ${usageLine('client update')}`);
      const { metadata, changed } = await ctx.registry.updateClient(id!, changes, validateClientMetadata);
      const json = { ...clientView(metadata), changed };
      if (!changed.length) return { json, text: `Client ${id} already had these settings: nothing changed.` };
      const view = clientView(metadata);
      const audit = { clientId: id, changed, scope: view.scope, requireMfa: view.require_mfa, requirePar: view.require_pushed_authorization_requests, pkce: view.pkce };
      return { json, text: `${fields(view)}\nUpdated ${changed.join(', ')}; running servers use the new settings within a second.`, audit: { event: 'client_updated', fields: audit, msg: 'client updated' } };
    },
  },
  'client list': {
    usage: '',
    async run(ctx) {
      const clients = (await ctx.registry.listClients()).map(clientView).sort((a, b) => String(a.client_name).localeCompare(String(b.client_name)));
      return { json: { clients }, text: table(clients, ['client_id', 'client_name', 'public', 'grant_types', 'scope']) };
    },
  },
  'client show': {
    usage: 'CLIENT_ID',
    args: ['CLIENT_ID'],
    async run(ctx, _values, [id]) {
      const client = await ctx.registry.findClient(id!);
      if (!client) throw new CliError(`no client with id ${id}`);
      const json = clientView(client as ClientMetadata);
      return { json, text: fields(json) };
    },
  },
  'client delete': {
    usage: 'CLIENT_ID',
    args: ['CLIENT_ID'],
    async run(ctx, _values, [id]) {
      await ctx.registry.deleteClient(id!);
      return { json: { client_id: id, deleted: true }, text: `Deleted client ${id}.`, audit: { event: 'client_deleted', fields: { clientId: id }, msg: 'client deleted' } };
    },
  },
  'client rotate-secret': {
    usage: 'CLIENT_ID',
    args: ['CLIENT_ID'],
    async run(ctx, _values, [id]) {
      const json = { client_id: id, client_secret: await ctx.registry.rotateSecret(id!) };
      return { json, text: `${fields(json)}\nThe old secret no longer works. ${SHOWN_ONCE}`, audit: { event: 'client_secret_rotated', fields: { clientId: id }, msg: 'client secret rotated' } };
    },
  },

  'resource create': {
    usage: '--uri URI --scope "SCOPES" [--token-format opaque|jwt] [--ttl SECONDS] [--private-scopes]',
    options: {
      uri: { type: 'string' },
      scope: { type: 'string' },
      'token-format': { type: 'string' },
      ttl: { type: 'string' },
      'private-scopes': { type: 'boolean' },
    },
    async run(ctx, values) {
      const ttl = optional(values, 'ttl');
      const { resource, secret } = await ctx.registry.createResource({
        uri: required(values, 'uri'),
        scope: required(values, 'scope'),
        tokenFormat: optional(values, 'token-format') as 'opaque' | 'jwt' | undefined,
        ttl: ttl === undefined ? undefined : /^\d+$/.test(ttl) ? Number(ttl) : NaN,
        privateScopes: values['private-scopes'] === true,
      });
      const json = { resource: resource.uri, client_id: resource.clientId, client_secret: secret };
      const audit = { resource: resource.uri, clientId: resource.clientId, scope: resource.scopes.join(' '), tokenFormat: resource.tokenFormat, ttl: resource.ttl, privateScopes: resource.privateScopes === true };
      return { json, text: `${fields(json)}\nThe API authenticates with these at introspection and revocation. ${SHOWN_ONCE}`, audit: { event: 'resource_created', fields: audit, msg: 'API created' } };
    },
  },
  'resource list': {
    usage: '',
    async run(ctx) {
      const resources = (await ctx.registry.listResources()).map(resourceView);
      return { json: { resources }, text: table(resources, ['resource', 'scope', 'token_format', 'ttl', 'private_scopes', 'client_id']) };
    },
  },
  'resource delete': {
    usage: 'URI',
    args: ['URI'],
    async run(ctx, _values, [uri]) {
      await ctx.registry.deleteResource(uri!);
      return { json: { resource: uri, deleted: true }, text: `Deleted API ${uri} and its client.`, audit: { event: 'resource_deleted', fields: { resource: uri }, msg: 'API and its client deleted' } };
    },
  },

  'user create': {
    usage: '--email EMAIL [--name NAME] [--totp] --password-stdin',
    options: { email: { type: 'string' }, name: { type: 'string' }, totp: { type: 'boolean' } },
    password: true,
    async run(ctx, values) {
      const name = optional(values, 'name');
      const account = await ctx.accounts.create({ email: required(values, 'email'), ...(name ? { name } : {}), password: ctx.password! });
      const created = (totp: boolean) => ({ event: 'user_created' as const, fields: { accountId: account.id, mfa: totp }, msg: 'user created' });
      if (values.totp !== true) {
        const json = { id: account.id, email: account.email };
        return { json, text: fields(json), audit: created(false) };
      }
      // Provisioning: the factor is active at once (the operator hands the URI to the person's app).
      const factor = await secondFactorOf(ctx);
      const started = await factor.startEnrollment(account);
      // The previous step's code (accepted: ± one step) is what activation records, so the person's first code is not "already used".
      const enrolled = await factor.enroll(account.id, started.pending, await totpCodeAt(started.secret.replaceAll(' ', ''), Date.now() - 30_000));
      if (!enrolled.ok) throw new CliError(`could not enroll the second factor (${enrolled.reason})`, 1);
      const json = { id: account.id, email: account.email, totp_uri: started.uri };
      const text = `${fields(json)}\nThe TOTP URI holds the secret: give it only to the person (e.g. as a QR code). Recovery codes: the person makes them on /account.`;
      return { json, text, audit: created(true) };
    },
  },
  'user reset-mfa': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    async run(ctx, _values, [id]) {
      const account = await findUser(ctx.accounts, id!);
      const passkeys = passkeysOf(account).length;
      const removed = await (await secondFactorOf(ctx)).resetMfa(account.id);
      // Nothing removed, nothing changed: no audit line, nobody signed out.
      if (!removed) return { json: { id: account.id, email: account.email, mfa_removed: false }, text: `${account.email} had no second factor.` };
      // Sessions signed in with the lost factor end, and their tokens die.
      const { sessions, grants } = await revokeAccountSessions(ctx.store, account.id);
      const json = { id: account.id, email: account.email, mfa_removed: true, passkeys_removed: passkeys, sessions_revoked: sessions, grants_revoked: grants };
      const audit = { event: 'second_factor_removed' as const, fields: { accountId: account.id, reason: 'reset', passkeys, sessions, grants }, msg: 'second factor, passkeys and recovery codes removed; signed out everywhere' };
      return { json, text: `Removed the second factor${passkeys ? ` and ${passkeys} passkey${passkeys > 1 ? 's' : ''}` : ''} of ${account.email} and signed them out everywhere: they set up a new one at their next sign-in.`, audit };
    },
  },
  'user unlock': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    async run(ctx, _values, [id]) {
      const account = await findUser(ctx.accounts, id!);
      // The lockout counts by normalized email (unknown accounts too), so that is what is unlocked.
      const wasLocked = await new Lockout(ctx.store).unlock({ account: account.email });
      const json = { id: account.id, email: account.email, was_locked: wasLocked };
      const audit = { event: 'user_unlocked' as const, fields: { accountId: account.id, wasLocked }, msg: 'lockout ended and failed attempts forgotten' };
      return { json, text: wasLocked ? `Unlocked ${account.email}; their failed attempts are forgotten.` : `${account.email} was not locked; their failed attempts are forgotten.`, audit };
    },
  },
  'user list': {
    usage: '',
    async run(ctx) {
      const users = (await ctx.accounts.list()).map(userView);
      return { json: { users }, text: table(users, ['id', 'email', 'name', 'disabled', 'created']) };
    },
  },
  'user show': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    async run(ctx, _values, [id]) {
      const account = await findUser(ctx.accounts, id!);
      const view = userView(account);
      // The person's factors, as an operator helping them needs to see them (names and dates, never key material).
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
      const lines = factors.map((f) => `  ${f.type === 'totp' ? 'authenticator app' : `passkey "${f.name}"`}, created ${f.created}${'last_used' in f ? `, last used ${f.last_used ?? 'never'}` : ''}`);
      return { json: { ...view, factors }, text: `${fields(view)}\nfactors:${lines.length ? `\n${lines.join('\n')}` : ' none'}` };
    },
  },
  'user disable': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    run: (ctx, _values, [id]) => setDisabled(ctx, id!, true),
  },
  'user enable': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    run: (ctx, _values, [id]) => setDisabled(ctx, id!, false),
  },
  'user delete': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    async run(ctx, _values, [id]) {
      const found = await findUser(ctx.accounts, id!);
      const { sessions, grants } = await revokeAccountSessions(ctx.store, found.id);
      const account = await ctx.accounts.delete(found.id);
      const audit = { event: 'user_deleted' as const, fields: { accountId: account.id, sessions, grants }, msg: 'user deleted and signed out everywhere' };
      return { json: { id: account.id, email: account.email, deleted: true }, text: `Deleted user ${account.email} (${account.id}) and ended their sessions and grants.`, audit };
    },
  },
  'user revoke-sessions': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    async run(ctx, _values, [id]) {
      const account = await findUser(ctx.accounts, id!);
      const { sessions, grants } = await revokeAccountSessions(ctx.store, account.id);
      const json = { id: account.id, email: account.email, sessions_revoked: sessions, grants_revoked: grants };
      const audit = { event: 'sessions_revoked' as const, fields: { accountId: account.id, sessions, grants }, msg: 'signed out everywhere' };
      return { json, text: `Signed ${account.email} out everywhere: ${sessions} session(s) ended, ${grants} grant(s) and their tokens revoked.`, audit };
    },
  },
  'user apps': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    async run(ctx, _values, [id]) {
      const account = await findUser(ctx.accounts, id!);
      const apps = (await listConnectedApps(ctx.store, ctx.registry, account.id)).map((a) => ({
        client_id: a.clientId,
        name: a.name,
        scope: a.scopes.join(' '),
        granted: a.grantedAt === undefined ? null : new Date(a.grantedAt).toISOString(),
        last_used: a.lastUsedAt === undefined ? null : new Date(a.lastUsedAt).toISOString(),
      }));
      const text = apps.length ? table(apps, ['client_id', 'name', 'scope', 'granted', 'last_used']) : `No apps have access to ${account.email}'s account.`;
      return { json: { id: account.id, email: account.email, apps }, text };
    },
  },
  'user revoke-app': {
    usage: 'USER_ID CLIENT_ID',
    args: ['USER_ID', 'CLIENT_ID'],
    async run(ctx, _values, [id, clientId]) {
      const account = await findUser(ctx.accounts, id!);
      const revoked = await revokeConnectedApp(ctx.store, account.id, clientId!);
      if (!revoked) throw new CliError(`${account.email} has not granted ${clientId} access (no remembered consent); see "latchkey user apps ${id}"`);
      const json = { id: account.id, email: account.email, client_id: clientId, consent_revoked: true, grants_revoked: revoked.grants, sessions_ended: revoked.sessions };
      const text = `Removed the access of ${clientId} to ${account.email}'s account: consent forgotten, ${revoked.grants} grant(s) and their tokens revoked, signed out of it in ${revoked.sessions} session(s). It asks for consent again at their next sign-in.`;
      return { json, text, audit: consentRevokedEvent(account.id, revoked) };
    },
  },
  'user set-password': {
    usage: 'USER_ID --password-stdin',
    args: ['USER_ID'],
    password: true,
    async run(ctx, _values, [id]) {
      const account = await ctx.accounts.setPassword((await findUser(ctx.accounts, id!)).id, ctx.password!);
      // Whoever knew the old password is signed out, and their tokens die.
      const { sessions, grants } = await revokeAccountSessions(ctx.store, account.id);
      const audit = { event: 'password_changed' as const, fields: { accountId: account.id, sessions, grants }, msg: 'password changed; signed out everywhere' };
      const json = { id: account.id, email: account.email, password_changed: true, sessions_revoked: sessions, grants_revoked: grants };
      return { json, text: `Changed the password of ${account.email} and signed them out everywhere.`, audit };
    },
  },

  'keys list': {
    usage: '',
    async run(ctx) {
      const all = keyList(await storedKeys(ctx));
      const text = all.length ? table(all, ['kid', 'alg', 'kty', 'created', 'state']) : 'No signing keys yet: the server creates them when it first starts.';
      return { json: { keys: all }, text };
    },
  },
  'keys rotate': {
    usage: '',
    async run(ctx) {
      if (ctx.signingKeysFile) throw new CliError('signing keys come from SIGNING_KEYS_FILE: rotate them in that file, then restart the servers');
      const retentionSeconds = signingKeyRetentionSeconds(await ctx.registry.listResources());
      const { kept, retired, retiredUntil, removed } = await rotateSigningKeys(ctx.store, { retentionSeconds });
      const all = keyList(kept);
      const json = { keys: all, retired: retired.map((k) => k.kid), retired_until: isoSeconds(retiredUntil), removed: removed.map((k) => k.kid) };
      const text = [
        table(all, ['kid', 'alg', 'kty', 'created', 'state']),
        `Retired: ${json.retired.length ? `${json.retired.join(', ')} (published until ${json.retired_until}, when everything they signed has expired)` : 'none'}.`,
        `No longer published: ${json.removed.length ? json.removed.join(', ') : 'none'}.`,
        'Every server signs with the new keys within seconds (no restart).',
      ].join('\n');
      // Key ids only: they are public (/jwks).
      const audit = {
        event: 'signing_keys_rotated' as const,
        fields: { current: all.filter((k) => k.current).map((k) => k.kid), retired: json.retired, retiredUntil: json.retired_until, removed: json.removed },
        msg: 'signing keys rotated',
      };
      return { json, text, audit };
    },
  },
};

export const GROUPS = [...new Set(Object.keys(COMMANDS).map((name) => name.split(' ')[0]!))];

export function usageLine(name: string): string {
  const usage = COMMANDS[name]?.usage;
  return `latchkey ${name}${usage ? ` ${usage}` : ''}`;
}
