/**
 * The client a request counts for when the gate shares a provider's slots
 * fairly between clients (admission), unless `admission.clientKey` says.
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { CredentialRequest } from './types.js';

/**
 * Bits of an IPv6 address that name one client: a /56, the block an ISP
 * commonly gives one customer (and express-rate-limit's default). A single
 * host holds at least a /64, so counting each address apart would let one
 * host pose as millions of clients.
 */
const IPV6_CLIENT_BITS = 56;

/**
 * The request's client: the framework's address (`req.ip`, under its
 * trust-proxy setting), else the connection's, else `'unknown'`. A port
 * after the address, as some proxies write it in `X-Forwarded-For`
 * (`192.0.2.1:51234`, `[2001:db8::1]:51234`), is not part of the client: each
 * connection has one of its own. An IPv4 address written as IPv6
 * (IPv4-mapped `::ffff:192.0.2.1`, or NAT64 `64:ff9b::192.0.2.1`, RFC 6052)
 * is the IPv4 address; any other IPv6 address is its /56
 * (`2001:db8:0:1200::/56`). Anything else is taken as it is.
 */
export function defaultClientKey(req: CredentialRequest): string {
  const address = req.ip ?? (req.connection as { remoteAddress?: unknown } | undefined)?.remoteAddress;
  return typeof address === 'string' ? clientOfAddress(address) : 'unknown';
}

/** `address` as a client: see {@link defaultClientKey}. */
export function clientOfAddress(address: string): string {
  if (!address.includes(':')) return address;
  const host = withoutPort(address);
  if (!host.includes(':')) return host;
  const bare = host.split('%', 1)[0] as string; // a zone (`fe80::1%eth0`) names an interface, not a client
  if (!isIPv6(bare)) return address;
  const [a, b, c, d, e, f, g, h] = groups(bare);
  if (
    c === 0 &&
    d === 0 &&
    e === 0 &&
    ((a === 0 && b === 0 && f === 0xffff) || (a === 0x64 && b === 0xff9b && f === 0))
  ) {
    return `${g >> 8}.${g & 0xff}.${h >> 8}.${h & 0xff}`;
  }
  // IPV6_CLIENT_BITS: three whole groups, and the high byte of the fourth.
  return `${a.toString(16)}:${b.toString(16)}:${c.toString(16)}:${(d & 0xff00).toString(16)}::/${IPV6_CLIENT_BITS}`;
}

/**
 * `address` without the port a proxy wrote after it (RFC 7239's node syntax: `192.0.2.1:51234`,
 * `[2001:db8::1]:51234`, `[2001:db8::1]`), else as it is. A bare IPv6 address is never read as one with a port.
 */
function withoutPort(address: string): string {
  const v4 = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(address);
  if (v4 !== null) return isIPv4(v4[1] as string) ? (v4[1] as string) : address;
  const v6 = /^\[([^\]]*)\](?::\d{1,5})?$/.exec(address);
  if (v6 !== null) return isIPv6((v6[1] as string).split('%', 1)[0] as string) ? (v6[1] as string) : address;
  return address;
}

/** The eight 16-bit groups of a valid IPv6 address: `::` expanded, an embedded IPv4 tail as the last two. */
function groups(address: string): [number, number, number, number, number, number, number, number] {
  const parse = (part: string): number[] =>
    part === ''
      ? []
      : part.split(':').flatMap((group) => {
          if (!group.includes('.')) return [Number.parseInt(group, 16)];
          const [w = 0, x = 0, y = 0, z = 0] = group.split('.').map(Number);
          return [(w << 8) | x, (y << 8) | z];
        });
  const [head = '', tail] = address.split('::');
  const front = parse(head);
  const back = tail === undefined ? [] : parse(tail);
  const zeros: number[] = Array.from({ length: 8 - front.length - back.length }, () => 0);
  return [...front, ...zeros, ...back] as [number, number, number, number, number, number, number, number];
}

/**
 * The block a default client key belongs to: an IPv6 /56's /48, an IPv4 address's /24; any other key is a block of
 * its own. Admission weighs the waiters of one block together, so that an attacker holding many /56s of one /48 (or
 * many addresses of one /24) counts, when the wait is full, as one client holding that many waiters.
 */
export function clientBlockOf(key: string): string {
  const v6 = /^([0-9a-f]{1,4}):([0-9a-f]{1,4}):([0-9a-f]{1,4}):[0-9a-f]{1,4}::\/56$/.exec(key);
  if (v6 !== null) return `${v6[1]}:${v6[2]}:${v6[3]}::/48`;
  const v4 = /^(\d{1,3}\.\d{1,3}\.\d{1,3})\.\d{1,3}$/.exec(key);
  if (v4 !== null) return `${v4[1]}.0/24`;
  return key;
}
