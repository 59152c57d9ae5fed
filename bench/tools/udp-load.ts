/**
 * The load generator of S7: a closed loop of UDP datagrams through a relay with a fixed window,
 * as bench/tools/udp-relay.ts does, in a process of its own so the harness measures nothing.
 *
 *   node bench/tools/udp-load.ts --target H:P [--mode echo|dns] [--size 64] [--window 256]
 *     [--clients 4] [--seconds 5] [--pid N]
 *
 * `echo`: `clients` sockets each keep `window / clients` datagrams of `size` bytes circulating
 * through the relay to an echo upstream, sending every reply straight back (sendmmsg of the
 * received batch). `dns`: each reply must be an answer (QR set, one A record, 192.0.2.1) and is
 * followed by a new query with a new ID. If the loop dies out (datagrams lost to full buffers)
 * it is restarted and the restart counted. With `--pid`, the CPU time of that process tree over
 * the measured window is reported, split into its JS, reactor and other threads.
 * Prints one JSON line.
 */
import { parseArgs } from 'node:util';
import { type UdpOutgoing, UdpSocket } from 'native';
import { CLOSED_LOOP_OPTIONS, runClosedLoop } from '../lib/closed-loop.ts';

const { values } = parseArgs({
  options: {
    target: { type: 'string' },
    mode: { type: 'string', default: 'echo' },
    size: { type: 'string', default: '64' },
    clients: { type: 'string', default: '4' },
    ...CLOSED_LOOP_OPTIONS,
  },
});
if (!values.target) throw new Error('--target host:port is required');
const [address = '127.0.0.1', portText = ''] = values.target.split(':');
const port = Number(portText);
const dns = values.mode === 'dns';
const clients = Number(values.clients);
const each = Math.max(1, Math.floor(Number(values.window) / clients));
const BUF = 4 << 20;

/** A query for `bench.example.` A, recursion desired, with the ID set per send. */
const QUERY = Buffer.from([
  0,
  0,
  1,
  0,
  0,
  1,
  0,
  0,
  0,
  0,
  0,
  0,
  5,
  ...Buffer.from('bench'),
  7,
  ...Buffer.from('example'),
  0,
  0,
  1,
  0,
  1,
]);
let nextId = 1;
function query(): Buffer {
  const q = Buffer.from(QUERY);
  q.writeUInt16BE(nextId, 0);
  nextId = (nextId + 1) & 0xffff;
  return q;
}
const payload = dns ? QUERY : Buffer.alloc(Number(values.size), 0x61);
const answerLength = QUERY.length + 16;

let received = 0;
let bad = 0;
const sockets = Array.from({ length: clients }, () => {
  const s = UdpSocket.bind({ address: '127.0.0.1', receiveBufferSize: BUF, sendBufferSize: BUF });
  s.onBatch((b) => {
    received += b.count;
    if (!dns) {
      s.sendBatch(b);
      return;
    }
    const out: UdpOutgoing[] = [];
    for (let i = 0; i < b.count; i++) {
      const r = b.payload(i);
      if (
        r.length !== answerLength ||
        (r[2]! & 0x80) === 0 ||
        r.readUInt16BE(6) !== 1 ||
        r[r.length - 1] !== 1
      )
        bad++;
      out.push({ data: query(), address, port });
    }
    s.sendBatch(out);
  });
  return s;
});

const result = await runClosedLoop({
  kick() {
    for (const s of sockets)
      for (let i = 0; i < each; i += 64)
        s.sendBatch(
          Array.from({ length: Math.min(64, each - i) }, () => ({
            data: dns ? query() : payload,
            address,
            port,
          })),
        );
  },
  received: () => received,
  bad: () => bad,
  args: values,
});
for (const s of sockets) s.close();
process.stdout.write(
  `${JSON.stringify({ mode: dns ? 'dns' : 'echo', size: dns ? QUERY.length : payload.length, ...result })}\n`,
);
process.exit(0);
