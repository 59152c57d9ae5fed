import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isOxyError } from '../../errors.ts';
import {
  CAPSULE_TYPE,
  CapsuleDecoder,
  decodeDatagramCapsule,
  encodeCapsule,
  encodeDatagramCapsule,
} from './codec.ts';
import { encodeVarint, readVarint, readVarintBig, VARINT_MAX, varintLength } from './varint.ts';

const hex = (s: string) => Uint8Array.from(Buffer.from(s, 'hex'));

function isCode(code: string, pattern: RegExp) {
  return (e: unknown) => isOxyError(e) && e.code === code && pattern.test((e as Error).message);
}

describe('QUIC varint (RFC 9000 §16, vectors of §A.1)', () => {
  const vectors: [string, bigint][] = [
    ['c2197c5eff14e88c', 151_288_809_941_952_652n],
    ['9d7f3e7d', 494_878_333n],
    ['7bbd', 15_293n],
    ['25', 37n],
  ];
  for (const [h, v] of vectors) {
    it(`0x${h} is ${v}`, () => {
      assert.deepEqual(readVarintBig(hex(h)), { value: v, length: h.length / 2 });
      assert.equal(Buffer.from(encodeVarint(v)).toString('hex'), h);
      const r = readVarint(hex(h), 0, { value: 0, length: 0 });
      assert.equal(r.length, h.length / 2);
      // Above 2^53-1 the number reader says Infinity rather than a rounded value.
      assert.equal(r.value, v > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(v));
      if (v <= BigInt(Number.MAX_SAFE_INTEGER))
        assert.equal(Buffer.from(encodeVarint(Number(v))).toString('hex'), h);
    });
  }

  it('accepts the non-minimal two-byte 0x4025 as 37', () => {
    assert.deepEqual(readVarint(hex('4025'), 0, { value: 0, length: 0 }), { value: 37, length: 2 });
  });

  it('picks the shortest length at each boundary and round-trips it', () => {
    const cases: [number | bigint, number][] = [
      [0, 1],
      [63, 1],
      [64, 2],
      [16_383, 2],
      [16_384, 4],
      [2 ** 30 - 1, 4],
      [2 ** 30, 8],
      [Number.MAX_SAFE_INTEGER, 8],
      [VARINT_MAX, 8],
    ];
    for (const [v, n] of cases) {
      assert.equal(varintLength(v), n, String(v));
      const enc = encodeVarint(v);
      assert.equal(readVarintBig(enc)?.value, BigInt(v));
      if (typeof v === 'number') assert.equal(readVarint(enc, 0, { value: 0, length: 0 }).value, v);
    }
  });

  it('reports truncation and refuses values it cannot encode', () => {
    assert.equal(readVarint(hex('9d7f3e'), 0, { value: 0, length: 0 }).length, -1);
    assert.equal(readVarint(new Uint8Array(), 0, { value: 0, length: 0 }).length, -1);
    assert.equal(readVarintBig(hex('c2')), undefined);
    for (const bad of [-1, 1.5, 2 ** 53, VARINT_MAX + 1n, -1n]) {
      assert.throws(() => encodeVarint(bad), isCode('OXY_ERR_CAPSULE_MALFORMED', /varint value/));
    }
  });
});

describe('capsule decoder (RFC 9297 §3.2)', () => {
  const stream = Buffer.concat([
    encodeDatagramCapsule(hex('aabbcc')),
    encodeCapsule(0x17 + 0x29 * 3, new Uint8Array(300)), // a reserved (GREASE) type: skipped
    encodeDatagramCapsule(new Uint8Array(0), 2),
    encodeCapsule(CAPSULE_TYPE.ADDRESS_ASSIGN, new Uint8Array()),
  ]);

  function decodeAll(chunks: Uint8Array[], dec = new CapsuleDecoder()) {
    const out = chunks.flatMap((c) =>
      dec.push(c).map((x) => ({ type: x.type, value: Buffer.from(x.value) })),
    );
    dec.end();
    return out;
  }

  const expected = [
    { type: 0, value: Buffer.from('00aabbcc', 'hex') },
    { type: 0, value: Buffer.from('02', 'hex') },
    { type: 1, value: Buffer.alloc(0) },
  ];

  it('decodes a whole stream, skipping unknown types', () => {
    assert.deepEqual(decodeAll([stream]), expected);
  });

  it('gives the same capsules however the stream is split', () => {
    assert.deepEqual(decodeAll([...stream].map((b) => Uint8Array.of(b))), expected);
    for (let cut = 0; cut <= stream.length; cut++) {
      assert.deepEqual(decodeAll([stream.subarray(0, cut), stream.subarray(cut)]), expected, `cut ${cut}`);
    }
    for (let cut = 1; cut < stream.length - 1; cut += 7) {
      const parts = [stream.subarray(0, cut), stream.subarray(cut, cut + 3), stream.subarray(cut + 3)];
      assert.deepEqual(decodeAll(parts), expected);
    }
  });

  it('returns only the types asked for', () => {
    const dec = new CapsuleDecoder({ types: [CAPSULE_TYPE.DATAGRAM] });
    assert.deepEqual(
      decodeAll([stream], dec).map((c) => c.type),
      [0, 0],
    );
  });

  it('does not hold on to the caller chunk when a capsule straddles two', () => {
    const dec = new CapsuleDecoder();
    const chunk = Buffer.from(stream.subarray(0, 3));
    dec.push(chunk);
    chunk.fill(0xff);
    const [first] = dec.push(stream.subarray(3));
    assert.deepEqual(Buffer.from(first!.value), Buffer.from('00aabbcc', 'hex'));
  });

  it('refuses a capsule above the maximum before buffering its value', () => {
    const dec = new CapsuleDecoder({ maxCapsuleSize: 100 });
    assert.equal(dec.push(encodeDatagramCapsule(new Uint8Array(99))).length, 1);
    const big = encodeDatagramCapsule(new Uint8Array(100)); // 101 bytes with the context ID
    assert.throws(() => dec.push(big.subarray(0, 3)), isCode('OXY_ERR_CAPSULE_TOO_LARGE', /101 bytes/));
    assert.equal(dec.buffered, 0);
    // Failed for good: the stream must be aborted.
    assert.throws(
      () => dec.push(encodeDatagramCapsule(new Uint8Array(1))),
      isCode('OXY_ERR_CAPSULE_TOO_LARGE', /./),
    );
  });

  it('applies the maximum to unknown types too, and to lengths beyond 2^53', () => {
    const dec = new CapsuleDecoder({ maxCapsuleSize: 10 });
    assert.throws(
      () => dec.push(encodeCapsule(0x99, new Uint8Array(11))),
      isCode('OXY_ERR_CAPSULE_TOO_LARGE', /./),
    );
    const huge = Buffer.concat([hex('00'), hex('ffffffffffffffff')]);
    assert.throws(() => new CapsuleDecoder().push(huge), isCode('OXY_ERR_CAPSULE_TOO_LARGE', /over 2\^53/));
  });

  it('says malformed when the stream ends inside a capsule', () => {
    for (const cut of [1, 2, 4]) {
      const dec = new CapsuleDecoder();
      dec.push(encodeDatagramCapsule(hex('aabbcc')).subarray(0, cut));
      assert.throws(() => dec.end(), isCode('OXY_ERR_CAPSULE_MALFORMED', /ended inside a capsule/));
    }
    const skipping = new CapsuleDecoder();
    skipping.push(encodeCapsule(0x40, new Uint8Array(10)).subarray(0, 5));
    assert.throws(() => skipping.end(), isCode('OXY_ERR_CAPSULE_MALFORMED', /ended inside/));
  });

  it('reads DATAGRAM values as context ID and payload', () => {
    assert.deepEqual(decodeDatagramCapsule(hex('00010203')), { contextId: 0, payload: hex('010203') });
    assert.deepEqual(decodeDatagramCapsule(hex('4001ff')), { contextId: 1, payload: hex('ff') });
    assert.equal(decodeDatagramCapsule(hex('ffffffffffffffff')).contextId, Infinity);
    assert.throws(
      () => decodeDatagramCapsule(new Uint8Array()),
      isCode('OXY_ERR_CAPSULE_MALFORMED', /context ID/),
    );
    assert.throws(() => decodeDatagramCapsule(hex('40')), isCode('OXY_ERR_CAPSULE_MALFORMED', /context ID/));
    // Frame layout: type 0x00, length 0x04, context 0x00, payload.
    assert.equal(Buffer.from(encodeDatagramCapsule(hex('aabbcc'))).toString('hex'), '000400aabbcc');
    assert.equal(
      Buffer.from(encodeDatagramCapsule(new Uint8Array(100), 64))
        .subarray(0, 5)
        .toString('hex'),
      '0040664040',
    );
  });
});
