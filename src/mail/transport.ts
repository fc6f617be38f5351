import nodemailer from 'nodemailer';

/** One message as it leaves the server. */
export interface Envelope {
  from: string;
  to: string;
  subject: string;
  text: string;
  html: string;
}

/** Where mail goes: an SMTP server, or the development outbox. The CLI's `mail test` uses the same. */
export interface MailTransport {
  /** For people: `smtp://host:port` (never the URL's password) or `outbox`. */
  readonly name: string;
  /** Resolves the server's answer (`250 …`); rejects when it refused or did not answer in time. */
  send(envelope: Envelope): Promise<{ response: string }>;
  close(): void;
}

/** Each stage of an SMTP conversation gets this long, so a stalled server fails a try instead of holding it. */
const SMTP_TIMEOUT_MS = 15_000;

/** The query options SMTP_URL may carry, each checked here: one the server would ignore silently is refused. */
const SMTP_OPTIONS: Record<string, (value: string) => string | undefined> = {
  requireTLS: (v) => (v === 'true' || v === 'false' ? undefined : 'requireTLS must be true or false'),
  name: (v) => (/^[A-Za-z0-9.-]{1,253}$/.test(v) ? undefined : 'name must be a host name (what EHLO says)'),
};

/** Why SMTP_URL's query options are refused, or undefined (never echoes the URL: it may hold a password). */
export function smtpOptionProblem(url: string): string | undefined {
  let params: URLSearchParams;
  try {
    params = new URL(url).searchParams;
  } catch {
    return undefined;
  }
  for (const [key, value] of params) {
    const check = SMTP_OPTIONS[key];
    if (!check) return `unknown query option "${key.slice(0, 40)}" (known: ${Object.keys(SMTP_OPTIONS).join(', ')})`;
    const problem = check(value);
    if (problem) return problem;
  }
  return undefined;
}

export function smtpTransport(url: string, options: { timeoutMs?: number } = {}): MailTransport {
  const timeoutMs = options.timeoutMs ?? SMTP_TIMEOUT_MS;
  const parsed = new URL(url);
  const requireTLS = parsed.searchParams.get('requireTLS') === 'true';
  const name = parsed.searchParams.get('name') ?? undefined;
  const transporter = nodemailer.createTransport({
    host: parsed.hostname.replace(/^\[|\]$/g, ''),
    port: parsed.port ? Number(parsed.port) : parsed.protocol === 'smtps:' ? 465 : 587,
    secure: parsed.protocol === 'smtps:',
    ...(requireTLS ? { requireTLS } : {}),
    ...(name ? { name } : {}),
    ...(parsed.username ? { auth: { user: decodeURIComponent(parsed.username), pass: decodeURIComponent(parsed.password) } } : {}),
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs,
    // nodemailer logs nothing unless asked: its debug output would hold the messages (and their links).
    logger: false,
  });
  return {
    name: `${parsed.protocol}//${parsed.host}`,
    async send(envelope) {
      const info = await transporter.sendMail(envelope);
      return { response: String(info.response ?? '') };
    },
    close: () => transporter.close(),
  };
}

export interface OutboxMessage extends Envelope {
  sentAt: number;
}

/**
 * Development without a mail server: messages are kept in this process (the newest 50) and listed at
 * /dev/outbox, so a reset or a verification can be followed from `npm start` alone.
 */
export class Outbox implements MailTransport {
  readonly name = 'outbox';
  readonly messages: OutboxMessage[] = [];
  async send(envelope: Envelope) {
    this.messages.unshift({ ...envelope, sentAt: Date.now() });
    this.messages.length = Math.min(this.messages.length, 50);
    return { response: '250 kept in the development outbox' };
  }
  close() {}
}
