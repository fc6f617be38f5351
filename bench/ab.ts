import { parseArgs } from 'node:util';
import { freePort, startRedis } from '../test/helpers/redis.ts';
import { clientCredentialsToken, introspectionRequest, registerLatchkey, tokenRequest, type Server } from './flows.ts';
import { cannon, cpuSeconds, median, ROOT, startProc } from './lib.ts';

/**
 * A/B of two Latchkey builds or settings on one private Redis, alternating runs (A B A B …) so that
 * the machine's drift hits both alike. For trying an optimisation before `npm run bench`:
 *   node bench/ab.ts [--scenario token|introspection] [--a DIR] [--b DIR] [--a-node-options "…"]
 *                    [--b-node-options "…"] [--rounds 6] [--duration 5]
 * DIR is a checkout (e.g. `git worktree add /tmp/base HEAD`, with node_modules linked); default this one.
 */
const { values } = parseArgs({
  options: {
    scenario: { type: 'string', default: 'token' },
    a: { type: 'string', default: ROOT },
    b: { type: 'string', default: ROOT },
    'a-node-options': { type: 'string', default: '' },
    'b-node-options': { type: 'string', default: '' },
    rounds: { type: 'string', default: '6' },
    duration: { type: 'string', default: '5' },
  },
});
const redis = await startRedis({ ownServer: true });
const reg = await registerLatchkey(redis.url, { users: 0 });
const targets = [] as { name: string; url: string; pid: number; stop: () => Promise<void>; rates: number[]; cpus: number[]; cpu: number; count: number }[];
for (const side of ['a', 'b'] as const) {
  const port = await freePort();
  const dir = values[side].replace(/\/?$/, '/');
  const proc = await startProc(side.toUpperCase(), `${dir}src/main.ts`, port, {
    NODE_OPTIONS: values[`${side}-node-options`],
    REDIS_URL: redis.url,
    NODE_ENV: 'production',
    WORKERS: '1',
    HOST: '127.0.0.1',
    ISSUER: `http://127.0.0.1:${port}`,
    SECRETS_KEY: Buffer.alloc(32, 7).toString('base64'),
    LOG_LEVEL: 'info',
  }, '/healthz');
  targets.push({ name: `${side.toUpperCase()} (${dir}${values[`${side}-node-options`] ? ` ${values[`${side}-node-options`]}` : ''})`, url: proc.url, pid: proc.pid, stop: proc.stop, rates: [], cpus: [], cpu: 0, count: 0 });
}
try {
  const requests = await Promise.all(targets.map(async (t) => {
    const server = { ...reg, url: t.url, users: [] } as unknown as Server;
    return values.scenario === 'introspection' ? introspectionRequest(server, await Promise.all(Array.from({ length: 200 }, () => clientCredentialsToken(server)))) : tokenRequest(server);
  }));
  for (const [i, t] of targets.entries()) await cannon(t.url, requests[i]!, { connections: 32, duration: 3 });
  for (let r = 0; r < Number(values.rounds); r += 1) {
    for (const [i, t] of targets.entries()) {
      const cpu0 = cpuSeconds(t.pid);
      const load = await cannon(t.url, requests[i]!, { connections: 32, duration: Number(values.duration) });
      const cpu = cpuSeconds(t.pid) - cpu0;
      t.cpu += cpu;
      t.count += load.count;
      t.cpus.push((cpu / load.count) * 1e6);
      t.rates.push(load.count / load.seconds);
    }
  }
  for (const t of targets) console.log(`${t.name}: median ${Math.round(median(t.rates))}/s [${t.rates.map(Math.round).join(', ')}], ${Math.round((t.cpu / t.count) * 1e6)} µs CPU/req (per round: median ${Math.round(median(t.cpus))} [${t.cpus.map(Math.round).join(', ')}])`);
  console.log(`B ÷ A: ${(median(targets[1]!.rates) / median(targets[0]!.rates)).toFixed(2)}× requests/s, ${(targets[1]!.cpu / targets[1]!.count / (targets[0]!.cpu / targets[0]!.count)).toFixed(2)}× CPU per request`);
} finally {
  for (const t of targets) await t.stop();
  await redis.dispose();
}
