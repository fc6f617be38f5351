import {
  generateAuthenticationOptions,
  generateRegistrationOptions,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
  type AuthenticationResponseJSON,
  type WebAuthnCredential,
  type PublicKeyCredentialCreationOptionsJSON,
  type PublicKeyCredentialRequestOptionsJSON,
  type RegistrationResponseJSON,
} from '@simplewebauthn/server';
import { createHmac, createSecretKey, randomBytes, timingSafeEqual } from 'node:crypto';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';
import { AccountError, type Account, type Accounts } from './accounts.ts';

/**
 * Passkeys (WebAuthn) with @simplewebauthn/server.
 *
 * - A person's passkeys live in their account record (`passkeys`: credential id, COSE public key,
 *   signature counter, names, dates), changed by compare-and-set like every account change; an index
 *   `lk:passkey-credential:<digest(id)>` → account id finds the account of a passwordless assertion in
 *   one lookup. A credential id is claimed there once (set-if-absent), so it can belong to one account.
 * - Challenges are single use and bound to where they were issued, and showing a page writes nothing:
 *   a challenge is a random nonce, its expiry (5 minutes) and a keyed MAC over them and the scope (the
 *   interaction uid, or the account-page session). A response names its challenge in `clientDataJSON`;
 *   its MAC and expiry are checked, then it is marked used (set-if-absent: one caller wins) before
 *   anything else is checked, whatever the outcome, so a replay or a challenge of another interaction
 *   is refused.
 * - RP id and origins are the issuer's (config WEBAUTHN_RP_ID, WEBAUTHN_ORIGINS); attestation is
 *   not requested. A signature counter that does not move forward is refused when the
 *   authenticator keeps one (0 means it does not), checked again inside the compare-and-set.
 */
export interface StoredPasskey {
  /** The credential id, base64url. */
  id: string;
  /** The COSE public key, base64url. */
  publicKey: string;
  counter: number;
  transports?: WebAuthnCredential['transports'];
  /** `singleDevice`: the key cannot leave the authenticator (amr `hwk`); `multiDevice`: a synced passkey (`swk`). */
  deviceType: 'singleDevice' | 'multiDevice';
  backedUp: boolean;
  aaguid: string;
  /** The name the person gave it. */
  name: string;
  /** Epoch milliseconds. */
  createdAt: number;
  lastUsedAt?: number;
}

/** `unregistered`: no account holds this credential (removed here, still on the device); `unknown`: not one this caller may use. */
export type PasskeyFailure = 'malformed' | 'challenge' | 'unknown' | 'unregistered' | 'invalid' | 'counter' | 'not-verified' | 'exists';

export type PasskeyUse = { ok: true; account: Account; passkey: StoredPasskey; userVerified: boolean } | { ok: false; reason: PasskeyFailure };
export type PasskeyRegistration = { ok: true; passkey: StoredPasskey; userVerified: boolean } | { ok: false; reason: PasskeyFailure };

/** How long a page may wait for the person before its challenge is gone. */
export const CHALLENGE_TTL_SECONDS = 5 * 60;
const MAX_NAME = 60;

/** Names of common authenticators by AAGUID (shown on the account page; attestation is not verified). */
const AUTHENTICATOR_NAMES: Record<string, string> = {
  'ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4': 'Google Password Manager',
  'adce0002-35bc-c60a-648b-0b25f1f05503': 'Chrome on Mac',
  'fbfc3007-154e-4ecc-8c0b-6e020557d7bd': 'iCloud Keychain',
  'dd4ec289-e01d-41c9-bb89-70fa845d4bf2': 'iCloud Keychain (managed)',
  '08987058-cadc-4b81-b6e1-30de50dcbe96': 'Windows Hello',
  '9ddd1817-af5a-4672-a2b9-3e3dd95000a9': 'Windows Hello',
  'bada5566-a7aa-401f-bd96-45619a55120d': '1Password',
  'd548826e-79b4-db40-a3d8-11116f7e8349': 'Bitwarden',
  'cb69481e-8ff7-4039-93ec-0a2729a154a8': 'YubiKey 5',
  'ee882879-721c-4913-9775-3dfcce97072a': 'YubiKey 5',
};

export function authenticatorName(aaguid: string): string | undefined {
  return AUTHENTICATOR_NAMES[aaguid];
}

export function passkeysOf(account: Pick<Account, 'passkeys'>): StoredPasskey[] {
  return account.passkeys ?? [];
}

/** The name a person gives a passkey: trimmed, printable, short; a default when empty. */
export function passkeyName(name: unknown, fallback: string): string {
  const clean = typeof name === 'string' ? name.replace(/[\p{Cc}\p{Cf}]/gu, '').trim().slice(0, MAX_NAME) : '';
  return clean || fallback;
}

/** The challenge a response answers, from its client data; undefined when the response is not one. */
function challengeOf(response: { response?: { clientDataJSON?: unknown } }): string | undefined {
  const clientData = response.response?.clientDataJSON;
  if (typeof clientData !== 'string' || clientData.length > 4096) return undefined;
  try {
    const parsed = JSON.parse(Buffer.from(clientData, 'base64url').toString('utf8')) as { challenge?: unknown };
    return typeof parsed.challenge === 'string' && parsed.challenge.length <= 512 ? parsed.challenge : undefined;
  } catch {
    return undefined;
  }
}

/** A credential response as the browser script posts it (JSON text), or undefined for anything else. */
export function parseCredentialResponse<T extends AuthenticationResponseJSON | RegistrationResponseJSON>(text: unknown): T | undefined {
  if (typeof text !== 'string' || text.length === 0 || text.length > 16_384) return undefined;
  try {
    const parsed = JSON.parse(text) as T;
    const ok = parsed && typeof parsed === 'object' && typeof parsed.id === 'string' && /^[A-Za-z0-9_-]{1,1400}$/.test(parsed.id) && parsed.type === 'public-key' && typeof parsed.response === 'object' && parsed.response !== null;
    return ok ? parsed : undefined;
  } catch {
    return undefined;
  }
}

export class Passkeys {
  readonly #store: Store;
  readonly #accounts: Accounts;
  readonly #rpId: string;
  readonly #rpName: string;
  readonly #origins: string[];
  readonly #now: () => number;
  readonly #sign: (value: string) => string;

  /**
   * `sign`: a keyed digest every node shares (the SecretBox's), which binds a challenge to its scope;
   * without it, a key of this instance (one process: tests).
   */
  constructor(options: { store: Store; accounts: Accounts; rpId: string; rpName: string; origins: string[]; now?: () => number; sign?: (value: string) => string }) {
    this.#store = options.store;
    this.#accounts = options.accounts;
    this.#rpId = options.rpId;
    this.#rpName = options.rpName;
    this.#origins = options.origins;
    this.#now = options.now ?? Date.now;
    const key = createSecretKey(randomBytes(32));
    this.#sign = options.sign ?? ((value) => createHmac('sha256', key).update(value).digest('base64url').slice(0, 22));
  }

  /** A challenge for `scope`: nonce, expiry (epoch ms) and their MAC; nothing is stored until it is answered. */
  #challenge(scope: string): string {
    const nonce = randomBytes(16).toString('base64url');
    const expires = String(this.#now() + CHALLENGE_TTL_SECONDS * 1000);
    return `${nonce}.${expires}.${this.#mac(scope, nonce, expires)}`;
  }

  #mac(scope: string, nonce: string, expires: string): string {
    return this.#sign(`passkey-challenge\0${scope}\0${nonce}\0${expires}`);
  }

  /** Uses up the challenge a response answers, when it was issued for `scope` and is unexpired: its value (as the response names it) for the one caller that does. */
  async #consume(scope: string, response: { response?: { clientDataJSON?: unknown } }): Promise<string | undefined> {
    const challenge = challengeOf(response);
    if (!challenge) return undefined;
    const [nonce, expires, mac, ...rest] = Buffer.from(challenge, 'base64url').toString('utf8').split('.');
    if (rest.length || !nonce || !expires || !mac || !/^\d{1,15}$/.test(expires)) return undefined;
    const expected = Buffer.from(this.#mac(scope, nonce, expires));
    if (expected.length !== Buffer.byteLength(mac) || !timingSafeEqual(expected, Buffer.from(mac))) return undefined;
    if (Number(expires) <= this.#now()) return undefined;
    return (await this.#store.set(keys.passkeyChallengeUsed(challenge), '1', { ifAbsent: true, ttl: CHALLENGE_TTL_SECONDS })) ? challenge : undefined;
  }

  /** Options to create a discoverable passkey for `account` (or an account about to be made with this id); the challenge is kept for `scope`. */
  async registrationOptions(account: Pick<Account, 'id' | 'email' | 'name' | 'passkeys'>, scope: string): Promise<PublicKeyCredentialCreationOptionsJSON> {
    const options = await generateRegistrationOptions({
      rpName: this.#rpName,
      rpID: this.#rpId,
      userName: account.email,
      userDisplayName: account.name ?? account.email,
      // The account id, not the email: the authenticator stores it as the user handle.
      userID: new TextEncoder().encode(account.id),
      attestationType: 'none',
      excludeCredentials: passkeysOf(account).map((p) => ({ id: p.id, ...(p.transports ? { transports: p.transports } : {}) })),
      // Discoverable, so it can sign in without an email; verification preferred (required to sign in without a password).
      authenticatorSelection: { residentKey: 'required', userVerification: 'preferred' },
      timeout: CHALLENGE_TTL_SECONDS * 1000,
      challenge: this.#challenge(scope),
    });
    return options;
  }

  /** Checks a new passkey's response and adds it to the account. */
  async register(accountId: string, scope: string, response: RegistrationResponseJSON, name: string): Promise<PasskeyRegistration> {
    const checked = await this.verifyNew(scope, response, name);
    if (!checked.ok) return checked;
    const { passkey } = checked;
    if (!(await this.claim(passkey.id, accountId))) return { ok: false, reason: 'exists' };
    try {
      await this.#accounts.update(accountId, (a) => {
        a.passkeys = [...passkeysOf(a), passkey];
      });
    } catch (err) {
      await this.release(passkey.id);
      throw err;
    }
    return checked;
  }

  /** Checks a new passkey's response against the challenge issued for `scope`; stores nothing (an account made with it stores it). */
  async verifyNew(scope: string, response: RegistrationResponseJSON, name: string): Promise<PasskeyRegistration> {
    const challenge = await this.#consume(scope, response);
    if (!challenge) return { ok: false, reason: 'challenge' };
    let info;
    try {
      const verified = await verifyRegistrationResponse({ response, expectedChallenge: challenge, expectedOrigin: this.#origins, expectedRPID: this.#rpId, requireUserVerification: false });
      if (!verified.verified) return { ok: false, reason: 'invalid' };
      info = verified.registrationInfo;
    } catch {
      return { ok: false, reason: 'invalid' };
    }
    const passkey: StoredPasskey = {
      id: info.credential.id,
      publicKey: Buffer.from(info.credential.publicKey).toString('base64url'),
      counter: info.credential.counter,
      ...(info.credential.transports?.length ? { transports: info.credential.transports } : {}),
      deviceType: info.credentialDeviceType,
      backedUp: info.credentialBackedUp,
      aaguid: info.aaguid,
      name: passkeyName(name, authenticatorName(info.aaguid) ?? 'Passkey'),
      createdAt: this.#now(),
    };
    return { ok: true, passkey, userVerified: info.userVerified };
  }

  /** Claims a credential id for an account (set-if-absent): false when another account has it. */
  async claim(credentialId: string, accountId: string): Promise<boolean> {
    return this.#store.set(keys.passkeyCredential(credentialId), accountId, { ifAbsent: true });
  }

  /** Undoes a claim whose account was not written. */
  async release(credentialId: string): Promise<void> {
    await this.#store.del(keys.passkeyCredential(credentialId));
  }

  /**
   * Options to sign in with a passkey. Without `account`: any discoverable passkey of this site, user
   * verification required (a passwordless sign-in); with one: that account's passkeys (a second factor,
   * user verification preferred, unless `userVerification` says required).
   */
  async authenticationOptions(scope: string, account?: Account, userVerification: 'required' | 'preferred' = account ? 'preferred' : 'required'): Promise<PublicKeyCredentialRequestOptionsJSON> {
    const options = await generateAuthenticationOptions({
      rpID: this.#rpId,
      userVerification,
      timeout: CHALLENGE_TTL_SECONDS * 1000,
      ...(account ? { allowCredentials: passkeysOf(account).map((p) => ({ id: p.id, ...(p.transports ? { transports: p.transports } : {}) })) } : {}),
      challenge: this.#challenge(scope),
    });
    return options;
  }

  /** The account a credential id belongs to (one lookup), when it is known. */
  async ownerOf(credentialId: string): Promise<Account | undefined> {
    const accountId = await this.#store.get(keys.passkeyCredential(credentialId));
    return accountId ? this.#accounts.find(accountId) : undefined;
  }

  /**
   * Checks an assertion against the challenge issued for `scope` and the stored public key; moves the
   * counter forward and dates the use. `accountId`: only that account's passkeys count (a second factor).
   * `owner`: the credential's owner as the caller just read it (`ownerOf`), not read again.
   */
  async authenticate(scope: string, response: AuthenticationResponseJSON, expect: { accountId?: string; owner?: Account; requireUserVerification: boolean }): Promise<PasskeyUse> {
    // Independent reads, sent together; a spent or unknown challenge ends it before anything is verified.
    const [challenge, account] = await Promise.all([this.#consume(scope, response), expect.owner ?? this.ownerOf(response.id)]);
    if (!challenge) return { ok: false, reason: 'challenge' };
    const stored = account && passkeysOf(account).find((p) => p.id === response.id);
    if (!account || !stored) return { ok: false, reason: 'unregistered' };
    if (account.disabled || (expect.accountId && account.id !== expect.accountId)) return { ok: false, reason: 'unknown' };
    let info;
    try {
      const verified = await verifyAuthenticationResponse({
        response,
        expectedChallenge: challenge,
        expectedOrigin: this.#origins,
        expectedRPID: this.#rpId,
        credential: { id: stored.id, publicKey: Buffer.from(stored.publicKey, 'base64url'), counter: stored.counter, ...(stored.transports ? { transports: stored.transports } : {}) },
        requireUserVerification: expect.requireUserVerification,
      });
      if (!verified.verified) return { ok: false, reason: 'invalid' };
      info = verified.authenticationInfo;
    } catch (err) {
      const message = (err as Error).message ?? '';
      if (/counter/i.test(message)) return { ok: false, reason: 'counter' };
      if (/user verification/i.test(message)) return { ok: false, reason: 'not-verified' };
      return { ok: false, reason: 'invalid' };
    }
    let used: StoredPasskey | undefined;
    try {
      await this.#accounts.update(account.id, (a) => {
        const current = passkeysOf(a).find((p) => p.id === stored.id);
        if (!current || a.disabled) throw new AccountError('passkey_removed');
        // Checked again on the record being written: two uses of one counter value cannot both pass.
        if ((current.counter > 0 || info.newCounter > 0) && info.newCounter <= current.counter) throw new CounterWentBack();
        current.counter = info.newCounter;
        current.lastUsedAt = this.#now();
        current.backedUp = info.credentialBackedUp;
        used = current;
      }, account);
    } catch (err) {
      if (err instanceof CounterWentBack) return { ok: false, reason: 'counter' };
      if (err instanceof AccountError) return { ok: false, reason: err.code === 'passkey_removed' ? 'unregistered' : 'unknown' };
      throw err;
    }
    return { ok: true, account, passkey: used!, userVerified: info.userVerified };
  }

  async rename(accountId: string, credentialId: string, name: string): Promise<StoredPasskey> {
    let renamed: StoredPasskey | undefined;
    await this.#accounts.update(accountId, (a) => {
      renamed = passkeysOf(a).find((p) => p.id === credentialId);
      if (!renamed) throw new AccountError('passkey_not_found');
      renamed.name = passkeyName(name, renamed.name);
    });
    return renamed!;
  }

  /** Removes one passkey (or, without `credentialId`, every one); it stops working at once. Returns those removed. */
  async remove(accountId: string, credentialId?: string): Promise<StoredPasskey[]> {
    let removed: StoredPasskey[] = [];
    await this.#accounts.update(accountId, (a) => {
      removed = passkeysOf(a).filter((p) => credentialId === undefined || p.id === credentialId);
      const kept = passkeysOf(a).filter((p) => !removed.includes(p));
      if (kept.length) a.passkeys = kept;
      else delete a.passkeys;
    });
    for (const p of removed) await this.#store.del(keys.passkeyCredential(p.id));
    return removed;
  }
}

class CounterWentBack extends Error {}
