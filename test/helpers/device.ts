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
