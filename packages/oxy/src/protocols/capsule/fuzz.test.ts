/**
 * Fuzzes the capsule decoder and the CONNECT-IP value parsers: random bytes and mutations of
 * valid streams, fed in random chunkings. The only acceptable failure is a typed capsule error;
 * the decoder's buffer never exceeds its limit, and the heap does not grow with the case count.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isOxyError } from '../../errors.ts';
import { randomFloat } from '../../testing/fuzz.ts';
import {
  CAPSULE_TYPE,
  CapsuleDecoder,
  decodeDatagramCapsule,
  encodeCapsule,
  encodeDatagramCapsule,
} from './codec.ts';
import {
  decodeAddressAssign,
  decodeAddressRequest,
  decodeRouteAdvertisement,
  encodeAddressAssign,
  encodeAddressRequest,
  encodeRouteAdvertisement,
} from './connect-ip.ts';

const CASES = 100_000;
const TIME_LIMIT_MS = 30_000;
const MAX = 512;

const seeds: Uint8Array[] = [
  encodeDatagramCapsule(Uint8Array.of(1, 2, 3)),
  encodeDatagramCapsule(new Uint8Array(200), 77),
  encodeCapsule(0x2a, new Uint8Array(40)),
  encodeAddressAssign([
    { requestId: 0, version: 4, address: '192.0.2.0', prefixLength: 24 },
    { requestId: 9, version: 6, address: '2001:db8::', prefixLength: 48 },
  ]),
  encodeAddressRequest([{ requestId: 1, version: 4, address: '0.0.0.0', prefixLength: 32 }]),
  encodeRouteAdvertisement([
    { version: 4, start: '10.0.0.0', end: '10.255.255.255', protocol: 0 },
    { version: 6, start: '2001:db8::', end: '2001:db8::ffff', protocol: 6 },
  ]),
];

function parseValue(type: number, value: Uint8Array): void {
  if (type === CAPSULE_TYPE.DATAGRAM) decodeDatagramCapsule(value);
  else if (type === CAPSULE_TYPE.ADDRESS_ASSIGN) decodeAddressAssign(value);
  else if (type === CAPSULE_TYPE.ADDRESS_REQUEST) decodeAddressRequest(value);
  else if (type === CAPSULE_TYPE.ROUTE_ADVERTISEMENT) decodeRouteAdvertisement(value);
}

function makeInput(rand: () => number): Uint8Array {
  if (rand() < 0.3) {
    const buf = new Uint8Array(Math.floor(rand() * 64));
    for (let i = 0; i < buf.length; i++) buf[i] = Math.floor(rand() * 256);
    return buf;
  }
  const parts: Uint8Array[] = [];
  const n = 1 + Math.floor(rand() * 4);
  for (let i = 0; i < n; i++) parts.push(seeds[Math.floor(rand() * seeds.length)]!);
  const buf = Buffer.concat(parts);
  const flips = Math.floor(rand() * 4);
  for (let i = 0; i < flips; i++) {
    const at = Math.floor(rand() * buf.length);
    const r = rand();
    if (r < 0.5) buf[at] = Math.floor(rand() * 256);
    else if (r < 0.75) buf[at] = buf[at]! ^ (1 << Math.floor(rand() * 8));
    else return buf.subarray(0, at); // truncation
  }
  return buf;
}

describe('capsule fuzz', () => {
  it(`survives ${CASES} random and mutated streams in random chunkings`, () => {
    const rand = randomFloat(0x9297);
    const started = Date.now();
    const heapBefore = process.memoryUsage().heapUsed;
    let capsules = 0;
    let typedErrors = 0;
    let i = 0;
    for (; i < CASES && Date.now() - started < TIME_LIMIT_MS; i++) {
      const input = makeInput(rand);
      const dec = new CapsuleDecoder({ maxCapsuleSize: MAX });
      try {
        let off = 0;
        while (off < input.length) {
          const step = 1 + Math.floor(rand() * (input.length - off));
          for (const c of dec.push(input.subarray(off, off + step))) {
            capsules++;
            parseValue(c.type, c.value);
          }
          assert.ok(dec.buffered <= MAX + 16, `case ${i}: decoder holds ${dec.buffered} bytes`);
          off += step;
        }
        dec.end();
      } catch (e) {
        if (e instanceof assert.AssertionError) throw e;
        assert.ok(
          isOxyError(e) && (e.code === 'OXY_ERR_CAPSULE_MALFORMED' || e.code === 'OXY_ERR_CAPSULE_TOO_LARGE'),
          `case ${i}: unexpected ${String(e)}`,
        );
        typedErrors++;
      }
    }
    assert.equal(i, CASES, `only ${i} cases ran within ${TIME_LIMIT_MS} ms`);
    // Both outcomes are exercised, or the generator is not doing its job.
    assert.ok(
      capsules > CASES / 2 && typedErrors > CASES / 10,
      `${capsules} capsules, ${typedErrors} errors`,
    );
    const grown = process.memoryUsage().heapUsed - heapBefore;
    assert.ok(grown < 64 * 1024 * 1024, `heap grew ${grown} bytes`);
  });
});
