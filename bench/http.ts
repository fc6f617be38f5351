import { Agent, request } from 'node:http';
import type { CookieJar } from '../test/helpers/flow.ts';

/**
 * The sign-in flows' HTTP client: node:http on keep-alive connections, redirects followed by hand while
 * they stay on the server. It does what test/helpers/flow.ts does with `fetch`, for a fraction of the
 * CPU: the load generator shares the machine's 2 cores with the server it measures.
 */
const agent = new Agent({ keepAlive: true, maxSockets: 256 });

export interface Answer {
  url: URL;
  status: number;
  location?: string;
  body: string;
}

export interface Walked {
  /** The answer that ended the walk on the server (not a redirect), if it ended there. */
  page?: Answer & { html: string };
  /** The first redirect that left the server (e.g. to the client's redirect_uri). */
  leftTo?: URL;
  /** The status of every answer, first to last. */
  statuses: number[];
}

/** One request with the jar's cookies; `form` makes it a POST. */
export function send(jar: CookieJar | undefined, url: URL, options: { form?: Record<string, string>; headers?: Record<string, string> } = {}): Promise<Answer> {
  const headers: Record<string, string> = { accept: 'text/html', ...options.headers };
  const cookie = jar?.header(url);
  if (cookie) headers.cookie = cookie;
  const body = options.form ? new URLSearchParams(options.form).toString() : undefined;
  if (body !== undefined) {
    headers['content-type'] ??= 'application/x-www-form-urlencoded';
    headers['content-length'] = String(Buffer.byteLength(body));
  }
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, method: body === undefined ? 'GET' : 'POST', headers }, (res) => {
      const setCookie = res.headers['set-cookie'];
      if (jar && setCookie) jar.storeLines(setCookie);
      res.setEncoding('utf8');
      let text = '';
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ url, status: res.statusCode ?? 0, ...(res.headers.location ? { location: res.headers.location } : {}), body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Sends, then follows redirects while they stay on `origin`. */
export async function walk(jar: CookieJar, origin: string, url: URL, options: { form?: Record<string, string> } = {}): Promise<Walked> {
  const statuses: number[] = [];
  let answer = await send(jar, url, options);
  for (let hops = 0; hops < 20; hops += 1) {
    statuses.push(answer.status);
    if (answer.status < 300 || answer.status >= 400 || !answer.location) return { page: { ...answer, html: answer.body }, statuses };
    const next = new URL(answer.location, answer.url);
    if (next.origin !== origin) return { leftTo: next, statuses };
    answer = await send(jar, next);
  }
  throw new Error('too many redirects');
}
