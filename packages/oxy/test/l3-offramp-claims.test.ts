/**
 * `EgressDecision.packets` at the packet level, without namespaces: a SEQPACKET tunnel client
 * and an off-ramp peer, both written here, around Oxy's `ip_seqpacket` endpoint. A UDP flow
 * decided `packets` reaches the peer as a packet from the client's own address and its answer
 * comes back (with `DatagramHook` seeing both ways); a packet the peer sends for a flow that is
 * not forwarded (an upgraded flow whose egress was blocked) never reaches the client; a tunnel
 * without `ip.offramp` refuses the decision (ICMP prohibited, `OXY_ERR_EGRESS_NO_PACKET_PATH`).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { type SeqpacketSocket, seqpacket } from 'native';
import { DatagramVerdict } from '../src/hooks/datagram.ts';
import { defineApp, EgressDecision } from '../src/index.ts';
import { ICMP4, parseIcmp } from '../src/protocols/icmp/icmp.ts';
import { formatAddress } from '../src/protocols/ip/address.ts';
import { buildUdpPacket } from '../src/protocols/ip/builder.ts';
import { IP_PROTO, type IpPacket, parseIp } from '../src/protocols/ip/packet.ts';
import { udpPayload } from '../src/protocols/udp/header.ts';
import { type AppUnderTest, startApp, waitUntil } from '../src/testing/index.ts';

const CLIENT = '10.7.0.2';
const OUT = '198.18.0.53';
const BLOCKED = '198.18.0.66';

let dir: string;
let oxy: AppUnderTest;
let offramp: seqpacket.SeqpacketServer;
let peer: SeqpacketSocket | null = null;
/** Packets the peer received (after the context message). */
const atPeer: IpPacket[] = [];
const datagramsSeen: string[] = [];

const app = defineApp({
  name: 'l3-offramp-claims',
  version: '1.0.0',
  description: 'one destination out as packets, one blocked',
  start: () => ({
    egress: {
      handleConnection: (target) =>
        target.host === OUT ? EgressDecision.packets() : EgressDecision.block('not this one'),
    },
    datagram: {
      handleDatagram: (data, direction) => {
        datagramsSeen.push(`${direction}:${Buffer.from(data).toString()}`);
        return DatagramVerdict.pass();
      },
    },
  }),
});

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'oxy-l3c-'));
  offramp = seqpacket.listen(path.join(dir, 'offramp.sock'));
  offramp.on('connection', (s: SeqpacketSocket) => {
    let first = true;
    s.on('messages', (ms) => {
      for (const m of ms) {
        if (first) first = false;
        else atPeer.push(parseIp(Buffer.from(m)));
      }
      peer = s;
    });
  });
  oxy = await startApp(app, {
    settings: {
      endpoints: {
        main: { addr: '127.0.0.1:0' },
        ip: {
          protocol: 'ip_seqpacket',
          addr: path.join(dir, 'ip.sock'),
          ip: { offramp: path.join(dir, 'offramp.sock') },
        },
        bare: { protocol: 'ip_seqpacket', addr: path.join(dir, 'bare.sock') },
      },
    },
  });
});

after(async () => {
  await oxy?.stop();
  offramp?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A tunnel client on `sock`: what it receives, parsed. */
async function tunnel(sock: string): Promise<{ s: SeqpacketSocket; got: IpPacket[] }> {
  const s = await seqpacket.connect(path.join(dir, sock));
  s.send(Buffer.from('{}'));
  const got: IpPacket[] = [];
  s.on('messages', (ms) => {
    for (const m of ms) got.push(parseIp(Buffer.from(m)));
  });
  return { s, got };
}

const src = (p: IpPacket) => formatAddress(p.buf.subarray(p.srcOffset, p.srcOffset + p.addrLength));
const isIcmpProhibited = (p: IpPacket) =>
  p.protocol === IP_PROTO.ICMP && parseIcmp(p).type === ICMP4.DEST_UNREACH;

test('a UDP flow decided packets: out from the client address, the answer back; a stray packet for another flow is dropped', async () => {
  const { s, got } = await tunnel('ip.sock');
  s.send(buildUdpPacket(CLIENT, 40000, OUT, 53, Buffer.from('query')));
  await waitUntil(() => atPeer.length >= 1, 'the packet at the off-ramp peer', 5000);
  const out = atPeer[0]!;
  assert.equal(src(out), CLIENT);
  assert.equal(out.buf.readUInt16BE(out.l4Offset), 40000);
  assert.equal(udpPayload(out).toString(), 'query');

  // A flow whose egress is blocked: the client hears ICMP prohibited.
  s.send(buildUdpPacket(CLIENT, 40001, BLOCKED, 53, Buffer.from('nope')));
  await waitUntil(() => got.some(isIcmpProhibited), 'ICMP prohibited for the blocked flow', 5000);
  // The peer sends a packet with the blocked flow's reply 5-tuple, then the real answer, in order.
  peer!.send(buildUdpPacket(BLOCKED, 53, CLIENT, 40001, Buffer.from('stray')));
  peer!.send(buildUdpPacket(OUT, 53, CLIENT, 40000, Buffer.from('answer')));
  await waitUntil(() => got.some((p) => p.protocol === IP_PROTO.UDP), 'the answer', 5000);
  const udp = got.filter((p) => p.protocol === IP_PROTO.UDP);
  assert.deepEqual(
    udp.map((p) => `${src(p)} ${udpPayload(p)}`),
    [`${OUT} answer`],
  );
  assert.deepEqual(datagramsSeen, ['up:query', 'down:answer']);
  s.close();
  await waitUntil(
    () => oxy.auditRecords().some((r) => r.request_kind === 'ip-udp' && r.target === `${OUT}:53`),
    'the session record',
    5000,
  );
  const rec = oxy.auditRecords().find((r) => r.request_kind === 'ip-udp' && r.target === `${OUT}:53`)!;
  assert.ok(rec.decisions.includes('egress:packets'));
  assert.equal(rec.upstream, `${OUT}:53`);
});

test('a tunnel without ip.offramp refuses the decision: ICMP prohibited, OXY_ERR_EGRESS_NO_PACKET_PATH', async () => {
  const { s, got } = await tunnel('bare.sock');
  s.send(buildUdpPacket(CLIENT, 40002, OUT, 53, Buffer.from('query')));
  await waitUntil(() => got.some(isIcmpProhibited), 'ICMP prohibited', 5000);
  s.close();
  await waitUntil(
    () => oxy.auditRecords().some((r) => r.endpoint === 'bare' && r.request_kind === 'ip-udp'),
    'the refused session record',
    5000,
  );
  const rec = oxy.auditRecords().find((r) => r.endpoint === 'bare' && r.request_kind === 'ip-udp')!;
  assert.equal(rec.status, 502);
  assert.ok(rec.decisions.includes('egress:packets'));
  assert.match(JSON.stringify(rec), /OXY_ERR_EGRESS_NO_PACKET_PATH/);
});
