import { lookup as dnsLookup } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';

/**
 * Where back-channel logout notices may be posted. The server posts to an URI an admin (or an admin API
 * token) chose and records how it went, so without limits it would probe the server's own network for
 * them: loopback, link-local (cloud metadata services), private ranges, the server itself. The same
 * rules run at registration (on the URI's host name) and at delivery (on every address the name resolves
 * to then, since a name can point elsewhere by the time a notice goes out).
 */
export interface BackchannelTargetRules {
  /** NODE_ENV=production: loopback and private addresses are refused too. */
  production: boolean;
  /** BACKCHANNEL_LOGOUT_ALLOW_PRIVATE: the operator's apps live on internal addresses; everything is allowed but the server itself. */
  allowPrivate: boolean;
  /** ISSUER: the server's own origin is never a target. */
  issuer?: string;
}

/** Development rules without an issuer: what a Registry uses when given none. */
export const DEVELOPMENT_TARGETS: BackchannelTargetRules = { production: false, allowPrivate: false };

export function backchannelTargetRules(config: { NODE_ENV: string; BACKCHANNEL_LOGOUT_ALLOW_PRIVATE: boolean; ISSUER: string }): BackchannelTargetRules {
  return { production: config.NODE_ENV === 'production', allowPrivate: config.BACKCHANNEL_LOGOUT_ALLOW_PRIVATE, issuer: config.ISSUER };
}

type AddressKind = 'public' | 'loopback' | 'link-local' | 'private';

function ipv4Number(address: string): number {
  return address.split('.').reduce((n, part) => n * 256 + Number(part), 0);
}

const inV4 = (n: number, base: string, bits: number) => bits === 0 || n >>> (32 - bits) === ipv4Number(base) >>> (32 - bits);

function ipv4Kind(address: string): AddressKind {
  const n = ipv4Number(address);
  if (inV4(n, '127.0.0.0', 8) || inV4(n, '0.0.0.0', 8)) return 'loopback'; // 0.0.0.0 reaches this host
  if (inV4(n, '169.254.0.0', 16)) return 'link-local';
  const reserved: [string, number][] = [
    ['10.0.0.0', 8], ['100.64.0.0', 10], ['172.16.0.0', 12], ['192.168.0.0', 16], ['192.0.0.0', 24],
    ['198.18.0.0', 15], ['224.0.0.0', 4], ['240.0.0.0', 4],
  ];
  return reserved.some(([base, bits]) => inV4(n, base, bits)) ? 'private' : 'public';
}

/** The eight 16-bit words of an IPv6 address (zone id dropped, an IPv4 tail folded in). */
function ipv6Words(address: string): number[] {
  let text = address.replace(/%.*$/, '');
  const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)?.[1];
  if (tail) {
    const n = ipv4Number(tail);
    text = `${text.slice(0, -tail.length)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const [head, rest] = text.split('::') as [string, string | undefined];
  const front = head ? head.split(':') : [];
  const back = rest ? rest.split(':') : [];
  const words = rest === undefined ? front : [...front, ...Array<string>(8 - front.length - back.length).fill('0'), ...back];
  return words.map((w) => parseInt(w, 16));
}

function ipv6Kind(address: string): AddressKind {
  const w = ipv6Words(address);
  const embeddedV4 = (hi: number, lo: number) => ipv4Kind(`${hi >>> 8}.${hi & 0xff}.${lo >>> 8}.${lo & 0xff}`);
  const zeros = (from: number, to: number) => w.slice(from, to).every((x) => x === 0);
  if (zeros(0, 7) && (w[7] === 0 || w[7] === 1)) return 'loopback'; // :: and ::1
  // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) reach an IPv4 address.
  if (zeros(0, 5) && (w[5] === 0xffff || w[5] === 0)) return embeddedV4(w[6]!, w[7]!);
  if (w[0] === 0x64 && w[1] === 0xff9b && zeros(2, 6)) return embeddedV4(w[6]!, w[7]!);
  if (w[0] === 0x2002) return embeddedV4(w[1]!, w[2]!); // 6to4
  if ((w[0]! & 0xffc0) === 0xfe80) return 'link-local';
  if ((w[0]! & 0xfe00) === 0xfc00 || (w[0]! & 0xffc0) === 0xfec0 || (w[0]! & 0xff00) === 0xff00) return 'private'; // unique local, site-local, multicast
  return 'public';
}

/** What an IP address reaches; undefined when it is not an IP address. */
function addressKind(address: string): AddressKind | undefined {
  const family = isIP(address.replace(/%.*$/, ''));
  return family === 4 ? ipv4Kind(address) : family === 6 ? ipv6Kind(address) : undefined;
}

/** Outside production loopback and private addresses serve development apps; link-local ones never do. */
function refusedKind(kind: AddressKind, rules: BackchannelTargetRules): boolean {
  if (kind === 'public' || rules.allowPrivate) return false;
  return kind === 'link-local' || rules.production;
}

const KIND_WORDS: Record<Exclude<AddressKind, 'public'>, string> = { loopback: 'a loopback', 'link-local': 'a link-local', private: 'a private' };

function isLoopbackName(host: string): boolean {
  return host === 'localhost' || host.endsWith('.localhost') || addressKind(host) === 'loopback';
}

const effectivePort = (url: URL) => url.port || (url.protocol === 'https:' ? '443' : '80');

/**
 * Why a back-channel logout URI may not be posted to under these rules (words that follow the field's name) (its host as written: a name or
 * an IP literal), or undefined. The URI has passed `redirectUriProblem` (https, or http to loopback).
 */
export function backchannelTargetProblem(uri: string, rules: BackchannelTargetRules): string | undefined {
  const url = URL.parse(uri);
  if (!url) return 'must be an absolute URI';
  // The URL parser has turned 0x7f.1, 2130706433 and the like into dotted quads already.
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const issuer = rules.issuer ? URL.parse(rules.issuer) : null;
  if (issuer && effectivePort(issuer) === effectivePort(url)) {
    const issuerHost = issuer.hostname.replace(/^\[|\]$/g, '').toLowerCase();
    if (host === issuerHost || (isLoopbackName(host) && isLoopbackName(issuerHost))) return `must not point at this server (${issuer.origin})`;
  }
  const kind = host === 'localhost' || host.endsWith('.localhost') ? 'loopback' : addressKind(host);
  if (!kind || !refusedKind(kind, rules)) return undefined;
  const where = rules.production ? ' in production' : '';
  return `must not point at ${KIND_WORDS[kind as Exclude<AddressKind, 'public'>]} address (${host})${where}; set BACKCHANNEL_LOGOUT_ALLOW_PRIVATE=true if the apps live on an internal network`;
}

/** The address a name resolved to is not allowed: the delivery names this `refused_target`, nothing more. */
export class RefusedTarget extends Error {
  readonly code = 'ERR_LATCHKEY_REFUSED_TARGET';
  constructor() {
    super('refused_target');
  }
}

/**
 * A `lookup` for node:http(s) that resolves with `resolve` (dns.lookup unless a test injects one) and
 * fails with RefusedTarget when any address the name resolves to is refused, so the connection is
 * only made to an address the rules allow (a name that also resolves elsewhere is refused whole).
 */
export function guardedLookup(rules: BackchannelTargetRules, resolve: LookupFunction = dnsLookup): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname, { ...options, all: true }, (err, resolved) => {
      if (err) return callback(err, '', 0);
      // Asked with `all: true`: a list; a single address (a resolver breaking that contract) is refused.
      const addresses = typeof resolved === 'string' ? [] : resolved;
      if (addresses.length === 0 || addresses.some((a) => refusedKind(addressKind(a.address) ?? 'private', rules))) return callback(new RefusedTarget(), '', 0);
      if (options.all) return callback(null, addresses);
      callback(null, addresses[0]!.address, addresses[0]!.family);
    });
  };
}
