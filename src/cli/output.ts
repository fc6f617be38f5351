import type { AuditEvent } from '../observability/audit.ts';
import type { FieldNames } from '../problems.ts';

/**
 * What a command prints: one JSON object (`--json`) or a short text for people; and, for a command that
 * changed something, the audit event main.ts writes as one JSON line on stderr (ids, never a secret).
 */
export interface Output {
  json: Record<string, unknown>;
  text: string;
  audit?: { event: AuditEvent; fields: Record<string, unknown>; msg: string };
}

/** A failure to report in one line; exit code 2 means "bad input", 1 "could not do it". */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 2) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** The flags of the admin API's fields, where the flag is not the field's name with dashes. */
const FLAGS: Record<string, string> = {
  client_name: 'name',
  grant_types: 'grants',
  redirect_uris: 'redirect-uri',
  post_logout_redirect_uris: 'post-logout-redirect-uri',
  token_endpoint_auth_method: 'secret-in',
  require_pushed_authorization_requests: 'require-par',
  refresh_grace_seconds: 'refresh-grace',
  keep_old_seconds: 'keep-old',
  scope_descriptions: 'scope-description',
  password: 'password-stdin',
  // Upstream providers (provider add|update).
  client_secret: 'client-secret-file',
  allowed_domains: 'allowed-domain',
  'claims.name': 'name-claim',
  'claims.email': 'email-claim',
  'claims.email_verified': 'email-verified-claim',
};

/** A refusal (src/problems.ts) as the CLI says it: fields by their flags. */
export const cliFieldNames: FieldNames = (field) => `--${FLAGS[field] ?? field.replaceAll('_', '-')}`;

function cell(value: unknown): string {
  if (value === undefined || value === null || value === '') return '-';
  if (Array.isArray(value)) return value.length ? value.map(cell).join(',') : '-';
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  // A map (an API's scope descriptions): `key=value` pairs.
  if (typeof value === 'object') return Object.keys(value).length ? Object.entries(value).map(([k, v]) => `${k}=${cell(v)}`).join('; ') : '-';
  // eslint-disable-next-line @typescript-eslint/no-base-to-string -- the commands' rows hold scalars and lists (joined above)
  return String(value);
}

/** `key  value` lines, aligned. */
export function fields(object: Record<string, unknown>): string {
  const width = Math.max(...Object.keys(object).map((k) => k.length));
  return Object.entries(object)
    .map(([k, v]) => `${k.padEnd(width)}  ${cell(v)}`)
    .join('\n');
}

/** An aligned table of the given columns. */
export function table(rows: Record<string, unknown>[], columns: string[]): string {
  if (rows.length === 0) return '(none)';
  const lines = [columns.map((c) => c.toUpperCase()), ...rows.map((row) => columns.map((c) => cell(row[c])))];
  const widths = columns.map((_, i) => Math.max(...lines.map((line) => line[i]!.length)));
  return lines.map((line) => line.map((c, i) => (i === line.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}
