import { readFileSync } from 'node:fs';
import type { ParseArgsOptionsConfig } from 'node:util';
import { Operations, type Actor, type OperationsDeps } from '../admin/operations.ts';
import { clientChangesOfBody, clientCreate, clientInputOfBody, clientUpdate, parseInput, passwordBody, resourceCreate, resourceUpdate, scopeDescriptionsOfLines, secretRotate, userCreate, userUpdate, invitationCreate } from '../admin/inputs.ts';
import { GRANT_SHORTHANDS } from '../oidc/registry.ts';
import { Refusal } from '../problems.ts';
import { cliFieldNames, CliError, fields, table, type Output } from './output.ts';
import type { CommandOperations } from './remote.ts';
import type { Config } from '../config.ts';
import { smtpTransport } from '../mail/transport.ts';

export interface Context {
  /** What the admin API does too (src/admin/operations.ts): commands parse, call it, print; with --server, its admin API (remote.ts). */
  ops: CommandOperations;
  /** Who runs the command, named in the audit events of its changes. */
  actor: Actor;
  /** Read from stdin when the command takes `--password-stdin`. */
  password?: string;
}

/** A command's context over the given storage: the operations, and who runs them. */
export function commandContext(deps: OperationsDeps & { actor: Actor; password?: string }): Context {
  const { actor, password, ...operations } = deps;
  return { ops: new Operations(operations), actor, ...(password !== undefined ? { password } : {}) };
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
  /** A boolean option that stands in for `--password-stdin` (e.g. `set-password-link`). */
  passwordOr?: string;
  /** Runs without storage (no Redis needed), with the configuration only. */
  withoutStore?: (config: Config, values: Values) => Promise<Output>;
  run(ctx: Context, values: Values, args: string[]): Promise<Output>;
}

// ---- argument helpers: argv mapped onto the input the admin API takes (src/admin/inputs.ts) ----

function optional(values: Values, name: string): string | undefined {
  const value = values[name];
  return typeof value === 'string' ? value : undefined;
}

function list(values: Values, name: string): string[] {
  const value = values[name];
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

/** `--refresh-grace SECONDS`, `--ttl SECONDS`: a whole number (the schema says which range), or NaN, which it refuses clearly. */
function seconds(values: Values, name: string): number | undefined {
  const given = optional(values, name);
  return given === undefined ? undefined : /^\d+$/.test(given) ? Number(given) : NaN;
}

/** `--keep-old 0|90s|1h|24h|7d` in seconds; NaN (refused by the schema) when it is not a duration. */
function duration(given: string | undefined): number | undefined {
  if (given === undefined) return undefined;
  const match = /^(\d{1,9})([smhd]?)$/.exec(given.trim());
  if (!match) return NaN;
  return Number(match[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[match[2] as '' | 's' | 'm' | 'h' | 'd'];
}

/** `--public` and `--secret-in header|body` as RFC 7591's `token_endpoint_auth_method`. */
function authMethodOption(values: Values): string | undefined {
  const secretIn = optional(values, 'secret-in');
  if (values.public === true) {
    if (secretIn === 'body') throw new Refusal('secret_in_public', { field: 'token_endpoint_auth_method' });
    return 'none';
  }
  return secretIn === undefined ? undefined : ({ header: 'client_secret_basic', body: 'client_secret_post' } as Record<string, string>)[secretIn] ?? secretIn;
}

/** `--backchannel-logout-uri URI` sets it, `--no-backchannel-logout` removes it (null), neither leaves it. */
function backchannelLogoutOption(values: Values): string | null | undefined {
  const uri = optional(values, 'backchannel-logout-uri');
  const flag = values['backchannel-logout'];
  if (flag === true) throw new CliError('--backchannel-logout takes no value: give --backchannel-logout-uri URI, or --no-backchannel-logout to remove it');
  if (flag === false && uri !== undefined) throw new CliError('--backchannel-logout-uri and --no-backchannel-logout: give one of them');
  return flag === false ? null : uri;
}

const SHOWN_ONCE = 'The client secret is shown only now: store it safely.';

/** Every page of a paged listing: the CLI prints them all. */
async function allPages<T>(page: (cursor: string | undefined) => Promise<{ items: T[]; next?: string }>): Promise<T[]> {
  const all: T[] = [];
  let cursor: string | undefined;
  do {
    const { items, next } = await page(cursor);
    all.push(...items);
    cursor = next;
  } while (cursor);
  return all;
}

async function setDisabled(ctx: Context, idOrEmail: string, disabled: boolean): Promise<Output> {
  const user = await ctx.ops.setUserDisabled(ctx.actor, idOrEmail, disabled);
  const json = { id: user.id, email: user.email, disabled: user.disabled };
  return { json, text: `${disabled ? 'Disabled' : 'Enabled'} user ${user.email} (${user.id})${disabled ? ' and signed them out everywhere' : ''}.` };
}

async function setAdmin(ctx: Context, idOrEmail: string, admin: boolean): Promise<Output> {
  const { user, changed } = await ctx.ops.setUserAdmin(ctx.actor, idOrEmail, admin);
  const json = { id: user.id, email: user.email, admin: user.admin };
  const text = changed ? `${user.email} ${admin ? 'is now an admin' : 'is no longer an admin'}.` : `${user.email} ${admin ? 'was already an admin' : 'was not an admin'}: nothing changed.`;
  return { json, text };
}

/** The settings of an upstream provider as flags (provider add, provider update). */
const PROVIDER_OPTIONS: ParseArgsOptionsConfig = {
  name: { type: 'string' }, issuer: { type: 'string' }, 'client-id': { type: 'string' }, 'client-secret-file': { type: 'string' }, scope: { type: 'string' },
  display: { type: 'string' }, 'create-accounts': { type: 'boolean' }, 'allowed-domain': { type: 'string', multiple: true }, 'trusted-for-email': { type: 'boolean' },
  'require-mfa': { type: 'boolean' }, 'name-claim': { type: 'string' }, 'email-claim': { type: 'string' }, 'email-verified-claim': { type: 'string' },
  'authorization-endpoint': { type: 'string' }, 'token-endpoint': { type: 'string' }, 'api-base': { type: 'string' },
};

/** The flags as the admin API's body (upstream/admin.ts); the client secret is read from a file, never from argv (ps, shell history). */
function providerBody(values: Values) {
  const file = optional(values, 'client-secret-file');
  let clientSecret: string | undefined;
  if (file !== undefined) {
    try {
      clientSecret = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new CliError(`--client-secret-file: cannot read ${file} (${(err as { code?: string }).code ?? 'error'})`);
    }
  }
  const claims = { name: optional(values, 'name-claim'), email: optional(values, 'email-claim'), email_verified: optional(values, 'email-verified-claim') };
  const domains = list(values, 'allowed-domain');
  const body: Record<string, unknown> = {
    name: optional(values, 'name'), issuer: optional(values, 'issuer'), client_id: optional(values, 'client-id'), client_secret: clientSecret, scope: optional(values, 'scope'),
    display: optional(values, 'display'), create_accounts: values['create-accounts'], allowed_domains: domains.length ? domains : undefined,
    trusted_for_email: values['trusted-for-email'], require_mfa: values['require-mfa'],
    claims: Object.values(claims).some((v) => v !== undefined) ? claims : undefined,
    authorization_endpoint: optional(values, 'authorization-endpoint'), token_endpoint: optional(values, 'token-endpoint'), api_base: optional(values, 'api-base'),
  };
  return Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined));
}


const TABLE: Record<string, Command> = {
  'client create': {
    usage:
      '--name NAME --grants GRANT[,GRANT] (authorization_code, refresh_token, client_credentials, device_code) [--redirect-uri URI]... [--post-logout-redirect-uri URI]... --scope "SCOPES" [--public | --native] [--first-party] [--require-mfa] [--require-par] [--pkce required|optional] [--secret-in header|body (how its secret must be sent, the only way accepted: the Basic header, the default, or the request body)] [--refresh-grace SECONDS] [--backchannel-logout-uri URI] [--logo-uri https://… (shown on its sign-in page)]',
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
      'logo-uri': { type: 'string' },
    },
    async run(ctx, values) {
      const grants = optional(values, 'grants')?.split(',').map((g) => g.trim()).filter(Boolean).map((g) => GRANT_SHORTHANDS[g] ?? g);
      const input = parseInput(clientCreate, {
        client_name: optional(values, 'name'),
        grant_types: grants,
        redirect_uris: list(values, 'redirect-uri'),
        post_logout_redirect_uris: list(values, 'post-logout-redirect-uri'),
        scope: optional(values, 'scope'),
        token_endpoint_auth_method: authMethodOption(values),
        first_party: values['first-party'] === true,
        require_mfa: values['require-mfa'] === true,
        require_pushed_authorization_requests: values['require-par'] === true,
        native: values.native === true,
        pkce: optional(values, 'pkce'),
        refresh_grace_seconds: seconds(values, 'refresh-grace'),
        backchannel_logout_uri: optional(values, 'backchannel-logout-uri'),
        logo_uri: optional(values, 'logo-uri'),
      });
      const { client, client_secret: secret } = await ctx.ops.createClient(ctx.actor, clientInputOfBody(input));
      const json = { client_id: client.client_id, ...(secret ? { client_secret: secret } : {}) };
      return { json, text: fields(json) + (secret ? `\n${SHOWN_ONCE}` : '') };
    },
  },
  'client update': {
    usage:
      'CLIENT_ID [--name NAME] [--redirect-uri URI]... [--post-logout-redirect-uri URI]... [--scope "SCOPES"] [--[no-]first-party] [--public (drops its secret) | --secret-in header|body (a public client gets a secret, shown once)] [--[no-]require-mfa] [--[no-]require-par] [--pkce required|optional] [--refresh-grace SECONDS] [--backchannel-logout-uri URI | --no-backchannel-logout] [--logo-uri https://… | --no-logo]',
    args: ['CLIENT_ID'],
    options: {
      name: { type: 'string' },
      'redirect-uri': { type: 'string', multiple: true },
      'post-logout-redirect-uri': { type: 'string', multiple: true },
      scope: { type: 'string' },
      'first-party': { type: 'boolean' },
      public: { type: 'boolean' },
      'secret-in': { type: 'string' },
      'require-mfa': { type: 'boolean' },
      'require-par': { type: 'boolean' },
      pkce: { type: 'string' },
      'refresh-grace': { type: 'string' },
      'backchannel-logout-uri': { type: 'string' },
      'backchannel-logout': { type: 'boolean' },
      'logo-uri': { type: 'string' },
      logo: { type: 'boolean' },
    },
    async run(ctx, values, [id]) {
      // A repeated URI option replaces the whole list.
      const uris = (flag: string) => (values[flag] === undefined ? undefined : list(values, flag));
      const body = {
        client_name: optional(values, 'name'),
        redirect_uris: uris('redirect-uri'),
        post_logout_redirect_uris: uris('post-logout-redirect-uri'),
        scope: optional(values, 'scope'),
        first_party: values['first-party'] as boolean | undefined,
        // `--no-public` alone: confidential, with the secret in the Basic header.
        token_endpoint_auth_method: values.public === false && values['secret-in'] === undefined ? 'client_secret_basic' : authMethodOption(values),
        require_mfa: values['require-mfa'] as boolean | undefined,
        require_pushed_authorization_requests: values['require-par'] as boolean | undefined,
        pkce: optional(values, 'pkce'),
        refresh_grace_seconds: seconds(values, 'refresh-grace'),
        backchannel_logout_uri: backchannelLogoutOption(values),
        logo_uri: values.logo === false ? null : optional(values, 'logo-uri'),
      };
      if (Object.values(body).every((v) => v === undefined)) throw new CliError(`nothing to change; usage: ${usageLine('client update')}`);
      const { client: view, changed, client_secret: secret } = await ctx.ops.updateClient(ctx.actor, id!, clientChangesOfBody(parseInput(clientUpdate, body)));
      const json = { ...view, changed, ...(secret ? { client_secret: secret } : {}) };
      if (!changed.length) return { json, text: `Client ${id} already had these settings: nothing changed.` };
      const issued = secret ? `\n${fields({ client_secret: secret })}\n${SHOWN_ONCE}` : '';
      return { json, text: `${fields(view)}\nUpdated ${changed.join(', ')}; running servers use the new settings within a second.${issued}` };
    },
  },
  'client list': {
    usage: '',
    async run(ctx) {
      const clients = (await allPages(async (cursor) => {
        const page = await ctx.ops.clientPage({ cursor, limit: 100 });
        return { items: page.clients, next: page.next };
      })).sort((a, b) => String(a.client_name).localeCompare(String(b.client_name)));
      return { json: { clients }, text: table(clients, ['client_id', 'client_name', 'public', 'grant_types', 'scope']) };
    },
  },
  'client show': {
    usage: 'CLIENT_ID',
    args: ['CLIENT_ID'],
    async run(ctx, _values, [id]) {
      const json = await ctx.ops.client(id!);
      // The secrets' ages as lines of their own (never a secret: they are shown once, at creation or rotation).
      const { secret, ...rest } = json;
      const ages = secret ? { secret_created: secret.created, ...(secret.previous ? { old_secret_created: secret.previous.created, old_secret_expires: secret.previous.expires } : {}) } : {};
      return { json, text: fields({ ...rest, ...ages }) };
    },
  },
  'client delete': {
    usage: 'CLIENT_ID',
    args: ['CLIENT_ID'],
    async run(ctx, _values, [id]) {
      const json = await ctx.ops.deleteClient(ctx.actor, id!);
      return { json, text: `Deleted client ${id}.` };
    },
  },
  'client rotate-secret': {
    usage: 'CLIENT_ID [--keep-old 0|DURATION (how long the old secret keeps working, e.g. 1h, 24h, 7d; default 0: it stops now)]',
    args: ['CLIENT_ID'],
    options: { 'keep-old': { type: 'string' } },
    async run(ctx, values, [id]) {
      const { keep_old_seconds: keepOld } = parseInput(secretRotate, { keep_old_seconds: duration(optional(values, 'keep-old')) });
      const json = await ctx.ops.rotateClientSecret(ctx.actor, id!, keepOld ?? 0);
      const old = json.old_secret_expires ? `The old secret keeps working until ${json.old_secret_expires} (end it sooner: latchkey client revoke-old-secret ${id}).` : 'The old secret no longer works.';
      return { json, text: `${fields(json)}\n${old} ${SHOWN_ONCE}` };
    },
  },
  'client revoke-old-secret': {
    usage: 'CLIENT_ID',
    args: ['CLIENT_ID'],
    async run(ctx, _values, [id]) {
      const json = await ctx.ops.revokeOldClientSecret(ctx.actor, id!);
      return { json, text: json.old_secret_revoked ? `The old secret of ${id} no longer works.` : `Client ${id} had no old secret still working: nothing changed.` };
    },
  },

  'resource create': {
    usage: '--uri URI --scope "SCOPES" [--token-format opaque|jwt] [--ttl SECONDS] [--private-scopes] [--scope-description SCOPE=TEXT …]',
    options: {
      uri: { type: 'string' },
      scope: { type: 'string' },
      'token-format': { type: 'string' },
      ttl: { type: 'string' },
      'private-scopes': { type: 'boolean' },
      'scope-description': { type: 'string', multiple: true },
    },
    async run(ctx, values) {
      const input = parseInput(resourceCreate, {
        uri: optional(values, 'uri'), scope: optional(values, 'scope'), token_format: optional(values, 'token-format'), ttl: seconds(values, 'ttl'), private_scopes: values['private-scopes'] === true,
        scope_descriptions: scopeDescriptionsOfLines(list(values, 'scope-description')),
      });
      const { resource, client_secret: secret } = await ctx.ops.createResource(ctx.actor, {
        uri: input.uri, scope: input.scope, tokenFormat: input.token_format, ttl: input.ttl, privateScopes: input.private_scopes, scopeDescriptions: input.scope_descriptions,
      });
      const json = { resource: resource.resource, client_id: resource.client_id, client_secret: secret };
      return { json, text: `${fields(json)}\nThe API authenticates with these at introspection and revocation. ${SHOWN_ONCE}` };
    },
  },
  'resource update': {
    usage: 'URI [--scope "SCOPES"] [--token-format opaque|jwt] [--ttl SECONDS] [--[no-]private-scopes] [--scope-description SCOPE=TEXT …] (SCOPE= removes one)',
    args: ['URI'],
    options: {
      scope: { type: 'string' },
      'token-format': { type: 'string' },
      ttl: { type: 'string' },
      'private-scopes': { type: 'boolean' },
      'scope-description': { type: 'string', multiple: true },
    },
    async run(ctx, values, [uri]) {
      const body = {
        scope: optional(values, 'scope'), token_format: optional(values, 'token-format'), ttl: seconds(values, 'ttl'), private_scopes: values['private-scopes'] as boolean | undefined,
        scope_descriptions: scopeDescriptionsOfLines(list(values, 'scope-description')),
      };
      if (Object.values(body).every((v) => v === undefined)) throw new CliError(`nothing to change; usage: ${usageLine('resource update')}`);
      const input = parseInput(resourceUpdate, body);
      const { resource, changed } = await ctx.ops.updateResource(ctx.actor, uri!, { scope: input.scope, tokenFormat: input.token_format, ttl: input.ttl, privateScopes: input.private_scopes, scopeDescriptions: input.scope_descriptions });
      const json = { ...resource, changed };
      if (!changed.length) return { json, text: `API ${uri} already had these settings: nothing changed.` };
      return { json, text: `${fields(resource)}\nUpdated ${changed.join(', ')}; running servers use the new settings within a second.` };
    },
  },
  'resource list': {
    usage: '',
    async run(ctx) {
      const resources = await ctx.ops.resources();
      return { json: { resources }, text: table(resources, ['resource', 'scope', 'token_format', 'ttl', 'private_scopes', 'client_id']) };
    },
  },
  'resource delete': {
    usage: 'URI',
    args: ['URI'],
    async run(ctx, _values, [uri]) {
      const json = await ctx.ops.deleteResource(ctx.actor, uri!);
      return { json, text: `Deleted API ${uri} and its client.` };
    },
  },

  'user create': {
    usage: '--email EMAIL [--name NAME] [--totp] [--admin] (--password-stdin | --set-password-link (a one-time link the person sets their password with, printed once))',
    options: { email: { type: 'string' }, name: { type: 'string' }, totp: { type: 'boolean' }, admin: { type: 'boolean' }, 'set-password-link': { type: 'boolean' } },
    password: true,
    passwordOr: 'set-password-link',
    async run(ctx, values) {
      const link = values['set-password-link'] === true;
      const input = parseInput(userCreate, { email: optional(values, 'email'), name: optional(values, 'name'), ...(link ? { set_password_link: true } : { password: ctx.password }), admin: values.admin === true, totp: values.totp === true });
      const { user, totp_uri, set_password_link, set_password_link_expires } = await ctx.ops.createUser(ctx.actor, {
        email: input.email, ...(input.password !== undefined ? { password: input.password } : {}), ...(link ? { setPasswordLink: true } : {}), ...(input.name ? { name: input.name } : {}), admin: input.admin, totp: input.totp,
      });
      const json = { id: user.id, email: user.email, ...(user.admin ? { admin: true } : {}), ...(totp_uri ? { totp_uri } : {}), ...(set_password_link ? { set_password_link, set_password_link_expires } : {}) };
      const notes = [
        ...(totp_uri ? ['The TOTP URI holds the secret: give it only to the person (e.g. as a QR code). Recovery codes: the person makes them on /account.'] : []),
        ...(set_password_link ? [`The link is shown only now: hand it to the person only. It works once, until ${set_password_link_expires}.`] : []),
      ];
      return { json, text: [fields(json), ...notes].join('\n') };
    },
  },
  'user update': {
    usage: 'USER_ID [--name NAME | --remove-name] [--email EMAIL (unverified until they follow the link mailed to it)]',
    args: ['USER_ID'],
    options: { name: { type: 'string' }, 'remove-name': { type: 'boolean' }, email: { type: 'string' } },
    async run(ctx, values, [id]) {
      if (values['remove-name'] === true && values.name !== undefined) throw new CliError('--name and --remove-name: give one of them');
      const name = values['remove-name'] === true ? null : optional(values, 'name');
      const input = parseInput(userUpdate, { ...(name !== undefined ? { name } : {}), email: optional(values, 'email') });
      const json = await ctx.ops.updateUser(ctx.actor, id!, input);
      if (!json.changed.length) return { json, text: `${json.user.email}: nothing changed.` };
      const mailed = json.changed.includes('email') ? (json.verification_sent ? ' A link to confirm the new address is on its way to it.' : ' The new address is unconfirmed until the person confirms it.') : '';
      return { json, text: `Changed the ${json.changed.join(' and ')} of ${json.user.email}.${mailed}` };
    },
  },
  'user password-link': {
    usage: 'USER_ID (a one-time set-password link to hand over, printed once)',
    args: ['USER_ID'],
    async run(ctx, _values, [id]) {
      const json = await ctx.ops.createPasswordLink(ctx.actor, id!);
      return { json, text: `${json.set_password_link}\nThe link is shown only now: hand it to ${json.email} only. It works once, until ${json.expires}.` };
    },
  },
  'user send-password-reset': {
    usage: 'USER_ID (mails the normal password reset link; EMAIL on)',
    args: ['USER_ID'],
    async run(ctx, _values, [id]) {
      const json = await ctx.ops.sendPasswordReset(ctx.actor, id!);
      return { json, text: `Sent ${json.email} a password reset link.` };
    },
  },
  'user invite': {
    usage: 'EMAIL [--name NAME] [--admin]',
    args: ['EMAIL'],
    options: { name: { type: 'string' }, admin: { type: 'boolean' } },
    async run(ctx, values, [email]) {
      const input = parseInput(invitationCreate, { email, name: optional(values, 'name'), admin: values.admin === true });
      const json = await ctx.ops.inviteUser(ctx.actor, { email: input.email, ...(input.name ? { name: input.name } : {}), ...(input.admin ? { admin: true } : {}) });
      return { json, text: `Invited ${json.invitation.email}: the link is on its way by email and works once, until ${json.invitation.expires}.` };
    },
  },
  'user invitations': {
    usage: '',
    async run(ctx) {
      const json = await ctx.ops.listInvitations();
      const rows = json.invitations.map((i) => ({ email: i.email, name: i.name ?? '', admin: i.admin ? 'yes' : '', invited: i.invited, expires: i.expires }));
      return { json, text: rows.length ? table(rows, ['email', 'name', 'admin', 'invited', 'expires']) : 'No pending invitation.' };
    },
  },
  'user revoke-invitation': {
    usage: 'EMAIL',
    args: ['EMAIL'],
    async run(ctx, _values, [email]) {
      const json = await ctx.ops.revokeInvitation(ctx.actor, email!);
      return { json, text: `Revoked the invitation of ${json.invitation.email}: its link no longer works.` };
    },
  },
  'user resend-invitation': {
    usage: 'EMAIL',
    args: ['EMAIL'],
    async run(ctx, _values, [email]) {
      const json = await ctx.ops.resendInvitation(ctx.actor, email!);
      return { json, text: `Sent ${json.invitation.email} a new link (the previous one no longer works), until ${json.invitation.expires}.` };
    },
  },
  'user grant-admin': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    run: (ctx, _values, [id]) => setAdmin(ctx, id!, true),
  },
  'user revoke-admin': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    run: (ctx, _values, [id]) => setAdmin(ctx, id!, false),
  },
  'user reset-mfa': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    async run(ctx, _values, [id]) {
      const json = await ctx.ops.resetUserMfa(ctx.actor, id!);
      if (!json.mfa_removed) return { json, text: `${json.email} had no second factor.` };
      const passkeys = json.passkeys_removed ?? 0;
      return { json, text: `Removed the second factor${passkeys ? ` and ${passkeys} passkey${passkeys > 1 ? 's' : ''}` : ''} of ${json.email} and signed them out everywhere: they set up a new one at their next sign-in.` };
    },
  },
  'user unlock': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    async run(ctx, _values, [id]) {
      const json = await ctx.ops.unlockUser(ctx.actor, id!);
      return { json, text: json.was_locked ? `Unlocked ${json.email}; their failed attempts are forgotten.` : `${json.email} was not locked; their failed attempts are forgotten.` };
    },
  },
  'user list': {
    usage: '',
    async run(ctx) {
      const users = (await allPages(async (cursor) => {
        const page = await ctx.ops.userPage({ cursor, limit: 100 });
        return { items: page.users, next: page.next };
      })).sort((a, b) => a.created.localeCompare(b.created));
      return { json: { users }, text: table(users, ['id', 'email', 'name', 'disabled', 'admin', 'created']) };
    },
  },
  'user show': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    async run(ctx, _values, [id]) {
      const json = await ctx.ops.user(id!);
      const { factors, ...view } = json;
      const lines = factors.map((f) => `  ${f.type === 'totp' ? 'authenticator app' : `passkey "${f.name}"`}, created ${f.created}${'last_used' in f ? `, last used ${f.last_used ?? 'never'}` : ''}`);
      return { json, text: `${fields(view)}\nfactors:${lines.length ? `\n${lines.join('\n')}` : ' none'}` };
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
      const json = await ctx.ops.deleteUser(ctx.actor, id!);
      return { json, text: `Deleted user ${json.email} (${json.id}) and ended their sessions and grants.` };
    },
  },
  'user sessions': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    async run(ctx, _values, [id]) {
      const json = await ctx.ops.userSessions(id!);
      const rows = json.sessions.map((s) => ({ handle: s.handle, signed_in: s.signed_in, ip: s.ip, browser: s.browser, factors: s.factors, apps: s.clients }));
      return { json, text: rows.length ? table(rows, ['handle', 'signed_in', 'ip', 'browser', 'factors', 'apps']) : 'No session: not signed in anywhere.' };
    },
  },
  'user end-session': {
    usage: 'USER_ID HANDLE (from "user sessions")',
    args: ['USER_ID', 'HANDLE'],
    async run(ctx, _values, [id, handle]) {
      const json = await ctx.ops.endUserSession(ctx.actor, id!, handle!);
      return { json, text: `Ended the session ${handle} of ${json.email}: ${json.grants_revoked} grant(s) and their tokens revoked.` };
    },
  },
  'user revoke-sessions': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    async run(ctx, _values, [id]) {
      const json = await ctx.ops.revokeUserSessions(ctx.actor, id!);
      return { json, text: `Signed ${json.email} out everywhere: ${json.sessions_revoked} session(s) ended, ${json.grants_revoked} grant(s) and their tokens revoked.` };
    },
  },
  'user apps': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    async run(ctx, _values, [id]) {
      const json = await ctx.ops.connectedApps(id!);
      const text = json.apps.length ? table(json.apps, ['client_id', 'name', 'scope', 'granted', 'last_used']) : `No apps have access to ${json.email}'s account.`;
      return { json, text };
    },
  },
  'user revoke-app': {
    usage: 'USER_ID CLIENT_ID',
    args: ['USER_ID', 'CLIENT_ID'],
    async run(ctx, _values, [id, clientId]) {
      const json = await ctx.ops.revokeConnectedApp(ctx.actor, id!, clientId!);
      const text = `Removed the access of ${clientId} to ${json.email}'s account: consent forgotten, ${json.grants_revoked} grant(s) and their tokens revoked, signed out of it in ${json.sessions_ended} session(s). It asks for consent again at their next sign-in.`;
      return { json, text };
    },
  },
  'user set-password': {
    usage: 'USER_ID --password-stdin',
    args: ['USER_ID'],
    password: true,
    async run(ctx, _values, [id]) {
      const json = await ctx.ops.setUserPassword(ctx.actor, id!, parseInput(passwordBody, { password: ctx.password }).password);
      return { json, text: `Changed the password of ${json.email} and signed them out everywhere.` };
    },
  },

  'provider add': {
    usage: 'ID --preset oidc|google|entra|github --client-id ID --client-secret-file PATH [--issuer URL (oidc)] [--tenant TENANT (entra)] [--name "SHOWN NAME"] [--scope "SCOPES"] [--display button|hint] [--create-accounts] [--allowed-domain DOMAIN]... [--trusted-for-email] [--no-require-mfa] [--name-claim C] [--email-claim C] [--email-verified-claim C] [--authorization-endpoint URL --token-endpoint URL --api-base URL (github enterprise)]',
    args: ['ID'],
    options: { preset: { type: 'string' }, tenant: { type: 'string' }, ...PROVIDER_OPTIONS },
    async run(ctx, values, [id]) {
      const json = await ctx.ops.addProvider(ctx.actor, { id, preset: optional(values, 'preset'), tenant: optional(values, 'tenant'), ...providerBody(values) });
      return { json, text: `${fields(json.provider)}\nPeople see it on the sign-in page${json.provider.display === 'hint' ? ' when the request says upstream=' + json.provider.id : ''}. Its redirect URI at the provider: <ISSUER>/upstream/callback.` };
    },
  },
  'provider list': {
    usage: '',
    async run(ctx) {
      const providers = await ctx.ops.providers();
      return { json: { providers }, text: table(providers, ['id', 'preset', 'name', 'issuer', 'display', 'create_accounts', 'trusted_for_email', 'require_mfa']) };
    },
  },
  'provider show': {
    usage: 'ID',
    args: ['ID'],
    async run(ctx, _values, [id]) {
      const json = await ctx.ops.provider(id!);
      return { json, text: fields(json) };
    },
  },
  'provider update': {
    usage: 'ID [--client-id ID] [--client-secret-file PATH] [--issuer URL] [--name "SHOWN NAME"] [--scope "SCOPES"] [--display button|hint] [--[no-]create-accounts] [--allowed-domain DOMAIN]... [--[no-]trusted-for-email] [--[no-]require-mfa] [--name-claim C] [--email-claim C] [--email-verified-claim C]',
    args: ['ID'],
    options: PROVIDER_OPTIONS,
    async run(ctx, values, [id]) {
      const body = providerBody(values);
      if (Object.values(body).every((v) => v === undefined)) throw new CliError(`nothing to change; usage: ${usageLine('provider update')}`);
      const json = await ctx.ops.updateProvider(ctx.actor, id!, body);
      return { json, text: `${fields(json.provider)}\nUpdated ${json.changed.join(', ')}.` };
    },
  },
  'provider remove': {
    usage: 'ID',
    args: ['ID'],
    async run(ctx, _values, [id]) {
      const json = await ctx.ops.removeProvider(ctx.actor, id!);
      return { json, text: `Removed provider ${id}. Identities linked through it stay linked, and work again if it is added back with the same issuer.` };
    },
  },
  'user upstreams': {
    usage: 'USER_ID',
    args: ['USER_ID'],
    async run(ctx, _values, [id]) {
      const json = await ctx.ops.userUpstreams(id!);
      return { json, text: table(json.identities, ['provider', 'sub', 'email', 'via', 'linked']) };
    },
  },
  'user unlink': {
    usage: 'USER_ID PROVIDER_ID',
    args: ['USER_ID', 'PROVIDER_ID'],
    async run(ctx, _values, [id, provider]) {
      const json = await ctx.ops.unlinkUserUpstream(ctx.actor, id!, provider!).catch((err: unknown) => {
        // The refusal says why; an operator also needs the way out.
        if (err instanceof Refusal && err.code === 'identity_last_way_in') throw new CliError(`${err.message}. Send them a reset first (latchkey user send-password-reset ${id}) or set one (latchkey user set-password ${id} --password-stdin), or let them add a passkey on their account page; then unlink.`);
        throw err;
      });
      return { json, text: `Unlinked ${json.unlinked} identity of ${provider} from ${json.id}.` };
    },
  },

  'mail test': {
    usage: '--to ADDRESS',
    options: { to: { type: 'string' } },
    run: () => Promise.reject(new CliError('mail test runs without storage')),
    // Through the server's own transport (SMTP_URL, MAIL_FROM), straight away: not through the queue.
    async withoutStore(config, values) {
      const to = typeof values.to === 'string' ? values.to.trim() : '';
      if (!to) throw new CliError('--to is required');
      if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(to)) throw new CliError(`--to: not an email address: ${JSON.stringify(to)}`);
      if (!config.SMTP_URL) throw new CliError('SMTP_URL is not set: the server would keep mail in its development outbox (or, in production, refuse to start with EMAIL=on); set SMTP_URL to the mail server to test');
      const transport = smtpTransport(config.SMTP_URL);
      const product = config.BRAND_NAME;
      try {
        const answer = await transport.send({
          from: config.MAIL_FROM,
          to,
          subject: `${product} test message`,
          text: `This is a test message from ${product} at ${config.ISSUER}, sent with latchkey mail test.`,
          html: `<p>This is a test message from ${product.replace(/[<>&"]/g, '')} at ${config.ISSUER.replace(/[<>&"]/g, '')}, sent with <code>latchkey mail test</code>.</p>`,
        });
        return { json: { to, server: transport.name, from: config.MAIL_FROM, response: answer.response }, text: `sent to ${to} through ${transport.name} (from ${config.MAIL_FROM})\nthe server answered: ${answer.response}` };
      } catch (err) {
        const e = err as { code?: string; response?: string; message?: string };
        throw new CliError(`not sent through ${transport.name}: ${e.response ?? e.message ?? e.code ?? 'unknown error'}`, 1);
      } finally {
        transport.close();
      }
    },
  },
  'keys list': {
    usage: '',
    async run(ctx) {
      const all = await ctx.ops.signingKeys();
      const text = all.length ? table(all, ['kid', 'alg', 'kty', 'created', 'state']) : 'No signing keys yet: the server creates them when it first starts.';
      return { json: { keys: all }, text };
    },
  },
  'keys rotate': {
    usage: '',
    async run(ctx) {
      const json = await ctx.ops.rotateSigningKeys(ctx.actor);
      const text = [
        table(json.keys, ['kid', 'alg', 'kty', 'created', 'state']),
        `Retired: ${json.retired.length ? `${json.retired.join(', ')} (published until ${json.retired_until}, when everything they signed has expired)` : 'none'}.`,
        `No longer published: ${json.removed.length ? json.removed.join(', ') : 'none'}.`,
        'Every server signs with the new keys within seconds (no restart).',
      ].join('\n');
      return { json, text };
    },
  },
};

/** A refusal (src/problems.ts), from Operations here or from a server's admin API, worded with the CLI's flags. */
function inFlagWords(run: Command['run']): Command['run'] {
  return async (ctx, values, args) => {
    try {
      return await run(ctx, values, args);
    } catch (err) {
      if (err instanceof Refusal) throw new CliError(err.all.map((r) => r.render(cliFieldNames)).join('; '));
      throw err;
    }
  };
}

// eslint-disable-next-line @typescript-eslint/unbound-method -- `run` is wrapped, and uses no `this`
export const COMMANDS: Record<string, Command> = Object.fromEntries(Object.entries(TABLE).map(([name, command]) => [name, { ...command, run: inFlagWords(command.run) }]));

export const GROUPS = [...new Set(Object.keys(COMMANDS).map((name) => name.split(' ')[0]!))];

export function usageLine(name: string): string {
  const usage = COMMANDS[name]?.usage;
  return `latchkey ${name}${usage ? ` ${usage}` : ''}`;
}
