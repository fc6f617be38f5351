import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AUDIT_EVENTS } from '../src/observability/audit.ts';
import { AMR_MFA } from '../src/signin/policy.ts';
import { CookieJar, endpoints, signIn, signInAndRedeem } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { useWorld, type World } from './helpers/world.ts';

/**
 * The audit trail of real flows on a real Redis: each step's events appear once, with the ids that say
 * who and what, and never a secret. (Lockouts: mfa-flow.test.ts; the account page: account-page.test.ts;
 * the CLI: cli.test.ts; client authentication failures and refresh token reuse: observability.test.ts.)
 */
let server: TestServer;
let world: World;

useWorld({}, (setup) => ({ server, world } = setup));

type Line = Record<string, unknown>;

/** Runs `step`, then returns the audit lines it logged, by event. */
async function audited<T>(step: () => Promise<T>): Promise<{ result: T; events: Map<string, Line[]>; lines: Line[] }> {
  const from = server.logs.length;
  const result = await step();
  const lines = server.logs.slice(from).filter((l) => typeof l.event === 'string');
  const events = new Map<string, Line[]>();
  for (const l of lines) events.set(String(l.event), [...(events.get(String(l.event)) ?? []), l]);
  return { result, events, lines };
}

/** The one line of `event`; fails when there is none or more than one. */
function once(events: Map<string, Line[]>, event: string): Line {
  const lines = events.get(event) ?? [];
  assert.equal(lines.length, 1, `${event} once, got ${lines.length}: ${JSON.stringify([...events.keys()])}`);
  return lines[0]!;
}

function assertNoSecret(lines: Line[], secrets: (string | undefined)[]) {
  for (const line of lines) {
    const text = JSON.stringify(line);
    for (const s of secrets) if (s) assert.ok(!text.includes(s), `a secret in ${text}`);
  }
}

describe('audit events', () => {
  const call = () => endpoints(server.issuer);
  let tokens: { access_token: string; refresh_token?: string; id_token?: string };

  it('sign-in with TOTP, consent and the code redeemed: signin_succeeded, second_factor_succeeded, consent_granted, token_issued', async () => {
    const { result, events, lines } = await audited(() =>
      signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid profile email offline_access api:read' }),
    );
    tokens = result.tokens;
    assert.ok(result.flow.consentPage, 'the consent page was shown');
    assert.deepEqual([...events.keys()].sort(), ['consent_granted', 'second_factor_succeeded', 'signin_succeeded', 'token_issued']);

    const factor = once(events, 'second_factor_succeeded');
    assert.deepEqual({ accountId: factor.accountId, method: factor.method }, { accountId: world.user.id, method: 'totp' });
    const signedIn = once(events, 'signin_succeeded');
    assert.deepEqual(
      { accountId: signedIn.accountId, clientId: signedIn.clientId, amr: signedIn.amr, acr: signedIn.acr, level: signedIn.level },
      { accountId: world.user.id, clientId: world.shop.clientId, amr: AMR_MFA, acr: 'urn:latchkey:mfa', level: 30 },
    );
    const consent = once(events, 'consent_granted');
    assert.deepEqual(
      { accountId: consent.accountId, clientId: consent.clientId, via: consent.via, scopes: new Set(consent.scopes as string[]) },
      { accountId: world.user.id, clientId: world.shop.clientId, via: 'consent_page', scopes: new Set(['openid', 'profile', 'email', 'offline_access', 'api:read']) },
    );
    const issued = once(events, 'token_issued');
    assert.deepEqual(
      { clientId: issued.clientId, accountId: issued.accountId, grantType: issued.grantType, tokens: issued.tokens },
      { clientId: world.shop.clientId, accountId: world.user.id, grantType: 'authorization_code', tokens: ['access_token', 'refresh_token', 'id_token'] },
    );
    assert.equal(typeof issued.requestId, 'string', 'joins the request line');
    assert.equal(issued.jti, undefined);
    assertNoSecret(lines, [result.flow.code, result.flow.verifier, tokens.access_token, tokens.refresh_token, tokens.id_token, world.user.password, world.shop.secret]);
  });

  it('refresh: token_issued by the refresh_token grant', async () => {
    const { result, events, lines } = await audited(() => call().refresh(world.shop, tokens.refresh_token!));
    assert.equal(result.status, 200, JSON.stringify(result.body));
    assert.deepEqual([...events.keys()], ['token_issued']);
    const issued = once(events, 'token_issued');
    assert.deepEqual({ clientId: issued.clientId, accountId: issued.accountId, grantType: issued.grantType }, { clientId: world.shop.clientId, accountId: world.user.id, grantType: 'refresh_token' });
    assert.ok((issued.tokens as string[]).includes('access_token') && (issued.tokens as string[]).includes('refresh_token'), String(issued.tokens));
    tokens = result.body as typeof tokens;
    assertNoSecret(lines, [tokens.access_token, tokens.refresh_token, tokens.id_token]);
  });

  it('revocation: token_revoked once for the token revoked; nothing for a token that is not the caller’s or not a token', async () => {
    const other = await audited(() => call().revoke(world.other, tokens.access_token));
    assert.equal(other.result.status, 200);
    assert.equal(other.events.get('token_revoked'), undefined, 'another client’s token is not revoked, and not audited');
    const garbage = await audited(() => call().revoke(world.shop, 'not-a-token-at-all-0123456789'));
    assert.equal(garbage.events.get('token_revoked'), undefined);

    const { result, events, lines } = await audited(() => call().revoke(world.shop, tokens.refresh_token!));
    assert.equal(result.status, 200);
    assert.deepEqual([...events.keys()], ['token_revoked']);
    const revoked = once(events, 'token_revoked');
    assert.deepEqual(
      { clientId: revoked.clientId, tokenClientId: revoked.tokenClientId, accountId: revoked.accountId, tokenKind: revoked.tokenKind, grantTokensRevoked: revoked.grantTokensRevoked },
      { clientId: world.shop.clientId, tokenClientId: world.shop.clientId, accountId: world.user.id, tokenKind: 'refresh_token', grantTokensRevoked: true },
    );
    assertNoSecret(lines, [tokens.access_token, tokens.refresh_token]);
    assert.equal((await call().introspect(world.shop, tokens.access_token)).body.active, false, 'the grant’s access token went with it');
  });

  it('a JWT access token revoked: token_revoked for it alone (its jti is remembered), nothing for another client', async () => {
    const { tokens: jwt } = await signInAndRedeem({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid jwt:read', params: { resource: world.jwtApi.uri } });
    assert.equal(jwt.access_token.split('.').length, 3, 'a JWT');
    const other = await audited(() => call().revoke(world.other, jwt.access_token));
    assert.equal(other.events.get('token_revoked'), undefined, 'another client’s token is not revoked, and not audited');
    const { result, events, lines } = await audited(() => call().revoke(world.shop, jwt.access_token));
    assert.equal(result.status, 200);
    const revoked = once(events, 'token_revoked');
    assert.deepEqual(
      { clientId: revoked.clientId, tokenClientId: revoked.tokenClientId, accountId: revoked.accountId, tokenKind: revoked.tokenKind, grantTokensRevoked: revoked.grantTokensRevoked },
      { clientId: world.shop.clientId, tokenClientId: world.shop.clientId, accountId: world.user.id, tokenKind: 'access_token', grantTokensRevoked: false },
    );
    assertNoSecret(lines, [jwt.access_token]);
    assert.equal((await call().introspect(world.jwtApi, jwt.access_token)).body.active, false);
  });

  it('client credentials: token_issued without an account, then token_revoked', async () => {
    const { result, events } = await audited(() => call().token(world.machine, { grant_type: 'client_credentials', scope: 'api:read' }));
    assert.equal(result.status, 200, JSON.stringify(result.body));
    const issued = once(events, 'token_issued');
    assert.deepEqual(
      { clientId: issued.clientId, accountId: issued.accountId, grantType: issued.grantType, tokens: issued.tokens, scope: issued.scope },
      { clientId: world.machine.clientId, accountId: undefined, grantType: 'client_credentials', tokens: ['access_token'], scope: 'api:read' },
    );
    const revoke = await audited(() => call().revoke(world.machine, result.body.access_token as string));
    const revoked = once(revoke.events, 'token_revoked');
    assert.deepEqual({ clientId: revoked.clientId, tokenKind: revoked.tokenKind, grantTokensRevoked: revoked.grantTokensRevoked }, { clientId: world.machine.clientId, tokenKind: 'client_credentials', grantTokensRevoked: false });
    assertNoSecret([issued, revoked], [result.body.access_token as string, world.machine.secret]);
  });

  it('a recovery code at a first-party app: second_factor_succeeded (recovery_code) and consent_granted without asking', async () => {
    const { result, events, lines } = await audited(() =>
      signIn({ issuer: server.issuer, client: world.firstParty, user: world.user, scope: 'openid', secondFactor: { recoveryCode: world.user.recoveryCodes[1]! } }),
    );
    assert.ok(result.code, 'signed in');
    const factor = once(events, 'second_factor_succeeded');
    assert.deepEqual({ method: factor.method, recoveryCodesLeft: factor.recoveryCodesLeft }, { method: 'recovery_code', recoveryCodesLeft: 9 });
    assert.equal(once(events, 'signin_succeeded').clientId, world.firstParty.clientId);
    const consent = once(events, 'consent_granted');
    assert.deepEqual({ clientId: consent.clientId, via: consent.via }, { clientId: world.firstParty.clientId, via: 'first_party' });
    assertNoSecret(lines, [world.user.recoveryCodes[1]]);
  });

  it('consent remembered for a third-party app: consent_granted via remembered; a wrong code: second_factor_failed', async () => {
    const { events } = await audited(async () => {
      const jar = new CookieJar();
      return signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid profile', jar });
    });
    const consent = once(events, 'consent_granted');
    assert.deepEqual({ via: consent.via, scopes: new Set(consent.scopes as string[]) }, { via: 'remembered', scopes: new Set(['openid', 'profile']) });
    const wrong = await audited(() => signIn({ issuer: server.issuer, client: world.shop, user: world.user, scope: 'openid', secondFactor: { recoveryCode: 'zzzzz-zzzzz' } }));
    const failed = once(wrong.events, 'second_factor_failed');
    assert.deepEqual({ accountId: failed.accountId, method: failed.method, reason: failed.reason }, { accountId: world.user.id, method: 'recovery_code', reason: 'invalid' });
    assert.equal(wrong.events.get('signin_succeeded'), undefined);
  });

  it('every event the server logged is in the exported list', () => {
    const known = new Set<string>(AUDIT_EVENTS);
    const logged = new Set(server.logs.filter((l) => l.event !== undefined).map((l) => String(l.event)));
    for (const e of logged) assert.ok(known.has(e), `${e} is in AUDIT_EVENTS`);
  });
});
