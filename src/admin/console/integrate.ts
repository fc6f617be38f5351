/** What an app's "Integrate" panel needs of a client (a clientView of src/admin/operations.ts). */
export interface IntegratedClient {
  client_id: string;
  grant_types: readonly string[];
  redirect_uris: readonly string[];
  scope: string;
  token_endpoint_auth_method?: string;
}

export interface Snippet {
  id: string;
  library: string;
  language: string;
  code: string;
}

/**
 * Ready-to-paste settings per library with the app's own values, as docs/integrating-apps.md gives them
 * (its npm ones are run against a real server in test/interop/). The secret is never written: each
 * snippet reads it from the environment. Plain text: the template escapes it.
 */
export function snippetsOf(client: IntegratedClient, issuer: string): Snippet[] {
  const method = client.token_endpoint_auth_method ?? 'client_secret_basic';
  const isPublic = method === 'none';
  const id = client.client_id;
  const redirect = client.redirect_uris[0] ?? 'https://app.example/callback';
  const scopes = (client.scope || 'openid').split(/\s+/).filter(Boolean);
  const scope = scopes.join(' ');
  const insecure = issuer.startsWith('http:');
  const q = JSON.stringify;
  const callback = new URL(redirect);
  const origin = /^https?:$/.test(callback.protocol) ? callback.origin : 'https://app.example';

  const ocAuth = isPublic ? 'client.None()' : method === 'client_secret_post' ? 'client.ClientSecretPost(process.env.CLIENT_SECRET)' : 'client.ClientSecretBasic(process.env.CLIENT_SECRET)';
  const openidClient = [
    "import * as client from 'openid-client';",
    '',
    `const config = await client.discovery(new URL(${q(issuer)}), ${q(id)}, undefined, ${ocAuth}${insecure ? ', { execute: [client.allowInsecureRequests] }' : ''});`,
    'const verifier = client.randomPKCECodeVerifier();',
    'const state = client.randomState();',
    'const url = client.buildAuthorizationUrl(config, {',
    `  redirect_uri: ${q(redirect)},`,
    `  scope: ${q(scope)},`,
    "  code_challenge: await client.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', state,",
    '});',
    '// Back at the redirect URI, with the verifier and state kept in the session:',
    'const tokens = await client.authorizationCodeGrant(config, currentUrl, { pkceCodeVerifier: verifier, expectedState: state });',
    'const claims = tokens.claims();',
  ].join('\n');

  const authJs = [
    '// auth.ts (Auth.js / next-auth 5); the redirect URI to register is {AUTH_URL}/api/auth/callback/latchkey',
    `// (this app has ${q(redirect)} registered).`,
    'export const { handlers, auth, signIn, signOut } = NextAuth({',
    '  providers: [{',
    "    id: 'latchkey', name: 'Latchkey', type: 'oidc',",
    `    issuer: ${q(issuer)},`,
    `    clientId: ${q(id)},`,
    ...(isPublic ? [] : ['    clientSecret: process.env.CLIENT_SECRET,']),
    `    client: { token_endpoint_auth_method: ${q(method)} },`,
    "    checks: ['pkce', 'state'],",
    `    authorization: { params: { scope: ${q(scope)} } },`,
    '  }],',
    '});',
  ].join('\n');

  const express = [
    "const { auth } = require('express-openid-connect');",
    '',
    `// Redirect URI: ${redirect}`,
    'app.use(auth({',
    `  issuerBaseURL: ${q(issuer)},`,
    `  baseURL: ${q(origin)},`,
    `  clientID: ${q(id)},`,
    ...(isPublic ? [] : ['  clientSecret: process.env.CLIENT_SECRET,']),
    `  clientAuthMethod: ${q(method)},`,
    '  secret: process.env.SESSION_SECRET, // encrypts its session cookie',
    `  routes: { callback: ${q(callback.pathname)} },`,
    // response_type code (its default is id_token) turns PKCE on.
    `  authorizationParams: { response_type: 'code', scope: ${q(scope)} },`,
    '}));',
  ].join('\n');

  const authlib = [
    'from authlib.integrations.flask_client import OAuth',
    'import os',
    '',
    'oauth = OAuth(app)',
    'oauth.register(',
    "    'latchkey',",
    `    client_id=${q(id)},`,
    ...(isPublic ? [] : ["    client_secret=os.environ['CLIENT_SECRET'],"]),
    `    server_metadata_url=${q(`${issuer}/.well-known/openid-configuration`)},`,
    `    client_kwargs={'scope': ${q(scope)}, 'code_challenge_method': 'S256', 'token_endpoint_auth_method': ${q(method)}},`,
    ')',
    '',
    `# In the sign-in view: return oauth.latchkey.authorize_redirect(${q(redirect)})`,
    "# At the redirect URI: token = oauth.latchkey.authorize_access_token(); claims = token['userinfo']",
    ...(insecure ? ['# Over http in development only: AUTHLIB_INSECURE_TRANSPORT=1'] : []),
  ].join('\n');

  const goOidc = [
    `provider, err := oidc.NewProvider(ctx, ${q(issuer)})`,
    'endpoint := provider.Endpoint()',
    `endpoint.AuthStyle = oauth2.${method === 'client_secret_basic' ? 'AuthStyleInHeader' : 'AuthStyleInParams'}`,
    'config := oauth2.Config{',
    `\tClientID:     ${q(id)},`,
    ...(isPublic ? [] : ['\tClientSecret: os.Getenv("CLIENT_SECRET"),']),
    '\tEndpoint:     endpoint,',
    `\tRedirectURL:  ${q(redirect)},`,
    `\tScopes:       []string{${scopes.map((s) => q(s)).join(', ')}},`,
    '}',
    'verifier := oauth2.GenerateVerifier()',
    'url := config.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))',
    '// At the redirect URI:',
    'token, err := config.Exchange(ctx, code, oauth2.VerifierOption(verifier))',
    `idToken, err := provider.Verifier(&oidc.Config{ClientID: ${q(id)}}).Verify(ctx, token.Extra("id_token").(string))`,
  ].join('\n');

  const spring = [
    'spring:',
    '  security:',
    '    oauth2:',
    '      client:',
    '        provider:',
    '          latchkey:',
    `            issuer-uri: ${q(issuer)}`,
    '        registration:',
    '          latchkey:',
    `            client-id: ${q(id)}`,
    ...(isPublic ? [] : ['            client-secret: ${CLIENT_SECRET}']),
    `            client-authentication-method: ${method}`,
    '            authorization-grant-type: authorization_code',
    `            scope: ${scopes.join(',')}`,
    `            redirect-uri: ${q(redirect)}`,
    ...(isPublic ? [] : ['# PKCE for a confidential client: an OAuth2AuthorizationRequestResolver with OAuth2AuthorizationRequestCustomizers.withPkce()']),
  ].join('\n');

  return [
    { id: 'openid-client', library: 'openid-client 6 (Node.js)', language: 'JavaScript', code: openidClient },
    { id: 'authjs', library: 'Auth.js (next-auth 5)', language: 'TypeScript', code: authJs },
    { id: 'express-openid-connect', library: 'express-openid-connect', language: 'JavaScript', code: express },
    { id: 'authlib', library: 'Authlib (Python, Flask)', language: 'Python', code: authlib },
    { id: 'go-oidc', library: 'go-oidc (Go)', language: 'Go', code: goOidc },
    { id: 'spring', library: 'Spring Security (application.yml)', language: 'YAML', code: spring },
  ];
}
