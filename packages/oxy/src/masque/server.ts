/**
 * The proxy's side of an accepted MASQUE tunnel: the same capsule session as the client's
 * (`tunnel.ts`), built over the stream the on-ramp answered with success. Capsules are
 * symmetric in RFC 9297/9484, so one class serves both ends: on the proxy, `datagram` events
 * are the client's payloads (to forward to the target or the IP pipeline), `send` returns
 * replies to the client, and a CONNECT-IP tunnel answers `addressRequest` events with
 * `assignAddresses` and announces `advertiseRoutes`.
 *
 * Wiring (the on-ramp's part): run `checkMasqueRequest`, then hooks, egress and DNS (refusing
 * with `refusalForError` on failure), answer `masqueSuccess(...)`, then call
 * `acceptMasqueTunnel` with the stream (HTTP/2) or the upgraded socket and its `head` bytes
 * (HTTP/1.1). Reading starts on the next turn, so listeners attached right after the call see
 * every capsule.
 */

import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import type { MasqueProtocol } from '../protocols/masque/template.ts';
import { IpTunnel, UdpTunnel } from './tunnel.ts';

/** Options of {@link acceptMasqueTunnel}. */
export interface AcceptMasqueOptions<P extends MasqueProtocol> {
  readonly protocol: P;
  /** The HTTP/2 stream, or the socket after a `101`. */
  readonly stream: Duplex;
  /** `'2'` or `'1.1'`: decides how a protocol error aborts (RST_STREAM or closing the socket). */
  readonly httpVersion: '2' | '1.1';
  /** Bytes read past the HTTP/1.1 request head (the `upgrade` event's `head`). */
  readonly head?: Uint8Array | undefined;
  /** Largest capsule accepted from the client. Default 65,544 bytes. */
  readonly maxCapsuleSize?: number | undefined;
  /** Datagrams an async iterator queues before pausing the stream. Default 256. */
  readonly highWaterMark?: number | undefined;
}

/** Starts the capsule session of an accepted tunnel. */
export function acceptMasqueTunnel(options: AcceptMasqueOptions<'connect-udp'>): UdpTunnel;
export function acceptMasqueTunnel(options: AcceptMasqueOptions<'connect-ip'>): IpTunnel;
export function acceptMasqueTunnel(options: AcceptMasqueOptions<MasqueProtocol>): UdpTunnel | IpTunnel {
  const { stream } = options;
  const init = {
    protocol: options.protocol,
    stream,
    head: options.head,
    status: options.httpVersion === '2' ? 200 : 101,
    headers: {},
    maxCapsuleSize: options.maxCapsuleSize,
    highWaterMark: options.highWaterMark,
    abort: () => {
      // RFC 9297 §3.3: a malformed capsule makes the message malformed: reset the stream.
      if (options.httpVersion === '2')
        (stream as http2.Http2Stream).close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
      else stream.destroy();
    },
  };
  return options.protocol === 'connect-udp' ? new UdpTunnel(init) : new IpTunnel(init);
}
