/**
 * Peers for integration tests: real servers on loopback with ephemeral ports, that an app
 * under test proxies to. Each returns its address and an async `close()` that also ends the
 * connections it still holds, so a test's `after()` leaves nothing behind.
 */
import { once } from 'node:events';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { type GeneratedCertificate, generateCertificate } from './certs.ts';

/** A loopback server started for a test. */
export interface Peer {
  readonly host: string;
  readonly port: number;
  /** `host:port`, with brackets for IPv6. */
  readonly authority: string;
  /** Stops listening and destroys every connection still open. */
  close(): Promise<void>;
}

/** A canned answer for one route of {@link startHttpUpstream}. */
export interface RouteResponse {
  readonly status?: number;
  readonly headers?: Record<string, string>;
  readonly body?: string | Buffer;
}

/** A route handler: a canned answer, or a function that writes the response itself. */
export type Route = RouteResponse | ((req: http.IncomingMessage, res: http.ServerResponse) => void);

/** A request as the upstream saw it. */
export interface SeenRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
}

/** An HTTP upstream that records what reached it. */
export interface HttpUpstream extends Peer {
  /** Every request received, in order. */
  readonly requests: SeenRequest[];
  /** The origin to use in absolute-form URLs, e.g. `http://127.0.0.1:41234`. */
  readonly origin: string;
  /** Connections accepted so far (to check that the proxy reuses its upstream connections). */
  readonly accepted: () => number;
}

function tracked(server: net.Server): Set<net.Socket> {
  const sockets = new Set<net.Socket>();
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return sockets;
}

async function listen(server: net.Server, host: string): Promise<AddressInfo> {
  server.listen(0, host);
  await once(server, 'listening');
  return server.address() as AddressInfo;
}

function peerOf(server: net.Server, addr: AddressInfo, sockets: Set<net.Socket>): Peer {
  const host = addr.address;
  const authority = host.includes(':') ? `[${host}]:${addr.port}` : `${host}:${addr.port}`;
  return {
    host,
    port: addr.port,
    authority,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function routeHandler(routes: Record<string, Route>, seen: SeenRequest[]): http.RequestListener {
  return (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      seen.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks),
      });
      const route = routes[`${req.method} ${path}`] ?? routes[path];
      if (route === undefined) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      } else if (typeof route === 'function') {
        route(req, res);
      } else {
        res.writeHead(route.status ?? 200, route.headers).end(route.body ?? '');
      }
    });
  };
}

/** Options of {@link startHttpUpstream}. */
export interface HttpUpstreamOptions {
  /**
   * Handles requests that ask to switch protocols (`Upgrade`), as `http.Server`'s `upgrade`
   * event; the socket is closed with the others on `close()`.
   */
  readonly upgrade?: (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void;
}

/**
 * Starts an HTTP/1.1 upstream with keep-alive. Routes are keyed `'GET /path'` or `'/path'`;
 * anything else is 404. `host` defaults to 127.0.0.1.
 */
export async function startHttpUpstream(
  routes: Record<string, Route> = {},
  host = '127.0.0.1',
  options: HttpUpstreamOptions = {},
): Promise<HttpUpstream> {
  const requests: SeenRequest[] = [];
  const server = http.createServer({ keepAliveTimeout: 5000 }, routeHandler(routes, requests));
  const sockets = tracked(server);
  const { upgrade } = options;
  if (upgrade !== undefined) server.on('upgrade', upgrade);
  let accepted = 0;
  server.on('connection', () => accepted++);
  const addr = await listen(server, host);
  const peer = peerOf(server, addr, sockets);
  return { ...peer, requests, origin: `http://${peer.authority}`, accepted: () => accepted };
}

/** An HTTPS upstream with a certificate generated for it. */
export interface TlsUpstream extends HttpUpstream {
  readonly certificate: GeneratedCertificate;
}

/** Starts an HTTPS upstream whose certificate names `localhost`, 127.0.0.1 and ::1 (or `dnsNames`). */
export async function startTlsUpstream(
  routes: Record<string, Route> = {},
  options: { dnsNames?: string[]; certificate?: GeneratedCertificate } = {},
): Promise<TlsUpstream> {
  const certificate =
    options.certificate ??
    (await generateCertificate(options.dnsNames ? { dnsNames: options.dnsNames } : {}));
  const requests: SeenRequest[] = [];
  const server = https.createServer(
    { cert: certificate.certPem, key: certificate.keyPem },
    routeHandler(routes, requests),
  );
  const sockets = new Set<net.Socket>();
  server.on('secureConnection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  for (const s of tracked(server)) sockets.add(s);
  let accepted = 0;
  server.on('connection', () => accepted++);
  const addr = await listen(server, '127.0.0.1');
  const peer = peerOf(server, addr, sockets);
  return { ...peer, requests, origin: `https://${peer.authority}`, certificate, accepted: () => accepted };
}

/** A TCP server that counts what it saw. */
export interface TcpPeer extends Peer {
  /** Connections accepted so far. */
  readonly accepted: () => number;
  /** Connections open now. */
  readonly open: () => number;
}

/** Starts a TCP echo server: every byte read is written back; FIN is answered with FIN. */
export async function startTcpEcho(host = '127.0.0.1'): Promise<TcpPeer> {
  let accepted = 0;
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    accepted++;
    s.on('error', () => s.destroy());
    s.pipe(s);
  });
  const sockets = tracked(server);
  const addr = await listen(server, host);
  return { ...peerOf(server, addr, sockets), accepted: () => accepted, open: () => sockets.size };
}

/**
 * Starts a TCP server that accepts and then holds every connection open without reading or
 * writing, as a slow or stuck upstream would. `greeting`, if set, is written on accept.
 */
export async function startHoldOpenServer(greeting?: string, host = '127.0.0.1'): Promise<TcpPeer> {
  let accepted = 0;
  const server = net.createServer((s) => {
    accepted++;
    s.on('error', () => s.destroy());
    if (greeting !== undefined) s.write(greeting);
  });
  const sockets = tracked(server);
  const addr = await listen(server, host);
  return { ...peerOf(server, addr, sockets), accepted: () => accepted, open: () => sockets.size };
}

/**
 * Starts a TCP server that hands each accepted connection to `onConnection` (errors on it are
 * swallowed): for peers with behaviour of their own, e.g. one that records the client address.
 */
export async function startTcpServer(
  onConnection: (socket: net.Socket) => void,
  host = '127.0.0.1',
): Promise<TcpPeer> {
  let accepted = 0;
  const server = net.createServer((s) => {
    accepted++;
    s.on('error', () => s.destroy());
    onConnection(s);
  });
  const sockets = tracked(server);
  const addr = await listen(server, host);
  return { ...peerOf(server, addr, sockets), accepted: () => accepted, open: () => sockets.size };
}

/**
 * A loopback port nothing listens on (bound, then released), for "connection refused" cases.
 * Another process could take it meanwhile; on a test machine that is rare enough.
 */
export async function unusedPort(host = '127.0.0.1'): Promise<number> {
  const server = net.createServer();
  const { port } = await listen(server, host);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
