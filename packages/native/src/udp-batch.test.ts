/**
 * The address formatting of UdpBatch against Node's own (`net.SocketAddress`), so a session key
 * or a log line made from a batch equals one made from a Node socket: random addresses, and
 * addresses with zero runs of every length and place, v4-mapped and v4-compatible ones.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { formatIpv4, formatIpv6 } from './udp-batch.ts';

function nodeForm(groups: number[]): string {
  const text = groups.map((g) => g.toString(16)).join(':');
  return new net.SocketAddress({ address: text, family: 'ipv6' }).address;
}

function words(groups: number[]): [number, number, number, number] {
  const w = (i: number): number => ((groups[i] as number) << 16) | (groups[i + 1] as number) | 0;
  return [w(0), w(2), w(4), w(6)];
}

test('IPv6 text equals Node’s for zero runs of every length and place, and random addresses', () => {
  const cases: number[][] = [];
  for (let at = 0; at < 8; at++)
    for (let len = 0; at + len <= 8; len++) {
      const g = Array.from({ length: 8 }, (_, i) => (i >= at && i < at + len ? 0 : 0x1000 + i));
      cases.push(g);
    }
  cases.push([0, 0, 0, 0, 0, 0xffff, 0x7f00, 1], [0, 0, 0, 0, 0, 0, 0x102, 0x304], [0, 0, 0, 0, 0, 0, 0, 1]);
  cases.push([0, 0, 0, 0, 0, 0, 0, 0], [0x2001, 0xdb8, 0, 0, 1, 0, 0, 1], [0xfe80, 0, 0, 0, 0, 0, 0, 0]);
  let seed = 7;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed;
  };
  for (let n = 0; n < 5000; n++)
    cases.push(Array.from({ length: 8 }, () => (rand() % 3 === 0 ? 0 : rand() & 0xffff)));
  for (const g of cases) assert.equal(formatIpv6(...words(g)), nodeForm(g), g.join(','));
});

test('IPv4 text from a host-order word', () => {
  assert.equal(formatIpv4(0x7f000001), '127.0.0.1');
  assert.equal(formatIpv4(0xc0a80a01 | 0), '192.168.10.1');
  assert.equal(formatIpv4(-1), '255.255.255.255');
});
