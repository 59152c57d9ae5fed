/**
 * Cloudflare's Simple Proxy Protocol (SPP) for UDP: a fixed 38-byte header before each datagram's
 * payload, in network byte order: magic 0x56EC, client address (16 bytes), proxy address
 * (16 bytes), client port, proxy port. An IPv4 address travels IPv4-mapped (`::ffff:a.b.c.d`).
 *
 * The decoded header is a {@link ProxyHeader} (version `spp`, command `proxy`, transport
 * `dgram`), so hooks and audit records see one shape for every format; the client is the
 * `source`, the proxy the `destination`. IPv4-mapped addresses come out as plain IPv4.
 */
import type { SocketAddr } from '../../context/contexts.ts';
import { formatIPv4, formatIPv6, isV4Mapped, toV6Bytes } from './ip.ts';
import { type ProxyHeader, ProxyProtocolError, SPP_HEADER_LENGTH, SPP_MAGIC } from './types.ts';

function address(bytes: Uint8Array, at: number): string {
  return isV4Mapped(bytes, at) ? formatIPv4(bytes, at + 12) : formatIPv6(bytes, at);
}

/**
 * Decodes the SPP header at the start of a datagram; the payload starts at byte 38. Throws a
 * {@link ProxyProtocolError}: `bad_signature` for a datagram that does not start with the magic
 * (a short one or an empty one included: it has no header), `truncated` for one that starts it
 * and ends before byte 38.
 */
export function decodeSpp(bytes: Uint8Array): ProxyHeader {
  if (bytes[0] !== SPP_MAGIC >> 8 || (bytes.length > 1 && bytes[1] !== (SPP_MAGIC & 0xff))) {
    throw new ProxyProtocolError('bad_signature', 'not the SPP magic 0x56EC');
  }
  if (bytes.length < SPP_HEADER_LENGTH) {
    throw new ProxyProtocolError('truncated', `${bytes.length} bytes, SPP needs ${SPP_HEADER_LENGTH}`);
  }
  const port = (at: number) => (bytes[at]! << 8) | bytes[at + 1]!;
  const v4 = isV4Mapped(bytes, 2) && isV4Mapped(bytes, 18);
  const family = v4 ? 'inet' : 'inet6';
  return {
    version: 'spp',
    command: 'proxy',
    family,
    transport: 'dgram',
    addresses: {
      family,
      source: { host: address(bytes, 2), port: port(34) },
      destination: { host: address(bytes, 18), port: port(36) },
    },
    tlvs: [],
    length: SPP_HEADER_LENGTH,
  };
}

/**
 * Encodes an SPP header: `client` is the datagram's originator, `proxy` its recipient. Throws a
 * `RangeError` for an address that is neither IPv4 nor IPv6, or a port out of range.
 */
export function encodeSpp(client: SocketAddr, proxy: SocketAddr): Uint8Array {
  const out = new Uint8Array(SPP_HEADER_LENGTH);
  const view = new DataView(out.buffer);
  view.setUint16(0, SPP_MAGIC);
  for (const [at, addr] of [
    [2, client],
    [18, proxy],
  ] as const) {
    const b = toV6Bytes(addr.host);
    if (b === null) throw new RangeError(`"${addr.host}" is not an IP address`);
    out.set(b, at);
  }
  for (const [at, p] of [
    [34, client.port],
    [36, proxy.port],
  ] as const) {
    if (!Number.isInteger(p) || p < 0 || p > 0xffff) throw new RangeError(`port ${p} is out of range`);
    view.setUint16(at, p);
  }
  return out;
}
