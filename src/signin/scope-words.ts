/** The scopes OpenID Connect defines; every other scope belongs to an API (oidc/registry.ts). */
export const OIDC_SCOPES = new Set(['openid', 'profile', 'email', 'offline_access']);

/** What a scope lets an app do, in the words a person reads on the consent page and /account. */
const SCOPE_WORDS: Record<string, string> = {
  openid: 'Know who you are',
  profile: 'See your name',
  email: 'See your email address',
  offline_access: 'Stay connected while you are away, until you sign out or revoke it',
};

/** `described`: what the operator wrote the API scope lets an app do, which says it better than the generic line. */
export function scopeInWords(scope: string, described?: string): string {
  if (described && !OIDC_SCOPES.has(scope)) return described;
  return SCOPE_WORDS[scope] ?? (OIDC_SCOPES.has(scope) ? scope : `Use the API with permission “${scope}”`);
}

/** Where an API scope's description is kept (oidc/registry.ts `scopeDescription`), as the pages need it. */
export interface ScopeDescriptions {
  scopeDescription(scope: string): Promise<string | undefined>;
}

/** Each scope in words, an API scope in its description when its API has one. */
export function describeScopes(descriptions: ScopeDescriptions, scopes: string[]): Promise<string[]> {
  return Promise.all(scopes.map(async (s) => scopeInWords(s, OIDC_SCOPES.has(s) ? undefined : await descriptions.scopeDescription(s))));
}
