/** `EgressDecision.packets` pieces without a kernel: the claims of an off-ramp connection, the UDP path, the refusals. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RequestState } from '../../context/state.ts';
import { packetPathFor, setPacketPath } from '../../egress/packets.ts';
import { icmpUnreachable } from '../../protocols/icmp/generate.ts';
import { addressBytes, formatAddress } from '../../protocols/ip/address.ts';
import { buildUdpPacket } from '../../protocols/ip/builder.ts';
import { type IpPacket, parseIp } from '../../protocols/ip/packet.ts';
import { udpPayload } from '../../protocols/udp/header.ts';
import { packetFlowKey } from './flow-key.ts';
import { addressKey, datagramPath, PacketClaims } from './packet-egress.ts';
import type { PacketsOut } from './port.ts';

const CLIENT = addressBytes('10.7.0.2');

/** A PacketsOut over a PacketClaims, recording what is sent. */
function fakeOut(): { out: PacketsOut; sent: Buffer[]; claims: PacketClaims } {
  const claims = new PacketClaims();
  const sent: Buffer[] = [];
  return {
    claims,
    sent,
    out: {
      send: (p) => sent.push(Buffer.from(p)),
      claim: (k, f) => claims.claim(k, f),
      release: (k, f) => claims.release(k, f),
    },
  };
}

test('addressKey is the key flow-key.ts computes for the same packet (v4 and v6)', () => {
  for (const [a, b] of [
    ['198.18.0.53', '10.7.0.2'],
    ['2001:db8::53', 'fd00::2'],
  ] as const) {
    const p = parseIp(buildUdpPacket(a, 53, b, 40000, Buffer.from('x')));
    assert.equal(addressKey(addressBytes(a), 53, addressBytes(b), 40000, 17), packetFlowKey(p));
  }
});

test('claims: a packet goes to the claim of its key; a release by an older claimant keeps the newer claim', () => {
  const claims = new PacketClaims();
  const reply = parseIp(buildUdpPacket('198.18.0.53', 53, '10.7.0.2', 40000, Buffer.from('a')));
  const other = parseIp(buildUdpPacket('198.18.0.53', 53, '10.7.0.2', 40001, Buffer.from('b')));
  const got: string[] = [];
  const first = (p: IpPacket) => got.push(`first:${udpPayload(p)}`);
  const second = (p: IpPacket) => got.push(`second:${udpPayload(p)}`);
  const key = packetFlowKey(reply);
  assert.equal(claims.deliver(reply), false);
  claims.claim(key, first);
  assert.equal(claims.deliver(reply), true);
  assert.equal(claims.deliver(other), false);
  claims.claim(key, second);
  claims.release(key, first);
  assert.equal(claims.deliver(reply), true);
  claims.release(key, second);
  assert.equal(claims.deliver(reply), false);
  assert.equal(claims.size, 0);
  assert.deepEqual(got, ['first:a', 'second:a']);
});

test('datagramPath: datagrams leave as UDP packets from the client; replies come back as payloads until closed', () => {
  const { out, sent, claims } = fakeOut();
  const path = datagramPath(out, CLIENT, 40000, () => {});
  const replies: string[] = [];
  const d = path.openDatagrams!({ host: '198.18.0.53', port: 53 }, (b) => replies.push(b.toString()));
  d.send(Buffer.from('query'));
  const p = parseIp(sent[0]!);
  assert.equal(formatAddress(p.buf.subarray(p.srcOffset, p.srcOffset + 4)), '10.7.0.2');
  assert.equal(formatAddress(p.buf.subarray(p.dstOffset, p.dstOffset + 4)), '198.18.0.53');
  assert.equal(p.buf.readUInt16BE(p.l4Offset), 40000);
  assert.equal(udpPayload(p).toString(), 'query');
  assert.ok(
    claims.deliver(parseIp(buildUdpPacket('198.18.0.53', 53, '10.7.0.2', 40000, Buffer.from('answer')))),
  );
  assert.deepEqual(replies, ['answer']);
  d.close();
  d.send(Buffer.from('late'));
  assert.equal(sent.length, 1);
  assert.equal(claims.size, 0);
});

test('datagramPath refuses a destination of another family than the client', () => {
  const { out } = fakeOut();
  const path = datagramPath(out, CLIENT, 40000, () => {});
  assert.throws(() => path.openDatagrams!({ host: '2001:db8::53', port: 53 }, () => {}), {
    code: 'OXY_ERR_EGRESS_NO_PACKET_PATH',
  });
});

test('packetPathFor: refused, with the reason, for a unit without a path, and for a name', () => {
  const udp = { kind: 'ip-udp' } as RequestState;
  assert.throws(() => packetPathFor({ kind: 'connect' } as RequestState, { host: '192.0.2.1', port: 80 }), {
    code: 'OXY_ERR_EGRESS_NO_PACKET_PATH',
    message: /a connect unit is not a flow of an IP tunnel/,
  });
  assert.throws(() => packetPathFor(null, { host: '192.0.2.1', port: 80 }), /not a flow of an IP tunnel/);
  assert.throws(() => packetPathFor(udp, { host: '192.0.2.1', port: 53 }), /has no off-ramp/);
  const path = datagramPath(fakeOut().out, CLIENT, 1, () => {});
  setPacketPath(udp, path);
  assert.equal(packetPathFor(udp, { host: '192.0.2.1', port: 53 }), path);
  assert.throws(() => packetPathFor(udp, { host: 'dns.test', port: 53 }), /needs an IP address and port/);
});

test('claims: an ICMP error goes to the claim of the flow whose packet it quotes; a UDP path drops it', () => {
  const { out, sent, claims } = fakeOut();
  const replies: string[] = [];
  const d = datagramPath(out, CLIENT, 40000, () => {}).openDatagrams!(
    { host: '198.18.0.53', port: 53 },
    (b) => replies.push(b.toString()),
  );
  d.send(Buffer.from('query'));
  const error = icmpUnreachable(parseIp(sent[0]!), 'port');
  assert.ok(error !== null);
  assert.ok(claims.deliver(parseIp(Buffer.from(error))), 'the UDP path claims it');
  assert.deepEqual(replies, [], 'and delivers no datagram for it');
  const seen: IpPacket[] = [];
  const key = addressKey(addressBytes('198.18.0.53'), 53, CLIENT, 40000, 17);
  claims.claim(key, (p) => seen.push(p)); // a second claimant of the key, to see what is delivered
  assert.ok(claims.deliver(parseIp(error)));
  assert.equal(seen[0]?.protocol, 1);
  const unrelated = icmpUnreachable(
    parseIp(buildUdpPacket('10.7.0.2', 40009, '198.18.0.53', 53, Buffer.from('x'))),
    'port',
  );
  assert.equal(claims.deliver(parseIp(unrelated!)), false);
});
