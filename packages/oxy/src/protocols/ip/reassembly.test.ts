/** Fragment reassembly: order, overlap (RFC 5722), duplicates, bounds, timeout. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildIp, udpDatagram } from './builder.ts';
import { internetChecksum } from './checksum.ts';
import { l4ChecksumOk } from './l4-checksum.ts';
import { type IpPacket, parseIp } from './packet.ts';
import { Reassembler } from './reassembly.ts';

/** A whole UDP packet's upper-layer bytes (checksummed) cut into fragments of `size` bytes. */
function fragments(v: 4 | 6, payload: Buffer, size: number, id = 99): IpPacket[] {
  const [src, dst] = v === 4 ? ['10.0.0.1', '10.0.0.2'] : ['fd00::1', 'fd00::2'];
  const whole = parseIp(buildIp({ src, dst, protocol: 17, payload: udpDatagram(1000, 53, payload) }));
  const l4 = whole.buf.subarray(whole.l4Offset);
  const out: IpPacket[] = [];
  for (let off = 0; off < l4.length; off += size) {
    const part = l4.subarray(off, Math.min(off + size, l4.length));
    const more = off + size < l4.length;
    out.push(
      parseIp(buildIp({ src, dst, protocol: 17, payload: part, fragment: { id, offset: off, more } })),
    );
  }
  return out;
}

describe('reassembly', () => {
  for (const v of [4, 6] as const) {
    it(`IPv${v}: in order and out of order, to a packet whose checksums verify`, () => {
      const payload = Buffer.alloc(3000);
      for (let i = 0; i < payload.length; i++) payload[i] = i & 0xff;
      for (const order of ['forward', 'reverse', 'shuffled']) {
        const r = new Reassembler();
        const frags = fragments(v, payload, 1024);
        if (order === 'reverse') frags.reverse();
        if (order === 'shuffled') frags.push(frags.shift()!);
        let done: IpPacket | null = null;
        for (const [i, f] of frags.entries()) {
          done = r.push(f, 0);
          if (i < frags.length - 1) assert.equal(done, null);
        }
        assert.ok(done);
        assert.equal(done.fragment, null);
        assert.equal(done.protocol, 17);
        assert.equal(l4ChecksumOk(done), true);
        assert.equal(done.buf.subarray(done.l4Offset + 8).equals(payload), true);
        if (v === 4) assert.equal(internetChecksum(done.buf, 0, 20), 0);
        assert.equal(r.heldBytes, 0);
        assert.equal(r.pending, 0);
        assert.equal(r.stats.reassembled, 1);
      }
    });

    it(`IPv${v}: an overlap drops the whole datagram and its late fragments; a duplicate is ignored`, () => {
      const r = new Reassembler();
      const frags = fragments(v, Buffer.alloc(2000), 512);
      assert.equal(r.push(frags[0]!, 0), null);
      assert.equal(r.push(frags[0]!, 0), null);
      assert.equal(r.stats.duplicates, 1);
      // A fragment at offset 256 overlaps the first one's [0, 512).
      const [src, dst] = v === 4 ? ['10.0.0.1', '10.0.0.2'] : ['fd00::1', 'fd00::2'];
      const evil = parseIp(
        buildIp({
          src,
          dst,
          protocol: 17,
          payload: Buffer.alloc(512),
          fragment: { id: 99, offset: 256, more: true },
        }),
      );
      assert.equal(r.push(evil, 0), null);
      assert.equal(r.stats.dropped.overlap, 2);
      for (const f of frags.slice(1)) assert.equal(r.push(f, 0), null);
      assert.equal(r.stats.reassembled, 0);
      assert.equal(r.heldBytes, 0);
      r.expire(60_000);
      assert.equal(r.pending, 0);
    });
  }

  it('times out, counts, and hands the first fragment over for ICMP time exceeded', () => {
    const firsts: IpPacket[] = [];
    const r = new Reassembler({ timeoutMs: 1000, onTimeout: (f) => firsts.push(f) });
    const frags = fragments(4, Buffer.alloc(2000), 512);
    r.push(frags[0]!, 0);
    r.push(frags[1]!, 500);
    assert.equal(r.expire(999), 0);
    assert.equal(r.expire(1000), 1);
    assert.equal(r.stats.dropped.timeout, 2);
    assert.equal(firsts.length, 1);
    assert.equal(firsts[0]!.fragment?.offset, 0);
    assert.equal(r.heldBytes, 0);
  });

  it('bounds: fragments per datagram, datagrams pending, bytes held, reassembled size', () => {
    const few = new Reassembler({ maxFragments: 3 });
    for (const f of fragments(4, Buffer.alloc(4000), 512)) few.push(f, 0);
    assert.equal(few.stats.reassembled, 0);
    assert.ok(few.stats.dropped.too_many_fragments > 0);
    assert.equal(few.heldBytes, 0);

    const pending = new Reassembler({ maxPending: 4 });
    for (let id = 0; id < 10; id++) pending.push(fragments(6, Buffer.alloc(1000), 512, id)[0]!, 0);
    assert.equal(pending.pending, 4);
    assert.equal(pending.stats.dropped.over_limit, 6);

    const bytes = new Reassembler({ maxTotalBytes: 2048 });
    for (let id = 0; id < 10; id++) bytes.push(fragments(4, Buffer.alloc(1000), 512, id)[0]!, 0);
    assert.ok(bytes.heldBytes <= 2048);
    assert.ok(bytes.stats.dropped.over_limit >= 6);

    const small = new Reassembler({ maxPacketBytes: 1500 });
    for (const f of fragments(6, Buffer.alloc(3000), 1024)) small.push(f, 0);
    assert.ok(small.stats.dropped.too_big > 0);
    assert.equal(small.stats.reassembled, 0);
  });

  it('refuses inconsistent lengths: two different last fragments, data past the end', () => {
    const r = new Reassembler();
    const frags = fragments(4, Buffer.alloc(2000), 512);
    const last = frags.at(-1)!;
    r.push(last, 0);
    const [src, dst] = ['10.0.0.1', '10.0.0.2'];
    const otherEnd = parseIp(
      buildIp({
        src,
        dst,
        protocol: 17,
        payload: Buffer.alloc(8),
        fragment: { id: 99, offset: 4000, more: false },
      }),
    );
    r.push(otherEnd, 0);
    assert.ok(r.stats.dropped.inconsistent >= 1);
    assert.equal(r.heldBytes, 0);
  });

  it('passes a whole packet through untouched', () => {
    const p = parseIp(
      buildIp({
        src: '10.0.0.1',
        dst: '10.0.0.2',
        protocol: 17,
        payload: udpDatagram(1, 2, Buffer.alloc(3)),
      }),
    );
    assert.equal(new Reassembler().push(p), p);
  });
});
