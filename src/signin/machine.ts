import { AMR_PASSWORD, AMR_TOTP, loginResult, upstreamLoginResult, type LoginResult } from './policy.ts';
import type { SignInStep } from './steps.ts';

/**
 * Sign-in and consent as one pure state machine (Hydra's one flow with guarded transitions): a state
 * (the step record, or `login` when there is none; at oidc-provider's consent prompt `consent` or
 * `device-approval`), an event (what the person just did, already verified by the routes), guards, and
 * the outcome with its effects. No Koa context, no I/O: routes turn a request into an event, call
 * `transition`, and execute `effectsOf` the outcome (persist the step, issue recovery codes, grant,
 * finish the interaction). One table answers every POST under /interaction/:uid. A new way to sign in
 * is a row in TRANSITIONS (and its factor, factors/).
 *
 *   login ──password ok──► has a factor?  ──► second-factor ──code / passkey ok──────────────► done
 *     │                    └ factor demanded? ──► enroll ──app / passkey set up──► recovery-codes ──saved──► done
 *     │                    └ neither ─────────────────────────────────────────────────────────► done (pwd)
 *     └──passkey with user verification (no password)──────────────────────────────────────────► done
 *   consent ──allowed──► consented;  ──nothing to ask (first party, allowed before)──► consented
 *   device-approval ──allowed──► consented  (always asked: no "nothing to ask" row)
 *   any step ──cancel──► cancelled (access_denied to the client)
 *   second-factor, consent ──other-account──► the sign-in page again (at consent: prompt=login)
 */
export type SignInState = { name: 'login' } | SignInStep;
export type StateName = SignInState['name'];
/** oidc-provider's consent prompt: the consent page, or a device's request (RFC 8628), which is always shown. */
export type ConsentState = { name: 'consent' } | { name: 'device-approval' };
export type FlowState = SignInState | ConsentState;
export type FlowStateName = FlowState['name'];

/** What the routes looked up about the account; the machine decides from these facts only. */
export interface AccountFacts {
  id: string;
  /** The lockout subject (the normalized email). */
  subject: string;
  hasTotp: boolean;
  hasPasskey: boolean;
  /** As typed at sign-up (the page shows it) and the remembered language: kept with the next step, not read again. */
  email?: string;
  locale?: string;
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
  /** An upstream provider's identity, linked to this account (upstream/routes.ts); `factorDemanded`: its require_mfa, the client's or the request's. */
  | { type: 'upstream-ok'; account: AccountFacts; factorDemanded: boolean; provider: string }
  | { type: 'cancel' }
  /** "Not you? Use another account": this sign-in forgets whose it is and shows the sign-in page again. */
  | { type: 'other-account' };
export type EventType = SignInEvent['type'];

/** How a consent came about: the person allowed it on the page, or it needed no asking. */
export type ConsentVia = 'consent_page' | 'first_party' | 'remembered';
export type ConsentEvent =
  | { type: 'consent-given' }
  /** The page found nothing to ask: a first-party client, or only scopes allowed before. */
  | { type: 'nothing-to-ask'; via: 'first_party' | 'remembered' };
export type FlowEvent = SignInEvent | ConsentEvent;
export type FlowEventType = FlowEvent['type'];

/** The prompt of oidc-provider each event answers (cancel and other-account answer any). */
const PROMPT_OF: Record<Exclude<FlowEventType, 'cancel' | 'other-account'>, 'login' | 'consent'> = {
  'password-ok': 'login',
  'passkey-signed-in': 'login',
  'code-ok': 'login',
  'passkey-ok': 'login',
  'totp-enrolled': 'login',
  'passkey-enrolled': 'login',
  'codes-saved': 'login',
  'factor-changed': 'login',
  'upstream-ok': 'login',
  'consent-given': 'consent',
  'nothing-to-ask': 'consent',
};

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
  | { kind: 'consented'; via: ConsentVia }
  | { kind: 'cancelled' }
  /** Another account is to sign in: back to the sign-in page (at consent: oidc-provider's login prompt again). */
  | { kind: 'choose-account' }
  | { kind: 'refused'; reason: Refusal };

/**
 * What an outcome makes the routes do, in order. The machine decides them; the routes execute them and
 * render; rendering a page writes nothing.
 */
export type Effect =
  /** Passkey enrolment was the first factor: its recovery codes (TOTP enrolment issues them itself). */
  | { type: 'issue-recovery-codes'; accountId: string }
  | { type: 'persist-step'; step: SignInStep }
  | { type: 'clear-step' }
  /** The answer: the recovery codes, shown this once; otherwise a 303 to the step (post/redirect/get). */
  | { type: 'show-recovery-codes' }
  | { type: 'redirect-to-step' }
  /** The sign-in page of this interaction again, once the step record is gone (303). */
  | { type: 'back-to-sign-in' }
  /** The grant of what the consent prompt asks (and the remembered consent, unless first party). */
  | { type: 'grant-consent'; via: ConsentVia }
  /** `sign-in-again`: no result, and the request now asks for the login prompt (`prompt=login`): oidc-provider shows the sign-in page. */
  | { type: 'finish'; result: 'login' | 'consent' | 'access_denied' | 'sign-in-again' }
  /** A new TOTP enrolment for the enroll step's page (its first view, or the previous one expired), kept in the step. */
  | { type: 'start-enrolment' };

export interface TransitionInput {
  interaction: Interaction;
  /** The interaction uid the request names (its path); it must be the one the browser's cookie holds. */
  postedFor: string;
  /** Epoch seconds. */
  now: number;
  state: FlowState;
  event: FlowEvent;
}

type Handler<S extends FlowState, E extends FlowEvent> = (state: S, event: E) => Outcome;
type Row<S extends FlowState> = { [E in FlowEventType]?: Handler<S, Extract<FlowEvent, { type: E }>> };
type Table = { [S in FlowStateName]: Row<Extract<FlowState, { name: S }>> };

const cancel = () => ({ kind: 'cancelled' }) as const;
const otherAccount = () => ({ kind: 'choose-account' }) as const;

/** After a password (or when the factors changed): the second factor, its enrolment, or — none needed — done. */
function afterPassword(state: FlowState | undefined, { account, factorDemanded }: { account: AccountFacts; factorDemanded: boolean }): Outcome {
  // A step after an upstream sign-in stays one: a factor was demanded, and no password was given.
  const upstream = state && 'upstream' in state ? state.upstream : undefined;
  const who = { accountId: account.id, subject: account.subject, ...(upstream ? { upstream } : {}) };
  if (account.hasTotp || account.hasPasskey) return { kind: 'step', step: { name: 'second-factor', ...who } };
  if (factorDemanded || upstream) return { kind: 'step', step: { name: 'enroll', ...who } };
  return { kind: 'signed-in', login: loginResult(account.id, AMR_PASSWORD) };
}

/** After an upstream sign-in: done, or Latchkey's own second factor (its enrolment when the account has none). */
function afterUpstream(_: unknown, { account, factorDemanded, provider }: { account: AccountFacts; factorDemanded: boolean; provider: string }): Outcome {
  if (!factorDemanded) return { kind: 'signed-in', login: upstreamLoginResult(account.id, provider) };
  const who = { accountId: account.id, subject: account.subject, upstream: provider };
  return { kind: 'step', step: { name: account.hasTotp || account.hasPasskey ? 'second-factor' : 'enroll', ...who } };
}

/** The `amr` of a TOTP or recovery code: after a password both factors; after an upstream, that code and the upstream. */
function codeLogin(s: { accountId: string; upstream?: string }): LoginResult {
  return s.upstream ? upstreamLoginResult(s.accountId, s.upstream, AMR_TOTP) : loginResult(s.accountId, [...AMR_PASSWORD, ...AMR_TOTP]);
}

/** Only the account the step was opened for may finish it. */
function sameAccount(state: { accountId: string }, event: { accountId: string }, then: () => Outcome): Outcome {
  return state.accountId === event.accountId ? then() : { kind: 'refused', reason: 'other-account' };
}

export const TRANSITIONS: Table = {
  login: {
    'password-ok': afterPassword,
    'passkey-signed-in': (_, e) => ({ kind: 'signed-in', login: loginResult(e.accountId, e.amr) }),
    'upstream-ok': afterUpstream,
    cancel,
  },
  'second-factor': {
    'code-ok': (s, e) => sameAccount(s, e, () => ({ kind: 'signed-in', login: codeLogin(s) })),
    'passkey-ok': (s, e) => sameAccount(s, e, () => ({ kind: 'signed-in', login: s.upstream ? upstreamLoginResult(s.accountId, s.upstream, e.amr) : loginResult(s.accountId, e.amr) })),
    'factor-changed': afterPassword,
    'other-account': otherAccount,
    cancel,
  },
  enroll: {
    'totp-enrolled': (s, e) => sameAccount(s, e, () => ({ kind: 'step', step: { name: 'recovery-codes', accountId: s.accountId, subject: s.subject, amr: codeLogin(s).amr, ...(s.upstream ? { upstream: s.upstream } : {}) } })),
    'passkey-enrolled': (s, e) => sameAccount(s, e, () => ({ kind: 'step', step: { name: 'recovery-codes', accountId: s.accountId, subject: s.subject, amr: s.upstream ? upstreamLoginResult(s.accountId, s.upstream, e.amr).amr : e.amr, ...(s.upstream ? { upstream: s.upstream } : {}) } })),
    'factor-changed': afterPassword,
    cancel,
  },
  'recovery-codes': {
    'codes-saved': (s) => ({ kind: 'signed-in', login: { ...loginResult(s.accountId, s.amr ?? [...AMR_PASSWORD, ...AMR_TOTP]), ...(s.upstream ? { upstream: s.upstream } : {}) } }),
    cancel,
  },
  consent: {
    'consent-given': () => ({ kind: 'consented', via: 'consent_page' }),
    'nothing-to-ask': (_, e) => ({ kind: 'consented', via: e.via }),
    'other-account': otherAccount,
    cancel,
  },
  'device-approval': {
    'consent-given': () => ({ kind: 'consented', via: 'consent_page' }),
    cancel,
  },
};

/**
 * The guards every event passes before its row runs, in order: the request names the interaction its
 * cookie holds, the interaction has not expired, oidc-provider is at the prompt the event answers
 * (`login` for the sign-in's events, `consent` for the consent's; cancel is allowed at any prompt),
 * and the current state takes this event. Routes call it before verifying anything, so no code is
 * checked for a step the person is not at.
 */
export function guard(input: Omit<TransitionInput, 'event'>, type: FlowEventType): Refusal | undefined {
  if (input.postedFor !== input.interaction.uid) return 'other-interaction';
  if (input.interaction.expiresAt <= input.now) return 'expired';
  if (type !== 'cancel' && type !== 'other-account' && input.interaction.prompt !== PROMPT_OF[type]) return 'not-signing-in';
  if (!TRANSITIONS[input.state.name][type]) return 'out-of-order';
  return undefined;
}

export function transition(input: TransitionInput): Outcome {
  const refused = guard(input, input.event.type);
  if (refused) return { kind: 'refused', reason: refused };
  const handler = TRANSITIONS[input.state.name][input.event.type] as Handler<FlowState, FlowEvent>;
  return handler(input.state, input.event);
}

/** The state of an interaction: at the login prompt its step record (none: `login`), at consent the kind of request. */
export function stateOf(prompt: string, step: SignInStep | undefined, deviceRequest: boolean): FlowState {
  if (prompt === 'consent') return { name: deviceRequest ? 'device-approval' : 'consent' };
  return step ?? { name: 'login' };
}

/** What the routes do to carry out `outcome`, reached from `state` by `event`, in order. */
export function effectsOf(state: FlowState, event: FlowEvent, outcome: Outcome): Effect[] {
  // `login` and the consent states are interactions without a step record: nothing to clear.
  const clear: Effect[] = state.name === 'login' || state.name === 'consent' || state.name === 'device-approval' ? [] : [{ type: 'clear-step' }];
  switch (outcome.kind) {
    case 'refused':
      return [];
    case 'cancelled':
      return [...clear, { type: 'finish', result: 'access_denied' }];
    case 'choose-account':
      return state.name === 'consent' ? [{ type: 'finish', result: 'sign-in-again' }] : [...clear, { type: 'back-to-sign-in' }];
    case 'signed-in':
      return [...clear, { type: 'finish', result: 'login' }];
    case 'consented':
      return [{ type: 'grant-consent', via: outcome.via }, { type: 'finish', result: 'consent' }];
    case 'step': {
      const codes: Effect[] = event.type === 'passkey-enrolled' ? [{ type: 'issue-recovery-codes', accountId: outcome.step.accountId }] : [];
      const answer: Effect = outcome.step.name === 'recovery-codes' ? { type: 'show-recovery-codes' } : { type: 'redirect-to-step' };
      return [...codes, { type: 'persist-step', step: outcome.step }, answer];
    }
  }
}

/** What showing a step's page needs first: the enroll page a TOTP enrolment to offer, when it has none it can still use. */
export function effectsOfShowing(step: SignInStep, pendingUsable: boolean): Effect[] {
  return step.name === 'enroll' && !pendingUsable ? [{ type: 'start-enrolment' }] : [];
}
