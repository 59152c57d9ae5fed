/**
 * The S5 client: many CONNECT tunnels as streams of one HTTP/2 connection (h2c, prior
 * knowledge), each carrying one HTTP/1.1 GET of a large file from the upstream, and the
 * aggregate throughput of all of them. It runs in its own process so the proxy under test and
 * the client do not share an event loop.
 *
 *   node h2-connect.ts --target H:P --path /10m --streams 100 [--proxy H:P]
 *
 * Without --proxy it opens one TCP connection per stream straight to the target (the "direct"
 * limit). Prints one JSON line: {bytes, seconds, gbit_per_s, ok, errors} or {unsupported}
 * when the proxy does not speak HTTP/2 or refuses CONNECT streams.
 */
import http2 from 'node:http2';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    proxy: { type: 'string' },
    target: { type: 'string' },
    path: { type: 'string', default: '/10m' },
    streams: { type: 'string', default: '100' },
    timeout: { type: 'string', default: '60' },
  },
});
if (!values.target) {
  process.stderr.write('usage: h2-connect.ts --target H:P [--proxy H:P] [--path P] [--streams N]\n');
  process.exit(2);
}
const target = values.target;
const streams = Number(values.streams);
const request = `GET ${values.path} HTTP/1.1\r\nHost: ${target}\r\nConnection: close\r\n\r\n`;

/** Counts the body bytes of one HTTP/1.1 response arriving in chunks; true once it is complete. */
class ResponseReader {
  head = Buffer.alloc(0);
  need = -1;
  body = 0;
  status = 0;

  push(chunk: Buffer): boolean {
    if (this.need < 0) {
      this.head = Buffer.concat([this.head, chunk]);
      const end = this.head.indexOf('\r\n\r\n');
      if (end < 0) return false;
      const text = this.head.subarray(0, end).toString('latin1');
      this.status = Number(text.slice(9, 12));
      this.need = Number(/\r\ncontent-length:\s*(\d+)/i.exec(text)?.[1] ?? 'NaN');
      chunk = this.head.subarray(end + 4);
      this.head = Buffer.alloc(0);
    }
    this.body += chunk.length;
    return this.body >= this.need;
  }
}

let ok = 0;
let errors = 0;
let bytes = 0;
let firstError = '';
const started = process.hrtime.bigint();

function finish(extra: Record<string, unknown> = {}): never {
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const out =
    ok === 0 && values.proxy
      ? { unsupported: firstError || 'no stream completed', errors, ...extra }
      : { bytes, seconds, gbit_per_s: (bytes * 8) / seconds / 1e9, ok, errors, ...extra };
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
}

function settle(success: boolean, reader: ResponseReader, why = ''): void {
  if (success) ok++;
  else {
    errors++;
    firstError ||= why;
  }
  bytes += reader.body;
  if (ok + errors === streams) finish();
}

setTimeout(() => finish({ timed_out: true }), Number(values.timeout) * 1000).unref();

if (values.proxy) {
  const session = http2.connect(`http://${values.proxy}`, {
    settings: { initialWindowSize: 16 * 1024 * 1024 },
    peerMaxConcurrentStreams: streams,
  });
  session.on('error', (err: NodeJS.ErrnoException) => {
    if (!session.connecting || ok > 0) {
      firstError ||= `session: ${err.message}`;
      finish();
    }
    // Not even a TCP connection: an error of the run, not a proxy without HTTP/2.
    process.stdout.write(`${JSON.stringify({ error: `connect: ${err.message}` })}\n`);
    process.exit(0);
  });
  session.on('goaway', (code) => {
    firstError ||= `GOAWAY ${code}`;
  });
  session.on('close', () => {
    if (ok + errors < streams) {
      firstError ||= 'the proxy closed the HTTP/2 connection';
      finish();
    }
  });
  session.on('connect', () => {
    session.setLocalWindowSize(1024 * 1024 * 1024);
    for (let i = 0; i < streams; i++) {
      const reader = new ResponseReader();
      let done = false;
      const stream = session.request({ ':method': 'CONNECT', ':authority': target }, { endStream: false });
      const fail = (why: string) => {
        if (done) return;
        done = true;
        settle(false, reader, why);
      };
      stream.on('response', (headers) => {
        const status = Number(headers[':status']);
        if (status !== 200) {
          fail(`CONNECT answered ${status}`);
          stream.close();
          return;
        }
        stream.write(request);
      });
      stream.on('data', (chunk: Buffer) => {
        if (!done && reader.push(chunk)) {
          done = true;
          settle(reader.status === 200, reader, `GET answered ${reader.status}`);
          stream.close();
        }
      });
      stream.on('error', (err) => fail(`stream: ${err.message}`));
      stream.on('close', () => fail(`stream closed (code ${stream.rstCode})`));
    }
  });
} else {
  const [host, port] = [
    target.slice(0, target.lastIndexOf(':')),
    Number(target.slice(target.lastIndexOf(':') + 1)),
  ];
  for (let i = 0; i < streams; i++) {
    const reader = new ResponseReader();
    let done = false;
    const sock = net.connect({ host, port }, () => sock.write(request));
    sock.on('data', (chunk: Buffer) => {
      if (!done && reader.push(chunk)) {
        done = true;
        settle(reader.status === 200, reader);
        sock.destroy();
      }
    });
    sock.on('error', (err) => {
      if (done) return;
      done = true;
      settle(false, reader, err.message);
    });
  }
}
