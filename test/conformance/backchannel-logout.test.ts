import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import type * as oc from 'openid-client';
import { browse, follow, hiddenField } from '../helpers/flow.ts';
import { startLogoutReceiver, type LogoutReceiver } from '../helpers/logout-receiver.ts';
import type { TestServer } from '../helpers/server.ts';
import { POST_LOGOUT_URI, REDIRECT_URI, useWorld, type World } from '../helpers/world.ts';
import { authorize, note, relyingParty } from './op.ts';

/**
 * The suite's Back-Channel Logout plan (oidcc-backchannel-rp-initiated-logout-certification-test-plan):
 * the RP registers a `backchannel_logout_uri` (here a loopback endpoint of the test), the person signs in
 * and signs out through the end_session_endpoint, and the module checks the logout token it receives.
 */
let server: TestServer;
let world: World;
let app: { clientId: string; secret: string; redirectUri: string };
let rp: oc.Configuration;
let endpoint: LogoutReceiver;
let backchannelUri: string;

useWorld({}, async (setup) => {
  ({ server, world } = setup);
  endpoint = await startLogoutReceiver();
  backchannelUri = endpoint.uri;
  const created = await server.app.registry.createClient(
    { name: 'Conformance RP', grants: ['authorization_code'], redirectUris: [REDIRECT_URI], postLogoutRedirectUris: [POST_LOGOUT_URI], scope: 'openid', backchannelLogoutUri: backchannelUri },
    async () => {},
  );
  app = { clientId: created.clientId, secret: created.secret!, redirectUri: REDIRECT_URI };
  rp = await relyingParty(server.issuer, app);
});

after(async () => {
  await endpoint?.close();
});

describe('Back-Channel Logout (oidcc-backchannel-rp-initiated-logout-certification-test-plan)', () => {
  test('oidcc-backchannel-logout-discovery-endpoint-verification', (t) => {
    const meta = rp.serverMetadata();
    assert.equal(meta.backchannel_logout_supported, true);
    assert.equal(meta.backchannel_logout_session_supported, true);
    assert.equal(meta.end_session_endpoint, `${server.issuer}/session/end`);
    note(t, 'backchannel_logout_supported and backchannel_logout_session_supported are true: every logout token carries sid');
  });

  test('oidcc-backchannel-rp-initiated-logout', async (t) => {
    const { flow, tokens, claims } = await authorize(rp, { issuer: server.issuer, client: app, user: world.user, scope: 'openid' });
    assert.equal(typeof claims.sid, 'string', 'the ID token carries sid');
    const start = new URL(`/session/end?${new URLSearchParams({ id_token_hint: tokens.id_token!, post_logout_redirect_uri: POST_LOGOUT_URI })}`, server.issuer);
    const confirm = await follow(flow.jar, server.issuer, await browse(flow.jar, start), start);
    const action = confirm.page!.html.match(/<form[^>]*id="op.logoutForm"[^>]*action="([^"]+)"/)?.[1] ?? confirm.page!.html.match(/<form[^>]*action="([^"]+)"[^>]*id="op.logoutForm"/)?.[1];
    assert.ok(action, 'the sign-out confirmation');
    const url = new URL(action, server.issuer);
    const done = await follow(flow.jar, server.issuer, await browse(flow.jar, url, { form: { xsrf: hiddenField(confirm.page!.html, 'xsrf')!, logout: 'yes' } }), url);
    assert.equal(`${done.leftTo?.origin}${done.leftTo?.pathname}`, POST_LOGOUT_URI);

    // Delivered off the request path: wait for it, bounded.
    const [token] = await endpoint.waitFor(1);
    assert.equal(endpoint.received.length, 1, 'one logout token');
    const { payload, protectedHeader } = await jwtVerify(token!, createRemoteJWKSet(new URL('/jwks', server.issuer)), { issuer: server.issuer, audience: app.clientId, typ: 'logout+jwt' });
    assert.equal(protectedHeader.typ, 'logout+jwt');
    assert.equal(payload.sub, claims.sub);
    assert.equal(payload.sid, claims.sid);
    assert.deepEqual(payload.events, { 'http://schemas.openid.net/event/backchannel-logout': {} });
    assert.equal(payload.nonce, undefined);
    assert.equal(typeof payload.jti, 'string');
    assert.equal(typeof payload.iat, 'number');
    note(t, 'logout token posted to the backchannel_logout_uri after the sign-out answered (queued delivery), verified with jose against /jwks');
  });
});
