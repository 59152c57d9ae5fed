/**
 * What the HTTP/1.1 on-ramp (`lean.ts`) shares with the rest of the proxy: the endpoint's
 * upstream pool and its `Upgrade` protocols (the {@link Http1OnRamp} handle), the CONNECT
 * exchange, and the answers to bad input. Bad input is answered as `node:http` answers it: a
 * malformed request or conflicting framing (`Content-Length` twice with different values, or
 * with `Transfer-Encoding`) → 400, a head over `max_header_size` → 431, a head not received
 * within `header_read_timeout` → 408; each closes the connection.
 */
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { log } from 'foundations/telemetry';
import type { EndpointState, IngressConnection } from '../../context/state.ts';
import { rawToHeaders } from '../../flows/http/headers.ts';
import { writeRawResponse } from '../../flows/http/upgrade.ts';
import { isOffloaded } from '../../flows/stream/offload.ts';
import type { HttpHeaders, RequestHead, ResponseHead } from '../../hooks/http-request.ts';
import { HttpPool } from '../../offramps/http/pool.ts';
import type { Runtime } from '../../runtime.ts';
import { ingressMetrics } from '../../telemetry/metrics.ts';
import type { ConnectExchange, SpliceableClient } from '../../tunnels/connect.ts';

/**
 * The CONNECT exchange of HTTP/1.1: the response is written on the socket, which becomes the
 * tunnel. The header object is built only if a hook asks for the head.
 */
export class Http1ConnectExchange implements ConnectExchange {
  readonly #authority: string;
  #headers: HttpHeaders | readonly string[];
  #head: RequestHead | null = null;
  readonly #socket: Duplex;

  /**
   * `headers` is Node's header object, or raw headers (`[name, value, …]`); `early`, the bytes
   * read after the head, goes back in front of the socket's input at once: a client that sent
   * them and its FIN in one go would otherwise see its input end, with them lost, before the
   * tunnel reads (Node emits 'end' as soon as the FIN meets an empty buffer).
   */
  constructor(
    authority: string,
    headers: HttpHeaders | readonly string[],
    socket: Duplex,
    early: Buffer | null,
  ) {
    this.#authority = authority;
    this.#headers = headers;
    this.#socket = socket;
    if (early !== null && early.length > 0) socket.unshift(early);
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
    return this.#socket;
  }

  reject(status: number, body: string): void {
    writeRawResponse(this.#socket, status, body);
  }

  clientStream(): Duplex {
    return this.#socket;
  }

  /** A plain TCP client with nothing queued for it can have its whole tunnel run by the addon. */
  spliceable(): SpliceableClient | null {
    const s = this.#socket;
    if (!(s instanceof net.Socket) || (s as { encrypted?: boolean }).encrypted === true) return null;
    if (isOffloaded(s) || s.writableLength > 0) return null;
    // The early bytes are in the socket's input, which the splice takes up first.
    return { socket: s, early: null, head: ESTABLISHED };
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

/** A request head as an `Upgrade` handler sees it (the fields of Node's `IncomingMessage` it uses). */
export interface Http1RequestHead {
  readonly method: string;
  readonly url: string;
  /** Fields by lower-case name (repeated ones joined as Node joins them). */
  readonly headers: HttpHeaders;
  /** `[name, value, …]` as received. */
  readonly rawHeaders: readonly string[];
  /** `1.1` or `1.0`. */
  readonly httpVersion: string;
}

/** Serves an `Upgrade` request for a protocol the proxy itself speaks; it owns `socket`. */
export type UpgradeProtocolHandler = (
  req: Http1RequestHead,
  socket: Duplex,
  early: Buffer,
  conn: IngressConnection,
) => void;

/** The handler registered for one of the protocols an `Upgrade` header names, if any. */
export function upgradeHandler(
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

/** An endpoint's HTTP/1.1 side: the upstream pool and the `Upgrade` protocols it serves itself. */
export interface Http1OnRamp {
  /** The keep-alive upstream pool this endpoint forwards through. */
  readonly pool: HttpPool;
  /** The registered `Upgrade` protocols, by lower-case token. */
  readonly upgradeHandlers: ReadonlyMap<string, UpgradeProtocolHandler>;
  /**
   * Serves `Upgrade` requests naming `protocol` (MASQUE's `connect-udp`, `connect-ip`) with
   * `handler` instead of the forwarding upgrade pipeline. The handler owns the socket.
   */
  handleUpgradeProtocol(protocol: string, handler: UpgradeProtocolHandler): void;
  /** Closes the pool's idle connections. */
  close(): void;
}

/** Creates the HTTP/1.1 side of an endpoint (its connections are served by `lean.ts`). */
export function createHttp1OnRamp(rt: Runtime): Http1OnRamp {
  const pool = new HttpPool(rt);
  const upgradeHandlers = new Map<string, UpgradeProtocolHandler>();
  return {
    pool,
    upgradeHandlers,
    handleUpgradeProtocol(protocol: string, handler: UpgradeProtocolHandler): void {
      upgradeHandlers.set(protocol.toLowerCase(), handler);
    },
    close(): void {
      pool.destroy();
    },
  };
}
