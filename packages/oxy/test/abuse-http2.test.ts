/**
 * Abuse suite, HTTP/2 (issue 19): raw frames a hostile client sends (rapid reset, CONTINUATION
 * flood, SETTINGS flood, stalled request bodies, oversized header blocks). Each attack is
 * bounded in time (a few seconds); each asserts that descriptors and memory stay bounded, that
 * the upstream connections it made the proxy open are released, and that a normal client is
 * served while it runs.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { after, test } from 'node:test';
import { hooksApp, startApp, startHttpUpstream, startTcpServer, waitUntil } from '../src/testing/index.ts';
import { fdCount, fdsBackTo, sampler, servedThroughout } from './fixtures/abuse.ts';
import {
  FLAG,
  FRAME,
  frame,
  getFields,
  headerBlock,
  type RawH2,
  rawH2,
  rstStream,
  settings,
} from './fixtures/h2-frames.ts';

const upstream = await startHttpUpstream({ 'GET /hello': { status: 200, body: 'hello' } });
// Reads requests and never answers (holds every connection until the proxy closes it).
const silent = await startTcpServer((s) => s.resume());
const oxy = await startApp(hooksApp(), {
  settings: { endpoints: { main: { header_read_timeout: '1s', body_read_timeout: '500ms' } } },
});
after(async () => {
  await Promise.all([upstream.close(), silent.close()]);
  await oxy.stop();
});
const hello = `${upstream.origin}/hello`;

async function attacker(): Promise<RawH2> {
  const c = await rawH2(oxy.proxy.address());
  after(() => c.destroy());
  return c;
}

test('rapid reset: streams reset right after HEADERS leave no upstream connection behind', async () => {
  const baseline = fdCount();
  const s = sampler();
  await servedThroughout(oxy, hello, 'hello', async () => {
    const c = await attacker();
    const block = headerBlock(getFields(silent.authority, '/reset'));
    for (let batch = 0; batch < 10; batch++) {
      const frames: Buffer[] = [];
      for (let i = 0; i < 100; i++) {
        const id = (batch * 100 + i) * 2 + 1;
        frames.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, block), rstStream(id, 8));
      }
      if (!c.write(Buffer.concat(frames))) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    await waitUntil(() => silent.open() === 0, 'every upstream connection released', 5000);
  });
  const peaks = s.stop();
  assert.ok(peaks.fdPeak < baseline + 400, `descriptors peaked at ${peaks.fdPeak} (baseline ${baseline})`);
  await fdsBackTo(baseline);
});

test('CONTINUATION flood: a header block that grows without end is refused, memory stays flat', async () => {
  const baseline = fdCount();
  const s = sampler();
  const rss0 = process.memoryUsage().rss;
  await servedThroughout(oxy, hello, 'hello', async () => {
    const c = await attacker();
    c.write(frame(FRAME.HEADERS, 0, 1, headerBlock(getFields(upstream.authority, '/hello'))));
    const junk = headerBlock(
      Array.from({ length: 64 }, (_, i) => [`x-flood-${i}`, 'y'.repeat(48)] as [string, string]),
    );
    const end = performance.now() + 2000;
    // 4 KiB CONTINUATION frames for up to 2 s or until the proxy hangs up (max_header_list_size).
    while (!c.closed && performance.now() < end) {
      const burst: Buffer[] = [];
      for (let i = 0; i < 64; i++) burst.push(frame(FRAME.CONTINUATION, 0, 1, junk));
      c.write(Buffer.concat(burst));
      await new Promise((r) => setTimeout(r, 5));
    }
    await waitUntil(() => c.closed, 'the flooding connection closed', 3000);
    assert.equal(c.answered(1), false, 'the flooded request was never served');
  });
  const peaks = s.stop();
  assert.ok(peaks.rssPeak * 1024 * 1024 - rss0 < 200 * 1024 * 1024, `RSS peaked at ${peaks.rssPeak} MiB`);
  await fdsBackTo(baseline);
});

test('SETTINGS flood from a client that reads nothing: the connection is cut, others are served', async () => {
  const baseline = fdCount();
  await servedThroughout(oxy, hello, 'hello', async () => {
    const c = await attacker();
    c.socket.pause(); // never reads the ACKs
    const burst = Buffer.concat(Array.from({ length: 1000 }, () => settings([[0x3, 100]])));
    const end = performance.now() + 2500;
    while (!c.closed && performance.now() < end) {
      c.write(burst);
      await new Promise((r) => setTimeout(r, 5));
    }
    // Either nghttp2 gave up on the unread ACKs (closed), or the socket stopped taking bytes.
    assert.ok(c.closed || c.socket.writableLength > 0, 'the proxy stopped reading the flood');
    c.destroy();
  });
  await fdsBackTo(baseline);
});

test('stalled request bodies: every stream gets 408 after body_read_timeout, upstream released', async () => {
  const baseline = fdCount();
  const before = oxy.auditRecords().length;
  const n = 50;
  await servedThroughout(oxy, hello, 'hello', async () => {
    const s = http2.connect(`http://${oxy.address()}`);
    s.on('error', () => {});
    after(() => s.destroy());
    const statuses: number[] = [];
    const done = Array.from({ length: n }, (_, i) => {
      const req = s.request({ ':method': 'POST', ':authority': silent.authority, ':path': `/stall${i}` });
      req.on('error', () => {});
      req.write('part of a body');
      req.resume();
      return new Promise<void>((resolve) => {
        req.on('response', (h) => statuses.push(Number(h[':status'])));
        req.on('close', () => resolve());
      });
    });
    await Promise.all(done);
    assert.deepEqual(statuses, new Array(n).fill(408));
    s.destroy();
  });
  const records = await oxy.waitForAudit(before + n);
  assert.equal(records.slice(before).filter((r) => r.close_reason === 'OXY_ERR_BODY_TIMEOUT').length, n);
  await waitUntil(() => silent.open() === 0, 'every upstream connection released');
  await fdsBackTo(baseline);
});

test('oversized header blocks: refused per stream, the connection and others go on', async () => {
  const c = await attacker();
  const big = headerBlock(getFields(upstream.authority, '/hello', [['x-big', 'z'.repeat(70_000)]]));
  // Over max_header_list_size (64 KiB); split into frames of the default max size (16 KiB).
  for (let off = 0, first = true; off < big.length; off += 16_384, first = false) {
    const last = off + 16_384 >= big.length;
    c.write(
      frame(
        first ? FRAME.HEADERS : FRAME.CONTINUATION,
        last ? FLAG.END_HEADERS | FLAG.END_STREAM : 0,
        1,
        big.subarray(off, off + 16_384),
      ),
    );
  }
  c.write(
    frame(
      FRAME.HEADERS,
      FLAG.END_HEADERS | FLAG.END_STREAM,
      3,
      headerBlock(getFields(upstream.authority, '/hello')),
    ),
  );
  await waitUntil(() => c.answered(3) || c.closed, 'an answer to the normal stream, or a closed connection');
  assert.equal(c.answered(1), false, 'the oversized request was not forwarded');
  assert.equal(upstream.requests.filter((r) => r.headers['x-big'] !== undefined).length, 0);
});
