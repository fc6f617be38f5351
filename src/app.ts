import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { Accounts } from './accounts/accounts.ts';
import type { Config } from './config.ts';
import { interactionRoutes } from './interactions/routes.ts';
import type { Logger } from './observability/logger.ts';
import { createProvider } from './oidc/provider.ts';
import { Registry } from './oidc/registry.ts';
import { Csrf } from './security/csrf.ts';
import { securityHeaders } from './security/headers.ts';
import { RETRY_AFTER_SECONDS, StorageUnavailable, type Store } from './storage/store.ts';
import { Views } from './views.ts';

export interface AppDeps {
  config: Config;
  store: Store;
  logger: Logger;
}

/**
 * Composes the server: oidc-provider is itself a Koa app, and our middleware and routes are
 * mounted in front of its own routes (provider.use), so cookies, keys and proxy trust are shared.
 */
export async function createApp({ config, store, logger }: AppDeps) {
  const accounts = new Accounts(store);
  const registry = new Registry(store);
  const views = new Views();
  const { provider, cookieKeys } = await createProvider({ config, store, accounts, registry, views });
  const csrf = new Csrf(cookieKeys[0]!);

  provider.on('server_error', (ctx: Context, err: Error) => {
    logger.error({ err, requestId: ctx.state?.requestId, route: ctx.path }, 'server_error');
  });

  provider.use(requestContext(logger, views));
  provider.use(securityHeaders());
  provider.use(basicRoutes(store).routes());
  provider.use(interactionRoutes({ provider, accounts, store, views, csrf }).routes());

  return { app: provider, provider, accounts, registry };
}

/** Request id, one log line per request, and errors of our own routes turned into clear answers. */
function requestContext(logger: Logger, views: Views): Middleware {
  return async (ctx, next) => {
    const requestId = randomUUID();
    ctx.state.requestId = requestId;
    ctx.set('X-Request-Id', requestId);
    const started = performance.now();
    try {
      await next();
    } catch (err) {
      renderFailure(ctx, err, views, logger);
    }
    if (ctx.status === 503) ctx.set('Retry-After', String(RETRY_AFTER_SECONDS));
    logger.info(
      { requestId, method: ctx.method, path: ctx.path, status: ctx.status, ms: Math.round((performance.now() - started) * 10) / 10 },
      'request',
    );
  };
}

function renderFailure(ctx: Context, err: unknown, views: Views, logger: Logger) {
  const e = err as { status?: number; statusCode?: number; expose?: boolean; error?: string; error_description?: string; message?: string };
  let status = e.statusCode ?? e.status ?? 500;
  let out: { error: string; error_description?: string };
  if (err instanceof StorageUnavailable) {
    out = { error: err.error, error_description: err.error_description };
    logger.warn({ requestId: ctx.state.requestId }, 'storage unavailable');
  } else if (status < 500 && e.expose !== false) {
    // oidc-provider errors carry an OAuth code; Koa's ctx.throw only a message.
    out = e.error && e.error !== e.message ? { error: e.error, error_description: e.error_description } : { error: e.error ?? 'invalid_request', error_description: e.error_description ?? e.message };
    if (status === 413) out = { error: 'invalid_request', error_description: 'the request body is too large' };
  } else {
    status = 500;
    out = { error: 'server_error' };
    logger.error({ err, requestId: ctx.state.requestId }, 'unhandled error');
  }
  ctx.status = status;
  if (ctx.accepts('json', 'html') === 'html') views.renderError(ctx, out);
  else ctx.body = { ...out, ...(status >= 500 ? { request_id: ctx.state.requestId } : {}) };
}

function basicRoutes(store: Store) {
  const css = readFileSync(new URL('../views/style.css', import.meta.url));
  const router = new Router();
  router.get('/static/style.css', (ctx) => {
    ctx.type = 'text/css';
    ctx.set('Cache-Control', 'public, max-age=3600');
    ctx.body = css;
  });
  router.get('/healthz', (ctx) => {
    ctx.body = { status: 'ok' };
  });
  router.get('/readyz', async (ctx) => {
    try {
      await store.ping();
      ctx.body = { status: 'ready' };
    } catch {
      ctx.status = 503;
      ctx.body = { status: 'unavailable', reason: 'storage does not answer' };
    }
  });
  return router;
}
