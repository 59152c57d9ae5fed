/**
 * Fuzz test of the layer-3 parsers and everything that reads packets: at least 100 000 mutated
 * packets (bit flips, truncation, extension, length fields overwritten, random bytes) from seeds
 * of every kind, through IP, TCP, UDP, ICMP and GUE parsing, the checksum code, reassembly, the
 * flow tracker, the NAT and ICMP generation. Nothing may throw but a `PacketError`, and memory
 * stays bounded (the tables are bounded; the heap does not grow with the iterations).
 *
 * A fixed seed makes failures reproducible: set OXY_FUZZ_SEED to replay one run.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FlowTracker } from '../../flows/ip/flow-tracker.ts';
import { UpgradeNat } from '../../flows/ip/nat.ts';
import { randomUint32 } from '../../testing/fuzz.ts';
import { decodeGue, encodeGue } from '../gue/codec.ts';
import { echoReply, icmpTimeExceeded, icmpUnreachable, packetTooBig, tcpReset } from '../icmp/generate.ts';
import { parseIcmp, parseQuoted } from '../icmp/icmp.ts';
import { clampMss, findMss, parseTcpOf } from '../tcp/header.ts';
import { parseUdpOf } from '../udp/header.ts';
import { buildIp, buildTcpPacket, buildUdpPacket, icmpMessage, mssOption, udpDatagram } from './builder.ts';
import { fillIpv4Checksum, fillL4Checksum, l4ChecksumOk } from './l4-checksum.ts';
import { IP_PROTO, parseIp } from './packet.ts';
import { isPacketError } from './packet-error.ts';
import { Reassembler } from './reassembly.ts';

const ITERATIONS = 100_000;
const TIME_LIMIT_MS = 90_000;

function seeds(): Buffer[] {
  const ext = () => Buffer.from([0, 0, 1, 4, 0, 0, 0, 0]); // next header set below, PadN(4)
  const v6ext = (() => {
    const udp = udpDatagram(1, 2, Buffer.from('payload'));
    const h = Buffer.concat([ext(), ext(), Buffer.from([17, 0, 0, 0, 0, 0, 0, 0])]);
    h[0] = 60;
    h[8] = 44;
    const p = buildIp({
      src: 'fd00::1',
      dst: 'fd00::2',
      protocol: 17,
      payload: Buffer.concat([h, udp]),
      fillChecksum: false,
    });
    p[6] = 0;
    return p;
  })();
  const syn = buildTcpPacket('192.0.2.55', '203.0.113.10', {
    srcPort: 5555,
    dstPort: 443,
    flags: 2,
    options: Buffer.from([...mssOption(1460), 1, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0]),
  });
  const syn6 = buildTcpPacket('2001:db8::1', '2001:db8::2', {
    srcPort: 1,
    dstPort: 80,
    flags: 2,
    options: mssOption(1440),
  });
  const udp = buildUdpPacket('10.0.0.2', 4000, '10.0.0.53', 53, Buffer.from('query'));
  const echo = buildIp({
    src: '10.0.0.2',
    dst: '10.0.0.1',
    protocol: 1,
    payload: icmpMessage(8, 0, 0x42420001, Buffer.alloc(16)),
  });
  const echo6 = buildIp({
    src: 'fd00::2',
    dst: 'fd00::1',
    protocol: 58,
    payload: icmpMessage(128, 0, 0x42420001, Buffer.alloc(16)),
  });
  const frag4 = buildIp({
    src: '10.0.0.1',
    dst: '10.0.0.2',
    protocol: 17,
    payload: Buffer.alloc(64, 1),
    fragment: { id: 5, offset: 0, more: true },
  });
  const frag6 = buildIp({
    src: 'fd00::1',
    dst: 'fd00::2',
    protocol: 17,
    payload: Buffer.alloc(64, 1),
    fragment: { id: 5, offset: 64, more: false },
  });
  const withOpts = Buffer.concat([
    udp.subarray(0, 20),
    Buffer.from([1, 7, 7, 4, 0, 0, 0, 0, 0, 0, 0, 0]),
    udp.subarray(20),
  ]);
  withOpts[0] = 0x48;
  withOpts.writeUInt16BE(withOpts.length, 2);
  return [
    syn,
    syn6,
    udp,
    echo,
    echo6,
    v6ext,
    frag4,
    frag6,
    withOpts,
    icmpUnreachable(syn, 'port')!,
    packetTooBig(syn6, 1280)!,
    icmpTimeExceeded(udp)!,
    encodeGue(udp, { extensions: Buffer.alloc(8) }),
    encodeGue(syn6, { variant: 1 }),
  ];
}

function mutate(src: Buffer, r: () => number): Buffer {
  let b = Buffer.from(src);
  const ops = 1 + (r() % 4);
  for (let i = 0; i < ops; i++) {
    switch (r() % 7) {
      case 0: // flip bits
        if (b.length) {
          const at = r() % b.length;
          b[at] = b[at]! ^ (1 << (r() % 8));
        }
        break;
      case 1: // random byte
        if (b.length) b[r() % b.length] = r() & 0xff;
        break;
      case 2: // truncate
        b = b.subarray(0, r() % (b.length + 1));
        break;
      case 3: // extend with junk
        b = Buffer.concat([b, Buffer.from(Array.from({ length: r() % 64 }, () => r() & 0xff))]);
        break;
      case 4: {
        // overwrite a length-like field: IPv4 IHL/total, IPv6 payload length, ext header length
        const at = [0, 2, 3, 4, 5, 6, 7, 32, 40, 41, 48, 49, 52][r() % 13]!;
        if (at < b.length) b[at] = r() & 0xff;
        break;
      }
      case 5: // cut the packet short and fix its length fields, so it still parses
        if (b.length > 40 && r() % 2 === 0) {
          b = Buffer.from(b.subarray(0, 20 + (r() % (b.length - 20))));
          if (b[0]! >> 4 === 4) b.writeUInt16BE(b.length, 2);
          else if (b.length >= 40) b.writeUInt16BE(b.length - 40, 4);
        }
        // and fix the checksums so the mutation gets past them

        try {
          const p = parseIp(b, { verifyChecksum: false });
          fillL4Checksum(p);
          fillIpv4Checksum(p);
        } catch (e) {
          if (!isPacketError(e)) throw e;
        }
        break;
      default: // random packet with a plausible first byte
        b = Buffer.from(Array.from({ length: r() % 120 }, () => r() & 0xff));
        if (b.length) b[0] = [0x45, 0x46, 0x60, 0x4f][r() % 4]!;
    }
  }
  return b;
}

test('fuzz: 100 000 mutated packets through every layer-3 reader, only PacketError, bounded memory', () => {
  const seed = Number(process.env.OXY_FUZZ_SEED ?? 0x0c0ffee);
  const r = randomUint32(seed);
  const all = seeds();
  const reassembler = new Reassembler({ maxTotalBytes: 256 * 1024, maxPending: 256 });
  const tracker = new FlowTracker({ maxFlows: 2000 });
  const nat = new UpgradeNat({
    v4: { pool: '10.9.0.0/16', listener: { address: '10.0.0.1', port: 8080 } },
    v6: { pool: 'fd00:9::/64', listener: { address: 'fd00::1', port: 8080 } },
    maxMappings: 2000,
    clampMss: 1200,
  });
  const heapBefore = process.memoryUsage().heapUsed;
  const start = performance.now();
  let i = 0;
  let parsed = 0;
  for (; i < ITERATIONS && performance.now() - start < TIME_LIMIT_MS; i++) {
    const buf = mutate(all[i % all.length]!, r);
    // Each reader runs on its own, so one refusing the packet does not hide the others.
    const tolerate = (fn: () => unknown): void => {
      try {
        fn();
      } catch (e) {
        if (!isPacketError(e))
          throw new Error(`seed ${seed} iteration ${i}: ${buf.toString('hex')}`, { cause: e });
      }
    };
    tolerate(() => decodeGue(buf));
    let p: ReturnType<typeof parseIp> | null = null;
    tolerate(() => {
      p = parseIp(buf, { verifyChecksum: (i & 1) === 0 });
    });
    if (p === null) continue;
    const pkt: ReturnType<typeof parseIp> = p;
    parsed++;
    tolerate(() => l4ChecksumOk(pkt));
    if (pkt.protocol === IP_PROTO.TCP) {
      tolerate(() => findMss(pkt.buf, parseTcpOf(pkt)));
      tolerate(() => clampMss(pkt, 1000));
    } else if (pkt.protocol === IP_PROTO.UDP) tolerate(() => parseUdpOf(pkt));
    else if (pkt.protocol === IP_PROTO.ICMP || pkt.protocol === IP_PROTO.ICMPV6) {
      tolerate(() => {
        const m = parseIcmp(pkt);
        if (m.isError) parseQuoted(pkt, m);
      });
    }
    tolerate(() => icmpUnreachable(pkt, 'port'));
    tolerate(() => packetTooBig(pkt, 1280));
    tolerate(() => echoReply(pkt));
    tolerate(() => tcpReset(pkt));
    let whole: ReturnType<typeof parseIp> | null = null;
    tolerate(() => {
      whole = reassembler.push(pkt, i);
    });
    if (whole === null) continue;
    const w: ReturnType<typeof parseIp> = whole;
    tolerate(() => tracker.observe(w, i));
    tolerate(() => {
      const m = nat.map(w, i);
      if (typeof m !== 'string') nat.rewriteOutbound(w, i);
    });
    tolerate(() => nat.rewriteInbound(w, i));
    // The same flow again, cut short: a mapped flow's later packets may be malformed too.
    if (w.buf.length > w.l4Offset + 4) {
      const cut = Buffer.from(w.buf.subarray(0, w.l4Offset + 4 + (r() % 16)));
      tolerate(() => {
        if (cut[0]! >> 4 === 4) cut.writeUInt16BE(cut.length, 2);
        else cut.writeUInt16BE(cut.length - 40, 4);
        const c = parseIp(cut, { verifyChecksum: false });
        tracker.observe(c, i);
        nat.rewriteOutbound(c, i);
        nat.rewriteInbound(c, i);
      });
    }
  }
  const elapsed = performance.now() - start;
  assert.equal(i, ITERATIONS, `only ${i} packets in ${TIME_LIMIT_MS} ms`);
  assert.ok(
    parsed > ITERATIONS / 10,
    `only ${parsed} mutated packets parsed: the mutations are too destructive`,
  );
  assert.ok(tracker.size <= 2000);
  assert.ok(nat.size <= 2000);
  assert.ok(reassembler.heldBytes <= 256 * 1024);
  const grown = process.memoryUsage().heapUsed - heapBefore;
  assert.ok(grown < 64 * 1024 * 1024, `heap grew by ${grown} bytes`);
  console.log(
    `fuzz: ${i} packets (${parsed} parsed) in ${elapsed.toFixed(0)} ms, heap +${(grown / 1048576).toFixed(1)} MiB`,
  );
});
