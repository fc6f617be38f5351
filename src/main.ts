import cluster from 'node:cluster';
import { ConfigError, loadConfig, type Config } from './config.ts';
import { chooseLogFormat, createLogger } from './observability/logger.ts';
import { serveClusterMetrics } from './observability/metrics.ts';
import { serve } from './serve.ts';

/**
 * Process entry: configuration, then either one serving process (WORKERS=1) or a node:cluster
 * primary that runs WORKERS serving processes on one port, restarts one that dies, and passes
 * SIGTERM on so that each drains its requests before the primary exits.
 */
let config: Config;
try {
  config = loadConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  for (const line of err.problems) process.stderr.write(`latchkey: configuration: ${line}\n`);
  process.exit(1);
}

if (config.WORKERS > 1 && cluster.isPrimary) supervise(config);
else await serve(config);

function supervise({ WORKERS, LOG_LEVEL, LOG_FORMAT, NODE_ENV }: Config) {
  const logger = createLogger({ level: LOG_LEVEL, format: chooseLogFormat(LOG_FORMAT, NODE_ENV, process.stdout.isTTY) });
  let stopping = false;
  const start = () => cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        logger.info('all workers stopped');
        // The destination is asynchronous: exit once the line is written, not while it is in flight.
        logger.flush(() => process.exit(0));
      }
      return;
    }
    logger.error({ worker: worker.id, code, signal }, 'a worker died: starting another');
    setTimeout(start, 500).unref();
  });
  // /metrics, whichever worker answers, reports the sum over all of them (the primary gathers it).
  serveClusterMetrics();
  for (let i = 0; i < WORKERS; i += 1) start();
  logger.info({ workers: WORKERS }, `started ${WORKERS} workers`);
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: asking every worker to drain');
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill(signal);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
