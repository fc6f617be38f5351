import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { AccountError, Accounts } from '../accounts/accounts.ts';
import { passwordRuleOf } from '../accounts/password-rule.ts';
import { ConfigError, loadConfig } from '../config.ts';
import { audit } from '../observability/audit.ts';
import { createLogger } from '../observability/logger.ts';
import { Registry, RegistryError } from '../oidc/registry.ts';
import { connectConfiguredRedis, describeRedis, type RedisConfig } from '../storage/open.ts';
import { RedisStore } from '../storage/redis-store.ts';
import { StorageUnavailable } from '../storage/store.ts';
import { LOCKOUT_SETTING_NAMES, lockoutSettings } from '../security/lockout.ts';
import { OperationError } from '../admin/operations.ts';
import { ActivityLog, recordActivity } from '../observability/activity.ts';
import { COMMANDS, commandContext, GROUPS, usageLine, type Command, type Values } from './commands.ts';
import { validateClientMetadata } from './client-metadata.ts';
import { backchannelTargetRules } from '../oidc/backchannel-targets.ts';
import { CliError, type Output } from './output.ts';

/**
 * `latchkey <group> <action> [options]`: manages clients, APIs, users and signing keys in the
 * server's Redis. `--json` prints exactly one JSON object on stdout; errors are one line on stderr,
 * exit code 2 for bad input and 1 when it could not be done (Redis unreachable). A command that changed
 * something also writes its audit event as one JSON line on stderr (pino, `"source":"cli"`), so stdout
 * stays what scripts parse.
 */
const HINT = 'run "latchkey --help" for usage';

function help(group?: string): string {
  const names = Object.keys(COMMANDS).filter((name) => !group || name.startsWith(`${group} `));
  return [
    'Usage:',
    ...names.map((name) => `  ${usageLine(name)}`),
    '',
    'Every command takes --json (print one JSON object). Passwords are read from stdin only.',
    'REDIS_URL (or REDIS_CLUSTER_NODES, or REDIS_SENTINELS and REDIS_SENTINEL_NAME) names the Redis the server uses.',
  ].join('\n');
}

/** All of stdin, without one trailing newline. Refuses a terminal, which would echo the password. */
async function readPassword(): Promise<string> {
  if (process.stdin.isTTY) throw new CliError('--password-stdin reads the password from a pipe, e.g. printf \'%s\' "$PASSWORD" | latchkey …');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

async function connect(config: RedisConfig): Promise<RedisStore> {
  const timeoutMs = config.REDIS_TIMEOUT_MS;
  const store = new RedisStore(connectConfiguredRedis(config)!);
  const { client } = store;
  // Later errors surface as failed commands; without a listener ioredis would also print them.
  client.on('error', () => {});
  // One attempt: the first connection error ends it, and no timer is left behind to delay the exit.
  try {
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        client.off('ready', done);
        client.off('error', done);
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => done(new Error(`no answer within ${Math.max(2000, timeoutMs)} ms`)), Math.max(2000, timeoutMs));
      client.once('ready', done);
      client.once('error', done);
    });
  } catch (err) {
    client.disconnect();
    throw new CliError(`cannot reach ${describeRedis(config)}: ${(err as Error).message}`, 1);
  }
  return store;
}

/** Parses argv and runs one command; returns the exit code. */
async function run(argv: string[]): Promise<number> {
  const args = [...argv];
  let json = false;
  let wantsHelp = false;
  while (args[0]?.startsWith('-')) {
    const flag = args.shift();
    if (flag === '--json') json = true;
    else if (flag === '--help' || flag === '-h') wantsHelp = true;
    else throw new CliError(`unknown option ${flag}; ${HINT}`);
  }
  const [group, action, ...rest] = args;
  if (!group) {
    if (wantsHelp) return print(help());
    throw new CliError(`missing command; ${HINT}`);
  }
  if (!GROUPS.includes(group)) throw new CliError(`unknown command "${group}"; ${HINT}`);
  if (!action || action === '--help' || action === '-h' || wantsHelp) {
    if (action === '--help' || action === '-h' || wantsHelp) return print(help(group));
    throw new CliError(`missing ${group} command; run "latchkey ${group} --help" for usage`);
  }
  const name = `${group} ${action}`;
  const command: Command | undefined = COMMANDS[name];
  if (!command) throw new CliError(`unknown command "${name}"; run "latchkey ${group} --help" for usage`);

  let values: Values;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: rest,
      options: {
        ...command.options,
        ...(command.password ? { 'password-stdin': { type: 'boolean' } } : {}),
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
      // `--no-require-mfa` turns a setting off (client update).
      allowNegative: true,
      strict: true,
    }));
  } catch (err) {
    throw new CliError(`${(err as Error).message.split(/\.\s/)[0]!.replace(/\.$/, '')}; usage: ${usageLine(name)}`);
  }
  if (values.help) return print(`Usage: ${usageLine(name)}`);
  json ||= values.json === true;
  const expected = command.args ?? [];
  if (positionals.length !== expected.length) {
    const problem = positionals.length < expected.length ? `missing ${expected[positionals.length]}` : `unexpected argument ${JSON.stringify(positionals[expected.length])}`;
    throw new CliError(`${problem}; usage: ${usageLine(name)}`);
  }
  let password: string | undefined;
  if (command.password) {
    if (values['password-stdin'] !== true) throw new CliError(`--password-stdin is required (passwords are read from stdin only); usage: ${usageLine(name)}`);
    password = await readPassword();
  }

  let config;
  try {
    // Only what the CLI uses: the server's other settings need not be valid here.
    const { REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINELS, REDIS_SENTINEL_NAME, REDIS_PASSWORD, REDIS_TIMEOUT_MS, SIGNING_KEYS_FILE, SECRETS_KEY, ISSUER, PORT, LOG_LEVEL, ADMIN_ACTIVITY_MAX, PASSWORD_BREACH_CHECK, PASSWORD_BREACH_CHECK_URL, BACKCHANNEL_LOGOUT_ALLOW_PRIVATE, SMTP_URL, MAIL_FROM } = process.env;
    // The lockout thresholds too: `user unlock` then builds its lockout as the server does.
    const lockoutEnv = Object.fromEntries(LOCKOUT_SETTING_NAMES.map((name) => [name, process.env[name]]));
    config = loadConfig({ REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINELS, REDIS_SENTINEL_NAME, REDIS_PASSWORD, REDIS_TIMEOUT_MS, SIGNING_KEYS_FILE, SECRETS_KEY, ISSUER, PORT, LOG_LEVEL, ADMIN_ACTIVITY_MAX, PASSWORD_BREACH_CHECK, PASSWORD_BREACH_CHECK_URL, BACKCHANNEL_LOGOUT_ALLOW_PRIVATE, SMTP_URL, MAIL_FROM, ...lockoutEnv });
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(`configuration: ${err.problems.join('; ')}`);
    throw err;
  }
  if (command.withoutStore) return print(await command.withoutStore(config, values).then((output) => (json ? JSON.stringify(output.json) : output.text)));
  if (!describeRedis(config)) {
    throw new CliError('REDIS_URL is not set: without it the server uses its embedded store, which lives inside the server process, so the CLI cannot reach it; set REDIS_URL (or REDIS_CLUSTER_NODES, or REDIS_SENTINELS) to the Redis the server uses');
  }

  const store = await connect(config);
  // The CLI's audit events reach the activity log too, like the server's.
  const activity = new ActivityLog(store, { maxEvents: config.ADMIN_ACTIVITY_MAX, maxAnonymousEvents: config.ADMIN_ACTIVITY_ANONYMOUS_MAX });
  try {
    const { logger, operator } = auditLogger(config.LOG_LEVEL);
    recordActivity(logger, activity);
    const ctx = commandContext({
      store,
      // NODE_ENV read alone: the server's production guardrails are not the CLI's to enforce.
      registry: new Registry(store, { backchannelTargets: backchannelTargetRules({ ...config, NODE_ENV: process.env.NODE_ENV ?? 'development' }) }),
      accounts: new Accounts(store, { passwordRule: passwordRuleOf(config, logger) }),
      logger,
      validateClient: validateClientMetadata,
      actor: { kind: 'cli', ...(operator ? { operator } : {}) },
      ...(config.SIGNING_KEYS_FILE ? { signingKeysFile: config.SIGNING_KEYS_FILE } : {}),
      ...(password !== undefined ? { password } : {}),
      // TOTP: the same key and issuer name as the server (`user create --totp`).
      ...(config.SECRETS_KEY ? { secretsKey: config.SECRETS_KEY } : {}),
      issuer: config.ISSUER,
      lockouts: lockoutSettings(config),
    });
    const output: Output = await command.run(ctx, values, positionals);
    if (output.audit) audit(logger, output.audit.event, output.audit.fields, output.audit.msg);
    return print(json ? JSON.stringify(output.json) : output.text);
  } finally {
    await activity.flush();
    await store.close();
  }
}

/** The server's logger (same redaction) writing synchronously to stderr, naming the CLI and who ran it. */
function auditLogger(level: string) {
  let operator: string | undefined;
  try {
    operator = userInfo().username;
  } catch {
    // A container user without a passwd entry: the line still says it came from the CLI.
  }
  const logger = createLogger({ level, format: 'json', destination: pino.destination({ fd: 2, sync: true }) }).child({ source: 'cli', ...(operator ? { operator } : {}) });
  return { logger, operator };
}

function print(text: string): number {
  process.stdout.write(`${text}\n`);
  return 0;
}

function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, ' ').trim();
}

try {
  process.exitCode = await run(process.argv.slice(2));
} catch (err) {
  let code = 1;
  let message: string;
  if (err instanceof CliError) {
    code = err.exitCode;
    message = err.message;
  } else if (err instanceof RegistryError || err instanceof AccountError || err instanceof OperationError) {
    code = 2;
    message = err.message;
  } else if (err instanceof StorageUnavailable) {
    message = `Redis did not answer in time: ${(err.cause as Error | undefined)?.message ?? 'unavailable'}`;
  } else {
    message = err instanceof Error ? err.message : String(err);
  }
  process.stderr.write(`latchkey: ${oneLine(message)}\n`);
  process.exitCode = code;
}
// Everything is closed by now; this only guards against a stray handle keeping the process alive.
setTimeout(() => process.exit(), 2000).unref();
