/**
 * The one HTTP/1.1 exchange engine, upstream side (`offramps/http/pool.ts` through
 * `flows/http/exchange.ts`): request bodies streamed up in both framings with trailers, response
 * trailers relayed, an early final answer (413 before the body) ending the exchange cleanly,
 * `https` origins over verified TLS (a certificate that does not verify is a 502 naming the
 * reason, never a downgrade), and a non-idempotent request never sent twice.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { IngressConnection } from '../src/context/state.ts';
import { serveHttp1Stream } from '../src/onramps/http1/lean.ts';
import type { Runtime } from '../src/runtime.ts';
import {
  connectTunnel,
  type HttpUpstream,
  hooksApp,
  rawConnect,
  readUntil,
  startApp,
  startHttpUpstream,
  startTcpServer,
  startTlsUpstream,
  waitForClose,
  waitUntil,
} from '../src/testing/index.ts';

const upstream: HttpUpstream = await startHttpUpstream({
  // Routes run once the body was read (the upstream kit keeps it in `requests`).
  'POST /echo': (req, res) => {
    const n = upstream.requests.at(-1)?.body.length ?? -1;
    const sum = req.trailers['x-sum'];
    res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-back' });
    res.write(`got ${n} bytes, framing ${req.headers['transfer-encoding'] ?? 'length'}`);
    res.addTrailers({ 'x-back': `sum was ${sum ?? 'none'}` });
    res.end();
  },
});
// Answers 413 as soon as a head arrived, without reading the body.
const early = await startTcpServer((s) => {
  s.once('data', () => s.end('HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large'));
  s.on('error', () => {});
});
const tlsUp = await startTlsUpstream({ '/secure': { body: 'secure hello' } });
const dir = mkdtempSync(join(tmpdir(), 'oxy-engine-'));
const caFile = join(dir, 'ca.pem');
writeFileSync(caFile, tlsUp.certificate.caPem);

// `/tls` requests are sent to the HTTPS upstream (the hook rewrites the scheme and authority).
const toTls = hooksApp({
  httpRequest: {
    handleRequest: (head) => {
      if (head.path.startsWith('/tls')) {
        head.scheme = 'https';
        head.authority = tlsUp.authority;
        head.path = '/secure';
      }
      return { kind: 'forward' };
    },
  },
});
const proxy = await startApp(hooksApp());
const trusting = await startApp(toTls, { settings: { egress: { tls: { extra_ca: [caFile] } } } });
const untrusting = await startApp(toTls);
after(async () => {
  await Promise.all([upstream.close(), tlsUp.close(), early.close()]);
  await Promise.all([proxy.stop(), trusting.stop(), untrusting.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

function viaProxy(
  p: { address(): string },
  path: string,
  body?: Buffer,
): Promise<{ status: number; body: string }> {
  const [host, port] = p.address().split(':') as [string, string];
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host, port: Number(port), method: body === undefined ? 'GET' : 'POST', path, agent: false },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          text += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

test('a chunked request body goes up with its trailers; the response trailers come back', async () => {
  const c = rawConnect(
    proxy.address(),
    `POST ${upstream.origin}/echo HTTP/1.1\r\nHost: ${upstream.authority}\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n` +
      '5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n',
  );
  const text = await readUntil(c, /0\r\n(?:[^\r\n]+\r\n)*\r\n$/);
  c.destroy();
  assert.match(text, /^HTTP\/1\.1 200/);
  assert.match(text, /got 11 bytes, framing chunked/);
  assert.match(text, /\r\n0\r\nx-back: sum was 42\r\n\r\n$/i);
});

test('a large Content-Length body streams up whole', async () => {
  const body = Buffer.alloc(4 * 1024 * 1024, 7);
  const r = await viaProxy(proxy, `${upstream.origin}/echo`, body);
  assert.equal(r.status, 200);
  assert.equal(r.body, `got ${body.length} bytes, framing length`);
});

test('a final answer before the body ends the exchange: relayed, and the client connection closed', async () => {
  const c = rawConnect(
    proxy.address(),
    `POST http://${early.authority}/ HTTP/1.1\r\nHost: ${early.authority}\r\nContent-Length: 100000\r\n\r\nabc`,
  );
  c.on('error', () => {});
  const text = await readUntil(c, 'too large');
  assert.match(text, /^HTTP\/1\.1 413/);
  await waitForClose(c);
  // Records are written as exchanges end, so an earlier test's may land after this one began.
  await waitUntil(() => proxy.auditRecords().some((r) => r.status === 413), 'the 413 record');
  const record = proxy.auditRecords().find((r) => r.status === 413);
  assert.equal(record?.status, 413);
  assert.equal(record?.close_reason, 'done');
});

test('https origins: verified TLS with egress.tls.extra_ca, and a 502 naming the reason without it', async () => {
  const ok = await viaProxy(trusting, 'http://example.test/tls');
  assert.equal(ok.status, 200);
  assert.equal(ok.body, 'secure hello');
  assert.equal(tlsUp.requests.at(-1)?.url, '/secure');
  const seen = tlsUp.requests.length;
  const refused = await viaProxy(untrusting, 'http://example.test/tls');
  assert.equal(refused.status, 502);
  assert.match(refused.body, /certificate verification failed/);
  assert.equal(tlsUp.requests.length, seen, 'nothing was sent to the origin');
});

test('a POST on a reused connection the upstream closed is not sent again', async () => {
  // An upstream that answers the first request on each connection, then closes it on the next
  // request without answering.
  let heads = 0;
  const flaky = await startTcpServer((s) => {
    let served = 0;
    s.on('data', (d: Buffer) => {
      if (!d.toString('latin1').includes('\r\n\r\n')) return;
      heads++;
      if (served++ === 0) s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      else s.destroy();
    });
  });
  try {
    const url = `http://${flaky.authority}/x`;
    const [host, port] = proxy.address().split(':') as [string, string];
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const send = (method: string): Promise<number> =>
      new Promise((resolve, reject) => {
        const req = http.request({ host, port: Number(port), method, path: url, agent }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end();
      });
    assert.equal(await send('GET'), 200);
    assert.equal(await send('POST'), 502);
    assert.equal(heads, 2, 'the POST went upstream once');
    assert.equal(await send('GET'), 200);
    const again = await send('GET'); // reused, closed by the upstream: retried once on a new connection
    assert.equal(again, 200);
    agent.destroy();
  } finally {
    await flaky.close();
  }
});

test('serveHttp1Stream serves HTTP/1.1 inside a tunnel: origin-form requests go to the given origin, bodies too', async () => {
  let rt: Runtime | null = null;
  const inner = await startApp(
    hooksApp({
      tunnel: {
        getAppTunnelPipeline: (ctx) => async (client, upstreamSide) => {
          upstreamSide.destroy();
          const ingress = ctx.ingress as unknown as IngressConnection;
          serveHttp1Stream(rt as Runtime, ingress.endpoint, client, ingress, {
            origin: { scheme: 'http', authority: upstream.authority },
          });
          await new Promise((resolve) => client.once('close', resolve));
        },
      },
    }),
  );
  rt = inner.proxy.runtime;
  try {
    const t = await connectTunnel(inner.address(), upstream.authority);
    assert.equal(t.status, 200);
    t.socket.write(
      'POST /echo HTTP/1.1\r\nHost: inside\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 3\r\n\r\n',
    );
    const text = await readUntil(t.socket, /0\r\n(?:[^\r\n]+\r\n)*\r\n$/);
    assert.match(text, /^HTTP\/1\.1 200/);
    assert.match(text, /got 3 bytes, framing chunked/);
    assert.match(text, /x-back: sum was 3/i);
    assert.equal(upstream.requests.at(-1)?.url, '/echo');
    t.socket.destroy();
  } finally {
    await inner.stop();
  }
});
