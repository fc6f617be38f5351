/** The scopes OpenID Connect defines; every other scope belongs to an API (oidc/registry.ts). */
export const OIDC_SCOPES = new Set(['openid', 'profile', 'email', 'offline_access']);

/** What a scope lets an app do, in the words a person reads on the consent page and /account. */
const SCOPE_WORDS: Record<string, string> = {
  openid: 'Know who you are',
  profile: 'See your name',
  email: 'See your email address',
  offline_access: 'Stay connected while you are away, until you sign out or revoke it',
};

export function scopeInWords(scope: string): string {
  return SCOPE_WORDS[scope] ?? (OIDC_SCOPES.has(scope) ? scope : `Use the API with permission “${scope}”`);
}
