import cluster from 'node:cluster';
import { AggregatorRegistry, collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';
import type { Context, ParameterizedContext } from 'koa';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { StorageUnavailable, type Store } from '../storage/store.ts';

/**
 * Prometheus metrics (prom-client), served as text on GET /metrics.
 *
 * Labels only ever take values from small fixed sets (route patterns and names, grant types, results):
 * never a raw path, an id or a token.
 */

// The process metrics (CPU, memory, event loop, GC) exist once per process; each app instance
// (tests start several) has a registry of its own for everything else.
let processRegistry: Registry | undefined;
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

const KNOWN_GRANT_TYPES = new Set(['authorization_code', 'refresh_token', 'client_credentials', 'urn:ietf:params:oauth:grant-type:device_code']);
const ISSUED_TOKENS = ['access_token', 'refresh_token', 'id_token'] as const;

export class Metrics {
  // Started with the app, not at the first scrape: the process CPU counters count from when they start.
  readonly #process = processMetrics();
  readonly registry = new Registry();
  readonly requestDuration = new Histogram({
    name: 'latchkey_http_request_duration_seconds',
    help: 'HTTP request latency by route (the matched route pattern or oidc-provider route name), method and status class',
    labelNames: ['route', 'method', 'status'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly tokensIssued = new Counter({
    name: 'latchkey_tokens_issued_total',
    help: 'Tokens issued at the token endpoint, by grant type and token type',
    labelNames: ['grant_type', 'token'] as const,
    registers: [this.registry],
  });
  readonly introspections = new Counter({
    name: 'latchkey_introspections_total',
    help: 'Token introspection requests by result (active, inactive, error)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly leanAnswers = new Counter({
    name: 'latchkey_lean_path_answers_total',
    help: 'Requests answered by the lean path in front of oidc-provider (LEAN_PATH), by oidc-provider route name',
    labelNames: ['route'] as const,
    registers: [this.registry],
  });
  readonly revocations = new Counter({
    name: 'latchkey_revocations_total',
    help: 'Token revocation requests by result (ok, error)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly clientAuthFailures = new Counter({
    name: 'latchkey_client_authentication_failures_total',
    help: 'Requests refused with invalid_client, by oidc-provider route',
    labelNames: ['route'] as const,
    registers: [this.registry],
  });
  readonly refreshTokenReuse = new Counter({
    name: 'latchkey_refresh_token_reuse_total',
    help: 'Reuses of a rotated refresh token detected (the grant was revoked)',
    registers: [this.registry],
  });
  readonly backchannelLogouts = new Counter({
    name: 'latchkey_backchannel_logout_total',
    help: 'Back-channel logout notices by result (delivered, failed after every retry)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly oauthErrors = new Counter({
    name: 'latchkey_oauth_errors_total',
    help: 'OAuth error responses by oidc-provider event and error code',
    labelNames: ['event', 'error'] as const,
    registers: [this.registry],
  });
  readonly activityAppendFailures = new Counter({
    name: 'latchkey_activity_append_failures_total',
    help: 'Audit events that could not be added to the activity log (they were still logged)',
    registers: [this.registry],
  });
  readonly redisErrors = new Counter({
    name: 'latchkey_redis_errors_total',
    help: 'Redis failures: "unavailable" for operations that failed (timeout, connection), "connection" for client connection errors',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly signIns = new Counter({
    name: 'latchkey_signins_total',
    help: 'Sign-ins that finished (every factor the sign-in asked for was given)',
    registers: [this.registry],
  });
  readonly signInFailures = new Counter({
    name: 'latchkey_signin_failures_total',
    help: 'Refused passwords at sign-in and on the account page: "wrong" (wrong or unknown account), "locked" (refused during a lockout)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly secondFactorFailures = new Counter({
    name: 'latchkey_second_factor_failures_total',
    help: 'Refused second-factor codes by method (totp, recovery, enroll) and reason (invalid, replayed, expired, locked)',
    labelNames: ['method', 'reason'] as const,
    registers: [this.registry],
  });
  readonly passkeys = new Counter({
    name: 'latchkey_passkey_events_total',
    help: 'Passkeys registered, used (passwordless or second_factor) and removed, and assertions or registrations refused (failed, by reason)',
    labelNames: ['event', 'detail'] as const,
    registers: [this.registry],
  });
  readonly lockouts = new Counter({
    name: 'latchkey_lockouts_total',
    help: 'Lockouts started, by what was locked (signin: people and their IPs; client: client authentication; device: user code entry) and subject (account, ip)',
    labelNames: ['scope', 'subject'] as const,
    registers: [this.registry],
  });
  readonly deviceFlow = new Counter({
    name: 'latchkey_device_flow_total',
    help: 'The device authorization grant at /device: "approved", "denied", "wrong_code" (a user code that matches nothing)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly mail = new Counter({
    name: 'latchkey_mail_total',
    help: 'Queued mail by outcome: "sent", "retried" (a try failed, another is scheduled), "failed" (dropped after every retry), "discarded" (the no-op queued for an unknown address)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly storeDuration = new Histogram({
    name: 'latchkey_store_operation_duration_seconds',
    help: 'Latency of storage operations (one or a few Redis commands or scripts), by operation and outcome',
    labelNames: ['store', 'operation', 'outcome'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });

  #ofCluster = false;

  /**
   * In a node:cluster worker (WORKERS>1): answer the primary's requests for this worker's metrics, and
   * let `text()` report the sum over every worker, whichever worker a scrape reaches.
   */
  joinCluster(): void {
    AggregatorRegistry.setRegistries([this.#process, this.registry]);
    new AggregatorRegistry(); // installs prom-client's listener for the primary's requests
    if (!this.#ofCluster) process.on('message', answerFromPrimary);
    this.#ofCluster = true;
  }

  /** The Prometheus text exposition: the process metrics, then Latchkey's (of every worker, in a cluster). */
  async text(): Promise<string> {
    if (this.#ofCluster) return askPrimaryForMetrics();
    const parts = await Promise.all([this.#process.metrics(), this.registry.metrics()]);
    return parts.map((p) => p.trimEnd()).join('\n') + '\n';
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  // Label children bound once per label set (routes, methods and results are few): no label object, check and closure per request.
  readonly #durations = new Map<string, { observe(seconds: number): void }>();
  readonly #introspectionResults = new Map<string, { inc(): void }>();

  #durationOf(route: string, method: string, status: string) {
    const labels = `${route} ${method} ${status}`;
    let child = this.#durations.get(labels);
    if (!child) {
      if (this.#durations.size >= 1000) this.#durations.clear();
      child = this.requestDuration.labels(route, method, status);
      this.#durations.set(labels, child);
    }
    return child;
  }

  #introspectionsOf(result: string) {
    let child = this.#introspectionResults.get(result);
    if (!child) this.#introspectionResults.set(result, (child = this.introspections.labels(result)));
    return child;
  }

  /** Counts what a finished request tells about introspection and revocation. */
  observeRequest(ctx: Context, route: string, seconds: number) {
    const oidcRoute = oidcRouteOf(ctx);
    let introspection: 'active' | 'inactive' | 'error' | undefined;
    if (oidcRoute === 'introspection') {
      const body = ctx.body as { active?: unknown } | string | undefined;
      introspection = ctx.status !== 200 ? 'error' : typeof body === 'object' && body !== null ? (body.active === true ? 'active' : 'inactive') : 'active';
    }
    this.observeAnswer(route, ctx.method, ctx.status, seconds, introspection);
    if (oidcRoute === 'revocation') this.revocations.inc({ result: ctx.status === 200 ? 'ok' : 'error' });
  }

  /** `observeRequest` from the answer alone (the lean path's, which has no Koa context). */
  observeAnswer(route: string, method: string, status: number, seconds: number, introspection?: 'active' | 'inactive' | 'error') {
    this.#durationOf(route, method, statusClass(status)).observe(seconds);
    if (introspection) this.#introspectionsOf(introspection).inc();
  }

  /** Called for each token response (oidc-provider's `grant.success`, the lean path); returns what it counted (for the token_issued audit event). */
  tokensInAnswer(grantTypeAsSent: string | undefined, answer: unknown): { grantType: string; tokens: string[] } {
    const raw = grantTypeAsSent ?? 'unknown';
    const grantType = KNOWN_GRANT_TYPES.has(raw) ? raw : 'other';
    const body = answer as Record<string, unknown> | undefined;
    const tokens: string[] = [];
    for (const token of ISSUED_TOKENS) {
      if (body && typeof body === 'object' && body[token]) {
        this.tokensIssued.inc({ grant_type: grantType, token });
        tokens.push(token);
      }
    }
    return { grantType, tokens };
  }

  /** Watches a Redis client's connection errors (ioredis 'error' events). */
  watchRedisClient(client: { on(event: 'error', listener: (err: Error) => void): unknown }) {
    client.on('error', () => this.redisErrors.inc({ kind: 'connection' }));
  }
}

function statusClass(status: number): string {
  return `${Math.floor(status / 100)}xx`;
}

/** A request oidc-provider handles: its router defines `ctx.oidc` on it (our own routes have none). */
export function isProviderRequest<C extends ParameterizedContext>(ctx: C): ctx is C & KoaContextWithOIDC {
  return Object.hasOwn(ctx, 'oidc');
}

/** oidc-provider's name of the route it is handling, as its context says; undefined on our own routes. */
export function providerRouteOf(ctx: ParameterizedContext): string | undefined {
  return isProviderRequest(ctx) ? ctx.oidc?.route : undefined;
}

/** oidc-provider's name of the route a request matched, when it was one of its routes. */
export function oidcRouteOf(ctx: Context): string | undefined {
  // `ctx.oidc` is defined only by oidc-provider's own routes; reading it elsewhere gives undefined.
  const name: unknown = ctx._matchedRouteName;
  return Object.hasOwn(ctx, 'oidc') && typeof name === 'string' ? name : undefined;
}

/**
 * The route label of a request: oidc-provider's route name (`token`, `authorization`, …), our
 * router's pattern (`/interaction/:uid/login`), or `unmatched`. Never the raw path.
 */
export function routeOf(ctx: Context): string {
  const oidc = oidcRouteOf(ctx);
  if (oidc) return oidc;
  const pattern: unknown = ctx._matchedRoute;
  return typeof pattern === 'string' ? pattern : 'unmatched';
}

/**
 * The store with every operation timed, and failures counted as Redis errors. Every method the store
 * has (its class's and their parents'), so an operation added to the Store interface later is measured
 * too. Wrapped once, here, with the histogram's children prepared: a Proxy cost about 1 ms of the event
 * loop per passkey sign-in (35 store calls), more than the sign-in's pages.
 */
export function instrumentStore<S extends Store>(store: S, metrics: Metrics): S {
  const kind = store.kind;
  // Everything else (fields such as `kind`) is read from the store itself, its prototype here.
  const timed = Object.create(store) as S;
  for (const name of methodNames(store)) {
    if (name === 'constructor') continue;
    const method = Reflect.get(store, name) as (...a: unknown[]) => unknown;
    if (name === 'close') {
      Reflect.set(timed, name, method.bind(store));
      continue;
    }
    const ok = metrics.storeDuration.labels({ store: kind, operation: name, outcome: 'ok' });
    const failed = metrics.storeDuration.labels({ store: kind, operation: name, outcome: 'error' });
    Reflect.set(timed, name, (...args: unknown[]) => {
      const started = performance.now();
      const seconds = () => (performance.now() - started) / 1000;
      let result: unknown;
      try {
        result = method.apply(store, args);
      } catch (err) {
        failed.observe(seconds());
        throw err;
      }
      if (!(result instanceof Promise)) {
        ok.observe(seconds());
        return result;
      }
      // Observed beside the caller's own await, which gets the store's promise as it is.
      result.then(
        () => ok.observe(seconds()),
        (err: unknown) => {
          failed.observe(seconds());
          if (err instanceof StorageUnavailable) metrics.redisErrors.inc({ kind: 'unavailable' });
        },
      );
      return result;
    });
  }
  return timed;
}

/** The names of an object's methods, its own and inherited (not Object's). */
function methodNames(object: object): Set<string> {
  const names = new Set<string>();
  for (let o: object | null = object; o && o !== Object.prototype; o = Object.getPrototypeOf(o) as object | null) {
    for (const name of Object.getOwnPropertyNames(o)) {
      if (typeof Object.getOwnPropertyDescriptor(o, name)?.value === 'function') names.add(name);
    }
  }
  return names;
}

// ---- WORKERS>1: one answer for the whole cluster ----

const CLUSTER_METRICS = 'latchkey:cluster-metrics';
const CLUSTER_METRICS_TIMEOUT_MS = 5000;
interface ClusterMetricsMessage {
  type: typeof CLUSTER_METRICS;
  id: number;
  text?: string;
  error?: string;
}
const isClusterMetricsMessage = (m: unknown): m is ClusterMetricsMessage => typeof m === 'object' && m !== null && (m as { type?: unknown }).type === CLUSTER_METRICS;

let askCounter = 0;
/** Scrapes waiting for the primary's answer, by request id. */
const asked = new Map<number, (result: string | Error) => void>();

function askPrimaryForMetrics(): Promise<string> {
  const id = (askCounter += 1);
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => settle(new Error('the cluster primary did not send the metrics in time')), CLUSTER_METRICS_TIMEOUT_MS);
    const settle = (result: string | Error) => {
      clearTimeout(timer);
      asked.delete(id);
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    asked.set(id, settle);
    process.send!({ type: CLUSTER_METRICS, id } satisfies ClusterMetricsMessage);
  });
}

function answerFromPrimary(message: unknown) {
  if (!isClusterMetricsMessage(message)) return;
  asked.get(message.id)?.(message.text ?? new Error(message.error ?? 'no metrics'));
}

/**
 * In the node:cluster primary: answers a worker's request for the metrics of the whole cluster with
 * prom-client's AggregatorRegistry (counters and histograms summed over the workers; the process
 * metrics each by the aggregator prom-client gives it).
 */
export function serveClusterMetrics(): void {
  const aggregator = new AggregatorRegistry();
  cluster.on('message', (worker, message: unknown) => {
    if (!isClusterMetricsMessage(message) || message.text !== undefined) return;
    aggregator.clusterMetrics().then(
      (text) => worker.send({ type: CLUSTER_METRICS, id: message.id, text } satisfies ClusterMetricsMessage),
      (err: Error) => worker.send({ type: CLUSTER_METRICS, id: message.id, error: err.message } satisfies ClusterMetricsMessage),
    );
  });
}
