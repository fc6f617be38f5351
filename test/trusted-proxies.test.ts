import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { browse, CookieJar, follow, formAction, hiddenField, pkcePair } from './helpers/flow.ts';
import { startProxy, type TestProxy } from './helpers/proxy.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { createWorld, type World } from './helpers/world.ts';

/**
 * TRUST_PROXY is a number of proxy hops. Behind proxies that append to X-Forwarded-For (nginx's
 * default, AWS ALB), what a client writes there itself must not become its address: per-IP lockouts
 * and audit lines use the address the outermost trusted proxy saw.
 */
const CLIENT = '127.0.0.5';
const FORGED = ['203.0.113.7', '198.51.100.23'];

/** A sign-in with a wrong password, posted from CLIENT through `proxy` with a forged X-Forwarded-For. */
async function wrongPasswordThrough(server: TestServer, world: World, proxy: TestProxy, forged: string) {
  const jar = new CookieJar();
  const auth = new URL('/auth', server.issuer);
  auth.search = new URLSearchParams({ client_id: world.shop.clientId, redirect_uri: world.shop.redirectUri, response_type: 'code', scope: 'openid', code_challenge: pkcePair().challenge, code_challenge_method: 'S256' }).toString();
  const { page } = await follow(jar, server.issuer, await browse(jar, auth), auth);
  const action = new URL(formAction(page!.html, '/login')!, page!.url);
  const body = new URLSearchParams({ _csrf: hiddenField(page!.html, '_csrf')!, email: world.user.email, password: 'not the password' }).toString();
  const status = await new Promise<number>((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: proxy.port,
        localAddress: CLIENT,
        method: 'POST',
        path: action.pathname,
        headers: { host: action.host, cookie: jar.header(action), 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-for': forged },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      },
    );
    req.once('error', reject);
    req.end(body);
  });
  assert.equal(status, 200, 'the login page again, with its error');
}

function failedSignInAddresses(server: TestServer): unknown[] {
  return server.logs.filter((l) => l.event === 'signin_failed').map((l) => l.ip);
}

describe('the client address behind appending proxies', () => {
  let redis: TestRedis;
  let oneHop: TestServer;
  let twoHops: TestServer;
  let world: World;
  const proxies: TestProxy[] = [];

  before(async () => {
    redis = await startRedis();
    oneHop = await startServer({ redisUrl: redis.url, env: { TRUST_PROXY: '1' } });
    twoHops = await startServer({ redisUrl: redis.url, env: { TRUST_PROXY: '2' } });
    world = await createWorld(oneHop);
  });
  after(async () => {
    for (const proxy of proxies) await proxy.close();
    await twoHops?.close();
    await oneHop?.close();
    await redis?.dispose();
  });

  test('TRUST_PROXY=1: an X-Forwarded-For the client wrote does not change its address', async () => {
    const proxy = await startProxy([{ port: oneHop.port }], { appendForwardedFor: true, localAddress: '127.0.0.6' });
    proxies.push(proxy);
    for (const forged of FORGED) await wrongPasswordThrough(oneHop, world, proxy, forged);
    assert.deepEqual(failedSignInAddresses(oneHop), [CLIENT, CLIENT]);
  });

  test('TRUST_PROXY=2 behind two appending proxies: the address the outer one saw', async () => {
    const inner = await startProxy([{ port: twoHops.port }], { appendForwardedFor: true, localAddress: '127.0.0.7' });
    const outer = await startProxy([{ port: inner.port }], { appendForwardedFor: true, localAddress: '127.0.0.6' });
    proxies.push(outer, inner);
    for (const forged of FORGED) await wrongPasswordThrough(twoHops, world, outer, forged);
    assert.deepEqual(failedSignInAddresses(twoHops), [CLIENT, CLIENT]);
  });
});
