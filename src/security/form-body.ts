import { bodyParser } from '@koa/bodyparser';
import type { Middleware } from 'koa';

/**
 * The body of our HTML forms (urlencoded, 16 kB unless `limit` says otherwise). A body that cannot be decoded (a `Content-Encoding`
 * that does not match it, a truncated gzip stream) is the client's fault: 400, never a 500 with a stack.
 */
export function formBody(limit = '16kb'): Middleware {
  const parse = bodyParser({ enableTypes: ['form'], formLimit: limit, encoding: 'utf-8' });
  return async (ctx, next) => {
    // The parser runs on its own, so that errors of the routes behind it are not taken for its own.
    try {
      await parse(ctx, async () => {});
    } catch (err) {
      const status = (err as { status?: number }).status;
      if (status !== undefined && status < 500) throw err;
      ctx.throw(400, 'the request body could not be decoded');
    }
    await next();
  };
}
