import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import express from 'express';
import * as oidc from 'openid-client';
import { validateClientMetadata } from '../../src/oidc/client-metadata.ts';
import type { TestServer } from '../helpers/server.ts';
import { useWorld, type World } from '../helpers/world.ts';
import { serveRelyingParty, visitAndSignIn } from './rp.ts';

/**
 * docs/integrating-apps.md, openid-client: an Express app with openid-client 6 as its library, as
 * that page configures it (http issuer in development: allowInsecureRequests; client_secret_basic; PKCE S256;
 * who signed in from the ID token's claims, since the access token is for an API).
 */
let server: TestServer;
let world: World;
useWorld({}, (setup) => ({ server, world } = setup));

test('openid-client: code flow with PKCE; the app knows the person from the ID token while its access token is for the API', async () => {
  const rp = await serveRelyingParty(async (origin) => {
    const registered = await server.app.registry.createClient(
      { name: 'openid-client app', grants: ['authorization_code', 'refresh_token'], redirectUris: [`${origin}/cb`], scope: 'openid profile email api:read' },
      validateClientMetadata,
    );
    const config = await oidc.discovery(new URL(server.issuer), registered.clientId, undefined, oidc.ClientSecretBasic(registered.secret), {
      execute: [oidc.allowInsecureRequests], // http issuer: development only
    });
    const pending = new Map<string, { verifier: string; state: string }>();
    const sessions = new Map<string, { sub: string; email: unknown; name: unknown; scope: unknown }>();
    const app = express();
    app.get('/login', async (_req, res) => {
      const id = randomBytes(16).toString('hex');
      const verifier = oidc.randomPKCECodeVerifier();
      const state = oidc.randomState();
      pending.set(id, { verifier, state });
      res.cookie('rp', id, { httpOnly: true, sameSite: 'lax' });
      const scope = 'openid profile email api:read';
      res.redirect(oidc.buildAuthorizationUrl(config, { redirect_uri: `${origin}/cb`, scope, state, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' }).href);
    });
    app.get('/cb', async (req, res) => {
      const id = /rp=(\w+)/.exec(req.headers.cookie ?? '')?.[1] ?? '';
      const { verifier, state } = pending.get(id)!;
      const tokens = await oidc.authorizationCodeGrant(config, new URL(req.originalUrl, origin), { pkceCodeVerifier: verifier, expectedState: state });
      const claims = tokens.claims()!;
      sessions.set(id, { sub: claims.sub, email: claims.email, name: claims.name, scope: tokens.scope });
      res.redirect('/');
    });
    app.get('/', (req, res) => {
      res.json(sessions.get(/rp=(\w+)/.exec(req.headers.cookie ?? '')?.[1] ?? '') ?? null);
    });
    return app;
  });
  try {
    const visit = await visitAndSignIn(rp, '/login', { issuer: server.issuer, user: world.user });
    assert.equal(visit.authUrl.searchParams.get('code_challenge_method'), 'S256');
    assert.equal(visit.status, 200, visit.body);
    const signedIn = JSON.parse(visit.body);
    assert.deepEqual([signedIn.sub, signedIn.email, signedIn.name], [world.user.id, world.user.email, world.user.name]);
    assert.match(signedIn.scope, /api:read/, 'the access token is for the API');
  } finally {
    await rp.close();
  }
});
