import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeSpp, encodeSpp, ProxyProtocolError, type ProxyReason, SPP_HEADER_LENGTH } from './index.ts';
import { formatIPv6, parseIPv4, parseIPv6 } from './ip.ts';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
function rejects(reason: ProxyReason) {
  return (e: unknown) => e instanceof ProxyProtocolError && e.reason === reason;
}

describe('Simple Proxy Protocol (SPP)', () => {
  it('decodes an IPv4 client (IPv4-mapped on the wire) and the payload offset', () => {
    const bytes = hex(
      '56ec 00000000000000000000ffffc0000201 00000000000000000000ffffcb007101 d431 0035 cafe',
    );
    const h = decodeSpp(bytes);
    assert.equal(h.length, SPP_HEADER_LENGTH);
    assert.deepEqual(h, {
      version: 'spp',
      command: 'proxy',
      family: 'inet',
      transport: 'dgram',
      addresses: {
        family: 'inet',
        source: { host: '192.0.2.1', port: 54321 },
        destination: { host: '203.0.113.1', port: 53 },
      },
      tlvs: [],
      length: 38,
    });
    assert.deepEqual(bytes.subarray(h.length), hex('cafe'));
    assert.deepEqual(
      Buffer.from(encodeSpp({ host: '192.0.2.1', port: 54321 }, { host: '203.0.113.1', port: 53 })),
      bytes.subarray(0, 38),
    );
  });

  it('decodes and encodes an IPv6 client', () => {
    const bytes = hex('56ec 20010db8000000000000000000000001 20010db8000000000000000000000002 0400 0443');
    const h = decodeSpp(bytes);
    assert.equal(h.family, 'inet6');
    assert.deepEqual(h.addresses, {
      family: 'inet6',
      source: { host: '2001:db8::1', port: 1024 },
      destination: { host: '2001:db8::2', port: 1091 },
    });
    assert.deepEqual(
      Buffer.from(encodeSpp({ host: '2001:db8::1', port: 1024 }, { host: '2001:db8::2', port: 1091 })),
      bytes,
    );
  });

  it('rejects a wrong magic and a short datagram', () => {
    assert.throws(() => decodeSpp(hex(`56ed${'00'.repeat(36)}`)), rejects('bad_signature'));
    assert.throws(() => decodeSpp(hex(`56ec${'00'.repeat(35)}`)), rejects('truncated'));
    assert.throws(() => decodeSpp(hex('56')), rejects('truncated'));
    // A short datagram without the magic has no header to cut short.
    for (const short of ['', '00', '1234', 'ff00aa'])
      assert.throws(() => decodeSpp(hex(short)), rejects('bad_signature'), short);
    assert.throws(() => encodeSpp({ host: 'example.com', port: 1 }, { host: '::1', port: 1 }), RangeError);
    assert.throws(() => encodeSpp({ host: '::1', port: 65536 }, { host: '::1', port: 1 }), RangeError);
  });
});

describe('IP text and bytes', () => {
  it('formats IPv6 as the WHATWG URL serializer does (RFC 5952), for random addresses', () => {
    for (let n = 0; n < 2000; n++) {
      const bytes = new Uint8Array(16);
      // Many zero groups, so the `::` choice (longest run, first on a tie) is exercised.
      for (let i = 0; i < 16; i += 2) {
        if (Math.random() < 0.5) continue;
        bytes[i] = Math.random() < 0.5 ? 0 : (Math.random() * 256) | 0;
        bytes[i + 1] = (Math.random() * 256) | 0;
      }
      if (bytes.subarray(0, 10).every((x) => x === 0) && bytes[10] === 0xff && bytes[11] === 0xff) continue;
      const ours = formatIPv6(bytes);
      const url = new URL(`http://[${ours}]/`).hostname.slice(1, -1);
      assert.equal(ours, url);
      assert.deepEqual(parseIPv6(ours), bytes);
    }
  });

  it('parses the forms inet_pton accepts and refuses the rest', () => {
    assert.deepEqual(parseIPv6('::'), new Uint8Array(16));
    assert.deepEqual(parseIPv6('::ffff:1.2.3.4')?.subarray(10), Uint8Array.of(0xff, 0xff, 1, 2, 3, 4));
    assert.deepEqual(parseIPv6('1:2:3:4:5:6:1.2.3.4')?.subarray(12), Uint8Array.of(1, 2, 3, 4));
    for (const bad of [
      '',
      ':',
      ':::',
      '1::2::3',
      '1.2.3.4',
      '1.2.3.4::',
      '::1.2.3',
      'g::',
      '1:2:3:4:5:6:7',
      '::1:2:3:4:5:6:7:8',
    ]) {
      assert.equal(parseIPv6(bad), null, bad);
    }
    assert.deepEqual(parseIPv4('0.0.0.0'), new Uint8Array(4));
    for (const bad of [
      '1.2.3',
      '1.2.3.4.5',
      '01.2.3.4',
      '1..3.4',
      '256.1.1.1',
      '1.2.3.4 ',
      ' 1.2.3.4',
      '1.2.3.x',
    ]) {
      assert.equal(parseIPv4(bad), null, bad);
    }
  });
});
