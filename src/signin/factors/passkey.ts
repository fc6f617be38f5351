import type { AuthenticationResponseJSON, RegistrationResponseJSON } from '@simplewebauthn/server';
import { normalizeEmail, type Account } from '../../accounts/accounts.ts';
import { parseCredentialResponse, type Passkeys, type StoredPasskey } from '../../accounts/passkeys.ts';
import { digest } from '../../storage/keys.ts';
import type { Factor, Report } from './factor.ts';

type Who = Pick<Account, 'id' | 'email'>;

export interface PasskeyAssertion {
  /** What the challenge was issued for (the interaction uid, or the account page's session scope). */
  scope: string;
  /** The browser's JSON response, as posted. */
  raw: unknown;
  /** Only this account's passkeys count: a second factor, or the account page's proof. Absent: a passwordless sign-in. */
  account?: Who;
  as?: 'second_factor' | 'proof';
}

type AssertionSubject = { key: string; response?: AuthenticationResponseJSON; found?: Account; owner?: Who };

/**
 * A passkey assertion answering a challenge issued for `scope`, counted as the `passkey` factor of the
 * passkey's owner (found from the credential id; an unknown credential is its own subject) and of the
 * IP. With `account`: only that account's passkeys count — a second factor, or (`as: 'proof'`) the account
 * page's proof, which replaces password and code and so needs user verification; without it, a
 * passwordless sign-in, which needs user verification too.
 */
export function passkeyFactor(passkeys: Passkeys): Factor<PasskeyAssertion, { account: Account; passkey: StoredPasskey; userVerified: boolean }, AssertionSubject> {
  const how = ({ account, as }: PasskeyAssertion) => (account ? (as ?? 'second_factor') : 'passwordless');
  return {
    name: 'passkey',
    async subject({ raw, account }, ip) {
      const response = parseCredentialResponse<AuthenticationResponseJSON>(raw);
      const found = !account && response ? await passkeys.ownerOf(response.id) : undefined;
      const owner = account ?? found;
      return { key: owner ? normalizeEmail(owner.email) : `passkey:${digest(response?.id ?? `malformed:${ip}`)}`, response, found, owner };
    },
    async verify(input, { response, found }) {
      if (!response) return { ok: false, reason: 'malformed' };
      const { account } = input;
      const used = await passkeys.authenticate(input.scope, response, { ...(account ? { accountId: account.id } : {}), ...(found ? { owner: found } : {}), requireUserVerification: !account || input.as === 'proof' });
      // A credential no account holds (removed here, still on the device) guesses nothing: it counts against nobody.
      return !used.ok && used.reason === 'unregistered' ? { ...used, counted: false } : used;
    },
    succeeded: ({ account, userVerified }, input, ip) => ({
      metric: { counter: 'passkeys', labels: { event: 'used', detail: how(input) } },
      audit: { event: 'passkey_used', fields: { accountId: account.id, as: how(input), userVerified, ip }, msg: how(input) === 'proof' ? 'proved who they are with a passkey' : 'signed in with a passkey' },
    }),
    failed(reason, input, { owner }, ip): Report {
      const metric = { counter: 'passkeys', labels: { event: 'failed', detail: reason } } as const;
      if (input.account) return { metric, audit: { event: 'second_factor_failed', fields: { accountId: input.account.id, method: 'passkey', reason }, msg: 'second factor refused' } };
      return { metric, audit: { event: 'signin_failed', fields: { factor: 'passkey', reason, ip, ...(owner ? { accountId: owner.id } : {}) }, msg: 'sign-in refused' } };
    },
  };
}

export interface PasskeyEnrolment {
  account: Who;
  scope: string;
  raw: unknown;
  name: unknown;
  source: 'signin' | 'account_page';
}

/** A new passkey for `account` (its response to a challenge issued for `scope`), counted as a passkey attempt. */
export function passkeyEnrolmentFactor(passkeys: Passkeys): Factor<PasskeyEnrolment, { passkey: StoredPasskey; userVerified: boolean }> {
  return {
    name: 'passkey',
    subject: ({ account }) => ({ key: normalizeEmail(account.email) }),
    async verify({ account, scope, raw, name }) {
      const response = parseCredentialResponse<RegistrationResponseJSON>(raw);
      if (!response) return { ok: false, reason: 'malformed' };
      return passkeys.register(account.id, scope, response, typeof name === 'string' ? name : '');
    },
    succeeded: ({ passkey, userVerified }, { account, source }) => ({
      metric: { counter: 'passkeys', labels: { event: 'registered', detail: source } },
      audit: { event: 'passkey_registered', fields: { accountId: account.id, source, deviceType: passkey.deviceType, userVerified }, msg: 'passkey registered' },
    }),
    failed: (reason, { account }) => ({
      metric: { counter: 'passkeys', labels: { event: 'failed', detail: reason } },
      audit: { event: 'second_factor_failed', fields: { accountId: account.id, method: 'passkey_registration', reason }, msg: 'passkey registration refused' },
    }),
  };
}
