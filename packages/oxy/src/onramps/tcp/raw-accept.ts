/**
 * Raw accept for a `tcp` endpoint whose connections can all go whole to the addon: the
 * listening handle's `onconnection` is taken over, so an accepted connection never becomes a
 * `net.Socket` (Node builds one per connection: a Duplex with both stream states, listeners,
 * and at the end its close). Its descriptor goes to the addon's whole tunnel
 * (`flows/stream/raw-tunnel.ts`); only if the stream runner needs a socket after all (a route
 * the addon cannot connect, e.g. several addresses to race, or an upstream proxy) is one made
 * from the handle, as Node would have made it.
 *
 * It applies when nothing needs the socket itself: no `IngressHook` (`handleConnection`,
 * `handleConnectionClose`), no PROXY protocol header to read, a fixed target, splicing on and
 * the whole-tunnel fast path allowed (`rt.fast.wholeTunnel`), the addon loaded. The connection,
 * its request, the metrics, the audit record and a drain are what `ingress.ts` and `onramp.ts`
 * give a socket's connection: same contexts, same counters, same order (the audit record, then
 * the connection's close).
 *
 * The listening socket is untouched (a restart hands it over as before); a connection Node
 * would refuse itself (`maxConnections`, a `blockList`, an accept error) goes the normal way.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { TaskToken, TaskTracker } from 'foundations/restart';
import type { SocketAddr } from '../../context/contexts.ts';
import { type EndpointState, IngressConnection, RequestState } from '../../context/state.ts';
import type { RawClient, RawTcpHandle, RawTunnel } from '../../flows/stream/raw-tunnel.ts';
import { runStream, type SpliceableClient, type StreamIngress } from '../../flows/stream/runner.ts';
import { spliceAvailable } from '../../flows/stream/splice.ts';
import type { Runtime } from '../../runtime.ts';
import { forkConnection, forkRequest } from '../../telemetry/fork.ts';
import { ingressMetrics } from '../../telemetry/metrics.ts';

const NO_HEAD = Buffer.alloc(0);
const kRaw = Symbol('oxy.rawAccept');

/** A listening TCP handle as Node keeps it (its internals used here). */
interface ListenHandle {
  onconnection: (err: number, handle?: RawTcpHandle) => void;
  [kRaw]?: RawAccept;
}

type Server = net.Server & {
  _handle: ListenHandle | null;
  _connections: number;
  noDelay?: boolean;
  keepAlive?: boolean;
  blockList?: unknown;
  highWaterMark?: number;
  allowHalfOpen?: boolean;
};

interface RawAccept {
  readonly rt: Runtime;
  readonly endpoint: EndpointState;
  readonly server: Server;
  readonly target: SocketAddr;
  /** The local address when it is the same for every connection (not a wildcard). */
  readonly local: SocketAddr | null;
  readonly original: (err: number, handle?: RawTcpHandle) => void;
  /** The restart lifecycle's connection tracker (a drain waits for what it counts), if any. */
  readonly tracker: TaskTracker | null;
}

/** True when every connection of `endpoint` (targeting `target`) can be accepted raw. */
export function rawAcceptApplies(rt: Runtime, endpoint: EndpointState, target: SocketAddr | null): boolean {
  return (
    target !== null &&
    spliceAvailable &&
    rt.fast.reactorAccept &&
    endpoint.stream.splice &&
    endpoint.proxyProtocol === null &&
    endpoint.sendProxyProtocol === null
  );
}

/**
 * Takes over `server`'s accepting for `endpoint` (see the top). False, and nothing changed,
 * when the listening handle is not one this knows. `tracker` is the restart lifecycle's
 * connection tracker (`Listeners.connections`): a raw connection is counted there as the
 * lifecycle counts a socket's, so a restart's drain waits for it.
 */
export function takeRawAccept(
  rt: Runtime,
  endpoint: EndpointState,
  server: net.Server,
  target: SocketAddr,
  tracker: TaskTracker | null,
): boolean {
  const s = server as Server;
  const h = s._handle;
  if (h === null || typeof h.onconnection !== 'function' || s.keepAlive === true) return false;
  const a = s.address();
  const local =
    endpoint.localAddr ??
    (a !== null && typeof a === 'object' && a.address !== '0.0.0.0' && a.address !== '::'
      ? { host: a.address, port: a.port }
      : null);
  h[kRaw] = { rt, endpoint, server: s, target, local, original: h.onconnection, tracker };
  h.onconnection = onRawConnection;
  return true;
}

function onRawConnection(this: ListenHandle, err: number, handle?: RawTcpHandle): void {
  const st = this[kRaw] as RawAccept;
  const server = st.server;
  if (err !== 0 || handle === undefined || server.maxConnections != null || server.blockList != null) {
    st.original.call(this, err, handle);
    return;
  }
  if (server.noDelay === true) handle.setNoDelay?.(true);
  const out: { address?: string; port?: number } = {};
  handle.getpeername(out);
  const peer = { host: out.address ?? '', port: out.port ?? 0 };
  let local = st.local;
  if (local === null) {
    const l: { address?: string; port?: number } = {};
    (handle as RawTcpHandle & { getsockname(o: object): number }).getsockname(l);
    local = { host: l.address ?? '', port: l.port ?? 0 };
  }
  const rt = st.rt;
  const endpoint = st.endpoint;
  const conn = new IngressConnection(endpoint, { peer, local }, 'tcp', rt.ext);
  rt.connections.add(conn);
  const labels = { endpoint: endpoint.name };
  ingressMetrics.connections_total(labels).inc();
  ingressMetrics.connections_active(labels).inc();
  const ingress = new RawTcpIngress(st, handle);
  conn.abort = () => ingress.abort();
  // Accepted after the tracker closed (a drain racing the last accept): served, not awaited.
  const token = st.tracker === null || st.tracker.closed ? null : st.tracker.start();
  forkConnection(conn, () => serve(rt, conn, st.target, ingress, token));
}

function serve(
  rt: Runtime,
  conn: IngressConnection,
  target: SocketAddr,
  ingress: RawTcpIngress,
  token: TaskToken | null,
): void {
  conn.requests++;
  conn.tunnels++;
  const request = new RequestState(conn, 'tcp', 'TCP', target, rt.ext);
  void forkRequest(request, () => runStream(rt, request, ingress)).finally(() => {
    conn.tunnels--;
    ingress.end();
    if (conn.closed) return;
    conn.closed = true;
    rt.connections.delete(conn);
    ingressMetrics.connections_active({ endpoint: conn.endpoint.name }).dec();
    token?.done();
  });
}

/** An accepted handle as the stream runner sees it: the addon's client, or a socket made late. */
class RawTcpIngress implements StreamIngress, RawClient {
  readonly #st: RawAccept;
  #handle: RawTcpHandle | null;
  #socket: net.Socket | null = null;
  #run: RawTunnel | null = null;
  readonly fd: number;

  constructor(st: RawAccept, handle: RawTcpHandle) {
    this.#st = st;
    this.#handle = handle;
    this.fd = handle.fd;
  }

  get closed(): boolean {
    return this.#socket !== null ? this.#socket.destroyed : this.#handle === null;
  }

  /** The runner needs a socket after all: made from the handle as Node's accept makes it. */
  accept(): Duplex {
    if (this.#socket !== null) return this.#socket;
    const server = this.#st.server;
    const hwm = server.highWaterMark;
    const socket = new net.Socket({
      handle: this.#handle,
      allowHalfOpen: server.allowHalfOpen === true,
      readable: true,
      writable: true,
      ...(hwm === undefined ? {} : { readableHighWaterMark: hwm, writableHighWaterMark: hwm }),
    } as unknown as net.SocketConstructorOpts);
    this.#handle = null;
    server._connections++;
    (socket as net.Socket & { server: net.Server; _server: net.Server }).server = server;
    (socket as net.Socket & { _server: net.Server })._server = server;
    // Made while a connect is under way too (`clientStream`), before a carrier listens: a
    // reset then ends in 'close', which the connect's watch hears.
    socket.on('error', noop);
    this.#socket = socket;
    return socket;
  }

  /** The client as a socket (made now, as `accept` makes it), watched while the upstream connects. */
  clientStream(): Duplex | null {
    return this.#socket === null && this.#handle === null ? null : this.accept();
  }

  reject(): void {
    if (this.#socket !== null) {
      this.#socket.resetAndDestroy();
      return;
    }
    const h = this.#handle;
    this.#handle = null;
    if (h === null) return;
    // A reset tells a raw TCP client at once that nothing was forwarded (as onramp.ts does).
    if (typeof h.reset !== 'function' || h.reset(noop) !== 0) h.close();
  }

  spliceable(): SpliceableClient | null {
    if (this.#socket !== null)
      return this.#socket.writableLength > 0 ? null : { socket: this.#socket, early: null, head: NO_HEAD };
    if (this.#handle === null) return null;
    return { socket: null, raw: this, early: null, head: NO_HEAD };
  }

  closeHandle(): void {
    const h = this.#handle;
    this.#handle = null;
    h?.close();
  }

  track(run: RawTunnel): void {
    this.#run = run;
  }

  /** A drain's deadline: ends the tunnel (or the client) now. */
  abort(): void {
    if (this.#run !== null) this.#run.stop('client_reset');
    else if (this.#socket !== null) this.#socket.destroy();
    else this.closeHandle();
  }

  /** The unit ended: nothing of the client may stay open. */
  end(): void {
    this.#run = null;
    this.#socket?.destroy();
    this.closeHandle();
  }
}

function noop(): void {}
