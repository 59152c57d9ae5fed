/** The Internet checksum: RFC 1071 and RFC 1624 examples, and a real IPv4 header. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { addressBytes, formatAddress, inCidr, parseCidr } from './address.ts';
import { fold, internetChecksum, sumWords, updateChecksum, updateChecksumWord } from './checksum.ts';

describe('Internet checksum', () => {
  it('RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2', () => {
    const b = Buffer.from('0001f203f4f5f6f7', 'hex');
    assert.equal(fold(sumWords(b)), 0xddf2);
    assert.equal(internetChecksum(b), 0x220d);
  });

  it('an odd length pads the last byte with zero', () => {
    assert.equal(fold(sumWords(Buffer.from('0001f203f4', 'hex'))), (0x0001 + 0xf203 + 0xf400) % 0xffff);
  });

  it('a known IPv4 header (checksum b861) verifies, and recomputes to the same value', () => {
    const h = Buffer.from('450000730000400040 11b861c0a80001c0a800c7'.replace(/ /g, ''), 'hex');
    assert.equal(internetChecksum(h), 0);
    h.writeUInt16BE(0, 10);
    assert.equal(internetChecksum(h), 0xb861);
  });

  it('RFC 1624 §4: eqn. 3 gives 0x0000 where eqn. 1 gave the wrong 0xffff', () => {
    // Other header words sum to 0xCD7A; m = 0x5555 → m' = 0x3285; HC = 0xDD2F.
    assert.equal(updateChecksumWord(0xdd2f, 0x5555, 0x3285), 0x0000);
    assert.equal(updateChecksum(0xdd2f, Buffer.from([0x55, 0x55]), Buffer.from([0x32, 0x85])), 0x0000);
  });

  it('incremental update equals a full recompute for random rewrites', () => {
    for (let i = 0; i < 2000; i++) {
      const b = Buffer.alloc(40 + (i % 20) * 2);
      for (let j = 0; j < b.length; j++) b[j] = (Math.random() * 256) | 0;
      const before = internetChecksum(b);
      const at = ((Math.random() * (b.length / 2 - 3)) | 0) * 2;
      const old = Buffer.from(b.subarray(at, at + 6));
      for (let j = 0; j < 6; j++) b[at + j] = (Math.random() * 256) | 0;
      const fresh = internetChecksum(b);
      const incr = updateChecksum(before, old, b.subarray(at, at + 6));
      // Equal, or the two one's-complement zeros (RFC 1624 §3), which verify the same way.
      assert.equal(
        incr === fresh || (incr === 0xffff && fresh === 0) || (incr === 0 && fresh === 0xffff),
        true,
      );
    }
  });
});

describe('addresses', () => {
  it('round-trips IPv4 and IPv6 text (RFC 5952 formatting)', () => {
    for (const [text, canon] of [
      ['192.0.2.55', '192.0.2.55'],
      ['2001:db8::1', '2001:db8::1'],
      ['2001:0db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['::', '::'],
      ['::1', '::1'],
      ['fe80::1:2', 'fe80::1:2'],
      ['::ffff:192.0.2.1', '::ffff:c000:201'],
      ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
      ['1:0:3:4:5:6:7:8', '1:0:3:4:5:6:7:8'],
    ] as const) {
      assert.equal(formatAddress(addressBytes(text)), canon, text);
    }
    assert.throws(() => addressBytes('not-an-ip'), TypeError);
  });

  it('CIDR membership', () => {
    const pool = parseCidr('100.64.0.0/10');
    assert.equal(inCidr(pool, addressBytes('100.127.255.1')), true);
    assert.equal(inCidr(pool, addressBytes('100.128.0.1')), false);
    assert.equal(inCidr(parseCidr('fd00::/8'), addressBytes('fd12::1')), true);
    assert.equal(inCidr(parseCidr('0.0.0.0/0'), addressBytes('8.8.8.8')), true);
    assert.throws(() => parseCidr('10.0.0.0/33'), /invalid CIDR/);
  });
});
