/**
 * An origin that answers before it read the whole request body and then closes (Python's
 * `http.server` answering 501 to a POST, an origin refusing an upload with 413): closing with
 * unread bytes makes its kernel send a reset, so the proxy's next body write fails (EPIPE)
 * while the answer is already in its receive buffer. curl, talking to such an origin directly,
 * shows the answer; so must the proxy, to HTTP/1.1 and HTTP/2 clients, not a 502.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { nativeH1Stats } from '../src/onramps/http1/native-engine.ts';
import { type AppUnderTest, curl, hooksApp, startApp } from '../src/testing/index.ts';

const BODY = Buffer.alloc(4 << 20, 0x61);
const dir = mkdtempSync(join(tmpdir(), 'oxy-early-'));
const bodyFile = join(dir, 'body');
writeFileSync(bodyFile, BODY);
/** Reads the request head, answers 413, and closes with the body unread (a reset). */
const origin = net.createServer((s) => {
  s.on('error', () => {});
  let head = '';
  const onData = (d: Buffer): void => {
    head += d.toString('latin1');
    if (!head.includes('\r\n\r\n')) return;
    s.off('data', onData);
    s.pause();
    // As Python's http.server does: the answer, shutdown(SHUT_WR), close (a reset: unread bytes).
    s.end('HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo big\n', () =>
      s.destroy(),
    );
  };
  s.on('data', onData);
});
origin.listen(0, '127.0.0.1');
await once(origin, 'listening');
const port = (origin.address() as net.AddressInfo).port;

let oxy: AppUnderTest;
after(async () => {
  await oxy?.stop();
  origin.close();
  rmSync(dir, { recursive: true, force: true });
});

test('HTTP/1.1 client: an upload the origin refuses early gets its answer, not a 502', async () => {
  oxy = await startApp(hooksApp({}), { settings: { egress: { blocked_cidrs: [] } } });
  for (let i = 0; i < 3; i++) {
    const r = await curl([
      '-x',
      `http://${oxy.address()}`,
      `http://127.0.0.1:${port}/upload`,
      '--data-binary',
      `@${bodyFile}`,
      '-H',
      'expect:', // the body follows the head at once, as curl sends bodies under 1 MiB
      '-w',
      '%{http_code}',
    ]);
    assert.equal(r.stdout, 'too big\n413', r.stderr);
  }
});

test('HTTP/2 client: the same upload gets the 413', async () => {
  const client = http2.connect(`http://${oxy.address()}`);
  client.on('error', () => {});
  try {
    const req = client.request({
      ':method': 'POST',
      ':scheme': 'http',
      ':authority': `127.0.0.1:${port}`,
      ':path': '/upload',
    });
    req.on('error', () => {});
    req.end(BODY);
    const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
    let text = '';
    req.setEncoding('latin1');
    req.on('data', (c: string) => {
      text += c;
    });
    // The response's end (Node's client keeps the stream open while its unsent body is queued,
    // after the proxy's RST_STREAM NO_ERROR).
    await once(req, 'end');
    assert.equal(headers[':status'], 413);
    assert.equal(text, 'too big\n');
  } finally {
    client.destroy();
  }
});

test('HTTP/1.1 client still sending the refused upload: the answer, then the end once the body is sent, never a reset', async () => {
  // The proxy answers and must close, with the client mid-body: it shuts its write side and
  // reads the rest of the body (lingering close). Closing at once would reset the connection
  // over the unread bytes, and a client could lose the answer it had not read yet.
  const served = nativeH1Stats.served;
  const sock = net.connect({
    port: Number(oxy.address().split(':').pop()),
    host: '127.0.0.1',
    allowHalfOpen: true,
  });
  await once(sock, 'connect');
  let error: Error | null = null;
  sock.on('error', (e) => {
    error = e;
  });
  let got = '';
  sock.setEncoding('latin1');
  sock.on('data', (d: string) => {
    got += d;
  });
  const ended = new Promise((resolve) => sock.once('end', resolve).once('close', resolve));
  sock.write(
    `POST http://127.0.0.1:${port}/upload HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\ncontent-length: ${BODY.length}\r\n\r\n`,
  );
  sock.end(BODY); // all of it at once: much of it still unread by the proxy when it answers
  await ended;
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(error, null, 'no reset');
  assert.match(got, /^HTTP\/1\.1 413 .*too big\n$/s, 'the answer, whole');
  assert.equal(nativeH1Stats.served - served, 1, 'the native engine served it');
  sock.destroy();
});
