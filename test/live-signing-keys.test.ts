import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import Provider from 'oidc-provider';
import { replaceSigningKeys } from '../src/oidc/provider-internals.ts';
import { generateKeyGeneration, type StoredSigningKey } from '../src/oidc/signing-keys.ts';

/**
 * Canary for the one oidc-provider internal that key rotation relies on (replaceSigningKeys): if an
 * upgrade moves or changes how the provider holds its keystore, these fail — /jwks, ID tokens and JWT
 * access tokens must all follow the swapped key set.
 */
const jwks = (stored: StoredSigningKey[]) => ({ keys: stored.map(({ iat: _iat, retiredUntil: _r, ...jwk }) => jwk) as never });
const kidOf = (jwt: string) => (JSON.parse(Buffer.from(jwt.split('.')[0]!, 'base64url').toString()) as { kid: string }).kid;
const byAlg = (stored: StoredSigningKey[], alg: string) => stored.find((k) => k.alg === alg)!.kid;

const API = 'https://api.example';
let provider: Provider;
let server: Server;
let issuer: string;
const first = generateKeyGeneration(Date.now() - 1000);
const second = generateKeyGeneration();

before(async () => {
  server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  provider = new Provider(issuer, {
    adapter: class NoStorage {} as never,
    jwks: jwks(first),
    clients: [{ client_id: 'job', client_secret: 'a secret', grant_types: ['client_credentials'], redirect_uris: [], response_types: [] }],
    enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256', 'EdDSA'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => API,
        getResourceServerInfo: () => ({ scope: 'read', audience: API, accessTokenTTL: 60, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } }),
      },
    },
    ttl: { ClientCredentials: 60, IdToken: 60 },
  });
  const handle = provider.callback();
  server.on('request', (req: IncomingMessage, res: ServerResponse) => void handle(req, res));
});

after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

async function published(): Promise<string[]> {
  const res = await fetch(`${issuer}/jwks`);
  assert.equal(res.status, 200);
  const body = (await res.json()) as { keys: { kid: string; d?: string }[] };
  for (const k of body.keys) assert.equal(k.d, undefined, 'public parts only');
  return body.keys.map((k) => k.kid);
}

async function signedKids() {
  const client = (await provider.Client.find('job'))!;
  const idToken = new provider.IdToken({ sub: 'someone' }, { client });
  const id = await idToken.issue({ use: 'idtoken' });
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from('job:a secret').toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'read' }),
  });
  const body = (await res.json()) as { access_token?: string };
  assert.equal(res.status, 200, JSON.stringify(body));
  return { idToken: kidOf(String(id)), accessToken: kidOf(body.access_token!) };
}

test('replaceSigningKeys: /jwks publishes the new set, and ID tokens (RS256) and JWT access tokens (ES256) sign with its first keys', async () => {
  assert.deepEqual(await published(), first.map((k) => k.kid));
  assert.deepEqual(await signedKids(), { idToken: byAlg(first, 'RS256'), accessToken: byAlg(first, 'ES256') });

  replaceSigningKeys(provider, jwks([...second, ...first]));
  assert.deepEqual(await published(), [...second, ...first].map((k) => k.kid));
  assert.deepEqual(await signedKids(), { idToken: byAlg(second, 'RS256'), accessToken: byAlg(second, 'ES256') }, 'the first keys of each algorithm sign');
});

test('replaceSigningKeys: a key oidc-provider refuses throws, and the previous set stays in use', async () => {
  const before = await published();
  const { d: _d, ...noPrivatePart } = second[0]!;
  assert.throws(() => replaceSigningKeys(provider, jwks([noPrivatePart])), /jwks\.keys\[0\]\.d/);
  assert.deepEqual(await published(), before);
});
