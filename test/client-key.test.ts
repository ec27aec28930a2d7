/**
 * The client a request counts for in admission, by default: its address, an
 * IPv6 one by its /56, an IPv4-mapped one as IPv4. Hostile and odd addresses
 * are keys too, never a throw.
 */
import { describe, expect, it } from 'vitest';
import { clientBlockOf, clientOfAddress, defaultClientKey } from '../src/client-key.js';

describe('the default client key', () => {
  it.each([
    ['127.0.0.1', '127.0.0.1'],
    ['::ffff:127.0.0.2', '127.0.0.2'],
    ['::FFFF:127.0.0.2', '127.0.0.2'],
    ['::1', '0:0:0:0::/56'],
    ['::', '0:0:0:0::/56'],
    ['2001:db8:0:1::1', '2001:db8:0:0::/56'],
    ['2001:db8:0:1:ffff:ffff:ffff:ffff', '2001:db8:0:0::/56'],
    ['2001:DB8:0:12ab::9', '2001:db8:0:1200::/56'],
    ['2001:db8:0:13ff:0:0:0:1', '2001:db8:0:1300::/56'],
    ['fe80::1%eth0', 'fe80:0:0:0::/56'],
    ['64:ff9b::192.0.2.1', '192.0.2.1'],
    ['64:ff9b::c633:6401', '198.51.100.1'],
    ['64:ff9b:1::192.0.2.1', '64:ff9b:1:0::/56'],
    ['0:0:0:0:0:ffff:192.0.2.1', '192.0.2.1'],
    ['::ffff:c000:201', '192.0.2.1'],
    ['::192.0.2.1', '0:0:0:0::/56'],
    // A port a proxy wrote after the address (Azure Application Gateway's X-Forwarded-For) is not part of the client.
    ['192.0.2.1:51234', '192.0.2.1'],
    ['[2001:db8:0:12ab::9]:51234', '2001:db8:0:1200::/56'],
    ['[2001:db8::1]', '2001:db8:0:0::/56'],
    ['[::ffff:192.0.2.1]:80', '192.0.2.1'],
    ['[fe80::1%eth0]:80', 'fe80:0:0:0::/56'],
    ['2001:db8::1:80', '2001:db8:0:0::/56'],
  ])('%s counts as %s', (address, client) => {
    expect(clientOfAddress(address)).toBe(client);
  });

  it('puts every address of one /56 in one client, and the next /56 in another', () => {
    const clients = new Set(
      Array.from({ length: 256 }, (_, i) => clientOfAddress(`2001:db8:0:${(0x1200 + i).toString(16)}::${i}`)),
    );
    expect(clients).toEqual(new Set(['2001:db8:0:1200::/56']));
    expect(clientOfAddress('2001:db8:0:1300::1')).not.toBe('2001:db8:0:1200::/56');
  });

  it.each([
    '',
    'unknown',
    ':::',
    '1::2::3',
    '2001:db8::g',
    '::ffff:999.0.0.1',
    `${'a:'.repeat(5000)}1`,
    'x'.repeat(10_000),
    '\u0000::1',
    '999.0.0.1:80',
    '192.0.2.1:',
    '192.0.2.1:port',
    '[192.0.2.1]:80',
    '[2001:db8::1',
    '[]:80',
  ])('takes %j, which is no IP address, as it is', (address) => {
    expect(clientOfAddress(address)).toBe(address);
  });

  it("reads the framework's ip first, then the connection's address, else 'unknown'", () => {
    expect(defaultClientKey({ headers: {}, ip: '::ffff:10.0.0.1', connection: { remoteAddress: '10.0.0.2' } })).toBe(
      '10.0.0.1',
    );
    expect(defaultClientKey({ headers: {}, connection: { remoteAddress: '2001:db8::5' } })).toBe('2001:db8:0:0::/56');
    expect(defaultClientKey({ headers: {}, connection: { remoteAddress: 42 } })).toBe('unknown');
    expect(defaultClientKey({ headers: {} })).toBe('unknown');
  });
});

describe("a client key's block", () => {
  it.each([
    ['2001:db8:0:1200::/56', '2001:db8:0::/48'],
    ['2001:db8:ab:ff00::/56', '2001:db8:ab::/48'],
    ['127.0.3.9', '127.0.3.0/24'],
    ['10.1.2.3', '10.1.2.0/24'],
    ['unknown', 'unknown'],
    ['tenant-42', 'tenant-42'],
    ['1.2.3.4.5', '1.2.3.4.5'],
    ['x'.repeat(10_000), 'x'.repeat(10_000)],
  ])('of %j is %j', (key, block) => {
    expect(clientBlockOf(key)).toBe(block);
  });

  it('is the same for every /56 of one /48, and for every address of one /24', () => {
    const v6 = ['2001:db8:7:0::1', '2001:db8:7:ff00::1', '2001:db8:7:1234::9'].map(clientOfAddress).map(clientBlockOf);
    expect(new Set(v6)).toEqual(new Set(['2001:db8:7::/48']));
    expect(clientBlockOf(clientOfAddress('::ffff:127.0.4.2'))).toBe('127.0.4.0/24');
  });
});
