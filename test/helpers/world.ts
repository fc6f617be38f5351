import { after, before } from 'node:test';
import { startRedis, type TestRedis } from './redis.ts';
import { startRedisCluster, type TestCluster } from './redis-cluster.ts';
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
  // Her address is proved (as by a link): the protocol tests see email_verified true.
  const account = await accounts.create({ email: 'ada@example.org', name: 'Ada Lovelace', password, emailVerified: true });
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

/**
 * Where a suite's server keeps everything: the embedded store, a private Redis, or a private 3-master
 * Redis Cluster. Suites that do not name one follow `LATCHKEY_TEST_STORE` (default `redis`), so the whole
 * suite can run against any of the three: `LATCHKEY_TEST_STORE=memory npm test`.
 */
export type TestStoreKind = 'memory' | 'redis' | 'cluster';
const STORE_KINDS: readonly TestStoreKind[] = ['memory', 'redis', 'cluster'];

export function testStoreKind(env: NodeJS.ProcessEnv = process.env): TestStoreKind {
  const kind = env.LATCHKEY_TEST_STORE ?? 'redis';
  if (!(STORE_KINDS as readonly string[]).includes(kind)) throw new Error(`LATCHKEY_TEST_STORE must be one of ${STORE_KINDS.join(', ')}`);
  return kind as TestStoreKind;
}

export interface ServerSetup<R extends TestRedis | undefined = TestRedis | undefined> {
  /** The private Redis, for a `redis` store (the CLI and raw-key checks need one); undefined otherwise. */
  redis: R;
  server: TestServer;
  store: TestStoreKind;
}
export type WorldSetup<R extends TestRedis | undefined = TestRedis> = ServerSetup<R> & { world: World };

export interface UseServerOptions {
  store?: TestStoreKind;
  /** More configuration for the server (e.g. `MFA_POLICY`). */
  env?: Record<string, string>;
  /** Mail delivery options and the clock (links' expiry, mail retries). */
  server?: Pick<Parameters<typeof startServer>[0] & object, 'mail' | 'clock'>;
}

/**
 * For a test file: a server on the chosen store, made before the file's tests (handed to `receive`,
 * which may go on preparing) and torn down after them. Without options: a private Redis, as every suite
 * that reads Redis or runs the CLI needs.
 */
export function useServer(receive: (setup: ServerSetup<TestRedis>) => unknown): void;
export function useServer(options: UseServerOptions & { store: 'redis' }, receive: (setup: ServerSetup<TestRedis>) => unknown): void;
export function useServer(options: UseServerOptions, receive: (setup: ServerSetup) => unknown): void;
export function useServer(a: UseServerOptions | ((setup: ServerSetup<TestRedis>) => unknown), b?: (setup: ServerSetup<TestRedis>) => unknown): void {
  const options = typeof a === 'function' ? { store: 'redis' as const } : a;
  const receive = (typeof a === 'function' ? a : b!) as (setup: ServerSetup) => unknown;
  const kind = options.store ?? testStoreKind();
  let redis: TestRedis | undefined;
  let cluster: TestCluster | undefined;
  let server: TestServer | undefined;
  before(async () => {
    if (kind === 'redis') {
      redis = await startRedis();
      server = await startServer({ redisUrl: redis.url, ...(options.env ? { env: options.env } : {}), ...options.server });
    } else if (kind === 'cluster') {
      cluster = await startRedisCluster();
      server = await startServer({ env: { ...cluster.env, ...options.env }, ...options.server });
    } else {
      server = await startServer({ ...(options.env ? { env: options.env } : {}), ...options.server });
    }
    await receive({ redis, server, store: kind });
  });
  after(async () => {
    await server?.close();
    await redis?.dispose();
    await cluster?.dispose();
  });
}

/** `useServer` plus the shared registrations (`createWorld`). */
export function useWorld(receive: (setup: WorldSetup<TestRedis>) => unknown): void;
export function useWorld(options: UseServerOptions & { store: 'redis' }, receive: (setup: WorldSetup<TestRedis>) => unknown): void;
export function useWorld(options: UseServerOptions, receive: (setup: WorldSetup<TestRedis | undefined>) => unknown): void;
export function useWorld(a: UseServerOptions | ((setup: WorldSetup<TestRedis>) => unknown), b?: (setup: WorldSetup<TestRedis>) => unknown): void {
  const options = typeof a === 'function' ? { store: 'redis' as const } : a;
  const receive = (typeof a === 'function' ? a : b!) as (setup: WorldSetup<TestRedis | undefined>) => unknown;
  useServer(options, async (setup) => receive({ ...setup, world: await createWorld(setup.server) }));
}
