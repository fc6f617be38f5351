import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type BrowserContext, type Locator, type Page } from 'playwright-core';
import { currentTotpCode, keyFromPage, nextTotpCode, totpSecrets } from './totp.ts';

/**
 * The person, for end-to-end tests: the system Chromium (Debian package `chromium`) driven by
 * playwright-core with its `executablePath`: the tests use the browser the machine has, and nothing
 * is downloaded (playwright's own browser download needs network access the test machines lack).
 */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
      '--no-first-run', '--disable-component-update', '--disable-sync',
    ],
  });
}

/**
 * Where the browser tests save their screenshots: docs/screenshots/ (the pictures of the README and docs/) with
 * UPDATE_SCREENSHOTS=1, else test/artifacts/ (ignored), so a test run leaves the work tree clean.
 */
export const SCREENSHOTS = new URL(process.env.UPDATE_SCREENSHOTS ? '../../docs/screenshots/' : '../artifacts/screenshots/', import.meta.url);

/** A fresh cookie jar, sized for the screenshots in docs/. */
export function newContext(browser: Browser): Promise<BrowserContext> {
  return browser.newContext({ viewport: { width: 800, height: 700 }, deviceScaleFactor: 1, locale: 'en-US' });
}

/**
 * The third-party app's front door: a tiny HTTP server that answers every request with a small page,
 * so the browser really lands on the redirect URI and the test reads the callback from `page.url()`.
 * (Playwright's routing does not intercept the target of a redirect.) Like the issuer, it listens on
 * 127.0.0.1 and ::1, so `localhost` works whichever address Chromium picks.
 */
export async function startFakeApp(): Promise<{ origin: string; close(): Promise<void> }> {
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(req.url === '/favicon.ico' ? 204 : 200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(req.url === '/favicon.ico' ? undefined : '<!doctype html><html lang="en"><title>Example Notes</title><p>Back in the app.</p></html>');
  };
  const first = createServer(handler);
  await new Promise<void>((resolve) => first.listen(0, '127.0.0.1', resolve));
  const port = (first.address() as AddressInfo).port;
  const servers: Server[] = [first];
  const second = createServer(handler);
  if (await new Promise<boolean>((resolve) => second.once('error', () => resolve(false)).listen(port, '::1', () => resolve(true)))) servers.push(second);
  return {
    origin: `http://localhost:${port}`,
    async close() {
      for (const s of servers) {
        s.closeAllConnections();
        await new Promise((r) => s.close(r));
      }
    },
  };
}

/** Console errors, uncaught page errors and CSP violations seen by the pages of a context. */
export function watchProblems(context: BrowserContext): string[] {
  const problems: string[] = [];
  const watch = (page: Page) => {
    page.on('console', (msg) => {
      if (msg.type() === 'error' || /Content.Security.Policy|Refused to/i.test(msg.text())) problems.push(`console ${msg.type()}: ${msg.text()} (${msg.location().url})`);
    });
    page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  };
  context.pages().forEach(watch);
  context.on('page', watch);
  return problems;
}

/** Clicks something that submits a form, and waits until the next document (after redirects) has loaded. */
export async function submit(page: Page, button: Locator): Promise<void> {
  const navigated = page.waitForEvent('framenavigated', { predicate: (frame) => frame === page.mainFrame(), timeout: 10_000 });
  await button.click();
  await navigated;
  await page.waitForLoadState('load');
}

export type Step = 'login' | 'mfa' | 'enroll' | 'recovery-codes' | 'consent' | 'callback' | 'other';

/** Which page the browser shows now. */
export async function currentStep(page: Page, redirectUri: string): Promise<Step> {
  if (page.url().split(/[?#]/)[0] === redirectUri) return 'callback';
  if (await page.locator('input[autocomplete~=username]').count()) return 'login';
  if (await page.locator('form[action$="/mfa"]').count()) return 'mfa';
  if (await page.locator('form[action$="/enroll"]').count()) return 'enroll';
  if (await page.locator('form[action$="/saved"]').count()) return 'recovery-codes';
  if (await page.locator('form[action$="/consent"]').count()) return 'consent';
  return 'other';
}

export async function fillLogin(page: Page, email: string, password: string): Promise<void> {
  // Found the way a password manager and a screen reader find them: autofill token and label.
  const user = page.locator('input[autocomplete~=username]');
  const pass = page.locator('input[autocomplete=current-password]');
  await page.getByLabel('Email').fill(email);
  await pass.fill(password);
  if ((await user.inputValue()) !== email) throw new Error('the "Email" label does not name the username field');
  if ((await page.getByLabel('Password').inputValue()) !== password) throw new Error('the "Password" label does not name the password field');
}

/** On a second-factor, enrollment or recovery-codes page: passes it as `authorize` does, until another page shows. */
export async function passSecondFactor(page: Page, email: string, totpSecret?: string): Promise<void> {
  for (let i = 0; i < 3; i += 1) {
    const step = await currentStep(page, '');
    if (step === 'mfa') {
      const secret = totpSecret ?? totpSecrets.get(email.toLowerCase());
      if (!secret) throw new Error('a second-factor page, and no TOTP secret known');
      await fillCode(page, await nextTotpCode(new URL(page.url()).origin, secret));
      await submit(page, page.getByRole('button', { name: 'Verify' }));
    } else if (step === 'enroll') {
      totpSecrets.set(email.toLowerCase(), await enrollOnPage(page));
    } else if (step === 'recovery-codes') {
      await submit(page, page.getByRole('button', { name: 'I have saved them' }));
    } else {
      return;
    }
  }
}

export interface AuthorizeOptions {
  redirectUri: string;
  email?: string;
  password?: string;
  /** Called on each page before acting on it (assertions, screenshots). */
  onLogin?: (page: Page) => Promise<void>;
  onConsent?: (page: Page) => Promise<void>;
  /** The TOTP secret; else the one learned when this helper enrolled the person (helpers/totp.ts). */
  totpSecret?: string;
}

/** Types a code into the field found by its label and autofill token, as a person and a password manager would. */
export async function fillCode(page: Page, code: string): Promise<void> {
  const field = page.locator('input[autocomplete=one-time-code]');
  if ((await field.getAttribute('inputmode')) !== 'numeric') throw new Error('the code field is not inputmode=numeric');
  await page.getByLabel(/code/i).first().fill(code);
  if ((await field.inputValue()) !== code) throw new Error('the code label does not name the one-time-code field');
}

/** On the enrolment page, where a passkey is the primary way: unfolds "Use an authenticator app instead". */
export async function chooseAuthenticatorApp(page: Page): Promise<void> {
  const alternative = page.locator('details.alternative');
  if ((await alternative.count()) > 0 && !(await alternative.evaluate((d: HTMLDetailsElement) => d.open))) {
    await page.getByText('Use an authenticator app instead').click();
  }
}

/** Enrolls on the enrollment page: reads the key shown as text, enters the current code. Returns the key. */
export async function enrollOnPage(page: Page): Promise<string> {
  await chooseAuthenticatorApp(page);
  const secret = keyFromPage(await page.locator('#totp-key').innerText());
  await fillCode(page, await currentTotpCode(new URL(page.url()).origin, secret));
  await submit(page, page.getByRole('button', { name: /turn on/i }));
  return secret;
}

/**
 * Walks one authorization request through the browser: signs in if asked to, allows on the consent
 * page, and returns the callback URL the app would receive.
 */
export async function authorize(page: Page, authorizationUrl: URL, options: AuthorizeOptions): Promise<URL> {
  await page.goto(authorizationUrl.href);
  for (let i = 0; i < 8; i += 1) {
    const step = await currentStep(page, options.redirectUri);
    if (step === 'callback') return new URL(page.url());
    if (step === 'login') {
      if (!options.email || !options.password) throw new Error('unexpected sign-in page');
      await options.onLogin?.(page);
      await fillLogin(page, options.email, options.password);
      await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    } else if (step === 'mfa') {
      const secret = options.totpSecret ?? (options.email ? totpSecrets.get(options.email.toLowerCase()) : undefined);
      if (!secret) throw new Error('a second-factor page, and no TOTP secret known');
      await fillCode(page, await nextTotpCode(new URL(page.url()).origin, secret));
      await submit(page, page.getByRole('button', { name: 'Verify' }));
    } else if (step === 'enroll') {
      const secret = await enrollOnPage(page);
      if (options.email) totpSecrets.set(options.email.toLowerCase(), secret);
    } else if (step === 'recovery-codes') {
      await submit(page, page.getByRole('button', { name: 'I have saved them' }));
    } else if (step === 'consent') {
      await options.onConsent?.(page);
      await submit(page, page.getByRole('button', { name: 'Allow' }));
    } else {
      throw new Error(`unexpected page ${page.url()}: ${(await page.locator('main').innerText().catch(() => '')).slice(0, 500)}`);
    }
  }
  throw new Error('the authorization did not finish');
}
