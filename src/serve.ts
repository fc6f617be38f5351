import cluster from 'node:cluster';
import { createServer, type Server } from 'node:http';
import { BootstrapRefused } from './admin/first-admin.ts';
import { createApp } from './app.ts';
import type { Config } from './config.ts';
import { audit } from './observability/audit.ts';
import { chooseLogFormat, createLogger } from './observability/logger.ts';
import { describeRedis, openStore } from './storage/open.ts';
import type { Store } from './storage/store.ts';
import { lowerThreadPoolPriority, POOL_NICE } from './thread-pool.ts';

/**
 * One serving process: storage, the app, the listener and its graceful shutdown. `main.ts` runs it
 * directly, or in each node:cluster worker when WORKERS > 1 (the workers share the port).
 */
export async function serve(config: Config): Promise<void> {
  const logger = createLogger({ level: config.LOG_LEVEL, format: chooseLogFormat(config.LOG_FORMAT, config.NODE_ENV, process.stdout.isTTY) });

  let store: Store;
  try {
    store = await openStore(config);
  } catch (err) {
    logger.fatal({ err: (err as Error).message }, `cannot reach ${describeRedis(config)}`);
    process.exit(1);
  }
  if (store.kind === 'memory') {
    logger.warn('REDIS_URL is not set: using the embedded in-memory store (development only; nothing survives a restart, and the CLI cannot reach it)');
  } else {
    logger.info(`using ${describeRedis(config)}`);
  }

  const { handler, opsApp, demo, outbox, metrics, firstAdmin, close: closeApp } = await createApp({ config, store, logger });
  logger.debug({ threads: await lowerThreadPoolPriority(), nice: POOL_NICE }, 'thread pool below the event loop');
  if (cluster.isWorker) metrics.joinCluster();
  if (config.ADMIN_BOOTSTRAP_EMAIL && config.ADMIN_BOOTSTRAP_PASSWORD_FILE) {
    try {
      await firstAdmin.bootstrap(config.ADMIN_BOOTSTRAP_EMAIL, config.ADMIN_BOOTSTRAP_PASSWORD_FILE);
    } catch (err) {
      if (!(err instanceof BootstrapRefused)) throw err;
      process.stderr.write(`latchkey: ${err.message}\n`);
      logger.fatal(`the first admin could not be created: ${err.message}`);
      logger.flush(() => process.exit(1));
      return;
    }
  }
  // One setup link per start: never in tests, and with several workers only the first one prints it.
  const setupToken = config.NODE_ENV !== 'test' && (!cluster.isWorker || cluster.worker?.id === 1) ? await firstAdmin.issueLink() : undefined;
  const server: Server = createServer(handler).listen(config.PORT, config.HOST, () => {
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : config.PORT;
    logger.info({ issuer: config.ISSUER, port }, `Latchkey is listening; discovery at ${config.ISSUER}/.well-known/openid-configuration`);
    if (demo) printDemo(demo);
    if (setupToken) printSetupLink(setupToken);
  });

  /** Plain text on stderr, as the demo password: the link creates an admin, so it never reaches a log line. */
  function printSetupLink(token: string) {
    const minutes = Math.round(firstAdmin.linkTtlSeconds / 60);
    process.stderr.write(`\n  Latchkey has no admin yet. Open ${config.ISSUER}/setup/${token} within ${minutes} minutes to create the first one.\n\n`);
  }

  /**
   * Where to go on a first run (development only). Plain text on stderr, outside the JSON log: the demo
   * password must never reach a log line, and it is shown only when this start created the account.
   */
  function printDemo({ email, password }: { email: string; password?: string }) {
    const lines = [
      '',
      `  Latchkey is running at ${config.ISSUER}`,
      `  Try it: open ${config.ISSUER}/demo and sign in as ${email}`,
      password
        ? `  with the password ${password}  (shown only now; it is not in any log)`
        : '  with the password printed when that account was created (reset it with: latchkey user set-password).',
      ...(outbox ? [`  Mail (password resets, confirmations) is not sent without SMTP_URL: read it at ${config.ISSUER}/dev/outbox`] : []),
      '  The demo app and account exist in development only (NODE_ENV=production turns them off).',
      '',
    ];
    process.stderr.write(`${lines.join('\n')}\n`);
  }
  server.keepAliveTimeout = 65_000;
  // While draining, answers tell keep-alive clients to go (a request that arrives on an open connection is still served).
  server.on('request', (_req, res) => {
    if (stopping) res.setHeader('Connection', 'close');
  });

  // METRICS_PORT: /metrics, /healthz and /readyz on a port of their own (not exposed to the world).
  let opsServer: Server | undefined;
  if (config.METRICS_PORT !== undefined) {
    const metricsPort = config.METRICS_PORT;
    opsServer = opsApp.listen(metricsPort, config.HOST, () => {
      logger.info({ port: metricsPort }, 'metrics and health endpoints are listening on METRICS_PORT');
    });
  }

  let stopping = false;
  async function shutdown(signal: string) {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: draining requests');
    const deadline = setTimeout(() => {
      logger.warn('requests did not finish in 10 s; closing anyway');
      server.closeAllConnections();
    }, 10_000).unref();
    opsServer?.close();
    opsServer?.closeAllConnections();
    // server.close() waits for every connection to end, but Node leaves a keep-alive connection open after
    // its last answer: close connections as soon as they fall idle.
    const closeIdle = setInterval(() => server.closeIdleConnections(), 100).unref();
    const stopped = async () => {
      clearTimeout(deadline);
      clearInterval(closeIdle);
      try {
        await closeApp();
        await store.close();
      } catch (err) {
        logger.warn({ err: (err as Error).message }, 'closing the storage connection failed');
      }
      logger.info('stopped');
      logger.flush(() => process.exit(0));
    };
    server.close(() => void stopped());
    server.closeIdleConnections();
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  // A failure outside any request (a timer, an event handler): logged as one JSON line with its stack, then
  // exit 1 as Node would anyway, so the supervisor restarts a process in a known state.
  for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
    process.on(event, (err: unknown) => {
      audit(logger, 'process_crashed', { err }, `${event}: exiting`);
      process.exit(1);
    });
  }
}
