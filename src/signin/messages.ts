import type { Refusal } from './machine.ts';

/** What a person reads: the same for a wrong password and an unknown account, locked or not. */
export const MESSAGES = {
  wrongPassword: 'Wrong email or password.',
  locked: 'Too many failed attempts. Try again later.',
  wrongCode: 'That code is not right. Enter the current code from your authenticator app.',
  usedCode: 'That code was already used. Wait for the next code in your authenticator app.',
  wrongRecoveryCode: 'That recovery code is not right, or it was already used.',
  enrollmentExpired: 'The setup took too long. Scan the new QR code and enter the code it shows.',
  passkeyRefused: 'That passkey was not accepted. Try again, or use another way to sign in.',
  passkeyUnregistered: 'This passkey is no longer registered here: remove it from your device, then sign in another way.',
  passkeyNotVerified: 'Your passkey did not check it was you (no screen lock, PIN or fingerprint). Sign in with your password instead.',
  passkeyNotCreated: 'The passkey was not created. Try again, or use an authenticator app.',
} as const;

/** What a person is told for each refusal (shown as a 400 page). */
export const REFUSALS: Record<Refusal, string> = {
  expired: 'this sign-in took too long; go back to the application and start again',
  'other-interaction': 'interaction mismatch',
  'not-signing-in': 'this sign-in step is already done',
  'out-of-order': 'this sign-in step is not the current one; go back to the application and start again',
  'other-account': 'this sign-in step belongs to another account; go back to the application and start again',
};
