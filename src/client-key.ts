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
 * trust-proxy setting), else the connection's, else `'unknown'`. An IPv4
 * address mapped into IPv6 (`::ffff:192.0.2.1`) is the IPv4 address; any
 * other IPv6 address is its /56 (`2001:db8:0:1200::/56`). Anything else is
 * taken as it is.
 */
export function defaultClientKey(req: CredentialRequest): string {
  const address = req.ip ?? (req.connection as { remoteAddress?: unknown } | undefined)?.remoteAddress;
  return typeof address === 'string' ? clientOfAddress(address) : 'unknown';
}

/** `address` as a client: see {@link defaultClientKey}. */
export function clientOfAddress(address: string): string {
  if (!address.includes(':')) return address;
  const bare = address.split('%', 1)[0] as string; // a zone (`fe80::1%eth0`) names an interface, not a client
  if (!isIPv6(bare)) return address;
  const lower = bare.toLowerCase();
  if (lower.startsWith('::ffff:') && isIPv4(lower.slice(7))) return lower.slice(7);
  const groups = leadingGroups(lower);
  const kept = IPV6_CLIENT_BITS / 16; // 3.5 groups: three whole, and the high byte of the fourth
  const whole = groups.slice(0, Math.floor(kept)).map((group) => group.toString(16));
  const half = ((groups[Math.floor(kept)] as number) & 0xff00).toString(16);
  return `${[...whole, half].join(':')}::/${IPV6_CLIENT_BITS}`;
}

/** The first four 16-bit groups of a valid IPv6 address, `::` expanded (an embedded IPv4 part is always later). */
function leadingGroups(address: string): number[] {
  const [head = '', tail] = address.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  if (tail === undefined) return headGroups.slice(0, 4).map((group) => Number.parseInt(group, 16));
  const tailGroups = tail === '' ? [] : tail.split(':');
  const tailWidth = tailGroups.reduce((width, group) => width + (group.includes('.') ? 2 : 1), 0);
  const zeros: string[] = Array.from({ length: 8 - headGroups.length - tailWidth }, () => '0');
  return [...headGroups, ...zeros, ...tailGroups].slice(0, 4).map((group) => Number.parseInt(group, 16));
}
