import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Redis } from 'ioredis';
import { freePort, startRedis } from '../test/helpers/redis.ts';
import { API_URI, JWT_API_URI, newFlowStats, passkeyUsers, REDIRECT_URI, registerAdminReader, registerLatchkey, totpUsers, type Server } from './flows.ts';
import { redisInfo, startProc, type Proc, type Watch } from './lib.ts';

/**
 * Everything the bench measures, each its own process on 127.0.0.1 and a free port: a private
 * redis-server, Latchkey (`node src/main.ts`, production mode, WORKERS=1 — and with `allCores` a second one with a worker per CPU, with
 * `leanOff` one with LEAN_PATH=off —, normal logging to a temporary file), and with
 * `baselines` raw oidc-provider (memory adapter), Koa + ioredis floors and bare node:http.
 */
export interface World {
  redisUrl: string;
  redis: Redis;
  redisPid: number;
  /** One serving process (WORKERS=1). */
  latchkey: Server & { proc: Proc };
  /** With `allCores`: a second Latchkey on the same Redis with WORKERS = the number of CPUs (node:cluster). */
  latchkeyAllCores?: Server & { proc: Proc; workers: number };
  /** With `leanOff`: a third Latchkey (WORKERS=1) with LEAN_PATH=off, everything through oidc-provider. */
  latchkeyLeanOff?: Server & { proc: Proc };
  raw?: Server & { proc: Proc };
  floors: { name: string; proc: Proc; method: string; path: string }[];
  watch(proc: Proc): Watch;
  stop(): Promise<void>;
}

const token = () => randomBytes(18).toString('base64url');

export async function startWorld(options: { baselines: boolean; users: number; totpUsers?: number; passkeyUsers?: number; apiTtl?: number; allCores?: boolean; leanOff?: boolean }): Promise<World> {
  const redisServer = await startRedis({ ownServer: true });
  const procs: Proc[] = [];
  const redis = new Redis(redisServer.url);
  const stop = async () => {
    for (const p of procs.reverse()) await p.stop();
    redis.disconnect();
    await redisServer.dispose();
  };
  try {
    const redisPid = Number((await redisInfo(redis, 'server')).process_id);
    const registered = await registerLatchkey(redisServer.url, { users: options.users, apiTtl: options.apiTtl });
    const secretsKey = randomBytes(32).toString('base64');
    const startLatchkey = async (workers: number, extra: Record<string, string> = {}) => {
      const port = await freePort();
      const proc = await startProc(`Latchkey (WORKERS=${workers}${Object.entries(extra).map(([k, v]) => `, ${k}=${v}`).join('')})`, 'src/main.ts', port, {
        ...extra,
        NODE_ENV: 'production',
        WORKERS: String(workers),
        REDIS_URL: redisServer.url,
        ISSUER: `http://127.0.0.1:${port}`,
        HOST: '127.0.0.1',
        LOG_LEVEL: 'info',
        LOG_FORMAT: 'json',
        SECRETS_KEY: secretsKey,
        // Password-only and TOTP sign-ins side by side: people without a factor sign in with a password alone.
        MFA_POLICY: 'optional',
      }, '/healthz');
      procs.push(proc);
      return proc;
    };
    // The one-process Latchkey starts last: a server registers the admin API for its own ISSUER at boot
    // and takes the admin scopes from an API of another ISSUER, and the admin-read row measures this one.
    const workers = availableParallelism();
    const all = options.allCores ? await startLatchkey(workers) : undefined;
    const leanOff = options.leanOff ? await startLatchkey(1, { LEAN_PATH: 'off' }) : undefined;
    const lk = await startLatchkey(1);
    const admin = await registerAdminReader(redisServer.url, lk.url);
    const world: World = {
      redisUrl: redisServer.url,
      redis,
      redisPid,
      latchkey: { url: lk.url, proc: lk, ...registered, admin, totpUsers: [], promptConsent: false },
      floors: [],
      watch: (proc) => ({ pid: proc.pid, redis, redisPid }),
      stop,
    };
    if (all) world.latchkeyAllCores = { url: all.url, proc: all, ...registered, totpUsers: [], promptConsent: false, workers };
    if (leanOff) world.latchkeyLeanOff = { url: leanOff.url, proc: leanOff, ...registered, totpUsers: [], promptConsent: false };
    if (options.totpUsers) world.latchkey.totpUsers = await totpUsers(world.latchkey, redisServer.url, options.totpUsers, newFlowStats());
    if (options.passkeyUsers) world.latchkey.passkeyUsers = await passkeyUsers(world.latchkey, redisServer.url, options.passkeyUsers, newFlowStats());
    // The same people sign in at either server (one Redis): a person's code is used once per step at either.
    if (world.latchkeyAllCores) {
      world.latchkeyAllCores.totpUsers = world.latchkey.totpUsers;
      // A passkey is bound to the RP ID (127.0.0.1), not the port: the same device signs in at either server.
      world.latchkeyAllCores.passkeyUsers = world.latchkey.passkeyUsers;
      world.latchkeyAllCores.passkeyDevice = world.latchkey.passkeyDevice;
    }
    if (options.baselines) {
      const creds = { machine: { id: 'machine', secret: token() }, api: { id: 'api', secret: token() }, app: { id: 'app', secret: token(), redirectUri: REDIRECT_URI }, device: { id: 'device' } };
      const rawPort = await freePort();
      const raw = await startProc('raw oidc-provider', 'bench/baselines/raw-oidc-provider.ts', rawPort, {
        API_URI,
        JWT_API_URI,
        REDIRECT_URI,
        DEVICE_ID: creds.device.id,
        MACHINE_ID: creds.machine.id,
        MACHINE_SECRET: creds.machine.secret,
        API_ID: creds.api.id,
        API_SECRET: creds.api.secret,
        APP_ID: creds.app.id,
        APP_SECRET: creds.app.secret,
      }, '/.well-known/openid-configuration');
      procs.push(raw);
      world.raw = { url: raw.url, proc: raw, ...creds, users: [{ email: 'none', password: 'none' }], totpUsers: [], promptConsent: true };
      const koa = await startProc('Koa + ioredis', 'bench/baselines/koa-redis.ts', await freePort(), { REDIS_URL: redisServer.url }, '/get');
      procs.push(koa);
      const bare = await startProc('node:http', 'bench/baselines/node-http.ts', await freePort(), {}, '/');
      procs.push(bare);
      world.floors.push(
        { name: 'bare node:http, small JSON', proc: bare, method: 'GET', path: '/' },
        { name: 'Koa + ioredis, one GET', proc: koa, method: 'GET', path: '/get' },
        { name: 'Koa + ioredis, one SET … EX', proc: koa, method: 'POST', path: '/set' },
      );
    }
    return world;
  } catch (err) {
    await stop();
    throw err;
  }
}
