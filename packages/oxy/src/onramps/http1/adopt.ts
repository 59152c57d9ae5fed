/**
 * The one door into an `http` endpoint for a connection accepted outside Node's own accept: a
 * descriptor and the bytes already read from it. The addon's reactor thread accepts an `http`
 * endpoint's connections and reads their first bytes (`reactor-connect.ts`); whatever is not a
 * CONNECT it can carry whole (another method, early data, a slow head, the HTTP/2 preface, a
 * refused CONNECT) comes back here and is served as if Node had accepted it.
 *
 * Ordering rule: the bytes already read are pushed back before anything reads the socket, and
 * the socket is handed over through the server's own `'connection'` event, so everything that
 * listens there (`acceptConnection`: the ingress context, metrics, the on-ramp; the restart
 * lifecycle's connection tracker) sees it as it sees any accepted socket. A native HTTP/1.1
 * engine that serves a descriptor plus the bytes read joins here.
 */
import net from 'node:net';
import type { SocketAddr } from '../../context/contexts.ts';
import type { EndpointState } from '../../context/state.ts';
import type { Runtime } from '../../runtime.ts';

/** A connection accepted outside Node: its descriptor, the bytes read, and its addresses. */
export interface HandedConnection {
  /** The accepted descriptor (non-blocking); the caller gives it up. */
  readonly fd: number;
  /** Bytes already read from it (the start of a request), or null. */
  readonly bytes: Buffer | null;
  readonly peer: SocketAddr;
  /** The local address, when known without asking the socket. */
  readonly local: SocketAddr | null;
}

type Server = net.Server & { _connections: number; allowHalfOpen?: boolean };
type Accepted = net.Socket & {
  _peername?: { address: string; family: string; port: number };
  _sockname?: { address: string; family: string; port: number };
  server: net.Server;
  _server: net.Server;
};

/**
 * Adds to `socket`'s `bytesRead` and `bytesWritten` what was read from and written to its
 * descriptor outside Node (by the reactor thread before a hand-back, by the native HTTP/1.1
 * engine while it served the connection), so that the connection's statistics (the close hook's
 * `bytesIn` and `bytesOut`) count every byte once. Node's counters cannot be topped up while the
 * socket has a handle; the sums stack with an earlier call's.
 */
export function countOutside(socket: net.Socket, bytesIn: number, bytesOut: number): void {
  for (const [key, extra] of [
    ['bytesRead', bytesIn],
    ['bytesWritten', bytesOut],
  ] as const) {
    if (extra <= 0) continue;
    const was = (Object.getOwnPropertyDescriptor(socket, key) ??
      Object.getOwnPropertyDescriptor(net.Socket.prototype, key)) as PropertyDescriptor;
    const get = was.get as (this: net.Socket) => number;
    Object.defineProperty(socket, key, {
      configurable: true,
      get(this: net.Socket): number {
        return get.call(this) + extra;
      },
    });
  }
}

function nodeAddr(a: SocketAddr): { address: string; family: string; port: number } {
  return { address: a.host, family: net.isIPv6(a.host) ? 'IPv6' : 'IPv4', port: a.port };
}

/**
 * Serves `c` on `endpoint` as the endpoint's server would have served it had it accepted the
 * connection itself (see the top). `_rt` is the endpoint's runtime: the socket path reaches it
 * through the server's listener; an engine serving the descriptor itself needs it. Throws only if
 * the descriptor is not a TCP socket (then it is still the caller's).
 */
export function adoptConnection(
  _rt: Runtime,
  endpoint: EndpointState,
  server: net.Server,
  c: HandedConnection,
): net.Socket {
  const s = server as Server;
  const socket = new net.Socket({
    fd: c.fd,
    allowHalfOpen: s.allowHalfOpen === true,
    readable: true,
    writable: true,
  }) as Accepted;
  // What getpeername and getsockname would say: no system call for what the reactor knows.
  socket._peername = nodeAddr(c.peer);
  const local = c.local ?? endpoint.localAddr;
  if (local !== null) socket._sockname = nodeAddr(local);
  if (c.bytes !== null && c.bytes.length > 0) {
    socket.unshift(c.bytes);
    // They were read from the client: counted as the socket's (timeouts and statistics read it).
    countOutside(socket, c.bytes.length, 0);
  }
  // As net.Server's own accept: counted (its close waits for it), then announced.
  s._connections++;
  socket.server = server;
  socket._server = server;
  server.emit('connection', socket);
  return socket;
}
