import type { Context, Middleware } from 'koa';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { audit } from '../observability/audit.ts';
import type { Logger } from '../observability/logger.ts';
import { isProviderRequest, oidcRouteOf, type Metrics } from '../observability/metrics.ts';
import type { Lockout } from '../security/lockout.ts';
import { sameOriginForms } from '../security/same-origin.ts';
import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';
import type { Views } from '../views.ts';
import { UPSTREAM_WORDING } from './provider-wording.ts';

/**
 * The device authorization grant (RFC 8628): what oidc-provider's `features.deviceFlow` leaves to us.
 *
 * - Pages: the code entry at /device (typed, or prefilled from `verification_uri_complete`) and the
 *   outcome; the request itself is shown on the consent step after sign-in (interactions/routes.ts).
 *   Our form posts `confirm=yes` with the code, so oidc-provider's own pre-sign-in confirmation is skipped:
 *   the person decides once, signed in, on a page that names the app, the device and the scopes.
 * - Guessing: every code that matches nothing counts against the client IP (a `Lockout` of its own
 *   namespace); a locked IP is refused with 429 before any code is looked up.
 * - Polling: oidc-provider answers `authorization_pending` but never `slow_down`; the interval is ours.
 */

/** RFC 8628 §3.2: the interval a device waits between polls, and what each `slow_down` adds (§3.5). */
export const POLL_INTERVAL_SECONDS = 5;
const SLOW_DOWN_STEP_SECONDS = 5;
/** A device that sleeps exactly the interval may arrive a little early (its previous answer travelled). */
const POLL_LEEWAY_MS = 500;

export const DEVICE_CODE_TTL_SECONDS = 10 * 60;

export const DEVICE_MESSAGES = {
  wrongCode: 'That code is not right. Check the code on your device and type it again.',
  noCode: 'Enter the code shown on your device.',
  expired: 'That code has expired. Start again on your device to get a new code.',
  used: 'That code was already used. Start again on your device to get a new code.',
  locked: 'Too many wrong codes from your network. Try again later.',
  formExpired: 'The form expired. Enter the code again.',
  failed: 'The code could not be checked right now. Try again in a moment.',
} as const;

export interface DeviceFlowDeps {
  store: Store;
  views: Views;
  /** Wrong user codes, counted per client IP (namespace `device`). */
  lockout: Lockout;
  logger: Logger;
  metrics?: Metrics;
}

type OidcContext = KoaContextWithOIDC & Context;
/** oidc-provider's re-render errors, by name (provider-wording.ts: its canary fails when one is renamed). */
const REDRAWN = UPSTREAM_WORDING.deviceCodeErrors;
type ReRender = Error & { userCode?: string };

/** The lockout "account" of code entry: the IP itself (a code belongs to no one until it is found). */
function guesser(ip: string) {
  return { account: `user-code@${ip || 'unknown'}`, ip };
}

/** oidc-provider's `features.deviceFlow`: a `****-****` code of 20 consonants (no vowels, no 0/O, 1/I). */
export function deviceFlowFeature({ views, lockout, logger, metrics }: DeviceFlowDeps) {
  const render = (ctx: OidcContext, data: Record<string, unknown>) =>
    views.render(ctx, 'device', { title: 'Connect a device', action: ctx.oidc.urlFor('code_verification'), xsrf: ctx.oidc.session?.state?.secret, ...data });

  return {
    enabled: true,
    charset: 'base-20' as const,
    mask: '****-****',

    /** The code entry page; after a refused code (`err`), the same page with why. */
    async userCodeInputSource(ctx: OidcContext, _form: string, out?: { error?: string }, err?: ReRender) {
      if (!err) return render(ctx, { userCode: (ctx.state as { prefilledUserCode?: string }).prefilledUserCode });
      switch (err.name) {
        case REDRAWN.notFound: {
          metrics?.deviceFlow.inc({ outcome: 'wrong_code' });
          const verdict = await lockout.recordFailure({ factor: 'password', ...guesser(ctx.ip) });
          if (!verdict.allowed) {
            ctx.status = 429;
            ctx.set('Retry-After', String(verdict.retryAfterSeconds));
            return render(ctx, { error: DEVICE_MESSAGES.locked, xsrf: undefined });
          }
          return render(ctx, { error: DEVICE_MESSAGES.wrongCode, userCode: err.userCode });
        }
        case REDRAWN.noCode:
          return render(ctx, { error: DEVICE_MESSAGES.noCode });
        case REDRAWN.expired:
          return render(ctx, { error: DEVICE_MESSAGES.expired });
        case REDRAWN.alreadyUsed:
          return render(ctx, { error: DEVICE_MESSAGES.used });
        case REDRAWN.aborted:
          return denied(ctx);
        default: {
          const error = out?.error === 'invalid_request' ? DEVICE_MESSAGES.formExpired : DEVICE_MESSAGES.failed;
          // A post without a session cookie: oidc-provider would try to persist the session it just made
          // for the new form (a 500). Untouched, it is not saved; the page links to a fresh form instead.
          if (typeof ctx.oidc.session?.exp !== 'number') {
            // @types/oidc-provider does not declare Session#touched (whether the session is saved).
            if (ctx.oidc.session) (ctx.oidc.session as unknown as { touched: boolean }).touched = false;
            return render(ctx, { error, xsrf: undefined, restart: true });
          }
          // A stale form (xsrf), or storage down (5xx): the status oidc-provider set stays.
          return render(ctx, { error });
        }
      }
    },

    /** Reached only by a post without `confirm` (not our form): the entry page again, with the code. */
    async userCodeConfirmSource(ctx: OidcContext, _form: string, _client: unknown, _deviceInfo: unknown, userCode: string) {
      return render(ctx, { userCode });
    },

    async successSource(ctx: OidcContext) {
      const clientId = ctx.oidc.client?.clientId;
      metrics?.deviceFlow.inc({ outcome: 'approved' });
      audit(logger, 'device_approved', { accountId: ctx.oidc.session?.accountId, clientId, ip: ctx.ip }, 'a device was allowed to sign in');
      views.render(ctx, 'device-done', { title: 'Device connected', approved: true, clientName: ctx.oidc.client?.clientName ?? clientId });
    },
  };

  /** Denied on the code entry page (`abort`) or on the consent step, where only the interaction names the code. */
  async function denied(ctx: OidcContext) {
    const { DeviceCode, Interaction } = ctx.oidc.entities as { DeviceCode?: { clientId?: string }; Interaction?: { deviceCode?: string } };
    const code = DeviceCode ?? (Interaction?.deviceCode ? await ctx.oidc.provider.DeviceCode.find(Interaction.deviceCode, { ignoreExpiration: true }) : undefined);
    const clientId = code?.clientId;
    const client = clientId ? await ctx.oidc.provider.Client.find(clientId) : undefined;
    metrics?.deviceFlow.inc({ outcome: 'denied' });
    audit(logger, 'device_denied', { accountId: ctx.oidc.session?.accountId, clientId, ip: ctx.ip }, 'a device was denied');
    views.render(ctx, 'device-done', { title: 'Device not connected', approved: false, clientName: client?.clientName ?? clientId });
  }
}

/**
 * In front of oidc-provider's device routes (`paths`: its `pathFor` of code_verification and token):
 * same-origin and lockout checks on the code entry post, the prefilled code of `verification_uri_complete`,
 * `interval` in the device authorization response and `slow_down` for a device that polls too fast.
 */
export function deviceFlowEdges({ store, views, lockout }: DeviceFlowDeps, issuer: string, verificationPath: string, now: () => number = () => Date.now()): Middleware {
  const sameOrigin = sameOriginForms(issuer, views, DEVICE_MESSAGES.formExpired);
  return async (ctx, next) => {
    if (ctx.path === verificationPath && ctx.method === 'POST') {
      await sameOrigin(ctx, async () => {
        const verdict = await lockout.check(guesser(ctx.ip));
        if (verdict.allowed) {
          await next();
          return;
        }
        ctx.status = 429;
        ctx.set('Retry-After', String(verdict.retryAfterSeconds));
        views.render(ctx, 'device', { title: 'Connect a device', error: DEVICE_MESSAGES.locked });
      });
      return;
    }
    if (ctx.path === verificationPath && ctx.method === 'GET' && ctx.query.user_code !== undefined) {
      // oidc-provider would answer with an auto-submitting script, which our CSP (no script-src) blocks:
      // show our own page with the code filled in instead (a repeated parameter fills in nothing).
      const { user_code: userCode, ...rest } = ctx.query;
      if (typeof userCode === 'string') (ctx.state as { prefilledUserCode?: string }).prefilledUserCode = userCode.slice(0, 32);
      ctx.query = rest;
    }
    await next();
    const route = oidcRouteOf(ctx);
    if (route === 'device_authorization' && ctx.status === 200 && isObject(ctx.body)) {
      ctx.body = { ...ctx.body, interval: POLL_INTERVAL_SECONDS };
    } else if (route === 'token' && ctx.status === 400 && isObject(ctx.body) && ctx.body.error === 'authorization_pending') {
      const deviceCode = isProviderRequest(ctx) ? ctx.oidc.params?.device_code : undefined;
      if (typeof deviceCode === 'string' && (await pollTooSoon(store, deviceCode, now()))) {
        ctx.body = { error: 'slow_down', error_description: 'you are polling too quickly: wait the interval, now 5 seconds longer, between requests' };
      }
    }
  };
}

interface PollRecord {
  /** Epoch ms of the last poll answered `authorization_pending` or `slow_down`. */
  at: number;
  interval: number;
}

/**
 * Records this poll of a pending code; true when it came sooner than the code's interval after the last
 * one, which then grows by 5 s (RFC 8628 §3.5). Compare-and-set, so two parallel polls on two nodes
 * cannot both pass.
 */
async function pollTooSoon(store: Store, deviceCode: string, now: number): Promise<boolean> {
  const key = keys.devicePoll(deviceCode);
  for (;;) {
    const raw = await store.get(key);
    const last = raw ? (JSON.parse(raw) as PollRecord) : undefined;
    const tooSoon = last !== undefined && now - last.at < last.interval * 1000 - POLL_LEEWAY_MS;
    const next: PollRecord = { at: now, interval: (last?.interval ?? POLL_INTERVAL_SECONDS) + (tooSoon ? SLOW_DOWN_STEP_SECONDS : 0) };
    const written = raw === null
      ? await store.set(key, JSON.stringify(next), { ttl: DEVICE_CODE_TTL_SECONDS, ifAbsent: true })
      : await store.replaceIf(key, raw, JSON.stringify(next));
    if (written) return tooSoon;
  }
}

function isObject(body: unknown): body is Record<string, unknown> {
  return typeof body === 'object' && body !== null && !Buffer.isBuffer(body);
}
