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
 * Timers: one interval per endpoint, at a quarter of the idle timeout (from 50 ms to a minute);
 * none per session.
 */
import net from 'node:net';
import type { Listeners } from 'foundations/restart';
import { log } from 'foundations/telemetry';
import { type UdpBatch, UdpSocket } from 'native';
import { NO_TARGET, unmappedIp } from '../../context/addr.ts';
import type { SocketAddr } from '../../context/contexts.ts';
import { type EndpointState, IngressConnection } from '../../context/state.ts';
import { OXY_ERR, OxyError } from '../../errors.ts';
import { countTooLarge } from '../../flows/datagram/counts.ts';
import { type DatagramIngress, DatagramSession } from '../../flows/datagram/session.ts';
import type { ProxyHeader } from '../../protocols/proxy-protocol/index.ts';
import type { Runtime } from '../../runtime.ts';
import type { UdpEndpointSettings } from '../../settings.ts';
import { datagramMetrics } from '../../telemetry/metrics.ts';
import {
  type DatagramWithHeader,
  encodeDatagramReply,
  parseDatagramHeader,
} from '../proxy-protocol/datagram.ts';
import { TrustedPeers } from '../proxy-protocol/trust.ts';
import { bindEndpointUdp } from './bind.ts';
import { assertUdpSettings } from './checks.ts';

const EMPTY = new Uint8Array(0);
/** The largest UDP payload to an IPv4 and to an IPv6 client. */
const MAX_UDP_V4 = 65_507;
const MAX_UDP_V6 = 65_527;

/** A running `udp` endpoint. */
export interface UdpOnRamp {
  /** The endpoint's socket. */
  readonly socket: UdpSocket;
  /** Where it listens. */
  address(): SocketAddr;
  /** Sessions open now. */
  readonly sessionCount: number;
  /**
   * Turns new clients away (their datagrams are dropped as `draining`), and with `stopReading`
   * stops reading the socket (after a restart the next process reads it). On a shutdown it reads
   * on, so that open sessions keep their clients until they end.
   */
  beginDrain(stopReading: boolean): void;
  /**
   * Drains (`beginDrain(true)` if it has not begun): open sessions go on until they idle out.
   * Resolves once none is left, or at `deadline` (a `Date.now()` time) after ending those that
   * remain (`drained`).
   */
  drain(deadline?: number): Promise<void>;
  /** Ends every session (`drained`) and closes the socket. */
  close(): void;
}

/**
 * Opens `udp` endpoint `endpoint` on its `addr` (with the restart lifecycle's `listeners`, the
 * socket the previous process handed over). Throws `OXY_ERR_LISTEN` naming the settings key.
 */
export function openUdpOnRamp(
  rt: Runtime,
  endpoint: EndpointState,
  settings: UdpEndpointSettings,
  listeners?: Listeners,
): UdpOnRamp {
  const addr = settings.addr;
  const where = `endpoints.${endpoint.name}.addr`;
  if (addr.kind !== 'tcp')
    throw new OxyError(OXY_ERR.LISTEN, `${where}: a udp endpoint listens on host:port, not a path`);
  assertUdpSettings(endpoint.name, settings);
  const maxDatagram = settings.udp.max_datagram_size;
  const socket = bindEndpointUdp(endpoint.name, addr.host, addr.port, maxDatagram, listeners);
  socket.onTruncated((n) => countTooLarge(endpoint.name, n));
  const bound = socket.address();
  const local: SocketAddr = { host: bound.address, port: bound.port };
  const target = settings.udp.target ?? NO_TARGET;
  const idleMs = settings.udp.idle_timeout;
  const maxSessions = settings.udp.max_sessions;
  const sessions = new Map<number | string, DatagramSession>();
  const tooMany = datagramMetrics.dropped_total({ endpoint: endpoint.name, reason: 'too_many_sessions' });
  const turnedAway = datagramMetrics.dropped_total({ endpoint: endpoint.name, reason: 'draining' });
  let full = false; // at max_sessions since the last warning
  let draining = false; // new clients are turned away

  /**
   * A new session for the client `key`, reached at `host`:`port` (its own address, or the proxy
   * in front, which gets each reply behind `header`'s answer).
   */
  const newSession = (
    key: number | string,
    host: string,
    port: number,
    now: number,
    header: ProxyHeader | null,
  ): DatagramSession => {
    const peer = { host, port };
    const to = UdpSocket.target(host, port);
    const replyHeader = header === null ? null : encodeDatagramReply(header, EMPTY);
    const ingress: DatagramIngress = {
      reply: (data) => {
        socket.send(replyHeader === null ? data : Buffer.concat([replyHeader, data]), port, host);
      },
      replyBatch: (batch) => {
        socket.sendBatch(batch, to, replyHeader ?? undefined);
      },
      ended: () => {
        sessions.delete(key);
        full = false;
      },
      replyRoom: (net.isIPv4(unmappedIp(host)) ? MAX_UDP_V4 : MAX_UDP_V6) - (replyHeader?.length ?? 0),
    };
    const conn = new IngressConnection(endpoint, { peer, local }, 'udp', rt.ext);
    let dest = target;
    if (header !== null) {
      conn.setProxyHeader(header);
      const a = header.addresses;
      if (settings.udp.target === null && a !== null && a.family !== 'unix') dest = a.destination;
    }
    return new DatagramSession(rt, conn, dest, ingress, now, maxDatagram);
  };

  /**
   * The session of client `key` (datagram `i` of `batch` its first), or undefined for a new client
   * at `max_sessions` or while draining.
   */
  const session = (
    key: number | string,
    batch: UdpBatch,
    i: number,
    now: number,
    header: ProxyHeader | null,
  ): DatagramSession | undefined => {
    let s = sessions.get(key);
    if (s === undefined) {
      if (draining) return undefined;
      if (sessions.size >= maxSessions) {
        // One line per episode at the limit (it ends when a session ends), not one per datagram.
        if (!full) {
          full = true;
          log.warn('udp endpoint at max_sessions: new clients are dropped', {
            endpoint: endpoint.name,
            max_sessions: maxSessions,
          });
        }
        return undefined;
      }
      s = newSession(key, batch.address(i), batch.port(i), now, header);
      sessions.set(key, s);
    }
    return s;
  };

  /**
   * Datagrams `start` to `end - 1` of `batch`, consecutive from one client (`key`), each behind a
   * `skip`-byte header: to the client's session as one run (one system call up), or counted
   * as dropped (at `max_sessions`, or a new client while draining).
   */
  const run = (
    key: number | string,
    batch: UdpBatch,
    start: number,
    end: number,
    now: number,
    header: ProxyHeader | null,
  ) => {
    const s = session(key, batch, start, now, header);
    if (s === undefined) (draining ? turnedAway : tooMany).inc(end - start);
    // Every datagram of a run has a header of its first one's length (or none).
    else s.fromClientRun(batch, start, end, now, header === null ? 0 : header.length);
  };

  const pp = settings.proxy_protocol;
  if (!pp.enabled) {
    socket.onBatch((batch) => {
      const now = performance.now();
      const n = batch.count;
      let start = 0;
      let key = n > 0 ? batch.peerKey(0) : 0;
      for (let i = 1; i < n; i++) {
        const k = batch.peerKey(i);
        if (k === key) continue;
        run(key, batch, start, i, now, null);
        start = i;
        key = k;
      }
      if (n > 0) run(key, batch, start, n, now, null);
    });
  } else {
    // A header before every datagram: trust, then the header; the session is the header's client
    // (and, when the target is the header's destination, that destination: each datagram goes
    // where its own header says).
    const trusted = new TrustedPeers(pp.trusted_cidrs as readonly string[]);
    const name = endpoint.name;
    const format = pp.udp_format;
    const byDestination = settings.udp.target === null;
    const refused = datagramMetrics.dropped_total({ endpoint: name, reason: 'proxy_protocol' });
    socket.onBatch((batch) => {
      const now = performance.now();
      // The run being gathered: consecutive datagrams of one client behind headers of one length;
      // `runHeader` is its first datagram's, which opens the session.
      let start = -1;
      let runKey: number | string = 0;
      let runHeader: ProxyHeader | null = null;
      for (let i = 0; i < batch.count; i++) {
        let parsed: DatagramWithHeader;
        try {
          parsed = parseDatagramHeader(batch.payload(i), format, {
            peer: batch.address(i),
            trusted,
            endpoint: name,
          });
        } catch {
          // Named boundary: a datagram without a valid header from a trusted peer is dropped (counted by reason).
          refused.inc();
          if (start >= 0) run(runKey, batch, start, i, now, runHeader);
          start = -1;
          continue;
        }
        const a = parsed.header.addresses;
        let key: number | string = batch.peerKey(i);
        if (a !== null && a.family !== 'unix') {
          key = `${key}>${a.source.host}|${a.source.port}`;
          if (byDestination) key = `${key}>${a.destination.host}|${a.destination.port}`;
        }
        const h = parsed.header;
        if (start >= 0 && key === runKey && h.length === runHeader?.length) continue;
        if (start >= 0) run(runKey, batch, start, i, now, runHeader);
        start = i;
        runKey = key;
        runHeader = h;
      }
      if (start >= 0) run(runKey, batch, start, batch.count, now, runHeader);
    });
  }

  const sweep = setInterval(() => {
    const cutoff = performance.now() - idleMs;
    for (const s of sessions.values()) if (s.lastActive <= cutoff) s.close('idle_timeout');
  }, sweepInterval(idleMs)).unref();

  let closed = false;
  return {
    socket,
    address: () => local,
    get sessionCount() {
      return sessions.size;
    },
    beginDrain(stopReading) {
      draining = true;
      if (stopReading && !socket.closed) socket.setReading(false);
    },
    async drain(deadline = Number.POSITIVE_INFINITY) {
      if (!draining) this.beginDrain(true);
      while (sessions.size > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, Math.min(100, Math.max(1, deadline - Date.now()))));
      }
      for (const s of [...sessions.values()]) s.close('drained');
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

/**
 * The sweep interval for `idleMs`: a quarter of it, at least 50 ms, and at most a minute (a
 * timer cannot wait more than 2^31-1 ms: Node runs a longer one every millisecond).
 */
export function sweepInterval(idleMs: number): number {
  return Math.min(60_000, Math.max(50, Math.floor(idleMs / 4)));
}
