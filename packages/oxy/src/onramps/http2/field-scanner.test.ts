/**
 * The field scanner on client byte streams: the preface, frames of every type skipped, padded
 * and prioritised HEADERS, blocks split over CONTINUATION and over chunk boundaries, and what
 * makes a field malformed. Plus a fuzz run of the scanner and the HPACK decoder: random and
 * mutated streams in random chunkings, only the typed HPACK error allowed, memory bounded.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isOxyError } from '../../errors.ts';
import { HpackDecoder } from '../../protocols/hpack/decoder.ts';
import { randomFloat } from '../../testing/fuzz.ts';
import { FieldGuard } from './field-guard.ts';
import { FieldScanner, fieldProblem } from './field-scanner.ts';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
function frame(type: number, flags: number, id: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(id, 5);
  return Buffer.concat([h, payload]);
}
function literal(name: string, value: string, first = 0x00): Buffer {
  const n = Buffer.from(name, 'latin1');
  const v = Buffer.from(value, 'latin1');
  return Buffer.concat([Buffer.from([first, n.length]), n, Buffer.from([v.length]), v]);
}
const GET = Buffer.from([0x82, 0x86, 0x84]); // :method GET, :scheme http, :path /

function scan(bytes: Buffer, chunk = bytes.length): [number, string][] {
  const marks: [number, string][] = [];
  const s = new FieldScanner((id, reason) => marks.push([id, reason]));
  for (let at = 0; at < bytes.length; at += chunk) s.push(bytes.subarray(at, at + chunk));
  return marks;
}

describe('fieldProblem', () => {
  it('accepts ordinary fields and pseudo-headers', () => {
    assert.equal(fieldProblem({ name: ':path', value: '/a?b=c' }), null);
    assert.equal(fieldProblem({ name: 'x-ok', value: 'a b\tc' }), null);
    assert.equal(fieldProblem({ name: 'x-empty', value: '' }), null);
  });
  it('refuses CR, LF, NUL, surrounding whitespace, bad names', () => {
    for (const value of ['a\rb', 'a\nb', 'a\0b', ' a', 'a\t'])
      assert.notEqual(fieldProblem({ name: 'x', value }), null);
    for (const name of ['X-Up', 'a b', 'a:b', '', ':', 'x\r'])
      assert.notEqual(fieldProblem({ name, value: 'v' }), null);
  });
});

describe('FieldScanner', () => {
  const stream = Buffer.concat([
    PREFACE,
    frame(0x4, 0, 0, Buffer.alloc(6)), // SETTINGS
    frame(0x1, 0x5, 1, Buffer.concat([GET, literal('x-ok', 'fine')])),
    frame(0x0, 0x1, 1, Buffer.alloc(100, 0x0a)), // DATA full of LF: not a field
    // Padded (3 bytes of padding) and prioritised HEADERS with a bad value.
    frame(
      0x1,
      0x2d,
      3,
      Buffer.concat([Buffer.from([3]), Buffer.alloc(5), GET, literal('x-bad', 'a\r\nb'), Buffer.alloc(3)]),
    ),
    // A block over HEADERS + CONTINUATION, the bad field cut in the middle.
    frame(0x1, 0x1, 5, Buffer.concat([GET, literal('x-bad', 'a\0b').subarray(0, 4)])),
    frame(0x9, 0x4, 5, literal('x-bad', 'a\0b').subarray(4)),
    frame(0x6, 0, 0, Buffer.alloc(8)), // PING
    frame(0x1, 0x5, 7, GET),
  ]);
  it('marks the streams with malformed fields, whatever the chunking', () => {
    for (const chunk of [stream.length, 1, 2, 7, 9, 13, 100]) {
      assert.deepEqual(
        scan(stream, chunk).map(([id]) => id),
        [3, 5],
        `chunks of ${chunk}`,
      );
    }
  });
  it('marks a block once however many of its fields are bad', () => {
    const bytes = Buffer.concat([
      PREFACE,
      frame(0x1, 0x5, 1, Buffer.concat([GET, literal('a', '\r'), literal('b', '\n')])),
    ]);
    assert.equal(scan(bytes).length, 1);
  });
  it('stops with the typed error on a broken block, then ignores input', () => {
    const s = new FieldScanner(() => {});
    assert.throws(
      () => s.push(Buffer.concat([PREFACE, frame(0x1, 0x5, 1, Buffer.from([0x80]))])),
      (e: unknown) => isOxyError(e) && e.code === 'OXY_ERR_HPACK_MALFORMED',
    );
    assert.equal(s.stopped, true);
    s.push(frame(0x1, 0x5, 3, literal('x', '\r')));
  });
});

describe('fuzz', () => {
  it('random and mutated input: only the typed error, bounded memory', () => {
    const CASES = 100_000;
    const end = performance.now() + 20_000;
    const rand = randomFloat(19);
    const seeds = [
      Buffer.from('828684410f7777772e6578616d706c652e636f6d', 'hex'),
      Buffer.from('828441' + '8cf1e3c2e5f23a6ba0ab90f4ff', 'hex'),
      Buffer.concat([GET, literal('x-a', 'b', 0x40), Buffer.from([0xbe, 0x3f, 0xe1, 0x1f])]),
    ];
    const heap0 = process.memoryUsage().heapUsed;
    let cases = 0;
    for (; cases < CASES && performance.now() < end; cases++) {
      let input: Buffer;
      if (cases % 2 === 0) {
        input = Buffer.alloc(Math.floor(rand() * 64));
        for (let i = 0; i < input.length; i++) input[i] = Math.floor(rand() * 256);
      } else {
        input = Buffer.from(seeds[cases % seeds.length] as Buffer);
        for (let k = 0; k < 1 + rand() * 4; k++)
          input[Math.floor(rand() * input.length)] = Math.floor(rand() * 256);
      }
      const ok = (e: unknown): void => {
        if (!(isOxyError(e) && e.code === 'OXY_ERR_HPACK_MALFORMED')) throw new Error(`case ${cases}: ${e}`);
      };
      try {
        new HpackDecoder().decode(input);
      } catch (e) {
        ok(e);
      }
      const s = new FieldScanner(() => {});
      const bytes = Buffer.concat([PREFACE, frame(0x1, cases % 3 === 0 ? 0x4 : 0x24, 1, input), input]);
      try {
        for (let at = 0; at < bytes.length; ) {
          const n = 1 + Math.floor(rand() * 40);
          s.push(bytes.subarray(at, at + n));
          at += n;
        }
      } catch (e) {
        ok(e);
      }
    }
    assert.ok(cases >= 10_000, `only ${cases} cases in the time allowed`);
    const grown = process.memoryUsage().heapUsed - heap0;
    assert.ok(grown < 64 * 1024 * 1024, `heap grew by ${grown} bytes`);
  });
});

describe('FieldGuard', () => {
  it('resets marked streams when announced, forgets stale marks, resets late (trailer) marks', () => {
    const guard = new FieldGuard();
    const closed: [number, number][] = [];
    const stream = (id: number) => ({ close: (code: number) => closed.push([id, code]) });
    guard.onLateMark = (id) => guard.reset(id, 1);
    guard.mark(1, 'x');
    guard.mark(3, 'x'); // refused by nghttp2 itself: never announced
    assert.equal(guard.announce(1, stream(1)), true);
    assert.equal(guard.announce(5, stream(5)), false, 'the stale mark of 3 is dropped');
    assert.equal(guard.announce(7, stream(7)), false);
    guard.mark(5, 'bad trailers');
    assert.deepEqual(closed, [[5, 1]]);
    guard.forget(7);
    guard.mark(7, 'after close');
    assert.deepEqual(closed, [[5, 1]], 'a closed stream is not reset');
  });
});
