import assert from 'node:assert/strict';
import { createServer, type Server as HttpServer } from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { Request } from './driver.ts';
import { clientCredentialsToken, introspectionRequest, RefreshChains, newFlowStats, tokenRequest } from './flows.ts';
import { autocannonLoad, cannon, type Load } from './lib.ts';
import { startWorld, type World } from './world.ts';

/**
 * The bench's load driver (bench/driver.ts) against a small server that answers in every framing it
 * may meet, then beside autocannon against a real Latchkey: the same answers, each checked.
 *   node --test bench/driver.test.ts        (about a minute; not part of `npm test`)
 */
describe('the load driver, framing and options', () => {
  let server: HttpServer;
  let url = '';
  const big = 'x'.repeat(200_000); // several reads of the driver's 64 KiB buffer
  before(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += String(d)));
      req.on('end', () => {
        if (req.url === '/chunked') {
          res.write('{"part":');
          setTimeout(() => res.end(`${JSON.stringify(body)}}`), 2); // two chunks, two reads
        } else if (req.url === '/close') {
          res.writeHead(200, { connection: 'close' }).end('bye');
        } else if (req.url === '/big') {
          res.end(big);
        } else if (req.url === '/empty') {
          res.writeHead(204).end();
        } else if (req.url === '/silent') {
          // never answers: the timeout's business
        } else {
          res.writeHead(req.url === '/missing' ? 404 : 200, { 'content-type': 'application/json' }).end(JSON.stringify({ echo: body }));
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const address = server.address();
    url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  /** Every body seen, and a request of `path` whose body is numbered per request (as the refresh chains' are). */
  const numbered = (path: string) => {
    let n = 0;
    const bodies: string[] = [];
    const request: Request = {
      method: 'POST',
      path,
      headers: { 'content-type': 'text/plain' },
      setupRequest: (r, context) => {
        context.sent = `request ${n}`;
        n += 1;
        return { ...r, body: context.sent as string };
      },
      onResponse: (_status, body, context) => bodies.push(`${context.sent as string} → ${body}`),
    };
    return { request, bodies };
  };

  test('amount: exactly that many requests, each answer given to the request that asked (Content-Length)', async () => {
    const { request, bodies } = numbered('/echo');
    const load = await cannon(url, request, { connections: 4, amount: 200 });
    assert.deepEqual({ count: load.count, sent: load.sent, errors: load.errors, status: load.status }, { count: 200, sent: 200, errors: 0, status: { 200: 200 } });
    for (const b of bodies) assert.match(b, /^(request \d+) → \{"echo":"\1"\}$/);
    assert.equal(new Set(bodies).size, 200);
  });

  test('a chunked answer (chunks in separate reads) is read whole', async () => {
    const { request, bodies } = numbered('/chunked');
    const load = await cannon(url, request, { connections: 2, amount: 20 });
    assert.deepEqual({ count: load.count, errors: load.errors }, { count: 20, errors: 0 });
    for (const b of bodies) assert.match(b, /^(request \d+) → \{"part":"\1"\}$/);
  });

  test('answers larger than a read, 204s without a body, non-2xx counted, Connection: close reconnects', async () => {
    const seen: Record<string, number> = {};
    const cases: [string, string, (body: string) => boolean][] = [['/big', '200', (b) => b === big], ['/empty', '204', (b) => b === ''], ['/missing', '404', (b) => b.startsWith('{"echo"')], ['/close', '200', (b) => b === 'bye']];
    for (const [path, status, ok] of cases) {
      const load = await cannon(url, { method: 'GET', path, onResponse: (s, b) => (seen[`${path} ${s} ${ok(b)}`] = (seen[`${path} ${s} ${ok(b)}`] ?? 0) + 1) }, { connections: 3, amount: 30 });
      assert.deepEqual({ count: load.count, errors: load.errors, status: load.status, non2xx: load.non2xx }, { count: 30, errors: 0, status: { [status]: 30 }, non2xx: status.startsWith('2') ? 0 : 30 }, path);
      assert.equal(seen[`${path} ${status} true`], 30, path);
    }
  });

  test('an answer that never comes is an error after the timeout, and the run goes on', async () => {
    const t0 = performance.now();
    const load = await cannon(url, { method: 'GET', path: '/silent' }, { connections: 2, amount: 4, timeout: 0.5 });
    assert.deepEqual({ count: load.count, errors: load.errors }, { count: 0, errors: 4 });
    assert.ok(performance.now() - t0 < 3000);
  });

  test('a refused connection is an error, not a hang', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const address = closed.address();
    closed.close();
    const load = await cannon(`http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`, { method: 'GET', path: '/' }, { connections: 2, amount: 10 });
    assert.deepEqual({ count: load.count, errors: load.errors }, { count: 0, errors: 10 });
  });

  test('duration and rate: the run lasts its time and holds the rate, latency in ms', async () => {
    const load = await cannon(url, { method: 'GET', path: '/echo' }, { connections: 8, duration: 2, rate: 500 });
    assert.ok(load.seconds >= 2 && load.seconds < 2.5, `${load.seconds} s`);
    assert.ok(Math.abs(load.count - 1000) <= 20, `${load.count} answers at 500/s for 2 s`);
    assert.ok(load.p50 > 0 && load.p50 <= load.p99 && load.p99 < 1000, `p50 ${load.p50} p99 ${load.p99}`);
  });
});

describe('the load driver beside autocannon, against Latchkey', () => {
  let world: World;
  before(async () => {
    world = await startWorld({ baselines: false, users: 4 });
  });
  after(() => world.stop());

  const json = (body: string) => {
    try {
      return JSON.parse(body) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  };
  /** `request` with every answer held against `ok`; the wrong ones counted. */
  const checked = (request: Request, ok: (status: number, body: string) => boolean) => {
    const tally = { wrong: 0 };
    const inner = request.onResponse;
    return { tally, request: { ...request, onResponse: (s: number, b: string, c: Record<string, unknown>) => (ok(s, b) || (tally.wrong += 1), inner?.(s, b, c)) } as Request };
  };

  const rows: [string, () => Promise<Request>, (status: number, body: string) => boolean][] = [
    ['client_credentials token', async () => tokenRequest(world.latchkey), (s, b) => s === 200 && typeof json(b)?.access_token === 'string' && json(b)?.token_type === 'Bearer'],
    ['introspection', async () => introspectionRequest(world.latchkey, await Promise.all(Array.from({ length: 50 }, () => clientCredentialsToken(world.latchkey)))), (s, b) => s === 200 && json(b)?.active === true],
    [
      'refresh (rotating chains)',
      async () => {
        const chains = new RefreshChains(world.latchkey);
        await chains.topUp(16, newFlowStats());
        return chains.request();
      },
      (s, b) => s === 200 && typeof json(b)?.refresh_token === 'string',
    ],
  ];
  for (const [name, make, ok] of rows) {
    test(`${name}: both drivers get only expected answers, no errors`, async () => {
      const results: Record<string, Load & { wrong: number }> = {};
      for (const [driver, run] of [['bench/driver.ts', cannon], ['autocannon', autocannonLoad]] as const) {
        const { request, tally } = checked(await make(), ok);
        const load = await run(world.latchkey.url, request, { connections: 8, duration: 3 });
        results[driver] = { ...load, wrong: tally.wrong };
        console.log(`  ${name}, ${driver}: ${Math.round(load.count / load.seconds)}/s, p50 ${load.p50} ms, p99 ${load.p99} ms, status ${JSON.stringify(load.status)}, unexpected ${tally.wrong}, errors ${load.errors}`);
      }
      for (const [driver, r] of Object.entries(results)) {
        assert.ok(r.count > 20, `${driver}: ${r.count} answers`);
        assert.deepEqual({ wrong: r.wrong, errors: r.errors, codes: Object.keys(r.status), non2xx: r.non2xx }, { wrong: 0, errors: 0, codes: ['200'], non2xx: 0 }, driver);
        assert.ok(r.sent! - r.count <= 8, `${driver}: at most one request per connection left in flight`);
      }
    });
  }
});
