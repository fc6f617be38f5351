import { basic, browse, CookieJar, follow, hiddenField, signIn, type Followed, type Page } from './flow.ts';

/**
 * Both sides of the device authorization grant (RFC 8628) with plain `fetch`: the device asks for a
 * code and polls; the person enters it at /device in a cookie jar and signs in through the HTML forms.
 */
export interface DeviceClient {
  clientId: string;
  secret?: string;
}

export interface DeviceAuthorization {
  device_code: string;
  user_code: string;
  verification_uri: string;
  verification_uri_complete: string;
  expires_in: number;
  interval: number;
}

export interface Answer {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

async function post(url: URL, client: DeviceClient, form: Record<string, string>): Promise<Answer> {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  if (client.secret) headers.authorization = basic(client.clientId, client.secret);
  const body = new URLSearchParams(client.secret ? form : { ...form, client_id: client.clientId }).toString();
  const res = await fetch(url, { method: 'POST', headers, body });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

export function device(issuer: string, client: DeviceClient) {
  return {
    authorize: (scope: string) => post(new URL('/device/auth', issuer), client, { scope }),
    async start(scope: string): Promise<DeviceAuthorization> {
      const res = await post(new URL('/device/auth', issuer), client, { scope });
      if (res.status !== 200) throw new Error(`device authorization failed: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body as unknown as DeviceAuthorization;
    },
    poll: (deviceCode: string) => post(new URL('/token', issuer), client, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: deviceCode }),
  };
}

/** The person opens /device (optionally `?user_code=` from verification_uri_complete) and posts the code as the page's form does. */
export async function enterUserCode(issuer: string, jar: CookieJar, userCode: string, options: { prefilled?: boolean; retry?: Page } = {}): Promise<{ entryPage: Page; followed: Followed }> {
  const url = new URL(options.prefilled ? `/device?user_code=${encodeURIComponent(userCode)}` : '/device', issuer);
  // `retry`: the page that refused a code, whose form is used again.
  const entryPage = options.retry ?? (await follow(jar, issuer, await browse(jar, url), url)).page!;
  const xsrf = hiddenField(entryPage.html, 'xsrf');
  if (!xsrf) throw new Error(`no code entry form: ${entryPage.status} ${entryPage.html.slice(0, 300)}`);
  const action = new URL('/device', issuer);
  const followed = await follow(jar, issuer, await browse(jar, action, { form: { xsrf, confirm: 'yes', user_code: userCode } }), action);
  return { entryPage, followed };
}

/** Enters the code, signs in (when the jar has no session) and answers the device consent page. */
export async function approveDevice(options: {
  issuer: string;
  userCode: string;
  user?: { email: string; password: string };
  jar?: CookieJar;
  answer?: 'allow' | 'deny' | 'stop';
  /** Opened from verification_uri_complete. */
  prefilled?: boolean;
  /** The page that refused a code before: its form is used. */
  retry?: Page;
}) {
  const jar = options.jar ?? new CookieJar();
  const { entryPage, followed } = await enterUserCode(options.issuer, jar, options.userCode, { prefilled: options.prefilled, retry: options.retry });
  const flow = await signIn({
    issuer: options.issuer,
    client: { clientId: 'unused', redirectUri: 'unused' },
    scope: 'unused',
    ...(options.user ? { user: options.user } : {}),
    jar,
    start: followed,
    consent: options.answer === 'allow' || options.answer === undefined ? 'allow' : 'stop',
  });
  if (options.answer === 'deny' && flow.consentPage) {
    const csrf = hiddenField(flow.consentPage.html, '_csrf')!;
    const abort = new URL(flow.consentPage.html.match(/action="([^"]+\/abort)"/)![1]!, flow.consentPage.url);
    const denied = await follow(jar, options.issuer, await browse(jar, abort, { form: { _csrf: csrf } }), abort);
    return { jar, entryPage, consentPage: flow.consentPage, page: denied.page };
  }
  return { jar, entryPage, consentPage: flow.consentPage, page: flow.page };
}

/**
 * The whole grant once, as on any store: a device client, its code approved by `world`'s person, tokens,
 * a refresh, and the replayed device code refused (its grant revoked). Returns the tokens.
 */
export async function deviceRoundTrip(issuer: string, registry: { createClient: (input: never, validate: () => Promise<void>) => Promise<{ clientId: string }> }, user: { email: string; password: string }) {
  const { clientId } = await registry.createClient(
    { name: 'Round-trip TV', grants: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'], scope: 'openid offline_access', public: true } as never,
    async () => {},
  );
  const d = device(issuer, { clientId });
  const started = await d.start('openid offline_access');
  const pending = await d.poll(started.device_code);
  if (pending.body.error !== 'authorization_pending') throw new Error(`expected authorization_pending: ${JSON.stringify(pending.body)}`);
  const { page } = await approveDevice({ issuer, userCode: started.user_code, user });
  if (!page?.html.includes('Device connected')) throw new Error(`not approved: ${page?.status} ${page?.html.slice(0, 400)}`);
  const tokens = await d.poll(started.device_code);
  if (tokens.status !== 200) throw new Error(`no tokens: ${JSON.stringify(tokens.body)}`);
  const refreshed = await post(new URL('/token', issuer), { clientId }, { grant_type: 'refresh_token', refresh_token: String(tokens.body.refresh_token) });
  if (refreshed.status !== 200) throw new Error(`refresh failed: ${JSON.stringify(refreshed.body)}`);
  const replay = await d.poll(started.device_code);
  if (replay.body.error !== 'invalid_grant') throw new Error(`replay not refused: ${JSON.stringify(replay.body)}`);
  return { tokens: tokens.body, refreshed: refreshed.body };
}
