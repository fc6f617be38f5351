import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MemoryStore } from '../src/storage/memory-store.ts';
import type { Store } from '../src/storage/store.ts';
import { browse, CookieJar, endpoints, follow, pkcePair, signInAndRedeem } from './helpers/flow.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { createWorld, type World } from './helpers/world.ts';

/**
 * An unexpected error inside a request (a bug, not an outage): the answer is a 500 page or an OAuth
 * `server_error` naming the request id, the log has the stack under that id, and nothing internal leaks.
 */
const INTERNAL = 'internal detail lk:{tag}:AccessToken exploded';

/** The embedded store, with one operation armed to throw an ordinary (non-availability) error once. */
function faultyStore(): { store: Store; failNext(operation: keyof Store): void } {
  const inner = new MemoryStore();
  let armed: string | undefined;
  const store = new Proxy(inner, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        if (prop === armed) {
          armed = undefined;
          return Promise.reject(new TypeError(INTERNAL));
        }
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store, failNext: (operation) => void (armed = operation) };
}

let server: TestServer;
let world: World;
let faults: ReturnType<typeof faultyStore>;

before(async () => {
  faults = faultyStore();
  server = await startServer({ store: faults.store });
  world = await createWorld(server);
});

after(async () => {
  await server?.close();
  await faults?.store.close();
});

/** The error log line of a request: it carries the stack of what went wrong. */
function loggedStack(requestId: string): string {
  const line = server.logs.find((l) => l.requestId === requestId && (l.level as number) >= 50 && typeof (l.err as { stack?: unknown })?.stack === 'string');
  assert.ok(line, `an error line with the stack for request ${requestId}`);
  return (line.err as { stack: string }).stack;
}

describe('uncaught errors in a request', () => {
  it("oidc-provider's own endpoint (introspection): 500 server_error JSON with the request id, stack in the log", async () => {
    const { tokens } = await signInAndRedeem({ issuer: server.issuer, client: world.firstParty, user: world.user, scope: 'openid api:read' });
    faults.failNext('getModel');
    const res = await endpoints(server.issuer).introspect(world.api, tokens.access_token);
    assert.equal(res.status, 500);
    const requestId = res.headers.get('x-request-id')!;
    assert.ok(requestId);
    assert.equal(res.body.error, 'server_error');
    assert.equal(res.body.request_id, requestId);
    assert.equal(res.body.active, undefined);
    assert.doesNotMatch(JSON.stringify(res.body), /internal detail|TypeError|at .*\.ts/);
    assert.match(loggedStack(requestId), /TypeError: internal detail[\s\S]*\n\s+at /);
    // And the next request is fine again.
    assert.equal((await endpoints(server.issuer).introspect(world.api, tokens.access_token)).body.active, true);
  });

  it("oidc-provider's HTML endpoint (authorization): a 500 page with the request id", async () => {
    const { challenge } = pkcePair();
    faults.failNext('get');
    const url = new URL(`/auth?${new URLSearchParams({ client_id: world.shop.clientId, redirect_uri: world.shop.redirectUri, response_type: 'code', scope: 'openid', code_challenge: challenge, code_challenge_method: 'S256' })}`, server.issuer);
    const res = await fetch(url, { headers: { accept: 'text/html' }, redirect: 'manual' });
    assert.equal(res.status, 500);
    assert.match(res.headers.get('content-type') ?? '', /text\/html/);
    const requestId = res.headers.get('x-request-id')!;
    const html = await res.text();
    assert.ok(html.includes(requestId), 'the page names the request id');
    assert.match(html, /server_error/);
    assert.doesNotMatch(html, /internal detail|TypeError/);
    assert.match(loggedStack(requestId), /internal detail/);
  });

  it('our own pages (interaction): a 500 page, or server_error JSON, with the request id', async () => {
    const jar = new CookieJar();
    const { challenge } = pkcePair();
    const url = new URL(`/auth?${new URLSearchParams({ client_id: world.shop.clientId, redirect_uri: world.shop.redirectUri, response_type: 'code', scope: 'openid', code_challenge: challenge, code_challenge_method: 'S256' })}`, server.issuer);
    const page = (await follow(jar, server.issuer, await browse(jar, url), url)).page!;
    assert.match(page.url.pathname, /^\/interaction\//);
    // Without the write id its redirect gave it, the page reads its interaction from the store.
    const stored = new URL(page.url.pathname, server.issuer);

    faults.failNext('getModel');
    const res = await browse(jar, stored);
    assert.equal(res.status, 500);
    const requestId = res.headers.get('x-request-id')!;
    const html = await res.text();
    assert.ok(html.includes(requestId));
    assert.doesNotMatch(html, /internal detail|TypeError/);
    assert.match(loggedStack(requestId), /internal detail/);

    faults.failNext('getModel');
    const json = await browse(jar, stored, { headers: { accept: 'application/json' } });
    assert.equal(json.status, 500);
    const body = (await json.json()) as Record<string, unknown>;
    assert.deepEqual(body, { error: 'server_error', request_id: json.headers.get('x-request-id') });
  });
});
