/** The flow tracker: keys both ways, TCP states and timeouts, ICMP echo and errors, bounds, events. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { icmpUnreachable, packetTooBig } from '../../protocols/icmp/generate.ts';
import { buildIp, buildTcpPacket, buildUdpPacket, icmpMessage } from '../../protocols/ip/builder.ts';
import { parseIp } from '../../protocols/ip/packet.ts';
import { TCP_FLAG } from '../../protocols/tcp/header.ts';
import { type FlowEndReason, FlowTracker, type IpFlow, type ObserveResult } from './flow-tracker.ts';

const { SYN, ACK, FIN, RST, PSH } = TCP_FLAG;

function tcp(up: boolean, flags: number, v: 4 | 6 = 4, payload = 0): ReturnType<typeof parseIp> {
  const [c, s] = v === 4 ? ['192.0.2.55', '203.0.113.10'] : ['2001:db8::55', '2001:db8::10'];
  const seg = { flags, payload: Buffer.alloc(payload) };
  return parseIp(
    up
      ? buildTcpPacket(c, s, { srcPort: 5555, dstPort: 443, ...seg })
      : buildTcpPacket(s, c, { srcPort: 443, dstPort: 5555, ...seg }),
  );
}

function flowOf(r: ObserveResult): IpFlow & { up?: boolean } {
  assert.equal(r.kind, 'flow', JSON.stringify(r));
  return (r as { flow: IpFlow }).flow;
}

function recorder(t: FlowTracker): string[] {
  const log: string[] = [];
  t.subscribe({
    handleFlowStart: (f) => log.push(`start ${f.id}`),
    handleFlowEnd: (f: IpFlow, why: FlowEndReason) =>
      log.push(`end ${f.id} ${why} up=${f.packetsUp}/${f.bytesUp} down=${f.packetsDown}/${f.bytesDown}`),
  });
  return log;
}

describe('flow tracker', () => {
  for (const v of [4, 6] as const) {
    it(`IPv${v} TCP: handshake, data, close, counts both ways, states in order`, () => {
      const t = new FlowTracker({ now: () => 0 });
      const log = recorder(t);
      const states: string[] = [];
      const seq: [boolean, number, number][] = [
        [true, SYN, 0],
        [false, SYN | ACK, 0],
        [true, ACK, 0],
        [true, PSH | ACK, 100],
        [false, ACK, 0],
        [true, FIN | ACK, 0],
        [false, FIN | ACK, 0],
        [true, ACK, 0],
      ];
      let flow: IpFlow | undefined;
      for (const [up, flags, n] of seq) {
        const r = t.observe(tcp(up, flags, v, n), 0);
        flow = flowOf(r);
        assert.equal((r as { up: boolean }).up, up);
        states.push(flow.state);
      }
      assert.deepEqual(states, [
        'syn_sent',
        'syn_received',
        'established',
        'established',
        'established',
        'fin_wait',
        'last_ack',
        'time_wait',
      ]);
      assert.equal(flow!.srcAddress, v === 4 ? '192.0.2.55' : '2001:db8::55');
      assert.equal(flow!.dstPort, 443);
      assert.equal(t.size, 1);
      // time_wait lasts 120 s by default; a sweep before keeps it, after ends it as "closed".
      assert.equal(t.sweep(119_999), 0);
      assert.equal(t.sweep(120_000), 1);
      const hdr = v === 4 ? 40 : 60;
      assert.deepEqual(log, ['start 1', `end 1 closed up=5/${5 * hdr + 100} down=3/${3 * hdr}`]);
    });
  }

  it('a RST closes; a RST with no flow is not tracked; a new SYN on a closed flow starts a new one', () => {
    const t = new FlowTracker();
    const log = recorder(t);
    assert.deepEqual(t.observe(tcp(true, RST), 0), { kind: 'untracked', reason: 'tcp_rst_no_flow' });
    t.observe(tcp(true, SYN), 0);
    assert.equal(flowOf(t.observe(tcp(false, RST | ACK), 1)).state, 'closed');
    const again = t.observe(tcp(true, SYN), 2);
    assert.equal(flowOf(again).state, 'syn_sent');
    assert.equal((again as { isNew: boolean }).isNew, true);
    assert.deepEqual(log, ['start 1', 'end 1 closed up=1/40 down=1/40', 'start 2']);
  });

  it('idle timeouts per state: a SYN alone expires after syn_sent, established lasts longer', () => {
    const t = new FlowTracker({ tcpTimeouts: { syn_sent: 1000, established: 5000 } });
    t.observe(tcp(true, SYN), 0);
    assert.equal(t.sweep(999), 0);
    assert.equal(t.sweep(1000), 1);
    t.observe(tcp(true, ACK), 0); // picked up mid-stream
    const f = [...t.flows()][0]!;
    assert.equal(f.pickedUp, true);
    assert.equal(f.state, 'established');
    assert.equal(t.sweep(4999), 0);
    // A packet after expiry (before a sweep) ends the old flow as idle and starts a new one.
    const r = t.observe(tcp(true, ACK), 5000);
    assert.equal((r as { isNew: boolean }).isNew, true);
    assert.notEqual(flowOf(r), f);
  });

  it('UDP: replied extends the timeout; ICMP echo keyed by identifier both ways', () => {
    const t = new FlowTracker({ udpTimeouts: { unreplied: 100, replied: 1000 } });
    const q = parseIp(buildUdpPacket('10.0.0.2', 4000, '10.0.0.53', 53, Buffer.from('q')));
    const a = parseIp(buildUdpPacket('10.0.0.53', 53, '10.0.0.2', 4000, Buffer.from('a')));
    const f = flowOf(t.observe(q, 0));
    assert.equal(f.state, 'unreplied');
    assert.equal(flowOf(t.observe(a, 50)), f);
    assert.equal(f.state, 'replied');
    assert.equal(t.sweep(500), 0);
    const echo = (src: string, dst: string, type: number, id: number) =>
      parseIp(
        buildIp({ src, dst, protocol: 1, payload: icmpMessage(type, 0, (id << 16) | 1, Buffer.alloc(8)) }),
      );
    const e1 = flowOf(t.observe(echo('10.0.0.2', '10.0.0.1', 8, 7), 0));
    assert.equal(flowOf(t.observe(echo('10.0.0.1', '10.0.0.2', 0, 7), 0)), e1);
    const e2 = flowOf(t.observe(echo('10.0.0.2', '10.0.0.1', 8, 8), 0));
    assert.notEqual(e2, e1, 'another identifier is another flow');
    assert.equal(e1.packetsDown, 1);
  });

  it('ICMP errors are matched to the quoted flow and never create one', () => {
    const t = new FlowTracker();
    const syn = tcp(true, SYN);
    const f = flowOf(t.observe(syn, 0));
    const err = parseIp(icmpUnreachable(syn, 'admin')!);
    const r = t.observe(err, 1);
    assert.equal(flowOf(r), f);
    assert.deepEqual([(r as { up: boolean }).up, (r as { related: boolean }).related], [false, true]);
    assert.equal(f.state, 'syn_sent', 'an error does not move the state');
    const v6 = tcp(true, SYN, 6);
    assert.deepEqual(t.observe(parseIp(packetTooBig(v6, 1280)!), 1), {
      kind: 'untracked',
      reason: 'icmp_error_no_flow',
    });
    assert.equal(t.size, 1);
  });

  it('bounded: a full table evicts an unanswered flow, refuses when all were answered', () => {
    const t = new FlowTracker({ maxFlows: 3 });
    const log = recorder(t);
    const udp = (port: number, up = true) =>
      parseIp(
        up
          ? buildUdpPacket('10.0.0.2', port, '10.0.0.53', 53, Buffer.alloc(1))
          : buildUdpPacket('10.0.0.53', 53, '10.0.0.2', port, Buffer.alloc(1)),
      );
    for (const p of [1, 2, 3]) t.observe(udp(p), 0);
    t.observe(udp(2, false), 0); // flow 2 answered
    t.observe(udp(4), 0); // evicts flow 1 (oldest unanswered)
    assert.equal(t.size, 3);
    assert.ok(log.includes('end 1 evicted up=1/29 down=0/0'));
    t.observe(udp(3, false), 0);
    t.observe(udp(4, false), 0);
    assert.deepEqual(t.observe(udp(5), 0), { kind: 'untracked', reason: 'table_full' });
    t.close();
    assert.equal(t.size, 0);
    assert.equal(log.filter((l) => l.includes('shutdown')).length, 3);
  });

  it('refuses non-first fragments and truncated transport headers', () => {
    const t = new FlowTracker();
    const frag = parseIp(
      buildIp({
        src: '10.0.0.1',
        dst: '10.0.0.2',
        protocol: 6,
        payload: Buffer.alloc(8),
        fragment: { id: 1, offset: 8, more: false },
      }),
    );
    assert.deepEqual(t.observe(frag), { kind: 'untracked', reason: 'fragment' });
    const short = parseIp(
      buildIp({ src: '10.0.0.1', dst: '10.0.0.2', protocol: 6, payload: Buffer.alloc(10) }),
    );
    assert.deepEqual(t.observe(short), { kind: 'untracked', reason: 'truncated' });
  });
});
