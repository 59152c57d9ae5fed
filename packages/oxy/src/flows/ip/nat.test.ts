/** The upgrade NAT: both directions with valid checksums, lookups, ICMP errors, bounds, expiry. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { icmpUnreachable } from '../../protocols/icmp/generate.ts';
import { parseIcmp, parseQuoted } from '../../protocols/icmp/icmp.ts';
import { formatAddress } from '../../protocols/ip/address.ts';
import { buildTcpPacket, buildUdpPacket, mssOption } from '../../protocols/ip/builder.ts';
import { internetChecksum } from '../../protocols/ip/checksum.ts';
import { l4ChecksumOk } from '../../protocols/ip/l4-checksum.ts';
import { type IpPacket, parseIp } from '../../protocols/ip/packet.ts';
import { findMss, parseTcpOf, TCP_FLAG } from '../../protocols/tcp/header.ts';
import { FlowTracker } from './flow-tracker.ts';
import { NatMapping, UpgradeNat } from './nat.ts';

const nat = () =>
  new UpgradeNat({
    v4: { pool: '10.9.0.0/16', listener: { address: '10.0.0.1', port: 8080 } },
    v6: { pool: 'fd00:9::/64', listener: { address: 'fd00::1', port: 8080 } },
    clampMss: 1360,
  });

function ends(p: IpPacket): string {
  const a = (o: number) => formatAddress(p.buf, o, p.addrLength);
  return `${a(p.srcOffset)}:${p.buf.readUInt16BE(p.l4Offset)} > ${a(p.dstOffset)}:${p.buf.readUInt16BE(p.l4Offset + 2)}`;
}

function valid(p: IpPacket): void {
  if (p.version === 4) assert.equal(internetChecksum(p.buf, 0, p.l4Offset), 0, 'IPv4 header checksum');
  assert.equal(l4ChecksumOk(p), true, 'upper-layer checksum');
}

describe('upgrade NAT', () => {
  for (const [client, server, slotPrefix, listener] of [
    ['192.0.2.55', '203.0.113.10', '10.9.0.', '10.0.0.1'],
    ['2001:db8::55', '2001:db8::10', 'fd00:9::', 'fd00::1'],
  ] as const) {
    it(`${client.includes(':') ? 'IPv6' : 'IPv4'}: SYN in, SYN|ACK out, checksums valid, original destination found`, () => {
      const n = nat();
      const syn = parseIp(
        buildTcpPacket(client, server, {
          srcPort: 5555,
          dstPort: 443,
          seq: 1,
          flags: TCP_FLAG.SYN,
          options: mssOption(1460),
        }),
      );
      const m = n.map(syn);
      assert.ok(m instanceof NatMapping);
      assert.equal(n.map(syn), m, 'the same flow keeps its slot');
      assert.equal(n.rewriteOutbound(syn), m);
      valid(syn);
      assert.equal(ends(syn), `${slotPrefix}1:1024 > ${listener}:8080`);
      assert.equal(findMss(syn.buf, parseTcpOf(syn)), 1360, 'MSS clamped on the way in');

      const synAck = parseIp(
        buildTcpPacket(listener, `${slotPrefix}1`, {
          srcPort: 8080,
          dstPort: 1024,
          flags: TCP_FLAG.SYN | TCP_FLAG.ACK,
        }),
      );
      assert.equal(n.rewriteInbound(synAck), m);
      valid(synAck);
      assert.equal(ends(synAck), `${server}:443 > ${client}:5555`);

      const accepted = client.includes(':') ? `${slotPrefix}1` : `::ffff:${slotPrefix}1`;
      assert.deepEqual(n.originalDestination(accepted, 1024)?.originalDestination, {
        address: server,
        port: 443,
      });
      assert.deepEqual(n.originalDestination(accepted, 1024)?.client, { address: client, port: 5555 });
      assert.equal(n.originalDestination(accepted, 1025), undefined);
      assert.equal(n.originalDestination('junk', 1024), undefined);
    });
  }

  it('UDP both ways, including an IPv4 datagram without a checksum', () => {
    const n = nat();
    const q = parseIp(buildUdpPacket('192.0.2.55', 4000, '198.51.100.53', 53, Buffer.from('query')));
    n.map(q);
    n.rewriteOutbound(q);
    valid(q);
    const none = parseIp(buildUdpPacket('192.0.2.55', 4000, '198.51.100.53', 53, Buffer.from('again')));
    none.buf.writeUInt16BE(0, 26);
    n.rewriteOutbound(none);
    assert.equal(none.buf.readUInt16BE(26), 0, 'a zero checksum stays zero');
    const a = parseIp(buildUdpPacket('10.0.0.1', 8080, '10.9.0.1', 1024, Buffer.from('answer')));
    n.rewriteInbound(a);
    valid(a);
    assert.equal(ends(a), '198.51.100.53:53 > 192.0.2.55:4000');
  });

  it('translates the namespace kernel ICMP error about a slot back to the client', () => {
    const n = nat();
    const syn = parseIp(
      buildTcpPacket('192.0.2.55', '203.0.113.10', { srcPort: 5555, dstPort: 443, flags: TCP_FLAG.SYN }),
    );
    n.map(syn);
    n.rewriteOutbound(syn);
    const err = parseIp(icmpUnreachable(syn, 'port')!); // from 10.0.0.1 about 10.9.0.1:1024 > 10.0.0.1:8080
    assert.ok(n.rewriteInbound(err));
    valid(err);
    assert.equal(formatAddress(err.buf, err.srcOffset, 4), '203.0.113.10');
    assert.equal(formatAddress(err.buf, err.dstOffset, 4), '192.0.2.55');
    const q = parseQuoted(err, parseIcmp(err));
    assert.equal(ends(q.ip), '192.0.2.55:5555 > 203.0.113.10:443');
    assert.equal(internetChecksum(q.ip.buf, 0, 20), 0, 'quoted IPv4 header checksum');
    assert.equal(l4ChecksumOk(q.ip), true, 'quoted TCP checksum (whole segment quoted)');
  });

  it("a mapped flow's packet cut short inside its TCP header is left alone, both ways", () => {
    const n = nat();
    const syn = parseIp(
      buildTcpPacket('192.0.2.55', '203.0.113.10', { srcPort: 5555, dstPort: 443, flags: TCP_FLAG.SYN }),
    );
    n.map(syn);
    const cut = (b: Buffer) => {
      const c = Buffer.from(b.subarray(0, 32)); // 12 bytes of TCP: ports present, checksum not
      c.writeUInt16BE(32, 2);
      return parseIp(c, { verifyChecksum: false });
    };
    assert.equal(n.rewriteOutbound(cut(syn.buf)), null);
    const back = buildTcpPacket('10.0.0.1', '10.9.0.1', {
      srcPort: 8080,
      dstPort: 1024,
      flags: TCP_FLAG.ACK,
    });
    assert.equal(n.rewriteInbound(cut(back)), null);
  });

  it('packets of unmapped flows and slots are left alone', () => {
    const n = nat();
    const p = parseIp(
      buildTcpPacket('192.0.2.1', '203.0.113.1', { srcPort: 1, dstPort: 2, flags: TCP_FLAG.ACK }),
    );
    const copy = Buffer.from(p.buf);
    assert.equal(n.rewriteOutbound(p), null);
    assert.equal(n.rewriteInbound(p), null);
    assert.equal(p.buf.equals(copy), true);
  });

  it('bounded: the pool runs out, the table fills, slots rotate, refusals are reasons', () => {
    const small = new UpgradeNat({
      v4: { pool: '10.9.0.0/30', listener: { address: '10.0.0.1', port: 8080 } },
      ports: [2000, 2001],
    });
    const flow = (port: number) =>
      parseIp(
        buildTcpPacket('192.0.2.55', '203.0.113.10', { srcPort: port, dstPort: 443, flags: TCP_FLAG.SYN }),
      );
    const got = [1, 2, 3, 4].map((p) => small.map(flow(p)) as NatMapping);
    assert.deepEqual(
      got.map((m) => `${formatAddress(m.slotAddr)}:${m.slotPort}`),
      ['10.9.0.1:2000', '10.9.0.1:2001', '10.9.0.2:2000', '10.9.0.2:2001'],
    );
    assert.equal(small.map(flow(5)), 'pool_exhausted');
    small.release(got[1]!);
    assert.equal((small.map(flow(6)) as NatMapping).slotPort, 2001);
    assert.equal(small.map(parseIp(buildUdpPacket('::1', 1, '::2', 2, Buffer.alloc(1)))), 'no_family');
    const capped = new UpgradeNat({
      v4: { pool: '10.9.0.0/16', listener: { address: '10.0.0.1', port: 1 } },
      maxMappings: 1,
    });
    capped.map(flow(1));
    assert.equal(capped.map(flow(2)), 'table_full');
  });

  it('mappings end with their flow (attached tracker) or when idle', () => {
    const n = new UpgradeNat({
      v4: { pool: '10.9.0.0/16', listener: { address: '10.0.0.1', port: 8080 } },
      idleTimeoutMs: 1000,
    });
    const t = new FlowTracker({ tcpTimeouts: { syn_sent: 500 } });
    n.attach(t);
    const syn = parseIp(
      buildTcpPacket('192.0.2.55', '203.0.113.10', { srcPort: 5555, dstPort: 443, flags: TCP_FLAG.SYN }),
    );
    const r = t.observe(syn, 0);
    const m = n.map(syn, 0) as NatMapping;
    assert.equal(r.kind === 'flow' && n.get(r.flow.key), m, 'the NAT and the tracker share flow keys');
    t.sweep(500);
    assert.equal(n.size, 0);
    const other = parseIp(
      buildTcpPacket('192.0.2.55', '203.0.113.10', { srcPort: 5556, dstPort: 443, flags: TCP_FLAG.SYN }),
    );
    n.map(other, 0);
    assert.equal(n.expire(999), 0);
    assert.equal(n.expire(1000), 1);
    assert.equal(n.size, 0);
  });
});
