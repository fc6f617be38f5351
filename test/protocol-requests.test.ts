import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { basic, browse, CookieJar, follow, hiddenField, pkcePair, signIn } from './helpers/flow.ts';
import type { TestServer } from './helpers/server.ts';
import { REDIRECT_URI, useWorld, type World } from './helpers/world.ts';

/** What the server refuses: PKCE and response types it does not do, bad redirect URIs, malformed input. */
let server: TestServer;
let world: World;

useWorld({}, (setup) => ({ server, world } = setup));

function authUrl(params: Record<string, string | undefined>): URL {
  const { challenge } = pkcePair();
  const query: Record<string, string> = {
    client_id: world.shop.clientId,
    redirect_uri: REDIRECT_URI,
    response_type: 'code',
    scope: 'openid',
    state: 'st',
    code_challenge: challenge,
    code_challenge_method: 'S256',
  };
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined) delete query[k];
    else query[k] = v;
  }
  return new URL(`/auth?${new URLSearchParams(query)}`, server.issuer);
}

/** The error a refused authorization request carries back to the client (query or fragment). */
async function authorizationError(params: Record<string, string | undefined>) {
  const res = await fetch(authUrl(params), { redirect: 'manual' });
  assert.equal(res.status, 303, `expected a redirect back to the client, got ${res.status}`);
  const location = new URL(res.headers.get('location')!);
  assert.equal(location.origin + location.pathname, REDIRECT_URI);
  const fields = new URLSearchParams(location.hash ? location.hash.slice(1) : location.search);
  assert.equal(fields.get('code'), null);
  assert.equal(fields.get('state'), 'st');
  assert.equal(fields.get('iss'), server.issuer);
  return { error: fields.get('error'), description: fields.get('error_description') ?? '' };
}

describe('authorization requests that are refused', () => {
  it('requires PKCE of a confidential client', async () => {
    const { error, description } = await authorizationError({ code_challenge: undefined, code_challenge_method: undefined });
    assert.equal(error, 'invalid_request');
    assert.match(description, /PKCE|code_challenge/);
  });

  it('refuses code_challenge_method=plain', async () => {
    const { error } = await authorizationError({ code_challenge_method: 'plain', code_challenge: 'a'.repeat(43) });
    assert.equal(error, 'invalid_request');
  });

  it('refuses the implicit flow (response_type=token) and hybrid id_token', async () => {
    assert.equal((await authorizationError({ response_type: 'token' })).error, 'unsupported_response_type');
    assert.equal((await authorizationError({ response_type: 'code id_token', nonce: 'n' })).error, 'unsupported_response_type');
  });

  for (const [what, uri] of [
    ['a trailing slash', `${REDIRECT_URI}/`],
    ['an extra query parameter', `${REDIRECT_URI}?next=/admin`],
    ['another host', 'https://attacker.example/cb'],
    ['another port', 'http://127.0.0.1:10/cb'],
    ['another scheme', 'https://127.0.0.1:9/cb'],
    ['different case', REDIRECT_URI.replace('/cb', '/CB')],
  ] as const) {
    it(`shows an error page and never redirects for a redirect_uri with ${what}`, async () => {
      const res = await fetch(authUrl({ redirect_uri: uri }), { redirect: 'manual', headers: { accept: 'text/html' } });
      assert.equal(res.status, 400);
      assert.equal(res.headers.get('location'), null);
      assert.match(res.headers.get('content-type') ?? '', /text\/html/);
      const html = await res.text();
      assert.match(html, /redirect_uri/);
      assert.ok(!html.includes('attacker.example'), 'the page does not link to the bad target');
    });
  }

  it('shows an error page for an unknown client, without redirecting', async () => {
    const res = await fetch(authUrl({ client_id: 'no-such-client' }), { redirect: 'manual', headers: { accept: 'text/html' } });
    assert.equal(res.status, 400);
    assert.equal(res.headers.get('location'), null);
  });
});

describe('malformed input gets a 4xx, never a 5xx', () => {
  const big = 'a'.repeat(200_000);
  type Body = { type: string; body: string };
  const form = (body: string): Body => ({ type: 'application/x-www-form-urlencoded', body });

  async function post(path: string, c: Body) {
    const res = await fetch(new URL(path, server.issuer), {
      method: 'POST',
      headers: { 'content-type': c.type, authorization: basic(world.machine.clientId, world.machine.secret), accept: 'application/json' },
      body: c.body,
    });
    return { status: res.status, text: await res.text() };
  }

  const malformed: Record<string, Body[]> = {
    '/token': [
      { type: 'application/json', body: JSON.stringify({ grant_type: 'client_credentials', scope: 'api:read' }) },
      form('grant_type=client_credentials&grant_type=client_credentials&scope=api:read'),
      form('grant_type=client_cred%zzentials&scope=api:read'),
      form('grant_type=authorization_code&code=%zz&code_verifier=%E0%A4%A&redirect_uri=%'),
      form(`grant_type=client_credentials&scope=${big}`),
      form(''),
      { type: 'text/plain', body: 'grant_type=client_credentials' },
    ],
    '/token/introspection': [
      { type: 'application/json', body: JSON.stringify({ token: 'x' }) },
      form('token=a&token=b'),
      form(`token=${big}`),
      form(''),
      { type: 'text/plain', body: 'token=x' },
    ],
    '/token/revocation': [
      { type: 'application/json', body: JSON.stringify({ token: 'x' }) },
      form('token=a&token=b'),
      form(`token=${big}`),
      form(''),
      { type: 'text/plain', body: 'token=x' },
    ],
  };

  for (const [path, cases] of Object.entries(malformed)) {
    it(`POST ${path}`, async () => {
      for (const [i, c] of cases.entries()) {
        const { status, text } = await post(path, c);
        assert.ok(status >= 400 && status < 500, `case ${i} (${c.type} ${c.body.slice(0, 60)}): ${status} ${text.slice(0, 200)}`);
        assert.match(text, /"error":"invalid_request"|"error":"unsupported_grant_type"|"error":"invalid_grant"|"error":"unauthorized_client"/, `case ${i}: ${text.slice(0, 200)}`);
      }
    });
  }

  it('a token with broken percent-encoding is just an unknown token at introspection and revocation', async () => {
    // The form decoder is lenient (like browsers): `%zz` stays literal, so this is a well-formed request for a token that does not exist.
    assert.deepEqual(JSON.parse((await post('/token/introspection', form('token=%zz'))).text), { active: false });
    assert.equal((await post('/token/revocation', form('token=%zz%E0%A4%A'))).status, 200);
  });

  it('GET and POST /auth', async () => {
    const base = authUrl({}).search.slice(1);
    const gets = [
      `${base}&client_id=${world.shop.clientId}`, // a duplicate client_id: no client to redirect to
      `client_id=%zz&response_type=code&redirect_uri=${encodeURIComponent(REDIRECT_URI)}`,
      `${base}&scope=%zz`, // duplicate scope: reported to the client
      base.replace(/redirect_uri=[^&]+/, 'redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb%zz'), // broken escape in redirect_uri: error page
      base.replace('response_type=code', 'response_type=co%zzde'),
      `${base}&state=${big}`, // past Node's header limit: 431
    ];
    for (const [i, query] of gets.entries()) {
      const res = await fetch(new URL(`/auth?${query}`, server.issuer), { redirect: 'manual', headers: { accept: 'text/html' } });
      await res.body?.cancel();
      const location = res.headers.get('location');
      if (res.status === 303) {
        // An error the client can be told about goes to its registered redirect_uri, never with a code.
        const to = new URL(location!);
        assert.equal(to.origin + to.pathname, REDIRECT_URI, `GET case ${i}`);
        assert.ok(to.searchParams.get('error'), `GET case ${i}: ${location}`);
        assert.equal(to.searchParams.get('code'), null);
      } else {
        assert.ok(res.status >= 400 && res.status < 500, `GET case ${i}: ${res.status}`);
        assert.equal(location, null);
      }
    }
    // POST at the authorization endpoint: a form is answered with a 303 to the GET of the same parameters
    // (whose errors are covered above); anything else is refused, and nothing is a 5xx.
    for (const c of [{ type: 'application/json', body: JSON.stringify(Object.fromEntries(new URLSearchParams(base))) }, form(`${base}&scope=%zz`), form(`${base}&state=${big}`)]) {
      const res = await fetch(new URL('/auth', server.issuer), { method: 'POST', redirect: 'manual', headers: { 'content-type': c.type }, body: c.body });
      await res.body?.cancel();
      if (res.status === 303) {
        const to = new URL(res.headers.get('location')!, server.issuer);
        assert.equal(to.origin + to.pathname, `${server.issuer}/auth`, 'POST /auth leads to GET /auth');
        assert.equal(to.searchParams.get('client_id'), world.shop.clientId);
      } else {
        assert.ok(res.status >= 400 && res.status < 500, `POST /auth: ${res.status}`);
      }
    }
  });

  it('POST /interaction/:uid/login, and its CSRF check', async () => {
    const jar = new CookieJar();
    const start = authUrl({});
    const followed = await follow(jar, server.issuer, await browse(jar, start), start);
    const page = followed.page!;
    assert.equal(page.status, 200);
    const csrf = hiddenField(page.html, '_csrf')!;
    assert.ok(csrf);
    const login = new URL(`${page.url.pathname}/login`, server.issuer);
    const send = async (type: string, body: string) => {
      const res = await browse(jar, login, { method: 'POST', body, headers: { 'content-type': type } });
      return { status: res.status, location: res.headers.get('location'), html: await res.text() };
    };
    const email = encodeURIComponent(world.user.email);
    const password = encodeURIComponent(world.user.password);

    // CSRF: missing, wrong, duplicated, or of another interaction → 403, even with the right password.
    const otherUid = 'x'.repeat(page.url.pathname.split('/')[2]!.length);
    for (const body of [
      `email=${email}&password=${password}`,
      `_csrf=&email=${email}&password=${password}`,
      `_csrf=${csrf.slice(0, -2)}AA&email=${email}&password=${password}`,
      `_csrf=${csrf}&_csrf=${csrf}&email=${email}&password=${password}`,
      `_csrf[]=${csrf}&email=${email}&password=${password}`,
    ]) {
      const res = await send('application/x-www-form-urlencoded', body);
      assert.equal(res.status, 403, body);
      assert.equal(res.location, null);
    }
    const foreign = await browse(jar, new URL(`/interaction/${otherUid}/login`, server.issuer), { form: { _csrf: csrf, email: world.user.email, password: world.user.password } });
    assert.ok(foreign.status >= 400 && foreign.status < 500, `another interaction's uid: ${foreign.status}`);

    // Bodies the form parser does not take: 4xx.
    for (const [type, body] of [
      ['application/json', JSON.stringify({ _csrf: csrf, email: world.user.email, password: world.user.password })],
      ['text/plain', `_csrf=${csrf}&email=${email}&password=${password}`],
      ['application/x-www-form-urlencoded', `_csrf=${csrf}&email=${email}&password=${big}`],
    ]) {
      const res = await send(type!, body!);
      assert.ok(res.status >= 400 && res.status < 500, `${type} ${body!.length}: ${res.status}`);
      assert.equal(res.location, null);
    }
    // Odd fields are wrong credentials: the form again, not a sign-in and not a crash.
    for (const body of [
      `_csrf=${csrf}&email=${email}&email=${email}&password=${password}&password=${password}`,
      `_csrf=${csrf}&email=%zz&password=%E0%A4%A`,
      `_csrf=${csrf}&email[a]=1&password[b]=2`,
    ]) {
      const res = await send('application/x-www-form-urlencoded', body);
      assert.ok(res.status < 500, `${body}: ${res.status}`);
      assert.equal(res.location, null, body);
      assert.match(res.html, /Wrong email or password/);
    }
    // After all that, the real form still works.
    const ok = await send('application/x-www-form-urlencoded', `_csrf=${csrf}&email=${email}&password=${password}`);
    assert.equal(ok.status, 303);
  });
});

describe('discovery and keys', () => {
  it('advertises what is enabled, and nothing more', async () => {
    const res = await fetch(new URL('/.well-known/openid-configuration', server.issuer));
    assert.equal(res.status, 200);
    const d = (await res.json()) as Record<string, unknown>;
    assert.equal(d.issuer, server.issuer);
    assert.deepEqual(d.response_types_supported, ['code']);
    assert.deepEqual(d.code_challenge_methods_supported, ['S256']);
    assert.equal(d.authorization_response_iss_parameter_supported, true);
    assert.equal(d.introspection_endpoint, `${server.issuer}/token/introspection`);
    assert.equal(d.revocation_endpoint, `${server.issuer}/token/revocation`);
    assert.equal(d.end_session_endpoint, `${server.issuer}/session/end`);
    assert.deepEqual([...(d.grant_types_supported as string[])].sort(), ['authorization_code', 'client_credentials', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code']);
    assert.ok(!(d.token_endpoint_auth_methods_supported as string[]).includes('client_secret_jwt'));
    assert.ok((d.token_endpoint_auth_methods_supported as string[]).includes('client_secret_basic'));
    assert.equal(d.registration_endpoint, undefined);
    // The OpenID scopes and the registered APIs' scopes (test/client-interop.test.ts: --private-scopes).
    assert.deepEqual([...(d.scopes_supported as string[])].sort(), ['api:read', 'api:write', 'email', 'jwt:read', 'offline_access', 'openid', 'profile']);
  });

  it('has no development interactions: any password does not sign anyone in', async () => {
    const flow = await signIn({ issuer: server.issuer, client: world.shop, user: { email: 'nobody@example.org', password: 'anything-goes' }, scope: 'openid' });
    assert.equal(flow.code, undefined);
    assert.ok(flow.loginPage, 'the sign-in page is ours (with a CSRF field)');
    assert.match(flow.page!.html, /Wrong email or password/);
  });

  it('publishes public keys only', async () => {
    const res = await fetch(new URL('/jwks', server.issuer));
    assert.equal(res.status, 200);
    const { keys } = (await res.json()) as { keys: Record<string, unknown>[] };
    assert.ok(keys.some((k) => k.kty === 'RSA'), 'an RSA key (RS256 is the OIDC default)');
    assert.ok(keys.some((k) => k.kty === 'EC'), 'an EC key (ES256 JWT access tokens)');
    for (const k of keys) {
      for (const secret of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'oth']) assert.equal(k[secret], undefined, `${k.kid} publishes ${secret}`);
      assert.equal(typeof k.kid, 'string');
    }
  });
});
