/**
 * The on-ramp of a `udp` endpoint: one UDP socket (the addon's, so a restart can hand it over),
 * whose datagrams are grouped into sessions by client address. Each session runs in the
 * datagram runner (`flows/datagram/session.ts`) with its own connected upstream socket; this
 * module only keys sessions, bounds them (`udp.max_sessions`), sweeps them for idleness
 * (`udp.idle_timeout`) and sends the replies back from the endpoint's socket.
 *
 * Order per datagram: read in a batch (recvmmsg) → session by client address (a new one runs
 * the ingress and egress hooks once) → `DatagramHook.handleDatagram` when the app has one →
 * the session's upstream socket. Replies: upstream batch → (hook) → one sendmmsg to the client.
 *
 * Timers: one interval per endpoint, at a quarter of the idle timeout; none per session.
 */
import { UdpSocket, type UdpTarget } from 'native';
import { NO_TARGET } from '../../context/addr.ts';
import type { SocketAddr } from '../../context/contexts.ts';
import { type EndpointState, IngressConnection } from '../../context/state.ts';
import { OXY_ERR, OxyError } from '../../errors.ts';
import { type DatagramIngress, DatagramSession } from '../../flows/datagram/session.ts';
import type { Runtime } from '../../runtime.ts';
import type { UdpEndpointSettings } from '../../settings.ts';
import { datagramMetrics } from '../../telemetry/metrics.ts';

/** A running `udp` endpoint. */
export interface UdpOnRamp {
  /** The endpoint's socket. */
  readonly socket: UdpSocket;
  /** Where it listens. */
  address(): SocketAddr;
  /** Sessions open now. */
  readonly sessionCount: number;
  /** Stops reading new datagrams; open sessions go on until they idle out or `close()`. */
  drain(): Promise<void>;
  /** Ends every session (`drained`) and closes the socket. */
  close(): void;
}

/**
 * Opens `udp` endpoint `endpoint` (bound to its `addr`, or to `inherited`, a descriptor handed
 * over by the previous process). Throws `OXY_ERR_LISTEN` naming the settings key.
 */
export function openUdpOnRamp(
  rt: Runtime,
  endpoint: EndpointState,
  settings: UdpEndpointSettings,
  inherited?: number,
): UdpOnRamp {
  const addr = settings.addr;
  const where = `endpoints.${endpoint.name}.addr`;
  if (addr.kind !== 'tcp')
    throw new OxyError(OXY_ERR.LISTEN, `${where}: a udp endpoint listens on host:port, not a path`);
  const maxDatagram = Math.min(65535, settings.udp.max_datagram_size);
  let socket: UdpSocket;
  try {
    const opts = { maxDatagramSize: maxDatagram, receiveBufferSize: 4 << 20 };
    socket =
      inherited === undefined
        ? UdpSocket.bind({ address: addr.host, port: addr.port, ...opts })
        : UdpSocket.adopt(inherited, opts);
  } catch (e) {
    throw new OxyError(
      OXY_ERR.LISTEN,
      `${where}: cannot listen on UDP ${addr.host}:${addr.port}: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  const bound = socket.address();
  const local: SocketAddr = { host: bound.address, port: bound.port };
  const target = settings.udp.target ?? NO_TARGET;
  const idleMs = settings.udp.idle_timeout;
  const maxSessions = settings.udp.max_sessions;
  const sessions = new Map<number | string, DatagramSession>();
  const tooMany = datagramMetrics.dropped_total({ reason: 'too_many_sessions' });

  const newSession = (key: number | string, host: string, port: number, now: number): DatagramSession => {
    const peer = { host, port };
    let to: UdpTarget | null = null;
    const ingress: DatagramIngress = {
      reply: (data) => {
        socket.send(data, port, host);
      },
      replyBatch: (batch) => {
        to ??= UdpSocket.target(host, port);
        socket.sendBatch(batch, to);
      },
      ended: () => {
        sessions.delete(key);
      },
    };
    const conn = new IngressConnection(endpoint, { peer, local }, 'udp', rt.ext);
    return new DatagramSession(rt, conn, target, ingress, now, maxDatagram);
  };

  socket.onBatch((batch) => {
    const now = performance.now();
    for (let i = 0; i < batch.count; i++) {
      const key = batch.peerKey(i);
      let session = sessions.get(key);
      if (session === undefined) {
        if (sessions.size >= maxSessions) {
          tooMany.inc();
          continue;
        }
        session = newSession(key, batch.address(i), batch.port(i), now);
        sessions.set(key, session);
      }
      session.fromClient(batch, i, now);
    }
  });

  const sweep = setInterval(
    () => {
      const cutoff = performance.now() - idleMs;
      for (const s of sessions.values()) if (s.lastActive <= cutoff) s.close('idle_timeout');
    },
    Math.max(50, Math.floor(idleMs / 4)),
  ).unref();

  let closed = false;
  return {
    socket,
    address: () => local,
    get sessionCount() {
      return sessions.size;
    },
    drain() {
      if (!socket.closed) socket.setReading(false);
      return Promise.resolve();
    },
    close() {
      if (closed) return;
      closed = true;
      clearInterval(sweep);
      for (const s of [...sessions.values()]) s.close('drained');
      socket.close();
    },
  };
}
