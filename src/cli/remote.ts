import type { Operations } from '../admin/operations.ts';
import type { ClientChanges, ClientInput } from '../oidc/registry.ts';
import { Refusal } from '../problems.ts';
import { CliError } from './output.ts';

/** What the commands call (src/cli/commands.ts): Operations in process, or a running server's admin API. */
export type CommandOperations = Pick<
  Operations,
  | 'createClient' | 'updateClient' | 'clientPage' | 'client' | 'deleteClient' | 'rotateClientSecret' | 'revokeOldClientSecret'
  | 'createResource' | 'updateResource' | 'resources' | 'deleteResource'
  | 'createUser' | 'setUserAdmin' | 'resetUserMfa' | 'unlockUser' | 'userPage' | 'user' | 'setUserDisabled' | 'deleteUser' | 'revokeUserSessions' | 'userSessions' | 'endUserSession' | 'connectedApps' | 'revokeConnectedApp' | 'setUserPassword'
  | 'updateUser' | 'createPasswordLink' | 'sendPasswordReset'
  | 'inviteUser' | 'listInvitations' | 'revokeInvitation' | 'resendInvitation'
  | 'signingKeys' | 'rotateSigningKeys'
  | 'addProvider' | 'providers' | 'provider' | 'updateProvider' | 'removeProvider' | 'userUpstreams' | 'unlinkUserUpstream'
>;

type Answer<K extends keyof CommandOperations> = Awaited<ReturnType<CommandOperations[K]>>;

/** A client's settings as the admin API's body names them (RFC 7591). */
function clientBody(input: Partial<Omit<ClientInput, 'backchannelLogoutUri' | 'logoUri'>> & { backchannelLogoutUri?: string | null; logoUri?: string | null }) {
  const body: Record<string, unknown> = {
    client_name: input.name, grant_types: input.grants, redirect_uris: input.redirectUris, post_logout_redirect_uris: input.postLogoutRedirectUris, scope: input.scope,
    token_endpoint_auth_method: input.public ? 'none' : input.secretIn === 'body' ? 'client_secret_post' : input.secretIn === 'header' ? 'client_secret_basic' : undefined,
    native: input.native || undefined, first_party: input.firstParty || undefined, require_mfa: input.requireMfa, require_pushed_authorization_requests: input.requirePar,
    pkce: input.pkce, refresh_grace_seconds: input.refreshGrace, backchannel_logout_uri: input.backchannelLogoutUri, logo_uri: input.logoUri,
  };
  return Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined));
}

const path = (value: string) => encodeURIComponent(value);

/**
 * The commands over a running server's admin API (`latchkey --server URL`): each operation is one
 * request to /admin/api/v1 with the operator's access token, answered with the same JSON Operations
 * answers in process. The actor argument is ignored: the server names the token's owner in its audit.
 * Refusals come back typed (problem+json `code`, `params`, JSON pointer) and are worded with flags again.
 */
export class RemoteOperations implements CommandOperations {
  readonly #base: string;
  readonly #token: string;
  constructor(server: string, token: string) {
    this.#base = `${server.replace(/\/+$/, '')}/admin/api/v1`;
    this.#token = token;
  }

  async #call<T>(method: string, route: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${this.#base}${route}`, {
        method,
        headers: { authorization: `Bearer ${this.#token}`, accept: 'application/json', ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(30_000),
      });
    } catch (err) {
      throw new CliError(`cannot reach ${this.#base}: ${(err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message}`, 1);
    }
    const text = await res.text();
    let answer: unknown;
    try {
      answer = text ? JSON.parse(text) : {};
    } catch {
      throw new CliError(`${this.#base} answered ${res.status} without JSON: is it a Latchkey server?`, 1);
    }
    if (res.ok) return answer as T;
    const refusal = Refusal.fromProblem(answer);
    if (refusal && res.status < 500) throw refusal;
    const detail = (answer as { detail?: unknown }).detail;
    const said = typeof detail === 'string' ? detail : `status ${res.status}`;
    if (res.status === 401) throw new CliError(`the server refused the token (${said}): log in again (latchkey login --server URL) or give a fresh one with --token`, 1);
    throw new CliError(`the server refused: ${said}`, res.status < 500 ? 2 : 1);
  }

  createClient(_actor: unknown, input: ClientInput) {
    return this.#call<Answer<'createClient'>>('POST', '/clients', clientBody(input));
  }
  updateClient(_actor: unknown, id: string, changes: ClientChanges) {
    // An update names false too (first party off), and the authentication method only when given.
    const body: Record<string, unknown> = { ...clientBody(changes), ...(changes.firstParty !== undefined ? { first_party: changes.firstParty } : {}) };
    if (changes.public === undefined) delete body.token_endpoint_auth_method;
    return this.#call<Answer<'updateClient'>>('PATCH', `/clients/${path(id)}`, body);
  }
  clientPage(page: { cursor?: string; limit: number }) {
    return this.#call<Answer<'clientPage'>>('GET', `/clients?${new URLSearchParams({ limit: String(page.limit), ...(page.cursor ? { cursor: page.cursor } : {}) })}`);
  }
  client(id: string) {
    return this.#call<Answer<'client'>>('GET', `/clients/${path(id)}`);
  }
  deleteClient(_actor: unknown, id: string) {
    return this.#call<Answer<'deleteClient'>>('DELETE', `/clients/${path(id)}`);
  }
  rotateClientSecret(_actor: unknown, id: string, keepOldSeconds = 0) {
    return this.#call<Answer<'rotateClientSecret'>>('POST', `/clients/${path(id)}/secret`, { keep_old_seconds: keepOldSeconds });
  }
  revokeOldClientSecret(_actor: unknown, id: string) {
    return this.#call<Answer<'revokeOldClientSecret'>>('DELETE', `/clients/${path(id)}/secret/old`);
  }

  createResource(_actor: unknown, input: Parameters<Operations['createResource']>[1]) {
    const body = { uri: input.uri, scope: input.scope, token_format: input.tokenFormat, ttl: input.ttl, private_scopes: input.privateScopes, scope_descriptions: input.scopeDescriptions };
    return this.#call<Answer<'createResource'>>('POST', '/resources', body);
  }
  updateResource(_actor: unknown, uri: string, changes: Parameters<Operations['updateResource']>[2]) {
    const body = { scope: changes.scope, token_format: changes.tokenFormat, ttl: changes.ttl, private_scopes: changes.privateScopes, scope_descriptions: changes.scopeDescriptions };
    return this.#call<Answer<'updateResource'>>('PATCH', `/resources/${path(uri)}`, body);
  }
  async resources() {
    return (await this.#call<{ resources: Answer<'resources'> }>('GET', '/resources')).resources;
  }
  deleteResource(_actor: unknown, uri: string) {
    return this.#call<Answer<'deleteResource'>>('DELETE', `/resources/${path(uri)}`);
  }

  createUser(_actor: unknown, input: Parameters<Operations['createUser']>[1]) {
    const { setPasswordLink, ...rest } = input;
    return this.#call<Answer<'createUser'>>('POST', '/users', { ...rest, ...(setPasswordLink ? { set_password_link: true } : {}) });
  }
  updateUser(_actor: unknown, id: string, changes: Parameters<Operations['updateUser']>[2]) {
    return this.#call<Answer<'updateUser'>>('PATCH', `/users/${path(id)}`, changes);
  }
  createPasswordLink(_actor: unknown, id: string) {
    return this.#call<Answer<'createPasswordLink'>>('POST', `/users/${path(id)}/password-link`);
  }
  sendPasswordReset(_actor: unknown, id: string) {
    return this.#call<Answer<'sendPasswordReset'>>('POST', `/users/${path(id)}/password-reset`);
  }
  inviteUser(_actor: unknown, input: Parameters<Operations['inviteUser']>[1]) {
    return this.#call<Answer<'inviteUser'>>('POST', '/invitations', input);
  }
  listInvitations() {
    return this.#call<Answer<'listInvitations'>>('GET', '/invitations');
  }
  revokeInvitation(_actor: unknown, email: string) {
    return this.#call<Answer<'revokeInvitation'>>('DELETE', `/invitations/${path(email)}`);
  }
  resendInvitation(_actor: unknown, email: string) {
    return this.#call<Answer<'resendInvitation'>>('POST', `/invitations/${path(email)}/resend`);
  }
  setUserAdmin(_actor: unknown, id: string, admin: boolean) {
    return this.#call<Answer<'setUserAdmin'>>('PUT', `/users/${path(id)}/admin`, { admin });
  }
  resetUserMfa(_actor: unknown, id: string) {
    return this.#call<Answer<'resetUserMfa'>>('DELETE', `/users/${path(id)}/mfa`);
  }
  unlockUser(_actor: unknown, id: string) {
    return this.#call<Answer<'unlockUser'>>('DELETE', `/users/${path(id)}/lockout`);
  }
  userPage(page: { cursor?: string; limit: number; emailPrefix?: string }) {
    return this.#call<Answer<'userPage'>>('GET', `/users?${new URLSearchParams({ limit: String(page.limit), ...(page.cursor ? { cursor: page.cursor } : {}), ...(page.emailPrefix ? { q: page.emailPrefix } : {}) })}`);
  }
  user(id: string) {
    return this.#call<Answer<'user'>>('GET', `/users/${path(id)}`);
  }
  setUserDisabled(_actor: unknown, id: string, disabled: boolean) {
    return this.#call<Answer<'setUserDisabled'>>('PUT', `/users/${path(id)}/disabled`, { disabled });
  }
  deleteUser(_actor: unknown, id: string) {
    return this.#call<Answer<'deleteUser'>>('DELETE', `/users/${path(id)}`);
  }
  revokeUserSessions(_actor: unknown, id: string) {
    return this.#call<Answer<'revokeUserSessions'>>('DELETE', `/users/${path(id)}/sessions`);
  }
  userSessions(id: string) {
    return this.#call<Answer<'userSessions'>>('GET', `/users/${path(id)}/sessions`);
  }
  endUserSession(_actor: unknown, id: string, handle: string) {
    return this.#call<Answer<'endUserSession'>>('DELETE', `/users/${path(id)}/sessions/${path(handle)}`);
  }
  connectedApps(id: string) {
    return this.#call<Answer<'connectedApps'>>('GET', `/users/${path(id)}/apps`);
  }
  revokeConnectedApp(_actor: unknown, id: string, clientId: string) {
    return this.#call<Answer<'revokeConnectedApp'>>('DELETE', `/users/${path(id)}/apps/${path(clientId)}`);
  }
  setUserPassword(_actor: unknown, id: string, password: string) {
    return this.#call<Answer<'setUserPassword'>>('PUT', `/users/${path(id)}/password`, { password });
  }

  async signingKeys() {
    return (await this.#call<{ keys: Answer<'signingKeys'> }>('GET', '/keys')).keys;
  }
  rotateSigningKeys() {
    return this.#call<Answer<'rotateSigningKeys'>>('POST', '/keys/rotate');
  }

  addProvider(_actor: unknown, body: unknown) {
    return this.#call<Answer<'addProvider'>>('POST', '/providers', body);
  }
  async providers() {
    return (await this.#call<{ providers: Answer<'providers'> }>('GET', '/providers')).providers;
  }
  provider(id: string) {
    return this.#call<Answer<'provider'>>('GET', `/providers/${path(id)}`);
  }
  updateProvider(_actor: unknown, id: string, body: unknown) {
    return this.#call<Answer<'updateProvider'>>('PATCH', `/providers/${path(id)}`, body);
  }
  removeProvider(_actor: unknown, id: string) {
    return this.#call<Answer<'removeProvider'>>('DELETE', `/providers/${path(id)}`);
  }
  userUpstreams(id: string) {
    return this.#call<Answer<'userUpstreams'>>('GET', `/users/${path(id)}/upstreams`);
  }
  unlinkUserUpstream(_actor: unknown, id: string, provider: string) {
    return this.#call<Answer<'unlinkUserUpstream'>>('DELETE', `/users/${path(id)}/upstreams/${path(provider)}`);
  }
}
