/**
 * The on-ramp of a `tcp` endpoint: every accepted connection is a stream unit to a fixed target
 * (`endpoints.<name>.tcp.target`), to the destination a PROXY protocol header names, or to
 * wherever `EgressHook.handleConnection` sends it. It brings nothing of its own beyond that: the
 * stream runner carries it with the same egress, DNS, blocklist, upstream proxy, splice (or the
 * addon's whole tunnel), metrics and audit record as a CONNECT tunnel.
 *
 * Order: `IngressHook.handleConnection` (at accept) → [PROXY header read, `ProxyProtocolHook`]
 * → the stream runner (egress → connect → `getAppTunnelPipeline` → carry) → audit record
 * (`tunnel`) → `IngressHook.handleConnectionClose`.
 *
 * A connection the runner refuses (blocked, unreachable) is reset: a raw TCP client has no
 * status line to read, and a reset tells it at once that nothing was forwarded.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { NO_TARGET } from '../../context/addr.ts';
import type { SocketAddr } from '../../context/contexts.ts';
import { type IngressConnection, RequestState } from '../../context/state.ts';
import { runStream, type SpliceableClient, type StreamIngress } from '../../flows/stream/runner.ts';
import type { Runtime } from '../../runtime.ts';
import type { TcpEndpointSettings } from '../../settings.ts';
import { forkRequest } from '../../telemetry/fork.ts';
import type { SocketOnRamp } from '../ingress.ts';

const NO_HEAD = Buffer.alloc(0);

function noop(): void {}

/** The on-ramp of a `tcp` endpoint with `settings`. */
export function createTcpOnRamp(rt: Runtime, settings: TcpEndpointSettings): SocketOnRamp {
  const fixed = settings.tcp.target;
  return {
    protocol: 'tcp',
    startsReading: true,
    serve(socket: net.Socket, conn: IngressConnection): void {
      void serveTcp(rt, conn, socket, fixed ?? headerDestination(conn) ?? NO_TARGET, null);
    },
  };
}

/** The destination a PROXY header names, when the connection had one with addresses. */
function headerDestination(conn: IngressConnection): SocketAddr | null {
  const a = conn.proxyHeader?.addresses;
  return a === undefined || a === null || a.family === 'unix' ? null : a.destination;
}

/**
 * Runs one `tcp` connection to `target` through the stream runner; `early` holds bytes already
 * read past a PROXY header. Never throws.
 */
export function serveTcp(
  rt: Runtime,
  conn: IngressConnection,
  socket: net.Socket,
  target: SocketAddr,
  early: Buffer | null,
): Promise<void> {
  conn.requests++;
  conn.tunnels++;
  const request = new RequestState(conn, 'tcp', 'TCP', target, rt.ext);
  // Nothing is read from the client until the upstream is connected (or the addon takes it).
  socket.pause();
  // Nobody else listens while the upstream connects: a client's reset then is an 'error' that
  // would be uncaught (the process's end). It ends in 'close', which the runner hears.
  socket.on('error', noop);
  return forkRequest(request, () => runStream(rt, request, new TcpIngress(socket, early))).finally(() => {
    conn.tunnels--;
  });
}

/** A raw TCP client as the stream runner sees it: no answer to write, a reset to refuse. */
class TcpIngress implements StreamIngress {
  readonly #socket: net.Socket;
  readonly #early: Buffer | null;

  constructor(socket: net.Socket, early: Buffer | null) {
    this.#socket = socket;
    this.#early = early;
  }

  get closed(): boolean {
    return this.#socket.destroyed;
  }

  accept(): Duplex {
    if (this.#early !== null) this.#socket.unshift(this.#early);
    return this.#socket;
  }

  reject(): void {
    this.#socket.resetAndDestroy();
  }

  clientStream(): Duplex {
    return this.#socket;
  }

  spliceable(): SpliceableClient | null {
    return this.#socket.writableLength > 0
      ? null
      : { socket: this.#socket, early: this.#early, head: NO_HEAD };
  }
}
