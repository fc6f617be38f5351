import { writeFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import {
  clientCredentialsToken, introspectionRequest, newFlowStats, RefreshChains, revocationRequest, signInLoad, times, tokenRequest, totpUsers,
} from './flows.ts';
import { cannon, keyType, measure, rssBytes, sleep, usedMemory, type Load } from './lib.ts';
import { startWorld } from './world.ts';

/**
 * `npm run bench -- --soak SECONDS`: mixed traffic against Latchkey alone at about 80 % of the maximum
 * measured at the start, in time windows, then a wait for the short TTLs to pass. Writes bench/SOAK.md.
 */
const SHORT_TTL = 60; // the API's access-token lifetime (the CLI's minimum); authorization codes live 60 s too
const PERSISTENT = /^lk:(client|clients|resource|resources|scope|account|account-email|accounts|account-page|recovery|keys)$/;

/** Server time shares of the mix; each stream runs at 0.8 × share × its measured maximum. */
const SHARES = { token: 0.25, introspection: 0.25, refresh: 0.2, revocation: 0.1, signIn: 0.2 };

interface KeyCounts {
  total: number;
  usedMemory: number;
  byType: Map<string, number>;
  /** Keys with no TTL that are not persistent by design (clients, APIs, accounts, recovery codes, keys). */
  noTtl: number;
  indexMembers: number;
  /** Members of grant indexes whose record no longer exists (expired). */
  staleMembers: number;
}

async function keyCounts(redis: Redis): Promise<KeyCounts> {
  const out: KeyCounts = { total: 0, usedMemory: await usedMemory(redis), byType: new Map(), noTtl: 0, indexMembers: 0, staleMembers: 0 };
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'COUNT', 1000);
    cursor = next;
    const ttls = await Promise.all(found.map((k) => redis.ttl(k)));
    for (const [i, key] of found.entries()) {
      const type = keyType(key);
      out.total += 1;
      out.byType.set(type, (out.byType.get(type) ?? 0) + 1);
      if (ttls[i] === -1 && !PERSISTENT.test(type)) out.noTtl += 1;
      if (type === 'grant index') {
        const members = await redis.smembers(key);
        out.indexMembers += members.length;
        out.staleMembers += (await Promise.all(members.map((m) => redis.exists(m)))).filter((e) => e === 0).length;
      }
    }
  } while (cursor !== '0');
  return out;
}

const fives = (load: Load) => Object.entries(load.status).filter(([s]) => s.startsWith('5')).reduce((n, [, c]) => n + c, 0);
const f0 = (n: number) => Math.round(n).toLocaleString('en-US');
const f1 = (n: number) => n.toFixed(1);

export async function runSoak(seconds: number, connections: number, machine: string[]) {
  if (!(seconds >= 20)) throw new Error('--soak needs at least 20 seconds');
  console.log('starting Redis and Latchkey…');
  const world = await startWorld({ baselines: false, users: 4, apiTtl: SHORT_TTL });
  const stopOnSignal = () => void world.stop().then(() => process.exit(130));
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  const lk = world.latchkey;
  const { redis } = world;
  const pid = lk.proc.pid;
  try {
    const before = await keyCounts(redis);
    const setup = newFlowStats();
    const pool = await times(500, 16, () => clientCredentialsToken(lk));
    const chains = new RefreshChains(lk);
    const per = Math.max(2, Math.floor(connections / 4));
    await chains.topUp(2 * connections, setup);

    console.log('calibrating: 3 s of each stream at full load…');
    const max = {
      token: (await cannon(lk.url, tokenRequest(lk), { connections, duration: 3 })).count / 3,
      introspection: (await cannon(lk.url, introspectionRequest(lk, pool), { connections, duration: 3 })).count / 3,
      refresh: 0,
      signIn: 0,
    };
    await chains.topUp(2 * connections, setup);
    max.refresh = (await cannon(lk.url, chains.request(), { connections, duration: 3 })).count / 3;
    max.signIn = (await signInLoad(lk, { seconds: 3, concurrency: connections })).load.count / 3;
    const rate = {
      token: 0.8 * SHARES.token * max.token,
      introspection: 0.8 * SHARES.introspection * max.introspection,
      refresh: 0.8 * SHARES.refresh * max.refresh,
      // Not calibrated on its own: a revocation is one lookup and one delete, taken to cost an introspection.
      revocation: 0.8 * SHARES.revocation * max.introspection,
      signIn: 0.8 * SHARES.signIn * max.signIn,
    };

    // Half the sign-ins with TOTP: enough enrolled people that each answers at most once per 30 s step.
    const totpPeople = Math.ceil((rate.signIn / 2) * 30 * 1.5) + 10;
    console.log(`enrolling ${totpPeople} people in TOTP…`);
    lk.totpUsers = await totpUsers(lk, world.redisUrl, totpPeople, setup);

    const windowSeconds = Math.max(10, Math.min(30, Math.floor(seconds / 6)));
    const windows = Math.max(2, Math.round(seconds / windowSeconds));
    const revokeQueue: string[] = [];
    const rows: string[] = [];
    let total5xx = 0;
    let totalRequests = 0;
    let rssWarm = 0;
    let rssMax = 0;
    const started = Date.now();
    for (let w = 1; w <= windows; w += 1) {
      await chains.topUp(4 * per, setup);
      const ac = (request: Parameters<typeof cannon>[1], r: number) => cannon(lk.url, request, { connections: per, duration: windowSeconds, rate: r });
      type SignIns = Awaited<ReturnType<typeof signInLoad>>;
      let all: [Load, Load, Load, Load, SignIns, SignIns] | undefined;
      // Server CPU per request and the rest of the machine's load, to tell Latchkey slowing down from a busy machine.
      const sample = await measure(world.watch(lk.proc), async () => {
        all = await Promise.all([
          ac(tokenRequest(lk, (t) => revokeQueue.length < 50_000 && revokeQueue.push(t)), rate.token),
          ac(introspectionRequest(lk, pool), rate.introspection),
          ac(chains.request(), rate.refresh),
          ac(revocationRequest(lk, revokeQueue), rate.revocation),
          signInLoad(lk, { seconds: windowSeconds, concurrency: per, rate: rate.signIn / 2 }),
          signInLoad(lk, { seconds: windowSeconds, concurrency: per, rate: rate.signIn / 2, totp: true }),
        ]);
        const n = all[0].count + all[1].count + all[2].count + all[3].count + all[4].stats.httpRequests + all[5].stats.httpRequests;
        return { count: n, seconds: windowSeconds, p50: 0, p99: 0, non2xx: 0, errors: 0, status: {} };
      });
      const [token, introspection, refresh, revocation, signIns, totpSignIns] = all!;
      const loads = [token, introspection, refresh, revocation, signIns.load, totpSignIns.load];
      const n5xx = loads.reduce((n, l) => n + fives(l), 0);
      const errors = loads.reduce((n, l) => n + l.errors, 0);
      const requests = sample.count;
      total5xx += n5xx;
      totalRequests += requests;
      const rss = rssBytes(pid);
      if (w === 1) rssWarm = rss;
      rssMax = Math.max(rssMax, rss);
      const t = Math.round((Date.now() - started) / 1000);
      const row = `| ${w}${w === 1 ? ' (warm-up)' : ''} | ${t} | ${f0(requests / windowSeconds)} | ${loads.map((l) => f1(l.p99)).join(' | ')} | ${f0(signIns.load.count + totpSignIns.load.count)} | ${n5xx} | ${errors} | ${signIns.skipped + totpSignIns.skipped} | ${f0(sample.cpuUs)} | ${sample.otherCores.toFixed(2)} | ${f1(rss / 2 ** 20)} |`;
      rows.push(row);
      console.log(row);
      for (const e of [signIns.firstError, totpSignIns.firstError]) if (e) console.error(`  sign-in error: ${e}`);
    }
    const rssEnd = rssBytes(pid);
    const atEnd = await keyCounts(redis);
    const waitSeconds = SHORT_TTL + 5;
    console.log(`waiting ${waitSeconds} s for the short TTLs to pass…`);
    await sleep(waitSeconds * 1000);
    const after = await keyCounts(redis);

    const growth = ((rssEnd - rssWarm) / rssWarm) * 100;
    const stayed = [...after.byType].filter(([k, n]) => n > (before.byType.get(k) ?? 0)).map(([k]) => k);
    const kinds = [...new Set([...before.byType.keys(), ...atEnd.byType.keys(), ...after.byType.keys()])].sort();
    const text = [
      '# Latchkey soak results',
      '',
      'Written by `npm run bench -- --soak SECONDS` (bench/soak.ts). Every number was measured in this run.',
      '',
      ...machine,
      `- Latchkey alone (\`node src/main.ts\`, NODE_ENV=production, Redis, LOG_LEVEL=info JSON logs to a temporary file) on a private redis-server, traffic only to 127.0.0.1.`,
      `- Calibration (3 s each at ${connections} connections): client_credentials ${f0(max.token)}/s, introspection ${f0(max.introspection)}/s, refresh ${f0(max.refresh)}/s, complete sign-ins ${f1(max.signIn)}/s.`,
      `- Mix at about 80 % of that (shares of server time ${JSON.stringify(SHARES)}): tokens ${f0(rate.token)}/s, introspection ${f0(rate.introspection)}/s, refresh ${f0(rate.refresh)}/s, revocation of issued tokens ${f0(rate.revocation)}/s (its cost assumed equal to an introspection's; not calibrated), sign-ins ${f1(rate.signIn)}/s (half password only, half with TOTP by ${totpPeople} enrolled people). bench/driver.ts, ${per} keep-alive connections per stream at a fixed rate (each request has its start time on the schedule and its latency counts from then, so a late start is not hidden: coordinated omission corrected), each kind of sign-in an open loop of at most ${per} at once.`,
      `- ${windows} windows of ${windowSeconds} s (${windows * windowSeconds} s of traffic); the first is the warm-up.`,
      `- TTLs: the bench API was created with \`--ttl ${SHORT_TTL}\` (the CLI's minimum), so access and client-credentials tokens expire after ${SHORT_TTL} s, as do authorization codes. Refresh tokens (14 days), sessions (14 days) and grants (30 days) keep their production TTLs and are expected to remain; a rotated refresh token is kept (consumed) until its expiry to detect reuse.`,
      '',
      '## Verdict',
      '',
      `- 5xx answers: **${total5xx}** of ${f0(totalRequests)} requests (target: 0).`,
      `- Latchkey RSS: ${f1(rssWarm / 2 ** 20)} MiB after the warm-up window, ${f1(rssEnd / 2 ** 20)} MiB at the end (max ${f1(rssMax / 2 ** 20)} MiB): **${growth >= 0 ? '+' : ''}${f1(growth)} %** growth after warm-up (target: under 10 %).`,
      `- Redis keys: ${f0(before.total)} before, ${f0(atEnd.total)} at the end of the traffic, ${f0(after.total)} after waiting ${waitSeconds} s. Keys without a TTL that should have one: ${before.noTtl} / ${atEnd.noTtl} / ${after.noTtl}. Grant index members: ${f0(atEnd.indexMembers)} at the end (${f0(atEnd.staleMembers)} naming expired records), ${f0(after.indexMembers)} after the wait (${f0(after.staleMembers)} naming expired records). Redis used_memory: ${f1(before.usedMemory / 2 ** 20)} / ${f1(atEnd.usedMemory / 2 ** 20)} / ${f1(after.usedMemory / 2 ** 20)} MiB.`,
      `- Kinds with more keys after the wait than before: ${stayed.join(', ') || 'none'} (refresh tokens, sessions and grants are expected: their TTLs are days).`,
      '',
      '## p99 over time (ms) per window',
      '',
      '"req/s" counts every HTTP request of the window (each sign-in is several); "other load" is the CPU the rest of the machine used meanwhile (other people\'s tests), in cores.',
      '',
      '| window | t (s) | req/s | token p99 | introspection p99 | refresh p99 | revocation p99 | password sign-in p99 (whole flow) | TOTP sign-in p99 (whole flow) | sign-ins | 5xx | errors | sign-ins skipped (cap) | server CPU µs/req | other load (cores) | RSS MiB |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
      ...rows,
      '',
      '## Redis keys by kind',
      '',
      '| kind | before | end of traffic | after the wait |',
      '|---|---|---|---|',
      ...kinds.map((k) => `| ${k} | ${f0(before.byType.get(k) ?? 0)} | ${f0(atEnd.byType.get(k) ?? 0)} | ${f0(after.byType.get(k) ?? 0)} |`),
      '',
      `Sign-ins outside the measured windows (chains for the refresh stream, calibration): ${f0(setup.flows)}.`,
      '',
    ].join('\n');
    writeFileSync(new URL('SOAK.md', import.meta.url), text);
    console.log(`\n${text}\nwritten to bench/SOAK.md`);
  } finally {
    await world.stop();
  }
}
