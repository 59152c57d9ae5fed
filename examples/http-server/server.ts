/**
 * One endpoint: an HTTP server answering from its routes. Each connection runs in a forked
 * telemetry context (its own log fields and a `connection` span); each request runs in a
 * context forked from its connection's, with a new trace linked to the connection's trace, so
 * a request's records carry the connection's fields plus its own and a long keep-alive
 * connection does not turn into one huge trace.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { formatListenAddr, type ListenAddr } from 'foundations/settings';
import { log, spanFn, TelemetryContext } from 'foundations/telemetry';
import { metrics } from './metrics.ts';
import type { EndpointSettings, ResponseSettings } from './settings.ts';

/** A running endpoint. */
export interface Endpoint {
  readonly name: string;
  /** Where it listens (the real port when the settings said 0). */
  readonly addr: ListenAddr;
  /** Stops accepting, lets requests in flight finish, then closes idle connections. */
  close(): Promise<void>;
}

let nextConnId = 0;

const respond = spanFn(
  'respond to request',
  (
    endpointName: string,
    routes: Readonly<Record<string, ResponseSettings>>,
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ) => {
    metrics.requests_total({ endpoint_name: endpointName }).inc();
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    TelemetryContext.current().addFields({ method: req.method, path });
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    const status = route?.status_code ?? 404;
    if (status >= 400)
      metrics.requests_failed_total({ endpoint_name: endpointName, status_code: status }).inc();
    log.info('request served', { status_code: status });
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(route?.response ?? 'Not found');
  },
);

/** Starts the endpoint `name`; resolves once it listens. */
export async function startEndpoint(name: string, settings: EndpointSettings): Promise<Endpoint> {
  const connections = new WeakMap<Socket, TelemetryContext>();
  const server = http.createServer();

  server.on('connection', (socket: Socket) => {
    metrics.active_connections({ endpoint_name: name }).inc();
    // The connection's context: its own log fields and a span that lasts as long as it does.
    TelemetryContext.current()
      .withForkedLog()
      .withSpan('connection')
      .apply(
        () =>
          new Promise<void>((resolve) => {
            const ctx = TelemetryContext.current().addFields({
              endpoint: name,
              conn_id: ++nextConnId,
              remote:
                socket.remoteAddress === undefined ? 'unix' : `${socket.remoteAddress}:${socket.remotePort}`,
            });
            connections.set(socket, ctx);
            log.debug('connection accepted');
            socket.once('close', () => {
              metrics.active_connections({ endpoint_name: name }).dec();
              ctx.apply(() => log.debug('connection closed'));
              resolve();
            });
          }),
      );
  });

  server.on('request', (req, res) => {
    const conn = connections.get(req.socket) ?? TelemetryContext.current();
    // Each request gets its own log, inherited from the connection's, and its own trace,
    // linked to the connection's.
    conn
      .withForkedLog()
      .withForkedTrace('request')
      .apply(() => respond(name, settings.routes, req, res));
  });

  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    metrics.failed_connections_total({ endpoint_name: name }).inc();
    (connections.get(socket) ?? TelemetryContext.current()).apply(() =>
      log.warn('failed to serve HTTP', { err: err.message, code: err.code }),
    );
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    else socket.destroy();
  });

  const addr = settings.addr;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (addr.kind === 'unix') server.listen(addr.path, resolve);
    else server.listen(addr.port, addr.host, resolve);
  });
  const bound = server.address();
  const actual: ListenAddr =
    typeof bound === 'object' && bound !== null
      ? { kind: 'tcp', host: (bound as AddressInfo).address, port: (bound as AddressInfo).port }
      : addr;
  log.info('endpoint started', { endpoint: name, addr: formatListenAddr(actual) });

  return {
    name,
    addr: actual,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}
