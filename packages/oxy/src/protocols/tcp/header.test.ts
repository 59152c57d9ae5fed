/** TCP and UDP headers: fields, options with bounds, MSS clamping with a valid checksum after. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildIp, buildTcpPacket, buildUdpPacket, mssOption, tcpSegment } from '../ip/builder.ts';
import { l4ChecksumOk } from '../ip/l4-checksum.ts';
import { parseIp } from '../ip/packet.ts';
import { isPacketError } from '../ip/packet-error.ts';
import { parseUdpOf, udpPayload } from '../udp/header.ts';
import { clampMss, findMss, parseTcpOf, TCP_FLAG } from './header.ts';

const bad = (e: unknown) => isPacketError(e);

describe('TCP header', () => {
  it('reads ports, seq/ack, flags, data offset, window and the MSS', () => {
    for (const [src, dst] of [
      ['192.0.2.55', '203.0.113.10'],
      ['2001:db8::55', '2001:db8::10'],
    ] as const) {
      const p = parseIp(
        buildTcpPacket(src, dst, {
          srcPort: 5555,
          dstPort: 443,
          seq: 0xfffffff0,
          ack: 7,
          flags: TCP_FLAG.SYN | TCP_FLAG.ACK,
          window: 1234,
          options: Buffer.from([1, 1, ...mssOption(1460), 4, 2]), // NOP NOP MSS SACK-permitted
          payload: Buffer.from('data'),
        }),
      );
      const t = parseTcpOf(p);
      assert.deepEqual(
        [t.srcPort, t.dstPort, t.seq, t.ack, t.flags, t.window, t.headerLength, t.payloadLength],
        [5555, 443, 0xfffffff0, 7, 18, 1234, 28, 4],
      );
      assert.equal(findMss(p.buf, t), 1460);
    }
  });

  it('clamps the MSS of a SYN (aligned and odd-aligned option) and keeps the checksum valid', () => {
    for (const lead of [[], [1]] as number[][]) {
      for (const dst of ['203.0.113.10', '2001:db8::10']) {
        const src = dst.includes(':') ? '2001:db8::55' : '192.0.2.55';
        const pkt = buildTcpPacket(src, dst, {
          srcPort: 1,
          dstPort: 2,
          flags: TCP_FLAG.SYN,
          options: Buffer.from([...lead, ...mssOption(1460)]),
        });
        const p = parseIp(pkt);
        assert.equal(clampMss(p, 1360), 1360);
        assert.equal(findMss(p.buf, parseTcpOf(p)), 1360);
        assert.equal(l4ChecksumOk(p), true, `checksum after clamping (lead ${lead.length}, ${dst})`);
        assert.equal(clampMss(p, 1400), 1360, 'a lower MSS stays');
      }
    }
    const ack = parseIp(
      buildTcpPacket('10.0.0.1', '10.0.0.2', { srcPort: 1, dstPort: 2, flags: TCP_FLAG.ACK }),
    );
    assert.equal(clampMss(ack, 1000), null);
  });

  it('refuses a data offset below 5 or past the segment, and options overflowing the header', () => {
    const mk = (mut: (seg: Buffer) => void) => {
      const seg = tcpSegment({ srcPort: 1, dstPort: 2, flags: 2, options: mssOption(1460) });
      mut(seg);
      return parseIp(buildIp({ src: '10.0.0.1', dst: '10.0.0.2', protocol: 6, payload: seg }));
    };
    assert.throws(() => parseTcpOf(mk((s) => (s[12] = 0x40))), bad);
    assert.throws(() => parseTcpOf(mk((s) => (s[12] = 0xf0))), bad);
    assert.throws(() => parseTcpOf(mk((s) => (s[21] = 9))), bad); // MSS option length 9
    assert.throws(() => parseTcpOf(mk((s) => (s[21] = 3))), bad); // MSS option length 3
    assert.throws(() => parseTcpOf(mk((s) => s.fill(0x41, 20, 24))), bad); // kind 0x41 length 0x41
    const short = parseIp(
      buildIp({ src: '10.0.0.1', dst: '10.0.0.2', protocol: 6, payload: Buffer.alloc(12) }),
    );
    assert.throws(() => parseTcpOf(short), bad);
  });
});

describe('UDP header', () => {
  it('reads ports, length and payload', () => {
    const p = parseIp(buildUdpPacket('10.0.0.1', 53, '10.0.0.2', 4000, Buffer.from('answer')));
    const u = parseUdpOf(p);
    assert.deepEqual([u.srcPort, u.dstPort, u.length], [53, 4000, 14]);
    assert.equal(udpPayload(p, u).toString(), 'answer');
    assert.equal(l4ChecksumOk(p), true);
    p.buf.writeUInt16BE(0, 26); // IPv4 UDP checksum 0: none
    assert.equal(l4ChecksumOk(p), true);
  });

  it('refuses a length below 8 or past the datagram', () => {
    const pkt = buildUdpPacket('10.0.0.1', 53, '10.0.0.2', 4000, Buffer.from('answer'));
    pkt.writeUInt16BE(7, 24);
    assert.throws(() => parseUdpOf(parseIp(pkt)), bad);
    pkt.writeUInt16BE(15, 24);
    assert.throws(() => parseUdpOf(parseIp(pkt)), bad);
  });
});
