import assert from 'node:assert/strict';
import { endpoints, signInAndRedeem } from './flow.ts';
import type { World } from './world.ts';

function claimsOf(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/**
 * Single sign-on at the protocol level, the way the scale-out tests run it against a Redis Cluster,
 * a Sentinel or several nodes: sign in through the pages (login, consent), redeem the code, check the
 * ID token and userinfo, get a second token for the API in the same session, introspect both, rotate
 * the refresh token, then reuse the old one — which must revoke the whole grant.
 */
export async function ssoRoundTrip(issuer: string, world: World): Promise<void> {
  const ep = endpoints(issuer);
  const { flow, tokens } = await signInAndRedeem({
    issuer,
    client: world.shop,
    user: world.user,
    scope: 'openid profile email offline_access',
    params: { prompt: 'consent' },
  });
  assert.ok(flow.loginPage, 'the sign-in page was shown');
  assert.ok(flow.consentPage, 'the consent page was shown');
  assert.equal(flow.callback?.searchParams.get('iss'), issuer);
  assert.equal(flow.callback?.searchParams.get('state'), flow.state);
  assert.ok(tokens.refresh_token, 'a refresh token for offline_access with prompt=consent');
  const idToken = claimsOf(tokens.id_token!);
  assert.equal(idToken.iss, issuer);
  assert.equal(idToken.sub, world.user.id);
  assert.equal(idToken.nonce, flow.nonce);
  assert.equal(idToken.email, world.user.email);

  const me = await fetch(new URL('/me', issuer), { headers: { authorization: `Bearer ${tokens.access_token}` } });
  assert.equal(me.status, 200);
  assert.equal(((await me.json()) as { email?: string }).email, world.user.email);
  const own = await ep.introspect(world.shop, tokens.access_token);
  assert.equal(own.body.active, true, JSON.stringify(own.body));
  assert.equal(own.body.sub, world.user.id);

  // Still signed in (the session is in Redis): only the new permission is asked for.
  const api = await signInAndRedeem({ issuer, client: world.shop, scope: 'openid api:read', jar: flow.jar });
  assert.equal(api.flow.loginPage, undefined, 'no second sign-in');
  assert.ok(api.flow.consentPage, 'consent for the new scope');
  const seen = await ep.introspect({ clientId: world.api.clientId, secret: world.api.secret }, api.tokens.access_token);
  assert.equal(seen.body.active, true, JSON.stringify(seen.body));
  assert.deepEqual([seen.body.aud].flat(), [world.api.uri]);
  assert.equal(seen.body.scope, 'api:read');
  assert.equal(seen.body.sub, world.user.id);

  // Rotation, then reuse of the rotated token: refused, and the grant's tokens are all dead.
  const refreshed = await ep.refresh(world.shop, tokens.refresh_token);
  assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
  const next = refreshed.body as { access_token: string; refresh_token: string };
  assert.ok(next.refresh_token && next.refresh_token !== tokens.refresh_token, 'the refresh token rotates');
  assert.equal((await ep.introspect(world.shop, next.access_token)).body.active, true);

  const reuse = await ep.refresh(world.shop, tokens.refresh_token);
  assert.equal(reuse.status, 400);
  assert.equal(reuse.body.error, 'invalid_grant');
  for (const token of [next.access_token, next.refresh_token, tokens.access_token]) {
    assert.deepEqual((await ep.introspect(world.shop, token)).body, { active: false });
  }
  assert.deepEqual((await ep.introspect({ clientId: world.api.clientId, secret: world.api.secret }, api.tokens.access_token)).body, { active: false }, 'the API token of the same grant is dead too');
  assert.equal((await ep.refresh(world.shop, next.refresh_token)).body.error, 'invalid_grant');

  // Machine tokens too.
  const machine = await ep.token(world.machine, { grant_type: 'client_credentials', scope: 'api:read' });
  assert.equal(machine.status, 200, JSON.stringify(machine.body));
  const machineSeen = await ep.introspect({ clientId: world.api.clientId, secret: world.api.secret }, machine.body.access_token as string);
  assert.equal(machineSeen.body.active, true);
  assert.equal(machineSeen.body.client_id, world.machine.clientId);
}
