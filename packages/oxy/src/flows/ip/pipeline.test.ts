/**
 * The IP pipeline's rules that the end-to-end tests do not reach: an async flow decision holds
 * the flow's packets in order and releases them once; a throwing flow hook rejects the flow; a
 * packet over the tunnel's MTU (`ip.mtu`, the carrier's limit, the upgrade device's for upgraded
 * TCP flows) is answered with "fragmentation needed" / "packet too big"; a forwarded
 * packet whose TTL runs out is answered with "time exceeded" from the gateway; fragments are
 * reassembled before the flow sees them.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defineApp } from '../../app.ts';
import { NO_EXT } from '../../context/ext.ts';
import { EndpointState, IngressConnection } from '../../context/state.ts';
import { IpFlowDecision } from '../../hooks/ip.ts';
import { type Hooks, resolveHooks } from '../../hooks/run.ts';
import { ICMP4, ICMP6, parseIcmp } from '../../protocols/icmp/icmp.ts';
import { buildIp, buildTcpPacket, buildUdpPacket } from '../../protocols/ip/builder.ts';
import { IP_PROTO, type IpPacket, parseIp } from '../../protocols/ip/packet.ts';
import { parseTcpOf } from '../../protocols/tcp/header.ts';
import { appSettings } from '../../proxy.ts';
import { Runtime } from '../../runtime.ts';
import { openIpPipeline } from './pipeline.ts';
import type { TcpUpgrade } from './port.ts';

function setup(hooks: Hooks, ip: Record<string, unknown> = {}, portMtu?: number) {
  const app = defineApp({ name: 't', version: '0', description: 'd', start: () => ({}) });
  const settings = appSettings(app, [
    {
      source: 'test',
      value: {
        telemetry: { server: { enabled: false } },
        endpoints: { main: { protocol: 'ip_seqpacket', addr: '/tmp/unused.sock', ip } },
      },
    },
  ]);
  const rt = new Runtime(resolveHooks(hooks), NO_EXT, settings);
  const endpoint = new EndpointState('main', settings.endpoints.main as never, NO_EXT);
  const conn = new IngressConnection(
    endpoint,
    { peer: { host: '', port: 0 }, local: { host: '', port: 0 } },
    'ip_seqpacket',
    NO_EXT,
  );
  const sent: IpPacket[] = [];
  const pipeline = openIpPipeline(rt, {
    id: 1,
    ingress: conn,
    closed: false,
    send: (p) => sent.push(parseIp(p)),
    ...(portMtu === undefined ? {} : { mtu: portMtu }),
  });
  return { pipeline, sent, rt };
}

const syn = (dst: string, sport: number, seq: number) =>
  buildTcpPacket('10.7.0.2', dst, { srcPort: sport, dstPort: 80, seq, flags: 0x02 });

test('an async decision holds the flow’s packets in order, then applies to each; a throw rejects', async () => {
  let release: (d: IpFlowDecision) => void = () => {};
  const seen: number[] = [];
  const { pipeline, sent } = setup({
    ipFlow: {
      handleFlow: (flow) => {
        seen.push(flow.id);
        if (flow.dst.host === '198.18.0.7') throw new Error('boom');
        return new Promise<IpFlowDecision>((r) => {
          release = r;
        });
      },
    },
  });
  pipeline.fromClient(syn('198.18.0.1', 1000, 10));
  pipeline.fromClient(syn('198.18.0.1', 1000, 10)); // a retransmission: same flow
  assert.equal(sent.length, 0, 'nothing answered before the decision');
  release(IpFlowDecision.reject('later'));
  await new Promise((r) => setImmediate(r));
  assert.equal(sent.length, 2, 'both held packets were refused');
  for (const p of sent) assert.equal(parseTcpOf(p).flags & 0x04, 0x04);
  assert.deepEqual(seen, [1], 'one decision per flow');
  pipeline.fromClient(syn('198.18.0.7', 1001, 20));
  assert.equal(sent.length, 3);
  assert.equal(parseTcpOf(sent[2] as IpPacket).ack, 21);
  pipeline.close('test');
});

test('a packet over ip.mtu gets "fragmentation needed" (v4, DF) or "packet too big" (v6)', () => {
  const { pipeline, sent } = setup(
    { ipFlow: { handleFlow: () => IpFlowDecision.forward() } },
    { mtu: 1280, offramp: '/nonexistent/offramp.sock' },
  );
  pipeline.fromClient(buildUdpPacket('10.7.0.2', 1, '198.18.0.1', 2, Buffer.alloc(1400)));
  pipeline.fromClient(buildUdpPacket('fd00::2', 1, 'fd00::9', 2, Buffer.alloc(1400)));
  assert.equal(sent.length, 2);
  const v4 = parseIcmp(sent[0] as IpPacket);
  assert.equal(v4.type, ICMP4.DEST_UNREACH);
  assert.equal(v4.code, 4);
  assert.equal(v4.mtu, 1280);
  const v6 = parseIcmp(sent[1] as IpPacket);
  assert.equal(v6.type, ICMP6.PACKET_TOO_BIG);
  assert.equal(v6.mtu, 1280);
  pipeline.close('test');
});

test('a forwarded packet with TTL 1 gets "time exceeded" from the gateway', () => {
  const { pipeline, sent } = setup(
    { ipFlow: { handleFlow: () => IpFlowDecision.forward() } },
    { offramp: '/nonexistent/offramp.sock' },
  );
  pipeline.fromClient(
    buildIp({ src: '10.7.0.2', dst: '198.18.0.1', protocol: IP_PROTO.UDP, payload: Buffer.alloc(8), ttl: 1 }),
  );
  assert.equal(sent.length, 1);
  const p = sent[0] as IpPacket;
  assert.equal(parseIcmp(p).type, ICMP4.TIME_EXCEEDED);
  assert.equal([...p.buf.subarray(p.srcOffset, p.srcOffset + 4)].join('.'), '100.64.0.1');
  pipeline.close('test');
});

test('fragments are reassembled before the flow decision and handlePacket see the packet', () => {
  const sizes: number[] = [];
  let flows = 0;
  const { pipeline } = setup(
    {
      ipFlow: {
        handleFlow: () => {
          flows++;
          return IpFlowDecision.forward();
        },
        handlePacket: (packet) => {
          sizes.push(packet.length);
          return undefined;
        },
      },
    },
    { offramp: '/nonexistent/offramp.sock' },
  );
  const payload = Buffer.alloc(8 + 2000, 1);
  payload.writeUInt16BE(8 + 2000, 4);
  const frag = (offset: number, more: boolean, data: Buffer) =>
    buildIp({
      src: '10.7.0.2',
      dst: '198.18.0.1',
      protocol: IP_PROTO.UDP,
      payload: data,
      fragment: { id: 5, offset, more },
    });
  pipeline.fromClient(frag(1000, false, payload.subarray(1000)));
  assert.equal(flows, 0, 'a lone non-first fragment makes no flow');
  pipeline.fromClient(frag(0, true, payload.subarray(0, 1000)));
  assert.equal(flows, 1);
  assert.deepEqual(sizes, [20 + 8 + 2000], 'one whole datagram');
  pipeline.close('test');
});

test('TCP flows go to the upgrade service in order once it started, with the redirect; replies reach the client; release at close', async () => {
  const { pipeline, sent, rt } = setup({
    ipFlow: {
      handleFlow: (flow) =>
        flow.dst.port === 81
          ? IpFlowDecision.redirect({ host: '127.0.0.1', port: 8081 })
          : IpFlowDecision.upgrade(),
    },
  });
  const got: { seq: number; redirect: string | null }[] = [];
  const released: number[] = [];
  let start: (u: TcpUpgrade) => void = () => {};
  let starts = 0;
  rt.tcpUpgrade = () => {
    starts++;
    return new Promise<TcpUpgrade>((r) => {
      start = r;
    });
  };
  const fake: TcpUpgrade = {
    fromClient(port, packet, redirect) {
      const t = parseTcpOf(packet);
      got.push({ seq: t.seq, redirect: redirect === null ? null : `${redirect.host}:${redirect.port}` });
      // The kernel's SYN|ACK, as the service would send it back through the port.
      if (t.flags === 0x02)
        port.send(
          buildTcpPacket(
            packet.buf.subarray(packet.dstOffset, packet.dstOffset + 4),
            packet.buf.subarray(packet.srcOffset, packet.srcOffset + 4),
            {
              srcPort: t.dstPort,
              dstPort: t.srcPort,
              seq: 500,
              ack: t.seq + 1,
              flags: 0x12,
            },
          ),
        );
    },
    release: (port) => released.push(port.id),
    close: async () => {},
  };
  pipeline.fromClient(syn('198.18.0.80', 2000, 1));
  pipeline.fromClient(
    buildTcpPacket('10.7.0.2', '198.18.0.81', { srcPort: 2001, dstPort: 81, seq: 2, flags: 0x02 }),
  );
  assert.equal(got.length, 0, 'held while the service starts');
  start(fake);
  await new Promise((r) => setImmediate(r));
  assert.equal(starts, 1, 'one start for the process');
  assert.deepEqual(got, [
    { seq: 1, redirect: null },
    { seq: 2, redirect: '127.0.0.1:8081' },
  ]);
  assert.equal(sent.length, 2, 'both SYN|ACKs reached the client');
  for (const p of sent) assert.equal(parseTcpOf(p).flags, 0x12);
  pipeline.close('test');
  assert.deepEqual(released, [1]);
});

test('a datagram whose fragments never complete gets "time exceeded" (code 1) with no further fragment', async (t) => {
  t.mock.timers.enable({ apis: ['setInterval', 'Date'] });
  const { pipeline, sent } = setup({});
  pipeline.fromClient(
    buildIp({
      src: '10.7.0.2',
      dst: '198.18.0.1',
      protocol: IP_PROTO.UDP,
      payload: Buffer.alloc(1000, 1),
      fragment: { id: 9, offset: 0, more: true },
    }),
  );
  assert.equal(sent.length, 0);
  t.mock.timers.tick(31_000);
  assert.equal(sent.length, 1);
  const m = parseIcmp(sent[0] as IpPacket);
  assert.equal(m.type, ICMP4.TIME_EXCEEDED);
  assert.equal(m.code, 1);
  pipeline.close('test');
});

test('the tunnel MTU is the smaller of ip.mtu and the carrier’s: over it, "too big" with that MTU', () => {
  const { pipeline, sent } = setup(
    { ipFlow: { handleFlow: () => IpFlowDecision.forward() } },
    { mtu: 9000, offramp: '/nonexistent/offramp.sock' },
    1400,
  );
  pipeline.fromClient(buildUdpPacket('10.7.0.2', 1, '198.18.0.1', 2, Buffer.alloc(1400 - 28 + 1)));
  pipeline.fromClient(buildUdpPacket('fd00::2', 1, 'fd00::9', 2, Buffer.alloc(1500)));
  // Without DF an IPv4 packet is not answered (RFC 1191 asks only for DF); it is dropped.
  pipeline.fromClient(
    buildIp({
      src: '10.7.0.2',
      dst: '198.18.0.1',
      protocol: IP_PROTO.UDP,
      payload: Buffer.alloc(2000),
      dontFragment: false,
    }),
  );
  assert.equal(sent.length, 2);
  const v4 = parseIcmp(sent[0] as IpPacket);
  assert.equal(v4.type, ICMP4.DEST_UNREACH);
  assert.equal(v4.code, 4);
  assert.equal(v4.mtu, 1400);
  const v6 = parseIcmp(sent[1] as IpPacket);
  assert.equal(v6.type, ICMP6.PACKET_TOO_BIG);
  assert.equal(v6.mtu, 1400);
  pipeline.close('test');
});

test('upgraded TCP flows also fit the upgrade device: larger packets get "too big" with its MTU; the service sees the tunnel MTU', async () => {
  const { pipeline, sent, rt } = setup({}, { mtu: 9000 }, 8000);
  const seen: { len: number; portMtu: number | undefined }[] = [];
  const fake: TcpUpgrade = {
    mtu: 1500,
    fromClient: (port, packet) => seen.push({ len: packet.buf.length, portMtu: port.mtu }),
    release: () => {},
    close: async () => {},
  };
  rt.tcpUpgrade = () => Promise.resolve(fake);
  const seg = (len: number, flags: number, v6 = false) =>
    buildTcpPacket(v6 ? 'fd00::2' : '10.7.0.2', v6 ? 'fd00::80' : '198.18.0.80', {
      srcPort: 3000,
      dstPort: 80,
      seq: 1,
      flags,
      payload: Buffer.alloc(len - (v6 ? 60 : 40)),
    });
  pipeline.fromClient(seg(60, 0x02));
  await new Promise((r) => setImmediate(r));
  pipeline.fromClient(seg(1500, 0x10));
  pipeline.fromClient(seg(1501, 0x10));
  pipeline.fromClient(seg(80, 0x02, true));
  pipeline.fromClient(seg(4000, 0x10, true));
  assert.deepEqual(
    seen.map((x) => x.len),
    [60, 1500, 80],
  );
  assert.ok(
    seen.every((x) => x.portMtu === 8000),
    'the service is told the tunnel MTU (for the MSS clamp)',
  );
  assert.equal(sent.length, 2);
  const v4 = parseIcmp(sent[0] as IpPacket);
  assert.equal(v4.type, ICMP4.DEST_UNREACH);
  assert.equal(v4.code, 4);
  assert.equal(v4.mtu, 1500);
  const v6 = parseIcmp(sent[1] as IpPacket);
  assert.equal(v6.type, ICMP6.PACKET_TOO_BIG);
  assert.equal(v6.mtu, 1500);
  // The quoted packet is the client's own (its TCP matches the error to the connection).
  assert.equal(sent[0]!.buf.readUInt16BE(sent[0]!.l4Offset + 8 + 20), 3000);
  pipeline.close('test');
});

test('handlePacket returning null (plain JavaScript, a cast) drops that packet as a throw would, and throws nothing', () => {
  let calls = 0;
  const { pipeline } = setup(
    {
      ipFlow: {
        handleFlow: () => IpFlowDecision.forward(),
        handlePacket: () => {
          calls++;
          return null as never;
        },
      },
    },
    { offramp: '/nonexistent/offramp.sock' },
  );
  assert.doesNotThrow(() =>
    pipeline.fromClient(buildUdpPacket('10.7.0.2', 1, '198.18.0.1', 2, Buffer.alloc(10))),
  );
  assert.doesNotThrow(() =>
    pipeline.fromClient(buildUdpPacket('10.7.0.2', 1, '198.18.0.1', 2, Buffer.alloc(10))),
  );
  assert.equal(calls, 2, 'each packet was asked about, and each dropped without ending the pipeline');
  pipeline.close('test');
});
