import type Provider from 'oidc-provider';
import { audit } from '../observability/audit.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import { LOGOUT_CHANNEL, takeLogout, type LogoutNotice } from '../storage/logout-queue.ts';
import type { Store } from '../storage/store.ts';

/**
 * OpenID Connect Back-Channel Logout 1.0: delivers the queued notices (storage/logout-queue.ts) to the
 * apps' `backchannel_logout_uri`, off every request path. Each server takes notices from the queue when
 * one is announced and every `pollMs` (a notice announced while it was away still goes out); a logout
 * token is signed like an ID token for the client (`typ: logout+jwt`, `sub`, `sid`, the back-channel
 * logout event, no nonce) and posted with a deadline, retried after each of `retryDelaysMs`; a notice
 * that never got a 200 is counted and logged (`backchannel_logout_failed`), without the token.
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
}

const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';

type LogoutClient = { clientId: string; backchannelLogoutUri?: string };
type LogoutToken = { mask: unknown; set(claim: string, value: unknown): void; issue(options: { use: 'logout' }): Promise<string> };
type IdTokenClass = new (claims: { sub: string }, options: { client: LogoutClient; ctx: undefined }) => LogoutToken;

export async function startLogoutDelivery(options: LogoutDeliveryOptions): Promise<() => Promise<void>> {
  const { provider, store, logger, metrics, timeoutMs = 5000, retryDelaysMs = [1000, 4000], pollMs = 5000 } = options;
  let stopped = false;
  let draining: Promise<void> | undefined;
  let again = false;

  /** Signed the way oidc-provider's own Client#backchannelLogout does, for our queued notice. */
  async function logoutToken(client: LogoutClient, notice: LogoutNotice): Promise<string> {
    const token = new (provider.IdToken as unknown as IdTokenClass)({ sub: notice.sub }, { client, ctx: undefined });
    token.mask = { sub: null };
    token.set('events', { [BACKCHANNEL_LOGOUT_EVENT]: {} });
    token.set('jti', crypto.randomUUID());
    token.set('sid', notice.sid);
    return token.issue({ use: 'logout' });
  }

  async function post(uri: string, token: string): Promise<void> {
    const response = await fetch(uri, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ logout_token: token }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    await response.body?.cancel();
    if (response.status !== 200 && response.status !== 204) throw new Error(`answered ${response.status}`);
  }

  async function deliver(notice: LogoutNotice): Promise<void> {
    const client = (await provider.Client.find(notice.clientId)) as LogoutClient | undefined;
    const uri = client?.backchannelLogoutUri;
    if (!client || !uri) return; // an app without back-channel logout, or deleted meanwhile
    const token = await logoutToken(client, notice);
    let reason = '';
    for (let attempt = 0; attempt <= retryDelaysMs.length && !stopped; attempt += 1) {
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, retryDelaysMs[attempt - 1]).unref());
      try {
        await post(uri, token);
        metrics.backchannelLogouts.inc({ result: 'delivered' });
        return;
      } catch (err) {
        // The reason names the failure (status, timeout, refused connection), never the token.
        reason = err instanceof Error && err.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : err instanceof Error ? err.message : String(err);
        if (err instanceof TypeError && err.cause instanceof Error) reason = `${err.message}: ${err.cause.message}`;
      }
    }
    metrics.backchannelLogouts.inc({ result: 'failed' });
    audit(logger, 'backchannel_logout_failed', { clientId: notice.clientId, accountId: notice.sub, attempts: retryDelaysMs.length + 1, reason }, 'back-channel logout could not be delivered');
  }

  /** Takes every queued notice and starts its delivery; one drain at a time per process. */
  function drain(): Promise<void> {
    if (draining) {
      again = true;
      return draining;
    }
    draining = (async () => {
      do {
        again = false;
        for (let notice = await take(); notice && !stopped; notice = await take()) {
          void deliver(notice).catch((err: unknown) => logger.error({ err, clientId: notice!.clientId }, 'back-channel logout delivery failed unexpectedly'));
        }
      } while (again && !stopped);
    })().finally(() => {
      draining = undefined;
    });
    return draining;
  }

  // Storage down: the notices wait in the queue for the next drain.
  const take = () => takeLogout(store).catch(() => undefined);

  const unsubscribe = await store.subscribe(LOGOUT_CHANNEL, () => void drain(), () => void drain());
  const timer = setInterval(() => void drain(), pollMs).unref();
  void drain();
  return async () => {
    stopped = true;
    clearInterval(timer);
    await unsubscribe();
    await draining;
  };
}
