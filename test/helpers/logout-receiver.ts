import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { freePort } from './redis.ts';

/**
 * A relying party's back-channel logout endpoint on a loopback port: collects the `logout_token`s
 * posted to it. `hang`: it reads the request and never answers (an app that is down or stuck).
 */
export async function startLogoutReceiver(behaviour: 'answer' | 'hang' = 'answer') {
  const received: string[] = [];
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      const token = new URLSearchParams(body).get('logout_token');
      if (token) received.push(token);
      if (behaviour === 'answer') res.end();
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    uri: `http://127.0.0.1:${port}/backchannel-logout`,
    received,
    /** Waits (bounded) until `count` tokens arrived: delivery is asynchronous by design. */
    async waitFor(count: number) {
      for (let i = 0; i < 250 && received.length < count; i += 1) await new Promise((r) => setTimeout(r, 20));
      assert.ok(received.length >= count, `${received.length} logout token(s) received, expected ${count}`);
      return received.slice(0, count);
    },
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

export type LogoutReceiver = Awaited<ReturnType<typeof startLogoutReceiver>>;
