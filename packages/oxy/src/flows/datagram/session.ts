/**
 * The datagram runner: the one pipeline every datagram session goes through, whatever on-ramp
 * produced it (a `udp` endpoint's client, with or without a PROXY header; later CONNECT-UDP and
 * upgraded UDP flows). An on-ramp makes a session per client, feeds it the client's datagrams
 * and gives it a way to reply ({@link DatagramIngress}); the session does the rest: the ingress
 * decision, the egress route (decision, DNS, `handleUpstreamIps`, `blocked_cidrs`), a connected
 * upstream UDP socket of its own, `DatagramHook.handleDatagram` both ways, counts, and at the
 * end metrics, one `udp_session` audit record and `IngressHook.handleConnectionClose`.
 *
 * Order: `IngressHook.handleConnection` → `EgressHook.handleConnection` → resolution →
 * `handleUpstreamIps` → blocklist → upstream socket → `handleConnectionEstablished` → datagrams
 * (`handleDatagram`) → end (idle, drain, shutdown) → audit → `handleConnectionClose`.
 *
 * States: `opening` (datagrams wait in a small bounded queue), `open`, `refused` (the ingress or
 * egress said no: datagrams are dropped and counted until the session idles out, so a refused
 * client costs one record per idle period, not one per datagram), `closed`.
 *
 * Timers: none per session. The on-ramp sweeps its sessions for idleness, reading `lastActive`,
 * which is set from the time its caller read once per received batch. Counts reach the metrics
 * each second (`counts.ts`).
 *
 * Several addresses (a name, or a hook's list): the session uses the first one the kernel
 * accepts. Until a reply comes, an ICMP report that it does not serve (`ECONNREFUSED`,
 * `EHOSTUNREACH`, `ENETUNREACH`) moves the session to the next address, with a new upstream
 * socket, and the last datagram sent (kept only while this can happen, for the first
 * `MAX_KEPT` datagrams) is sent again there. After the first reply, or on the last address,
 * such reports are only counted.
 *
 * Too large: a datagram longer than `maxDatagram` (the endpoint's `max_datagram_size`) is
 * dropped and counted as `udp_dropped_total{reason="too_large"}`, never in the forwarded counts:
 * a reply by the upstream socket's read, a client's by the on-ramp's, a rewrite here.
 *
 * A session can also carry a request its on-ramp made (CONNECT-UDP: `options.request`, kind
 * `connect-udp`): the connection and its hooks are then the on-ramp's, so the session skips the
 * PROXY-header and ingress hooks, leaves `conn.requests` and `conn.closeReason` alone and does
 * not call `handleConnectionClose`; client datagrams come as bytes (`fromClientData`), and the
 * on-ramp waits for `opened` before answering the client (a refusal's error gives its status).
 */
import type { UdpBatch, UdpSocket } from 'native';
import { formatHostPort } from '../../context/addr.ts';
import type { SocketAddr } from '../../context/contexts.ts';
import type { IngressConnection } from '../../context/state.ts';
import { EgressState, RequestState } from '../../context/state.ts';
import { connectFailed, connectObserved, established, routeEgress } from '../../egress/connect.ts';
import { type DatagramPackets, noPacketPath } from '../../egress/packets.ts';
import { appUdpUpstream, connectUdp, UNREACHABLE } from '../../egress/udp.ts';
import { httpStatusFor, isOxyError, OXY_ERR, OxyError } from '../../errors.ts';
import type { DatagramVerdict } from '../../hooks/datagram.ts';
import type { IngressDecision } from '../../hooks/ingress.ts';
import type { Runtime } from '../../runtime.ts';
import { forkConnection, forkRequest, inConnectionContext } from '../../telemetry/fork.ts';
import { datagramMetrics } from '../../telemetry/metrics.ts';
import { recordEnd } from '../record.ts';
import { SessionCounts, track, untrack } from './counts.ts';

/** How an on-ramp answers a session's client. */
export interface DatagramIngress {
  /** Sends one datagram to the client (behind the on-ramp's header form, if it has one). */
  reply(data: Uint8Array): void;
  /**
   * Sends every datagram of an upstream batch to the client, unchanged: the fast path when no
   * hook sees datagrams (one sendmmsg for the batch when the on-ramp has no header to add).
   */
  replyBatch(batch: UdpBatch): void;
  /** The session ended: the on-ramp forgets it. */
  ended(session: DatagramSession): void;
  /**
   * The largest reply payload the client can be sent (its family's largest UDP payload, less the
   * on-ramp's header); a longer reply is dropped as `too_large`. Default: no limit.
   */
  readonly replyRoom?: number;
}

/** The state of a session (see the module comment). */
export type SessionState = 'opening' | 'open' | 'refused' | 'closed';

/** How a session's opening ended: open, or refused (or closed first) with the error why. */
export type SessionOutcome = { readonly open: true } | { readonly open: false; readonly error: unknown };

/** Options of a {@link DatagramSession}. */
export interface DatagramSessionOptions {
  /**
   * The request the session carries, made by an on-ramp that already ran the connection's hooks
   * and the request's own (CONNECT-UDP). Without it the session is its own connection's only
   * request (a `udp` endpoint's client) and makes a `udp` request itself.
   */
  readonly request?: RequestState | undefined;
}

const NO_SKIP = Object.freeze({});

/** Datagrams held while a session opens; more are dropped (UDP's answer to a full queue). */
const MAX_PENDING = 64;

/** Datagrams up of which the last is kept for a move to the next address (see the module comment). */
const MAX_KEPT = 64;

/** One client's datagram session. */
export class DatagramSession {
  readonly conn: IngressConnection;
  readonly request: RequestState;
  state: SessionState = 'opening';
  /** `performance.now()` of the last datagram either way (set from the caller's batch time). */
  lastActive: number;
  /** What the session forwarded, both ways. */
  readonly counts: SessionCounts;
  readonly #rt: Runtime;
  readonly #ingress: DatagramIngress;
  readonly #maxDatagram: number;
  #upstream: UdpSocket | null = null;
  /**
   * The addresses the session may still move to (built-in socket only): null once a reply came,
   * or when there are none left.
   */
  #fallback: readonly string[] | null = null;
  #upstreamPort = 0;
  /** The last datagram sent up while a move can happen, to send again after one. */
  #lastUp: Buffer | null = null;
  #kept = 0;
  /** The way out as IP packets instead of a socket (`EgressDecision.packets`, IP tunnels only). */
  #packets: DatagramPackets | null = null;
  #pending: Buffer[] | null = null;
  #reason = 'idle_timeout';
  /** True when the session is its connection's only unit (a `udp` endpoint's client). */
  readonly #ownsConnection: boolean;
  #settle: ((outcome: SessionOutcome) => void) | null = null;
  /**
   * Resolves once the session is `open` or refused (or closed while opening): an on-ramp that
   * answers its client (CONNECT-UDP) waits for it, so a blocked or unresolvable target is
   * refused before any datagram is sent.
   */
  readonly opened: Promise<SessionOutcome>;

  constructor(
    rt: Runtime,
    conn: IngressConnection,
    target: { host: string; port: number },
    ingress: DatagramIngress,
    now: number,
    maxDatagram: number,
    options: DatagramSessionOptions = {},
  ) {
    this.#rt = rt;
    this.#maxDatagram = maxDatagram;
    this.conn = conn;
    this.#ingress = ingress;
    this.lastActive = now;
    this.opened = new Promise((resolve) => {
      this.#settle = resolve;
    });
    this.#ownsConnection = options.request === undefined;
    if (options.request === undefined) conn.requests = 1;
    this.request = options.request ?? new RequestState(conn, 'udp', 'UDP', target, rt.ext);
    datagramMetrics.sessions_total({ endpoint: conn.endpoint.name }).inc();
    datagramMetrics.sessions_active({ endpoint: conn.endpoint.name }).inc();
    this.counts = new SessionCounts(conn.endpoint.name);
    track(this.counts);
    // An on-ramp's request is already in its telemetry context (the on-ramp forked it).
    if (this.#ownsConnection) forkConnection(conn, () => forkRequest(this.request, () => void this.#start()));
    else void this.#start();
  }

  /**
   * A datagram from the client as bytes (a CONNECT-UDP DATAGRAM capsule's payload), received
   * at `now`. The bytes are copied if they must wait for the session to open.
   */
  fromClientData(data: Uint8Array, now: number): void {
    this.lastActive = now;
    if (this.state === 'open') {
      this.#sendUp(data);
      return;
    }
    if (this.state === 'opening') {
      this.#pending ??= [];
      if (this.#pending.length < MAX_PENDING) this.#pending.push(Buffer.from(data));
      else this.#drop('session_opening');
      return;
    }
    this.#drop(this.state === 'refused' ? 'refused' : 'closed');
  }

  /**
   * Datagrams `start` to `end - 1` of `batch`, all from the client, each without its first
   * `skip` bytes, received at `now`: sent up in one system call when nothing needs them one by
   * one (no datagram hook, no off-ramp, no address move pending), else each as `fromClient`.
   */
  fromClientRun(batch: UdpBatch, start: number, end: number, now: number, skip = 0): void {
    if (
      this.state !== 'open' ||
      this.#packets !== null ||
      this.#fallback !== null ||
      this.#rt.hooks.datagram !== null ||
      end - start === 1
    ) {
      for (let i = start; i < end; i++) this.fromClient(batch, i, now, skip);
      return;
    }
    this.lastActive = now;
    let bytes = 0;
    for (let i = start; i < end; i++) bytes += batch.length(i);
    this.counts.datagramsUp += end - start;
    this.counts.bytesUp += bytes - (end - start) * skip;
    (this.#upstream as UdpSocket).sendRange(batch, start, end, null, skip);
  }

  /**
   * A datagram from the client: `batch` datagram `i` without its first `skip` bytes (a PROXY
   * header the on-ramp parsed), received at `now`.
   */
  fromClient(batch: UdpBatch, i: number, now: number, skip = 0): void {
    this.lastActive = now;
    const n = batch.length(i) - skip;
    if (this.state === 'open' && this.#packets !== null) {
      this.#sendUp(batch.payload(i).subarray(skip));
      return;
    }
    if (this.state === 'open') {
      const up = this.#upstream as UdpSocket;
      const hook = this.#rt.hooks.datagram;
      if (hook === null) {
        this.counts.datagramsUp++;
        this.counts.bytesUp += n;
        up.sendFrom(batch, i, null, skip === 0 ? NO_SKIP : { skip });
        if (this.#fallback !== null) this.#keep(batch.payload(i).subarray(skip));
        return;
      }
      const out = this.#verdict(hook, batch.payload(i).subarray(skip), 'up');
      if (out === null) return;
      this.counts.datagramsUp++;
      this.counts.bytesUp += out.length;
      up.send(out);
      if (this.#fallback !== null) this.#keep(out);
      return;
    }
    if (this.state === 'opening') {
      this.#pending ??= [];
      if (this.#pending.length < MAX_PENDING)
        this.#pending.push(Buffer.from(batch.payload(i).subarray(skip)));
      else this.#drop('session_opening');
      return;
    }
    this.#drop(this.state === 'refused' ? 'refused' : 'closed');
  }

  /** Ends the session now with `reason` (idle, drain, shutdown); idempotent. */
  close(reason: string): void {
    if (this.state === 'closed') return;
    this.#reason = this.state === 'refused' ? this.#reason : reason;
    this.state = 'closed';
    this.#settled({ open: false, error: new OxyError(OXY_ERR.CLIENT_CLOSED, `session closed: ${reason}`) });
    this.#upstream?.close();
    this.#upstream = null;
    this.#fallback = null;
    this.#lastUp = null;
    this.#packets?.close();
    this.#packets = null;
    this.#pending = null;
    inConnectionContext(this.conn, () => this.#finish());
  }

  #settled(outcome: SessionOutcome): void {
    const settle = this.#settle;
    this.#settle = null;
    settle?.(outcome);
  }

  async #start(): Promise<void> {
    const hooks = this.#rt.hooks;
    const connectionHooks =
      this.#ownsConnection &&
      ((this.conn.proxyHeader !== null && hooks.proxyProtocolConnection !== null) ||
        hooks.ingressConnection !== null);
    // Without hooks to wait for, the route runs in this turn: a session whose route needs no
    // lookup opens synchronously, and the rest of its first batch goes straight upstream.
    if (connectionHooks) {
      await this.#connectionHooks();
      if (this.state !== 'opening') return;
    }
    await this.#route();
  }

  /** The PROXY-header and ingress hooks of a session that is its connection's only unit. */
  async #connectionHooks(): Promise<void> {
    const rt = this.#rt;
    const header = this.conn.proxyHeader;
    const pp = rt.hooks.proxyProtocolConnection;
    if (header !== null && pp !== null) {
      const hook = 'ProxyProtocolHook.handleConnection';
      if (!(await this.#admitted('proxy_protocol', hook, () => pp(header, this.conn)))) return;
    }
    const ingress = rt.hooks.ingressConnection;
    if (ingress !== null)
      await this.#admitted('ingress', 'IngressHook.handleConnection', () => ingress(this.conn));
  }

  /**
   * Runs one connection hook: true when it allows; otherwise the session is refused and its
   * record lists `<by>:block` or `<by>:failed`, as a stream connection's does (`onramps/ingress.ts`).
   */
  async #admitted(
    by: 'proxy_protocol' | 'ingress',
    hook: string,
    run: () => IngressDecision | Promise<IngressDecision>,
  ): Promise<boolean> {
    let d: IngressDecision;
    try {
      d = await run();
    } catch (e) {
      this.request.decisions.push(`${by}:failed`);
      this.#refuse(500, 'OXY_ERR_HOOK_FAILED', this.#rt.hookFailed(hook, e));
      return false;
    }
    if (d === undefined || d.kind !== 'block') return true;
    this.request.decisions.push(`${by}:block`);
    this.#refuse(403, 'blocked', blockedBy(hook), d.reason);
    return false;
  }

  /** The egress route and the upstream socket; the session is `open` after it, or refused. */
  async #route(): Promise<void> {
    const rt = this.#rt;
    const eg = new EgressState(this.conn, this.request, this.request.target, rt.ext);
    const started = performance.now();
    let routed = false; // routeEgress counts its own failures in egress_connect_failed_total
    try {
      const r = routeEgress(rt, eg, this.request.decisions, 'udp');
      const route = r instanceof Promise ? await r : r;
      routed = true;
      if (route.kind === 'viaProxy') throw new TypeError('unreachable: UDP routes are direct or packets');
      if (this.state !== 'opening') return;
      // Where the datagrams go, and how the session lets go of it at the end.
      let remote: SocketAddr;
      let destroy: () => void;
      if (route.kind === 'packets') {
        const open = route.path.openDatagrams;
        if (open === undefined) throw noPacketPath('EgressDecision.packets: this flow carries a stream');
        const packets = open(route.addr, (data) => this.#fromPackets(data));
        this.#packets = packets;
        remote = route.addr;
        destroy = () => packets.close();
      } else {
        const app =
          rt.hooks.udpConnectOverride === null
            ? null
            : await appUdpUpstream(rt, eg, route.ips, route.port, (data) => this.#fromPackets(data));
        if (app !== null) {
          // The app's socket: its datagrams go and come as an off-ramp's do, one at a time.
          this.#packets = app.channel;
          remote = app.remote;
          destroy = () => app.channel.close();
        } else {
          const udp = connectUdp(rt, route.ips, route.port, this.#maxDatagram);
          this.#upstream = udp.socket;
          this.#upstreamPort = route.port;
          this.#fallback = udp.rest.length > 0 ? udp.rest : null;
          remote = udp.remote;
          destroy = () => udp.socket.close();
        }
      }
      this.request.upstream = formatHostPort(remote.host, remote.port);
      connectObserved(started);
      established(rt, eg, { destroy }, remote);
    } catch (e) {
      this.#upstream?.close();
      this.#upstream = null;
      this.#packets?.close();
      this.#packets = null;
      if (routed && !(e instanceof TypeError)) connectFailed(isOxyError(e) ? e.code : 'unknown');
      this.#refuse(httpStatusFor(e), isOxyError(e) ? e.code : 'error', e);
      return;
    }
    if (this.state !== 'opening') {
      this.#upstream?.close();
      this.#packets?.close();
      return;
    }
    this.request.status = 200;
    this.state = 'open';
    this.#settled({ open: true });
    if (this.#upstream !== null) this.#attach(this.#upstream);
    const pending = this.#pending;
    this.#pending = null;
    if (pending !== null) for (const d of pending) this.#sendUp(d);
  }

  /** Reads replies and errors of the session's upstream socket `up`. */
  #attach(up: UdpSocket): void {
    up.onBatch((batch) => this.#fromUpstream(batch));
    up.onTruncated((n) => this.#drop('too_large', n));
    up.onError((e) => {
      // An ICMP error for the upstream (port unreachable): counted; the session goes on, as a
      // UDP flow would, until it idles out, on its next address if nothing answered yet.
      const code = e.errnoName || e.code;
      datagramMetrics.upstream_errors_total({ endpoint: this.conn.endpoint.name, code }).inc();
      if (this.#fallback !== null && up === this.#upstream && UNREACHABLE.has(code)) this.#nextAddress();
    });
  }

  /** Keeps a copy of `data`, the last datagram sent up, while a move can happen. */
  #keep(data: Uint8Array): void {
    this.#lastUp = this.#kept++ < MAX_KEPT ? Buffer.from(data) : null;
  }

  /** Moves the session to its next address: a new upstream socket, and the last datagram again. */
  #nextAddress(): void {
    const rest = this.#fallback as readonly string[];
    let next: ReturnType<typeof connectUdp>;
    try {
      next = connectUdp(this.#rt, rest, this.#upstreamPort, this.#maxDatagram);
    } catch {
      // Named boundary: no further address takes a socket; the session stays where it is.
      this.#fallback = null;
      this.#lastUp = null;
      return;
    }
    this.#upstream?.close();
    this.#upstream = next.socket;
    this.#fallback = next.rest.length > 0 ? next.rest : null;
    this.request.upstream = formatHostPort(next.remote.host, next.remote.port);
    this.#attach(next.socket);
    if (this.#lastUp !== null) next.socket.send(this.#lastUp);
    if (this.#fallback === null) this.#lastUp = null;
  }

  #sendUp(data: Uint8Array): void {
    const hook = this.#rt.hooks.datagram;
    const out = hook === null ? data : this.#verdict(hook, data, 'up');
    if (out === null) return;
    this.counts.datagramsUp++;
    this.counts.bytesUp += out.length;
    if (this.#packets !== null) this.#packets.send(out);
    else {
      this.#upstream?.send(out);
      if (this.#fallback !== null) this.#keep(out);
    }
  }

  /** A reply that came back through the off-ramp (`EgressDecision.packets`) or the app's socket. */
  #fromPackets(data: Buffer): void {
    if (this.state !== 'open') return;
    this.lastActive = performance.now();
    const hook = this.#rt.hooks.datagram;
    const out = hook === null ? data : this.#verdict(hook, data, 'down');
    if (out === null) return;
    this.counts.datagramsDown++;
    this.counts.bytesDown += out.length;
    this.#ingress.reply(out);
  }

  #fromUpstream(batch: UdpBatch): void {
    if (this.state !== 'open') return;
    this.lastActive = performance.now();
    if (this.#fallback !== null) {
      // Answered: this address serves, and the session stays on it.
      this.#fallback = null;
      this.#lastUp = null;
    }
    const hook = this.#rt.hooks.datagram;
    const room = this.#ingress.replyRoom ?? Number.POSITIVE_INFINITY;
    if (hook === null) {
      let bytes = 0;
      let longest = 0;
      for (let i = 0; i < batch.count; i++) {
        const n = batch.length(i);
        bytes += n;
        if (n > longest) longest = n;
      }
      if (longest <= room) {
        this.counts.datagramsDown += batch.count;
        this.counts.bytesDown += bytes;
        this.#ingress.replyBatch(batch);
        return;
      }
    }
    for (let i = 0; i < batch.count; i++) {
      const out = hook === null ? batch.payload(i) : this.#verdict(hook, batch.payload(i), 'down');
      if (out === null) continue;
      // Too long to reach the client (with the on-ramp's header): the kernel would refuse it.
      if (out.length > room) {
        this.#drop('too_large');
        continue;
      }
      this.counts.datagramsDown++;
      this.counts.bytesDown += out.length;
      this.#ingress.reply(out);
    }
  }

  /** The bytes to send for `data` after the hook, or null to drop it. */
  #verdict(
    hook: NonNullable<Runtime['hooks']['datagram']>,
    data: Uint8Array,
    direction: 'up' | 'down',
  ): Uint8Array | null {
    let v: DatagramVerdict | undefined;
    try {
      v = hook(data, direction, this.request);
    } catch (e) {
      inConnectionContext(this.conn, () => this.#rt.hookFailed('DatagramHook.handleDatagram', e));
      this.#drop('hook_failed');
      return null;
    }
    if (v === undefined) return data;
    // From plain JavaScript or a cast, anything may come back: only a verdict of a known kind
    // with its fields is carried out; anything else fails closed, as a throw (hooks.intro.md),
    // never with a TypeError outside this call (which would end the process).
    const kind = typeof v === 'object' && v !== null ? (v as { kind?: unknown }).kind : undefined;
    if (kind === 'pass') return data;
    if (kind === 'rewrite' && (v as { data?: unknown }).data instanceof Uint8Array) {
      const out = (v as { data: Uint8Array }).data;
      if (out.length <= this.#maxDatagram) return out;
      this.#drop('too_large');
      return null;
    }
    if (kind === 'drop') {
      const reason = (v as { reason?: unknown }).reason;
      this.#drop(typeof reason === 'string' ? reason : 'hook');
      return null;
    }
    inConnectionContext(this.conn, () =>
      this.#rt.hookFailed(
        'DatagramHook.handleDatagram',
        new TypeError(
          kind === 'rewrite'
            ? 'a rewrite datagram verdict without a Uint8Array'
            : `unknown datagram verdict ${v === null ? 'null' : JSON.stringify(kind)}`,
        ),
      ),
    );
    this.#drop('hook_failed');
    return null;
  }

  /** Counts `n` datagrams of this session dropped for `reason`. */
  #drop(reason: string, n = 1): void {
    datagramMetrics.dropped_total({ endpoint: this.conn.endpoint.name, reason }).inc(n);
  }

  /** Refuses the session: `error` says why (and, for a block, the record's `block_reason`: `blockReason`, else the error's message). */
  #refuse(status: number, reason: string, error: unknown, blockReason?: string): void {
    if (this.state === 'closed') return;
    this.request.status = status;
    this.request.error = blockReason ?? error;
    this.#reason = reason;
    if (this.#ownsConnection) this.conn.closeReason = reason;
    this.state = 'refused';
    this.#settled({ open: false, error });
    if (this.#pending !== null) this.#drop('refused', this.#pending.length);
    this.#pending = null;
  }

  #finish(): void {
    const rt = this.#rt;
    const endpoint = this.conn.endpoint.name;
    datagramMetrics.sessions_active({ endpoint }).dec();
    untrack(this.counts);
    const durationMs = performance.now() - this.conn.startedAt;
    datagramMetrics.session_duration_seconds({ endpoint }).observe(durationMs / 1000);
    if (this.#ownsConnection && this.conn.closeReason === 'client_closed')
      this.conn.closeReason = this.#reason;
    recordEnd(rt, this.request, this.counts.bytesUp, this.counts.bytesDown, this.#reason, {
      datagrams_up: this.counts.datagramsUp,
      datagrams_down: this.counts.datagramsDown,
    });
    this.#ingress.ended(this);
    const hook = rt.hooks.ingressConnectionClose;
    if (hook === null || !this.#ownsConnection) return;
    try {
      hook(
        {
          bytesIn: this.counts.bytesUp,
          bytesOut: this.counts.bytesDown,
          durationMs,
          requests: 1,
          closeReason: this.conn.closeReason,
        },
        this.conn,
      );
    } catch (e) {
      rt.hookFailed('IngressHook.handleConnectionClose', e);
    }
  }
}

function blockedBy(hook: string): OxyError {
  return new OxyError(OXY_ERR.BLOCKED, `blocked by ${hook}`, { status: 403 });
}
