import { createHash } from 'node:crypto';
import { MAX_PASSWORD_LENGTH } from './passwords.ts';

/**
 * The one rule for a new password, whoever sets it (CLI, admin API, console, /account, the demo):
 * NIST SP 800-63B §3.1.1.2 — at least 8 characters, long passphrases allowed, and not a value known to
 * be used by many: a list of common and breached passwords shipped with the project (offline), the
 * email address's own name, and optionally Have I Been Pwned's range API (k-anonymity: only the first 5
 * hex digits of the SHA-1 leave the server; padded answers). The online check never blocks anyone: when
 * it cannot answer in time the password is accepted and the operator told.
 */
export const MIN_PASSWORD_LENGTH = 8;

export type BreachCheck = 'off' | 'hibp';

export interface PasswordRuleOptions {
  breachCheck?: BreachCheck;
  /** The range API's base: `<url>/range/<5 hex digits>` answers `SUFFIX:COUNT` lines. */
  breachCheckUrl?: string;
  /** How long a person may wait for the online check before the password is accepted without it. */
  breachCheckTimeoutMs?: number;
  /** Told (without the password) when the online check could not answer. */
  onBreachCheckUnavailable?: (reason: string) => void;
}

export const HIBP_URL = 'https://api.pwnedpasswords.com';
const BREACH_CHECK_TIMEOUT_MS = 2000;
/** An email's name shorter than this (`al@…`) is part of too many good passphrases to refuse. */
const MIN_LOCAL_PART = 3;

// Loaded once, at the first password set, not at start: about 49,000 entries a CLI listing clients never needs.
let commonPasswords: Promise<Set<string>> | undefined;
function loadCommonPasswords(): Promise<Set<string>> {
  commonPasswords ??= import('@zxcvbn-ts/language-common').then((m) => new Set(m.dictionary['passwords-common']));
  return commonPasswords;
}

export class PasswordRule {
  readonly #breachCheck: BreachCheck;
  readonly #rangeUrl: string;
  readonly #timeoutMs: number;
  readonly #onUnavailable: (reason: string) => void;

  constructor(options: PasswordRuleOptions = {}) {
    this.#breachCheck = options.breachCheck ?? 'off';
    this.#rangeUrl = `${(options.breachCheckUrl ?? HIBP_URL).replace(/\/+$/, '')}/range/`;
    this.#timeoutMs = options.breachCheckTimeoutMs ?? BREACH_CHECK_TIMEOUT_MS;
    this.#onUnavailable = options.onBreachCheckUnavailable ?? (() => {});
  }

  /** Why `password` may not be the password of `email`, in words a person acts on; undefined when it may. */
  async problem(password: string, email: string): Promise<string | undefined> {
    if (password.length < MIN_PASSWORD_LENGTH) return `the password needs at least ${MIN_PASSWORD_LENGTH} characters`;
    if (password.length > MAX_PASSWORD_LENGTH) return `the password may have at most ${MAX_PASSWORD_LENGTH} characters`;
    const lower = password.toLowerCase();
    // The list is lower case: `Password` and `PASSWORD` are as common as `password`.
    if ((await loadCommonPasswords()).has(lower)) return 'this password is among the most common ones; choose another';
    const at = email.lastIndexOf('@');
    const name = at > 0 ? email.slice(0, at).toLowerCase() : '';
    if (name.length >= MIN_LOCAL_PART && lower.includes(name)) return 'this password contains the name of the email address (the part before the @); choose another';
    if (this.#breachCheck === 'hibp' && (await this.#breached(password))) return 'this password appears in known data breaches; choose another';
    return undefined;
  }

  async #breached(password: string): Promise<boolean> {
    const sha1 = createHash('sha1').update(password, 'utf8').digest('hex').toUpperCase();
    const suffix = sha1.slice(5);
    try {
      // The deadline covers the answer's body too; redirects are not followed (the URL is the operator's).
      const res = await fetch(`${this.#rangeUrl}${sha1.slice(0, 5)}`, {
        headers: { 'Add-Padding': 'true', 'User-Agent': 'latchkey' },
        redirect: 'error',
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      if (!res.ok) throw new Error(`the range API answered ${res.status}`);
      for (const line of (await res.text()).split('\n')) {
        const [hashSuffix, count] = line.trim().split(':');
        // Padding lines carry a count of 0.
        if (hashSuffix?.toUpperCase() === suffix && Number(count) > 0) return true;
      }
      return false;
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      this.#onUnavailable(e.name === 'TimeoutError' ? `no answer within ${this.#timeoutMs} ms` : (e.cause?.code ?? e.message));
      return false;
    }
  }
}

/** The configured rule (PASSWORD_BREACH_CHECK); an unanswered online check is a warning in `logger`'s log. */
export function passwordRuleOf(config: { PASSWORD_BREACH_CHECK: BreachCheck; PASSWORD_BREACH_CHECK_URL: string }, logger: { warn(fields: object, msg: string): void }): PasswordRule {
  return new PasswordRule({
    breachCheck: config.PASSWORD_BREACH_CHECK,
    breachCheckUrl: config.PASSWORD_BREACH_CHECK_URL,
    onBreachCheckUnavailable: (reason) => logger.warn({ reason }, 'the breached-password check did not answer: the new password was accepted without it'),
  });
}
