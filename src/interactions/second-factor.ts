import type { Context } from 'koa';
import { MESSAGES } from '../signin/messages.ts';
import { passkeyAmr } from '../signin/policy.ts';
import { credentialIdOf, type Flow } from './flow.ts';

/** After the password: a code from the authenticator app, a recovery code, or the account's passkey. */
export function secondFactorStep(flow: Flow) {
  return {
    async code(this: void, ctx: Context) {
      // The interaction and, when this process saw its step, the account it names: one read.
      flow.readAhead(ctx);
      const { d, state } = await flow.at(ctx, 'code-ok');
      const step = flow.stepOf(state, 'second-factor');
      const { code: sent } = ctx.request.body as Record<string, unknown>;
      const code = (typeof sent === 'string' ? sent : '').slice(0, 64);
      const checked = await flow.checks.secondFactor({ id: step.accountId, email: step.subject }, { totp: code }, ctx.ip);
      if (checked.status === 'ok') return flow.apply(ctx, d, state, { type: 'code-ok', accountId: step.accountId });
      if (checked.status === 'failed' && checked.reason === 'not-enrolled') return flow.factorChanged(ctx, d, state, step.accountId);
      const error = checked.status === 'locked' ? flow.locked(ctx, checked.retryAfterSeconds) : checked.reason === 'replayed' ? MESSAGES.usedCode : MESSAGES.wrongCode;
      await flow.renderStep(ctx, d, step, { error });
    },

    async recoveryPage(this: void, ctx: Context) {
      const { d, state } = await flow.at(ctx, 'code-ok');
      await flow.renderStep(ctx, d, flow.stepOf(state, 'second-factor'), { recovery: true });
    },

    async recoveryCode(this: void, ctx: Context) {
      // The interaction and, when this process saw its step, the account it names: one read.
      flow.readAhead(ctx);
      const { d, state } = await flow.at(ctx, 'code-ok');
      const step = flow.stepOf(state, 'second-factor');
      const { recovery_code: sent } = ctx.request.body as Record<string, unknown>;
      const code = (typeof sent === 'string' ? sent : '').slice(0, 64);
      const checked = await flow.checks.secondFactor({ id: step.accountId, email: step.subject }, { recoveryCode: code }, ctx.ip);
      if (checked.status === 'ok') return flow.apply(ctx, d, state, { type: 'code-ok', accountId: step.accountId });
      if (checked.status === 'failed' && checked.reason === 'not-enrolled') return flow.factorChanged(ctx, d, state, step.accountId);
      const error = checked.status === 'locked' ? flow.locked(ctx, checked.retryAfterSeconds) : MESSAGES.wrongRecoveryCode;
      await flow.renderStep(ctx, d, step, { error, recovery: true });
    },

    async passkey(this: void, ctx: Context) {
      const { d, state } = await flow.at(ctx, 'passkey-ok');
      const step = flow.stepOf(state, 'second-factor');
      const checked = await flow.checks.passkey(d.uid, (ctx.request.body as Record<string, unknown>).response, ctx.ip, { id: step.accountId, email: step.subject });
      if (checked.status === 'ok') return flow.apply(ctx, d, state, { type: 'passkey-ok', accountId: checked.account.id, amr: passkeyAmr({ deviceType: checked.passkey.deviceType, userVerified: checked.userVerified }, true) });
      if (checked.status === 'failed' && checked.reason === 'unregistered') return flow.renderStep(ctx, d, step, { error: MESSAGES.passkeyUnregistered, unknownCredential: credentialIdOf(ctx) });
      const error = checked.status === 'locked' ? flow.locked(ctx, checked.retryAfterSeconds) : MESSAGES.passkeyRefused;
      await flow.renderStep(ctx, d, step, { error });
    },
  };
}
