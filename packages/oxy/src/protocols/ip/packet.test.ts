/** IPv4/IPv6 parsing and building: fields, options, extension headers, malformed input. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatAddress } from './address.ts';
import { buildIp, buildTcpPacket, buildUdpPacket, mssOption, udpDatagram } from './builder.ts';
import { internetChecksum } from './checksum.ts';
import { fillChecksums, fillIpv4Checksum, l4ChecksumOk } from './l4-checksum.ts';
import { IP_PROTO, MAX_EXTENSION_HEADERS, parseIp } from './packet.ts';
import { isPacketError, type PacketDropReason } from './packet-error.ts';

function refused(buf: Buffer, reason: PacketDropReason, opts?: Parameters<typeof parseIp>[1]): void {
  assert.throws(
    () => parseIp(buf, opts),
    (e: unknown) => isPacketError(e) && e.reason === reason && e.code === 'OXY_ERR_PACKET_MALFORMED',
  );
}

/** An IPv6 packet with the given extension headers (each: [type, bytes incl. next/len]). */
function v6With(headers: [number, Buffer][], upper: number, payload: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < headers.length; i++) {
    const h = Buffer.from(headers[i]![1]);
    h[0] = i + 1 < headers.length ? headers[i + 1]![0] : upper;
    parts.push(h);
  }
  const body = Buffer.concat([...parts, payload]);
  const pkt = buildIp({
    src: '2001:db8::1',
    dst: '2001:db8::2',
    protocol: upper,
    payload: body,
    fillChecksum: false,
  });
  pkt[6] = headers.length > 0 ? headers[0]![0] : upper;
  return pkt;
}

const opts8 = () => Buffer.from([0, 0, 1, 4, 0, 0, 0, 0]); // next, len 0, PadN(4)

describe('IPv4', () => {
  it('parses a TCP SYN built with an MSS option; both checksums verify', () => {
    const pkt = buildTcpPacket('192.0.2.55', '203.0.113.10', {
      srcPort: 5555,
      dstPort: 443,
      seq: 1000,
      flags: 2,
      options: mssOption(1460),
    });
    const p = parseIp(pkt);
    assert.equal(p.version, 4);
    assert.equal(p.protocol, IP_PROTO.TCP);
    assert.equal(p.l4Offset, 20);
    assert.equal(formatAddress(p.buf, p.srcOffset, 4), '192.0.2.55');
    assert.equal(formatAddress(p.buf, p.dstOffset, 4), '203.0.113.10');
    assert.equal(p.fragment, null);
    assert.equal(p.dontFragment, true);
    assert.equal(internetChecksum(pkt, 0, 20), 0);
    assert.equal(l4ChecksumOk(p), true);
    pkt[30] = pkt[30]! ^ 1; // flip a bit of the TCP header
    assert.equal(l4ChecksumOk(parseIp(pkt)), false);
  });

  it('fillChecksums repairs a packet a hook rewrote (new destination port and TTL)', () => {
    const p = parseIp(buildUdpPacket('10.0.0.1', 1, '10.0.0.2', 2, Buffer.from('payload')));
    p.buf.writeUInt16BE(5353, p.l4Offset + 2);
    p.buf[8] = 9;
    assert.equal(l4ChecksumOk(p), false);
    assert.throws(() => parseIp(p.buf));
    fillChecksums(p);
    assert.equal(l4ChecksumOk(parseIp(p.buf)), true);
  });

  it('trims a buffer longer than the total length; refuses one shorter', () => {
    const pkt = buildUdpPacket('10.0.0.1', 1, '10.0.0.2', 2, Buffer.from('hi'));
    assert.equal(parseIp(Buffer.concat([pkt, Buffer.alloc(6)])).buf.length, pkt.length);
    refused(pkt.subarray(0, pkt.length - 1), 'truncated');
    refused(pkt.subarray(0, 19), 'truncated');
  });

  it('refuses a bad IHL, a total length below the header, a bad checksum, version 5', () => {
    const pkt = buildUdpPacket('10.0.0.1', 1, '10.0.0.2', 2, Buffer.from('hi'));
    const ihl = Buffer.from(pkt);
    ihl[0] = 0x44;
    refused(ihl, 'bad_header_length');
    const big = Buffer.from(pkt);
    big[0] = 0x4f; // 60-byte header in a 30-byte packet
    refused(big, 'truncated');
    const tl = Buffer.from(pkt);
    tl.writeUInt16BE(12, 2);
    refused(tl, 'bad_total_length');
    const ck = Buffer.from(pkt);
    ck[10] = ck[10]! ^ 0xff;
    refused(ck, 'bad_checksum');
    assert.equal(parseIp(ck, { verifyChecksum: false }).protocol, IP_PROTO.UDP);
    const v5 = Buffer.from(pkt);
    v5[0] = 0x55;
    refused(v5, 'bad_version');
    refused(Buffer.alloc(0), 'truncated');
  });

  it('walks options with bounds: NOP, EOL, a record-route; refuses one overflowing the header', () => {
    const body = udpDatagram(1, 2, Buffer.from('x'));
    const withOpts = (opts: number[]) => {
      const base = buildIp({ src: '10.0.0.1', dst: '10.0.0.2', protocol: IP_PROTO.UDP, payload: body });
      const o = Buffer.from(opts);
      const pkt = Buffer.concat([base.subarray(0, 20), o, base.subarray(20)]);
      pkt[0] = 0x40 | ((20 + o.length) / 4);
      pkt.writeUInt16BE(pkt.length, 2);
      const p = { version: 4, buf: pkt, l4Offset: 20 + o.length } as Parameters<typeof fillIpv4Checksum>[0];
      fillIpv4Checksum(p);
      return pkt;
    };
    assert.equal(parseIp(withOpts([1, 1, 1, 0])).l4Offset, 24);
    assert.equal(parseIp(withOpts([7, 7, 4, 0, 0, 0, 0, 0])).l4Offset, 28);
    refused(withOpts([1, 1, 7, 9]), 'bad_options'); // length 9 runs past the 24-byte header
    refused(withOpts([1, 1, 1, 7]), 'bad_options'); // no length byte
    refused(withOpts([7, 1, 0, 0]), 'bad_options'); // length below 2
  });

  it('reads fragments: id, offset in bytes, more-fragments; refuses one past 65535', () => {
    const f = parseIp(
      buildIp({
        src: '10.0.0.1',
        dst: '10.0.0.2',
        protocol: 17,
        payload: Buffer.alloc(16),
        fragment: { id: 77, offset: 1480, more: true },
      }),
    );
    assert.deepEqual(f.fragment, { id: 77, offset: 1480, more: true });
    assert.equal(f.dontFragment, false);
    refused(
      buildIp({
        src: '10.0.0.1',
        dst: '10.0.0.2',
        protocol: 17,
        payload: Buffer.alloc(64),
        fragment: { id: 1, offset: 65528, more: false },
      }),
      'bad_fragment',
    );
  });

  it('a quoted packet may be cut short and skips the checksum', () => {
    const pkt = buildUdpPacket('10.0.0.1', 1, '10.0.0.2', 2, Buffer.alloc(100));
    const q = parseIp(pkt.subarray(0, 28), { quoted: true });
    assert.equal(q.protocol, IP_PROTO.UDP);
    assert.equal(q.buf.length, 28);
  });
});

describe('IPv6', () => {
  it('parses a plain UDP packet', () => {
    const pkt = buildUdpPacket('2001:db8::1', 53, '2001:db8::2', 5353, Buffer.from('q'));
    const p = parseIp(pkt);
    assert.equal(p.version, 6);
    assert.equal(p.l4Offset, 40);
    assert.equal(p.protocol, IP_PROTO.UDP);
    assert.equal(formatAddress(p.buf, p.dstOffset, 16), '2001:db8::2');
    assert.equal(l4ChecksumOk(p), true);
  });

  it('walks hop-by-hop, destination options, routing and fragment headers to the upper layer', () => {
    const frag = Buffer.from([0, 0, 0, 0, 0, 0, 0, 9]); // atomic fragment (offset 0, M = 0)
    const pkt = v6With(
      [
        [0, opts8()],
        [60, opts8()],
        [43, Buffer.from([0, 0, 0, 0, 0, 0, 0, 0])],
        [44, frag],
      ],
      IP_PROTO.UDP,
      udpDatagram(1, 2, Buffer.from('x')),
    );
    const p = parseIp(pkt);
    assert.equal(p.protocol, IP_PROTO.UDP);
    assert.equal(p.l4Offset, 40 + 32);
    assert.equal(p.fragment, null, 'an atomic fragment is a whole packet');
    assert.equal(p.fragmentHeaderOffset, 64);
  });

  it('a non-first fragment stops at the fragment header', () => {
    const frag = Buffer.from([0, 0, 0x05, 0x01, 0, 0, 0x12, 0x34]); // offset 160, M = 1
    const p = parseIp(v6With([[44, frag]], IP_PROTO.TCP, Buffer.alloc(16)));
    assert.deepEqual(p.fragment, { id: 0x1234, offset: 0x0500, more: true });
    assert.equal(p.protocol, IP_PROTO.TCP);
    assert.equal(p.l4Offset, 48);
    assert.equal(p.fragmentNextHeaderField, 6);
  });

  it('refuses hop-by-hop not first, too many headers, overflowing headers and options', () => {
    refused(
      v6With(
        [
          [60, opts8()],
          [0, opts8()],
        ],
        17,
        Buffer.alloc(8),
      ),
      'bad_extension_header',
    );
    const many: [number, Buffer][] = Array.from({ length: MAX_EXTENSION_HEADERS + 1 }, () => [60, opts8()]);
    refused(v6With(many, 17, Buffer.alloc(8)), 'too_many_extension_headers');
    const long = v6With([[60, opts8()]], 59, Buffer.alloc(0));
    long[41] = 3; // claims 32 bytes in an 8-byte remainder
    refused(long, 'truncated');
    const badOpt = v6With([[60, Buffer.from([0, 0, 1, 9, 0, 0, 0, 0])]], 59, Buffer.alloc(0));
    refused(badOpt, 'bad_options');
    refused(
      v6With(
        [
          [44, Buffer.alloc(8)],
          [44, Buffer.alloc(8)],
        ],
        17,
        Buffer.alloc(8),
      ),
      'bad_fragment',
    );
    const cut = v6With([[44, Buffer.from([0, 0, 0, 1, 0, 0, 0, 1])]], 17, Buffer.alloc(7));
    refused(cut, 'bad_fragment'); // M = 1 with 7 bytes of data: not a multiple of 8
  });

  it('refuses a payload length past the buffer and jumbograms', () => {
    const pkt = buildUdpPacket('::1', 1, '::2', 2, Buffer.from('abc'));
    refused(pkt.subarray(0, pkt.length - 1), 'truncated');
    const jumbo = Buffer.from(pkt);
    jumbo.writeUInt16BE(0, 4);
    refused(jumbo, 'bad_total_length');
  });
});
