/**
 * The UDP upstreams of S7, in one process on fixed loopback ports: an echo server (every
 * datagram goes back to its sender) and a DNS responder that answers every query with one fixed
 * A record (192.0.2.1, TTL 60). Both use the addon's batched UdpSocket (recvmmsg/sendmmsg) so
 * that the upstream is not what limits the relay under test.
 *
 *   node bench/tools/udp-peers.ts --echo 21081 --dns 21082
 *
 * Prints one JSON line once both are bound, then serves until it is stopped (SIGTERM).
 */
import { parseArgs } from 'node:util';
import { type UdpOutgoing, UdpSocket } from 'native';

const { values } = parseArgs({
  options: {
    echo: { type: 'string', default: '21081' },
    dns: { type: 'string', default: '21082' },
  },
});
const BUF = 4 << 20;

const echo = UdpSocket.bind({
  address: '127.0.0.1',
  port: Number(values.echo),
  receiveBufferSize: BUF,
  sendBufferSize: BUF,
});
echo.onBatch((b) => echo.sendBatch(b));

/** The answer appended to every reply: a pointer to the question's name, A, IN, TTL 60, 192.0.2.1. */
const ANSWER = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);

/**
 * The reply to one query, or null when it is not a single-question query we can answer: the
 * header and question copied, QR and RA set, one answer, no authority or additional records.
 */
function reply(q: Buffer): Buffer | null {
  if (q.length < 17 || (q[2]! & 0x80) !== 0 || q.readUInt16BE(4) !== 1) return null;
  let at = 12;
  while (at < q.length && q[at] !== 0) at += q[at]! + 1;
  const end = at + 5; // the root label, QTYPE, QCLASS
  if (end > q.length) return null;
  const r = Buffer.allocUnsafe(end + ANSWER.length);
  q.copy(r, 0, 0, end);
  r[2] = (q[2]! | 0x80) & 0xf9; // QR, keep opcode and RD, clear AA and TC
  r[3] = 0x80; // RA, RCODE 0
  r.writeUInt16BE(1, 6); // ANCOUNT
  r.writeUInt32BE(0, 8); // NSCOUNT, ARCOUNT
  ANSWER.copy(r, end);
  return r;
}

const dns = UdpSocket.bind({
  address: '127.0.0.1',
  port: Number(values.dns),
  receiveBufferSize: BUF,
  sendBufferSize: BUF,
});
dns.onBatch((b) => {
  const out: UdpOutgoing[] = [];
  for (let i = 0; i < b.count; i++) {
    const r = reply(b.payload(i));
    if (r) out.push({ data: r, address: b.address(i), port: b.port(i) });
  }
  if (out.length > 0) dns.sendBatch(out);
});

process.stdout.write(`${JSON.stringify({ echo: echo.address().port, dns: dns.address().port })}\n`);
process.once('SIGTERM', () => {
  echo.close();
  dns.close();
  process.exit(0);
});
