/** ICMP: parsing, quoted packets, and the errors, replies and resets the proxy generates. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatAddress } from '../ip/address.ts';
import { buildIp, buildTcpPacket, buildUdpPacket, icmpMessage } from '../ip/builder.ts';
import { l4ChecksumOk } from '../ip/l4-checksum.ts';
import { parseIp } from '../ip/packet.ts';
import { parseTcpOf, TCP_FLAG } from '../tcp/header.ts';
import { echoReply, icmpTimeExceeded, icmpUnreachable, packetTooBig, tcpReset } from './generate.ts';
import { ICMP4, ICMP6, parseIcmp, parseQuoted } from './icmp.ts';

const udp4 = (dst = '203.0.113.10', size = 10) =>
  buildUdpPacket('192.0.2.55', 5555, dst, 53, Buffer.alloc(size, 7));
const udp6 = (dst = '2001:db8::10', size = 10) =>
  buildUdpPacket('2001:db8::55', 5555, dst, 53, Buffer.alloc(size, 7));

describe('ICMP errors', () => {
  it('port unreachable quotes the original and matches back to its flow (v4 and v6)', () => {
    for (const [orig, type, code] of [
      [udp4(), ICMP4.DEST_UNREACH, 3],
      [udp6(), ICMP6.DEST_UNREACH, 4],
    ] as const) {
      const err = parseIp(icmpUnreachable(orig, 'port')!);
      assert.equal(l4ChecksumOk(err), true);
      const m = parseIcmp(err);
      assert.deepEqual([m.type, m.code, m.isError], [type, code, true]);
      const q = parseQuoted(err, m);
      assert.deepEqual([q.srcPort, q.dstPort], [5555, 53]);
      assert.equal(q.ip.buf.equals(orig), true, 'a small original is quoted whole');
      // The error goes back to the sender, from the original destination.
      assert.equal(
        formatAddress(err.buf, err.dstOffset, err.addrLength),
        formatAddress(orig, orig[0]! >> 4 === 4 ? 12 : 8, err.addrLength),
      );
    }
  });

  it('quotes as much as fits in 576 (IPv4) or 1280 (IPv6) bytes', () => {
    assert.equal(icmpUnreachable(udp4(undefined, 1400), 'host')!.length, 576);
    assert.equal(icmpTimeExceeded(udp6(undefined, 1400))!.length, 1280);
    assert.equal(icmpTimeExceeded(udp6(undefined, 100))!.length, 40 + 8 + 40 + 8 + 100);
  });

  it('packet too big carries the MTU; IPv4 only with DF set', () => {
    const big4 = parseIp(packetTooBig(udp4(undefined, 1400), 1400)!);
    const m4 = parseIcmp(big4);
    assert.deepEqual([m4.type, m4.code, m4.mtu], [3, 4, 1400]);
    const big6 = parseIcmp(parseIp(packetTooBig(udp6(undefined, 1400), 1300)!));
    assert.deepEqual([big6.type, big6.mtu], [2, 1300]);
    const noDf = buildIp({
      src: '10.0.0.1',
      dst: '10.0.0.2',
      protocol: 17,
      payload: Buffer.alloc(8),
      dontFragment: false,
    });
    assert.equal(packetTooBig(noDf, 1000), null);
    // IPv6 packet too big may answer a multicast destination (RFC 4443 §2.4 e.3); unreachable may not.
    assert.notEqual(packetTooBig(udp6('ff02::1'), 1280), null);
    assert.equal(icmpUnreachable(udp6('ff02::1'), 'port'), null);
  });

  it('never about an ICMP error, a non-first fragment, broadcast/multicast, or a non-host source', () => {
    const err = icmpUnreachable(udp4(), 'port')!;
    assert.equal(icmpUnreachable(err, 'port'), null);
    assert.equal(icmpTimeExceeded(icmpTimeExceeded(udp6())!), null);
    const frag = buildIp({
      src: '10.0.0.1',
      dst: '10.0.0.2',
      protocol: 17,
      payload: Buffer.alloc(8),
      fragment: { id: 1, offset: 8, more: false },
    });
    assert.equal(icmpUnreachable(frag, 'port'), null);
    assert.equal(icmpUnreachable(udp4('255.255.255.255'), 'port'), null);
    assert.equal(icmpUnreachable(udp4('224.0.0.1'), 'port'), null);
    assert.equal(
      icmpUnreachable(buildUdpPacket('0.0.0.0', 68, '10.0.0.1', 67, Buffer.alloc(1)), 'port'),
      null,
    );
    assert.equal(
      icmpUnreachable(buildUdpPacket('127.0.0.1', 1, '10.0.0.1', 2, Buffer.alloc(1)), 'port'),
      null,
    );
    assert.equal(icmpUnreachable(Buffer.from('garbage'), 'port'), null);
    // An echo request is not an error: it may be answered with one.
    const echo = buildIp({
      src: '10.0.0.1',
      dst: '10.0.0.2',
      protocol: 1,
      payload: icmpMessage(8, 0, 0x10001, Buffer.alloc(4)),
    });
    assert.notEqual(icmpUnreachable(echo, 'host'), null);
  });
});

describe('echo and reset', () => {
  it('answers an echo request with the same id, sequence and data (v4 and v6)', () => {
    for (const [src, dst, proto, type] of [
      ['10.0.0.2', '10.0.0.1', 1, 8],
      ['fd00::2', 'fd00::1', 58, 128],
    ] as const) {
      const req = buildIp({
        src,
        dst,
        protocol: proto,
        payload: icmpMessage(type, 0, (0x4242 << 16) | 7, Buffer.from('ping')),
      });
      const rep = parseIp(echoReply(req)!);
      const m = parseIcmp(rep);
      assert.deepEqual([m.isEcho, m.isEchoRequest, m.id, m.seq], [true, false, 0x4242, 7]);
      assert.equal(rep.buf.subarray(m.bodyOffset).toString(), 'ping');
      assert.equal(l4ChecksumOk(rep), true);
      assert.equal(formatAddress(rep.buf, rep.srcOffset, rep.addrLength), dst);
      assert.equal(echoReply(rep.buf), null, 'no reply to a reply');
    }
  });

  it('resets a SYN with RST|ACK acknowledging it, and a data segment with RST at its ACK', () => {
    const syn = buildTcpPacket('192.0.2.55', '203.0.113.10', {
      srcPort: 5555,
      dstPort: 443,
      seq: 100,
      flags: TCP_FLAG.SYN,
    });
    const r = parseIp(tcpReset(syn)!);
    const t = parseTcpOf(r);
    assert.deepEqual(
      [t.srcPort, t.dstPort, t.flags, t.seq, t.ack],
      [443, 5555, TCP_FLAG.RST | TCP_FLAG.ACK, 0, 101],
    );
    assert.equal(l4ChecksumOk(r), true);
    const data = buildTcpPacket('2001:db8::1', '2001:db8::2', {
      srcPort: 1,
      dstPort: 2,
      seq: 5,
      ack: 999,
      flags: TCP_FLAG.ACK,
      payload: Buffer.from('xyz'),
    });
    const t2 = parseTcpOf(parseIp(tcpReset(data)!));
    assert.deepEqual([t2.flags, t2.seq], [TCP_FLAG.RST, 999]);
    assert.equal(tcpReset(tcpReset(syn)!), null, 'never a reset for a reset');
  });
});
