import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { basic, browse, CookieJar } from './helpers/flow.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { createWorld, type World } from './helpers/world.ts';

/**
 * Every URL Latchkey publishes or checks comes from ISSUER, whatever the request's `Host`,
 * `X-Forwarded-Host`, `X-Forwarded-Proto` or request target say (host header poisoning).
 */
const POISONED = 'attacker.example';

/** One request with exactly these headers (fetch would not let a test set `Host`). */
function send(port: number, path: string, headers: Record<string, string>, init: { method?: string; body?: string } = {}) {
  return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: init.method ?? 'GET', path, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.once('error', reject);
    req.end(init.body);
  });
}

/** Every string in a JSON document that looks like a URL. */
function urlsIn(value: unknown): string[] {
  if (typeof value === 'string') return /^[a-z]+:\/\//i.test(value) ? [value] : [];
  if (Array.isArray(value)) return value.flatMap(urlsIn);
  if (value && typeof value === 'object') return Object.values(value).flatMap(urlsIn);
  return [];
}

/** An ES256 DPoP proof (RFC 9449 §4.2) for `htu`. */
function dpopProof(htu: string, htm = 'POST') {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { kty, crv, x, y } = publicKey.export({ format: 'jwk' });
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${part({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty, crv, x, y } })}.${part({ jti: randomUUID(), htm, htu, iat: Math.floor(Date.now() / 1000) })}`;
  return `${input}.${sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}

describe('URLs come from ISSUER, not from the request', () => {
  let redis: TestRedis;
  let direct: TestServer;
  let proxied: TestServer;
  let world: World;

  before(async () => {
    redis = await startRedis();
    direct = await startServer({ redisUrl: redis.url });
    // Behind a proxy that Latchkey trusts, and one that passes a client's forwarded headers on.
    proxied = await startServer({ redisUrl: redis.url, env: { TRUST_PROXY: 'true' } });
    world = await createWorld(direct);
  });
  after(async () => {
    await proxied?.close();
    await direct?.close();
    await redis?.dispose();
  });

  const poisonings: { name: string; server: () => TestServer; headers: Record<string, string> }[] = [
    { name: 'a poisoned Host', server: () => direct, headers: { host: POISONED } },
    { name: 'a poisoned X-Forwarded-Host and X-Forwarded-Proto (TRUST_PROXY)', server: () => proxied, headers: { host: 'localhost', 'x-forwarded-host': POISONED, 'x-forwarded-proto': 'https' } },
  ];

  for (const { name, server, headers } of poisonings) {
    test(`discovery with ${name} lists only the issuer's URLs, cacheable`, async () => {
      const res = await send(server().port, '/.well-known/openid-configuration', headers);
      assert.equal(res.status, 200);
      const urls = urlsIn(JSON.parse(res.body));
      assert.ok(urls.length >= 6, 'the endpoints are there');
      for (const url of urls) assert.equal(new URL(url).origin, new URL(server().issuer).origin, url);
      assert.equal(res.headers['cache-control'], 'public, max-age=300');
    });

    test(`the logout form with ${name} posts to the issuer`, async () => {
      const res = await send(server().port, `/session/end?client_id=${world.shop.clientId}`, { ...headers, accept: 'text/html' });
      assert.equal(res.status, 200);
      const actions = [...res.body.matchAll(/<form[^>]*action="([^"]+)"/g)].map((m) => m[1]!);
      assert.ok(actions.length > 0, 'a sign-out form');
      for (const action of actions) assert.ok(action.startsWith(`${server().issuer}/`), action);
      assert.ok(!res.body.includes(POISONED));
    });
  }

  test('a request target in absolute form naming another host is answered with the issuer\'s URLs', async () => {
    const res = await send(direct.port, `http://${POISONED}/.well-known/openid-configuration`, { host: POISONED });
    assert.equal(res.status, 200);
    for (const url of urlsIn(JSON.parse(res.body))) assert.equal(new URL(url).origin, new URL(direct.issuer).origin, url);
  });

  test('/jwks is cacheable', async () => {
    const res = await send(direct.port, '/jwks', { host: POISONED });
    assert.equal(res.status, 200);
    assert.equal(res.headers['cache-control'], 'public, max-age=300');
  });

  test('a DPoP proof for the poisoned host is refused; one for the issuer\'s URL is accepted', async () => {
    const token = (htu: string) =>
      send(direct.port, '/token', {
        host: POISONED,
        authorization: basic(world.machine.clientId, world.machine.secret),
        'content-type': 'application/x-www-form-urlencoded',
        dpop: dpopProof(htu),
      }, { method: 'POST', body: 'grant_type=client_credentials&scope=api%3Aread' });
    const poisoned = await token(`http://${POISONED}/token`);
    assert.equal(poisoned.status, 400);
    assert.equal(JSON.parse(poisoned.body).error, 'invalid_dpop_proof');
    const right = await token(`${direct.issuer}/token`);
    assert.equal(right.status, 200, right.body);
    assert.equal(JSON.parse(right.body).token_type, 'DPoP');
  });
});

describe('cookies follow an https ISSUER', () => {
  let redis: TestRedis;
  let server: TestServer;
  let world: World;
  before(async () => {
    redis = await startRedis();
    // TLS ends at a proxy that sends nothing forwarded: the issuer alone says the browser uses https.
    server = await startServer({ redisUrl: redis.url, env: { ISSUER: 'https://id.example' } });
    world = await createWorld(server);
  });
  after(async () => {
    await server?.close();
    await redis?.dispose();
  });

  test('the interaction cookie is Secure, and HSTS is sent, without any forwarded header', async () => {
    const jar = new CookieJar();
    const auth = new URL(`http://localhost:${server.port}/auth`);
    auth.search = new URLSearchParams({ client_id: world.shop.clientId, redirect_uri: world.shop.redirectUri, response_type: 'code', scope: 'openid', code_challenge: 'a'.repeat(43), code_challenge_method: 'S256' }).toString();
    const res = await browse(jar, auth);
    assert.equal(res.status, 303);
    assert.ok(jar.setCookieLines.length > 0);
    for (const line of jar.setCookieLines) assert.match(line, /;\s*secure/i, line);
    assert.equal(res.headers.get('strict-transport-security'), 'max-age=31536000');
  });
});
