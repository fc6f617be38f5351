import assert from 'node:assert/strict';
import { test } from 'node:test';
import express from 'express';
import { auth } from 'express-openid-connect';
import { validateClientMetadata } from '../../src/oidc/client-metadata.ts';
import type { TestServer } from '../helpers/server.ts';
import { useWorld, type World } from '../helpers/world.ts';
import { serveRelyingParty, visitAndSignIn } from './rp.ts';

/**
 * docs/integrating-apps.md, express-openid-connect: its settings as docs/integrating-apps.md gives them
 * (`response_type: 'code'`, which also turns PKCE on; offline_access for a refresh token).
 */
let server: TestServer;
let world: World;
useWorld({}, (setup) => ({ server, world } = setup));

test('express-openid-connect: code flow with PKCE signs the person in, and offline_access brings a refresh token', async () => {
  const rp = await serveRelyingParty(async (origin) => {
    const registered = await server.app.registry.createClient(
      { name: 'express-openid-connect app', grants: ['authorization_code', 'refresh_token'], redirectUris: [`${origin}/callback`], scope: 'openid profile email offline_access' },
      validateClientMetadata,
    );
    const app = express();
    app.use(
      auth({
        issuerBaseURL: server.issuer,
        baseURL: origin,
        clientID: registered.clientId,
        clientSecret: registered.secret!,
        secret: 'a session secret of at least thirty-two characters',
        authRequired: false,
        idpLogout: false,
        authorizationParams: { response_type: 'code', scope: 'openid profile email offline_access' },
      }),
    );
    app.get('/', (req, res) => {
      res.json({ user: req.oidc.user ?? null, refreshToken: Boolean(req.oidc.refreshToken) });
    });
    return app;
  });
  try {
    const visit = await visitAndSignIn(rp, '/login', { issuer: server.issuer, user: world.user });
    assert.equal(visit.authUrl.searchParams.get('response_type'), 'code');
    assert.equal(visit.authUrl.searchParams.get('code_challenge_method'), 'S256');
    assert.equal(visit.status, 200, visit.body);
    const { user, refreshToken } = JSON.parse(visit.body);
    assert.deepEqual([user?.sub, user?.email, user?.name], [world.user.id, world.user.email, world.user.name]);
    assert.equal(refreshToken, true, 'offline_access brings a refresh token');
  } finally {
    await rp.close();
  }
});
