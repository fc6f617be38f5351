/**
 * Refusals: what Registry, Accounts and the admin Operations answer when an operator's request breaks a
 * rule, typed once and rendered by each front in its own words (Logto's RequestError is the model):
 *
 * - the CLI names fields by their flags (`--redirect-uri must use https …`) and exits 2;
 * - the admin API answers RFC 9457 problem+json with `code` and a JSON pointer to the field;
 * - the console shows the message next to the form field.
 *
 * A message is a template from REFUSALS: `{name}` is a parameter, `{@}` the refusal's own field and
 * `{@other}` another field, each named by the front that renders it. Fields are named as the admin API
 * names them (RFC 7591 for clients); parameters never hold a secret (they are shown and logged).
 */
type Template = { status?: 400 | 404 | 409; message: string };

export const REFUSALS = {
  // ---- input ----
  invalid_input: { message: '{detail}' },
  invalid_field: { message: '{@}: {detail}' },
  required: { message: '{@} is required' },
  empty: { message: '{@} must not be empty' },
  nothing_to_change: { message: 'name at least one setting to change' },
  cursor_invalid: { message: 'not a cursor from this API' },

  // ---- upstream providers ----
  provider_not_found: { status: 404, message: 'no upstream provider with id {id}' },
  provider_exists: { status: 409, message: 'an upstream provider with id {id} exists already' },
  provider_busy: { status: 409, message: 'the upstream provider {id} is being changed by someone else: try again' },
  provider_id_invalid: { message: '{@} must be 1 to 40 lower-case letters, digits or dashes, got {value}' },
  provider_issuer_needed: { message: '{@} is required for the {preset} preset' },
  provider_tenant_needed: { message: '{@} (the directory, tenant id or domain) is required for the entra preset' },
  identity_last_way_in: { status: 409, message: 'the {provider} identity is the only way this account signs in (its password was never set, and it has no passkey): it stays linked until a password is set or a passkey is added' },
  identity_not_linked: { status: 404, message: 'no identity of {provider} with subject {sub} is linked to this account' },

  // ---- clients ----
  client_not_found: { status: 404, message: 'no client with id {client_id}' },
  client_busy: { status: 409, message: 'the client {client_id} is being changed by someone else: try again' },
  client_of_api: { status: 409, message: 'client {client_id} belongs to API {resource}: it has no settings to update' },
  client_of_api_delete: { status: 409, message: 'client {client_id} belongs to API {resource}: use "latchkey resource delete"' },
  client_public_no_secret: { message: 'client {client_id} is public and has no secret' },
  client_metadata_invalid: { message: 'invalid client: {description}' },
  grants_missing: { message: '{@} needs at least one of {known}' },
  grant_unknown: { message: 'unknown grant "{grant}" (known: {known})' },
  native_needs_code: { message: '{@} needs the authorization_code grant' },
  public_client_credentials: { message: 'a public client cannot use client_credentials' },
  native_is_public: { message: 'a native app is public (RFC 8252): it has no secret, so {@} stays none' },
  refresh_needs_interactive: { message: 'refresh_token needs authorization_code or {device_grant}' },
  redirect_uri_missing: { message: 'authorization_code needs at least one {@}' },
  needs_code_grant: { message: '{@} needs the authorization_code grant' },
  pkce_unknown: { message: '{@} must be required or optional, got {value}' },
  pkce_optional_public: { message: '{@} optional is only for confidential clients: PKCE is what protects the codes of a {@public} or {@native} client' },
  pkce_optional_needs_code: { message: '{@} optional needs the authorization_code grant' },
  secret_in_unknown: { message: '{@} must be header or body, got {value}' },
  secret_in_public: { message: '{@} body is for confidential clients: a {@public} or {@native} client has no secret' },
  refresh_grace_range: { message: '{@} must be a whole number of seconds from 0 to {max}' },
  keep_old_range: { message: '{@} must be a whole number of seconds from 0 to {max}' },
  refresh_grace_needs_refresh: { message: '{@} needs the refresh_token grant' },
  uri_control_characters: { message: '{@} must not contain spaces, line breaks or other control characters' },
  uri_not_absolute: { message: '{@} must be an absolute URI, got {uri}' },
  uri_credentials: { message: '{@} must not carry a user name or password' },
  uri_fragment: { message: '{@} must not have a fragment (RFC 6749 §3.1.2), got {uri}' },
  uri_wildcard: { message: '{@} must be exact, without wildcards, got {uri}' },
  uri_plain_http: { message: '{@} must use https (plain http only for 127.0.0.1, [::1] or localhost), got {uri}' },
  uri_scheme: { message: '{@} must use https, or a reverse-DNS private-use scheme such as com.example.app: for a {@public} native app, got {uri}' },
  uri_private_scheme_confidential: { message: '{@} may use the private-use scheme {scheme}: only for a {@public} (native) client, got {uri}' },
  backchannel_target_refused: { message: '{@} {reason}' },
  logo_uri_https: { message: '{@} must be an https URL (it is shown on the sign-in page), got {uri}' },

  // ---- scopes and APIs ----
  scope_missing: { message: '{@} needs at least one scope' },
  scope_is_openid: { message: '"{scope}" is an OpenID scope and cannot belong to an API' },
  scope_malformed: { message: '"{scope}" is not a valid scope token (RFC 6749 §3.3)' },
  scope_unowned: { message: 'scope "{scope}" belongs to no API: register it first with "latchkey resource create --uri … --scope {scope}"' },
  scope_taken: { status: 409, message: 'scope "{scope}" already belongs to {owner}' },
  scope_description_form: { message: '{@}: write each as SCOPE=TEXT, such as notes:read=Read your notes' },
  scope_description_unknown: { message: '{@}: "{scope}" is not one of this API\'s scopes' },
  scope_description_too_long: { message: '{@}: the description of "{scope}" is longer than {max} characters' },
  scope_description_control_characters: { message: '{@}: the description of "{scope}" must be one line of plain text, without line breaks or other control characters' },
  resource_uri_fragment: { message: '{@} must not have a fragment (RFC 8707)' },
  ttl_range: { message: '{@} must be a whole number of seconds between 60 and 86400' },
  token_format_unknown: { message: '{@} must be opaque or jwt' },
  resource_exists: { status: 409, message: 'an API with uri {uri} already exists' },
  resource_not_found: { status: 404, message: 'no API with uri {uri}' },
  resource_busy: { status: 409, message: 'API {uri} is being changed by someone else: try again' },
  admin_api_opaque_only: { status: 409, message: 'the admin API takes opaque access tokens only' },
  admin_api_undeletable: { status: 409, message: 'the admin API cannot be deleted (every server registers it again at start)' },

  // ---- people ----
  email_invalid: { message: 'not an email address: {email}' },
  password_refused: { message: '{reason}' },
  password_too_short: { message: 'the password needs at least 8 characters' },
  password_too_long: { message: 'the password may have at most 1024 characters' },
  account_exists: { status: 409, message: 'an account with email {email} already exists' },
  account_not_found: { status: 404, message: 'no account with id {id}' },
  account_busy: { status: 409, message: 'the account {id} is being changed by someone else: try again' },
  account_changed: { status: 409, message: '{reason}' },
  email_changed_since_link: { status: 409, message: 'the address changed since the link was sent' },
  user_not_found: { status: 404, message: 'no user with {by} {value}' },
  bootstrap_email_not_admin: { status: 409, message: 'ADMIN_BOOTSTRAP_EMAIL names {email}, an account without the admin role: grant it with "latchkey user grant-admin {email}", or name another address' },
  second_factor_exists: { status: 409, message: 'this account already has a second factor' },
  second_factor_missing: { status: 409, message: 'this account has no second factor' },
  passkey_removed: { status: 409, message: 'the passkey was removed' },
  passkey_not_found: { status: 404, message: 'no such passkey' },
  session_not_found: { status: 404, message: '{email} has no session with that handle (it may have ended)' },
  invitation_not_found: { status: 404, message: 'no pending invitation for {email}' },
  invitation_needs_email: { status: 409, message: 'invitations are sent by email, and EMAIL is off on this server' },
  password_or_link: { message: 'give either a password or ask for a one-time set-password link (the person sets their password with it), not both' },
  own_account: { status: 409, message: 'you cannot {action} your own account: ask another admin' },
  user_disabled_no_link: { status: 409, message: '{email} is disabled: enable the account first, a link would not work' },
  password_reset_needs_email: { status: 409, message: 'password reset links are sent by email, and EMAIL is off on this server: make a one-time set-password link instead' },
  links_per_address: { status: 409, message: 'too many links were sent to {email} this hour (EMAIL_LINKS_PER_ADDRESS_PER_HOUR): try again later' },
  app_not_connected: { status: 404, message: '{email} has not granted {client_id} access (no remembered consent)' },

  // ---- lockouts and keys ----
  lockout_not_found: { status: 404, message: 'no lockout with that key' },
  keys_from_file: { status: 409, message: 'signing keys come from SIGNING_KEYS_FILE: rotate them in that file, then restart the servers' },
} as const satisfies Record<string, Template>;

export type RefusalCode = keyof typeof REFUSALS;
export type RefusalParams = Record<string, string | number>;
/** How a front names a field (`{@name}` in a template). */
export type FieldNames = (field: string) => string;

/** The admin API's names: the fields of its JSON bodies. */
export const apiFieldNames: FieldNames = (field) => field;

export class Refusal extends Error {
  readonly code: RefusalCode;
  readonly status: 400 | 404 | 409;
  /** The field it concerns, as the admin API names it (its JSON pointer is `#/<field>`). */
  readonly field?: string;
  readonly params: RefusalParams;
  /** Koa: the message is meant for the caller. */
  readonly expose = true;
  /** More refusals of the same input (a form's other fields), all found in one pass. */
  readonly others: Refusal[];

  constructor(code: RefusalCode, options: { field?: string; params?: RefusalParams; others?: Refusal[] } = {}) {
    const template: Template = REFUSALS[code];
    const params = options.params ?? {};
    super(renderTemplate(template.message, options.field, params, apiFieldNames));
    this.code = code;
    this.status = template.status ?? 400;
    if (options.field !== undefined) this.field = options.field;
    this.params = params;
    this.others = options.others ?? [];
  }

  /** Every refusal of the input: this one and the others found with it. */
  get all(): Refusal[] {
    return [this, ...this.others];
  }

  /** The message with fields named by `names` (the CLI: flags; the console: labels). */
  render(names: FieldNames): string {
    return renderTemplate(REFUSALS[this.code].message, this.field, this.params, names);
  }

  /** RFC 6901 pointer to the field, or to the whole input. */
  get pointer(): string {
    return this.field === undefined ? '#' : `#/${this.field.split('.').map((p) => p.replaceAll('~', '~0').replaceAll('/', '~1')).join('/')}`;
  }

  /** The answer of the admin API's problem+json for this refusal (and the others). */
  problem() {
    return {
      code: this.code,
      ...(Object.keys(this.params).length ? { params: this.params } : {}),
      errors: this.all.map((r) => ({ pointer: r.pointer, code: r.code, detail: r.message, ...(Object.keys(r.params).length ? { params: r.params } : {}) })),
    };
  }

  /** A refusal read back from an admin API problem (the CLI's `--server` mode), or undefined when it names no known code. */
  static fromProblem(body: unknown): Refusal | undefined {
    const rebuild = (e: { pointer?: unknown; code?: unknown; params?: unknown }) => {
      if (typeof e.code !== 'string' || !(e.code in REFUSALS)) return undefined;
      const pointer = typeof e.pointer === 'string' && e.pointer.startsWith('#/') ? e.pointer.slice(2).split('/').map((p) => p.replaceAll('~1', '/').replaceAll('~0', '~')).join('.') : undefined;
      const params = typeof e.params === 'object' && e.params !== null ? (e.params as RefusalParams) : {};
      return new Refusal(e.code as RefusalCode, { ...(pointer ? { field: pointer } : {}), params });
    };
    const problem = body as { code?: unknown; params?: unknown; errors?: { pointer?: unknown; code?: unknown; params?: unknown }[] };
    const found = (problem.errors ?? []).map(rebuild).filter((r): r is Refusal => r !== undefined);
    if (!found.length) return rebuild(problem);
    return new Refusal(found[0]!.code, { ...(found[0]!.field ? { field: found[0]!.field } : {}), params: found[0]!.params, others: found.slice(1) });
  }
}

/** Many refusals of one input as one, the first leading. */
export function refusalOf(refusals: Refusal[]): Refusal {
  const [first, ...others] = refusals;
  return new Refusal(first!.code, { ...(first!.field !== undefined ? { field: first!.field } : {}), params: first!.params, others: [...first!.others, ...others] });
}

function renderTemplate(message: string, field: string | undefined, params: RefusalParams, names: FieldNames): string {
  return message.replace(/\{(@?)([a-z_]*)\}/g, (token, at: string, name: string) => {
    if (at) return names(name || field || '');
    return name in params ? String(params[name]) : token;
  });
}
