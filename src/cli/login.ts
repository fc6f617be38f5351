import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { CLI_CLIENT_ID, CLI_SCOPE } from '../admin/cli-client.ts';
import { adminApiUri } from '../admin/operations.ts';
import { DEVICE_CODE_GRANT } from '../oidc/registry.ts';
import { ACR_MFA } from '../signin/policy.ts';
import { CliError, type Output } from './output.ts';

/**
 * `latchkey login --server URL`: the CLI's own sign-in, the device authorization grant (RFC 8628) with
 * the server's CLI client (src/admin/cli-client.ts), as `gh auth login` does. The person opens the
 * printed address in any browser, signs in there with a second factor and allows the request; the
 * tokens are kept in `$XDG_CONFIG_HOME/latchkey/credentials.json` (mode 0600), by server, for later
 * `--server URL` commands. Nothing here prints a token.
 */
export interface LoginIo {
  env: Record<string, string | undefined>;
  stderr: { write(text: string): unknown };
  /** Waits between polls; tests pass their own, so nothing sleeps. */
  sleep?: (ms: number) => Promise<void>;
}

interface Saved {
  access_token: string;
  /** Epoch ms. */
  expires_at: number;
  refresh_token?: string;
}

type CredentialsFile = { servers: Record<string, Saved> };

/** A refreshed token is taken a little before it expires, so it does not lapse on the way. */
const EXPIRY_MARGIN_MS = 30_000;

/** The server as the credentials are keyed: its URL without a trailing slash. Refuses anything but a plain http(s) URL (exit 2). */
export function serverUrl(value: string): string {
  const url = URL.parse(value);
  if (!url || !['http:', 'https:'].includes(url.protocol) || url.search || url.hash || url.username || url.password) {
    throw new CliError(`--server must be the server's URL (its ISSUER, http or https, without query or fragment), got ${JSON.stringify(value)}`);
  }
  return url.href.replace(/\/+$/, '');
}

export function credentialsPath(env: LoginIo['env']): string {
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config');
  return join(base, 'latchkey', 'credentials.json');
}

async function readCredentials(path: string): Promise<CredentialsFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { servers: {} };
    throw new CliError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 1);
  }
  try {
    const parsed = JSON.parse(text) as Partial<CredentialsFile>;
    return { servers: parsed.servers && typeof parsed.servers === 'object' ? parsed.servers : {} };
  } catch {
    throw new CliError(`${path} is not JSON: remove it and run latchkey login again`, 1);
  }
}

/** Written whole to a new file of mode 0600, then renamed over the old one: never readable by others, never half-written. */
async function writeCredentials(path: string, file: CredentialsFile): Promise<void> {
  const dir = join(path, '..');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const temporary = `${path}.${process.pid}.${Date.now()}.tmp`;
  await writeFile(temporary, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
  await chmod(temporary, 0o600);
  await rename(temporary, path);
}

async function request(url: string, init: RequestInit = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  let res: Response;
  try {
    res = await fetch(url, { ...init, headers: { accept: 'application/json', ...init.headers }, signal: AbortSignal.timeout(30_000) });
  } catch (err) {
    throw new CliError(`cannot reach ${url}: ${(err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message}`, 1);
  }
  const text = await res.text();
  try {
    const body = JSON.parse(text) as unknown;
    return { status: res.status, body: body && typeof body === 'object' ? (body as Record<string, unknown>) : {} };
  } catch {
    throw new CliError(`${url} answered ${res.status} without JSON: is it a Latchkey server?`, 1);
  }
}

const form = (url: string, fields: Record<string, string>) =>
  request(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString() });

/** The server's endpoints, from its discovery document. */
async function discover(server: string): Promise<{ issuer: string; deviceAuthorization: string; token: string }> {
  const { status, body } = await request(`${server}/.well-known/openid-configuration`);
  const { issuer, device_authorization_endpoint: deviceAuthorization, token_endpoint: token } = body;
  if (status !== 200 || typeof issuer !== 'string' || typeof deviceAuthorization !== 'string' || typeof token !== 'string') {
    throw new CliError(`${server} has no device authorization endpoint in its discovery document: is it a Latchkey server?`, 1);
  }
  return { issuer, deviceAuthorization, token };
}

function saved(body: Record<string, unknown>, now: number): Saved {
  const expiresIn = typeof body.expires_in === 'number' ? body.expires_in : 0;
  return { access_token: String(body.access_token), expires_at: now + expiresIn * 1000, ...(typeof body.refresh_token === 'string' ? { refresh_token: body.refresh_token } : {}) };
}

// eslint-disable-next-line @typescript-eslint/no-base-to-string -- an OAuth error body: `error` is a string (RFC 6749 §5.2)
const said = (body: Record<string, unknown>) => `${String(body.error ?? 'error')}${typeof body.error_description === 'string' ? `: ${body.error_description}` : ''}`;

export async function login(server: string, io: LoginIo): Promise<Output> {
  const sleep = io.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const endpoints = await discover(server);
  const started = await form(endpoints.deviceAuthorization, { client_id: CLI_CLIENT_ID, scope: CLI_SCOPE, resource: adminApiUri(endpoints.issuer), acr_values: ACR_MFA });
  const { device_code: deviceCode, user_code: userCode, verification_uri: uri, verification_uri_complete: complete } = started.body;
  if (started.status !== 200 || typeof deviceCode !== 'string' || typeof userCode !== 'string' || typeof uri !== 'string') {
    throw new CliError(`${server} refused to start a login (${said(started.body)}): is it a Latchkey server of this version?`, 1);
  }
  io.stderr.write(
    [
      `To sign in to ${server}, open ${typeof complete === 'string' ? complete : uri}`,
      `in a browser and check that it shows the code ${userCode}${typeof complete === 'string' ? '' : ' (type it there)'}.`,
      'Sign in as an admin, with your second factor, and allow the request. Waiting…',
      '',
    ].join('\n'),
  );
  const expiresAt = Date.now() + (typeof started.body.expires_in === 'number' ? started.body.expires_in : 600) * 1000;
  let interval = (typeof started.body.interval === 'number' ? started.body.interval : 5) * 1000;
  for (;;) {
    await sleep(interval);
    const answer = await form(endpoints.token, { grant_type: DEVICE_CODE_GRANT, device_code: deviceCode, client_id: CLI_CLIENT_ID });
    if (answer.status === 200 && typeof answer.body.access_token === 'string') {
      const path = credentialsPath(io.env);
      const file = await readCredentials(path);
      file.servers[server] = saved(answer.body, Date.now());
      await writeCredentials(path, file);
      return {
        json: { server, credentials: path, expires_at: new Date(file.servers[server].expires_at).toISOString(), refreshable: file.servers[server].refresh_token !== undefined },
        text: `Logged in to ${server}. The tokens are kept in ${path} (readable by you only); "latchkey logout --server ${server}" forgets them.`,
      };
    }
    const error = answer.body.error;
    if (error === 'authorization_pending') continue;
    // RFC 8628 §3.5: every slow_down adds 5 seconds to the interval, for good.
    if (error === 'slow_down') {
      interval += 5000;
      continue;
    }
    if (error === 'access_denied') throw new CliError(`the login was refused in the browser (access_denied); nothing was stored`, 1);
    if (error === 'expired_token' || Date.now() > expiresAt) throw new CliError(`the code ${userCode} expired before it was allowed (expired_token); run "latchkey login --server ${server}" again`, 1);
    throw new CliError(`the server refused the login (${said(answer.body)}); nothing was stored`, 1);
  }
}

export async function logout(server: string, env: LoginIo['env']): Promise<Output> {
  const path = credentialsPath(env);
  const file = await readCredentials(path);
  const had = server in file.servers;
  if (had) {
    delete file.servers[server];
    await writeCredentials(path, file);
  }
  return {
    json: { server, logged_out: had },
    text: had ? `Logged out of ${server}: its tokens are gone from ${path}.` : `Not logged in to ${server}: nothing to forget.`,
  };
}

/**
 * The access token kept for `server` by `latchkey login`, refreshed (and kept again) when it is about to
 * expire; undefined when there is none. A refresh the server refuses forgets the login.
 */
export async function storedToken(server: string, env: LoginIo['env']): Promise<string | undefined> {
  const path = credentialsPath(env);
  const file = await readCredentials(path);
  const entry = file.servers[server];
  if (!entry) return undefined;
  if (Date.now() < entry.expires_at - EXPIRY_MARGIN_MS) return entry.access_token;
  if (!entry.refresh_token) throw new CliError(`the login to ${server} has expired: run "latchkey login --server ${server}" again`, 1);
  const { token } = await discover(server);
  const answer = await form(token, { grant_type: 'refresh_token', refresh_token: entry.refresh_token, client_id: CLI_CLIENT_ID });
  if (answer.status !== 200 || typeof answer.body.access_token !== 'string') {
    if (answer.status >= 500) throw new CliError(`${server} could not refresh the login (${said(answer.body)}); try again`, 1);
    delete file.servers[server];
    await writeCredentials(path, file);
    throw new CliError(`the login to ${server} has ended (${said(answer.body)}): run "latchkey login --server ${server}" again`, 1);
  }
  file.servers[server] = { ...saved(answer.body, Date.now()), ...(typeof answer.body.refresh_token === 'string' ? {} : entry.refresh_token ? { refresh_token: entry.refresh_token } : {}) };
  await writeCredentials(path, file);
  return file.servers[server].access_token;
}
