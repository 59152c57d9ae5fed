/**
 * Regression tests for the forwarding defects an abuse test found (issue 19): an HTTP/2 stream
 * reset leaking its upstream connection and its audit record, an unasked 101 hanging the
 * client, a non-101 answer to an Upgrade buffered whole, and request bodies that stop arriving.
 * Real clients, raw upstreams that misbehave on purpose.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import type net from 'node:net';
import { after, describe, test } from 'node:test';
import {
  hooksApp,
  rawConnect,
  readUntil,
  startApp,
  startTcpServer,
  type TcpPeer,
  waitForClose,
  waitUntil,
} from '../src/testing/index.ts';
import { onHead } from './fixtures/raw-http.ts';

/** An upstream that reads a request head and hands the socket to `answer`. */
function rawUpstream(answer: (socket: net.Socket, head: string) => void): Promise<TcpPeer> {
  return startTcpServer((s) => onHead(s, (head) => answer(s, head)));
}

// Never answers: a stream reset while waiting must still release the upstream connection.
const silent = await rawUpstream(() => {});
// Answers 101 to anything (with and without an Upgrade field).
const switching = await rawUpstream((s, head) => {
  const bare = head.includes('/bare');
  s.write(`HTTP/1.1 101 Switching Protocols\r\n${bare ? '' : 'Upgrade: foo\r\nConnection: upgrade\r\n'}\r\n`);
});
// Answers an Upgrade with 200 and a large body, written as fast as the proxy takes it.
const BIG = 64 * 1024 * 1024;
let bigSent = 0;
const bigAnswer = await rawUpstream((s) => {
  s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${BIG}\r\n\r\n`);
  const chunk = Buffer.alloc(1024 * 1024, 0x61);
  bigSent = 0;
  const pump = (): void => {
    while (bigSent < BIG) {
      bigSent += chunk.length;
      if (!s.write(chunk)) {
        s.once('drain', pump);
        return;
      }
    }
    s.end();
  };
  pump();
});

// Sends a head and the start of a body, then nothing.
const stalling = await rawUpstream((s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nfirst'));
const oxy = await startApp(hooksApp(), {
  settings: { endpoints: { main: { body_read_timeout: '300ms' } }, egress: { response_timeout: '400ms' } },
});
after(async () => {
  await Promise.all([silent.close(), switching.close(), bigAnswer.close(), stalling.close()]);
  await oxy.stop();
});

function h2session(): http2.ClientHttp2Session {
  const s = http2.connect(`http://${oxy.address()}`);
  s.on('error', () => {});
  return s;
}

describe('HTTP/2 stream reset', () => {
  test('a GET reset while waiting for the upstream releases its connection and is audited', async () => {
    const before = oxy.auditRecords().length;
    const s = h2session();
    await once(s, 'remoteSettings');
    const n = 20;
    const accepted = silent.accepted();
    const reqs = Array.from({ length: n }, (_, i) => {
      const req = s.request({ ':method': 'GET', ':authority': silent.authority, ':path': `/r${i}` });
      req.on('error', () => {});
      req.end();
      return req;
    });
    // Reset once every request is waiting on its upstream connection.
    await waitUntil(() => silent.accepted() >= accepted + n, 'every request upstream', 10_000);
    for (const req of reqs) req.close(http2.constants.NGHTTP2_CANCEL);
    const records = await oxy.waitForAudit(before + n, 10_000);
    await waitUntil(() => silent.open() === 0, 'the upstream connections to be closed', 5000);
    const mine = records.slice(before);
    assert.equal(mine.length, n);
    for (const r of mine) assert.equal(r.close_reason, 'client_closed');
    s.destroy();
  });
});

describe('an upstream that answers 101 unasked', () => {
  test('HTTP/2 GET: 502 and an audit record, upstream closed', async () => {
    for (const path of ['/with-upgrade', '/bare']) {
      const before = oxy.auditRecords().length;
      const s = h2session();
      const req = s.request({ ':method': 'GET', ':authority': switching.authority, ':path': path });
      req.on('error', () => {});
      req.end();
      const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
      assert.equal(headers[':status'], 502, path);
      const records = await oxy.waitForAudit(before + 1);
      assert.equal(records.at(-1)?.status, 502);
      s.destroy();
    }
    await waitUntil(() => switching.open() === 0, 'the upstream connections to be closed');
  });

  test('HTTP/1.1 POST through node:http: 502 and an audit record', async () => {
    for (const path of ['/with-upgrade', '/bare']) {
      const before = oxy.auditRecords().length;
      const c = rawConnect(
        oxy.address(),
        `POST http://${switching.authority}${path} HTTP/1.1\r\nHost: ${switching.authority}\r\nContent-Length: 2\r\n\r\nhi`,
      );
      const head = await readUntil(c, '\r\n\r\n', 3000);
      assert.match(head, /^HTTP\/1\.1 502 /, path);
      await oxy.waitForAudit(before + 1);
      c.destroy();
    }
    await waitUntil(() => switching.open() === 0, 'the upstream connections to be closed');
  });
});

describe('Upgrade answered without switching', () => {
  test('a large answer is streamed to the client under backpressure, not held whole', async () => {
    const before = oxy.auditRecords().length;
    const c = rawConnect(
      oxy.address(),
      `GET http://${bigAnswer.authority}/ HTTP/1.1\r\nHost: ${bigAnswer.authority}\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n`,
    );
    // The head arrives while the body is still being sent (buffering would hold it back).
    const head = await readUntil(c, '\r\n\r\n', 3000);
    assert.match(head, /^HTTP\/1\.1 200 /);
    assert.match(head, new RegExp(`Content-Length: ${BIG}`, 'i'));
    let got = Buffer.byteLength(head.slice(head.indexOf('\r\n\r\n') + 4), 'latin1');
    // A client that stops reading stops the upstream: what is in flight is bounded by socket
    // buffers and the proxy's stream buffers, far from the whole answer.
    c.pause();
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(bigSent < BIG / 2, `the upstream got ${bigSent} bytes out while the client read none`);
    c.on('data', (d: Buffer) => {
      got += d.length;
    });
    c.resume();
    await waitForClose(c, 20_000);
    assert.equal(got, BIG);
    const records = await oxy.waitForAudit(before + 1);
    assert.equal(records.at(-1)?.bytes_down, BIG);
    assert.equal(records.at(-1)?.close_reason, 'not_upgraded');
  });
});

describe('a request body that stops arriving', () => {
  test('HTTP/1.1: 408 after body_read_timeout, upstream released, audited', async () => {
    const before = oxy.auditRecords().length;
    const c = rawConnect(
      oxy.address(),
      `POST http://${silent.authority}/slow HTTP/1.1\r\nHost: ${silent.authority}\r\nContent-Length: 100\r\n\r\nabc`,
    );
    const head = await readUntil(c, '\r\n\r\n', 3000);
    assert.match(head, /^HTTP\/1\.1 408 /);
    assert.match(head, /connection: close/i);
    await waitForClose(c, 3000);
    const records = await oxy.waitForAudit(before + 1);
    assert.equal(records.at(-1)?.close_reason, 'OXY_ERR_BODY_TIMEOUT');
    await waitUntil(() => silent.open() === 0, 'the upstream connection to be closed');
  });

  test('HTTP/2: the stream gets 408 after body_read_timeout, upstream released, audited', async () => {
    const before = oxy.auditRecords().length;
    const s = h2session();
    const req = s.request({ ':method': 'POST', ':authority': silent.authority, ':path': '/slow' });
    req.on('error', () => {});
    req.write('abc');
    const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
    assert.equal(headers[':status'], 408);
    const records = await oxy.waitForAudit(before + 1);
    assert.equal(records.at(-1)?.close_reason, 'OXY_ERR_BODY_TIMEOUT');
    await waitUntil(() => silent.open() === 0, 'the upstream connection to be closed');
    await waitUntil(() => req.closed, 'the stream to be closed');
    s.destroy();
  });
});

describe('an upstream that never answers', () => {
  test('504 after egress.response_timeout on every path, upstream released, audited', async () => {
    const heads = [
      `GET http://${silent.authority}/lean HTTP/1.1\r\nHost: ${silent.authority}\r\n\r\n`,
      `POST http://${silent.authority}/full HTTP/1.1\r\nHost: ${silent.authority}\r\nContent-Length: 2\r\n\r\nhi`,
      `GET http://${silent.authority}/up HTTP/1.1\r\nHost: ${silent.authority}\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n`,
    ];
    for (const head of heads) {
      const before = oxy.auditRecords().length;
      const started = performance.now();
      const c = rawConnect(oxy.address(), head);
      const answer = await readUntil(c, '\r\n\r\n', 3000);
      assert.match(answer, /^HTTP\/1\.1 504 /, head);
      assert.ok(performance.now() - started >= 350, 'not before the timeout');
      const records = await oxy.waitForAudit(before + 1);
      assert.equal(records.at(-1)?.close_reason, 'OXY_ERR_RESPONSE_TIMEOUT');
      c.destroy();
    }
    const s = h2session();
    const req = s.request({ ':method': 'GET', ':authority': silent.authority, ':path': '/h2' });
    req.on('error', () => {});
    req.end();
    const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
    assert.equal(headers[':status'], 504);
    s.destroy();
    await waitUntil(() => silent.open() === 0, 'the upstream connections to be closed');
  });
});

describe('a response body that stops moving', () => {
  test('is cut after egress.response_timeout without progress, on every path, upstream released', async () => {
    const heads = [
      `GET http://${stalling.authority}/lean HTTP/1.1\r\nHost: ${stalling.authority}\r\n\r\n`,
      `POST http://${stalling.authority}/full HTTP/1.1\r\nHost: ${stalling.authority}\r\nContent-Length: 2\r\n\r\nhi`,
    ];
    for (const head of heads) {
      const before = oxy.auditRecords().length;
      const c = rawConnect(oxy.address(), head);
      await readUntil(c, 'first', 3000);
      await waitForClose(c, 3000);
      const records = await oxy.waitForAudit(before + 1);
      assert.equal(records.at(-1)?.close_reason, 'OXY_ERR_RESPONSE_TIMEOUT', head);
    }
    const before = oxy.auditRecords().length;
    const s = h2session();
    const req = s.request({ ':method': 'GET', ':authority': stalling.authority, ':path': '/h2' });
    req.on('error', () => {});
    req.end();
    req.resume();
    await new Promise((r) => req.on('close', r));
    assert.notEqual(req.rstCode, http2.constants.NGHTTP2_NO_ERROR);
    const records = await oxy.waitForAudit(before + 1);
    assert.equal(records.at(-1)?.close_reason, 'OXY_ERR_RESPONSE_TIMEOUT');
    s.destroy();
    await waitUntil(() => stalling.open() === 0, 'the upstream connections to be closed');
  });
});
