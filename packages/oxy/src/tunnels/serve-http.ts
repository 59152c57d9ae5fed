/**
 * HTTP served on a tunnel's bytes: the decrypted stream of an intercepted HTTPS tunnel
 * (HTTP/1.1 or, when ALPN chose it, HTTP/2) and plain HTTP inside a CONNECT a hook sent to
 * HTTP. Each request goes through the same engine and forwarding pipeline as a plain one
 * (`onramps/http1/lean.ts` `serveHttp1Stream`, `flows/http/exchange.ts`: request hook, body
 * stages, egress decision, response hook, audit), with its kind (`intercepted` or
 * `tunnelled`), the tunnel's request as its parent, and the CONNECT target as its origin: every
 * request goes there, through the endpoint's upstream pool (a pooled https connection is
 * verified for the same name, so it is shared only between requests to that name).
 *
 * Ordering rule: the stream is handed over after the tunnel's TLS (if any) finished; the
 * promise settles when the stream closed, after which the caller writes the tunnel's record.
 */
import { once } from 'node:events';
import type http from 'node:http';
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import type { RequestKind } from '../context/contexts.ts';
import type { IngressConnection, RequestState } from '../context/state.ts';
import { serveForward } from '../flows/http/forward.ts';
import { parseAbsoluteTarget } from '../flows/http/headers.ts';
import { endpointPool, serveHttp1Stream } from '../onramps/http1/lean.ts';
import { ForwardResponse, forwardRequest, respondText } from '../onramps/http2/exchange.ts';
import { classifyRequest } from '../onramps/http2/headers.ts';
import type { Runtime } from '../runtime.ts';
import { httpEndpoint } from '../settings.ts';
import { withPrefix } from './tls-intercept/terminate.ts';

/** What a tunnel's HTTP is served with. */
export interface TunnelHttpOptions {
  /** `intercepted` or `tunnelled`. */
  readonly kind: RequestKind;
  /** The tunnel's CONNECT request. */
  readonly parent: RequestState;
  /** The scheme and authority requests are forwarded to (the CONNECT target). */
  readonly origin: { readonly scheme: 'http' | 'https'; readonly authority: string };
  /** The name an https origin's certificate must match (the client's SNI, else the target host). */
  readonly serverName: string;
}

interface Served {
  readonly rt: Runtime;
  readonly conn: IngressConnection;
  readonly options: TunnelHttpOptions;
}

/**
 * Forwards one request read inside a tunnel: origin-form (`GET /x`, the usual case) or an
 * absolute-form naming the tunnel's own scheme; it always goes to the CONNECT target.
 */
function forwardInside(
  served: Served,
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse,
  url: string,
  host: string | undefined,
): void {
  const { rt, conn, options } = served;
  let path = url;
  if (!url.startsWith('/')) {
    const abs = parseAbsoluteTarget(url);
    if (abs === null || abs.scheme !== options.origin.scheme) {
      const body = '400 a request inside a tunnel needs an origin-form target\n';
      res.writeHead(400, { 'content-type': 'text/plain', 'content-length': body.length });
      res.end(body);
      return;
    }
    path = abs.path;
  }
  const target = {
    scheme: options.origin.scheme,
    authority: host ?? options.origin.authority,
    addr: options.parent.target,
    path,
    serverName: options.serverName,
  };
  const pool = endpointPool(rt, conn.endpoint);
  serveForward(rt, pool, conn, req, res, target, { kind: options.kind, parent: options.parent });
}

/**
 * Serves HTTP/1.1 on `stream` (a tunnel's bytes, decrypted or plain) for `conn` with the one
 * HTTP/1.1 engine, each request through the forwarding pipeline as {@link TunnelHttpOptions}
 * say. Settles when the stream closed.
 */
export async function serveTunnelHttp(
  rt: Runtime,
  stream: Duplex,
  conn: IngressConnection,
  options: TunnelHttpOptions,
): Promise<void> {
  const closed = once(stream, 'close').catch(() => undefined);
  serveHttp1Stream(rt, conn.endpoint, stream, conn, {
    kind: options.kind,
    parent: options.parent,
    origin: { ...options.origin, addr: options.parent.target, serverName: options.serverName },
  });
  await closed;
}

let h2server: http2.Http2Server | null = null;
let pending: Served | null = null;
const kSession = Symbol('oxy.tunnelHttp2');
type TaggedSession = http2.ServerHttp2Session & { [kSession]?: Served };

/** The HTTP/2 server that reads intercepted tunnels whose client chose `h2` (made on first use). */
function http2Server(): http2.Http2Server {
  if (h2server !== null) return h2server;
  const server = http2.createServer({ settings: { enablePush: false } });
  server.on('session', (s: http2.ServerHttp2Session) => {
    const served = pending ?? undefined;
    (s as TaggedSession)[kSession] = served;
    s.on('error', () => {}); // the tunnel ends with its socket; nothing else to tell
    // Idle like the endpoint's own sessions: closed (GOAWAY) after `idle_timeout` without frames.
    const idle = served === undefined ? 0 : httpEndpoint(served.conn.endpoint.settings).idle_timeout;
    if (idle > 0) s.setTimeout(idle, () => s.close());
  });
  server.on('stream', (stream: http2.ServerHttp2Stream, headers, _flags, rawHeaders: string[]) => {
    stream.on('error', () => {});
    const served = (stream.session as TaggedSession | undefined)?.[kSession];
    if (served === undefined) {
      stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      return;
    }
    const shape = classifyRequest(headers);
    if (shape.kind !== 'request') {
      const status = shape.kind === 'invalid' ? shape.status : 501;
      respondText(stream, status, `${status} not served inside a tunnel\n`);
      return;
    }
    const req = forwardRequest(stream, headers, rawHeaders);
    const res = new ForwardResponse(stream) as unknown as http.ServerResponse;
    forwardInside(served, req, res, shape.head.path, shape.head.authority || undefined);
  });
  h2server = server;
  return server;
}

/**
 * Serves HTTP/2 on `stream` (an intercepted tunnel's TLS socket whose client chose `h2`), each
 * stream's request through the forwarding pipeline as {@link TunnelHttpOptions} say. Settles
 * when the stream closed.
 */
export async function serveTunnelHttp2(
  rt: Runtime,
  stream: Duplex,
  conn: IngressConnection,
  options: TunnelHttpOptions,
): Promise<void> {
  const closed = once(stream, 'close').catch(() => undefined);
  pending = { rt, conn, options };
  try {
    // Through a plain JS stream: nghttp2 directly on this TLS socket stalls after the bytes
    // it found buffered (data the TLS socket read before the session existed).
    http2Server().emit('connection', withPrefix(Buffer.alloc(0), stream));
  } finally {
    pending = null;
  }
  await closed;
}
