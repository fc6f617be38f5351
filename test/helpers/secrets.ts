import type { BrowserContext, Request, Response } from 'playwright-core';
import { recoveryCodesOf, totpKeyOf } from './flow.ts';

/**
 * Every secret an end-to-end test handled, to check that none of them reached a log line (issue 4:
 * "a test captures every log line written during the end-to-end tests and fails if any secret the test
 * handled appears in it").
 *
 * The test adds what it holds itself (passwords, client secrets, tokens, PKCE verifiers); `watch`
 * collects what went through the browser: every form field it posted (passwords, TOTP and recovery
 * codes, CSRF tokens, sealed enrollments — all but the email), every cookie set on it, authorization
 * codes in the URLs it visited, and the TOTP keys and recovery codes the pages showed it.
 */
export class HandledSecrets {
  /** value → what it is */
  readonly #values = new Map<string, string>();
  readonly #pending = new Set<Promise<void>>();

  add(name: string, value: string | null | undefined): void {
    // Shorter values (`yes`, `openid`) are not secrets; six characters are a TOTP code.
    if (typeof value === 'string' && value.length >= 6 && !this.#values.has(value)) this.#values.set(value, name);
  }

  get size(): number {
    return this.#values.size;
  }

  /** What kinds of secret were collected (`cookie _session`, `form field code`, …), for asserting the collection works. */
  kinds(): Set<string> {
    return new Set([...this.#values.values()].map((name) => name.replace(/ \d+$/, '')));
  }

  /** Collects what the browser sends and receives in `context`, and its cookies when it closes. */
  watch(context: BrowserContext): void {
    context.on('request', (req) => this.#track(this.#request(req)));
    context.on('response', (res) => this.#track(this.#response(res)));
    // Tests close their contexts; the cookies they ended with are read first.
    const close = context.close.bind(context);
    context.close = async (...args: Parameters<BrowserContext['close']>) => {
      await this.settle(context);
      return close(...args);
    };
  }

  /** Waits for what is being collected, and takes the context's cookies. */
  async settle(context?: BrowserContext): Promise<void> {
    await Promise.allSettled([...this.#pending]);
    if (context) for (const c of await context.cookies().catch(() => [])) this.add(`cookie ${c.name}`, c.value);
  }

  /** Each log line that holds a secret, with the name of the secret. */
  async leaks(logs: Record<string, unknown>[]): Promise<string[]> {
    await this.settle();
    const checks = [...this.#values].map(([value, name]) => {
      // Short values (TOTP codes) only as a whole word, so six digits inside a timestamp do not count.
      const re = value.length < 10 ? new RegExp(`(?<![A-Za-z0-9])${value.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?![A-Za-z0-9])`) : undefined;
      return { name, test: (line: string) => (re ? re.test(line) : line.includes(value)) };
    });
    const found: string[] = [];
    for (const entry of logs) {
      const line = JSON.stringify(entry);
      for (const check of checks) if (check.test(line)) found.push(`${check.name} in ${line.slice(0, 300)}`);
    }
    return found;
  }

  #track(work: Promise<void>): void {
    const p = work.catch(() => {}).finally(() => this.#pending.delete(p));
    this.#pending.add(p);
  }

  async #request(req: Request): Promise<void> {
    const url = new URL(req.url());
    this.add('authorization code in a URL', url.searchParams.get('code'));
    const body = req.postData();
    if (req.method() === 'POST' && body && (req.headers()['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
      for (const [name, value] of new URLSearchParams(body)) if (name !== 'email') this.add(`form field ${name}`, value);
    }
  }

  async #response(res: Response): Promise<void> {
    for (const { name, value } of await res.headersArray()) {
      const header = name.toLowerCase();
      if (header === 'set-cookie') {
        for (const line of value.split('\n')) {
          const pair = line.split(';')[0]!;
          this.add(`cookie ${pair.slice(0, pair.indexOf('='))}`, pair.slice(pair.indexOf('=') + 1));
        }
      } else if (header === 'location' && URL.canParse(value, res.url())) {
        this.add('authorization code in a redirect', new URL(value, res.url()).searchParams.get('code'));
      }
    }
    if ((res.headers()['content-type'] ?? '').startsWith('text/html') && res.status() === 200) {
      const html = await res.text();
      this.add('TOTP key shown', totpKeyOf(html));
      recoveryCodesOf(html).forEach((code, i) => this.add(`recovery code shown ${i}`, code));
    }
  }
}
