// S8's load generator (bench/tools/tls-load.c) against a Node.js HTTPS origin on loopback,
// straight and through a tiny CONNECT proxy: it counts only verified, complete exchanges, opens
// one TLS connection per exchange in `tunnels` mode, and counts nothing when the certificate
// does not verify. Run on demand (bench is not in `npm test`):
//   npx node --test bench/lib/tls-load.test.ts
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildTlsLoad, ensureS8Certs } from './intercept.ts';
import { runCommand } from './procs.ts';

const ROOT = join(fileURLToPath(import.meta.url), '../../..');
const work = mkdtempSync(join(tmpdir(), 'oxy-tls-load-'));
let bin = '';
let ca = '';
let originAddr = '';
let proxyAddr = '';
let origin: https.Server;
let proxy: net.Server;
const seen = { tls: 0, requests: 0 };

before(async () => {
  const certs = await ensureS8Certs(work);
  ca = certs.ca;
  bin = await buildTlsLoad(ROOT, work);
  origin = https.createServer(
    {
      cert: readFileSync(join(certs.dir, 'origin.pem')),
      key: readFileSync(join(certs.dir, 'origin-key.pem')),
    },
    (_req, res) => {
      seen.requests++;
      res.end('x'.repeat(1024));
    },
  );
  origin.on('secureConnection', () => seen.tls++);
  origin.listen(0, '127.0.0.1');
  await once(origin, 'listening');
  originAddr = `127.0.0.1:${(origin.address() as net.AddressInfo).port}`;
  // CONNECT name:port → a TCP connection to 127.0.0.1:port, bytes piped both ways.
  proxy = net.createServer((c) => {
    c.once('data', (head: Buffer) => {
      const port = Number(/^CONNECT [^:]+:(\d+) /.exec(head.toString('latin1'))?.[1]);
      const up = net.connect(port, '127.0.0.1', () => {
        c.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        c.pipe(up).pipe(c);
      });
      up.on('error', () => c.destroy());
      c.on('error', () => up.destroy());
    });
  });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  proxyAddr = `127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
});

after(() => {
  origin.closeAllConnections();
  origin.close();
  proxy.close();
  rmSync(work, { recursive: true, force: true });
});

async function load(...args: string[]): Promise<{ count: number; seconds: number; errors: number }> {
  const r = await runCommand(bin, [...args, '-d', '1'], { timeoutMs: 20000 });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

describe('tls-load', () => {
  it('keepalive: many requests on few verified connections', async () => {
    const start = { ...seen };
    const j = await load('keepalive', '--target', originAddr, '--ca', ca, '-c', '2');
    assert.ok(j.count > 20, JSON.stringify(j));
    assert.equal(j.errors, 0);
    assert.ok(seen.tls - start.tls <= 2, `${seen.tls - start.tls} handshakes`);
    assert.ok(seen.requests - start.requests >= j.count);
  });

  it('tunnels through CONNECT: one new TLS connection per counted exchange', async () => {
    const start = { ...seen };
    const j = await load('tunnels', '--target', originAddr, '--proxy', proxyAddr, '--ca', ca, '-c', '2');
    assert.ok(j.count > 5, JSON.stringify(j));
    assert.equal(j.errors, 0);
    assert.ok(seen.tls - start.tls >= j.count);
  });

  it('an origin the CA does not vouch for: nothing counted, errors', async () => {
    const other = await ensureS8Certs(join(work, 'other'));
    const j = await load('keepalive', '--target', originAddr, '--ca', other.ca, '-c', '1');
    assert.equal(j.count, 0);
    assert.ok(j.errors > 0);
  });

  it('rejects bad arguments with its usage', async () => {
    const r = await runCommand(bin, ['keepalive', '--target', originAddr]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /usage/);
  });
});
