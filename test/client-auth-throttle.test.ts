import assert from 'node:assert/strict';
import { request } from 'node:http';
import { describe, it } from 'node:test';
import { basic, pkcePair } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { useWorld, type World } from './helpers/world.ts';

/**
 * Failed client authentication is throttled per source (client id at an IP, and IP), never per client
 * id alone: someone who knows a client id cannot lock the real client out. Requests leave from chosen
 * loopback addresses (the whole of 127.0.0.0/8 is local on Linux), so the server sees two sources.
 */
let server: TestServer;
let world: World;

useWorld({}, (setup) => ({ server, world } = setup));

interface Answer {
  status: number;
  retryAfter?: string;
  body: Record<string, unknown>;
}

/** POSTs a form to the server from `from` (the client socket's local address). */
function postFrom(from: string, path: string, form: Record<string, string>, auth: string): Promise<Answer> {
  const body = new URLSearchParams(form).toString();
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: server.port,
        localAddress: from,
        method: 'POST',
        path,
        headers: { host: new URL(server.issuer).host, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', authorization: auth, 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode!, retryAfter: res.headers['retry-after'], body: text ? (JSON.parse(text) as Record<string, unknown>) : {} }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** One call of each client-authenticating endpoint, and the status that means "authenticated". */
function endpointsOf(client: { clientId: string; redirectUri: string }) {
  const par = () => ({ response_type: 'code', client_id: client.clientId, redirect_uri: client.redirectUri, scope: 'openid', code_challenge: pkcePair().challenge, code_challenge_method: 'S256' });
  return [
    // A made-up refresh token: an authenticated client hears invalid_grant.
    { name: 'token', path: '/token', form: () => ({ grant_type: 'refresh_token', refresh_token: 'made-up' }), ok: 400 },
    { name: 'introspection', path: '/token/introspection', form: () => ({ token: 'made-up' }), ok: 200 },
    { name: 'revocation', path: '/token/revocation', form: () => ({ token: 'made-up' }), ok: 200 },
    { name: 'PAR', path: '/request', form: par, ok: 201 },
    // The app lacks the device grant: an authenticated client hears unauthorized_client.
    { name: 'device authorization', path: '/device/auth', form: () => ({ scope: 'openid' }), ok: 400 },
  ];
}

describe('client authentication throttling', () => {
  it('a flood of wrong secrets from one address: that source gets 429, the right secret from another address works at every endpoint', async () => {
    const app = await world.newApp('Flooded app');
    const endpoints = endpointsOf(app);
    const guesser = '127.0.0.2';
    // Three wrong secrets at each of the five endpoints: the tenth failure locks the source.
    let last: Answer | undefined;
    for (let round = 0; round < 3; round += 1) {
      for (const e of endpoints) last = await postFrom(guesser, e.path, e.form(), basic(app.clientId, `wrong-${round}`));
    }
    assert.equal(last!.status, 429, 'the guessing source is slowed down');
    assert.ok(Number(last!.retryAfter) > 0);
    assert.equal(last!.body.error, 'invalid_client');
    assert.match(String(last!.body.error_description), /try again later/);
    const guesserRight = await postFrom(guesser, '/token/introspection', { token: 'made-up' }, basic(app.clientId, app.secret));
    assert.equal(guesserRight.status, 429, 'even with the right secret, from the locked source');

    for (const e of endpoints) {
      const res = await postFrom('127.0.0.1', e.path, e.form(), basic(app.clientId, app.secret));
      assert.equal(res.status, e.ok, `${e.name} from another address: ${JSON.stringify(res.body)}`);
    }

    const started = server.logs.filter((l) => l.event === 'lockout_started' && l.scope === 'client');
    assert.deepEqual(
      started.map((l) => [l.subject, l.clientId, l.ip]),
      [['account', app.clientId, guesser]],
      'one lockout, of the client id at the guessing address',
    );
    assert.ok(!JSON.stringify(server.logs).includes('wrong-'), 'no presented secret in a log line');
  });

  it('counts failures at the PAR endpoint (/request) like the others', async () => {
    const app = await world.newApp('PAR-guessed app');
    const [, , , par] = endpointsOf(app);
    const statuses: number[] = [];
    for (let i = 0; i < 11; i += 1) statuses.push((await postFrom('127.0.0.3', par!.path, par!.form(), basic(app.clientId, 'wrong'))).status);
    assert.deepEqual(statuses, [...Array<number>(10).fill(401), 429]);
    assert.equal((await postFrom('127.0.0.1', par!.path, par!.form(), basic(app.clientId, app.secret))).status, 201);
  });

  it('counts failures at the device authorization endpoint (/device/auth) like the others', async () => {
    const app = await world.newApp('Device-guessed app');
    const device = endpointsOf(app).find((e) => e.path === '/device/auth')!;
    const statuses: number[] = [];
    for (let i = 0; i < 11; i += 1) statuses.push((await postFrom('127.0.0.4', device.path, device.form(), basic(app.clientId, 'wrong'))).status);
    assert.deepEqual(statuses, [...Array<number>(10).fill(401), 429]);
    assert.equal((await postFrom('127.0.0.1', device.path, device.form(), basic(app.clientId, app.secret))).status, 400);
  });
});
