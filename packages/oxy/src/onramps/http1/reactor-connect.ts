/**
 * Reactor accept for an `http` endpoint whose only JS work per connection is the CONNECT
 * policy: the addon's reactor thread accepts, reads each request head (packages/native/src/
 * accept-head.c), and for a complete CONNECT head with nothing after it asks JS. JS answers it
 * with today's code and order: the head parsed by the on-ramp's parser (`request-parser.ts`),
 * `serveConnect` (`handleProxyConnectRequest`, then the stream runner's `routeEgress`:
 * decision, DNS, `handleUpstreamIps`, `blocked_cidrs`). Where the runner takes the whole-tunnel
 * path, the listener connects, writes the 200 and carries the tunnel on the reactor thread
 * (`ReactorConnectExchange.connect`), and JS hears of its end in a batch of records, each
 * carrying the tunnel's id: the contexts made for the policy wait in a map until then, and the
 * runner finishes them as for any whole tunnel (metrics, audit record, `handleRequestEnd`). A
 * tunnel running 50 ms after its connect is adopted instead (the idle sweep, the lifetime).
 *
 * Everything else is served as if Node had accepted it (`adopt.ts`, the descriptor and the bytes
 * read): another method, early data, a slow or partial head, the HTTP/2 preface, a head the
 * on-ramp would refuse (it answers as today), and a refusal or a route the addon cannot carry
 * (the client becomes a socket and `Http1ConnectExchange` answers or tunnels it, as today). A
 * failed connect comes back with the client's descriptor and is answered 502 or 504.
 *
 * It applies when nothing needs the socket per connection: no TLS on the endpoint, no PROXY
 * protocol, no `IngressHook`, the whole-tunnel fast path (`rt.fast.wholeTunnel`) and splicing
 * on, the addon loaded, `OXY_REACTOR_ACCEPT` not `0`.
 *
 * Drain: closing the listening handle stops accepting; heads still being read are handed back
 * (and served, or closed by the drain as any connection); the tunnels the addon runs that JS has
 * not heard the end of are one entry of `rt.connections` and the restart tracker until their
 * records arrive, and each CONNECT JS decides is an entry of its own; a drain's deadline aborts
 * them.
 */
import type net from 'node:net';
import type { TaskToken, TaskTracker } from 'foundations/restart';
import type { SocketAddr } from '../../context/contexts.ts';
import type { EndpointState, IngressConnection } from '../../context/state.ts';
import { parseAuthority } from '../../flows/http/headers.ts';
import { type Native, native } from '../../flows/stream/native-addon.ts';
import type { RawTunnel } from '../../flows/stream/raw-tunnel.ts';
import type { Runtime } from '../../runtime.ts';
import { httpSettingsOf } from '../../settings.ts';
import { forkConnection } from '../../telemetry/fork.ts';
import { serveConnect } from '../../tunnels/connect.ts';
import { moveAccepting } from '../tcp/reactor-accept.ts';
import { endAccepted, takeAccepted } from '../tcp/reactor-accepted.ts';
import { adoptConnection } from './adopt.ts';
import { ReactorConnectExchange } from './reactor-connect-exchange.ts';
import { type ParsedHead, type RequestEvents, RequestParser, STOP_AFTER_HEAD } from './request-parser.ts';
import { headProblem } from './server.ts';

/** The pipe size a whole tunnel's long transfer reaches (the addon's default for `startTunnel`). */
const PIPE_SIZE = 1024 * 1024;
/** The longest the reactor thread reads a head before handing the connection back. */
const HEAD_DEADLINE_MS = 500;
/** onHeads' layout (src/accept-head.c). */
const HEAD_FIELDS = 6;
const HEAD_BACK = 1;
/** Record layout (src/accept.c). */
const FIELDS = 12;

/** What JS heard from the reactor thread (for tests): heads decided, handed back, tunnels ended. */
export const reactorConnectStats = { connects: 0, handedBack: 0, records: 0, adopted: 0 };

/** True when `endpoint` (an `http` endpoint without TLS) can be accepted in connect mode. */
export function connectAcceptApplies(rt: Runtime, endpoint: EndpointState, tls: boolean): boolean {
  return (
    native !== null &&
    process.env.OXY_REACTOR_ACCEPT !== '0' &&
    endpoint.settings.protocol === 'http' &&
    !tls &&
    rt.fast.reactorAccept &&
    endpoint.stream.splice &&
    endpoint.proxyProtocol === null
  );
}

/**
 * Moves `server`'s accepting for `endpoint` to the reactor thread in connect mode (see the top).
 * `tracker` is the restart lifecycle's connection tracker. False, nothing changed, when the
 * listening handle is not one this knows.
 */
export function takeConnectAccept(
  rt: Runtime,
  endpoint: EndpointState,
  server: net.Server,
  tracker: TaskTracker | null,
): boolean {
  const a = server.address();
  if (a === null || typeof a !== 'object') return false;
  const wildcard = a.address === '0.0.0.0' || a.address === '::';
  const local = wildcard ? null : (endpoint.localAddr ?? { host: a.address, port: a.port });
  const header = httpSettingsOf(endpoint.settings).header_read_timeout;
  const listener = new ConnectListener(rt, endpoint, server, local, tracker);
  return moveAccepting(server, listener, (fd) =>
    (native as Native).startConnectAccepting(listener, fd, {
      pipeSize: PIPE_SIZE,
      noDelay: (server as { noDelay?: boolean }).noDelay === true,
      wildcard,
      headTimeoutMs: header > 0 ? Math.min(header, HEAD_DEADLINE_MS) : HEAD_DEADLINE_MS,
      smartConnect: endpoint.smartConnect,
      endOnUpstreamEnd: endpoint.stream.endOnUpstreamEnd,
    }),
  );
}

/**
 * CONNECT authorities already parsed (`parseAuthority`'s answer, null included), so a client that
 * opens tunnels to the same few targets does not slice, test and lower-case the text each time.
 * Bounded: emptied when full. Each tunnel still gets its own target object.
 */
const authorities = new Map<string, { readonly host: string; readonly port: number } | null>();
const MAX_AUTHORITIES = 1024;

/** `parseAuthority(text)` through {@link authorities}: a new object each call. */
function targetOf(text: string): SocketAddr | null {
  let t = authorities.get(text);
  if (t === undefined) {
    t = parseAuthority(text);
    if (authorities.size >= MAX_AUTHORITIES) authorities.clear();
    authorities.set(text, t === null ? null : { host: t.host, port: t.port });
  }
  return t === null ? null : { host: t.host, port: t.port };
}

/** The head being parsed (the parser's receiver is shared: parsing is synchronous). */
let parsed: ParsedHead | null = null;
const CAPTURE: RequestEvents = {
  head(h: ParsedHead): number {
    parsed = h;
    return STOP_AFTER_HEAD;
  },
  body() {},
  end() {},
  executed() {},
};

/**
 * `bytes` as a CONNECT head the on-ramp would serve without a word (no 400, 417, 431 or 505:
 * those it answers itself when the connection is handed back), or null.
 */
function connectHead(bytes: Buffer, maxHeaderSize: number): ParsedHead | null {
  parsed = null;
  const p = new RequestParser(CAPTURE, maxHeaderSize);
  const r = p.execute(bytes);
  p.release();
  const h = parsed as ParsedHead | null;
  parsed = null;
  if (typeof r !== 'number' || r !== bytes.length || h === null || h.method !== 'CONNECT') return null;
  if (headProblem(Math.floor(h.version / 10), h.version % 10, h.rawHeaders) !== null) return null;
  // `Expect` on a CONNECT: the on-ramp's answer (417) or its rules, not this path's.
  for (let i = 0; i < h.rawHeaders.length; i += 2)
    if ((h.rawHeaders[i] as string).length === 6 && (h.rawHeaders[i] as string).toLowerCase() === 'expect')
      return null;
  return h;
}

/** The addon's connect-mode listener owner (`ConnectListenerOwner`). */
export class ConnectListener {
  readonly rt: Runtime;
  readonly endpoint: EndpointState;
  readonly #server: net.Server;
  readonly #local: SocketAddr | null;
  readonly #tracker: TaskTracker | null;
  readonly #labels: { endpoint: string };
  readonly #maxHeaderSize: number;
  /** Tunnels the addon runs for a CONNECT, by id, until their record or adoption. */
  readonly #tunnels = new Map<number, ReactorConnectExchange>();
  #nextId = 1;
  /** While stopped with heads or tunnels the addon still holds: their one entry in `rt.connections`. */
  #pending: { conn: IngressConnection; token: TaskToken | null } | null = null;
  /** The addon holds nothing more (stopped, `live` 0). */
  #addonDone = false;
  /**
   * Connections JS took on after the stop (heads handed back, CONNECTs decided), which the
   * restart tracker, closed by then, cannot count: the pending entry's token waits for them.
   */
  #afterStop = 0;
  stopped = false;

  constructor(
    rt: Runtime,
    endpoint: EndpointState,
    server: net.Server,
    local: SocketAddr | null,
    tracker: TaskTracker | null,
  ) {
    this.rt = rt;
    this.endpoint = endpoint;
    this.#server = server;
    this.#local = local;
    this.#tracker = tracker;
    this.#labels = { endpoint: endpoint.name };
    this.#maxHeaderSize = httpSettingsOf(endpoint.settings).max_header_size;
  }

  /** The listening handle closes: no more accepts; what the addon holds is held for a drain. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    // Held even when nothing is live now: the reactor thread may accept until it sees the stop,
    // and what it accepted comes back as heads, after the restart tracker closed. The addon's
    // last word (stopped, nothing live) always comes.
    const live = (native as Native).stopAccepting(this);
    // Not a connection: the drain's view of what the addon still holds.
    const conn = {
      protocol: 'http/1.1',
      socket: null,
      tunnels: Math.max(1, live),
      closeReason: 'client_closed',
      abort: () => (native as Native).abortAccepted(this),
    } as unknown as IngressConnection;
    const tracker = this.#tracker;
    this.#pending = { conn, token: tracker === null || tracker.closed ? null : tracker.start() };
    this.rt.connections.add(conn);
  }

  /** The addon's heads: CONNECTs to decide, connections handed back (see `ConnectListenerOwner`). */
  onHeads(n: Float64Array, bytes: Buffer, peers: string[], locals: string[] | null): void {
    for (let i = 0, o = 0, off = 0; i < peers.length; i++, o += HEAD_FIELDS) {
      const fd = n[o] as number;
      const len = n[o + 5] as number;
      const head = bytes.subarray(off, off + len);
      off += len;
      const peer = { host: peers[i] as string, port: n[o + 3] as number };
      const local = locals === null ? this.#local : { host: locals[i] as string, port: n[o + 4] as number };
      if (n[o + 1] === HEAD_BACK) this.#handBack(fd, head, peer, local);
      else this.#connect(fd, head, peer, local, n[o + 2] as number);
    }
  }

  #handBack(fd: number, bytes: Buffer, peer: SocketAddr, local: SocketAddr | null): void {
    reactorConnectStats.handedBack++;
    const socket = adoptConnection(this.rt, this.endpoint, this.#server, { fd, bytes, peer, local });
    if (this.#pending !== null) socket.once('close', this.#holdForDrain());
  }

  /** Counts a connection taken on after the stop; returns its release. */
  #holdForDrain(): () => void {
    this.#afterStop++;
    return () => {
      this.#afterStop--;
      this.#release();
    };
  }

  /** Lets the drain go once neither the addon nor JS holds anything from before the stop. */
  #release(): void {
    const p = this.#pending;
    if (p === null || !this.#addonDone || this.#afterStop > 0) return;
    this.#pending = null;
    this.rt.connections.delete(p.conn);
    p.token?.done();
  }

  /** A CONNECT head: today's policy, then the addon's tunnel or an answer in JS. */
  #connect(fd: number, bytes: Buffer, peer: SocketAddr, local: SocketAddr | null, sinceAccept: number): void {
    const head = connectHead(bytes, this.#maxHeaderSize);
    const target = head === null ? null : targetOf(head.url);
    if (head === null || target === null) {
      // The on-ramp answers it as it answers any head it refuses.
      (native as Native).releaseAccepted(this);
      this.#handBack(fd, bytes, peer, local);
      return;
    }
    reactorConnectStats.connects++;
    const rt = this.rt;
    const { conn, token } = takeAccepted(
      rt,
      this.endpoint,
      { peer, local: local ?? { host: '', port: 0 } },
      'http/1.1',
      sinceAccept,
      this.#labels,
      this.#tracker,
    );
    const held = token === null && this.#pending !== null ? this.#holdForDrain() : null;
    const ex = new ReactorConnectExchange(this, fd, head.url, head.rawHeaders);
    conn.abort = () => ex.abort();
    // The connection's end runs in the tunnel's own continuation (no second one per tunnel).
    forkConnection(conn, () => {
      void serveConnect(rt, conn, ex, target, () =>
        ex.whenClosed(() => {
          endAccepted(rt, conn, this.#labels, token);
          held?.();
        }),
      );
    });
  }

  /** Starts the addon's tunnel for `ex`; its end comes back by the returned id. */
  register(ex: ReactorConnectExchange): number {
    const id = this.#nextId++;
    this.#tunnels.set(id, ex);
    return id;
  }

  /** The addon's batch of tunnels that ended (see `ConnectListenerOwner.onConnectRecords`). */
  onConnectRecords(n: Float64Array, live: number, stopped: boolean): void {
    const count = n.length / FIELDS;
    reactorConnectStats.records += count;
    for (let i = 0, o = 0; i < count; i++, o += FIELDS) {
      const id = n[o + 10] as number;
      const ex = this.#tunnels.get(id);
      if (ex === undefined) continue;
      this.#tunnels.delete(id);
      ex.ended(
        n[o] as number,
        n[o + 1] as number,
        n[o + 2] as number,
        n[o + 3] as number,
        n[o + 4] as number,
        n[o + 5] as number,
        n[o + 11] as number,
      );
    }
    if (stopped && live === 0) {
      this.#addonDone = true;
      this.#release();
    }
  }

  /** A tunnel running 50 ms after its connect: adopted by its exchange. */
  onConnectTunnel(id: number): RawTunnel | null {
    const ex = this.#tunnels.get(id);
    if (ex === undefined) return null;
    this.#tunnels.delete(id);
    reactorConnectStats.adopted++;
    return ex.adopt();
  }
}
