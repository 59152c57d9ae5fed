/**
 * Regression tests for the HTTP/2 defects of issue 19: an upstream reset of a CONNECT stream's
 * TCP connection is RST_STREAM CONNECT_ERROR (RFC 9113 §8.5), not NO_ERROR; a HEADERS block
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
const oxy = await startApp(hooksApp(), {
  settings: { endpoints: { main: { header_read_timeout: '400ms' } } },
});
after(async () => {
  await resetting.close();
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
