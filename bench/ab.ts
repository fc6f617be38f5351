import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { freePort, startRedis } from '../test/helpers/redis.ts';
import { clientCredentialsToken, introspectionRequest, newFlowStats, RefreshChains, registerLatchkey, tokenRequest, type Server } from './flows.ts';
import { cannon, cpuSeconds, median, ROOT, startProc } from './lib.ts';

/**
 * A/B of two Latchkey builds or settings on one private Redis, alternating runs (A B A B …) so that
 * the machine's drift hits both alike. For trying an optimisation before `npm run bench`:
 *   node bench/ab.ts [--scenario token|introspection|refresh] [--a DIR] [--b DIR] [--a-node-options "…"]
 *                    [--b-node-options "…"] [--a-env "K=V …"] [--b-env "K=V …"] [--rounds 6] [--duration 5] [--connections 32]
 * `refresh`: rotating chains (bench/flows.ts `RefreshChains`), 64 per side started by sign-ins before the runs.
 * Besides the process's CPU per request, the main thread's (its JavaScript: what the lean path can cut).
 * DIR is a checkout (e.g. `git worktree add /tmp/base HEAD`, with node_modules linked); default this one.
 */
const { values } = parseArgs({
  options: {
    scenario: { type: 'string', default: 'token' },
    a: { type: 'string', default: ROOT },
    b: { type: 'string', default: ROOT },
    'a-node-options': { type: 'string', default: '' },
    'b-node-options': { type: 'string', default: '' },
    'a-env': { type: 'string', default: '' },
    'b-env': { type: 'string', default: '' },
    rounds: { type: 'string', default: '6' },
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '32' },
  },
});
/** CPU seconds of a process's main thread (its JavaScript), user and kernel. */
function mainThreadCpu(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
const envOf = (words: string) => Object.fromEntries(words.split(' ').filter(Boolean).map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]));
const redis = await startRedis({ ownServer: true });
const reg = await registerLatchkey(redis.url, { users: values.scenario === 'refresh' ? 4 : 0 });
const targets = [] as { name: string; url: string; pid: number; stop: () => Promise<void>; rates: number[]; cpus: number[]; mains: number[]; cpu: number; main: number; count: number }[];
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
    MFA_POLICY: 'optional',
    ...envOf(values[`${side}-env`]),
  }, '/healthz');
  const extras = [values[`${side}-node-options`], values[`${side}-env`]].filter(Boolean).join(' ');
  targets.push({ name: `${side.toUpperCase()} (${dir}${extras ? ` ${extras}` : ''})`, url: proc.url, pid: proc.pid, stop: proc.stop, rates: [], cpus: [], mains: [], cpu: 0, main: 0, count: 0 });
}
try {
  // Refresh chains whose last token was in flight when a run stopped are gone: each run starts with 64 again.
  const chains = targets.map((t) => new RefreshChains({ ...reg, url: t.url, totpUsers: [], promptConsent: false }));
  const requests = await Promise.all(targets.map(async (t, i) => {
    const server = { ...reg, url: t.url, totpUsers: [], promptConsent: false } as unknown as Server;
    if (values.scenario === 'refresh') return chains[i]!.request();
    return values.scenario === 'introspection' ? introspectionRequest(server, await Promise.all(Array.from({ length: 200 }, () => clientCredentialsToken(server)))) : tokenRequest(server);
  }));
  const topUp = async (i: number) => {
    if (values.scenario === 'refresh') await chains[i]!.topUp(64, newFlowStats());
  };
  const connections = Number(values.connections);
  for (const [i, t] of targets.entries()) {
    await topUp(i);
    await cannon(t.url, requests[i]!, { connections, duration: 3 });
  }
  for (let r = 0; r < Number(values.rounds); r += 1) {
    for (const [i, t] of targets.entries()) {
      await topUp(i);
      const cpu0 = cpuSeconds(t.pid);
      const main0 = mainThreadCpu(t.pid);
      const load = await cannon(t.url, requests[i]!, { connections, duration: Number(values.duration) });
      const cpu = cpuSeconds(t.pid) - cpu0;
      const main = mainThreadCpu(t.pid) - main0;
      // Per request that reached the server (bench/lib.ts measure): those in flight at the end were served too.
      const served = Math.max(1, load.sent ?? load.count);
      t.cpu += cpu;
      t.main += main;
      t.count += served;
      t.cpus.push((cpu / served) * 1e6);
      t.mains.push((main / served) * 1e6);
      t.rates.push(load.count / load.seconds);
      if (load.non2xx || load.errors) console.log(`${t.name}: ${load.non2xx} answers not 2xx, ${load.errors} errors in round ${r + 1}`);
    }
  }
  const per = (seconds: number, count: number) => Math.round((seconds / count) * 1e6);
  for (const t of targets) {
    console.log(`${t.name}: median ${Math.round(median(t.rates))}/s [${t.rates.map(Math.round).join(', ')}], ${per(t.cpu, t.count)} µs CPU/req (per round: median ${Math.round(median(t.cpus))} [${t.cpus.map(Math.round).join(', ')}]), main thread ${per(t.main, t.count)} µs/req (per round: median ${Math.round(median(t.mains))} [${t.mains.map(Math.round).join(', ')}])`);
  }
  const [a, b] = [targets[0]!, targets[1]!];
  console.log(`B ÷ A: ${(median(b.rates) / median(a.rates)).toFixed(2)}× requests/s, ${(b.cpu / b.count / (a.cpu / a.count)).toFixed(2)}× CPU per request, ${(b.main / b.count / (a.main / a.count)).toFixed(2)}× main-thread CPU per request`);
} finally {
  for (const t of targets) await t.stop();
  await redis.dispose();
}
