/**
 * The load driver of the single-request rows: keep-alive HTTP/1.1 over node:net, one request in flight
 * per connection. It shares the 2 cores with the servers it measures, so it does as little as it can: a
 * request shape without `setupRequest` is encoded once; the answer's parser reads the status line,
 * Content-Length or chunked framing and `Connection: close`, nothing else. It takes autocannon's request
 * shape (`Request`) (and its `cannon` options), so autocannon can still drive the same requests (bench/driver.test.ts compares them).
 */
import { connect, type Socket } from 'node:net';
import { build } from 'hdr-histogram-js';
import type { Request } from 'autocannon';
import type { CannonOptions, Load } from './lib.ts';

export type { Request };

const READ_BUFFER = 64 * 1024;
const CRLF2 = Buffer.from('\r\n\r\n');

/** The bytes of a request: the head is kept for the next request of the same method, path and headers. */
function encoder(host: string) {
  let last: { method?: string; path?: string; headers?: Record<string, string>; head: string } | undefined;
  return (r: Request): string => {
    if (!last || r.method !== last.method || r.path !== last.path || r.headers !== last.headers) {
      let head = `${r.method ?? 'GET'} ${r.path ?? '/'} HTTP/1.1\r\nhost: ${host}\r\n`;
      for (const [k, v] of Object.entries(r.headers ?? {})) head += `${k}: ${v}\r\n`;
      last = { method: r.method, path: r.path, headers: r.headers, head };
    }
    const { head } = last;
    return r.body === undefined ? `${head}\r\n` : `${head}content-length: ${Buffer.byteLength(r.body)}\r\n\r\n${r.body}`;
  };
}

/** Where a chunked body ends (the index after its last CRLF) and its text, or undefined while incomplete. */
function dechunk(buf: Buffer, from: number): { end: number; body: string } | undefined {
  const parts: string[] = [];
  for (let at = from; ;) {
    const eol = buf.indexOf('\r\n', at);
    if (eol < 0) return undefined;
    const size = parseInt(buf.toString('latin1', at, eol), 16);
    if (size === 0) {
      const end = buf.indexOf(CRLF2, eol); // no trailers expected: the empty line after the last chunk
      return end < 0 ? undefined : { end: end + 4, body: parts.join('') };
    }
    if (buf.length < eol + 2 + size + 2) return undefined;
    parts.push(buf.toString('utf8', eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}

/** Runs `request` over `options.connections` keep-alive connections to `url`; the figures of autocannon's runs. */
export function drive(url: string, request: Request, options: CannonOptions): Promise<Load> {
  const { hostname, port, host } = new URL(url);
  const encode = encoder(host);
  const fixed = request.setupRequest ? undefined : Buffer.from(encode(request)); // one shape: encoded once
  const latency = build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 }); // µs
  const status: Record<string, number> = {};
  let sent = 0;
  let answered = 0;
  let non2xx = 0;
  let errors = 0;
  let stopped = false;
  let firstProblem: string | undefined;
  const started = performance.now();
  const timeoutMs = (options.timeout ?? 10) * 1000;
  const rateGap = options.rate ? 1000 / options.rate : 0; // ms between request starts, all connections together
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));

  class Connection {
    socket?: Socket;
    context: Record<string, unknown> = {};
    /** When the request in flight was due (rate) or sent: its latency counts from then. */
    since = 0;
    /** When it was written (the timeout counts from then). */
    sentAt = 0;
    busy = false;
    keepAlive = true;
    pending?: Buffer; // an answer's first bytes, copied out of the read buffer until the rest comes
    readonly readBuffer = Buffer.allocUnsafe(READ_BUFFER);

    open() {
      const socket = connect({ host: hostname, port: Number(port), noDelay: true, onread: { buffer: this.readBuffer, callback: (n) => this.read(this.readBuffer.subarray(0, n)) } });
      socket.on('error', () => {}); // 'close' follows, and counts it
      socket.on('close', () => {
        if (this.socket !== socket) return;
        this.socket = undefined;
        this.pending = undefined;
        if (this.busy) this.fail();
      });
      this.socket = socket;
      this.keepAlive = true;
    }

    next() {
      if (stopped || (options.amount !== undefined && sent >= options.amount)) return;
      const slot = sent;
      sent += 1;
      this.busy = true;
      const due = started + slot * rateGap;
      const wait = due - performance.now();
      if (wait > 0) setTimeout(() => this.send(due), wait);
      else this.send(rateGap ? due : performance.now());
    }

    send(since: number) {
      if (stopped) {
        sent -= 1; // its slot came after the end
        return;
      }
      if (!this.socket) this.open();
      this.since = since;
      this.sentAt = rateGap ? performance.now() : since;
      if (fixed) this.socket!.write(fixed);
      else this.socket!.write(encode(request.setupRequest!(request, this.context)));
    }

    /** Bytes from the socket, in the connection's read buffer: parsed at once, copied only when an answer is cut. */
    read(chunk: Buffer): boolean {
      const buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
      this.pending = undefined;
      const headEnd = buf.indexOf(CRLF2);
      if (headEnd < 0) return this.keep(buf);
      const head = buf.toString('latin1', 0, headEnd);
      const code = Number(head.slice(9, 12));
      const bodyStart = headEnd + 4;
      let body: string;
      let end: number;
      if (/\r\ntransfer-encoding:[^\r]*chunked/i.test(head)) {
        const chunked = dechunk(buf, bodyStart);
        if (!chunked) return this.keep(buf);
        ({ body, end } = chunked);
      } else {
        const length = code === 204 || code === 304 ? 0 : Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? -1);
        if (length < 0) return this.broken('an answer without Content-Length or chunked framing'); // none of ours: said, not guessed
        end = bodyStart + length;
        if (buf.length < end) return this.keep(buf);
        body = request.onResponse ? buf.toString('utf8', bodyStart, end) : '';
      }
      if (buf.length > end) return this.broken('bytes after an answer, with one request in flight');
      this.keepAlive = !/\r\nconnection:\s*close/i.test(head);
      this.answer(code, body);
      return true;
    }

    /** An answer the parser cannot frame: an error, said once at the end of the run, and a new connection. */
    broken(problem: string): boolean {
      firstProblem ??= problem;
      this.drop();
      this.fail();
      return true;
    }

    keep(buf: Buffer): boolean {
      this.pending = Buffer.from(buf); // the read buffer is reused for the next read
      return true;
    }

    answer(code: number, body: string) {
      this.busy = false;
      answered += 1;
      status[code] = (status[code] ?? 0) + 1;
      if (code < 200 || code > 299) non2xx += 1;
      latency.recordValue(Math.max(1, Math.round((performance.now() - this.since) * 1000)));
      request.onResponse?.(code, body, this.context);
      if (!this.keepAlive) this.drop();
      this.settle();
    }

    fail() {
      this.busy = false;
      errors += 1;
      this.settle();
    }

    drop() {
      const socket = this.socket;
      this.socket = undefined;
      this.pending = undefined;
      socket?.destroy();
    }

    settle() {
      if (options.amount !== undefined && answered + errors >= options.amount) stop();
      else this.next();
    }
  }

  const connections = Array.from({ length: Math.max(1, Math.min(options.connections, options.amount ?? Infinity)) }, () => new Connection());
  // A sweep for answers overdue (autocannon's timeout, 10 s by default) every second or so: cheaper than a timer per request.
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const c of connections) {
      if (c.busy && c.socket && now - c.sentAt > timeoutMs) {
        c.drop();
        c.fail();
      }
    }
  }, Math.min(1000, timeoutMs / 4));
  const deadline = options.amount === undefined ? setTimeout(() => stop(), (options.duration ?? 10) * 1000) : undefined;
  function stop() {
    if (stopped) return;
    stopped = true;
    clearInterval(sweep);
    clearTimeout(deadline);
    for (const c of connections) c.drop(); // answers still in flight are not waited for (sent counts them)
    if (firstProblem) console.error(`${url}: ${firstProblem} (counted in errors)`);
    done();
  }
  for (const c of connections) c.next();
  return finished.then(() => ({
    count: answered,
    sent,
    seconds: (performance.now() - started) / 1000,
    p50: latency.getValueAtPercentile(50) / 1000,
    p99: latency.getValueAtPercentile(99) / 1000,
    non2xx,
    errors,
    status,
  }));
}
