import { after, before } from 'node:test';
import { startRedis, type TestRedis } from './redis.ts';
import { startServer, type TestServer } from './server.ts';
import type { ClientCreds } from './flow.ts';
import { totpCodeAt } from '../../src/accounts/totp.ts';
import { totpClock, totpSecrets } from './totp.ts';

/**
 * The registrations the protocol tests share: one opaque-token API, one JWT-token API, a third-party
 * app, a first-party app, a machine client and one person. Created once per test file.
 */
export const API_URI = 'https://api.example';
export const JWT_API_URI = 'https://jwt-api.example';
export const REDIRECT_URI = 'http://127.0.0.1:9/cb';
export const POST_LOGOUT_URI = 'http://127.0.0.1:9/bye';

export interface World {
  api: { uri: string; clientId: string; secret: string };
  jwtApi: { uri: string; clientId: string; secret: string };
  /** Third party: asks for consent. */
  shop: ClientCreds & { secret: string; name: string };
  /** Another third party app, to check that clients cannot touch each other's tokens. */
  other: ClientCreds & { secret: string; name: string };
  firstParty: ClientCreds & { secret: string; name: string };
  machine: { clientId: string; secret: string };
  /** Enrolled in TOTP (MFA_POLICY=required is the default): flow.ts signs in with codes of `totpSecret`. */
  user: { email: string; password: string; name: string; id: string; totpSecret: string; recoveryCodes: string[] };
  /** Registers one more third-party app (fresh consent state). */
  newApp(name: string, scope?: string): Promise<ClientCreds & { secret: string; name: string }>;
}

const noValidation = async () => {};

export async function createWorld(server: TestServer): Promise<World> {
  const { registry, accounts } = server.app;
  const api = await registry.createResource({ uri: API_URI, scope: 'api:read api:write' });
  const jwtApi = await registry.createResource({ uri: JWT_API_URI, scope: 'jwt:read', tokenFormat: 'jwt' });
  const newApp = async (name: string, scope = 'openid profile email offline_access api:read jwt:read', firstParty = false) => {
    const c = await registry.createClient(
      { name, grants: ['authorization_code', 'refresh_token'], redirectUris: [REDIRECT_URI], postLogoutRedirectUris: [POST_LOGOUT_URI], scope, firstParty },
      noValidation,
    );
    return { clientId: c.clientId, secret: c.secret!, redirectUri: REDIRECT_URI, name };
  };
  const machine = await registry.createClient({ name: 'Nightly job', grants: ['client_credentials'], scope: 'api:read' }, noValidation);
  const password = 'correct horse battery staple';
  const account = await accounts.create({ email: 'ada@example.org', name: 'Ada Lovelace', password });
  const { totpSecret, recoveryCodes } = await enrollTotp(server, account);
  return {
    api: { uri: API_URI, clientId: api.resource.clientId, secret: api.secret },
    jwtApi: { uri: JWT_API_URI, clientId: jwtApi.resource.clientId, secret: jwtApi.secret },
    shop: await newApp('Shop'),
    other: await newApp('Other app'),
    firstParty: await newApp('Our own dashboard', undefined, true),
    machine: { clientId: machine.clientId, secret: machine.secret! },
    user: { email: account.email, password, name: 'Ada Lovelace', id: account.id, totpSecret, recoveryCodes },
    newApp: (name, scope) => newApp(name, scope),
  };
}

/** Gives an account a TOTP factor, as `latchkey user create --totp` does; remembers its secret for flow.ts. */
export async function enrollTotp(server: TestServer, account: { id: string; email: string }) {
  const factor = server.app.secondFactor;
  const started = await factor.startEnrollment((await server.app.accounts.find(account.id))!);
  const totpSecret = started.secret.replaceAll(' ', '');
  const enrolled = await factor.enroll(account.id, started.pending, await totpCodeAt(totpSecret, totpClock.now()));
  if (!enrolled.ok) throw new Error(`enrollment failed: ${enrolled.reason}`);
  totpSecrets.set(account.email, totpSecret);
  return { totpSecret, recoveryCodes: enrolled.recoveryCodes };
}

export interface WorldSetup {
  redis: TestRedis;
  server: TestServer;
  world: World;
}

/**
 * For a test file: a private Redis and a server on it, made before the file's tests (handed to
 * `receive`, which may go on preparing) and torn down after them.
 */
export function useServer(receive: (setup: { redis: TestRedis; server: TestServer }) => unknown): void {
  let redis: TestRedis | undefined;
  let server: TestServer | undefined;
  before(async () => {
    redis = await startRedis();
    server = await startServer({ redisUrl: redis.url });
    await receive({ redis, server });
  });
  after(async () => {
    await server?.close();
    await redis?.dispose();
  });
}

/** `useServer` plus the shared registrations (`createWorld`). */
export function useWorld(receive: (setup: WorldSetup) => void): void {
  useServer(async (setup) => receive({ ...setup, world: await createWorld(setup.server) }));
}
