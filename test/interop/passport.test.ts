import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import express from 'express';
import passport from 'passport';
import { Strategy } from 'passport-openidconnect';
import { validateClientMetadata } from '../../src/oidc/client-metadata.ts';
import type { TestServer } from '../helpers/server.ts';
import { useWorld, type World } from '../helpers/world.ts';
import { serveRelyingParty, visitAndSignIn } from './rp.ts';

/**
 * docs/integrating-apps.md, passport-openidconnect 0.1: no PKCE, so its client is created with
 * `--pkce optional` (and `--secret-in body`, where it puts the secret); the strategy sends a nonce.
 */
let server: TestServer;
let world: World;
useWorld({}, (setup) => ({ server, world } = setup));

test('passport-openidconnect: a --pkce optional client signs the person in with a nonce and no PKCE', async () => {
  const rp = await serveRelyingParty(async (origin) => {
    const registered = await server.app.registry.createClient(
      { name: 'passport app', grants: ['authorization_code'], redirectUris: [`${origin}/cb`], scope: 'openid profile email', pkce: 'optional', secretIn: 'body' },
      validateClientMetadata,
    );
    const strategy = new Strategy(
      {
        issuer: server.issuer,
        authorizationURL: `${server.issuer}/auth`,
        tokenURL: `${server.issuer}/token`,
        userInfoURL: `${server.issuer}/me`,
        clientID: registered.clientId,
        clientSecret: registered.secret!,
        callbackURL: `${origin}/cb`,
        scope: ['profile', 'email'],
        nonce: true,
      },
      (_issuer: string, profile: unknown, done: (err: unknown, user?: unknown) => void) => done(null, profile),
    );
    const auth = new passport.Passport();
    auth.use('oidc', strategy as never);
    // The strategy keeps its state and nonce in req.session: a minimal in-memory session.
    const sessions = new Map<string, Record<string, unknown>>();
    const app = express();
    app.use((req, res, next) => {
      let id = /sid=(\w+)/.exec(req.headers.cookie ?? '')?.[1];
      if (!id || !sessions.has(id)) {
        id = randomBytes(16).toString('hex');
        sessions.set(id, {});
        res.cookie('sid', id, { httpOnly: true, sameSite: 'lax' });
      }
      (req as unknown as { session: Record<string, unknown> }).session = sessions.get(id)!;
      next();
    });
    app.use(auth.initialize());
    app.get('/login', auth.authenticate('oidc', { session: false }));
    app.get('/cb', auth.authenticate('oidc', { session: false, failWithError: true }), (req, res) => {
      (req as unknown as { session: Record<string, unknown> }).session.user = (req as unknown as { user: unknown }).user;
      res.redirect('/');
    });
    app.get('/', (req, res) => {
      res.json((req as unknown as { session: Record<string, unknown> }).session.user ?? null);
    });
    return app;
  });
  try {
    const visit = await visitAndSignIn(rp, '/login', { issuer: server.issuer, user: world.user });
    assert.equal(visit.authUrl.searchParams.get('code_challenge'), null, 'the library sends no PKCE');
    assert.ok(visit.authUrl.searchParams.get('nonce'));
    assert.equal(visit.status, 200, visit.body);
    const profile = JSON.parse(visit.body);
    assert.equal(profile.id, world.user.id);
    assert.equal(profile.displayName, world.user.name);
    assert.equal(profile.emails?.[0]?.value, world.user.email);
  } finally {
    await rp.close();
  }
});
