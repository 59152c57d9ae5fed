import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isOxyError } from '../../errors.ts';
import { CAPSULE_TYPE, CapsuleDecoder } from './codec.ts';
import {
  decodeAddressAssign,
  decodeAddressRequest,
  decodeRouteAdvertisement,
  encodeAddressAssign,
  encodeAddressRequest,
  encodeRouteAdvertisement,
} from './connect-ip.ts';
import { formatIp, parseIp } from './ip-address.ts';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s/g, ''), 'hex'));
const malformed = (pattern: RegExp) => (e: unknown) =>
  isOxyError(e) && e.code === 'OXY_ERR_CAPSULE_MALFORMED' && pattern.test((e as Error).message);

/** Splits one encoded capsule into its type and value with the stream decoder. */
function unframe(capsule: Uint8Array) {
  const [c, ...rest] = new CapsuleDecoder().push(capsule);
  assert.equal(rest.length, 0);
  return c!;
}

describe('CONNECT-IP capsules (RFC 9484 §4.7)', () => {
  it('encodes ADDRESS_ASSIGN field by field', () => {
    const c = encodeAddressAssign([
      { requestId: 0, version: 4, address: '192.0.2.0', prefixLength: 24 },
      { requestId: 7, version: 6, address: '2001:db8::', prefixLength: 64 },
    ]);
    // type 01, length 0x1a (26): [id 00, v 04, c0000200, /18] [id 07, v 06, 20010db8 0..., /40]
    assert.equal(
      Buffer.from(c).toString('hex'),
      '011a' + '0004c000020018' + '070620010db8000000000000000000000000' + '40',
    );
    const { type, value } = unframe(c);
    assert.equal(type, CAPSULE_TYPE.ADDRESS_ASSIGN);
    assert.deepEqual(decodeAddressAssign(value), [
      { requestId: 0, version: 4, address: '192.0.2.0', prefixLength: 24 },
      { requestId: 7, version: 6, address: '2001:db8::', prefixLength: 64 },
    ]);
    assert.deepEqual(decodeAddressAssign(new Uint8Array()), [], 'empty: every address removed');
  });

  it('round-trips ADDRESS_REQUEST, with a two-byte request ID and "any" addresses', () => {
    const entries = [
      { requestId: 300, version: 4 as const, address: '0.0.0.0', prefixLength: 32 },
      { requestId: 1, version: 6 as const, address: '::', prefixLength: 128 },
    ];
    const { type, value } = unframe(encodeAddressRequest(entries));
    assert.equal(type, CAPSULE_TYPE.ADDRESS_REQUEST);
    assert.equal(Buffer.from(value.subarray(0, 2)).toString('hex'), '412c');
    assert.deepEqual(decodeAddressRequest(value), entries);
  });

  it('round-trips ROUTE_ADVERTISEMENT in the RFC order', () => {
    const ranges = [
      { version: 4 as const, start: '0.0.0.0', end: '9.255.255.255', protocol: 0 },
      { version: 4 as const, start: '11.0.0.0', end: '255.255.255.255', protocol: 0 },
      { version: 4 as const, start: '10.0.0.0', end: '10.0.0.0', protocol: 17 },
      { version: 6 as const, start: '::', end: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', protocol: 0 },
    ];
    const c = encodeRouteAdvertisement(ranges);
    const { type, value } = unframe(c);
    assert.equal(type, CAPSULE_TYPE.ROUTE_ADVERTISEMENT);
    assert.equal(Buffer.from(value.subarray(0, 10)).toString('hex'), '040000000009ffffff00');
    assert.deepEqual(decodeRouteAdvertisement(value), ranges);
    assert.deepEqual(decodeRouteAdvertisement(new Uint8Array()), []);
  });

  it('refuses malformed address entries', () => {
    const cases: [string, RegExp][] = [
      ['00 05 c0000201 20', /IP version must be 4 or 6, got 5/],
      ['00 04 c0000201 21', /prefix length 33 exceeds 32 bits/],
      ['00 04 c0000201 18', /bits below the \/24 prefix are not zero/],
      ['00 04 c00002', /truncated address/],
      ['00', /truncated IP version/],
      ['40', /truncated request ID/],
      ['ffffffffffffffff 04 c0000201 20', /request ID above 2\^53-1/],
      ['00 06 20010db8000000000000000000000001 7f', /bits below the \/127 prefix/],
    ];
    for (const [h, re] of cases) assert.throws(() => decodeAddressAssign(hex(h)), malformed(re), h);
    assert.throws(() => decodeAddressRequest(new Uint8Array()), malformed(/no requested address/));
    assert.throws(() => decodeAddressRequest(hex('00 04 00000000 20')), malformed(/must not be zero/));
  });

  it('refuses malformed or misordered ranges', () => {
    const v4 = (start: string, end: string, proto: string) => `04 ${start} ${end} ${proto}`;
    const cases: [string, RegExp][] = [
      [v4('0a000002', '0a000001', '00'), /start is after its end/],
      [v4('0a000000', '0a0000ff', '00') + v4('0a0000ff', '0a0001ff', '00'), /overlap/],
      [v4('0b000000', '0b0000ff', '00') + v4('0a000000', '0a0000ff', '00'), /overlap or are not ordered/],
      [v4('0a000000', '0a0000ff', '11') + v4('0b000000', '0b0000ff', '06'), /not ordered by IP protocol/],
      [
        `06 ${'00'.repeat(16)} ${'00'.repeat(15)}01 00` + v4('0a000000', '0a0000ff', '00'),
        /ordered by IP version/,
      ],
      ['04 0a000000 0a00', /truncated range/],
      ['07 0a000000 0a000000 00', /IP version must be 4 or 6/],
    ];
    for (const [h, re] of cases) assert.throws(() => decodeRouteAdvertisement(hex(h)), malformed(re), h);
    // Adjacent ranges (end + 1 = start) are fine; the same range under another protocol too.
    assert.equal(
      decodeRouteAdvertisement(hex(v4('0a000000', '0a0000ff', '00') + v4('0a000100', '0a0001ff', '00')))
        .length,
      2,
    );
  });

  it('refuses to encode what a peer must reject', () => {
    assert.throws(
      () => encodeAddressRequest([{ requestId: 0, version: 4, address: '0.0.0.0', prefixLength: 32 }]),
      malformed(/must not be zero/),
    );
    assert.throws(() => encodeAddressRequest([]), malformed(/no requested address/));
    assert.throws(
      () => encodeAddressAssign([{ requestId: 0, version: 4, address: '2001:db8::1', prefixLength: 32 }]),
      malformed(/not an IPv4 address/),
    );
    assert.throws(
      () => encodeRouteAdvertisement([{ version: 4, start: '10.0.0.0', end: '10.0.0.1', protocol: 256 }]),
      malformed(/0-255/),
    );
    assert.throws(
      () =>
        encodeRouteAdvertisement([
          { version: 6, start: '::', end: '::1', protocol: 0 },
          { version: 4, start: '10.0.0.0', end: '10.0.0.1', protocol: 0 },
        ]),
      malformed(/ordered by IP version/),
    );
  });

  it('converts addresses between text and bytes (RFC 5952 output)', () => {
    const cases: [string, string][] = [
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['2001:DB8::0:1', '2001:db8::1'],
      ['::ffff:192.0.2.1', '::ffff:c000:201'],
      ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
      ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
      ['1:0:3:4:5:6:7:8', '1:0:3:4:5:6:7:8'],
      ['::', '::'],
      ['fe80::', 'fe80::'],
      ['192.0.2.255', '192.0.2.255'],
    ];
    for (const [input, out] of cases) assert.equal(formatIp(parseIp(input)!.bytes), out, input);
    for (const bad of ['1.2.3', 'fe80::1%eth0', 'example.com', '', '[::1]'])
      assert.equal(parseIp(bad), undefined, bad);
  });
});
