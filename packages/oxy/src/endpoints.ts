/**
 * Endpoints: where listening happens, in one place, so graceful restarts can swap listening
 * for inherited sockets (`openEndpoint` is the seam), and the drain that a restart or shutdown
 * runs over the live connections.
 *
 * Drain order: stop accepting → `Connection: close` on later responses → wait for connections
 * and tunnels to finish → at the deadline, destroy what is left.
 */
import { once } from 'node:events';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Listeners } from 'foundations/restart';
import { formatHostPort, type ListenAddr } from './context/addr.ts';
import type { IngressConnection } from './context/state.ts';
import { OXY_ERR, OxyError } from './errors.ts';
import { native } from './flows/stream/native-addon.ts';
import type { Runtime } from './runtime.ts';

/** Options of a TCP listening socket, which its accepted connections inherit. */
export interface ListenTcpOptions {
  /** TCP_CONGESTION, or '' for the system's default. */
  readonly congestion: string;
  /** TCP_QUICKACK off (`tcp_smart_accept`). */
  readonly smartAccept: boolean;
}

/**
 * Opens the listening socket of endpoint `name` at `addr`. The returned server accepts with
 * `allowHalfOpen` (tunnels carry half-close) and `noDelay`. With `listeners` (the restart
 * lifecycle's), a socket inherited from the previous process or from systemd is used when one
 * matches by name or address, and the server is handed on at the next restart. `tcp` is set on
 * the listening socket (TCP only; an inherited one is set again, to this process's settings), so
 * accepted connections inherit it. Throws `OXY_ERR_LISTEN` naming the settings path.
 */
export async function openEndpoint(
  name: string,
  addr: ListenAddr,
  listeners?: Listeners,
  tcp: ListenTcpOptions = { congestion: '', smartAccept: false },
): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: false });
  const options = addr.kind === 'tcp' ? { host: addr.host, port: addr.port } : { path: addr.path };
  try {
    if (listeners) await listeners.listen(name, addr, server, { backlog: 1024 });
    else {
      server.listen({ ...options, backlog: 1024 });
      await once(server, 'listening');
    }
  } catch (e) {
    const where = addr.kind === 'tcp' ? formatHostPort(addr.host, addr.port) : addr.path;
    throw new OxyError(
      OXY_ERR.LISTEN,
      `endpoints.${name}.addr: cannot listen on ${where}: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  if (tcp.congestion !== '' && addr.kind === 'tcp') {
    try {
      setCongestion(server, tcp.congestion);
    } catch (e) {
      server.close();
      throw new OxyError(
        OXY_ERR.LISTEN,
        `endpoints.${name}.tcp_congestion_control: the kernel refused "${tcp.congestion}" (${(e as Error).message}); ` +
          'it must be an algorithm of net.ipv4.tcp_available_congestion_control (modprobe tcp_<name> if not), ' +
          'and of net.ipv4.tcp_allowed_congestion_control unless Oxy has CAP_NET_ADMIN',
        { cause: e },
      );
    }
  }
  if (addr.kind === 'tcp') setQuickAck(server, !tcp.smartAccept);
  return server;
}

/**
 * TCP_QUICKACK on for an accepted `socket` whose listening socket has it off: its ACKs go at
 * once, as on a socket that never held them. Best effort (no addon, no descriptor: as it was).
 */
export function acknowledgeAtOnce(socket: Duplex): void {
  // A TLS socket made over an accepted one: the TCP socket is its parent.
  const fd = handleFd(socket) ?? handleFd((socket as { _parent?: Duplex | null })._parent ?? null);
  if (native !== null && fd !== null) native.setTcpQuickAck(fd, true);
}

/** TCP_QUICKACK on `server`'s listening socket (a TCP socket: the kernel takes it). */
function setQuickAck(server: net.Server, on: boolean): void {
  const fd = listeningFd(server);
  if (native !== null && fd !== null) native.setTcpQuickAck(fd, on);
}

/** TCP_CONGESTION on `server`'s listening socket, through the addon (Node has no option for it). */
function setCongestion(server: net.Server, algorithm: string): void {
  const fd = listeningFd(server);
  if (native === null) throw new Error('the native addon is not loaded');
  if (fd === null) throw new Error('the listening socket has no descriptor');
  native.setTcpCongestion(fd, algorithm);
}

/** The descriptor of `server`'s listening socket (Node's handle internals), or null without one. */
export function listeningFd(server: net.Server): number | null {
  return handleFd(server);
}

/** The descriptor of a Node socket's or server's handle (Node's internals), or null without one. */
function handleFd(owner: net.Server | Duplex | null): number | null {
  const fd = (owner as unknown as { _handle?: { fd?: unknown } | null } | null)?._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : null;
}

/** `host:port` or the socket path a server listens on. */
export function describeListening(server: net.Server): string {
  const a = server.address();
  if (a === null) return '(closed)';
  if (typeof a === 'string') return a;
  return formatHostPort(a.address, a.port);
}

/**
 * Drains `rt`'s connections: `servers` stop accepting at once, later responses close their
 * connections, and whatever still runs after `timeoutMs` is destroyed. Resolves when no
 * connection is left.
 */
export async function drain(
  rt: Runtime,
  servers: readonly net.Server[],
  timeoutMs: number,
  onramps: readonly { drain?(): Promise<void> }[] = [],
): Promise<void> {
  rt.draining = true;
  // HTTP/2 sessions get GOAWAY now and close themselves once their open streams end.
  for (const o of onramps) void o.drain?.();
  // net.Server#close stops accepting at once but calls back only when every connection it
  // accepted has ended, so wait for it after the connections are dealt with, not before.
  const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  const deadline = performance.now() + timeoutMs;
  while (rt.connections.size > 0 && performance.now() < deadline) {
    for (const conn of rt.connections) {
      // HTTP/2 multiplexes requests the checks below cannot see; its GOAWAY is under way.
      if (conn.protocol === 'h2' || conn.protocol === 'h2c') continue;
      // An idle keep-alive connection has nothing to finish: close it now.
      if (conn.socket === null) continue; // datagram sessions are drained by their on-ramp
      if (conn.tunnels === 0 && (conn.socket as { _httpMessage?: unknown })._httpMessage == null) {
        conn.closeReason = 'drained';
        conn.socket.end();
      }
    }
    await new Promise((r) => setTimeout(r, Math.min(100, Math.max(1, deadline - performance.now()))));
  }
  const aborted: IngressConnection[] = [];
  if (rt.connections.size > 0) rt.cutting = true;
  for (const conn of rt.connections) {
    conn.closeReason = 'drained';
    if (conn.socket !== null) conn.socket.destroy();
    else if (conn.abort !== null) {
      conn.abort();
      aborted.push(conn);
    }
  }
  await closed;
  // What the addon's reactor thread holds (its tunnels, a stopped listener's heads) leaves once
  // its news of the abort arrives, a loop turn or two later on a loaded machine: waited for,
  // within a bound, so that "no connection is left" holds when this resolves.
  await rt.settleCut(ABORT_NEWS_MS, aborted);
}

/** How long `drain` waits for the addon's news of connections it aborted. */
const ABORT_NEWS_MS = 3000;
