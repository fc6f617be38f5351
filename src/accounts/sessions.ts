import { UAParser } from 'ua-parser-js';
import { keys, sessionHandle } from '../storage/keys.ts';
import { SESSION_DEVICE } from '../storage/oidc-adapter.ts';
import type { Store } from '../storage/store.ts';
import { translator } from '../i18n/catalogue.ts';
import type { MessageKey } from '../i18n/en.ts';
import type { Locale } from '../i18n/locale.ts';

/**
 * A person's sessions as people recognise them: where (IP) and how (browser and OS, factors in words)
 * they signed in. A session is addressed by its handle (storage/keys.ts sessionHandle), never its id.
 */
export { sessionHandle };

export interface SessionDevice {
  ip: string;
  /** "Chrome 120 on Linux": the user agent's short form, never the string itself. */
  browser: string;
  /** When the person signed in (epoch seconds). */
  loginTs?: number;
}

/** "Firefox 121 on macOS"; "unknown browser" when the user agent says nothing recognisable. */
export function browserOf(userAgent: string): string {
  const ua = userAgent.slice(0, 512);
  const known = browsersSeen.get(ua);
  if (known !== undefined) return known;
  const { browser, os } = UAParser(ua);
  const name = browser.name ? `${browser.name}${browser.major ? ` ${browser.major}` : ''}` : 'unknown browser';
  const words = os.name ? `${name} on ${os.name}` : name;
  // Parsing runs a few hundred patterns, and most sign-ins come from a few browser versions; bounded, dropped whole when full.
  if (browsersSeen.size >= BROWSERS_REMEMBERED) browsersSeen.clear();
  browsersSeen.set(ua, words);
  return words;
}
const BROWSERS_REMEMBERED = 1000;
const browsersSeen = new Map<string, string>();

/** signin/policy.ts's `amr` values; `mfa` and `user` (the key was unlocked) add no factor of their own. */
const FACTOR_WORDS: Record<string, MessageKey | undefined> = { pwd: 'sessions.password', otp: 'sessions.authenticator', hwk: 'sessions.passkey', swk: 'sessions.passkey', mfa: undefined, user: undefined };

/** The session's `amr` in words, in `locale`: "password and authenticator app", "passkey" (an unknown method as it is). */
export function factorsInWords(amr: string[], locale: Locale = 'en'): string {
  const t = translator(locale);
  const words = [...new Set(amr.map((m) => (m in FACTOR_WORDS ? FACTOR_WORDS[m] && t(FACTOR_WORDS[m]) : m)).filter((w): w is string => w !== undefined))];
  // en-GB: "a, b and c", the list the English page always showed.
  return words.length === 0 ? t('sessions.unknown') : new Intl.ListFormat(locale === 'en' ? 'en-GB' : locale, { type: 'conjunction' }).format(words);
}

/** A browser as `browserOf` stored it ("Firefox 121 on macOS", in English), in `locale`. */
export function browserInWords(stored: string | undefined, locale: Locale = 'en'): string {
  const t = translator(locale);
  if (stored === undefined) return t('sessions.unknownBrowserFirst');
  const [, browser = stored, os] = /^(.*) on (.*)$/.exec(stored) ?? [];
  const name = browser === 'unknown browser' ? t('sessions.unknownBrowser') : browser;
  return os === undefined ? name : t('sessions.browserOn', { browser: name, os });
}

/**
 * The device of a session: in its record (`lkDevice`, written when a sign-in completes), or, for a session
 * signed in under an earlier version, in a record of its own beside it (`keys.sessionDevice`).
 */
export async function sessionDevice(store: Store, sessionKey: string, record: { [SESSION_DEVICE]?: unknown }): Promise<SessionDevice | undefined> {
  const inRecord = record[SESSION_DEVICE];
  if (typeof inRecord === 'object' && inRecord !== null) return inRecord as SessionDevice;
  const raw = await store.get(keys.sessionDevice(sessionHandle(sessionKey)));
  return raw ? (JSON.parse(raw) as SessionDevice) : undefined;
}

/** One of a person's live sessions as stored: never its id (the cookie's value), only its handle. */
export interface LiveSession {
  handle: string;
  loginTs?: number;
  exp?: number;
  acr?: string;
  amr: string[];
  ip?: string;
  browser?: string;
  /** The apps signed in to with it (client ids). */
  clients: string[];
}

/** A person's sessions that are still alive, newest sign-in first (the console and the account page list them). */
export async function liveSessions(store: Store, accountId: string): Promise<LiveSession[]> {
  const sessionKeys = await store.setMembers(keys.accountSessions(accountId));
  type Record = { accountId?: string; loginTs?: number; exp?: number; acr?: string; amr?: string[]; authorizations?: { [client: string]: unknown }; [SESSION_DEVICE]?: unknown };
  const found = await Promise.all(sessionKeys.map(async (key) => {
    const stored = await store.getModel(key, { consumable: false });
    const s = stored ? (JSON.parse(stored.payload) as Record) : undefined;
    return { key, s, device: s?.accountId === accountId ? await sessionDevice(store, key, s) : undefined };
  }));
  const sessions = found.flatMap(({ key, s, device }): LiveSession[] => {
    if (!s || s.accountId !== accountId) return [];
    // The device record of an earlier sign-in in the same browser is not this one's.
    const same = device && (device.loginTs === undefined || device.loginTs === s.loginTs) ? device : undefined;
    return [{ handle: sessionHandle(key), loginTs: s.loginTs, exp: s.exp, acr: s.acr, amr: s.amr ?? [], ip: same?.ip, browser: same?.browser, clients: Object.keys(s.authorizations ?? {}) }];
  });
  return sessions.sort((a, b) => (b.loginTs ?? 0) - (a.loginTs ?? 0));
}

/** The handle of the session a browser presents (oidc-provider's session id, the cookie's value). */
export function handleOfSessionId(sessionId: string): string {
  return sessionHandle(keys.model('Session', sessionId));
}
