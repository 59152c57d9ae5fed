/**
 * Generic UDP Encapsulation (draft-ietf-intarea-gue-09), sans-IO: the UDP payload of an
 * unconnected IP tunnel (the seed's Magic WAN on-ramp).
 *
 * Variant 0: a 4-byte header `|0 0|C|Hlen(5)|Proto/ctype(8)|Flags(16)|`, then Hlen 32-bit words
 * of extension fields (where a tunnel's context lives, e.g. a virtual network id), then the
 * payload: an IP protocol number's packet (C = 0) or a control message of type ctype (C = 1).
 * Variant 1: no header at all; the payload is a bare IPv4 or IPv6 packet, told apart by its
 * first bits (01|0 = IPv4, 01|1 = IPv6), which is why variant 1 costs nothing.
 *
 * Decoding is strict: the extension fields must fit, and a variant-1 payload must start like
 * an IP packet. Anything else throws `PacketError('bad_gue_header')`.
 */
import { PacketError } from '../ip/packet-error.ts';

/** IP protocol numbers GUE carries as payloads (IPv4 in IP and IPv6 in IP). */
export const GUE_PROTO = { IPV4: 4, IPV6: 41 } as const;

/** A decoded GUE datagram. */
export type GueMessage =
  | {
      readonly variant: 0;
      /** Control message (C bit): `protoCtype` is then the control type. */
      readonly control: boolean;
      /** IP protocol number of the payload (C = 0) or control type (C = 1). */
      readonly protoCtype: number;
      readonly flags: number;
      /** The extension fields (Hlen × 4 bytes), a view into the datagram. */
      readonly extensions: Buffer;
      /** The encapsulated packet or control message (a view). */
      readonly payload: Buffer;
    }
  | {
      readonly variant: 1;
      /** `GUE_PROTO.IPV4` or `GUE_PROTO.IPV6`, from the packet's first bits. */
      readonly protoCtype: number;
      /** The bare IP packet (the whole datagram). */
      readonly payload: Buffer;
    };

/** Decodes a GUE datagram (the UDP payload). */
export function decodeGue(buf: Buffer): GueMessage {
  if (buf.length < 1) throw new PacketError('bad_gue_header', 'empty GUE datagram');
  const variant = buf[0]! >> 6;
  if (variant === 1) {
    const v = buf[0]! >> 4;
    if (v !== 4 && v !== 6) throw new PacketError('bad_gue_header', `GUE variant 1 with IP version ${v}`);
    return { variant: 1, protoCtype: v === 4 ? GUE_PROTO.IPV4 : GUE_PROTO.IPV6, payload: buf };
  }
  if (variant !== 0) throw new PacketError('bad_gue_header', `GUE variant ${variant} is unknown`);
  if (buf.length < 4) throw new PacketError('bad_gue_header', `GUE header needs 4 bytes, got ${buf.length}`);
  const control = (buf[0]! & 0x20) !== 0;
  const hlen = (buf[0]! & 0x1f) * 4;
  if (4 + hlen > buf.length)
    throw new PacketError('bad_gue_header', `GUE extension fields of ${hlen} bytes exceed the datagram`);
  return {
    variant: 0,
    control,
    protoCtype: buf[1]!,
    flags: buf.readUInt16BE(2),
    extensions: buf.subarray(4, 4 + hlen),
    payload: buf.subarray(4 + hlen),
  };
}

/** Options of `encodeGue`. */
export interface GueEncodeOptions {
  /** 0 (default) or 1 (direct IP: only for an IPv4 or IPv6 packet, no control, no extensions). */
  readonly variant?: 0 | 1;
  /** Control message. Default false. */
  readonly control?: boolean;
  /** Payload protocol or control type. Default: from the payload's IP version. */
  readonly protoCtype?: number;
  readonly flags?: number;
  /** Extension fields; their length must be a multiple of 4 and at most 124 bytes. */
  readonly extensions?: Uint8Array;
}

/** Encodes a GUE datagram around `payload`. */
export function encodeGue(payload: Uint8Array, o: GueEncodeOptions = {}): Buffer {
  if (o.variant === 1) {
    const v = (payload[0] ?? 0) >> 4;
    if (v !== 4 && v !== 6) throw new TypeError('GUE variant 1 carries only IPv4 or IPv6 packets');
    return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  }
  const ext = o.extensions ?? new Uint8Array(0);
  if (ext.length % 4 !== 0 || ext.length > 31 * 4)
    throw new TypeError(`GUE extension fields of ${ext.length} bytes (a multiple of 4, at most 124)`);
  const proto = o.protoCtype ?? ((payload[0] ?? 0) >> 4 === 6 ? GUE_PROTO.IPV6 : GUE_PROTO.IPV4);
  const out = Buffer.alloc(4 + ext.length + payload.length);
  out[0] = (o.control ? 0x20 : 0) | (ext.length / 4);
  out[1] = proto;
  out.writeUInt16BE(o.flags ?? 0, 2);
  out.set(ext, 4);
  out.set(payload, 4 + ext.length);
  return out;
}

/** Whether a GUE message carries an IP packet (not a control message or another protocol). */
export function gueCarriesIp(m: GueMessage): boolean {
  if (m.variant === 1) return true;
  return !m.control && (m.protoCtype === GUE_PROTO.IPV4 || m.protoCtype === GUE_PROTO.IPV6);
}
