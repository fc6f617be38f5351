import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ACR_MFA, ACR_PASSWORD, ACR_UPSTREAM } from '../src/signin/policy.ts';
import { guard, transition, TRANSITIONS, type AccountFacts, type EventType, type Outcome, type SignInEvent, type SignInState, type StateName } from '../src/signin/machine.ts';

/**
 * The sign-in state machine, table-driven: every (state, event) pair — the ones the table takes and
 * the ones it refuses — plus the guards that come before any row: the interaction named by the request,
 * its expiry, and oidc-provider's prompt.
 */
const NOW = 1_000_000;
const UID = 'interaction-a';
const ACCOUNT = 'a0000000-0000-4000-8000-000000000001';
const OTHER = 'b0000000-0000-4000-8000-000000000002';
const who = { accountId: ACCOUNT, subject: 'ada@example.org' };

const facts = (over: Partial<AccountFacts> = {}): AccountFacts => ({ id: ACCOUNT, subject: 'ada@example.org', hasTotp: false, hasPasskey: false, ...over });
const PASSKEY_AMR = ['hwk', 'user', 'mfa'];
const PWD_PASSKEY_AMR = ['pwd', 'swk', 'user', 'mfa'];

const STATES: Record<StateName, SignInState> = {
  login: { name: 'login' },
  'second-factor': { name: 'second-factor', ...who },
  enroll: { name: 'enroll', ...who, pending: 'sealed' },
  'recovery-codes': { name: 'recovery-codes', ...who, amr: PWD_PASSKEY_AMR },
};

const EVENTS: Record<EventType, SignInEvent> = {
  'password-ok': { type: 'password-ok', account: facts({ hasTotp: true }), factorDemanded: false },
  'passkey-signed-in': { type: 'passkey-signed-in', accountId: ACCOUNT, amr: PASSKEY_AMR },
  'code-ok': { type: 'code-ok', accountId: ACCOUNT },
  'passkey-ok': { type: 'passkey-ok', accountId: ACCOUNT, amr: PWD_PASSKEY_AMR },
  'totp-enrolled': { type: 'totp-enrolled', accountId: ACCOUNT },
  'passkey-enrolled': { type: 'passkey-enrolled', accountId: ACCOUNT, amr: PWD_PASSKEY_AMR },
  'codes-saved': { type: 'codes-saved' },
  'factor-changed': { type: 'factor-changed', account: facts({ hasPasskey: true }), factorDemanded: true },
  'upstream-ok': { type: 'upstream-ok', account: facts(), factorDemanded: false, provider: 'acme' },
  cancel: { type: 'cancel' },
  'other-account': { type: 'other-account' },
};

function run(state: SignInState, event: SignInEvent, over: { prompt?: string; expiresAt?: number; postedFor?: string } = {}): Outcome {
  return transition({ interaction: { uid: UID, prompt: over.prompt ?? 'login', expiresAt: over.expiresAt ?? NOW + 600 }, postedFor: over.postedFor ?? UID, now: NOW, state, event });
}

const signedIn = (amr: string[]): Outcome => ({ kind: 'signed-in', login: { accountId: ACCOUNT, acr: amr.includes('mfa') ? ACR_MFA : ACR_PASSWORD, amr } });
const step = (s: SignInState): Outcome => ({ kind: 'step', step: s as Extract<Outcome, { kind: 'step' }>['step'] });

/** Every transition the table takes, and what comes out. */
const TAKEN: [StateName, SignInEvent, Outcome, string][] = [
  ['login', { type: 'password-ok', account: facts({ hasTotp: true }), factorDemanded: false }, step(STATES['second-factor']), 'an app enrolled: its code next'],
  ['login', { type: 'password-ok', account: facts({ hasPasskey: true }), factorDemanded: false }, step(STATES['second-factor']), 'a passkey only: the second-factor step too'],
  ['login', { type: 'password-ok', account: facts(), factorDemanded: true }, step({ name: 'enroll', ...who }), 'no factor, one demanded: enrolment'],
  ['login', { type: 'password-ok', account: facts(), factorDemanded: false }, signedIn(['pwd']), 'no factor, none demanded: done with pwd'],
  ['login', EVENTS['passkey-signed-in'], signedIn(PASSKEY_AMR), 'a verified passkey alone: done, acr mfa'],
  ['login', EVENTS.cancel, { kind: 'cancelled' }, 'cancel on the sign-in page'],
  ['login', EVENTS['upstream-ok'], { kind: 'signed-in', login: { accountId: ACCOUNT, acr: ACR_UPSTREAM, amr: [], upstream: 'acme' } }, 'an upstream without require_mfa: done, vouching for no factor of ours'],
  ['second-factor', EVENTS['code-ok'], signedIn(['pwd', 'otp', 'mfa']), 'TOTP or recovery code'],
  ['second-factor', EVENTS['passkey-ok'], signedIn(PWD_PASSKEY_AMR), 'passkey as the second factor'],
  ['second-factor', { type: 'factor-changed', account: facts(), factorDemanded: true }, step({ name: 'enroll', ...who }), 'factor reset by an operator: enrol'],
  ['second-factor', { type: 'factor-changed', account: facts(), factorDemanded: false }, signedIn(['pwd']), 'factor reset, none demanded: done'],
  ['second-factor', EVENTS.cancel, { kind: 'cancelled' }, 'cancel at the code'],
  ['second-factor', EVENTS['other-account'], { kind: 'choose-account' }, '"Not you?" at the code: back to the sign-in page'],
  ['enroll', EVENTS['totp-enrolled'], step({ name: 'recovery-codes', ...who, amr: ['pwd', 'otp', 'mfa'] }), 'app set up: recovery codes'],
  ['enroll', EVENTS['passkey-enrolled'], step({ name: 'recovery-codes', ...who, amr: PWD_PASSKEY_AMR }), 'passkey set up: recovery codes'],
  ['enroll', { type: 'factor-changed', account: facts({ hasTotp: true }), factorDemanded: true }, step(STATES['second-factor']), 'enrolled in another tab: its code'],
  ['enroll', EVENTS.cancel, { kind: 'cancelled' }, 'cancel during enrolment'],
  ['recovery-codes', EVENTS['codes-saved'], signedIn(PWD_PASSKEY_AMR), 'codes saved: done with what was set up'],
  ['recovery-codes', EVENTS.cancel, { kind: 'cancelled' }, 'cancel at the recovery codes'],
];

describe('sign-in state machine', () => {
  for (const [state, event, expected, why] of TAKEN) {
    test(`${state} + ${event.type} → ${expected.kind}: ${why}`, () => {
      assert.deepEqual(run(STATES[state], event), expected);
    });
  }

  test('every pair the table does not take is refused as out of order', () => {
    let refused = 0;
    for (const state of Object.keys(STATES) as StateName[]) {
      for (const type of Object.keys(EVENTS) as EventType[]) {
        if (TRANSITIONS[state][type]) continue;
        assert.deepEqual(run(STATES[state], EVENTS[type]), { kind: 'refused', reason: 'out-of-order' }, `${state} + ${type}`);
        refused += 1;
      }
    }
    // Each taken pair is covered by TAKEN above.
    const taken = new Set(TAKEN.map(([s, e]) => `${s}+${e.type}`));
    for (const state of Object.keys(STATES) as StateName[]) {
      for (const type of Object.keys(TRANSITIONS[state]) as EventType[]) assert.ok(taken.has(`${state}+${type}`), `no test for ${state} + ${type}`);
    }
    assert.ok(refused >= 20, `${refused} refused pairs`);
  });

  test('a step posted out of order: a code on the sign-in page, the recovery codes before enrolment', () => {
    assert.deepEqual(run(STATES.login, EVENTS['code-ok']), { kind: 'refused', reason: 'out-of-order' });
    assert.deepEqual(run(STATES.enroll, EVENTS['codes-saved']), { kind: 'refused', reason: 'out-of-order' });
    assert.deepEqual(run(STATES['second-factor'], EVENTS['password-ok']), { kind: 'refused', reason: 'out-of-order' });
  });

  test('an expired interaction is refused, cancel included', () => {
    for (const type of ['code-ok', 'cancel'] as const) {
      assert.deepEqual(run(STATES['second-factor'], EVENTS[type], { expiresAt: NOW }), { kind: 'refused', reason: 'expired' });
    }
  });

  test('a second factor posted for another interaction is refused before anything is verified', () => {
    const input = { interaction: { uid: UID, prompt: 'login', expiresAt: NOW + 600 }, postedFor: 'interaction-b', now: NOW, state: STATES['second-factor'] };
    assert.equal(guard(input, 'code-ok'), 'other-interaction');
    assert.deepEqual(run(STATES['second-factor'], EVENTS['code-ok'], { postedFor: 'interaction-b' }), { kind: 'refused', reason: 'other-interaction' });
  });

  test("a factor proven for another account does not finish this one's step", () => {
    assert.deepEqual(run(STATES['second-factor'], { type: 'code-ok', accountId: OTHER }), { kind: 'refused', reason: 'other-account' });
    assert.deepEqual(run(STATES['second-factor'], { type: 'passkey-ok', accountId: OTHER, amr: PWD_PASSKEY_AMR }), { kind: 'refused', reason: 'other-account' });
    assert.deepEqual(run(STATES.enroll, { type: 'passkey-enrolled', accountId: OTHER, amr: PWD_PASSKEY_AMR }), { kind: 'refused', reason: 'other-account' });
  });

  test('past the login prompt (consent) only cancel is taken', () => {
    assert.deepEqual(run(STATES.login, EVENTS['password-ok'], { prompt: 'consent' }), { kind: 'refused', reason: 'not-signing-in' });
    assert.deepEqual(run(STATES.login, EVENTS.cancel, { prompt: 'consent' }), { kind: 'cancelled' });
  });

  test("an upstream sign-in that needs Latchkey's own factor: that factor's step, then mfa without claiming a password", () => {
    const upstreamWho = { ...who, upstream: 'acme' };
    assert.deepEqual(run(STATES.login, { type: 'upstream-ok', account: facts({ hasTotp: true }), factorDemanded: true, provider: 'acme' }), step({ name: 'second-factor', ...upstreamWho }));
    assert.deepEqual(run(STATES.login, { type: 'upstream-ok', account: facts(), factorDemanded: true, provider: 'acme' }), step({ name: 'enroll', ...upstreamWho }));
    const signed = run({ name: 'second-factor', ...upstreamWho }, EVENTS['code-ok']);
    assert.deepEqual(signed, { kind: 'signed-in', login: { accountId: ACCOUNT, acr: ACR_MFA, amr: ['otp', 'mfa'], upstream: 'acme' } });
    // The factor reset under it: still a step (never done with a password nobody typed).
    assert.deepEqual(run({ name: 'second-factor', ...upstreamWho }, { type: 'factor-changed', account: facts(), factorDemanded: false }), step({ name: 'enroll', ...upstreamWho }));
    const codes = run({ name: 'enroll', ...upstreamWho, pending: 'sealed' }, EVENTS['totp-enrolled']);
    assert.deepEqual(codes, step({ name: 'recovery-codes', ...upstreamWho, amr: ['otp', 'mfa'] }));
    assert.deepEqual(run({ name: 'recovery-codes', ...upstreamWho, amr: ['otp', 'mfa'] }, EVENTS['codes-saved']), { kind: 'signed-in', login: { accountId: ACCOUNT, acr: ACR_MFA, amr: ['otp', 'mfa'], upstream: 'acme' } });
  });

  test('acr follows amr: a passkey without user verification and no password is not mfa', () => {
    assert.deepEqual(run(STATES.login, { type: 'passkey-signed-in', accountId: ACCOUNT, amr: ['hwk', 'user'] }), signedIn(['hwk', 'user']));
    assert.equal((run(STATES.login, { type: 'passkey-signed-in', accountId: ACCOUNT, amr: ['hwk', 'user'] }) as { login: { acr: string } }).login.acr, ACR_PASSWORD);
  });
});
