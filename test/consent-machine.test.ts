import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { effectsOf, effectsOfShowing, guard, stateOf, transition, TRANSITIONS, type Effect, type FlowEvent, type FlowState, type Outcome } from '../src/signin/machine.ts';

/**
 * The rest of the one table (signin/machine.ts): oidc-provider's consent prompt — the consent page and a
 * device's request — and the effects every outcome hands to the routes. The sign-in part is
 * test/sign-in-machine.test.ts.
 */
const NOW = 1_000_000;
const UID = 'interaction-a';
const ACCOUNT = 'a0000000-0000-4000-8000-000000000001';
const who = { accountId: ACCOUNT, subject: 'ada@example.org' };

function run(state: FlowState, event: FlowEvent, prompt = 'consent'): Outcome {
  return transition({ interaction: { uid: UID, prompt, expiresAt: NOW + 600 }, postedFor: UID, now: NOW, state, event });
}

describe('consent and device approval in the sign-in table', () => {
  test('the consent page: allowed, or nothing to ask, or cancelled', () => {
    assert.deepEqual(run({ name: 'consent' }, { type: 'consent-given' }), { kind: 'consented', via: 'consent_page' });
    assert.deepEqual(run({ name: 'consent' }, { type: 'nothing-to-ask', via: 'first_party' }), { kind: 'consented', via: 'first_party' });
    assert.deepEqual(run({ name: 'consent' }, { type: 'nothing-to-ask', via: 'remembered' }), { kind: 'consented', via: 'remembered' });
    assert.deepEqual(run({ name: 'consent' }, { type: 'cancel' }), { kind: 'cancelled' });
  });

  test('"Not you? Use another account": at consent the login prompt again (no result), at the code the step cleared and the sign-in page', () => {
    assert.deepEqual(run({ name: 'consent' }, { type: 'other-account' }), { kind: 'choose-account' });
    assert.deepEqual(effectsOf({ name: 'consent' }, { type: 'other-account' }, { kind: 'choose-account' }), [{ type: 'finish', result: 'sign-in-again' }]);
    assert.deepEqual(effectsOf({ name: 'second-factor', ...who }, { type: 'other-account' }, { kind: 'choose-account' }), [{ type: 'clear-step' }, { type: 'back-to-sign-in' }]);
    assert.deepEqual(run({ name: 'device-approval' }, { type: 'other-account' }), { kind: 'refused', reason: 'out-of-order' });
  });

  test('a device request is always asked: allowed or denied, never granted without asking', () => {
    assert.deepEqual(run({ name: 'device-approval' }, { type: 'consent-given' }), { kind: 'consented', via: 'consent_page' });
    assert.deepEqual(run({ name: 'device-approval' }, { type: 'cancel' }), { kind: 'cancelled' });
    assert.deepEqual(run({ name: 'device-approval' }, { type: 'nothing-to-ask', via: 'first_party' }), { kind: 'refused', reason: 'out-of-order' });
    assert.equal(TRANSITIONS['device-approval']['nothing-to-ask'], undefined);
  });

  test('consent posted while still signing in is refused as before ("already done"), and a code posted at consent too', () => {
    assert.deepEqual(run({ name: 'login' }, { type: 'consent-given' }, 'login'), { kind: 'refused', reason: 'not-signing-in' });
    assert.deepEqual(run({ name: 'consent' }, { type: 'code-ok', accountId: ACCOUNT }), { kind: 'refused', reason: 'not-signing-in' });
    const input = { interaction: { uid: UID, prompt: 'consent', expiresAt: NOW + 600 }, postedFor: 'interaction-b', now: NOW, state: { name: 'consent' } as FlowState };
    assert.equal(guard(input, 'consent-given'), 'other-interaction');
  });

  test('the state of an interaction: its step at login, the kind of request at consent', () => {
    assert.deepEqual(stateOf('login', undefined, false), { name: 'login' });
    assert.deepEqual(stateOf('login', { name: 'second-factor', ...who }, false), { name: 'second-factor', ...who });
    assert.deepEqual(stateOf('consent', undefined, false), { name: 'consent' });
    assert.deepEqual(stateOf('consent', undefined, true), { name: 'device-approval' });
  });
});

describe('outcomes and their effects', () => {
  const effects = (state: FlowState, event: FlowEvent, prompt = 'login'): Effect[] => effectsOf(state, event, run(state, event, prompt));

  test('a passkey set up as the first factor issues its recovery codes, persists the step and shows them once', () => {
    assert.deepEqual(effects({ name: 'enroll', ...who }, { type: 'passkey-enrolled', accountId: ACCOUNT, amr: ['pwd', 'hwk', 'user', 'mfa'] }), [
      { type: 'issue-recovery-codes', accountId: ACCOUNT },
      { type: 'persist-step', step: { name: 'recovery-codes', ...who, amr: ['pwd', 'hwk', 'user', 'mfa'] } },
      { type: 'show-recovery-codes' },
    ]);
  });

  test('an app set up brings its own codes: persist and show, nothing issued again', () => {
    assert.deepEqual(effects({ name: 'enroll', ...who }, { type: 'totp-enrolled', accountId: ACCOUNT }), [
      { type: 'persist-step', step: { name: 'recovery-codes', ...who, amr: ['pwd', 'otp', 'mfa'] } },
      { type: 'show-recovery-codes' },
    ]);
  });

  test('the next step is persisted and the browser sent to it (post/redirect/get)', () => {
    const account = { id: ACCOUNT, subject: who.subject, hasTotp: true, hasPasskey: false };
    assert.deepEqual(effects({ name: 'login' }, { type: 'password-ok', account, factorDemanded: false }), [{ type: 'persist-step', step: { name: 'second-factor', ...who } }, { type: 'redirect-to-step' }]);
  });

  test('signed in or cancelled: the step record is cleared (there is none at login), then the interaction finished', () => {
    assert.deepEqual(effects({ name: 'second-factor', ...who }, { type: 'code-ok', accountId: ACCOUNT }), [{ type: 'clear-step' }, { type: 'finish', result: 'login' }]);
    assert.deepEqual(effects({ name: 'enroll', ...who }, { type: 'cancel' }), [{ type: 'clear-step' }, { type: 'finish', result: 'access_denied' }]);
    assert.deepEqual(effects({ name: 'login' }, { type: 'cancel' }), [{ type: 'finish', result: 'access_denied' }]);
  });

  test('consented: the grant, then the interaction finished; refused: nothing at all', () => {
    assert.deepEqual(effects({ name: 'consent' }, { type: 'consent-given' }, 'consent'), [{ type: 'grant-consent', via: 'consent_page' }, { type: 'finish', result: 'consent' }]);
    assert.deepEqual(effects({ name: 'recovery-codes', ...who }, { type: 'code-ok', accountId: ACCOUNT }), []);
  });

  test('showing the enroll page starts an enrolment only when it has none it can use; other pages need nothing', () => {
    assert.deepEqual(effectsOfShowing({ name: 'enroll', ...who }, false), [{ type: 'start-enrolment' }]);
    assert.deepEqual(effectsOfShowing({ name: 'enroll', ...who, pending: 'sealed' }, true), []);
    assert.deepEqual(effectsOfShowing({ name: 'second-factor', ...who }, false), []);
  });
});
