import Router from '@koa/router';
import { REFUSALS } from '../signin/messages.ts';
import { interactionReads } from '../storage/oidc-adapter.ts';
import { pageWriteId } from '../storage/written-interactions.ts';
import { withReadAhead } from '../storage/read-ahead.ts';
import { consentStep } from './consent.ts';
import { renderDeviceRequest } from './device.ts';
import { enrollStep } from './enroll.ts';
import { interactionFlow, type InteractionDeps } from './flow.ts';
import { loginStep } from './login.ts';
import { secondFactorStep } from './second-factor.ts';

export type { InteractionDeps } from './flow.ts';

/**
 * Every route under /interaction/:uid, each listing its guards in order. The transitions are the pure
 * state machine of signin/machine.ts (one table for every POST here); the steps' files turn a request
 * into an event after verifying what the person sent, and flow.ts executes the outcome's effects.
 */
export function interactionRoutes(deps: InteractionDeps) {
  const router = new Router({ prefix: '/interaction/:uid' });
  // The interaction a request reads carries its sign-in step (signin/steps.ts): kept for the request,
  // with what its post reads ahead (storage/read-ahead.ts).
  router.use((_ctx, next) => interactionReads.run(new Map(), () => withReadAhead(next)));
  // A page addressed with a write id renders from that write when this process made it (storage/written-interactions.ts).
  router.get('/', (ctx, next) => (typeof ctx.query.v === 'string' ? pageWriteId.run(ctx.query.v, next) : next()));
  const flow = interactionFlow(deps);
  const { sameOrigin, form, requireCsrf, passkeysOn } = flow.guards;
  const login = loginStep(flow);
  const secondFactor = secondFactorStep(flow);
  const enroll = enrollStep(flow);
  const consent = consentStep(flow);

  /** The current step's page. */
  router.get('/', async (ctx) => {
    const d = await flow.details(ctx).catch((err: unknown) => flow.wayForward(ctx, err));
    if (!d) return;
    if (d.uid !== ctx.params.uid) flow.refuse(REFUSALS['other-interaction']);
    const client = await flow.clientOf(d);
    if (!client) return flow.refuse('unknown client');
    if (d.prompt.name === 'login') {
      const step = await flow.steps.get(d.uid);
      return step ? flow.show(ctx, d, step) : login.page(ctx, d, client);
    }
    if (d.prompt.name === 'consent' && d.deviceCode) return renderDeviceRequest(ctx, deps, d, client);
    if (d.prompt.name === 'consent') return consent.page(ctx, d, client);
    flow.refuse(`unsupported step ${d.prompt.name}`);
  });

  router.post('/login', sameOrigin, form, requireCsrf, login.password);
  router.post('/passkey', passkeysOn, sameOrigin, form, requireCsrf, login.passkey);
  router.post('/mfa', sameOrigin, form, requireCsrf, secondFactor.code);
  router.get('/recovery', secondFactor.recoveryPage);
  router.post('/recovery', sameOrigin, form, requireCsrf, secondFactor.recoveryCode);
  router.post('/mfa/passkey', passkeysOn, sameOrigin, form, requireCsrf, secondFactor.passkey);
  router.post('/enroll', sameOrigin, form, requireCsrf, enroll.totp);
  router.post('/enroll/passkey', passkeysOn, sameOrigin, form, requireCsrf, enroll.passkey);
  router.post('/saved', sameOrigin, form, requireCsrf, enroll.saved);
  router.post('/consent', sameOrigin, form, requireCsrf, consent.allow);
  router.post('/abort', sameOrigin, form, requireCsrf, consent.cancel);
  router.post('/other-account', sameOrigin, form, requireCsrf, consent.otherAccount);

  return router;
}
