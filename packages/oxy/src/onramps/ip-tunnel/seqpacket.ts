/**
 * The `ip_seqpacket` on-ramp (the seed's connected tunnels): a SOCK_SEQPACKET Unix socket whose
 * every accepted connection is one IP tunnel. The first message is the tunnel's context (handed
 * to `IpTunnelHook.handleTunnel`), every later message one raw IP packet, both ways; a message
 * boundary is a packet boundary, so nothing is framed.
 *
 * Ordering rule: the first message of a connection is never a packet; packets that arrive
 * while the tunnel's hooks decide wait in the tunnel (bounded). A refused tunnel's connection
 * is closed; a closed connection ends its tunnel (`client_closed`).
 *
 * Restarts: with the lifecycle's `listeners`, the listening socket is the one the previous
 * process handed over (or systemd's `ListenSequentialPacket=`), else bound under a temporary
 * name and renamed into place; a restart hands it on, so the path is never unlinked and a
 * client connecting meanwhile waits in the accept queue instead of being refused. Each open
 * tunnel counts as a connection: an old process serves its tunnels until `drain_timeout`.
 */
import type { Listeners } from 'foundations/restart';
import { log } from 'foundations/telemetry';
import { type SeqpacketServer, type SeqpacketSocket, seqpacket } from 'native';
import type { EndpointState } from '../../context/state.ts';
import { OXY_ERR, OxyError } from '../../errors.ts';
import type { Runtime } from '../../runtime.ts';
import type { IpSeqpacketEndpointSettings } from '../../settings.ts';
import { type IpTunnel, openIpTunnel } from './tunnel.ts';

/** Largest message read: an IP packet is at most 64 KiB. */
const MAX_MESSAGE = 65536;
/** Messages queued for a client beyond which reply packets are dropped (the tunnel is full). */
const MAX_QUEUED = 4096;

/** A running `ip_seqpacket` endpoint. */
export interface IpSeqpacketOnRamp {
  /** The socket path listened on. */
  readonly path: string;
  /** Tunnels open now. */
  readonly tunnelCount: number;
  /** Stops accepting; open tunnels go on. */
  drain(): Promise<void>;
  /** Stops accepting and ends every tunnel (`drained`). */
  close(): void;
}

/**
 * Listens on `settings.addr` (a path); with the restart lifecycle's `listeners`, on the socket
 * handed over when one matches, and handed on at the next restart. Throws `OXY_ERR_LISTEN`
 * naming the settings key.
 */
export function openIpSeqpacketOnRamp(
  rt: Runtime,
  endpoint: EndpointState,
  settings: IpSeqpacketEndpointSettings,
  listeners?: Listeners,
): IpSeqpacketOnRamp {
  const where = `endpoints.${endpoint.name}.addr`;
  const addr = settings.addr;
  if (addr.kind !== 'unix')
    throw new OxyError(OXY_ERR.LISTEN, `${where}: an ip_seqpacket endpoint listens on a Unix socket path`);
  const opts = { maxMessageSize: MAX_MESSAGE };
  let opened: SeqpacketServer | undefined;
  try {
    if (listeners === undefined) opened = seqpacket.listen(addr.path, opts);
    else {
      listeners.listenWith(endpoint.name, addr, (fd) => {
        const s =
          fd === null
            ? seqpacket.listen(addr.path, { ...opts, replace: true })
            : seqpacket.listenFd(fd, addr.path, opts);
        opened = s;
        return { fd: s.fd, stopAccepting: () => s.close() };
      });
    }
  } catch (e) {
    throw new OxyError(OXY_ERR.LISTEN, `${where}: cannot listen on ${addr.path}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  if (opened === undefined) throw new OxyError(OXY_ERR.LISTEN, `${where}: no listening socket`);
  const server = opened;
  /** Open connections and their tunnels (null until the first message). */
  const tunnels = new Map<SeqpacketSocket, IpTunnel | null>();
  server.on('error', (e) => log.warn('ip_seqpacket accept failed', { endpoint: endpoint.name, err: e }));
  server.on('connection', (socket) => accept(socket));

  function accept(socket: SeqpacketSocket): void {
    let tunnel: IpTunnel | null = null;
    tunnels.set(socket, null);
    // Draining waits for the tunnel; at the deadline it ends `drained`.
    const untrack = listeners?.track({
      destroy: () => {
        tunnel?.close('drained');
        socket.close();
      },
    });
    const local = { host: addr.kind === 'unix' ? addr.path : '', port: 0 };
    socket.on('messages', (messages) => {
      let i = 0;
      if (tunnel === null) {
        const context = messages[0] as Buffer;
        i = 1;
        const t = openIpTunnel(rt, endpoint, {
          peer: { host: '', port: 0 },
          local,
          protocol: 'ip_seqpacket',
          context,
          send: (packet) => {
            if (socket.queued >= MAX_QUEUED) return false;
            socket.send(packet);
            return true;
          },
          // Not inside the 'messages' handler: closing a socket there can lose its queued reads.
          refused: () => setImmediate(() => socket.close()),
        });
        tunnel = t;
        tunnels.set(socket, t);
      }
      for (; i < messages.length; i++) tunnel.fromClient(messages[i] as Buffer);
    });
    socket.on('error', (e) => {
      log.debug('ip_seqpacket tunnel error', { err: e });
      if (tunnel?.conn !== undefined) tunnel.conn.closeReason = 'error';
      socket.close();
    });
    socket.on('close', () => {
      untrack?.();
      tunnels.delete(socket);
      tunnel?.close('client_closed');
    });
  }

  let closed = false;
  return {
    path: addr.path,
    get tunnelCount() {
      return tunnels.size;
    },
    drain: async () => server.close(),
    close() {
      if (closed) return;
      closed = true;
      server.close();
      for (const [socket, t] of [...tunnels]) {
        t?.close('drained');
        socket.close();
      }
      tunnels.clear();
    },
  };
}
