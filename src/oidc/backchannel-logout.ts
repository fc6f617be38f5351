import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import type Provider from 'oidc-provider';
import { audit } from '../observability/audit.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import { LOGOUT_CHANNEL, takeLogout, type LogoutNotice } from '../storage/logout-queue.ts';
import type { Store } from '../storage/store.ts';
import { backchannelTargetProblem, guardedLookup, RefusedTarget, type BackchannelTargetRules } from './backchannel-targets.ts';
import { singleDrain } from '../storage/single-drain.ts';

/** A refusal of our `lookup` reaches the request's error as is, or inside the AggregateError of trying each address. */
function refusedByLookup(err: unknown): boolean {
  if (err instanceof RefusedTarget || (err as { code?: string })?.code === 'ERR_LATCHKEY_REFUSED_TARGET') return true;
  return err instanceof AggregateError && err.errors.some(refusedByLookup);
}

/**
 * OpenID Connect Back-Channel Logout 1.0: delivers the queued notices (storage/logout-queue.ts) to the
 * apps' `backchannel_logout_uri`, off every request path. Each server takes notices from the queue when
 * one is announced and every `pollMs` (a notice announced while it was away still goes out); a logout
 * token is signed like an ID token for the client (`typ: logout+jwt`, `sub`, `sid`, the back-channel
 * logout event, no nonce) and posted with a deadline, retried after each of `retryDelaysMs`, only to an
 * address the target rules allow (backchannel-targets.ts); a notice that never got a 200 is counted and
 * logged (`backchannel_logout_failed`) with a coarse reason, without the token.
 */
export interface LogoutDeliveryOptions {
  provider: Provider;
  store: Store;
  logger: Logger;
  metrics: Metrics;
  /** Deadline of one POST. */
  timeoutMs?: number;
  /** Waits before the second, third… attempt: one retry per entry. */
  retryDelaysMs?: number[];
  pollMs?: number;
  /** Where notices may go (backchannel-targets.ts): checked on the URI, and on the address its name resolves to at delivery. */
  targets: BackchannelTargetRules;
  /** Resolves host names (dns.lookup; tests inject one that points a name elsewhere). */
  resolve?: LookupFunction;
}

/**
 * Why a delivery failed, in the words the log and the activity log keep: `timeout`, `refused_target`,
 * `http_status 500` or `connection_failed` — never the connection's own error text, which would tell
 * whoever chose the URI what answers where on the server's network.
 */
class DeliveryFailure extends Error {}

const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';

type LogoutClient = { clientId: string; backchannelLogoutUri?: string };
type LogoutToken = { mask: unknown; set(claim: string, value: unknown): void; issue(options: { use: 'logout' }): Promise<string> };
type IdTokenClass = new (claims: { sub: string }, options: { client: LogoutClient; ctx: undefined }) => LogoutToken;

export async function startLogoutDelivery(options: LogoutDeliveryOptions): Promise<() => Promise<void>> {
  const { provider, store, logger, metrics, timeoutMs = 5000, retryDelaysMs = [1000, 4000], pollMs = 5000, targets } = options;
  const lookup = guardedLookup(targets, options.resolve);
  let stopped = false;

  /** Signed the way oidc-provider's own Client#backchannelLogout does, for our queued notice. */
  async function logoutToken(client: LogoutClient, notice: LogoutNotice): Promise<string> {
    // @types/oidc-provider's IdToken lacks `mask` and wants a whole Client where the signing needs only these fields.
    const token = new (provider.IdToken as unknown as IdTokenClass)({ sub: notice.sub }, { client, ctx: undefined });
    token.mask = { sub: null };
    token.set('events', { [BACKCHANNEL_LOGOUT_EVENT]: {} });
    token.set('jti', crypto.randomUUID());
    token.set('sid', notice.sid);
    return token.issue({ use: 'logout' });
  }

  /** One POST with node:http(s), whose connection goes only to an address `lookup` allowed; redirects are not followed. */
  function post(url: URL, token: string): Promise<void> {
    const body = new URLSearchParams({ logout_token: token }).toString();
    return new Promise((resolve, reject) => {
      const request = (url.protocol === 'https:' ? https : http).request(
        url,
        { method: 'POST', agent: false, lookup, headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) } },
        (response) => {
          response.resume();
          const status = response.statusCode ?? 0;
          if (status === 200 || status === 204) resolve();
          else reject(new DeliveryFailure(`http_status ${status}`));
        },
      );
      const timer = setTimeout(() => request.destroy(new DeliveryFailure('timeout')), timeoutMs);
      request.on('close', () => clearTimeout(timer));
      request.on('error', (err) => reject(err instanceof DeliveryFailure ? err : new DeliveryFailure(refusedByLookup(err) ? 'refused_target' : 'connection_failed')));
      request.end(body);
    });
  }

  async function deliver(notice: LogoutNotice): Promise<void> {
    const client = (await provider.Client.find(notice.clientId)) as LogoutClient | undefined;
    const uri = client?.backchannelLogoutUri;
    if (!client || !uri) return; // an app without back-channel logout, or deleted meanwhile
    const failed = (reason: string, attempts: number) => {
      metrics.backchannelLogouts.inc({ result: 'failed' });
      audit(logger, 'backchannel_logout_failed', { clientId: notice.clientId, accountId: notice.sub, attempts, reason }, 'back-channel logout could not be delivered');
    };
    // Registered under other rules (an earlier version, a CLI run outside production, a setting since turned off).
    if (backchannelTargetProblem(uri, targets)) return failed('refused_target', 0);
    const token = await logoutToken(client, notice);
    let reason = '';
    let attempts = 0;
    for (let attempt = 0; attempt <= retryDelaysMs.length && !stopped; attempt += 1) {
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, retryDelaysMs[attempt - 1]).unref());
      attempts += 1;
      try {
        await post(new URL(uri), token);
        metrics.backchannelLogouts.inc({ result: 'delivered' });
        return;
      } catch (err) {
        reason = err instanceof DeliveryFailure ? err.message : 'connection_failed';
        if (reason === 'refused_target') break; // asking again resolves to the same refusal
      }
    }
    failed(reason, attempts);
  }

  /** Takes every queued notice and starts its delivery; one drain at a time per process. */
  const { drain, settled } = singleDrain(async () => {
    for (let notice = await take(); notice && !stopped; notice = await take()) {
      void deliver(notice).catch((err: unknown) => logger.error({ err, clientId: notice.clientId }, 'back-channel logout delivery failed unexpectedly'));
    }
  }, () => stopped);

  // Storage down: the notices wait in the queue for the next drain.
  const take = () => takeLogout(store).catch(() => undefined);

  const unsubscribe = await store.subscribe(LOGOUT_CHANNEL, () => void drain(), () => void drain());
  const timer = setInterval(() => void drain(), pollMs).unref();
  void drain();
  return async () => {
    stopped = true;
    clearInterval(timer);
    await unsubscribe();
    await settled();
  };
}
