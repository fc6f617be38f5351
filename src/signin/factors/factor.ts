import { audit, type AuditEvent } from '../../observability/audit.ts';
import type { Logger } from '../../observability/logger.ts';
import type { Metrics } from '../../observability/metrics.ts';
import type { Factor as LockoutBucket, Lockout } from '../../security/lockout.ts';

/**
 * Every check of something a person knows or holds, wrapped in the lockout: asked first (a locked
 * account or IP is refused even with the right answer, and nothing is verified), counted after, per
 * factor. The sign-in pages and the account page use these and nothing else, so no path skips it.
 *
 * A factor is one implementation of `Factor` (one file each: password.ts, totp.ts, recovery-code.ts,
 * passkey.ts); `FactorCheck.check` is the one place that asks the lockout, verifies, and writes the
 * metric and the audit event.
 *
 * The lockout's account key is the normalized email: it exists before we know whether the account
 * does, so an unknown account is throttled exactly like a known one.
 */
export type Checked<T = object> = ({ status: 'ok' } & T) | { status: 'failed'; reason: string } | { status: 'locked'; retryAfterSeconds: number };

/**
 * What a verification proved (`ok`), or why not (`reason` is what the metric, the audit and the page see).
 * `counted: false`: a failure that proves nothing about anyone (a passkey no account holds), kept out of every lockout.
 */
export type Verified<P extends object> = ({ ok: true } & P) | { ok: false; reason: string; counted?: false };

/** Whose attempt this is, for the lockout: its account key (normalized email, or a digest when nobody is known). */
export interface Subject {
  key: string;
}

/** What one check reports: a counter to bump and an audit event to write (ids only, never what was typed). */
export interface Report {
  metric?: { counter: 'signInFailures'; labels: { reason: string } } | { counter: 'secondFactorFailures'; labels: { method: string; reason: string } } | { counter: 'passkeys'; labels: { event: string; detail: string } };
  audit?: { event: AuditEvent; fields: Record<string, unknown>; msg: string };
}

/**
 * One way to prove who you are (or to set one up). `name` is the lockout bucket its failures count in;
 * `subject` says whose attempt it is; `verify` checks the answer (after the lockout allowed it);
 * `succeeded` and `failed` say what the metric and the audit log record.
 */
export interface Factor<I, P extends object, S extends Subject = Subject> {
  readonly name: LockoutBucket;
  subject(input: I, ip: string): S | Promise<S>;
  verify(input: I, subject: S): Promise<Verified<P>>;
  succeeded(proven: P, input: I, ip: string): Report;
  /** `reason` is `locked` when the lockout refused the attempt before anything was verified. */
  failed(reason: string, input: I, subject: S, ip: string): Report;
}

export class FactorCheck {
  readonly #lockout: Lockout;
  readonly #metrics: Metrics;
  readonly #logger: Logger;

  constructor(deps: { lockout: Lockout; metrics: Metrics; logger: Logger }) {
    this.#lockout = deps.lockout;
    this.#metrics = deps.metrics;
    this.#logger = deps.logger;
  }

  /** The one generic check: lockout first, then the factor's verification, then the count, the metric and the audit event. */
  async check<I, P extends object, S extends Subject>(factor: Factor<I, P, S>, input: I, ip: string): Promise<Checked<P>> {
    const subject = await factor.subject(input, ip);
    let verified: Verified<P> = { ok: false, reason: 'invalid' };
    const result = await this.#lockout.attempt({ factor: factor.name, account: subject.key, ip }, async () => {
      verified = await factor.verify(input, subject);
      return verified.ok || (verified.counted === false ? 'not-counted' : false);
    });
    const done = verified as Verified<P>;
    if (result.status === 'ok' && done.ok) {
      const { ok: _, ...proven } = done;
      this.#report(factor.succeeded(proven as P, input, ip));
      return { status: 'ok', ...(proven as P) };
    }
    const reason = result.status === 'locked' ? 'locked' : done.ok ? 'invalid' : done.reason;
    this.#report(factor.failed(reason, input, subject, ip));
    return result.status === 'locked' ? result : { status: 'failed', reason };
  }

  #report({ metric, audit: event }: Report) {
    if (metric?.counter === 'signInFailures') this.#metrics.signInFailures.inc(metric.labels);
    else if (metric?.counter === 'secondFactorFailures') this.#metrics.secondFactorFailures.inc(metric.labels);
    else if (metric?.counter === 'passkeys') this.#metrics.passkeys.inc(metric.labels);
    if (event) audit(this.#logger, event.event, event.fields, event.msg);
  }
}
