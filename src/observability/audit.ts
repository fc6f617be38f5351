import { activityOf } from './activity.ts';
import { SECRET_FIELDS, withoutRedaction, type Logger } from './logger.ts';

/**
 * Audit events: log lines with a stable `event` field that operators alert and search on. The names
 * below are a contract (docs/operations.md lists the same ones: `npm run docs`, checked by test/readme.test.ts);
 * add one here and there together, never rename one.
 *
 * Fields name accounts and clients by id, never by secret: no password, code, token value or token id
 * (`jti`), no cookie. The logger's redaction is the second line of defence, not the first.
 */
export const AUDIT_EVENTS = [
  'signin_succeeded',
  'signin_failed',
  'second_factor_succeeded',
  'second_factor_failed',
  'second_factor_enrolled',
  'second_factor_removed',
  'recovery_codes_regenerated',
  'passkey_registered',
  'passkey_used',
  'passkey_renamed',
  'passkey_removed',
  'password_changed',
  'sessions_revoked',
  'session_ended',
  'account_sudo_started',
  'lockout_started',
  'lockout_ended',
  'consent_granted',
  'device_approved',
  'device_denied',
  'consent_revoked',
  'token_issued',
  'token_revoked',
  'refresh_token_reuse_detected',
  'backchannel_logout_failed',
  'client_authentication_failed',
  'client_created',
  'client_updated',
  'client_deleted',
  'client_secret_rotated',
  'client_old_secret_revoked',
  'resource_created',
  'resource_deleted',
  'user_created',
  'user_disabled',
  'user_enabled',
  'user_deleted',
  'user_updated',
  'password_link_created',
  'user_unlocked',
  'signing_keys_rotated',
  'resource_updated',
  'admin_granted',
  'admin_revoked',
  'admin_bootstrapped',
  'admin_setup_completed',
  'storage_unavailable',
  'storage_recovered',
  'process_crashed',
  'introspection_throttled',
  'password_reset_requested',
  'password_reset',
  'email_verification_sent',
  'email_verified',
  'email_change_requested',
  'email_changed',
  'email_change_reported',
  'mail_failed',
  'invitation_sent',
  'invitation_accepted',
  'invitation_revoked',
  'signup_requested',
  'signed_up',
  'upstream_signin',
  'upstream_signin_failed',
  'upstream_linked',
  'upstream_unlinked',
  'upstream_provider_added',
  'upstream_provider_updated',
  'upstream_provider_removed',
] as const;

export type AuditEvent = (typeof AUDIT_EVENTS)[number];

/** Where a change was made, when more than one place can make it. */
export type AuditSource = 'signin' | 'account_page' | 'cli' | 'admin_api';

type Level = 'info' | 'warn' | 'error' | 'fatal';

/** Everything else is `info`: these are what an operator alerts on. */
const LEVELS: Partial<Record<AuditEvent, Level>> = {
  lockout_started: 'warn',
  refresh_token_reuse_detected: 'warn',
  client_authentication_failed: 'warn',
  backchannel_logout_failed: 'warn',
  introspection_throttled: 'warn',
  email_change_reported: 'warn',
  mail_failed: 'warn',
  storage_unavailable: 'error',
  process_crashed: 'fatal',
};

export function auditLevel(event: AuditEvent): Level {
  return LEVELS[event] ?? 'info';
}

const SECRET_NAMES = new Set<string>(SECRET_FIELDS);

/**
 * Whether redaction would leave these fields as they are: no field is named like a secret, and none is
 * an object (nested paths are the only others redacted). Most audit lines are such; matching the ~70
 * redaction paths against them cost more CPU than the rest of a passkey sign-in's logging.
 */
function nothingToRedact(fields: Record<string, unknown>): boolean {
  for (const name in fields) {
    if (SECRET_NAMES.has(name)) return false;
    const value = fields[name];
    if (value !== null && typeof value === 'object' && !(Array.isArray(value) && value.every((v) => v === null || typeof v !== 'object'))) return false;
  }
  return true;
}

/** One log line for one audit event (`msg` is for people, `event` for machines), and its entry in the activity log. */
export function audit(logger: Logger, event: AuditEvent, fields: Record<string, unknown> = {}, msg: string = event): void {
  (nothingToRedact(fields) ? withoutRedaction(logger) : logger)[auditLevel(event)]({ event, ...fields }, msg);
  activityOf(logger)?.append(event, fields, msg);
}
