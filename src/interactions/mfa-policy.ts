/**
 * When a sign-in needs a second factor, and how the result is named in the ID token.
 *
 * - `MFA_POLICY=required` (default): always.
 * - `MFA_POLICY=optional`: when the account has a factor, when the client was registered with
 *   `--require-mfa` (client metadata `require_mfa`), or when the request asks for it with
 *   `acr_values=urn:latchkey:mfa`.
 *
 * `acr` (OIDC Core §2): `urn:latchkey:mfa` after a password and a second factor, `urn:latchkey:pwd`
 * after a password alone. `amr` (RFC 8176): `pwd`, plus `otp` and `mfa` when a TOTP or recovery code
 * (a one-time password too) was also given.
 */
export type MfaPolicy = 'required' | 'optional';

export const ACR_MFA = 'urn:latchkey:mfa';
export const ACR_PASSWORD = 'urn:latchkey:pwd';
export const ACR_VALUES = [ACR_PASSWORD, ACR_MFA];

export const AMR_PASSWORD = ['pwd'];
export const AMR_MFA = ['pwd', 'otp', 'mfa'];

/** Whether the client or the request demands a second factor, whatever the account has. */
export function mfaDemanded(policy: MfaPolicy, client: object | undefined, params: { acr_values?: unknown }): boolean {
  if (policy === 'required') return true;
  if ((client as { require_mfa?: unknown } | undefined)?.require_mfa === true) return true;
  const acrValues = typeof params.acr_values === 'string' ? params.acr_values.split(' ') : [];
  return acrValues.includes(ACR_MFA);
}

/** The login result of a finished sign-in. */
export function loginResult(accountId: string, withSecondFactor: boolean) {
  return withSecondFactor ? { accountId, acr: ACR_MFA, amr: AMR_MFA } : { accountId, acr: ACR_PASSWORD, amr: AMR_PASSWORD };
}
