import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as oauth from 'oauth4webapi';
import { signIn } from './helpers/flow.ts';
import type { TestRedis } from './helpers/redis.ts';
import type { TestServer } from './helpers/server.ts';
import { REDIRECT_URI, useWorld, type World } from './helpers/world.ts';
import { runCli, type CliRun } from './helpers/cli.ts';

/**
 * Pushed authorization requests (RFC 9126, part of FAPI 2.0): the app sends its authorization request
 * to /request with its client authentication and sends the person to /auth with the `request_uri` it got.
 * oauth4webapi is the app; the person signs in through the HTML forms. `client create --require-par`
 * makes it the only way for a client.
 */
let redis: TestRedis;
let server: TestServer;
let world: World;

useWorld((setup) => ({ redis, server, world } = setup));

const insecure = { [oauth.allowInsecureRequests]: true } as const;

function latchkey(args: string[]): Promise<CliRun> {
  return runCli(args, { env: { REDIS_URL: redis.url } });
}

async function createClient(...flags: string[]) {
  const created = await latchkey(['client', 'create', '--name', 'Bank app', '--grants', 'authorization_code', '--redirect-uri', REDIRECT_URI, '--scope', 'openid email', ...flags, '--json']);
  assert.equal(created.code, 0, created.stderr);
  return JSON.parse(created.stdout) as { client_id: string; client_secret: string };
}

/** The app's side of a PAR sign-in with oauth4webapi; the person signs in with the world's user. */
async function parSignIn(credentials: { client_id: string; client_secret: string }) {
  const issuer = new URL(server.issuer);
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, insecure));
  const client: oauth.Client = { client_id: credentials.client_id };
  const auth = oauth.ClientSecretBasic(credentials.client_secret);
  const verifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  const nonce = oauth.generateRandomNonce();
  const pushed = await oauth.pushedAuthorizationRequest(
    as,
    client,
    auth,
    new URLSearchParams({ response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid email', state, nonce, code_challenge: await oauth.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' }),
    insecure,
  );
  const { request_uri } = await oauth.processPushedAuthorizationResponse(as, client, pushed);
  // Only client_id and request_uri travel through the browser.
  const only = { redirect_uri: undefined, response_type: undefined, scope: undefined, state: undefined, nonce: undefined, code_challenge: undefined, code_challenge_method: undefined };
  const flow = await signIn({ issuer: server.issuer, client: { clientId: client.client_id, redirectUri: REDIRECT_URI }, user: world.user, scope: 'openid', params: { ...only, request_uri } });
  assert.ok(flow.callback, `did not reach the app: ${flow.page?.status} ${flow.page?.html.slice(0, 300)}`);
  const params = oauth.validateAuthResponse(as, client, flow.callback, state);
  const response = await oauth.authorizationCodeGrantRequest(as, client, auth, params, REDIRECT_URI, verifier, insecure);
  const tokens = await oauth.processAuthorizationCodeResponse(as, client, response, { expectedNonce: nonce, requireIdToken: true });
  return { as, tokens, claims: oauth.getValidatedIdTokenClaims(tokens)! };
}

describe('pushed authorization requests (PAR)', () => {
  it('client create --require-par: shown by client show; a plain GET /auth is refused (invalid_request); a PAR sign-in with oauth4webapi works end to end', async () => {
    const credentials = await createClient('--require-par');
    const shown = await latchkey(['client', 'show', credentials.client_id, '--json']);
    assert.equal((JSON.parse(shown.stdout) as Record<string, unknown>).require_pushed_authorization_requests, true);
    assert.equal(shown.stderr, '', 'show writes no audit line');

    const plain = await signIn({ issuer: server.issuer, client: { clientId: credentials.client_id, redirectUri: REDIRECT_URI }, user: world.user, scope: 'openid' });
    assert.equal(plain.callback?.searchParams.get('error'), 'invalid_request');
    assert.match(plain.callback?.searchParams.get('error_description') ?? '', /Pushed Authorization Request must be used/);
    assert.equal(plain.loginPage, undefined, 'refused before any sign-in page');

    const { as, tokens, claims } = await parSignIn(credentials);
    assert.equal(as.pushed_authorization_request_endpoint, new URL('/request', server.issuer).href);
    assert.equal(claims.sub, world.user.id);
    assert.equal(claims.email, world.user.email);
    assert.equal(typeof tokens.access_token, 'string');

    const other = await createClient();
    const otherShown = JSON.parse((await latchkey(['client', 'show', other.client_id, '--json'])).stdout) as Record<string, unknown>;
    assert.equal(otherShown.require_pushed_authorization_requests, false);
  });

  it('--require-par without the authorization_code grant is a clear error (exit 2)', async () => {
    const bad = await latchkey(['client', 'create', '--name', 'Job', '--grants', 'client_credentials', '--scope', 'api:read', '--require-par']);
    assert.equal(bad.code, 2);
    assert.equal(bad.stdout, '');
    assert.match(bad.stderr, /^latchkey: --require-par needs the authorization_code grant\n$/);
  });
});
