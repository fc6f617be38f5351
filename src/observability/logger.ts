import cluster from 'node:cluster';
import pino, { type DestinationStream, type Logger } from 'pino';

/** Names of fields that may hold a secret. */
export const SECRET_FIELDS = [
  'password',
  'newPassword',
  'currentPassword',
  'token',
  'access_token',
  'refresh_token',
  'id_token',
  'logout_token',
  'secret',
  'client_secret',
  'clientSecret',
  'client_assertion',
  'code',
  'code_verifier',
  'otp',
  'totp',
  'totpSecret',
  'recoveryCodes',
  'recovery_code',
  'cookie',
  'cookies',
  'authorization',
  'Authorization',
  'dpop',
  'DPoP',
  '_csrf',
];

/** Paths that may hold a secret (top level and one level deep, headers anywhere); replaced before a line is written. */
export const REDACT_PATHS = [
  ...SECRET_FIELDS.flatMap((f) => [f, `*.${f}`]),
  'headers.authorization',
  'headers.cookie',
  'headers["set-cookie"]',
  'headers.dpop',
  '*.headers.authorization',
  '*.headers.cookie',
  '*.headers["set-cookie"]',
  '*.headers.dpop',
  // ioredis reply errors carry the command and its arguments (stored payloads).
  'err.command',
  '*.command',
];

export type LogFormat = 'json' | 'pretty';

/** `pretty` when asked for, or in development on a terminal without a choice; JSON otherwise. */
export function chooseLogFormat(format: LogFormat | undefined, nodeEnv: string, isTTY: boolean | undefined): LogFormat {
  if (format) return format;
  return nodeEnv === 'development' && isTTY ? 'pretty' : 'json';
}

function prettyAvailable(): boolean {
  try {
    import.meta.resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}

/**
 * Standard output, written off the event loop and in batches: lines gather until 3 kB (or 100 ms have
 * passed) and go to libuv's pool in one write, so a busy server makes one write per ~20 request lines
 * instead of one per line (the request path makes no write system call). Each write holds whole lines
 * and at most 4 kB, so lines of several workers on one pipe never mix (PIPE_BUF); pino writes what is
 * left synchronously when the process exits, a crash included.
 */
function stdout(): DestinationStream {
  return pino.destination({ dest: 1, sync: false, maxWrite: 4096, minLength: 3072, periodicFlush: 100 });
}

export function createLogger(options: { level: string; format?: LogFormat; pretty?: boolean; destination?: DestinationStream }): Logger {
  let pretty = options.format === 'pretty' || options.pretty === true;
  // pino-pretty is a dev dependency: a production install has no pretty printer, so JSON it is.
  const missingPretty = pretty && !prettyAvailable();
  if (missingPretty) pretty = false;
  const settings = {
    level: options.level,
    // Under WORKERS > 1, which worker wrote the line.
    base: { service: 'latchkey', ...(cluster.isWorker ? { worker: cluster.worker!.id } : {}) },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  };
  const logger = pretty
    ? pino({ ...settings, transport: { target: 'pino-pretty', options: { colorize: true } } })
    : pino(settings, options.destination ?? stdout());
  if (missingPretty) logger.warn('LOG_FORMAT=pretty needs the dev dependency pino-pretty, which is not installed: logging JSON');
  return logger;
}

const unredactedChildren = new WeakMap<Logger, Logger>();

/**
 * The same logger without redaction, for the lines of the hot paths that are built only from fixed,
 * secret-free fields (the request line, `token_issued`): matching ~70 redaction paths cost more CPU
 * than the rest of a token request (bench/profile.ts), and there is nothing in those lines to redact.
 */
export function withoutRedaction(logger: Logger): Logger {
  let child = unredactedChildren.get(logger);
  if (!child) {
    child = logger.child({}, { redact: [] });
    unredactedChildren.set(logger, child);
  }
  return child;
}

export type { Logger };
