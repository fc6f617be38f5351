import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import compose from 'koa-compose';
import type { Middleware } from 'koa';
import { createApp } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';
import { createLogger } from '../src/observability/logger.ts';
import { MemoryStore } from '../src/storage/memory-store.ts';

/**
 * The CPU the edge costs a request on its way to oidc-provider's routes: the middleware in front of
 * oidc-provider (the edge table as installed), then a stand-in for oidc-provider's router that answers
 * 400 at once, in process, with no socket and no storage. CPU time of this process, per request:
 *   node bench/edge.ts [--requests 20000] [--rounds 5]
 */
const { values } = parseArgs({ options: { requests: { type: 'string', default: '20000' }, rounds: { type: 'string', default: '5' } } });
const requests = Number(values.requests);
const rounds = Number(values.rounds);

const config = loadConfig({ PORT: '3999', ISSUER: 'http://localhost:3999', NODE_ENV: 'test' });
const logger = createLogger({ level: 'info', format: 'json', destination: new Writable({ write: (_c, _e, done) => done() }) });
const app = await createApp({ config, store: new MemoryStore(), logger });
const stack = (app.provider as unknown as { middleware: Middleware[] }).middleware;
// Everything in front of oidc-provider's own routes (the last entry of the stack).
const edge = compose(stack.slice(0, -1));
const provider: Middleware = async (ctx) => {
  ctx.status = 400;
  ctx.body = { error: 'invalid_request' };
};
const run = compose([edge, provider]);

async function once(method: string, path: string) {
  const req = new IncomingMessage(new Socket());
  req.method = method;
  req.url = path;
  req.headers = { host: 'localhost:3999', accept: 'application/json', 'content-type': 'application/x-www-form-urlencoded' };
  const res = new ServerResponse(req);
  const ctx = app.provider.createContext(req, res);
  await run(ctx, async () => {});
}

const paths: [string, string][] = [['POST', '/token'], ['POST', '/token/introspection'], ['GET', '/account'], ['GET', '/unknown']];
for (const [method, path] of paths) {
  for (let i = 0; i < 2000; i += 1) await once(method, path); // warm up
  const perRequest: number[] = [];
  for (let r = 0; r < rounds; r += 1) {
    const before = process.cpuUsage();
    for (let i = 0; i < requests; i += 1) await once(method, path);
    const used = process.cpuUsage(before);
    perRequest.push((used.user + used.system) / requests);
  }
  perRequest.sort((a, b) => a - b);
  console.log(`${method} ${path}: ${perRequest[Math.floor(rounds / 2)]!.toFixed(2)} µs CPU per request (median of ${rounds}; min ${perRequest[0]!.toFixed(2)})`);
}
await app.close();
process.exit(0);
