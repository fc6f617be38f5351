import { Redis } from 'ioredis';
import Koa from 'koa';

/**
 * Floors: Koa 3 + ioredis doing the least a storage-backed endpoint can do.
 * GET /get: one Redis GET per request. POST /set: one `SET … EX` per request (over a fixed set of
 * 1,000 keys, so Redis memory stays flat while the benchmark measures Latchkey's).
 * Env: PORT, REDIS_URL.
 */
const redis = new Redis(process.env.REDIS_URL!);
await redis.set('bench:floor:get', JSON.stringify({ hello: 'world' }));
let n = 0;
const app = new Koa();
app.use(async (ctx) => {
  if (ctx.path === '/get') {
    ctx.body = { value: await redis.get('bench:floor:get') };
  } else if (ctx.path === '/set' && ctx.method === 'POST') {
    n = (n + 1) % 1000;
    await redis.set(`bench:floor:set:${n}`, 'value', 'EX', 60);
    ctx.body = { ok: true };
  } else {
    ctx.body = { ok: true };
  }
});
app.listen(Number(process.env.PORT), '127.0.0.1');
