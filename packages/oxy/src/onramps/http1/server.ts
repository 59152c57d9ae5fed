/**
 * The HTTP/1.1 on-ramp of an `http` endpoint: Node's HTTP server (llhttp, strict parsing) fed
 * with sockets the ingress step allowed, dispatching absolute-form requests to the forwarding
 * pipeline, CONNECT to the tunnel pipeline and `Upgrade` to the upgrade pipeline.
 *
 * Bad input is answered here (`clientError`): a malformed request or conflicting framing
 * (`Content-Length` twice with different values, or with `Transfer-Encoding`) → 400, a head
 * over `max_header_size` → 431, a head not received within `header_read_timeout` → 408; each
 * closes the connection. Idle keep-alive connections close after `idle_timeout`.
 */
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { log } from 'foundations/telemetry';
import type { EndpointState, IngressConnection } from '../../context/state.ts';
import { serveForward } from '../../flows/http/forward.ts';
import { parseAbsoluteTarget, parseAuthority, rawToHeaders } from '../../flows/http/headers.ts';
import { serveUpgrade, writeRawResponse } from '../../flows/http/upgrade.ts';
import { isOffloaded } from '../../flows/stream/offload.ts';
import type { HttpHeaders, RequestHead, ResponseHead } from '../../hooks/http-request.ts';
import { HttpPool } from '../../offramps/http/pool.ts';
import type { Runtime } from '../../runtime.ts';
import { httpEndpoint } from '../../settings.ts';
import { ingressMetrics } from '../../telemetry/metrics.ts';
import { type ConnectExchange, type SpliceableClient, serveConnect } from '../../tunnels/connect.ts';
import type { SocketOnRamp } from '../ingress.ts';

const kConn = Symbol('oxy.ingress');
const kSilent = Symbol('oxy.silentTimer');
type TaggedSocket = net.Socket & { [kConn]?: IngressConnection; [kSilent]?: NodeJS.Timeout };

/**
 * Stops the silent-client timer of `socket`. Shared by every socket (no closure per
 * connection); a CONNECT calls it too, so an idle tunnel does not keep the timer alive.
 */
function clearSilent(this: Duplex): void {
  const s = this as TaggedSocket;
  clearTimeout(s[kSilent]);
  s[kSilent] = undefined;
  s.off('close', clearSilent);
}

function connOf(socket: Duplex): IngressConnection | undefined {
  return (socket as TaggedSocket)[kConn];
}

/**
 * The CONNECT exchange of HTTP/1.1: the response is written on the socket, which becomes the
 * tunnel. The header object is built only if a hook asks for the head.
 */
export class Http1ConnectExchange implements ConnectExchange {
  readonly #authority: string;
  #headers: HttpHeaders | readonly string[];
  #head: RequestHead | null = null;
  readonly #socket: Duplex;
  readonly #early: Buffer | null;

  /** `headers` is Node's header object, or raw headers (`[name, value, …]`). */
  constructor(
    authority: string,
    headers: HttpHeaders | readonly string[],
    socket: Duplex,
    early: Buffer | null,
  ) {
    this.#authority = authority;
    this.#headers = headers;
    this.#socket = socket;
    this.#early = early;
  }

  get head(): RequestHead {
    if (this.#head === null) {
      const h = this.#headers;
      const headers = Array.isArray(h) ? rawToHeaders(h) : (h as HttpHeaders);
      this.#head = { method: 'CONNECT', scheme: '', authority: this.#authority, path: '', headers };
    }
    return this.#head;
  }

  get closed(): boolean {
    return this.#socket.destroyed || !this.#socket.writable;
  }

  accept(res: ResponseHead): Duplex {
    let out = `HTTP/1.1 ${res.status} ${res.status === 200 ? 'Connection Established' : (http.STATUS_CODES[res.status] ?? '')}\r\n`;
    for (const name in res.headers) {
      const v = res.headers[name];
      if (v === undefined) continue;
      for (const x of Array.isArray(v) ? v : [v]) out += `${name}: ${x}\r\n`;
    }
    this.#socket.write(`${out}\r\n`);
    if (this.#early !== null && this.#early.length > 0) this.#socket.unshift(this.#early);
    return this.#socket;
  }

  reject(status: number, body: string): void {
    writeRawResponse(this.#socket, status, body);
  }

  /** A plain TCP client with nothing queued for it can have its whole tunnel run by the addon. */
  spliceable(): SpliceableClient | null {
    const s = this.#socket;
    if (!(s instanceof net.Socket) || (s as { encrypted?: boolean }).encrypted === true) return null;
    if (isOffloaded(s) || s.writableLength > 0) return null;
    return {
      socket: s,
      early: this.#early !== null && this.#early.length > 0 ? this.#early : null,
      head: ESTABLISHED,
    };
  }
}

/** The answer to a CONNECT no hook changed. */
const ESTABLISHED = Buffer.from('HTTP/1.1 200 Connection Established\r\n\r\n', 'latin1');

const CLIENT_ERRORS: Readonly<Record<string, [number, string]>> = {
  HPE_HEADER_OVERFLOW: [431, 'headers_too_large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'header_timeout'],
  HPE_HEADERS_TIMEOUT: [408, 'header_timeout'],
};

/**
 * What is wrong with a parsed request head that llhttp accepted, as `[status, reason]`, or
 * null: a version other than HTTP/1.x → 505 (`HTTP/2.0` in a request line is not HTTP/2); more
 * than one `Host` field, or none in HTTP/1.1 → 400 (RFC 9112 §3.2); HTTP/1.0 with
 * `Transfer-Encoding` → 400, its framing being faulty (§6.1: llhttp would read its body up to
 * the close, so it cannot be served and the connection kept). `rawHeaders` is `[name, value, …]`.
 */
export function headProblem(
  major: number,
  minor: number,
  rawHeaders: readonly string[],
): [number, string] | null {
  if (major !== 1) return [505, 'version_not_supported'];
  let hosts = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    if (name.length === 4 && name.toLowerCase() === 'host') hosts++;
    else if (minor === 0 && name.length === 17 && name.toLowerCase() === 'transfer-encoding')
      return [400, 'bad_framing'];
  }
  if (hosts > 1 || (hosts === 0 && minor >= 1)) return [400, hosts > 1 ? 'duplicate_host' : 'missing_host'];
  return null;
}

/**
 * Answers a head {@link headProblem} refused with its status and closes the connection once
 * the answer is written.
 */
export function answerHeadProblem(
  endpoint: EndpointState,
  conn: IngressConnection | undefined,
  socket: Duplex,
  [status, reason]: [number, string],
): void {
  if (conn !== undefined) {
    conn.closeReason = reason;
    ingressMetrics.connections_failed_total({ endpoint: endpoint.name, reason }).inc();
  }
  writeRawResponse(socket, status, `${status} ${http.STATUS_CODES[status]}\n`);
}

/** Checks a `node:http` request head; answers and returns false when it is refused. */
function acceptHead(endpoint: EndpointState, req: http.IncomingMessage, socket: Duplex): boolean {
  const problem = headProblem(req.httpVersionMajor, req.httpVersionMinor, req.rawHeaders);
  if (problem === null) return true;
  const res = (socket as { _httpMessage?: http.ServerResponse | null })._httpMessage;
  // The socket stays with Node until the response object lets go of it: answer through it.
  if (res != null && !res.headersSent) {
    const body = `${problem[0]} ${http.STATUS_CODES[problem[0]]}\n`;
    const conn = connOf(socket);
    if (conn !== undefined) {
      conn.closeReason = problem[1];
      ingressMetrics.connections_failed_total({ endpoint: endpoint.name, reason: problem[1] }).inc();
    }
    res.shouldKeepAlive = false;
    res.writeHead(problem[0], { 'content-type': 'text/plain', 'content-length': body.length });
    res.end(body);
    return false;
  }
  answerHeadProblem(endpoint, connOf(socket), socket, problem);
  return false;
}

/**
 * Answers a request the client got wrong (llhttp's error `code`, or a timeout) with its status
 * (400, 431 or 408) and closes the connection once the answer is written.
 */
export function answerClientError(
  endpoint: EndpointState,
  conn: IngressConnection | undefined,
  socket: Duplex,
  code: string,
): void {
  const [status, reason] = CLIENT_ERRORS[code] ?? [400, 'bad_request'];
  if (conn !== undefined) {
    conn.closeReason = reason;
    ingressMetrics.connections_failed_total({ endpoint: endpoint.name, reason }).inc();
    conn.telemetry?.apply(() => log.debug('bad request from client', { reason, code }));
  }
  writeRawResponse(socket, status, `${status} ${http.STATUS_CODES[status]}\n`);
}

/** The `node:http` on-ramp's handle: `serve` for a new connection, `adopt` for one mid-way. */
export interface Http1OnRamp extends SocketOnRamp {
  readonly server: http.Server;
  /** The keep-alive upstream pool this endpoint forwards through. */
  readonly pool: HttpPool;
  /**
   * Takes over a connection whose first bytes were already read (and pushed back with
   * `unshift`) by another reader: no silent-client timer, the parser starts with those bytes.
   */
  adopt(socket: net.Socket, conn: IngressConnection): void;
  /**
   * Serves `Upgrade` requests naming `protocol` (MASQUE's `connect-udp`, `connect-ip`) with
   * `handler` instead of the forwarding upgrade pipeline. The handler owns the socket.
   */
  handleUpgradeProtocol(protocol: string, handler: UpgradeProtocolHandler): void;
  close(): void;
}

/** Serves an `Upgrade` request for a protocol the proxy itself speaks; it owns `socket`. */
export type UpgradeProtocolHandler = (
  req: http.IncomingMessage,
  socket: Duplex,
  early: Buffer,
  conn: IngressConnection,
) => void;

/** The handler registered for one of the protocols an `Upgrade` header names, if any. */
function upgradeHandler(
  handlers: ReadonlyMap<string, UpgradeProtocolHandler>,
  upgrade: string | undefined,
): UpgradeProtocolHandler | undefined {
  if (handlers.size === 0 || upgrade === undefined) return undefined;
  for (const token of upgrade.split(',')) {
    const h = handlers.get(token.trim().toLowerCase());
    if (h !== undefined) return h;
  }
  return undefined;
}

/** Creates the HTTP/1.1 on-ramp of `endpoint`. */
export function createHttp1OnRamp(rt: Runtime, endpoint: EndpointState): Http1OnRamp {
  const ep = httpEndpoint(endpoint.settings);
  const pool = new HttpPool(rt);
  const server = http.createServer({
    maxHeaderSize: ep.max_header_size,
    headersTimeout: ep.header_read_timeout,
    requestTimeout: 0,
    keepAliveTimeout: ep.idle_timeout,
    connectionsCheckingInterval: Math.max(100, Math.min(1000, ep.header_read_timeout / 2)),
    requireHostHeader: false,
    noDelay: true,
  });
  // A client that half-closes after its request (FIN) still gets the response; the connection
  // closes once it is written (endpoints accept with allowHalfOpen).
  (server as { httpAllowHalfOpen?: boolean }).httpAllowHalfOpen = true;

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const conn = connOf(req.socket);
    if (conn === undefined) {
      res.destroy();
      return;
    }
    if (!acceptHead(endpoint, req, req.socket)) {
      req.resume();
      return;
    }
    const target = parseAbsoluteTarget(req.url ?? '');
    if (target === null || target.scheme !== 'http') {
      const body = '400 a forward proxy needs an absolute-form http:// target or CONNECT\n';
      res.writeHead(400, {
        'content-type': 'text/plain',
        'content-length': body.length,
        connection: 'close',
      });
      res.end(body);
      return;
    }
    serveForward(rt, pool, conn, req, res, target);
  });

  server.on('connect', (req: http.IncomingMessage, socket: Duplex, early: Buffer) => {
    const conn = connOf(socket);
    if (conn === undefined) {
      socket.destroy();
      return;
    }
    if (!acceptHead(endpoint, req, socket)) return;
    const target = parseAuthority(req.url ?? '');
    if (target === null) {
      writeRawResponse(socket, 400, '400 CONNECT needs a host:port target\n');
      return;
    }
    clearSilent.call(socket); // a CONNECT head arrived: the client is not silent
    socket.on('error', () => {}); // the tunnel's pump reports errors; before it, a reset only ends the attempt
    void serveConnect(rt, conn, new Http1ConnectExchange(req.url ?? '', req.headers, socket, early), target);
  });

  const upgradeHandlers = new Map<string, UpgradeProtocolHandler>();
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, early: Buffer) => {
    const conn = connOf(socket);
    if (!acceptHead(endpoint, req, socket)) return;
    const own = conn === undefined ? undefined : upgradeHandler(upgradeHandlers, req.headers.upgrade);
    if (own !== undefined && conn !== undefined) {
      clearSilent.call(socket);
      own(req, socket, early, conn);
      return;
    }
    const target = parseAbsoluteTarget(req.url ?? '');
    if (conn === undefined || target === null || target.scheme !== 'http') {
      writeRawResponse(socket, 400, '400 Upgrade needs an absolute-form http:// target\n');
      return;
    }
    socket.on('error', () => {});
    void serveUpgrade(rt, conn, req, socket, early, target);
  });

  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    const code = err.code ?? '';
    if (code === 'ECONNRESET' || code === 'EPIPE' || !socket.writable) {
      socket.destroy();
      return;
    }
    // A response already under way cannot be followed by an error status: just close. (A
    // request whose body turned out malformed has a response object that has not started.)
    const pending = (socket as { _httpMessage?: http.ServerResponse | null })._httpMessage;
    if (pending?.headersSent) {
      socket.destroy();
      return;
    }
    answerClientError(endpoint, connOf(socket), socket, code);
  });

  const closeIfSilent = (socket: TaggedSocket, conn: IngressConnection): void => {
    socket[kSilent] = undefined;
    socket.off('close', clearSilent);
    if (socket.bytesRead === 0 && !socket.destroyed) {
      conn.closeReason = 'header_timeout';
      ingressMetrics.connections_failed_total({ endpoint: endpoint.name, reason: 'header_timeout' }).inc();
      socket.destroy();
    }
  };

  // Node starts its header/request timeout checks when an HTTP server listens; this one never
  // listens itself (sockets come from the endpoint), so start them the same way.
  server.emit('listening');

  return {
    protocol: 'http/1.1',
    server,
    pool,
    adopt(socket: net.Socket, conn: IngressConnection): void {
      (socket as TaggedSocket)[kConn] = conn;
      server.emit('connection', socket);
    },
    handleUpgradeProtocol(protocol: string, handler: UpgradeProtocolHandler): void {
      upgradeHandlers.set(protocol.toLowerCase(), handler);
    },
    close(): void {
      server.close();
      pool.destroy();
    },
    serve(socket: net.Socket, conn: IngressConnection): void {
      (socket as TaggedSocket)[kConn] = conn;
      server.emit('connection', socket);
      // Node's header timeout starts with the first byte; a client that sends nothing at all
      // is closed here after the same time.
      const s = socket as TaggedSocket;
      s[kSilent] = setTimeout(closeIfSilent, ep.header_read_timeout, s, conn).unref();
      s.once('close', clearSilent);
    },
  };
}
