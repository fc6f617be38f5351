import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as oauth from 'oauth4webapi';
import type { Browser } from 'playwright-core';
import { authorize, launchBrowser, newContext, startFakeApp, watchProblems } from '../helpers/browser.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startServer, type TestServer } from '../helpers/server.ts';

/**
 * DPoP (RFC 9449) end to end: a public client (a SPA or a native app) signs in a person in Chromium,
 * and oauth4webapi binds the tokens to its key pair.
 */
const EMAIL = 'grace@example.com';
const PASSWORD = 'a long enough passphrase';
const insecure = { [oauth.allowInsecureRequests]: true } as const;

/** Runs a request once more when the server asks for a (fresh) DPoP nonce; the handle keeps the nonce. */
async function withNonceRetry<T>(attempt: () => Promise<T>): Promise<T> {
  try {
    return await attempt();
  } catch (err) {
    if (oauth.isDPoPNonceError(err)) return attempt();
    throw err;
  }
}

describe('DPoP-bound tokens for a public client', () => {
  let redis: TestRedis;
  let server: TestServer;
  let browser: Browser;
  let fakeApp: Awaited<ReturnType<typeof startFakeApp>>;
  let as: oauth.AuthorizationServer;
  let client: oauth.Client;
  let redirectUri: string;
  let sub: string;
  let key: CryptoKeyPair;
  let otherKey: CryptoKeyPair;
  let problems: string[];
  const auth = oauth.None();

  before(async () => {
    redis = await startRedis();
    server = await startServer({ redisUrl: redis.url });
    fakeApp = await startFakeApp();
    redirectUri = `${fakeApp.origin}/cb`;
    const registered = await server.app.registry.createClient(
      { name: 'Pocket Notes', public: true, grants: ['authorization_code', 'refresh_token'], redirectUris: [redirectUri], scope: 'openid email offline_access' },
      async () => {},
    );
    assert.equal(registered.secret, undefined);
    client = { client_id: registered.clientId, token_endpoint_auth_method: 'none' };
    sub = (await server.app.accounts.create({ email: EMAIL, password: PASSWORD })).id;

    const issuer = new URL(server.issuer);
    as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, insecure));
    assert.ok(as.dpop_signing_alg_values_supported?.includes('ES256'));
    [key, otherKey] = await Promise.all([oauth.generateKeyPair('ES256'), oauth.generateKeyPair('ES256')]);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await fakeApp?.close();
    await redis?.dispose();
  });

  let accessToken: string;
  let refreshToken: string;

  test('code + PKCE with a DPoP proof gives DPoP-bound tokens', async () => {
    const context = await newContext(browser);
    problems = watchProblems(context);
    const page = await context.newPage();
    const DPoP = oauth.DPoP(client, key);
    const verifier = oauth.generateRandomCodeVerifier();
    const state = oauth.generateRandomState();
    const nonce = oauth.generateRandomNonce();
    const url = new URL(as.authorization_endpoint!);
    url.search = new URLSearchParams({
      client_id: client.client_id,
      redirect_uri: redirectUri,
      response_type: 'code',
      scope: 'openid email offline_access',
      prompt: 'consent',
      state,
      nonce,
      code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      // The code itself is bound to the key too (RFC 9449 §10).
      dpop_jkt: await DPoP.calculateThumbprint(),
    }).toString();
    const callback = await authorize(page, url, { redirectUri, email: EMAIL, password: PASSWORD });
    await context.close();
    assert.deepEqual(problems, []);

    const params = oauth.validateAuthResponse(as, client, callback, state);
    const tokens = await withNonceRetry(async () =>
      oauth.processAuthorizationCodeResponse(
        as,
        client,
        await oauth.authorizationCodeGrantRequest(as, client, auth, params, redirectUri, verifier, { DPoP, ...insecure }),
        { expectedNonce: nonce, requireIdToken: true },
      ),
    );
    assert.equal(tokens.token_type, 'dpop');
    assert.ok(tokens.refresh_token);
    assert.equal(oauth.getValidatedIdTokenClaims(tokens)?.sub, sub);
    accessToken = tokens.access_token;
    refreshToken = tokens.refresh_token;
  });

  test('userinfo needs a proof from the bound key', async () => {
    // Presented as a bearer token, without a proof: the token is refused (RFC 9449 §7.2).
    const bearer = await fetch(as.userinfo_endpoint!, { headers: { authorization: `Bearer ${accessToken}` } });
    assert.equal(bearer.status, 401, 'Bearer without a proof');
    assert.match(bearer.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
    await bearer.body?.cancel();
    // The DPoP scheme without its DPoP header is a malformed request: oidc-provider answers 400 invalid_request (RFC 6750 §3.1).
    const noProof = await fetch(as.userinfo_endpoint!, { headers: { authorization: `DPoP ${accessToken}` } });
    assert.equal(noProof.status, 400, 'DPoP scheme without a proof');
    assert.match(noProof.headers.get('www-authenticate') ?? '', /error="invalid_request"/);
    await noProof.body?.cancel();

    const wrong = await withNonceRetry(() => oauth.userInfoRequest(as, client, accessToken, { DPoP: oauth.DPoP(client, otherKey), ...insecure }));
    assert.equal(wrong.status, 401, 'a proof from another key');
    assert.match(wrong.headers.get('www-authenticate') ?? '', /^DPoP .*error="invalid_(token|dpop_proof)"/);
    await wrong.body?.cancel();

    const DPoP = oauth.DPoP(client, key);
    const info = await withNonceRetry(async () =>
      oauth.processUserInfoResponse(as, client, sub, await oauth.userInfoRequest(as, client, accessToken, { DPoP, ...insecure })),
    );
    assert.equal(info.email, EMAIL);
  });

  test('the refresh token of a public client is bound to the key', async () => {
    await assert.rejects(
      withNonceRetry(async () =>
        oauth.processRefreshTokenResponse(
          as,
          client,
          await oauth.refreshTokenGrantRequest(as, client, auth, refreshToken, { DPoP: oauth.DPoP(client, otherKey), ...insecure }),
        ),
      ),
      (err: oauth.ResponseBodyError) => {
        assert.equal(err.error, 'invalid_grant');
        return true;
      },
    );

    const DPoP = oauth.DPoP(client, key);
    const refreshed = await withNonceRetry(async () =>
      oauth.processRefreshTokenResponse(as, client, await oauth.refreshTokenGrantRequest(as, client, auth, refreshToken, { DPoP, ...insecure })),
    );
    assert.equal(refreshed.token_type, 'dpop');
    assert.ok(refreshed.refresh_token);
    assert.notEqual(refreshed.refresh_token, refreshToken, 'rotated');
    accessToken = refreshed.access_token;
    refreshToken = refreshed.refresh_token;
  });

  test('introspection by the client shows the key thumbprint (cnf.jkt)', async () => {
    const jkt = await oauth.DPoP(client, key).calculateThumbprint();
    for (const token of [accessToken, refreshToken]) {
      const seen = await oauth.processIntrospectionResponse(as, client, await oauth.introspectionRequest(as, client, auth, token, insecure));
      assert.equal(seen.active, true);
      assert.equal(seen.client_id, client.client_id);
      assert.deepEqual(seen.cnf, { jkt });
    }
  });
});
