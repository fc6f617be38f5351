import { z } from 'zod';
import { GRANT_TYPES, MAX_KEEP_OLD_SECONDS, MAX_REFRESH_GRACE_SECONDS, type ClientChanges, type ClientInput } from '../oidc/registry.ts';
import { Refusal, REFUSALS, refusalOf, type RefusalCode } from '../problems.ts';

/**
 * One zod schema per operation that takes input, beside src/admin/operations.ts: the admin API parses
 * its JSON body with it, the CLI maps argv onto the same input and the console its form fields, so
 * every front refuses the same input with the same refusal, all of an input's problems at once
 * (`parseInput`). Clients are named as RFC 7591/7592 name them (`client_name`, `grant_types`,
 * `token_endpoint_auth_method`, …); the names of earlier versions (`name`, `grants`, `public`,
 * `secret_in`, `require_par`) are still accepted. A message that is a code of src/problems.ts is that
 * refusal, so each front words it its own way.
 */

const uri = z.string().min(1, 'empty').max(2000);
const uriList = z.array(uri).max(50);
const scope = z.string({ error: 'required' }).trim().min(1, 'empty').max(2000);
const displayName = z.string({ error: 'required' }).trim().min(1, 'empty').max(200);
const refreshGrace = z.number({ error: 'refresh_grace_range' }).int('refresh_grace_range').min(0, 'refresh_grace_range').max(MAX_REFRESH_GRACE_SECONDS, 'refresh_grace_range');
const keepOld = z.number({ error: 'keep_old_range' }).int('keep_old_range').min(0, 'keep_old_range').max(MAX_KEEP_OLD_SECONDS, 'keep_old_range');
const pkce = z.enum(['required', 'optional'], { error: 'pkce_unknown' });
const authMethod = z.enum(['client_secret_basic', 'client_secret_post', 'none'], { error: 'secret_in_unknown' });
const ttl = z.number({ error: 'ttl_range' }).int('ttl_range').min(60, 'ttl_range').max(86400, 'ttl_range');
const tokenFormat = z.enum(['opaque', 'jwt'], { error: 'token_format_unknown' });
const password = z.string({ error: 'required' }).min(8, 'password_too_short').max(1024, 'password_too_long');

/** Earlier names of client fields, still accepted (a body naming both the old and the new one is refused). */
const RENAMED: Record<string, string> = { name: 'client_name', grants: 'grant_types', require_par: 'require_pushed_authorization_requests' };

function currentNames(body: unknown): unknown {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return body;
  const out: Record<string, unknown> = { ...(body as Record<string, unknown>) };
  for (const [old, current] of Object.entries(RENAMED)) {
    if (old in out && !(current in out)) {
      out[current] = out[old];
      delete out[old];
    }
  }
  // `public: true` and `secret_in` were how a client's authentication method was given.
  if (!('token_endpoint_auth_method' in out) && ('public' in out || 'secret_in' in out)) {
    const { public: isPublic, secret_in: secretIn } = out;
    if (isPublic === true && secretIn === 'body') return body;
    if (isPublic === true) out.token_endpoint_auth_method = 'none';
    else if (secretIn === 'body') out.token_endpoint_auth_method = 'client_secret_post';
    else if (secretIn === 'header' || secretIn === undefined) out.token_endpoint_auth_method = 'client_secret_basic';
    else return body;
    delete out.public;
    delete out.secret_in;
  }
  return out;
}

export const clientCreate = z.preprocess(
  currentNames,
  z
    .strictObject({
      client_name: displayName,
      grant_types: z.array(z.enum(GRANT_TYPES, { error: 'grant_unknown' }), { error: 'required' }).min(1, 'grants_missing').max(GRANT_TYPES.length),
      redirect_uris: uriList.optional(),
      post_logout_redirect_uris: uriList.optional(),
      scope,
      token_endpoint_auth_method: authMethod.optional(),
      native: z.boolean().optional(),
      first_party: z.boolean().optional(),
      require_mfa: z.boolean().optional(),
      require_pushed_authorization_requests: z.boolean().optional(),
      pkce: pkce.optional(),
      refresh_grace_seconds: refreshGrace.optional(),
      backchannel_logout_uri: uri.optional(),
      logo_uri: uri.optional(),
    })
    // A native app is public (RFC 8252 §8.5): it has no secret to send in the body.
    .refine((c) => !(c.native && c.token_endpoint_auth_method === 'client_secret_post'), { message: 'secret_in_public', path: ['token_endpoint_auth_method'] }),
);

export const clientUpdate = z.preprocess(
  currentNames,
  z
    .strictObject({
      client_name: displayName.optional(),
      redirect_uris: uriList.optional(),
      post_logout_redirect_uris: uriList.optional(),
      scope: scope.optional(),
      first_party: z.boolean().optional(),
      // none makes it public (its secret is dropped); a secret method on a public client issues a secret, answered once.
      token_endpoint_auth_method: authMethod.optional(),
      require_mfa: z.boolean().optional(),
      require_pushed_authorization_requests: z.boolean().optional(),
      pkce: pkce.optional(),
      refresh_grace_seconds: refreshGrace.optional(),
      // null removes it.
      backchannel_logout_uri: uri.nullable().optional(),
      logo_uri: uri.nullable().optional(),
    })
    .refine((v) => Object.values(v).some((value) => value !== undefined), 'nothing_to_change'),
);

/** Scope → what it lets an app do (the registry checks the scopes, the length and the characters); null or blank removes one. */
const scopeDescriptions = z.record(z.string().max(200), z.string().max(2000).nullable());

export const resourceCreate = z.strictObject({
  uri: z.string({ error: 'required' }).min(1, 'empty').max(2000),
  scope,
  token_format: tokenFormat.optional(),
  ttl: ttl.optional(),
  private_scopes: z.boolean().optional(),
  scope_descriptions: scopeDescriptions.optional(),
});

export const resourceUpdate = z
  .strictObject({ scope: scope.optional(), token_format: tokenFormat.optional(), ttl: ttl.optional(), private_scopes: z.boolean().optional(), scope_descriptions: scopeDescriptions.optional() })
  .refine((v) => Object.values(v).some((value) => value !== undefined), 'nothing_to_change');

/** `password`, or `set_password_link: true`: a one-time link (in the answer only) the person sets it with. */
export const userCreate = z
  .strictObject({
    email: z.string({ error: 'required' }).min(3, 'email_invalid').max(254, 'email_invalid'),
    name: z.string().trim().min(1, 'empty').max(200).optional(),
    password: password.optional(),
    set_password_link: z.boolean().optional(),
    admin: z.boolean().optional(),
    totp: z.boolean().optional(),
  })
  .refine((v) => (v.password !== undefined) !== (v.set_password_link === true), { message: 'password_or_link', path: ['password'] });
/** A person's name (null or empty: none) and address (a changed one is unverified until they follow the link mailed to it). */
export const userUpdate = z
  .strictObject({
    email: z.string().min(3, 'email_invalid').max(254, 'email_invalid').optional(),
    name: z.string().trim().max(200).nullable().optional(),
  })
  .refine((v) => v.email !== undefined || v.name !== undefined, 'nothing_to_change');
export const invitationCreate = z.strictObject({
  email: z.string({ error: 'required' }).min(3, 'email_invalid').max(254, 'email_invalid'),
  name: z.string().trim().min(1, 'empty').max(200).optional(),
  admin: z.boolean().optional(),
});
export const passwordBody = z.strictObject({ password });

export type ClientCreateBody = z.output<typeof clientCreate>;
export type ClientUpdateBody = z.output<typeof clientUpdate>;

/**
 * Parses an operation's input once; every problem found becomes one refusal naming its field (the
 * first leads, the others ride along), so a form shows all of them in one answer.
 */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const parsed = schema.safeParse(input, { reportInput: true });
  if (parsed.success) return parsed.data;
  throw refusalOf(parsed.error.issues.map(refusalOfIssue));
}

function refusalOfIssue(issue: z.core.$ZodIssue): Refusal {
  const unknownKey = issue.code === 'unrecognized_keys' ? issue.keys[0] : undefined;
  const path = [...issue.path, ...(unknownKey !== undefined ? [unknownKey] : [])];
  const field = path.length ? path.filter((p) => typeof p !== 'number').map(String).join('.') : undefined;
  const at = field !== undefined ? { field } : {};
  const input = (issue as { input?: unknown }).input;
  const code = issue.message in REFUSALS ? (issue.message as RefusalCode) : undefined;
  const invalid = (detail: string) => new Refusal(field === undefined ? 'invalid_input' : 'invalid_field', { ...at, params: { detail } });
  if (!code) return invalid(issue.message);
  // A value of the wrong type where a required one was expected: say what is wrong with it, not that it is missing.
  if (code === 'required' && input !== undefined) return invalid(`expected ${(issue as { expected?: string }).expected ?? 'another value'}`);
  const params: Record<string, string | number> = {};
  if (code === 'pkce_unknown' || code === 'secret_in_unknown') params.value = JSON.stringify(input);
  if (code === 'grant_unknown') Object.assign(params, { grant: String(input), known: GRANT_TYPES.join(', ') });
  if (code === 'grants_missing') params.known = GRANT_TYPES.join(', ');
  if (code === 'refresh_grace_range') params.max = MAX_REFRESH_GRACE_SECONDS;
  if (code === 'keep_old_range') params.max = MAX_KEEP_OLD_SECONDS;
  if (code === 'email_invalid') params.email = JSON.stringify(input);
  return new Refusal(code, { ...at, params });
}

/** A parsed client body as the registry takes it. */
export function clientInputOfBody(body: ClientCreateBody): ClientInput {
  const method = body.token_endpoint_auth_method;
  return {
    name: body.client_name, grants: body.grant_types, redirectUris: body.redirect_uris, postLogoutRedirectUris: body.post_logout_redirect_uris, scope: body.scope,
    public: method === 'none', native: body.native, firstParty: body.first_party, requireMfa: body.require_mfa, requirePar: body.require_pushed_authorization_requests,
    pkce: body.pkce, ...(method && method !== 'none' ? { secretIn: method === 'client_secret_post' ? 'body' : 'header' } : {}),
    refreshGrace: body.refresh_grace_seconds, backchannelLogoutUri: body.backchannel_logout_uri, logoUri: body.logo_uri,
  };
}

export function clientChangesOfBody(body: ClientUpdateBody): ClientChanges {
  const method = body.token_endpoint_auth_method;
  return {
    name: body.client_name, redirectUris: body.redirect_uris, postLogoutRedirectUris: body.post_logout_redirect_uris, scope: body.scope, firstParty: body.first_party, requireMfa: body.require_mfa,
    requirePar: body.require_pushed_authorization_requests, pkce: body.pkce, refreshGrace: body.refresh_grace_seconds, backchannelLogoutUri: body.backchannel_logout_uri,
    logoUri: body.logo_uri,
    ...(method === undefined ? {} : method === 'none' ? { public: true } : { public: false, secretIn: method === 'client_secret_post' ? 'body' : 'header' }),
  };
}

/**
 * `--scope-description SCOPE=TEXT` (the CLI) and the console's lines of the same form, as the admin API
 * takes them: split at the first `=` (a scope with `=` in it is described through the API); TEXT left
 * empty removes the description. Undefined when none is given; a line without `=` is refused.
 */
export function scopeDescriptionsOfLines(lines: string[]): Record<string, string | null> | undefined {
  if (!lines.length) return undefined;
  const out: Record<string, string | null> = {};
  for (const line of lines) {
    const at = line.indexOf('=');
    if (at <= 0) throw new Refusal('scope_description_form', { field: 'scope_descriptions' });
    const text = line.slice(at + 1).trim();
    Object.defineProperty(out, line.slice(0, at).trim(), { value: text === '' ? null : text, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** A secret rotation: how long the secret it replaces keeps working (0 or left out: it stops now). */
export const secretRotate = z.strictObject({ keep_old_seconds: keepOld.optional() });
