/**
 * When a sign-in needs a second factor, and how the result is named in the ID token.
 *
 * - `MFA_POLICY=required` (default): always.
 * - `MFA_POLICY=optional`: when the account has a factor, when the client was registered with
 *   `--require-mfa` (client metadata `require_mfa`), or when the request asks for it with
 *   `acr_values=urn:latchkey:mfa`.
 *
 * `acr` (OIDC Core §2): `urn:latchkey:mfa` when `amr` has `mfa` — a password and a second factor, or a
 * passkey with user verification — and `urn:latchkey:pwd` after a password alone. `amr` (RFC 8176):
 * `pwd`; `otp` for a TOTP or recovery code (a one-time password too); for a passkey `hwk` (a
 * device-bound key) or `swk` (a synced passkey) and `user` (the authenticator tested presence); `mfa`
 * when two factors were proven. WebAuthn reports that the person was verified, not how (PIN or
 * fingerprint), so neither `pin` nor `fpt` is claimed.
 */
export type MfaPolicy = 'required' | 'optional';

export const ACR_MFA = 'urn:latchkey:mfa';
export const ACR_PASSWORD = 'urn:latchkey:pwd';
/** Signed in through an upstream provider (upstream/), with no factor of Latchkey's own: Latchkey vouches for the upstream's signed assertion only. */
export const ACR_UPSTREAM = 'urn:latchkey:upstream';
export const ACR_VALUES = [ACR_PASSWORD, ACR_MFA, ACR_UPSTREAM];

export const AMR_PASSWORD = ['pwd'];
/** After the password: a TOTP or recovery code. */
export const AMR_TOTP = ['otp', 'mfa'];
export const AMR_MFA = [...AMR_PASSWORD, ...AMR_TOTP];

/** `upstream`: the provider an upstream sign-in went through (kept with the session: the `idp` claim). */
export type LoginResult = { accountId: string; acr: string; amr: string[]; upstream?: string };

/** Whether the client or the request demands a second factor, whatever the account has. */
export function mfaDemanded(policy: MfaPolicy, client: object | undefined, params: { acr_values?: unknown }): boolean {
  if (policy === 'required') return true;
  if ((client as { require_mfa?: unknown } | undefined)?.require_mfa === true) return true;
  const acrValues = typeof params.acr_values === 'string' ? params.acr_values.split(' ') : [];
  return acrValues.includes(ACR_MFA);
}

/** The login result of a finished sign-in: `acr` follows from the methods in `amr`. */
export function loginResult(accountId: string, amr: string[]): LoginResult {
  return { accountId, acr: amr.includes('mfa') ? ACR_MFA : ACR_PASSWORD, amr };
}

/**
 * The login result of an upstream sign-in. Alone: `acr` urn:latchkey:upstream and no `amr` (the
 * upstream's own are recorded, not repeated). After Latchkey's own second factor (`factorAmr`, e.g.
 * otp): the upstream's verified assertion and that factor are two, so `mfa` and urn:latchkey:mfa.
 */
export function upstreamLoginResult(accountId: string, upstream: string, factorAmr?: string[]): LoginResult {
  if (!factorAmr) return { accountId, acr: ACR_UPSTREAM, amr: [], upstream };
  const amr = [...new Set([...factorAmr.filter((v) => v !== 'pwd'), 'mfa'])];
  return { accountId, acr: ACR_MFA, amr, upstream };
}

/**
 * The `amr` of a passkey assertion. With user verification it proves two factors (the key, and the
 * PIN or biometric that unlocked it); `withPassword`, the password was the other one.
 */
export function passkeyAmr(info: { deviceType: 'singleDevice' | 'multiDevice'; userVerified: boolean }, withPassword = false): string[] {
  const key = info.deviceType === 'singleDevice' ? 'hwk' : 'swk';
  return [...(withPassword ? AMR_PASSWORD : []), key, 'user', ...(info.userVerified || withPassword ? ['mfa'] : [])];
}
