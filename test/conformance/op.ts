import assert from 'node:assert/strict';
import { mock, type TestContext } from 'node:test';
import * as oc from 'openid-client';
import { signIn, type ClientCreds, type SignInOptions, type SignInResult } from '../helpers/flow.ts';

/**
 * What the conformance modules share: the relying party (openid-client, as the OpenID Foundation's
 * suite plays it: it validates every ID token it receives) and how a module records its result for
 * docs/conformance.md (reporter.ts reads the diagnostics).
 */

/** The RP of a registered client, configured from discovery like any app. */
export async function relyingParty(issuer: string, client: ClientCreds & { secret: string }, auth = oc.ClientSecretBasic(client.secret)): Promise<oc.Configuration> {
  return oc.discovery(new URL(issuer), client.clientId, undefined, auth, { execute: [oc.allowInsecureRequests] });
}

export interface Authorized {
  flow: SignInResult;
  tokens: oc.TokenEndpointResponse & oc.TokenEndpointResponseHelpers;
  claims: oc.IDToken;
}

/**
 * One authorization through the sign-in pages (flow.ts), then the code grant by the RP, which checks
 * `iss` and `state` in the response and the ID token's signature, issuer, audience, expiry and nonce.
 */
export async function authorize(rp: oc.Configuration, options: SignInOptions): Promise<Authorized> {
  const flow = await signIn(options);
  assert.ok(flow.callback, `the flow did not reach the client: ${flow.page?.status} ${flow.page?.html.slice(0, 300)}`);
  assert.equal(flow.callback.searchParams.get('error'), null, flow.callback.search);
  const nonce = options.params && 'nonce' in options.params ? options.params.nonce : flow.nonce;
  const tokens = await oc.authorizationCodeGrant(rp, flow.callback, {
    pkceCodeVerifier: flow.verifier,
    expectedState: flow.state,
    ...(nonce === undefined ? {} : { expectedNonce: nonce }),
    idTokenExpected: true,
  });
  return { flow, tokens, claims: tokens.claims()! };
}

/** Claims of a JWT, unverified (for tokens the RP already verified, or that must be refused). */
export function jwtClaims(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

export function jwtHeader(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[0]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** The note of a module in docs/conformance.md. */
export function note(t: TestContext, text: string): void {
  t.diagnostic(text);
}

export const REFUSED = 'refused as documented: ';

/** A module whose request Latchkey deliberately refuses; the test asserted the documented refusal. */
export function refusedAsDocumented(t: TestContext, why: string): void {
  t.diagnostic(`${REFUSED}${why}`);
}

/**
 * Runs `fn` with the clock `seconds` ahead (oidc-provider reads `Date`, and so do the server's
 * other clocks in this process), instead of sleeping through max_age or the suite's 30 s wait.
 */
export async function withClockAhead<T>(seconds: number, fn: () => Promise<T>): Promise<T> {
  mock.timers.enable({ apis: ['Date'], now: Date.now() + seconds * 1000 });
  try {
    return await fn();
  } finally {
    mock.timers.reset();
  }
}
