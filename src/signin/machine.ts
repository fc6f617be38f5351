import { AMR_PASSWORD, AMR_TOTP, loginResult, type LoginResult } from './policy.ts';
import type { SignInStep } from './steps.ts';

/**
 * The sign-in as a pure state machine: a state (the step record, or `login` when there is none), an
 * event (what the person just did, already verified by the routes), guards, and the outcome. No Koa
 * context, no I/O: routes turn a request into an event, call `transition`, and carry out the outcome
 * (persist the step, finish the interaction, render). A new way to sign in is a row in TRANSITIONS.
 *
 *   login ──password ok──► has a factor?  ──► second-factor ──code / passkey ok──────────────► done
 *     │                    └ factor demanded? ──► enroll ──app / passkey set up──► recovery-codes ──saved──► done
 *     │                    └ neither ─────────────────────────────────────────────────────────► done (pwd)
 *     └──passkey with user verification (no password)──────────────────────────────────────────► done
 *   any step ──cancel──► cancelled (access_denied to the client)
 */
export type SignInState = { name: 'login' } | SignInStep;
export type StateName = SignInState['name'];

/** What the routes looked up about the account; the machine decides from these facts only. */
export interface AccountFacts {
  id: string;
  /** The lockout subject (the normalized email). */
  subject: string;
  hasTotp: boolean;
  hasPasskey: boolean;
}

export type SignInEvent =
  | { type: 'password-ok'; account: AccountFacts; factorDemanded: boolean }
  /** `amr`: what the assertion proved (mfa-policy.ts passkeyAmr); the routes refuse it without user verification. */
  | { type: 'passkey-signed-in'; accountId: string; amr: string[] }
  | { type: 'code-ok'; accountId: string }
  | { type: 'passkey-ok'; accountId: string; amr: string[] }
  | { type: 'totp-enrolled'; accountId: string }
  | { type: 'passkey-enrolled'; accountId: string; amr: string[] }
  | { type: 'codes-saved' }
  /** The account's factors changed under this sign-in (an operator reset them, another tab enrolled): decide again. */
  | { type: 'factor-changed'; account: AccountFacts; factorDemanded: boolean }
  | { type: 'cancel' };
export type EventType = SignInEvent['type'];

export interface Interaction {
  uid: string;
  /** oidc-provider's prompt: our steps belong to `login`. */
  prompt: string;
  /** Epoch seconds. */
  expiresAt: number;
}

export type Refusal = 'expired' | 'other-interaction' | 'not-signing-in' | 'out-of-order' | 'other-account';

export type Outcome =
  | { kind: 'step'; step: SignInStep }
  | { kind: 'signed-in'; login: LoginResult }
  | { kind: 'cancelled' }
  | { kind: 'refused'; reason: Refusal };

export interface TransitionInput {
  interaction: Interaction;
  /** The interaction uid the request names (its path); it must be the one the browser's cookie holds. */
  postedFor: string;
  /** Epoch seconds. */
  now: number;
  state: SignInState;
  event: SignInEvent;
}

type Handler<S extends SignInState, E extends SignInEvent> = (state: S, event: E) => Outcome;
type Row<S extends SignInState> = { [E in EventType]?: Handler<S, Extract<SignInEvent, { type: E }>> };
type Table = { [S in StateName]: Row<Extract<SignInState, { name: S }>> };

const cancel = () => ({ kind: 'cancelled' }) as const;

/** After a password (or when the factors changed): the second factor, its enrolment, or — none needed — done. */
function afterPassword(_: unknown, { account, factorDemanded }: { account: AccountFacts; factorDemanded: boolean }): Outcome {
  const who = { accountId: account.id, subject: account.subject };
  if (account.hasTotp || account.hasPasskey) return { kind: 'step', step: { name: 'second-factor', ...who } };
  if (factorDemanded) return { kind: 'step', step: { name: 'enroll', ...who } };
  return { kind: 'signed-in', login: loginResult(account.id, AMR_PASSWORD) };
}

/** Only the account the step was opened for may finish it. */
function sameAccount(state: { accountId: string }, event: { accountId: string }, then: () => Outcome): Outcome {
  return state.accountId === event.accountId ? then() : { kind: 'refused', reason: 'other-account' };
}

export const TRANSITIONS: Table = {
  login: {
    'password-ok': afterPassword,
    'passkey-signed-in': (_, e) => ({ kind: 'signed-in', login: loginResult(e.accountId, e.amr) }),
    cancel,
  },
  'second-factor': {
    'code-ok': (s, e) => sameAccount(s, e, () => ({ kind: 'signed-in', login: loginResult(s.accountId, [...AMR_PASSWORD, ...AMR_TOTP]) })),
    'passkey-ok': (s, e) => sameAccount(s, e, () => ({ kind: 'signed-in', login: loginResult(s.accountId, e.amr) })),
    'factor-changed': afterPassword,
    cancel,
  },
  enroll: {
    'totp-enrolled': (s, e) => sameAccount(s, e, () => ({ kind: 'step', step: { name: 'recovery-codes', accountId: s.accountId, subject: s.subject, amr: [...AMR_PASSWORD, ...AMR_TOTP] } })),
    'passkey-enrolled': (s, e) => sameAccount(s, e, () => ({ kind: 'step', step: { name: 'recovery-codes', accountId: s.accountId, subject: s.subject, amr: e.amr } })),
    'factor-changed': afterPassword,
    cancel,
  },
  'recovery-codes': {
    'codes-saved': (s) => ({ kind: 'signed-in', login: loginResult(s.accountId, s.amr ?? [...AMR_PASSWORD, ...AMR_TOTP]) }),
    cancel,
  },
};

/**
 * The guards every event passes before its row runs, in order: the request names the interaction its
 * cookie holds, the interaction has not expired, oidc-provider is still at `login` (cancel is allowed
 * at any prompt), and the current state takes this event. Routes call it before verifying anything,
 * so no code is checked for a step the person is not at.
 */
export function guard(input: Omit<TransitionInput, 'event'>, type: EventType): Refusal | undefined {
  if (input.postedFor !== input.interaction.uid) return 'other-interaction';
  if (input.interaction.expiresAt <= input.now) return 'expired';
  if (type !== 'cancel' && input.interaction.prompt !== 'login') return 'not-signing-in';
  if (!TRANSITIONS[input.state.name][type]) return 'out-of-order';
  return undefined;
}

export function transition(input: TransitionInput): Outcome {
  const refused = guard(input, input.event.type);
  if (refused) return { kind: 'refused', reason: refused };
  const handler = TRANSITIONS[input.state.name][input.event.type] as Handler<SignInState, SignInEvent>;
  return handler(input.state, input.event);
}
