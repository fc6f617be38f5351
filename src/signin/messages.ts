import { en } from '../i18n/en.ts';
import type { Refusal } from './machine.ts';

/** What a person reads (the English catalogue's words; a page says them in its language): the same for a wrong password and an unknown account, locked or not. */
export const MESSAGES = {
  wrongPassword: en['said.wrongPassword'],
  locked: en['said.locked'],
  wrongCode: en['said.wrongCode'],
  usedCode: en['said.usedCode'],
  wrongRecoveryCode: en['said.wrongRecoveryCode'],
  enrollmentExpired: en['said.enrollmentExpired'],
  passkeyRefused: en['said.passkeyRefused'],
  passkeyUnregistered: en['said.passkeyUnregistered'],
  passkeyNotVerified: en['said.passkeyNotVerified'],
  passkeyNotCreated: en['said.passkeyNotCreated'],
} as const;

/** What a person is told for each refusal (shown as a 400 page). */
export const REFUSALS: Record<Refusal, string> = {
  expired: en['said.refusedExpired'],
  'other-interaction': en['said.refusedOtherInteraction'],
  'not-signing-in': en['said.refusedNotSigningIn'],
  'out-of-order': en['said.refusedOutOfOrder'],
  'other-account': en['said.refusedOtherAccount'],
};
