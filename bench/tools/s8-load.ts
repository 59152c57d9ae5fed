/**
 * S8's load generator: HTTPS through a CONNECT proxy that intercepts, with the proxy's CA as the
 * only trust. No stock tool speaks CONNECT + TLS with a custom CA under load (wrk and h2load do
 * not take a proxy), so this one does, in one process:
 *
 * - `--mode keepalive`: `--conns` tunnels opened once, each a TLS connection carrying `GET
 *   /1k` after `GET /1k` (keep-alive) for `--seconds`; counts responses.
 * - `--mode tunnels`: `--conns` loops, each opening a new tunnel per request (CONNECT, TLS
 *   handshake with the minted leaf, one `GET /1k`, close); counts tunnels.
 *
 * Without `--proxy` it goes straight to the origin (the "direct" row). Prints one JSON line:
 * `{ "count": N, "seconds": S, "errors": E }`.
 */

import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    proxy: { type: 'string' },
    target: { type: 'string' },
    name: { type: 'string', default: 'localhost' },
    ca: { type: 'string' },
    mode: { type: 'string', default: 'keepalive' },
    conns: { type: 'string', default: '32' },
    seconds: { type: 'string', default: '10' },
  },
});
const target = values.target as string;
const [thost, tport] = [
  target.slice(0, target.lastIndexOf(':')),
  Number(target.slice(target.lastIndexOf(':') + 1)),
];
const ca = readFileSync(values.ca as string, 'utf8');
const request = Buffer.from(`GET /1k HTTP/1.1\r\nHost: ${values.name}\r\n\r\n`);
const end = Date.now() + Number(values.seconds) * 1000;
let count = 0;
let errors = 0;

/** Opens a TLS connection to the target, through the proxy's CONNECT when there is one. */
function open(): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const secure = (socket?: net.Socket): void => {
      const s = tls.connect({
        ...(socket ? { socket } : { host: thost, port: tport }),
        servername: values.name,
        ca,
        ALPNProtocols: ['http/1.1'],
      });
      s.once('secureConnect', () => resolve(s));
      s.once('error', reject);
    };
    const p = values.proxy;
    if (p === undefined) {
      secure();
      return;
    }
    const raw = net.connect(Number(p.slice(p.lastIndexOf(':') + 1)), p.slice(0, p.lastIndexOf(':')));
    raw.setNoDelay(true);
    raw.once('error', reject);
    raw.write(`CONNECT ${values.name}:${tport} HTTP/1.1\r\nHost: ${values.name}:${tport}\r\n\r\n`);
    let head = '';
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1');
      const at = head.indexOf('\r\n\r\n');
      if (at < 0) return;
      raw.off('data', onData);
      raw.pause();
      if (/^HTTP\/1\.[01] 200/.test(head)) secure(raw);
      else reject(new Error(head.split('\r\n')[0]));
    };
    raw.on('data', onData);
  });
}

/** Sends one request and resolves once its whole (Content-Length framed) response arrived. */
function exchange(s: tls.TLSSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const at = buf.indexOf('\r\n\r\n');
      if (at < 0) return;
      const head = buf.subarray(0, at).toString('latin1');
      const m = /content-length:\s*(\d+)/i.exec(head);
      const want = at + 4 + Number(m?.[1] ?? 0);
      if (buf.length < want) return;
      s.off('data', onData);
      s.off('error', reject);
      if (!head.startsWith('HTTP/1.1 200')) reject(new Error(head.split('\r\n')[0]));
      else resolve();
    };
    s.on('data', onData);
    s.once('error', reject);
    s.write(request);
  });
}

async function keepalive(): Promise<void> {
  const s = await open();
  while (Date.now() < end) {
    await exchange(s);
    count++;
  }
  s.destroy();
}

async function tunnels(): Promise<void> {
  while (Date.now() < end) {
    const s = await open();
    await exchange(s);
    s.destroy();
    count++;
  }
}

const started = performance.now();
const loop = values.mode === 'tunnels' ? tunnels : keepalive;
await Promise.all(
  Array.from({ length: Number(values.conns) }, async () => {
    while (Date.now() < end) {
      try {
        await loop();
      } catch {
        errors++;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  }),
);
const seconds = (performance.now() - started) / 1000;
process.stdout.write(`${JSON.stringify({ count, seconds, errors })}\n`);
process.exit(0);
