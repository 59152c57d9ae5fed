/** GUE (draft-ietf-intarea-gue-09): variant 0 with extensions and control, variant 1 direct IP. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildUdpPacket } from '../ip/builder.ts';
import { isPacketError } from '../ip/packet-error.ts';
import { decodeGue, encodeGue, GUE_PROTO, gueCarriesIp } from './codec.ts';

const v4 = buildUdpPacket('10.0.0.1', 1, '10.0.0.2', 2, Buffer.from('x'));
const v6 = buildUdpPacket('fd00::1', 1, 'fd00::2', 2, Buffer.from('x'));

describe('GUE', () => {
  it('variant 0: header fields and extension fields on the wire', () => {
    const ext = Buffer.from('0000002a', 'hex'); // e.g. a virtual network id of 42
    const d = encodeGue(v4, { extensions: ext, flags: 0x8000 });
    // 0b00 C=0 Hlen=1 | proto 4 | flags 0x8000
    assert.equal(d.subarray(0, 4).toString('hex'), '01048000');
    const m = decodeGue(d);
    assert.equal(m.variant, 0);
    if (m.variant !== 0) return;
    assert.deepEqual([m.control, m.protoCtype, m.flags], [false, GUE_PROTO.IPV4, 0x8000]);
    assert.equal(m.extensions.toString('hex'), '0000002a');
    assert.equal(m.payload.equals(v4), true);
    assert.equal(gueCarriesIp(m), true);
    assert.equal(decodeGue(encodeGue(v6)).protoCtype, GUE_PROTO.IPV6);
  });

  it('variant 0 control message', () => {
    const m = decodeGue(encodeGue(Buffer.from('ctl'), { control: true, protoCtype: 7 }));
    assert.equal(m.variant === 0 && m.control && m.protoCtype === 7, true);
    assert.equal(gueCarriesIp(m), false);
  });

  it('variant 1: a bare IPv4 or IPv6 packet, told apart by its first bits', () => {
    assert.equal(decodeGue(encodeGue(v4, { variant: 1 })).protoCtype, GUE_PROTO.IPV4);
    assert.equal(decodeGue(encodeGue(v6, { variant: 1 })).protoCtype, GUE_PROTO.IPV6);
    assert.throws(() => encodeGue(Buffer.from([0x70]), { variant: 1 }), TypeError);
  });

  it('refuses unknown variants, extension fields past the datagram, short headers', () => {
    for (const b of [
      Buffer.from([0x80, 4, 0, 0]),
      Buffer.from([0x02, 4, 0, 0, 1, 2, 3, 4]),
      Buffer.from([0, 4]),
      Buffer.alloc(0),
      Buffer.from([0x70]),
    ]) {
      assert.throws(
        () => decodeGue(b),
        (e: unknown) => isPacketError(e) && e.reason === 'bad_gue_header',
      );
    }
  });
});
