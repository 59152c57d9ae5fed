/**
 * Reactor accept for a `tcp` endpoint whose every connection goes whole to one literal address
 * with nothing to decide per connection: the addon's reactor thread accepts, connects and
 * carries each connection itself (packages/native/src/accept.c), and JS hears of it once, when
 * it ends, as one record of a batch. That record becomes what the raw accept
 * (`raw-accept.ts`) and the stream runner would have made of the connection: the same contexts
 * (connection, request, egress: the app's `ext` factories run), the same decisions, metrics
 * and audit record, `handleRequestEnd`, in the same order. A connection that runs longer than
 * 50 ms after its connect is announced and adopted: from then on it is a raw-accepted
 * connection's tunnel (in `rt.connections`, counted by the restart tracker, the idle sweep
 * and the lifetime, the active-connections gauge).
 *
 * It applies when raw accept does (`rawAcceptApplies`) and, besides, the egress of every
 * connection is known at start-up: the default decision (no `EgressHook.handleConnection`, no
 * upstream proxy), no `handleUpstreamIps`, a literal target (no DNS) that `egress.blocked_cidrs`
 * does not block (a blocked one keeps the raw accept, which refuses each connection). Anything
 * else keeps raw accept.
 *
 * The listening socket stays the lifecycle's: the addon accepts on a duplicate, libuv stops
 * polling the original (a connection it still delivers goes the raw way), and closing the
 * listening handle (a drain, a restart's `stopAccepting`, `close`) stops the addon's accepting.
 * The tunnels JS has not heard of yet are then held in `rt.connections` and the restart
 * tracker as one entry until their records arrive; a drain's deadline aborts them.
 */
import net from 'node:net';
import type { TaskToken, TaskTracker } from 'foundations/restart';
import { log } from 'foundations/telemetry';
import { formatHostPort } from '../../context/addr.ts';
import type { SocketAddr } from '../../context/contexts.ts';
import { EgressState, type EndpointState, IngressConnection, RequestState } from '../../context/state.ts';
import { connectFailed, connectObserved, sourceFor } from '../../egress/connect.ts';
import { listeningFd } from '../../endpoints.ts';
import { clientReason, httpStatusFor } from '../../errors.ts';
import { type Native, native } from '../../flows/stream/native-addon.ts';
import type { PumpCloseReason } from '../../flows/stream/pump.ts';
import { type RawClient, RawTunnel } from '../../flows/stream/raw-tunnel.ts';
import {
  finishStream,
  finishWholeTunnel,
  refuseStream,
  type StreamIngress,
} from '../../flows/stream/runner.ts';
import type { SpliceConnectResult } from '../../flows/stream/splice.ts';
import { connectFailure } from '../../offramps/tcp/happy-eyeballs.ts';
import type { Runtime } from '../../runtime.ts';
import { forkConnection, forkRequest, forkRequestUntil } from '../../telemetry/fork.ts';
import { ingressMetrics, tunnelMetrics } from '../../telemetry/metrics.ts';
import { rawAcceptApplies } from './raw-accept.ts';
import { endAccepted, takeAccepted } from './reactor-accepted.ts';

/** The pipe size a whole tunnel's long transfer reaches (the addon's default for `startTunnel`). */
const PIPE_SIZE = 1024 * 1024;
/** Record layout (src/accept.c): numbers per record and their offsets. */
const FIELDS = 12;
const KIND_CONNECT = 2;
const KIND_ABORT = 3;
/** Tries to take the listening descriptor out of libuv's set before giving up. */
const UNPOLL_TRIES = 50;

/** Connections JS heard of from the reactor thread: ended (a record) or adopted (for tests). */
export const reactorAcceptStats = { records: 0, adopted: 0 };

type Server = net.Server & { _handle: ListenHandle | null; noDelay?: boolean };
interface ListenHandle {
  onconnection: (...args: unknown[]) => void;
  close(cb?: () => void): void;
}

/**
 * True when every connection of `endpoint` to `target` can be accepted on the reactor thread;
 * call only where raw accept applies (`rawAcceptApplies`).
 */
export function reactorAcceptApplies(rt: Runtime, target: SocketAddr): boolean {
  const family = net.isIP(target.host);
  // Without the addon the raw accept serves.
  return (
    native !== null &&
    process.env.OXY_REACTOR_ACCEPT !== '0' &&
    rt.fast.defaultEgress &&
    rt.fast.literalEgress &&
    rt.defaultProxy === null &&
    family !== 0 &&
    target.port !== 0 &&
    !rt.blocklist.has(target.host)
  );
}

/**
 * Drives the addon's reactor on the JS loop (`reactorMode('inline')`) when `endpoints` are all
 * `tcp` endpoints (`target`: a `tcp` endpoint's fixed target, null for any other endpoint)
 * whose connections the reactor accepts and carries whole: JS then has nothing to do per
 * connection, and one thread doing all of it, as HAProxy's and nginx's single loop do, keeps
 * its core where the reactor thread's sleeps and wake-ups had the scheduler stack the
 * proxy, the client and the upstream on one core of two (S6b: 5–7 % more connections per
 * second in three same-run comparisons, bench/analysis-l4.md). Any other endpoint (HTTP, UDP,
 * layer 3), or one whose connections JS sees, keeps the thread: there the JS thread's work and
 * the reactor's run on two cores. Call before any endpoint starts, once per process.
 */
export function chooseReactorMode(
  rt: Runtime,
  endpoints: readonly { readonly endpoint: EndpointState; readonly target: SocketAddr | null }[],
): void {
  if (native === null || endpoints.length === 0) return;
  const whole = endpoints.every(
    ({ endpoint, target }) =>
      target !== null && rawAcceptApplies(rt, endpoint, target) && reactorAcceptApplies(rt, target),
  );
  if (!whole) return;
  const mode = native.reactorMode('inline');
  log.debug('reactor on the JS loop: every endpoint is carried whole by the addon', { mode });
}

/**
 * Moves `server`'s accepting to the reactor thread for `endpoint` (see the top); call after
 * `takeRawAccept`, which serves what libuv still delivers. False, nothing changed, when the
 * listening handle is not one this knows.
 */
export function takeReactorAccept(
  rt: Runtime,
  endpoint: EndpointState,
  server: net.Server,
  target: SocketAddr,
  tracker: TaskTracker | null,
): boolean {
  const s = server as Server;
  const a = s.address();
  if (listeningFd(server) === null || a === null || typeof a !== 'object') return false;
  const wildcard = a.address === '0.0.0.0' || a.address === '::';
  const local = wildcard ? null : (endpoint.localAddr ?? { host: a.address, port: a.port });
  const n = native as Native;
  const listener = new ReactorListener(rt, endpoint, target, local, tracker);
  return moveAccepting(server, listener, (fd) =>
    n.startAccepting(listener, fd, {
      ip: target.host,
      port: target.port,
      sourceIp: sourceFor(rt, target.host) ?? '',
      timeoutMs: rt.settings.egress.connect_timeout,
      pipeSize: PIPE_SIZE,
      noDelay: s.noDelay === true,
      wildcard,
      smartConnect: endpoint.smartConnect,
      endOnUpstreamEnd: endpoint.stream.endOnUpstreamEnd,
    }),
  );
}

/** A reactor-thread listener's JS owner, as {@link moveAccepting} drives it. */
export interface MovedListener {
  readonly stopped: boolean;
  /** The listening handle closes: stop the addon's accepting. */
  stop(): void;
}

/**
 * Moves `server`'s accepting to the addon's reactor thread: `start(fd)` starts the addon's
 * listener on the listening descriptor; libuv then stops polling it (a connection it still
 * delivers is served the usual way), and closing the listening handle stops `listener`. False,
 * nothing changed, when the handle is not one this knows or `start` throws.
 */
export function moveAccepting(
  server: net.Server,
  listener: MovedListener,
  start: (fd: number) => void,
): boolean {
  const h = (server as Server)._handle;
  const fd = listeningFd(server);
  if (h === null || fd === null) return false;
  const n = native as Native;
  try {
    start(fd);
  } catch {
    return false; // e.g. out of descriptors for the duplicate: the raw accept serves
  }
  // libuv registers the descriptor on its next poll: until it is out of libuv's set, both
  // threads are woken, and a connection JS accepts takes the raw way.
  let tries = 0;
  const unpoll = (): void => {
    if (listener.stopped || n.unpollListener(fd) || ++tries >= UNPOLL_TRIES) return;
    setImmediate(unpoll).unref();
  };
  setImmediate(unpoll).unref();
  const onconnection = h.onconnection;
  h.onconnection = function (this: ListenHandle, ...args: unknown[]): void {
    if (!listener.stopped) n.unpollListener(fd);
    onconnection.apply(this, args);
  };
  const close = h.close;
  h.close = function (this: ListenHandle, cb?: () => void): void {
    listener.stop();
    close.call(this, cb);
  };
  return true;
}

/** A client that never had a handle in JS: the reactor accepted it and owns its descriptor. */
const ADOPTED: RawClient = { fd: -1, closeHandle() {}, track() {} };

/** A refused connection's client: the addon reset it already. */
const RESET: StreamIngress = {
  closed: true,
  accept: () => {
    throw new Error('unreachable');
  },
  reject() {},
};

/** The addon's listener owner: turns records into the contexts, metrics and audit records. */
class ReactorListener {
  readonly #rt: Runtime;
  readonly #endpoint: EndpointState;
  readonly #target: SocketAddr;
  readonly #upstream: string;
  readonly #local: SocketAddr | null;
  readonly #tracker: TaskTracker | null;
  readonly #labels: { endpoint: string };
  /** While stopped with tunnels JS has not heard of: their one entry in `rt.connections`. */
  #pending: { conn: IngressConnection; token: TaskToken | null } | null = null;
  /**
   * A drain's deadline aborted the tunnels the addon still ran unannounced. One the reactor
   * thread announced just before (its note on the way to JS) was not among them, and reaches
   * `onTunnel` after the drain's round of aborts: it is ended there.
   */
  #abortedAll = false;
  /**
   * Nothing could see a record's contexts: no audit, no `handleRequestEnd`, no `ext` factory
   * (and, checked per batch, DEBUG off: failures are logged there). A record is then only its
   * metrics, counted as `#ended` counts them, without the objects.
   */
  readonly #lean: boolean;
  stopped = false;

  constructor(
    rt: Runtime,
    endpoint: EndpointState,
    target: SocketAddr,
    local: SocketAddr | null,
    tracker: TaskTracker | null,
  ) {
    this.#rt = rt;
    this.#endpoint = endpoint;
    this.#target = target;
    this.#upstream = formatHostPort(target.host, target.port);
    this.#local = local;
    this.#tracker = tracker;
    this.#labels = { endpoint: endpoint.name };
    const x = rt.ext;
    this.#lean =
      !rt.audit.enabled &&
      rt.hooks.requestEnd === null &&
      x.ingress === null &&
      x.request === null &&
      x.egress === null;
  }

  /** The listening handle closes: no more accepts; what runs is held for a drain. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    const live = (native as Native).stopAccepting(this);
    if (live === 0) return;
    const rt = this.#rt;
    // Not a connection: the drain's view of the tunnels the addon still runs unannounced.
    const conn = {
      protocol: 'tcp',
      socket: null,
      tunnels: live,
      closeReason: 'client_closed',
      abort: () => {
        this.#abortedAll = true;
        (native as Native).abortAccepted(this);
      },
    } as unknown as IngressConnection;
    const tracker = this.#tracker;
    this.#pending = { conn, token: tracker === null || tracker.closed ? null : tracker.start() };
    rt.connections.add(conn);
  }

  /** The addon's batch of connections that ended (see `ListenerOwner.onRecords`). */
  onRecords(n: Float64Array, peers: string[], locals: string[] | null, live: number, stopped: boolean): void {
    const now = performance.now();
    reactorAcceptStats.records += peers.length;
    if (this.#lean && !log.enabled('DEBUG')) this.#counted(n, peers.length);
    else
      for (let i = 0, o = 0; i < peers.length; i++, o += FIELDS) {
        const peer = { host: peers[i] as string, port: n[o + 8] as number };
        const local =
          locals === null
            ? (this.#local as SocketAddr)
            : { host: locals[i] as string, port: n[o + 9] as number };
        this.#ended(now, peer, local, n, o);
      }
    const p = this.#pending;
    if (p !== null && stopped && live === 0) {
      this.#pending = null;
      this.#rt.connections.delete(p.conn);
      p.token?.done();
    }
  }

  /** `count` records of a lean listener: the metrics `#ended` would count, and nothing else. */
  #counted(n: Float64Array, count: number): void {
    const t = this.#target;
    const endpoint = this.#endpoint.name;
    const up = tunnelMetrics.bytes_total({ endpoint, kind: 'tcp', direction: 'up' });
    const down = tunnelMetrics.bytes_total({ endpoint, kind: 'tcp', direction: 'down' });
    const duration = tunnelMetrics.duration_seconds({ endpoint, kind: 'tcp' });
    ingressMetrics.connections_total(this.#labels).inc(count);
    for (let i = 0, o = 0; i < count; i++, o += FIELDS) {
      if (n[o] === KIND_CONNECT) {
        const timeout = this.#rt.settings.egress.connect_timeout;
        const error = connectFailure(
          t.host,
          t.port,
          (native as Native).errnoName(n[o + 3] as number),
          timeout,
        );
        connectFailed(error.code); // its only count: a tcp endpoint answers no HTTP
        continue;
      }
      const connectMs = n[o + 5] as number;
      if (connectMs >= 0) connectObserved(performance.now() - connectMs);
      up.inc(n[o + 1] as number);
      down.inc(n[o + 2] as number);
      duration.observe(((n[o + 6] as number) - (n[o + 7] as number)) / 1000);
    }
  }

  /** One connection JS never saw running: its contexts, metrics and audit record, at once. */
  #ended(now: number, peer: SocketAddr, local: SocketAddr, n: Float64Array, o: number): void {
    const rt = this.#rt;
    const conn = new IngressConnection(this.#endpoint, { peer, local }, 'tcp', rt.ext);
    (conn as { startedAt: number }).startedAt = now - (n[o + 6] as number);
    ingressMetrics.connections_total(this.#labels).inc();
    forkConnection(conn, () => {
      conn.requests++;
      const request = new RequestState(conn, 'tcp', 'TCP', this.#target, rt.ext);
      (request as { startedAt: number }).startedAt = conn.startedAt;
      // Records wait in the addon up to a few ms to go in batches: the end is when it was.
      request.endedAt = now - (n[o + 7] as number);
      forkRequest(request, () => this.#report(request, n, o));
      conn.closed = true;
    });
  }

  #report(request: RequestState, n: Float64Array, o: number): void {
    const rt = this.#rt;
    const kind = n[o] as number;
    new EgressState(request.ingress, request, request.target, rt.ext);
    request.decisions.push('egress:direct');
    if (kind === KIND_CONNECT) {
      const t = this.#target;
      const error = connectFailure(
        t.host,
        t.port,
        (native as Native).errnoName(n[o + 3] as number),
        rt.settings.egress.connect_timeout,
      );
      connectFailed(error.code);
      refuseStream(rt, request, RESET, httpStatusFor(error), clientReason(error), error.code);
      return;
    }
    request.upstream = this.#upstream;
    request.connectedAt = request.startedAt;
    // Ended while connecting (a drain's deadline, the client gone): never connected, no 200.
    const connectMs = n[o + 5] as number;
    if (connectMs >= 0) {
      request.status = 200;
      connectObserved(performance.now() - connectMs);
    }
    let reason: PumpCloseReason | 'done' = 'done';
    if (kind === KIND_ABORT) {
      reason = 'client_reset';
      request.ingress.closeReason = 'drained';
    } else if (kind !== 0) {
      const side = n[o + 4];
      reason = side === 0 ? 'client_error' : side === 1 ? 'upstream_error' : 'aborted';
    }
    finishWholeTunnel(rt, request, n[o + 1] as number, n[o + 2] as number, reason);
  }

  /**
   * The addon's announcement of a tunnel running 50 ms after its connect: from now on a raw
   * accepted connection's (`raw-accept.ts`), whose owner is returned for the addon to wrap.
   */
  onTunnel(
    host: string,
    port: number,
    localHost: string | null,
    localPort: number,
    sinceAccept: number,
  ): RawTunnel {
    const rt = this.#rt;
    const endpoint = this.#endpoint;
    reactorAcceptStats.adopted++;
    const local = localHost === null ? (this.#local as SocketAddr) : { host: localHost, port: localPort };
    const { conn, token } = takeAccepted(
      rt,
      endpoint,
      { peer: { host, port }, local },
      'tcp',
      sinceAccept,
      this.#labels,
      this.#tracker,
    );
    let run: RawTunnel | null = null;
    forkConnection(conn, () => {
      conn.requests++;
      conn.tunnels++;
      const request = new RequestState(conn, 'tcp', 'TCP', this.#target, rt.ext);
      (request as { startedAt: number }).startedAt = conn.startedAt;
      // One chain of continuations per idle tunnel, as `serveConnect`'s.
      void forkRequestUntil(
        request,
        () => {
          new EgressState(conn, request, request.target, rt.ext);
          request.decisions.push('egress:direct');
          request.upstream = this.#upstream;
          request.connectedAt = request.startedAt;
          return new Promise<SpliceConnectResult>((resolve) => {
            // Made here, not a variable of the scope, so it goes once the tunnel reported it.
            const connected = (connectMs: number): void => {
              connectObserved(performance.now() - connectMs);
              request.status = 200;
            };
            run = new RawTunnel(ADOPTED, 0, endpoint.stream, connected, resolve);
            run.adopt();
          }).then((r) => finishStream(rt, request, r.bytesUp, r.bytesDown, r.reason));
        },
        (): void => {
          conn.tunnels--;
          endAccepted(rt, conn, this.#labels, token);
        },
      );
    });
    const tunnel = run as unknown as RawTunnel;
    conn.abort = () => tunnel.stop('client_reset');
    // Announced as the drain's deadline aborted the rest: ended as they were. Not before the
    // addon has wrapped the tunnel into the owner returned here (after this call, and after the
    // microtasks that run as it returns): on the next turn of the loop, unless it ended since.
    if (this.#abortedAll) setImmediate(() => conn.closed || tunnel.stop('client_reset'));
    return tunnel;
  }
}
