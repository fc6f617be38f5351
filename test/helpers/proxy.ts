import { Agent, createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Backend {
  port: number;
  host?: string;
}

export interface TestProxy {
  /** `http://127.0.0.1:PORT`: the one public URL of the nodes behind it (their ISSUER). */
  url: string;
  port: number;
  /** Where requests go, in turn. Add to it once the nodes run (they need `url` as their issuer first). */
  backends: Backend[];
  /** How many requests each backend got, in the order of `backends`. */
  counts: number[];
  close(): Promise<void>;
}

export interface ProxyOptions {
  /** Append the address this proxy saw to `X-Forwarded-For`, as nginx's `$proxy_add_x_forwarded_for` and AWS ALB do. */
  appendForwardedFor?: boolean;
  /** The loopback address (127.0.0.0/8) this proxy connects from, so the next hop sees it. */
  localAddress?: string;
}

/**
 * A round-robin HTTP reverse proxy on 127.0.0.1 for tests of many nodes: each request goes to the
 * next backend in turn, so consecutive requests of one sign-in land on different nodes. Method, path,
 * headers (cookies, Host) and body pass through unchanged, and so does the answer (Set-Cookie,
 * Location). By default no X-Forwarded-* is added: the nodes see the proxy's Host, as behind a plain
 * TCP balancer.
 */
export async function startProxy(backends: Backend[] = [], options: ProxyOptions = {}): Promise<TestProxy> {
  const counts: number[] = [];
  const agent = new Agent({ keepAlive: true });
  let next = 0;

  const forward = (req: IncomingMessage, res: ServerResponse) => {
    if (backends.length === 0) {
      res.writeHead(502, { 'content-type': 'text/plain' }).end('proxy: no backend yet');
      return;
    }
    const index = next % backends.length;
    next = index + 1;
    counts[index] = (counts[index] ?? 0) + 1;
    const backend = backends[index]!;
    const headers = { ...req.headers };
    if (options.appendForwardedFor) {
      const seen = req.socket.remoteAddress!;
      headers['x-forwarded-for'] = headers['x-forwarded-for'] ? `${String(headers['x-forwarded-for'])}, ${seen}` : seen;
    }
    const upstream = request(
      { host: backend.host ?? '127.0.0.1', port: backend.port, method: req.method, path: req.url, headers, agent, localAddress: options.localAddress },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.rawHeaders);
        answer.pipe(res);
      },
    );
    upstream.once('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`proxy: backend ${backend.port}: ${err.message}`);
    });
    req.pipe(upstream);
  };

  const server = createServer(forward);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    backends,
    counts,
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      agent.destroy();
    },
  };
}
