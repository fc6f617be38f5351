import { createHmac, createSecretKey, randomBytes, timingSafeEqual } from 'node:crypto';
import { generate, generateSecret, generateURI, verify, type CryptoPlugin } from 'otplib';
import QRCode from 'qrcode';
import { keys } from '../storage/keys.ts';
import { readAheadSentAt } from '../storage/read-ahead.ts';
import type { Store } from '../storage/store.ts';

/**
 * TOTP (RFC 6238) as every authenticator app speaks it: HMAC-SHA-1, 6 digits, 30-second steps.
 * A code is accepted in its own step and one step either side (clock drift between phone and server),
 * and once per account: the last accepted step is raised atomically in storage (Store.advanceCounter),
 * so a code — or any code of an older step — is refused afterwards, on every node.
 */
export const TOTP_PERIOD_SECONDS = 30;
export const TOTP_DIGITS = 6;
const ALGORITHM = 'sha1';
/** One step either side, in seconds, as otplib's epochTolerance counts it. */
const TOLERANCE_SECONDS = TOTP_PERIOD_SECONDS;
/**
 * How long the last accepted step is kept. A step can be accepted only while it is within one step of
 * now (at most ~90 s), so a day is far more than needed; it just must not be shorter.
 */
const LAST_STEP_TTL_SECONDS = 24 * 60 * 60;

/**
 * otplib's HMAC done by node:crypto rather than its pure-JavaScript default (@noble/hashes): the same
 * bytes for a fraction of the CPU of each code checked (three HMACs, one per step). SHA-1 only, the
 * one algorithm used here; anything else is refused rather than computed another way.
 */
const NODE_HMAC: CryptoPlugin = {
  name: 'node',
  algorithms: [ALGORITHM],
  hmac(algorithm, key, data) {
    if (algorithm !== ALGORITHM) throw new Error(`TOTP HMAC: ${algorithm} is not supported here`);
    // A KeyObject: node:crypto prepares a raw key far more slowly inside createHmac.
    return createHmac(ALGORITHM, createSecretKey(key)).update(data).digest();
  },
  randomBytes: (length) => randomBytes(length),
  constantTimeEqual(a, b) {
    const x = typeof a === 'string' ? Buffer.from(a, 'utf8') : a;
    const y = typeof b === 'string' ? Buffer.from(b, 'utf8') : b;
    return x.length === y.length && timingSafeEqual(x, y);
  },
};

/** A new shared secret: 160 random bits (RFC 4226 §4 recommends 160), base32 as the apps expect. */
export function generateTotpSecret(): string {
  return generateSecret({ length: 20 });
}

/** The `otpauth://totp/Issuer:account?secret=…&issuer=…` URI that authenticator apps read from a QR code. */
export function totpUri(input: { issuer: string; accountName: string; secret: string }): string {
  return generateURI({
    issuer: input.issuer,
    label: input.accountName,
    secret: input.secret,
    algorithm: ALGORITHM,
    digits: TOTP_DIGITS,
    period: TOTP_PERIOD_SECONDS,
  });
}

export interface TotpProvisioning {
  /** The key as text, for typing it by hand (base32, grouped by four for reading). */
  secret: string;
  uri: string;
  /** The URI as a QR code: an SVG document rendered here, no external service. */
  qrSvg: string;
}

/** What an enrollment page shows: the URI, its QR code (SVG) and the key as text. */
export async function totpProvisioning(input: { issuer: string; accountName: string; secret: string }): Promise<TotpProvisioning> {
  const uri = totpUri(input);
  const qrSvg = await QRCode.toString(uri, { type: 'svg', errorCorrectionLevel: 'M', margin: 2 });
  return { secret: input.secret.match(/.{1,4}/g)!.join(' '), uri, qrSvg };
}

/** The code of a secret at a time (ms since the epoch): for tests, and for provisioning tools. */
export function totpCodeAt(secret: string, epochMs: number): Promise<string> {
  return generate({ crypto: NODE_HMAC, secret, epoch: Math.floor(epochMs / 1000), algorithm: ALGORITHM, digits: TOTP_DIGITS, period: TOTP_PERIOD_SECONDS });
}

const SIX_DIGITS = new RegExp(`^\\d{${TOTP_DIGITS}}$`);

/** What people type: spaces and dashes are ignored ("123 456"); anything but six digits is no code. */
export function normalizeTotpCode(input: string): string | undefined {
  const code = input.replace(/[\s-]/g, '');
  return SIX_DIGITS.test(code) ? code : undefined;
}

export type TotpResult = { ok: true; step: number } | { ok: false; reason: 'invalid' | 'replayed' };

export class TotpVerifier {
  readonly #store: Store;
  readonly #now: () => number;

  constructor(store: Store, options: { now?: () => number } = {}) {
    this.#store = store;
    this.#now = options.now ?? Date.now;
  }

  /** The time step a code belongs to when it is right for `secret` now (± one step); no replay check. */
  async check(secret: string, input: string): Promise<number | undefined> {
    const token = normalizeTotpCode(input);
    if (!token) return undefined;
    // otplib 13 answers an object, which is always truthy: only `.valid` says whether the code is right.
    const result = await verify({
      crypto: NODE_HMAC,
      secret,
      token,
      epoch: Math.floor(this.#now() / 1000),
      epochTolerance: TOLERANCE_SECONDS,
      algorithm: ALGORITHM,
      digits: TOTP_DIGITS,
      period: TOTP_PERIOD_SECONDS,
    });
    return result.valid === true && 'timeStep' in result ? result.timeStep : undefined;
  }

  /**
   * Records `step` as the account's last accepted step, atomically, if it is newer than the last one.
   * Resolves false when it is not: that code (or a newer one) was already accepted.
   */
  async markAccepted(accountId: string, step: number): Promise<boolean> {
    const key = keys.totpLastStep(accountId);
    // Read ahead with the sign-in step's interaction (signin/steps.ts): an older step is refused on that
    // read, and a newer one raised with one plain command, which puts back a step raised meanwhile.
    if (readAheadSentAt(key) === undefined) return this.#store.advanceCounter(key, step, LAST_STEP_TTL_SECONDS);
    const seen = await this.#store.get(key);
    if (seen !== null && Number(seen) >= step) return false;
    return this.#store.advanceCounterSeen(key, step, LAST_STEP_TTL_SECONDS);
  }

  /**
   * Checks a code for an account's secret. A right code is accepted once: the check and the update of
   * the account's last accepted step are one atomic operation, so of two parallel submissions of one
   * code exactly one is accepted, and an older step is refused ('replayed').
   */
  async verify(accountId: string, secret: string, input: string): Promise<TotpResult> {
    const step = await this.check(secret, input);
    if (step === undefined) return { ok: false, reason: 'invalid' };
    return (await this.markAccepted(accountId, step)) ? { ok: true, step } : { ok: false, reason: 'replayed' };
  }

  /** Forgets the last accepted step (the factor was removed). */
  async forget(accountId: string): Promise<void> {
    await this.#store.del(keys.totpLastStep(accountId));
  }
}
