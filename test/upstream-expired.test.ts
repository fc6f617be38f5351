import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as oc from 'openid-client';
import { freePort, startRedis, type TestRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { startCompanyProvider, Traveller } from './helpers/upstream.ts';

/** An upstream ID token that expired before it reached Latchkey: Latchkey's clock runs past its 600 s life. */
const APP_CALLBACK = 'https://notes.example.com/cb';
let redis: TestRedis;
let server: TestServer;
let company: Awaited<ReturnType<typeof startCompanyProvider>>;
let ahead = 0;

before(async () => {
  redis = await startRedis();
  const port = await freePort();
  company = await startCompanyProvider({ redirectUri: `http://localhost:${port}/upstream/callback`, clientSecret: 's3cret-company' });
  server = await startServer({ redisUrl: redis.url, port, clock: () => Date.now() + ahead });
  await server.app.ops.addProvider({ kind: 'cli' }, { id: 'acme', preset: 'oidc', name: 'Acme', issuer: company.issuer, client_id: 'latchkey', client_secret: 's3cret-company', create_accounts: true, require_mfa: false });
});

after(async () => {
  await server?.close();
  await company?.close();
  await redis?.dispose();
});

test('an expired upstream ID token is refused with a page and a way back, never a 5xx', async () => {
  const client = await server.app.registry.createClient({ name: 'Notes', grants: ['authorization_code'], redirectUris: [APP_CALLBACK], scope: 'openid email', firstParty: true }, async () => {});
  const rp = await oc.discovery(new URL(server.issuer), client.clientId, undefined, oc.ClientSecretBasic(client.secret), { execute: [oc.allowInsecureRequests] });
  const url = oc.buildAuthorizationUrl(rp, { redirect_uri: APP_CALLBACK, scope: 'openid email', code_challenge: await oc.calculatePKCECodeChallenge(oc.randomPKCECodeVerifier()), code_challenge_method: 'S256', state: oc.randomState() });
  // The upstream answers; by Latchkey's clock the answer is 20 minutes late (past 600 s and any tolerance).
  const traveller = new Traveller(APP_CALLBACK, (u) => {
    if (u.pathname === '/upstream/callback') ahead = 20 * 60_000;
    return u;
  });
  const login = await traveller.go(url);
  const uid = login.page!.url.pathname.split('/')[2]!;
  company.as('emp-1', { email: 'late@acme.test', email_verified: true });
  const trip = await traveller.go(new URL(`/interaction/${uid}/upstream/acme`, server.issuer));
  for (const step of trip.chain) assert.ok(step.status < 500, `${step.url.pathname} answered ${step.status}`);
  assert.equal(trip.arrived, undefined, 'the app gets no code');
  assert.equal(trip.page?.status, 400);
  assert.match(trip.page.html, /could not be accepted \(it did not match this sign-in, or it expired\)/);
  assert.match(trip.page.html, new RegExp(`href="/interaction/${uid}"`));
  assert.equal(await server.app.accounts.findByEmail('late@acme.test'), undefined);
  assert.ok(server.logs.some((l) => l.event === 'upstream_signin_failed' && l.provider === 'acme' && l.reason === 'invalid'));
  assert.ok(!server.logs.some((l) => Number(l.level) >= 50), 'no error logged');
});
