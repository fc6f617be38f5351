import { brandOf } from '../brand.ts';
import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import { Accounts } from '../accounts/accounts.ts';
import { passwordRuleOf } from '../accounts/password-rule.ts';
import { emailSettings } from '../accounts/email.ts';
import { ConfigError, loadConfig } from '../config.ts';
import { audit } from '../observability/audit.ts';
import { createLogger } from '../observability/logger.ts';
import { Registry } from '../oidc/registry.ts';
import { Refusal } from '../problems.ts';
import { connectConfiguredRedis, describeRedis, type RedisConfig } from '../storage/open.ts';
import { RedisStore } from '../storage/redis-store.ts';
import { StorageUnavailable } from '../storage/store.ts';
import { LOCKOUT_SETTING_NAMES, lockoutSettings } from '../security/lockout.ts';
import { ActivityLog, recordActivity } from '../observability/activity.ts';
import { COMMANDS, commandContext, GROUPS, usageLine, type Command, type Values } from './commands.ts';
import { validateClientMetadata } from '../oidc/client-metadata.ts';
import { backchannelTargetRules } from '../oidc/backchannel-targets.ts';
import { login, logout, serverUrl, storedToken } from './login.ts';
import { RemoteOperations } from './remote.ts';
import { cliFieldNames, CliError, type Output } from './output.ts';

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
    ...(group ? [] : ['  latchkey login --server URL    sign in to that server in a browser (an admin, with a second factor); keeps its tokens', '  latchkey logout --server URL   forgets them']),
    '',
    '',
    'Every command takes --json (print one JSON object). Passwords are read from stdin only.',
    'latchkey --server URL <command> runs it through that server\'s admin API with the login\'s token, or --token TOKEN (or LATCHKEY_SERVER, LATCHKEY_TOKEN),',
    'which also reaches a server on its embedded store; without --server, commands work on the Redis the server uses.',
    'REDIS_URL (or REDIS_CLUSTER_NODES, or REDIS_SENTINELS and REDIS_SENTINEL_NAME) names the Redis the server uses.',
  ].join('\n');
}

/**
 * What one run of the CLI reads and writes: the process's own in bin/latchkey.js and `node
 * src/cli/main.ts`, a test's in process (test/helpers/cli.ts). Nothing else of the process is touched.
 */
export interface CliIo {
  env: Record<string, string | undefined>;
  stdin: AsyncIterable<Buffer | string> & { isTTY?: boolean };
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
  /** Waits between `login`'s polls; tests pass their own, so nothing sleeps. */
  sleep?: (ms: number) => Promise<void>;
}

/** All of stdin, without one trailing newline. Refuses a terminal, which would echo the password. */
async function readPassword(stdin: CliIo['stdin']): Promise<string> {
  if (stdin.isTTY) throw new CliError('--password-stdin reads the password from a pipe, e.g. printf \'%s\' "$PASSWORD" | latchkey …');
  const chunks: Buffer[] = [];
  for await (const chunk of stdin) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
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

/** "--flag=value" as ["--flag", "value"]; "--flag" as ["--flag", undefined]. */
function splitInline(arg: string): [string, string | undefined] {
  const at = arg.indexOf('=');
  return arg.startsWith('--') && at > 0 ? [arg.slice(0, at), arg.slice(at + 1)] : [arg, undefined];
}

/** Parses argv and runs one command; returns the exit code. */
async function runCommand(argv: string[], io: CliIo): Promise<number> {
  const { env } = io;
  const print = (text: string) => {
    io.stdout.write(`${text}\n`);
    return 0;
  };
  const args = [...argv];
  let json = false;
  let wantsHelp = false;
  // --server URL: administer a running server through its admin API (LATCHKEY_SERVER), with an access token for it (--token, LATCHKEY_TOKEN).
  let server = env.LATCHKEY_SERVER || undefined;
  let token = env.LATCHKEY_TOKEN || undefined;
  while (args[0]?.startsWith('-')) {
    const [flag, inline] = splitInline(args.shift() as string);
    if (flag === '--json') json = true;
    else if (flag === '--help' || flag === '-h') wantsHelp = true;
    else if (flag === '--server' || flag === '--token') {
      // An access token is base64url and may itself begin with "-": a token's value is taken as given.
      const value = inline ?? args.shift();
      if (!value || (flag === '--server' && value.startsWith('-'))) throw new CliError(`${flag} needs a value; ${HINT}`);
      if (flag === '--server') server = value;
      else token = value;
    } else throw new CliError(`unknown option ${flag}; ${HINT}`);
  }
  const [group, action, ...rest] = args;
  if (!group) {
    if (wantsHelp) return print(help());
    throw new CliError(`missing command; ${HINT}`);
  }
  if (group === 'login' || group === 'logout') return print(await account(group, [action, ...rest].filter((a) => a !== undefined), server, json, io));
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
  const passwordReplaced = command.passwordOr !== undefined && values[command.passwordOr] === true;
  if (passwordReplaced && values['password-stdin'] === true) throw new CliError(`--password-stdin and --${command.passwordOr}: give one of them; usage: ${usageLine(name)}`);
  if (command.password && !passwordReplaced) {
    if (values['password-stdin'] !== true) throw new CliError(`--password-stdin is required (passwords are read from stdin only${command.passwordOr ? `), or --${command.passwordOr}` : ')'}; usage: ${usageLine(name)}`);
    password = await readPassword(io.stdin);
  }

  if (server) {
    const url = serverUrl(server);
    token ??= await storedToken(url, env);
    if (!token) throw new CliError(`--server needs an access token for its admin API: run "latchkey login --server ${url}" first, or give --token (or LATCHKEY_TOKEN)`);
    const remote = new RemoteOperations(url, token);
    const output: Output = await command.run({ ops: remote, actor: { kind: 'cli' }, ...(password !== undefined ? { password } : {}) }, values, positionals);
    return print(json ? JSON.stringify(output.json) : output.text);
  }

  let config;
  try {
    // Only what the CLI uses: the server's other settings need not be valid here.
    const { REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINELS, REDIS_SENTINEL_NAME, REDIS_PASSWORD, REDIS_TIMEOUT_MS, SIGNING_KEYS_FILE, SECRETS_KEY, ISSUER, PORT, LOG_LEVEL, ADMIN_ACTIVITY_MAX, PASSWORD_BREACH_CHECK, PASSWORD_BREACH_CHECK_URL, BACKCHANNEL_LOGOUT_ALLOW_PRIVATE, SMTP_URL, MAIL_FROM, PASSKEYS } = env;
    // The lockout thresholds too: `user unlock` then builds its lockout as the server does. PASSKEYS: whether a passkey is a way in (`user unlink`).
    const lockoutEnv = Object.fromEntries(LOCKOUT_SETTING_NAMES.map((name) => [name, env[name]]));
    config = loadConfig({ REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINELS, REDIS_SENTINEL_NAME, REDIS_PASSWORD, REDIS_TIMEOUT_MS, SIGNING_KEYS_FILE, SECRETS_KEY, ISSUER, PORT, LOG_LEVEL, ADMIN_ACTIVITY_MAX, PASSWORD_BREACH_CHECK, PASSWORD_BREACH_CHECK_URL, BACKCHANNEL_LOGOUT_ALLOW_PRIVATE, SMTP_URL, MAIL_FROM, PASSKEYS, ...lockoutEnv });
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
    const { logger, operator } = auditLogger(config.LOG_LEVEL, io.stderr);
    recordActivity(logger, activity);
    const ctx = commandContext({
      store,
      // NODE_ENV read alone: the server's production guardrails are not the CLI's to enforce.
      registry: new Registry(store, { backchannelTargets: backchannelTargetRules({ ...config, NODE_ENV: env.NODE_ENV ?? 'development' }) }),
      accounts: new Accounts(store, { passwordRule: passwordRuleOf(config, logger) }),
      logger,
      validateClient: validateClientMetadata,
      actor: { kind: 'cli', ...(operator ? { operator } : {}) },
      ...(config.SIGNING_KEYS_FILE ? { signingKeysFile: config.SIGNING_KEYS_FILE } : {}),
      ...(password !== undefined ? { password } : {}),
      // TOTP: the same key and issuer name as the server (`user create --totp`).
      ...(config.SECRETS_KEY ? { secretsKey: config.SECRETS_KEY } : {}),
      issuer: config.ISSUER,
      invitations: { ttlSeconds: config.INVITATION_TTL_SECONDS, emailOn: config.EMAIL === 'on' },
      email: emailSettings(config),
      brand: brandOf(config),
      lockouts: lockoutSettings(config),
      passkeyMode: config.PASSKEYS,
    });
    const output: Output = await command.run(ctx, values, positionals);
    if (output.audit) audit(logger, output.audit.event, output.audit.fields, output.audit.msg);
    return print(json ? JSON.stringify(output.json) : output.text);
  } finally {
    await activity.flush();
    await store.close();
  }
}

/** `latchkey login|logout --server URL` (src/cli/login.ts): the server comes before or after the word. */
async function account(word: 'login' | 'logout', args: string[], server: string | undefined, json: boolean, io: CliIo): Promise<string> {
  let values: { server?: string | undefined; json?: boolean | undefined; help?: boolean | undefined };
  try {
    ({ values } = parseArgs({ args, options: { server: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new CliError(`${(err as Error).message.split(/\.\s/)[0]!.replace(/\.$/, '')}; usage: latchkey ${word} --server URL`);
  }
  if (values.help) return `Usage: latchkey ${word} --server URL`;
  const given = values.server ?? server;
  if (!given) throw new CliError(`${word} needs the server: latchkey ${word} --server URL (or LATCHKEY_SERVER)`);
  const url = serverUrl(given);
  const output = word === 'login' ? await login(url, io) : await logout(url, io.env);
  return json || values.json ? JSON.stringify(output.json) : output.text;
}

/** The server's logger (same redaction) writing synchronously to stderr, naming the CLI and who ran it. */
function auditLogger(level: string, stderr: CliIo['stderr']) {
  let operator: string | undefined;
  try {
    operator = userInfo().username;
  } catch {
    // A container user without a passwd entry: the line still says it came from the CLI.
  }
  const logger = createLogger({ level, format: 'json', destination: { write: (line: string) => stderr.write(line) } }).child({ source: 'cli', ...(operator ? { operator } : {}) });
  return { logger, operator };
}

function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, ' ').trim();
}

/**
 * Runs one command line in this process and returns its exit code: the command's output on `io.stdout`,
 * its audit line and any error (one line) on `io.stderr`. It closes every connection it opened.
 */
export async function run(argv: string[], io: CliIo): Promise<number> {
  try {
    return await runCommand(argv, io);
  } catch (err) {
    let code = 1;
    let message: string;
    if (err instanceof CliError) {
      code = err.exitCode;
      message = err.message;
    } else if (err instanceof Refusal) {
      code = 2;
      message = err.all.map((r) => r.render(cliFieldNames)).join('; ');
    } else if (err instanceof StorageUnavailable) {
      message = `Redis did not answer in time: ${(err.cause as Error | undefined)?.message ?? 'unavailable'}`;
    } else {
      message = err instanceof Error ? err.message : String(err);
    }
    io.stderr.write(`latchkey: ${oneLine(message)}\n`);
    return code;
  }
}

if (import.meta.main) {
  process.exitCode = await run(process.argv.slice(2), { env: process.env, stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
  // Everything is closed by now; this only guards against a stray handle keeping the process alive.
  setTimeout(() => process.exit(), 2000).unref();
}
