import { createServer, type Server } from 'node:http';
import { Writable } from 'node:stream';
import { createApp, type AppDeps } from '../../src/app.ts';
import { loadConfig } from '../../src/config.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { MemoryStore } from '../../src/storage/memory-store.ts';
import { describeRedis, openStore } from '../../src/storage/open.ts';
import type { Store } from '../../src/storage/store.ts';
import { freePort } from './redis.ts';
import { totpClock, useTestClock } from './totp.ts';

export interface TestServer {
  issuer: string;
  port: number;
  store: Store;
  app: Awaited<ReturnType<typeof createApp>>;
  /** Every log line the server wrote, parsed. */
  logs: Record<string, unknown>[];
  close(): Promise<void>;
}

/**
 * Latchkey in this process on a free port, as `npm start` would build it, on the given Redis (or
 * the embedded store). The issuer is http://localhost:PORT, served on 127.0.0.1 and ::1 so that a
 * browser and Node agree on `localhost` whichever address they pick.
 */
export async function startServer(options: { redisUrl?: string; store?: Store; env?: Record<string, string>; port?: number; clock?: () => number; logoutDelivery?: AppDeps['logoutDelivery']; mail?: AppDeps['mail'] } = {}): Promise<TestServer> {
  // `port`: a restart keeps the issuer URL.
  const port = options.port ?? (await freePort());
  const config = loadConfig({
    PORT: String(port),
    ISSUER: `http://localhost:${port}`,
    ...(options.redisUrl ? { REDIS_URL: options.redisUrl } : {}),
    NODE_ENV: 'test',
    // A loaded test machine can stall a Redis reply past the 1 s default: tests that are about the
    // deadline set their own.
    REDIS_TIMEOUT_MS: '5000',
    ...options.env,
  });
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line));
      done();
    },
  });
  // The production logger (with its redaction), writing into `logs`.
  const logger = createLogger({ level: 'info', format: 'json', destination: sink });
  // A Redis Cluster or Sentinel comes in `env` (a TestCluster's or TestSentinel's `env`).
  const store = options.store ?? (describeRedis(config) ? await openStore(config) : new MemoryStore());
  // TOTP codes run on the tests' clock (helpers/totp.ts), so a person can sign in many times a minute.
  // `clock`: refresh-token grace windows on a test's clock.
  const app = await createApp({ config, store, logger, totpClock: totpClock.now, ...(options.clock ? { clock: options.clock } : {}), ...(options.logoutDelivery ? { logoutDelivery: options.logoutDelivery } : {}), ...(options.mail ? { mail: options.mail } : {}) });
  useTestClock(config.ISSUER);
  // The request listener serve.ts listens with (the lean path in front of the app).
  const handler = app.handler;
  const servers: Server[] = [];
  for (const host of ['127.0.0.1', '::1']) {
    const server = createServer(handler);
    const ok = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, host, () => resolve(true));
    });
    if (ok) servers.push(server);
  }
  // METRICS_PORT in `env`: health and metrics on that port, as main.ts does.
  if (config.METRICS_PORT !== undefined) {
    const opsHandler = app.opsApp.callback();
    const ops = createServer((req, res) => void opsHandler(req, res));
    await new Promise<void>((resolve) => ops.listen(config.METRICS_PORT, '127.0.0.1', resolve));
    servers.push(ops);
  }
  return {
    issuer: config.ISSUER,
    port,
    store,
    app,
    logs,
    async close() {
      for (const s of servers) {
        s.closeAllConnections();
        await new Promise((r) => s.close(r));
      }
      await app.close();
      if (!options.store) await store.close();
    },
  };
}
