/**
 * Malformed HTTP/2 fields (issue 19, RFC 9113 §8.2.1): a field value with CR, LF or NUL makes
 * the request malformed. The stream must be reset with PROTOCOL_ERROR, the request must reach
 * no upstream, and the other streams of the connection must be served. nghttp2 (through Node)
 * drops such a field silently, so these raw-frame tests fail without `http2.strict_fields`.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { after, test } from 'node:test';
import { HUFFMAN_CODES, HUFFMAN_LENGTHS } from '../src/protocols/hpack/tables.ts';
import { hooksApp, startApp, startHttpUpstream, waitUntil } from '../src/testing/index.ts';
import { FLAG, FRAME, frame, getFields, headerBlock, type RawH2, rawH2 } from './fixtures/h2-frames.ts';

const PROTOCOL_ERROR = http2.constants.NGHTTP2_PROTOCOL_ERROR;
const upstream = await startHttpUpstream({ 'GET /hello': { status: 200, body: 'hello' } });
const oxy = await startApp(hooksApp());
after(async () => {
  await upstream.close();
  await oxy.stop();
});

async function client(): Promise<RawH2> {
  const c = await rawH2(oxy.proxy.address());
  after(() => c.destroy());
  return c;
}

const request = (id: number, fields: [string, string][]): Buffer =>
  frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, headerBlock(fields));
const seen = (path: string): number => upstream.requests.filter((r) => r.url === path).length;

for (const [label, value] of [
  ['CR LF', 'a\r\nx-injected: 1'],
  ['LF', 'a\nb'],
  ['CR', 'a\rb'],
  ['NUL', 'a\0b'],
] as const) {
  test(`a field value with ${label}: RST_STREAM PROTOCOL_ERROR, nothing forwarded, the next stream served`, async () => {
    const c = await client();
    const path = `/hello?${label.replace(' ', '')}`;
    c.write(request(1, getFields(upstream.authority, path, [['x-bad', value]])));
    c.write(request(3, getFields(upstream.authority, '/hello')));
    await waitUntil(() => c.answered(3) || c.closed, 'the normal stream answered');
    await waitUntil(() => c.rstCode(1) !== undefined || c.answered(1), 'stream 1 ended');
    assert.equal(c.answered(1), false, 'the malformed request got no response');
    assert.equal(c.rstCode(1), PROTOCOL_ERROR);
    assert.equal(c.answered(3), true);
    assert.equal(c.goaway(), undefined, 'the connection goes on');
    assert.equal(seen(path), 0, 'the malformed request reached no upstream');
  });
}

test('a bad value stored in the dynamic table condemns every stream that refers to it', async () => {
  const c = await client();
  // Literal with incremental indexing, new name (RFC 7541 §6.2.1): enters the dynamic table
  // as index 62, which stream 3 then sends as a one-byte indexed field.
  const name = Buffer.from('x-bad');
  const value = Buffer.from('a\r\nb');
  const stored = Buffer.concat([Buffer.from([0x40, name.length]), name, Buffer.from([value.length]), value]);
  const base = headerBlock(getFields(upstream.authority, '/hello?stored'));
  c.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, Buffer.concat([base, stored])));
  c.write(
    frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 3, Buffer.concat([base, Buffer.from([0xbe])])),
  );
  c.write(request(5, getFields(upstream.authority, '/hello')));
  await waitUntil(() => c.answered(5) || c.closed, 'the normal stream answered');
  await waitUntil(() => c.rstCode(3) !== undefined, 'stream 3 reset');
  assert.equal(c.rstCode(1), PROTOCOL_ERROR);
  assert.equal(c.rstCode(3), PROTOCOL_ERROR);
  assert.equal(seen('/hello?stored'), 0);
});

test('a bad value in a CONTINUATION frame, and an upper-case field name', async () => {
  const c = await client();
  const block = headerBlock(getFields(upstream.authority, '/hello?cont', [['x-bad', 'a\r\nb']]));
  c.write(frame(FRAME.HEADERS, FLAG.END_STREAM, 1, block.subarray(0, 20)));
  c.write(frame(FRAME.CONTINUATION, FLAG.END_HEADERS, 1, block.subarray(20)));
  c.write(request(3, getFields(upstream.authority, '/hello?upper', [['X-Upper', 'v']])));
  c.write(request(5, getFields(upstream.authority, '/hello')));
  await waitUntil(() => c.answered(5) || c.closed, 'the normal stream answered');
  await waitUntil(() => c.rstCode(3) !== undefined, 'stream 3 reset');
  assert.equal(c.rstCode(1), PROTOCOL_ERROR);
  assert.equal(c.rstCode(3), PROTOCOL_ERROR);
  assert.equal(seen('/hello?cont') + seen('/hello?upper'), 0);
});

/** `text` Huffman-coded (RFC 7541 §5.2), as browsers and curl send values. */
function huffman(text: string): Buffer {
  let bits = 0n;
  let n = 0n;
  for (const c of Buffer.from(text, 'latin1')) {
    bits = (bits << BigInt(HUFFMAN_LENGTHS[c]!)) | BigInt(HUFFMAN_CODES[c]!);
    n += BigInt(HUFFMAN_LENGTHS[c]!);
  }
  const pad = (8n - (n % 8n)) % 8n;
  bits = (bits << pad) | ((1n << pad) - 1n);
  const out = Buffer.alloc(Number((n + pad) / 8n));
  for (let i = out.length - 1; i >= 0; i--, bits >>= 8n) out[i] = Number(bits & 0xffn);
  return out;
}

test('a Huffman-coded value with CR LF is refused like a literal one', async () => {
  const c = await client();
  const name = Buffer.from('x-bad');
  const value = huffman('a\r\nx-injected: 1');
  const field = Buffer.concat([
    Buffer.from([0x00, name.length]),
    name,
    Buffer.from([0x80 | value.length]),
    value,
  ]);
  const block = Buffer.concat([headerBlock(getFields(upstream.authority, '/hello?huffman')), field]);
  c.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, block));
  c.write(request(3, getFields(upstream.authority, '/hello')));
  await waitUntil(() => c.answered(3) || c.closed, 'the normal stream answered');
  await waitUntil(() => c.rstCode(1) !== undefined || c.answered(1), 'stream 1 ended');
  assert.equal(c.rstCode(1), PROTOCOL_ERROR);
  assert.equal(seen('/hello?huffman'), 0);
});
