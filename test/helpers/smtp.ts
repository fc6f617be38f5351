import { simpleParser, type ParsedMail } from 'mailparser';
import { SMTPServer } from 'smtp-server';
import { freePort } from './redis.ts';
import { eventually } from './eventually.ts';

/**
 * A real SMTP server on loopback that keeps every message it is given, parsed (mailparser). Latchkey
 * reaches it through SMTP_URL as it would reach any mail server. `stop()` and `start()` again on the
 * same port stand for an outage.
 */
export interface SmtpCatcher {
  url: string;
  port: number;
  messages: ParsedMail[];
  /** The first message to `to` whose subject matches, once it arrives. */
  waitFor(to: string, subject?: RegExp, options?: { timeoutMs?: number }): Promise<ParsedMail>;
  /** Every message to `to` so far. */
  to(to: string): ParsedMail[];
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function recipients(mail: ParsedMail): string[] {
  const list = Array.isArray(mail.to) ? mail.to : mail.to ? [mail.to] : [];
  return list.flatMap((a) => a.value.map((v) => (v.address ?? '').toLowerCase()));
}

/** The link to `path` in a message's text part (the one a person would click). */
export function linkIn(mail: ParsedMail, path: string): URL {
  const found = (mail.text ?? '').match(/https?:\/\/\S+/g)?.map((u) => new URL(u)).find((u) => u.pathname === path);
  if (!found) throw new Error(`no ${path} link in “${mail.subject}”`);
  return found;
}

export async function startSmtpCatcher(): Promise<SmtpCatcher> {
  const port = await freePort();
  const messages: ParsedMail[] = [];
  let server: SMTPServer | undefined;
  const catcher: SmtpCatcher = {
    url: `smtp://127.0.0.1:${port}`,
    port,
    messages,
    async start() {
      server = new SMTPServer({
        authOptional: true,
        // Plain SMTP on loopback: no self-signed certificate for nodemailer to refuse.
        disabledCommands: ['STARTTLS', 'AUTH'],
        logger: false,
        onData(stream, _session, done) {
          simpleParser(stream).then((mail) => {
            messages.push(mail);
            done();
          }, done);
        },
      });
      await new Promise<void>((resolve, reject) => {
        server!.once('error', reject);
        server!.listen(port, '127.0.0.1', () => resolve());
      });
    },
    async stop() {
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
      server = undefined;
    },
    to: (to) => messages.filter((m) => recipients(m).includes(to.toLowerCase())),
    async waitFor(to, subject, options = {}) {
      const find = () => catcher.to(to).find((m) => !subject || subject.test(m.subject ?? ''));
      await eventually(() => find() !== undefined, `a message to ${to}${subject ? ` (${subject})` : ''}`, { timeoutMs: options.timeoutMs ?? 10_000 });
      return find()!;
    },
  };
  await catcher.start();
  return catcher;
}
