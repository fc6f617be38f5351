import { z } from 'zod';

/**
 * The one configuration schema. Every variable, its default and its meaning live here;
 * the README's configuration table is checked against `configDocs` by a test.
 */
const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

export const configDocs: Record<string, string> = {
  NODE_ENV: '`development`, `production` or `test`. Production enforces the guardrails (Redis required, https issuer).',
  PORT: 'TCP port to listen on.',
  HOST: 'Interface to bind.',
  ISSUER: 'The public URL of the server (OIDC `iss`).',
  REDIS_URL: 'Redis to keep everything in (`redis://…` or `rediss://…`). Unset: the embedded in-memory store (development only).',
  LOG_LEVEL: 'pino level: `fatal`, `error`, `warn`, `info`, `debug`, `trace` or `silent`.',
  TRUST_PROXY: '`true` when behind a TLS-terminating proxy that sets `X-Forwarded-*` (then cookies are `Secure`).',
  REDIS_TIMEOUT_MS: 'Deadline for one Redis command; past it the request fails with 503.',
  SIGNING_KEYS_FILE: 'A JSON Web Key Set (private keys) to sign with instead of keys generated and kept in storage.',
  COOKIE_KEYS: 'Comma-separated secrets that sign cookies (first one signs) instead of keys generated and kept in storage.',
};

const schema = z
  .object({
    NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
    PORT: z.coerce.number().int().min(0).max(65535).default(3000),
    HOST: z.string().min(1).default('0.0.0.0'),
    ISSUER: z
      .url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' })
      .refine((url) => !/[?#]/.test(url), 'must not have a query or fragment (OIDC Core 1.0 §1.2)')
      .optional(),
    REDIS_URL: z.url({ protocol: /^rediss?$/, error: 'must be a redis:// or rediss:// URL' }).optional(),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    TRUST_PROXY: bool.default(false),
    REDIS_TIMEOUT_MS: z.coerce.number().int().min(10).max(60000).default(1000),
    SIGNING_KEYS_FILE: z.string().min(1).optional(),
    COOKIE_KEYS: z
      .string()
      .transform((s) => s.split(',').map((k) => k.trim()).filter(Boolean))
      .pipe(z.array(z.string().min(32, 'each cookie key needs at least 32 characters')).min(1))
      .optional(),
  })
  .transform((env) => ({
    ...env,
    ISSUER: (env.ISSUER ?? `http://localhost:${env.PORT}`).replace(/\/+$/, ''),
  }))
  .superRefine((env, ctx) => {
    if (env.NODE_ENV !== 'production') return;
    if (!env.REDIS_URL) {
      ctx.addIssue({ code: 'custom', path: ['REDIS_URL'], message: 'is required in production (the embedded store keeps nothing across restarts and is not shared between nodes)' });
    }
    const issuer = new URL(env.ISSUER);
    if (issuer.protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(issuer.hostname)) {
      ctx.addIssue({ code: 'custom', path: ['ISSUER'], message: 'must be https in production (http is only allowed for localhost)' });
    }
  });

export type Config = z.output<typeof schema>;

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid configuration:\n${problems.join('\n')}`);
    this.problems = problems;
  }
}

/** Reads the configuration from an environment; throws ConfigError with one line per problem. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // An empty variable means "unset", as shells and compose files often write them.
  const present = Object.fromEntries(
    Object.keys(configDocs).filter((k) => env[k] !== undefined && env[k] !== '').map((k) => [k, env[k]]),
  );
  const result = schema.safeParse(present);
  if (result.success) return result.data;
  throw new ConfigError(
    result.error.issues.map((issue) => {
      const name = issue.path.join('.') || 'configuration';
      const value = typeof issue.path[0] === 'string' && !/KEY|SECRET/.test(issue.path[0]) ? present[issue.path[0]] : undefined;
      // A URL may carry a password (redis://:password@host): never echo what precedes its '@'.
      const shown = value?.replace(/^([a-z][a-z0-9+.-]*:\/*)?[^@]*@/i, '$1***@');
      return `${name}: ${issue.message}${shown !== undefined ? ` (got "${shown}")` : ''}`;
    }),
  );
}
