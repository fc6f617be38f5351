import type { Server } from 'node:http';
import { createApp } from './app.ts';
import { ConfigError, loadConfig, type Config } from './config.ts';
import { createLogger } from './observability/logger.ts';
import { openStore } from './storage/open.ts';
import type { Store } from './storage/store.ts';

let config: Config;
try {
  config = loadConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  for (const line of err.problems) process.stderr.write(`latchkey: configuration: ${line}\n`);
  process.exit(1);
}

const logger = createLogger({ level: config.LOG_LEVEL, pretty: config.NODE_ENV === 'development' && process.stdout.isTTY && process.env.LOG_FORMAT !== 'json' });

let store: Store;
try {
  store = await openStore(config);
} catch (err) {
  logger.fatal({ err: (err as Error).message }, 'cannot reach Redis at REDIS_URL');
  process.exit(1);
}
if (store.kind === 'memory') {
  logger.warn('REDIS_URL is not set: using the embedded in-memory store (development only; nothing survives a restart, and the CLI cannot reach it)');
} else {
  logger.info('using Redis at REDIS_URL');
}

const { app } = await createApp({ config, store, logger });
const server: Server = app.listen(config.PORT, config.HOST, () => {
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.PORT;
  logger.info({ issuer: config.ISSUER, port }, `Latchkey is listening; discovery at ${config.ISSUER}/.well-known/openid-configuration`);
});
server.keepAliveTimeout = 65_000;

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'shutting down: draining requests');
  const deadline = setTimeout(() => {
    logger.warn('requests did not finish in 10 s; closing anyway');
    server.closeAllConnections();
  }, 10_000).unref();
  server.close(async () => {
    clearTimeout(deadline);
    await store.close();
    logger.info('stopped');
    process.exit(0);
  });
  server.closeIdleConnections();
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
