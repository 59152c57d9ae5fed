/**
 * The listening UDP socket of a datagram endpoint (`udp`, `ip_gue`): under the restart
 * lifecycle the socket handed over by the previous process (or systemd) is taken when one
 * matches, and handed on at the next restart; without it a new socket is bound. A failure is
 * `OXY_ERR_LISTEN` naming the endpoint's `addr` key.
 */
import type { Listeners } from 'foundations/restart';
import { UdpSocket } from 'native';
import { OXY_ERR, OxyError } from '../../errors.ts';

/** Binds (or takes over) endpoint `name`'s UDP socket on `host:port`. */
export function bindEndpointUdp(
  name: string,
  host: string,
  port: number,
  maxDatagramSize: number,
  listeners: Listeners | undefined,
): UdpSocket {
  const opts = { maxDatagramSize, receiveBufferSize: 4 << 20 };
  try {
    return listeners === undefined
      ? UdpSocket.bind({ address: host, port, ...opts })
      : listeners.datagrams.bind(name, { host, port }, opts);
  } catch (e) {
    throw new OxyError(
      OXY_ERR.LISTEN,
      `endpoints.${name}.addr: cannot listen on UDP ${host}:${port}: ${(e as Error).message}`,
      { cause: e },
    );
  }
}
