import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { loadConfig } from '../src/config.ts';
import { freePort } from './helpers/redis.ts';
import { startServer } from './helpers/server.ts';

/**
 * The Dockerfile and docker-compose.yml. No Docker engine runs here: the compose file is validated
 * and resolved by Debian's `docker-compose config` (package `docker-compose`, installed by `npm test` when missing),
 * its YAML read with python3-yaml (a dependency of that package), and the image's HEALTHCHECK command
 * is run against a live server.
 */
const root = fileURLToPath(new URL('../', import.meta.url));

function composeConfig(env: Record<string, string>) {
  return spawnSync('docker-compose', ['--project-directory', root, '-f', `${root}docker-compose.yml`, 'config'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...env },
    encoding: 'utf8',
  });
}

function yamlToJson(yaml: string): any {
  const out = execFileSync('python3', ['-c', 'import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))'], { input: yaml, encoding: 'utf8' });
  return JSON.parse(out);
}

describe('docker-compose.yml', () => {
  it('is valid for `docker-compose config`: Redis 7 with AOF and noeviction on a named volume, Latchkey in production on it', () => {
    const secretsKey = randomBytes(32).toString('base64');
    const result = composeConfig({ SECRETS_KEY: secretsKey });
    assert.equal(result.error, undefined, 'docker-compose is installed (Debian package docker-compose; scripts/test-prerequisites.sh installs it)');
    assert.equal(result.status, 0, result.stderr);
    const config = yamlToJson(result.stdout);

    const redis = config.services.redis;
    assert.match(redis.image, /^redis:7(\.|$|-)/);
    const args = (redis.command as string[]).join(' ');
    assert.match(args, /--appendonly yes/);
    assert.match(args, /--appendfsync everysec/);
    assert.match(args, /--maxmemory-policy noeviction/);
    assert.ok((redis.volumes as string[]).some((v) => /^redis-data:\/data(:rw)?$/.test(v)), JSON.stringify(redis.volumes));
    assert.ok('redis-data' in config.volumes, 'a named volume');
    assert.ok(redis.healthcheck?.test, 'Redis has a healthcheck');

    const app = config.services.latchkey;
    assert.equal(app.build.context.replace(/\/$/, ''), root.replace(/\/$/, ''));
    assert.equal(app.depends_on.redis.condition, 'service_healthy');
    assert.equal(app.environment.NODE_ENV, 'production');
    assert.equal(app.environment.REDIS_URL, 'redis://redis:6379');
    assert.ok(app.environment.ISSUER);
    assert.deepEqual(app.ports.map((p: { target: number }) => p.target), [3000], 'only the main port is published');
    assert.equal(app.environment.METRICS_PORT, '9464', 'metrics and health on a port of their own');

    // A real SMTP catcher with a web UI (on loopback only), which Latchkey sends to unless told otherwise.
    const mailpit = config.services.mailpit;
    assert.match(mailpit.image, /^axllent\/mailpit(:|$)/);
    assert.deepEqual(mailpit.ports, ['127.0.0.1:8025:8025/tcp'], 'the web UI, on this machine only');
    assert.equal(app.environment.SMTP_URL, 'smtp://mailpit:1025');
    assert.equal(app.depends_on.mailpit.condition, 'service_started');

    // The environment it gives Latchkey passes the production guardrails, email on.
    const loaded = loadConfig(app.environment);
    assert.equal(loaded.NODE_ENV, 'production');
    assert.equal(loaded.REDIS_URL, 'redis://redis:6379');
    assert.equal(loaded.EMAIL, 'on');
    assert.equal(loaded.SMTP_URL, 'smtp://mailpit:1025');
  });

  it('SMTP_URL from the environment replaces Mailpit', () => {
    const result = composeConfig({ SECRETS_KEY: randomBytes(32).toString('base64'), SMTP_URL: 'smtps://mailer:secret@mail.example.com:465' });
    assert.equal(result.status, 0, result.stderr);
    assert.equal(yamlToJson(result.stdout).services.latchkey.environment.SMTP_URL, 'smtps://mailer:secret@mail.example.com:465');
  });

  it('refuses to resolve without SECRETS_KEY, naming it', () => {
    const result = composeConfig({});
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, /SECRETS_KEY/);
  });
});

describe('Dockerfile', () => {
  const dockerfile = readFileSync(new URL('../Dockerfile', import.meta.url), 'utf8');
  const instructions = dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((l) => l.trim() && !l.trim().startsWith('#'));
  const find = (name: string) => instructions.filter((l) => l.startsWith(`${name} `));

  it('builds on node:24-slim with production dependencies only, runs as a non-root user', () => {
    assert.deepEqual(find('FROM'), ['FROM node:24-slim']);
    assert.ok(find('RUN').some((l) => /npm ci --omit=dev/.test(l)));
    const users = find('USER');
    assert.ok(users.length > 0 && !/root|^USER 0/.test(users.at(-1)!), 'a non-root USER');
    const cmd = JSON.parse(find('CMD').at(-1)!.slice(4)) as string[];
    assert.deepEqual(cmd, ['node', 'src/main.ts']);
    for (const copy of find('COPY')) {
      for (const source of copy.split(/\s+/).slice(1, -1)) assert.ok(existsSync(new URL(`../${source}`, import.meta.url)), `${source} exists`);
    }
  });

  it('HEALTHCHECK asks /healthz with Node’s fetch: healthy against a live server, unhealthy when nothing answers', async () => {
    const healthcheck = find('HEALTHCHECK').at(-1)!;
    const json = healthcheck.slice(healthcheck.indexOf('CMD ') + 4).trim();
    const [bin, ...args] = JSON.parse(json) as string[];
    assert.equal(bin, 'node');
    const server = await startServer();
    try {
      // Asynchronously: the server answers from this very process.
      const run = (port: number) =>
        new Promise<number | null>((resolve) => {
          const child = spawn(process.execPath, args, { env: { PATH: process.env.PATH ?? '', PORT: String(port) }, stdio: 'ignore', timeout: 10_000 });
          child.once('exit', (code) => resolve(code));
        });
      assert.equal(await run(server.port), 0);
      assert.equal(await run(await freePort()), 1);
    } finally {
      await server.close();
    }
  });
});

describe('a fresh machine', () => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    engines?: unknown;
    scripts: Record<string, string>;
    devDependencies: Record<string, string>;
  };
  const prerequisites = readFileSync(new URL('../scripts/test-prerequisites.sh', import.meta.url), 'utf8');

  it('`npm test` first installs what the tests spawn: every program a test or helper starts is in scripts/test-prerequisites.sh', () => {
    assert.equal(pkg.scripts.pretest, 'bash scripts/test-prerequisites.sh');
    const sources = ['test', 'test/helpers', 'test/e2e'].flatMap((dir) =>
      readdirSync(new URL(`../${dir}/`, import.meta.url))
        .filter((f) => f.endsWith('.ts'))
        .map((f) => readFileSync(new URL(`../${dir}/${f}`, import.meta.url), 'utf8')),
    );
    const programs = new Set(sources.flatMap((s) => [...s.matchAll(/(?:spawn|spawnSync|execFileSync|run)\('([a-z][a-z0-9-]+)'/g)].map((m) => m[1]!)));
    programs.delete('python3'); // comes with docker-compose (python3-yaml is its dependency)
    programs.delete('npm'); // runs the tests themselves
    assert.ok(programs.has('redis-server') && programs.has('redis-cli') && programs.has('docker-compose'), [...programs].join(' '));
    for (const program of programs) assert.match(prerequisites, new RegExp(`command -v ${program} `), program);
    assert.match(prerequisites, /\[ -x \/usr\/bin\/chromium \] \|\| missing\+=\(chromium\)/);
  });

  it('declares Node 24 as the pinned dev dependency, not as an engine: `npm ci` on an older system Node prints no EBADENGINE warning', () => {
    assert.equal(pkg.engines, undefined);
    assert.match(pkg.devDependencies.node ?? '', /^\^24\./);
    assert.match(pkg.scripts.test ?? '', /^node /, 'npm scripts run the pinned node from node_modules/.bin');
  });
});
