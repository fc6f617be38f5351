import type { Context } from 'koa';
import { MESSAGES } from '../signin/messages.ts';
import { passkeyAmr } from '../signin/policy.ts';
import { credentialIdOf, type Details, type Flow } from './flow.ts';

/** The sign-in page: email and password, or a passkey alone (passwordless). */
export function loginStep(flow: Flow) {
  return {
    page: (ctx: Context, d: Details, client: { clientName?: string; logoUri?: string } | undefined) => flow.renderLogin(ctx, d, client),

    async password(this: void, ctx: Context) {
      const body = ctx.request.body as Record<string, unknown>;
      const email = typeof body.email === 'string' ? body.email.slice(0, 254) : '';
      const password = typeof body.password === 'string' ? body.password : '';
      // The interaction, the lockout and the email's account are all named by the request: one read.
      flow.readAhead(ctx, flow.passwordReads(email, password, ctx.ip));
      const { d, state } = await flow.at(ctx, 'password-ok');
      const checked = await flow.checks.password(email, password, ctx.ip);
      if (checked.status !== 'ok') {
        const client = await flow.clientOf(d);
        // 200, not 401: a 401 needs a WWW-Authenticate challenge (RFC 9110 §15.5.2), and browsers log 4xx pages as console errors.
        ctx.status = 200;
        const error = checked.status === 'locked' ? flow.locked(ctx, checked.retryAfterSeconds) : MESSAGES.wrongPassword;
        return flow.renderLogin(ctx, d, client, { error, email });
      }
      await flow.apply(ctx, d, state, { type: 'password-ok', ...(await flow.factsOf(d, checked.account)) });
    },

    /** A passwordless sign-in: a discoverable passkey with user verification, nothing else. */
    async passkey(this: void, ctx: Context) {
      const { d, state } = await flow.at(ctx, 'passkey-signed-in');
      const checked = await flow.checks.passkey(d.uid, (ctx.request.body as Record<string, unknown>).response, ctx.ip);
      if (checked.status === 'ok') return flow.apply(ctx, d, state, { type: 'passkey-signed-in', accountId: checked.account.id, amr: passkeyAmr({ deviceType: checked.passkey.deviceType, userVerified: checked.userVerified }) });
      const client = await flow.clientOf(d);
      if (checked.status === 'failed' && checked.reason === 'unregistered') {
        // The page tells the device to forget it (WebAuthn Signal API, passkey.js) where the browser can.
        return flow.renderLogin(ctx, d, client, { error: MESSAGES.passkeyUnregistered, unknownCredential: credentialIdOf(ctx) });
      }
      const error = checked.status === 'locked' ? flow.locked(ctx, checked.retryAfterSeconds) : checked.reason === 'not-verified' ? MESSAGES.passkeyNotVerified : MESSAGES.passkeyRefused;
      await flow.renderLogin(ctx, d, client, { error });
    },
  };
}
