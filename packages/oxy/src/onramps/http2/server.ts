/**
 * The HTTP/2 on-ramp of an `http` endpoint: one Node HTTP/2 server (never listening itself)
 * fed with connections that spoke the HTTP/2 preface or chose `h2` through ALPN. Each stream is
 * its own request with its own request context and trace (forked from the connection's by the
 * pipelines): CONNECT streams become tunnels multiplexed on the one connection, other methods
 * are forwarded, and extended CONNECT (RFC 8441) is advertised (SETTINGS_ENABLE_CONNECT_PROTOCOL)
 * and served by the handler registered for its `:protocol` (MASQUE's `connect-udp` and
 * `connect-ip`, `onramps/masque/onramp.ts`), others answered 501.
 *
 * Ordering rules: a stream gets an error listener before anything else can fail on it (an
 * unhandled stream error would end the process); a session closes with GOAWAY after
 * `idle_timeout` without open streams, and `drain()` sends GOAWAY at once and waits for the
 * open streams to finish. Limits (concurrent streams, header list size, session memory, windows)
 * are HTTP/2 SETTINGS enforced by nghttp2, so a misbehaving client costs a stream or its own
 * connection, never the process.
 */
import http2 from 'node:http2';
import type net from 'node:net';
import { log } from 'foundations/telemetry';
import type { EndpointState, IngressConnection } from '../../context/state.ts';
import { OXY_ERR, OxyError } from '../../errors.ts';
import { serveForward } from '../../flows/http/forward.ts';
import { parseAuthority } from '../../flows/http/headers.ts';
import type { RequestHead } from '../../hooks/http-request.ts';
import type { HttpPool } from '../../offramps/http/pool.ts';
import type { Runtime } from '../../runtime.ts';
import { httpEndpoint } from '../../settings.ts';
import { ingressMetrics } from '../../telemetry/metrics.ts';
import { serveConnect } from '../../tunnels/connect.ts';
import { ForwardResponse, forwardRequest, Http2ConnectExchange, respondText } from './exchange.ts';
import { FieldGuard, GuardedSocket } from './field-guard.ts';
import { classifyRequest } from './headers.ts';
import { http2EndpointMetrics, http2Metrics } from './metrics.ts';
import type { Http2Settings } from './settings.ts';

const kConn = Symbol('oxy.http2.conn');
const kOpen = Symbol('oxy.http2.open');
const kIdle = Symbol('oxy.http2.idle');
const kSeen = Symbol('oxy.http2.seen');
const kBlockSince = Symbol('oxy.http2.blockSince');
const kGuard = Symbol('oxy.http2.guard');

interface TaggedSession extends http2.ServerHttp2Session {
  [kConn]?: IngressConnection;
  [kOpen]?: number;
  [kIdle]?: NodeJS.Timeout | undefined;
  /** The highest stream id whose header block completed (its 'stream' event ran). */
  [kSeen]?: number;
  /** When a header block was first seen unfinished, or undefined. */
  [kBlockSince]?: number | undefined;
  /** The strict-fields guard (`http2.strict_fields`), or undefined when off. */
  [kGuard]?: FieldGuard | undefined;
}

/**
 * True when `session` has been inside one header block (HEADERS without END_HEADERS, then
 * CONTINUATION frames or nothing) for `limitMs` or more. nghttp2 records a stream id as soon
 * as its HEADERS frame starts (`lastProcStreamID`), while the 'stream' event waits for the end
 * of the block; while a block is open the client can send nothing else (RFC 9113 §6.10).
 */
function headerBlockExpired(session: TaggedSession, now: number, limitMs: number): boolean {
  let started: number;
  try {
    started = session.state.lastProcStreamID ?? 0;
  } catch {
    // Boundary: the session was destroyed between the sweep's check and this call.
    return false;
  }
  if (started <= (session[kSeen] ?? 0)) {
    session[kBlockSince] = undefined;
    return false;
  }
  session[kBlockSince] ??= now;
  return now - session[kBlockSince] >= limitMs;
}

/**
 * Serves an extended CONNECT stream (RFC 8441) for the `:protocol` it was registered for: the
 * seam MASQUE (`connect-udp`, `connect-ip`) plugs into. It owns the stream: it answers it
 * (`stream.respond`) and ends it. Called inside the connection's telemetry context.
 */
export type ExtendedConnectHandler = (
  stream: http2.ServerHttp2Stream,
  head: RequestHead,
  conn: IngressConnection,
) => void;

/** The HTTP/2 on-ramp of one endpoint. */
export interface Http2OnRamp {
  /**
   * Serves extended CONNECT streams whose `:protocol` is `protocol` with `handler`; others are
   * answered 501. Register before traffic arrives; a second registration replaces the first.
   */
  handleExtendedConnect(protocol: string, handler: ExtendedConnectHandler): void;
  /**
   * Serves `socket` (cleartext after the preface was seen, or TLS after ALPN chose `h2`) as an
   * HTTP/2 connection for `conn`. Call it inside the connection's telemetry context.
   */
  serve(socket: net.Socket, conn: IngressConnection): void;
  /** True when `conn` is served by this on-ramp (its session is still open). */
  has(conn: IngressConnection): boolean;
  /**
   * Sends GOAWAY on every session (no new streams; open ones finish) and resolves once all
   * sessions have closed. New connections handed over afterwards get GOAWAY at once.
   */
  drain(): Promise<void>;
  /** Destroys every session at once (after a drain, or on shutdown); the pool's owner closes the pool. */
  close(): void;
  /** Open sessions. */
  readonly sessions: number;
}

const MIN_FRAME = 16_384;
/** SETTINGS_HEADER_TABLE_SIZE as advertised: nghttp2's default, which the server never changes. */
const HEADER_TABLE_SIZE = 4096;
const MAX_FRAME = 16_777_215;
const MAX_WINDOW = 2 ** 31 - 1;

function checkRange(where: string, key: string, value: number, min: number, max: number): void {
  if (value < min || value > max) {
    throw new OxyError(
      OXY_ERR.INVALID_APP,
      `${where}.${key}: must be between ${min} and ${max} bytes, got ${value}`,
    );
  }
}

/** Node's HTTP/2 server options for `settings`; throws naming `where.<key>` for values HTTP/2 cannot carry. */
export function http2ServerOptions(settings: Http2Settings, where: string): http2.ServerOptions {
  checkRange(where, 'max_frame_size', settings.max_frame_size, MIN_FRAME, MAX_FRAME);
  checkRange(where, 'stream_window_size', settings.stream_window_size, 65_535, MAX_WINDOW);
  checkRange(where, 'connection_window_size', settings.connection_window_size, 65_535, MAX_WINDOW);
  checkRange(where, 'max_header_list_size', settings.max_header_list_size, 1024, 2 ** 31 - 1);
  return {
    // Node counts session memory in megabytes.
    maxSessionMemory: Math.max(1, Math.ceil(settings.max_session_memory / 1_048_576)),
    settings: {
      enablePush: false,
      enableConnectProtocol: true,
      maxConcurrentStreams: settings.max_concurrent_streams,
      initialWindowSize: settings.stream_window_size,
      maxFrameSize: settings.max_frame_size,
      maxHeaderListSize: settings.max_header_list_size,
    },
  };
}

/**
 * Creates the HTTP/2 on-ramp of `endpoint`. `where` is the settings path of `settings`
 * (`endpoints.main.http2`), named in start-up errors. `pool` is the endpoint's upstream pool,
 * shared with its HTTP/1.1 on-ramp (which owns and closes it), so that requests from HTTP/1.1
 * and HTTP/2 clients reuse the same upstream connections and HTTP/2 sessions.
 */
export function createHttp2OnRamp(
  rt: Runtime,
  endpoint: EndpointState,
  settings: Http2Settings,
  where: string,
  pool: HttpPool,
): Http2OnRamp {
  const server = http2.createServer(http2ServerOptions(settings, where));
  const sessions = new Set<TaggedSession>();
  const metrics = http2EndpointMetrics(endpoint.name);
  let draining = false;
  let drained: (() => void) | null = null;
  let drainDone: Promise<void> | null = null;
  let pendingConn: IngressConnection | undefined;
  const extended = new Map<string, ExtendedConnectHandler>();

  // A header block that never ends holds the connection (and nghttp2's buffers) with no stream
  // for the idle timer to see: it gets `header_read_timeout`, as an HTTP/1.1 head does.
  const headerLimit = httpEndpoint(endpoint.settings).header_read_timeout;
  const sweep =
    headerLimit > 0
      ? setInterval(
          () => {
            const now = performance.now();
            for (const session of sessions) {
              if (session.destroyed || !headerBlockExpired(session, now, headerLimit)) continue;
              const conn = session[kConn];
              if (conn !== undefined) conn.closeReason = 'header_timeout';
              ingressMetrics
                .connections_failed_total({ endpoint: endpoint.name, reason: 'header_timeout' })
                .inc();
              session.destroy();
            }
          },
          Math.max(50, Math.min(1000, headerLimit / 4)),
        ).unref()
      : undefined;

  const armIdle = (session: TaggedSession): void => {
    clearTimeout(session[kIdle]);
    session[kIdle] = undefined;
    if ((session[kOpen] ?? 0) > 0 || settings.idle_timeout <= 0) return;
    session[kIdle] = setTimeout(() => {
      const conn = session[kConn];
      if (conn !== undefined) conn.closeReason = 'idle_timeout';
      session.close();
    }, settings.idle_timeout);
    session[kIdle].unref();
  };

  server.on('session', (s: http2.ServerHttp2Session) => {
    const session = s as TaggedSession;
    const conn = pendingConn;
    session[kConn] = conn;
    session[kOpen] = 0;
    sessions.add(session);
    metrics.sessionsActive.inc();
    http2Metrics.sessions_total({ endpoint: endpoint.name, protocol: conn?.protocol ?? 'h2' }).inc();
    session.setLocalWindowSize(settings.connection_window_size);
    session.on('error', (e: NodeJS.ErrnoException) => {
      if (conn !== undefined) conn.closeReason = 'error';
      conn?.telemetry?.apply(() => log.debug('HTTP/2 session error', { code: e.code, err: e.message }));
    });
    session.on('goaway', (code: number) => {
      if (code !== http2.constants.NGHTTP2_NO_ERROR && conn !== undefined) conn.closeReason = 'goaway';
    });
    session.once('close', () => {
      clearTimeout(session[kIdle]);
      sessions.delete(session);
      metrics.sessionsActive.dec();
      if (sessions.size === 0 && drained !== null) drained();
    });
    armIdle(session);
    if (draining) session.close();
  });

  server.on('stream', (stream: http2.ServerHttp2Stream, headers, _flags, rawHeaders: string[]) => {
    const session = stream.session as TaggedSession | undefined;
    const conn = session?.[kConn];
    stream.on('error', (e: NodeJS.ErrnoException) => {
      // The pipeline owning the stream sees it end; the connection goes on.
      conn?.telemetry?.apply(() => log.debug('HTTP/2 stream error', { code: e.code }));
    });
    if (session === undefined || conn === undefined) {
      stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      return;
    }
    const id = stream.id ?? 0;
    if (id > (session[kSeen] ?? 0)) session[kSeen] = id;
    const guard = session[kGuard];
    if (guard !== undefined) {
      if (guard.announce(id, stream)) {
        // RFC 9113 §8.2.1: a malformed request is a stream error of type PROTOCOL_ERROR.
        metrics.malformedFields.inc();
        conn.telemetry?.apply(() => log.debug('malformed HTTP/2 field', { stream: id }));
        stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
        return;
      }
      stream.once('close', () => guard.forget(id));
    }
    session[kOpen] = (session[kOpen] ?? 0) + 1;
    armIdle(session);
    stream.once('close', () => {
      session[kOpen] = (session[kOpen] ?? 1) - 1;
      if (!session.closed && !session.destroyed) armIdle(session);
    });
    const shape = classifyRequest(headers);
    switch (shape.kind) {
      case 'invalid':
        metrics.malformed.inc();
        conn.telemetry?.apply(() => log.debug('malformed HTTP/2 request', { reason: shape.reason }));
        respondText(stream, shape.status, `${shape.status} ${shape.reason}\n`);
        return;
      case 'extended-connect': {
        const handler = extended.get(shape.protocol);
        if (handler !== undefined) {
          try {
            handler(stream, shape.head, conn);
          } catch (e) {
            log.error('extended CONNECT handler failed', { protocol: shape.protocol, err: e });
            respondText(stream, 500, '500 internal error\n');
          }
          return;
        }
        metrics.extendedConnect.inc();
        // A :protocol no handler serves (MASQUE registers connect-udp and connect-ip).
        respondText(stream, 501, `501 extended CONNECT (:protocol ${shape.protocol}) is not served here\n`);
        return;
      }
      case 'connect':
        void serveConnect(rt, conn, new Http2ConnectExchange(stream, shape.head), {
          host: shape.host,
          port: shape.port,
        });
        return;
      case 'request': {
        const { head } = shape;
        // `:scheme https` goes to the origin over verified TLS (`offramps/tls/origin.ts`).
        const addr =
          head.scheme === 'http' || head.scheme === 'https'
            ? parseAuthority(head.authority, head.scheme === 'http' ? 80 : 443)
            : null;
        if (addr === null) {
          metrics.malformed.inc();
          respondText(
            stream,
            400,
            '400 a forward proxy needs an http(s) :scheme and a host[:port] :authority\n',
          );
          return;
        }
        const req = forwardRequest(stream, headers, rawHeaders);
        const res = new ForwardResponse(stream);
        // The forwarding pipeline is written against Node's response API, which the HTTP/2
        // compatibility response implements for everything it uses.
        serveForward(rt, pool, conn, req, res as unknown as Parameters<typeof serveForward>[4], {
          scheme: head.scheme,
          authority: head.authority,
          addr,
          path: head.path,
        });
        return;
      }
    }
  });

  return {
    handleExtendedConnect(protocol: string, handler: ExtendedConnectHandler): void {
      extended.set(protocol, handler);
    },
    serve(socket: net.Socket, conn: IngressConnection): void {
      pendingConn = conn;
      let session: TaggedSession | undefined;
      const take = (s: http2.ServerHttp2Session): void => {
        session = s as TaggedSession;
      };
      const guard = settings.strict_fields ? new FieldGuard() : undefined;
      server.once('session', take);
      try {
        server.emit(
          'connection',
          guard === undefined
            ? socket
            : new GuardedSocket(socket, guard, HEADER_TABLE_SIZE, settings.max_frame_size),
        );
      } finally {
        pendingConn = undefined;
        server.off('session', take);
      }
      if (guard !== undefined && session !== undefined) {
        const s = session;
        s[kGuard] = guard;
        guard.onLateMark = (id) => {
          metrics.malformedFields.inc();
          guard.reset(id, http2.constants.NGHTTP2_PROTOCOL_ERROR);
        };
        guard.onBroken = (e) => {
          // nghttp2 ends such a connection too (COMPRESSION_ERROR); never serve it unguarded.
          conn.closeReason = 'malformed';
          conn.telemetry?.apply(() => log.debug('HTTP/2 header block unreadable', { err: e.message }));
          s.destroy();
        };
      }
      // Endpoints accept with allowHalfOpen (tunnels need it), but HTTP/2 has no half-closed
      // connection: a client that sent FIN will send no more frames, so its streams are over.
      socket.once('end', () => {
        if (session !== undefined && !session.destroyed) session.destroy();
      });
      // The session reads the socket natively; the JS side only sees EOF, and a paused or
      // never-started readable would hold that 'end' back.
      socket.resume();
    },
    has(conn: IngressConnection): boolean {
      for (const s of sessions) if (s[kConn] === conn) return true;
      return false;
    },
    drain(): Promise<void> {
      draining = true;
      for (const s of sessions) {
        const conn = s[kConn];
        if (conn !== undefined) conn.closeReason = 'drained';
        s.close();
      }
      if (sessions.size === 0) return Promise.resolve();
      drainDone ??= new Promise((resolve) => {
        drained = resolve;
      });
      return drainDone;
    },
    close(): void {
      draining = true;
      clearInterval(sweep);
      for (const s of sessions) s.destroy();
    },
    get sessions(): number {
      return sessions.size;
    },
  };
}
