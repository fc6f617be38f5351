import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { endpoints, signIn, signInAndRedeem, type CookieJar } from './helpers/flow.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { createWorld, type World } from './helpers/world.ts';

/**
 * A copy of Redis does not take over a live session: the session cookie's value (oidc-provider's session
 * id) is stored nowhere in clear — not as a key, not in a value — and the key that signs cookies is
 * stored sealed under SECRETS_KEY, so the copy can neither name a session nor sign a cookie for one.
 */
let redis: TestRedis;
let server: TestServer;
let world: World;
let raw: Redis;

before(async () => {
  redis = await startRedis();
  // As in production: SECRETS_KEY comes from the environment, not from the storage it protects.
  server = await startServer({ redisUrl: redis.url, env: { SECRETS_KEY: randomBytes(32).toString('base64url') } });
  world = await createWorld(server);
  raw = new Redis(redis.url);
});
after(async () => {
  raw?.disconnect();
  await server?.close();
  await redis?.dispose();
});

/** The last value a Set-Cookie gave `name`. */
function cookie(jar: CookieJar, name: string): string {
  const line = jar.setCookieLines.findLast((l) => l.startsWith(`${name}=`) && !l.startsWith(`${name}=;`));
  assert.ok(line, `no ${name} cookie was set`);
  return line.slice(name.length + 1, line.indexOf(';'));
}

/** Every key in Redis with everything stored under it, as text. */
async function dump(): Promise<Map<string, string>> {
  const all = new Map<string, string>();
  let cursor = '0';
  do {
    const [next, batch] = await raw.scan(cursor, 'COUNT', 1000);
    cursor = next;
    for (const key of batch) {
      const type = await raw.type(key);
      const value =
        type === 'string' ? ((await raw.get(key)) ?? '')
        : type === 'hash' ? JSON.stringify(await raw.hgetall(key))
        : type === 'set' ? JSON.stringify(await raw.smembers(key))
        : type === 'zset' ? JSON.stringify(await raw.zrange(key, '0', '-1'))
        : type === 'list' ? JSON.stringify(await raw.lrange(key, '0', '-1'))
        : type === 'stream' ? JSON.stringify(await raw.xrange(key, '-', '+'))
        : '';
      all.set(key, value);
    }
  } while (cursor !== '0');
  return all;
}

/** keygrip's signature (what Koa puts in `<name>.sig`) of `name=value` under `key`. */
function signature(key: string, name: string, value: string): string {
  return createHmac('sha1', key).update(`${name}=${value}`).digest('base64url');
}

test('after a sign-in, no Redis key or value holds the session cookie’s value, and the session works', async () => {
  const signedIn = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid offline_access api:read' });
  // A second app in the same browser: oidc-provider reads the session by its uid as well as by the cookie.
  const second = await signIn({ issuer: server.issuer, client: world.other, scope: 'openid', jar: signedIn.flow.jar });
  assert.equal(second.loginPage, undefined, 'the session was found');
  assert.ok(second.code);
  // The browser's session cookie as it is now (oidc-provider gives the session a new id now and then).
  const sessionId = cookie(signedIn.flow.jar, '_session');
  assert.ok(sessionId.length >= 21, 'oidc-provider’s session id');

  const stored = await dump();
  assert.ok(stored.size > 10, `Redis holds ${stored.size} keys`);
  for (const [key, value] of stored) {
    assert.ok(!key.includes(sessionId), `the key ${key} names the session id`);
    assert.ok(!value.includes(sessionId), `the value of ${key} holds the session id`);
  }

  // The session still works: a silent sign-in finds it by its cookie.
  const silent = await signIn({ issuer: server.issuer, client: world.shop, scope: 'openid', jar: signedIn.flow.jar, params: { prompt: 'none' } });
  assert.ok(silent.code, 'still signed in');
  assert.equal((await endpoints(server.issuer).introspect(world.api, signedIn.tokens.access_token)).body.active, true);
});

test('nothing stored in Redis signs the session cookie: the cookie key is kept sealed', async () => {
  const signedIn = await signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid' });
  const sessionId = cookie(signedIn.jar, '_session');
  const sig = cookie(signedIn.jar, '_session.sig');
  const stored = await dump();
  assert.match(stored.get('lk:keys:cookies') ?? '', /^v1\./, 'the cookie key is stored sealed');
  for (const [key, value] of stored) {
    // Every stored string, and every part of a structured value, tried as the key.
    const candidates = [value, ...value.split(/["\s,:[\]{}]+/)].filter((c) => c.length >= 16);
    for (const candidate of candidates) assert.notEqual(signature(candidate, '_session', sessionId), sig, `the value of ${key} signs session cookies`);
  }
});
