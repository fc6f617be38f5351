import type { Context } from 'koa';
import { AccountError } from '../accounts/accounts.ts';
import { MESSAGES } from '../signin/messages.ts';
import { passkeyAmr } from '../signin/policy.ts';
import type { Flow } from './flow.ts';

/** A second factor demanded and none set up: an authenticator app or a passkey, then the recovery codes. */
export function enrollStep(flow: Flow) {
  return {
    async totp(this: void, ctx: Context) {
      const { d, state } = await flow.at(ctx, 'totp-enrolled');
      const step = flow.stepOf(state, 'enroll');
      const { code: sent } = ctx.request.body as Record<string, unknown>;
      const code = (typeof sent === 'string' ? sent : '').slice(0, 64);
      let checked;
      try {
        checked = await flow.checks.enroll({ id: step.accountId, email: step.subject }, step.pending ?? '', code, ctx.ip);
      } catch (err) {
        // Enrolled meanwhile (another tab): go on with that factor.
        if (!(err instanceof AccountError)) throw err;
        return flow.factorChanged(ctx, d, state, step.accountId);
      }
      if (checked.status === 'ok') {
        // Someone who has only the password setting up the first factor is what a taken account looks like.
        await flow.email.notify({ email: step.subject }, 'authenticator-added');
        return flow.apply(ctx, d, state, { type: 'totp-enrolled', accountId: step.accountId }, { recoveryCodes: checked.recoveryCodes });
      }
      const error = checked.status === 'locked' ? flow.locked(ctx, checked.retryAfterSeconds) : checked.reason === 'expired' ? MESSAGES.enrollmentExpired : MESSAGES.wrongCode;
      // The person chose the app: it stays unfolded with its error.
      await flow.show(ctx, d, step, { error, appFirst: true });
    },

    async passkey(this: void, ctx: Context) {
      const { d, state } = await flow.at(ctx, 'passkey-enrolled');
      const step = flow.stepOf(state, 'enroll');
      const body = ctx.request.body as Record<string, unknown>;
      const checked = await flow.checks.registerPasskey({ id: step.accountId, email: step.subject }, d.uid, body.response, body.name, ctx.ip, 'signin');
      if (checked.status !== 'ok') {
        const error = checked.status === 'locked' ? flow.locked(ctx, checked.retryAfterSeconds) : MESSAGES.passkeyNotCreated;
        return flow.show(ctx, d, step, { error });
      }
      await flow.email.notify({ email: step.subject }, 'passkey-added');
      // Its recovery codes are the outcome's effect (issue-recovery-codes), shown once in this answer.
      const amr = passkeyAmr({ deviceType: checked.passkey.deviceType, userVerified: checked.userVerified }, true);
      await flow.apply(ctx, d, state, { type: 'passkey-enrolled', accountId: step.accountId, amr });
    },

    async saved(this: void, ctx: Context) {
      const { d, state } = await flow.at(ctx, 'codes-saved');
      await flow.apply(ctx, d, state, { type: 'codes-saved' });
    },
  };
}
