/**
 * Fuzz test of the wired IP pipeline: at least 100 000 mutated packets (bit flips, random
 * bytes, truncation, junk tails, length fields overwritten, checksums refilled so mutations get
 * past them) from seeds of every kind (UDP, TCP, ICMP echo to the gateway and elsewhere, ICMP
 * errors, fragments, IPv4 and IPv6) go through `openIpPipeline` with hooks that take every
 * decision (upgrade to a local UDP sink, reject, drop, forward without an off-ramp) and rewrite
 * some packets. Nothing may throw out of `fromClient`, every packet sent back must parse, and
 * the heap stays bounded (the flow table is small here, so sessions are evicted all along).
 *
 * Set OXY_FUZZ_SEED to replay one run.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { test } from 'node:test';
import { defineApp } from '../../app.ts';
import { NO_EXT } from '../../context/ext.ts';
import { EndpointState, IngressConnection } from '../../context/state.ts';
import { IpFlowDecision, IpPacketVerdict } from '../../hooks/ip.ts';
import { resolveHooks } from '../../hooks/run.ts';
import { icmpUnreachable } from '../../protocols/icmp/generate.ts';
import { ICMP4 } from '../../protocols/icmp/icmp.ts';
import {
  buildIp,
  buildTcpPacket,
  buildUdpPacket,
  icmpMessage,
  mssOption,
} from '../../protocols/ip/builder.ts';
import { fillIpv4Checksum, fillL4Checksum } from '../../protocols/ip/l4-checksum.ts';
import { IP_PROTO, parseIp } from '../../protocols/ip/packet.ts';
import { isPacketError } from '../../protocols/ip/packet-error.ts';
import { appSettings } from '../../proxy.ts';
import { Runtime } from '../../runtime.ts';
import { randomUint32 } from '../../testing/fuzz.ts';
import { openIpPipeline } from './pipeline.ts';
import type { IpTunnelPort } from './port.ts';

const ITERATIONS = 100_000;
const TIME_LIMIT_MS = 60_000;

function seeds(): Buffer[] {
  const udp4 = buildUdpPacket('10.7.0.2', 40000, '198.18.0.53', 53, Buffer.from('query'));
  const big = Buffer.alloc(3000, 7);
  const frag = (offset: number, more: boolean, data: Buffer) =>
    buildIp({
      src: '10.7.0.2',
      dst: '198.18.0.53',
      protocol: IP_PROTO.UDP,
      payload: data,
      fragment: { id: 77, offset, more },
    });
  return [
    udp4,
    buildUdpPacket('fd00::2', 40001, 'fd00::53', 53, Buffer.from('query6')),
    buildTcpPacket('10.7.0.2', '198.18.0.80', {
      srcPort: 40002,
      dstPort: 80,
      seq: 1,
      flags: 0x02,
      options: mssOption(1460),
    }),
    buildTcpPacket('fd00::2', 'fd00::80', {
      srcPort: 40003,
      dstPort: 80,
      seq: 1,
      ack: 9,
      flags: 0x10,
      payload: Buffer.from('GET /'),
    }),
    buildIp({
      src: '10.7.0.2',
      dst: '100.64.0.1',
      protocol: IP_PROTO.ICMP,
      payload: icmpMessage(ICMP4.ECHO_REQUEST, 0, 0x10001, Buffer.from('ping')),
    }),
    buildIp({
      src: 'fd00::2',
      dst: 'fd00::1',
      protocol: IP_PROTO.ICMPV6,
      payload: icmpMessage(128, 0, 0x10001, Buffer.from('ping6')),
    }),
    buildIp({
      src: '10.7.0.2',
      dst: '198.18.0.1',
      protocol: IP_PROTO.ICMP,
      payload: icmpMessage(ICMP4.ECHO_REQUEST, 0, 0x20001, Buffer.from('ping')),
    }),
    icmpUnreachable(buildUdpPacket('198.18.0.53', 53, '10.7.0.2', 40000, Buffer.from('x')), 'port') as Buffer,
    buildIp({ src: '10.7.0.2', dst: '198.18.0.9', protocol: 47, payload: Buffer.from('gre-ish') }),
    frag(0, true, big.subarray(0, 1480)),
    frag(1480, false, big.subarray(1480)),
  ];
}

function mutate(src: Buffer, r: () => number): Buffer {
  let b = Buffer.from(src);
  const ops = r() % 4;
  for (let i = 0; i < ops; i++) {
    switch (r() % 6) {
      case 0:
        if (b.length) {
          const at = r() % b.length;
          b[at] = (b[at] as number) ^ (1 << (r() % 8));
        }
        break;
      case 1:
        if (b.length) b[r() % b.length] = r() & 0xff;
        break;
      case 2:
        b = b.subarray(0, r() % (b.length + 1));
        break;
      case 3:
        b = Buffer.concat([b, Buffer.from(Array.from({ length: r() % 32 }, () => r() & 0xff))]);
        break;
      case 4: {
        const at = [0, 2, 3, 6, 9, 20, 21, 22, 23, 32, 33, 40, 42][r() % 13] as number;
        if (at < b.length) b[at] = r() & 0xff;
        break;
      }
      case 5:
        // Refill the checksums so the mutation reaches the tracker and the hooks.
        try {
          const p = parseIp(b, { verifyChecksum: false });
          fillL4Checksum(p);
          fillIpv4Checksum(p);
        } catch (e) {
          if (!isPacketError(e)) throw e;
        }
        break;
    }
  }
  return b;
}

test(`${ITERATIONS} mutated packets through the IP pipeline: no throw, replies parse, bounded memory`, async () => {
  const sink = dgram.createSocket('udp4');
  sink.on('message', (m, from) => sink.send(m.subarray(0, 8), from.port, from.address));
  sink.bind(0, '127.0.0.1');
  await once(sink, 'listening');
  const sinkPort = sink.address().port;
  const app = defineApp({ name: 'fuzz', version: '0', description: 'd', start: () => ({}) });
  const settings = appSettings(app, [
    {
      source: 'test',
      value: {
        telemetry: { server: { enabled: false } },
        egress: { blocked_cidrs: [] },
        endpoints: { main: { protocol: 'ip_seqpacket', addr: '/tmp/unused.sock', ip: { max_flows: 128 } } },
      },
    },
  ]);
  let decided = 0;
  const hooks = resolveHooks({
    ipFlow: {
      handleFlow: (flow) => {
        decided++;
        switch (flow.id % 4) {
          case 0:
            return flow.protocol === 'udp'
              ? IpFlowDecision.redirect({ host: '127.0.0.1', port: sinkPort })
              : IpFlowDecision.reject('fuzz');
          case 1:
            return IpFlowDecision.drop('fuzz');
          case 2:
            return IpFlowDecision.forward(); // no off-ramp: rejected
          default:
            return IpFlowDecision.reject('fuzz');
        }
      },
      handlePacket: (packet) => {
        if (packet.length > 30 && packet[29] === 0x42) {
          packet[29] = 0x43;
          return IpPacketVerdict.rewritten();
        }
        return undefined;
      },
    },
  });
  const rt = new Runtime(hooks, NO_EXT, settings);
  const endpoint = new EndpointState('main', settings.endpoints.main as never, NO_EXT);
  const conn = new IngressConnection(
    endpoint,
    { peer: { host: '', port: 0 }, local: { host: '', port: 0 } },
    'ip_seqpacket',
    NO_EXT,
  );
  let sent = 0;
  const port: IpTunnelPort = {
    id: 1,
    ingress: conn,
    closed: false,
    send(packet) {
      parseIp(packet); // everything the pipeline sends back is a valid packet
      sent++;
    },
  };
  const pipeline = openIpPipeline(rt, port);
  const seed = Number(process.env.OXY_FUZZ_SEED ?? Date.now() % 0xffffffff);
  const r = randomUint32(seed);
  const base = seeds();
  const heapBefore = process.memoryUsage().heapUsed;
  const started = performance.now();
  let i = 0;
  for (; i < ITERATIONS && performance.now() - started < TIME_LIMIT_MS; i++) {
    const pkt = mutate(base[r() % base.length] as Buffer, r);
    try {
      pipeline.fromClient(pkt);
    } catch (e) {
      assert.fail(`seed ${seed}, packet ${i} (${pkt.toString('hex')}) threw: ${(e as Error).stack}`);
    }
    // Let sessions open and replies arrive now and then.
    if (i % 5000 === 0) await new Promise((res) => setImmediate(res));
  }
  await new Promise((res) => setTimeout(res, 50));
  pipeline.close('fuzz done');
  sink.close();
  const grown = process.memoryUsage().heapUsed - heapBefore;
  assert.equal(i, ITERATIONS, `only ${i} packets in ${TIME_LIMIT_MS} ms (seed ${seed})`);
  assert.ok(grown < 64 * 1024 * 1024, `heap grew by ${grown} bytes (seed ${seed})`);
  assert.ok(decided > 100, `flows decided: ${decided}`);
  assert.ok(sent > 100, `packets sent back: ${sent}`);
  console.log(
    `pipeline fuzz: seed ${seed}, ${i} packets, ${decided} flows, ${sent} sent back, heap +${(grown / 1048576).toFixed(1)} MiB`,
  );
});
