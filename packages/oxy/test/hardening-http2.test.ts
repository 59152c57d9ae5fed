/**
 * Regression tests for the HTTP/2 defects of issue 19: an upstream reset of a CONNECT stream's
 * TCP connection is RST_STREAM CONNECT_ERROR (RFC 9113 §8.5), not NO_ERROR, also after the
 * client half-closed (no END_STREAM first, which would close the stream cleanly); a HEADERS block
 * that never finishes (no END_HEADERS, CONTINUATION stalled) closes the connection after
 * `header_read_timeout` instead of `http2.idle_timeout`. Raw frames where a client library
 * would refuse to misbehave.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import { after, test } from 'node:test';
import { hooksApp, startApp, startTcpServer, waitUntil } from '../src/testing/index.ts';
import { FLAG, FRAME, frame, getFields, headerBlock, rawH2 } from './fixtures/h2-frames.ts';

// Accepts, reads the first bytes, then resets the connection (RST).
const resetting = await startTcpServer((s) => {
  s.once('data', () => s.resetAndDestroy());
});
// Waits for the client's FIN (the CONNECT stream's END_STREAM), then writes a byte and resets.
const resettingAfterEnd = await startTcpServer((s) => {
  s.allowHalfOpen = true;
  s.resume();
  s.once('end', () => s.write('x', () => s.resetAndDestroy()));
});
const oxy = await startApp(hooksApp(), {
  settings: { endpoints: { main: { header_read_timeout: '400ms' } } },
});
after(async () => {
  await resetting.close();
  await resettingAfterEnd.close();
  await oxy.stop();
});

test('an upstream reset of a CONNECT stream is RST_STREAM CONNECT_ERROR, and audited', async () => {
  const before = oxy.auditRecords().length;
  const s = http2.connect(`http://${oxy.address()}`);
  s.on('error', () => {});
  after(() => s.destroy());
  const stream = s.request({ ':method': 'CONNECT', ':authority': resetting.authority }, { endStream: false });
  stream.on('error', () => {});
  const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
  assert.equal(headers[':status'], 200);
  stream.write('hello');
  await new Promise((r) => stream.once('close', r));
  assert.equal(stream.rstCode, http2.constants.NGHTTP2_CONNECT_ERROR);
  const records = await oxy.waitForAudit(before + 1);
  assert.match(records.at(-1)?.close_reason ?? '', /^upstream_(reset|error)$/);
});

test('an upstream reset after the client half-closed is still RST_STREAM CONNECT_ERROR', async () => {
  const before = oxy.auditRecords().length;
  const s = http2.connect(`http://${oxy.address()}`);
  s.on('error', () => {});
  after(() => s.destroy());
  const stream = s.request(
    { ':method': 'CONNECT', ':authority': resettingAfterEnd.authority },
    { endStream: false },
  );
  stream.on('error', () => {});
  const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
  assert.equal(headers[':status'], 200);
  stream.end('hello');
  stream.resume();
  await new Promise((r) => stream.once('close', r));
  assert.equal(stream.rstCode, http2.constants.NGHTTP2_CONNECT_ERROR);
  const records = await oxy.waitForAudit(before + 1);
  assert.match(records.at(-1)?.close_reason ?? '', /^upstream_(reset|error)$/);
});

test('that reset is not preceded by END_STREAM, so a truncated tunnel never looks complete', async () => {
  const c = await rawH2(oxy.proxy.address());
  after(() => c.destroy());
  const connect: [string, string][] = [
    [':method', 'CONNECT'],
    [':authority', resettingAfterEnd.authority],
  ];
  c.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, headerBlock(connect)));
  await waitUntil(() => c.answered(1), 'the 200');
  c.write(frame(FRAME.DATA, FLAG.END_STREAM, 1, Buffer.from('hello')));
  const last = (): boolean =>
    c.frames.some((f) => f.streamId === 1 && (f.type === FRAME.RST_STREAM || f.flags & FLAG.END_STREAM));
  await waitUntil(last, 'the stream to end');
  assert.equal(c.rstCode(1), http2.constants.NGHTTP2_CONNECT_ERROR);
  const ended = c.frames.filter(
    (f) => f.streamId === 1 && f.type !== FRAME.RST_STREAM && f.flags & FLAG.END_STREAM,
  );
  assert.deepEqual(ended, [], 'no frame of the stream carried END_STREAM');
});

test('a HEADERS block that never finishes closes the connection after header_read_timeout', async () => {
  const c = await rawH2(oxy.proxy.address());
  after(() => c.destroy());
  const block = headerBlock(getFields('127.0.0.1:9', '/'));
  // HEADERS without END_HEADERS, one CONTINUATION without it either, then nothing.
  c.write(frame(FRAME.HEADERS, FLAG.END_STREAM, 1, block.subarray(0, 8)));
  c.write(frame(FRAME.CONTINUATION, 0, 1, block.subarray(8, 12)));
  const started = performance.now();
  await waitUntil(() => c.closed, 'the connection to be closed', 3000);
  const took = performance.now() - started;
  assert.ok(took >= 300 && took < 2500, `closed after ${took} ms`);
  // A normal client is served meanwhile and after.
  const s = http2.connect(`http://${oxy.address()}`);
  s.on('error', () => {});
  after(() => s.destroy());
  await once(s, 'remoteSettings');
});

test('a connection that idles between complete requests is not taken for a stalled header block', async () => {
  const c = await rawH2(oxy.proxy.address());
  after(() => c.destroy());
  c.write(
    frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, headerBlock(getFields('127.0.0.1:9', '/'))),
  );
  await waitUntil(() => c.answered(1), 'the first answer');
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(c.closed, false);
});
