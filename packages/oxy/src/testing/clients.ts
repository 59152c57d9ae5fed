/**
 * Clients for integration tests: the three ways traffic reaches an Oxy HTTP endpoint
 * (absolute-form requests, CONNECT over HTTP/1.1, CONNECT streams over HTTP/2) and a raw
 * socket for malformed input. Each waits for a real answer from the proxy; none mocks it.
 */
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';

/** Where the proxy listens: `'127.0.0.1:8080'` or `{ host, port }`. */
export type ProxyAddress = string | { readonly host: string; readonly port: number };

function split(addr: ProxyAddress): { host: string; port: number } {
  if (typeof addr !== 'string') return { host: addr.host, port: addr.port };
  const i = addr.lastIndexOf(':');
  return { host: addr.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(addr.slice(i + 1)) };
}

/** A complete response as a client received it. */
export interface ClientResponse {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
  /** The body as UTF-8 text. */
  readonly text: string;
}

/** Options for {@link proxyRequest}. */
export interface ProxyRequestOptions {
  readonly method?: string;
  readonly headers?: Record<string, string>;
  readonly body?: string | Buffer;
  /** Reuse connections across calls (default: a new connection per request). */
  readonly agent?: http.Agent;
  readonly timeoutMs?: number;
}

/** Sends one absolute-form request (`GET http://host/path HTTP/1.1`) through the proxy. */
export async function proxyRequest(
  proxy: ProxyAddress,
  url: string,
  options: ProxyRequestOptions = {},
): Promise<ClientResponse> {
  const { host, port } = split(proxy);
  const target = new URL(url);
  const req = http.request({
    host,
    port,
    method: options.method ?? 'GET',
    path: url,
    headers: { host: target.host, ...options.headers },
    agent: options.agent ?? false,
    timeout: options.timeoutMs ?? 10_000,
  });
  req.on('timeout', () =>
    req.destroy(new Error(`no response from the proxy within ${options.timeoutMs ?? 10_000} ms`)),
  );
  req.end(options.body);
  const [res] = (await once(req, 'response')) as [http.IncomingMessage];
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  const body = Buffer.concat(chunks);
  return { status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString('utf8') };
}

/** An answered CONNECT: the tunnel socket is open when the status is 2xx. */
export interface Tunnel {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  /** The byte stream through the tunnel (or carrying the error body when refused). */
  readonly socket: Duplex;
  /** Bytes that arrived right behind the response head. */
  readonly head: Buffer;
}

/** Opens a CONNECT tunnel over HTTP/1.1 to `target` (`host:port`). */
export async function connectTunnel(
  proxy: ProxyAddress,
  target: string,
  options: { headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Tunnel> {
  const { host, port } = split(proxy);
  const req = http.request({
    host,
    port,
    method: 'CONNECT',
    path: target,
    headers: { host: target, ...options.headers },
    agent: false,
    timeout: options.timeoutMs ?? 10_000,
  });
  req.on('timeout', () => req.destroy(new Error('no CONNECT response from the proxy')));
  req.end();
  const [res, socket, head] = (await once(req, 'connect')) as [http.IncomingMessage, net.Socket, Buffer];
  return { status: res.statusCode ?? 0, headers: res.headers, socket, head };
}

/** An answered HTTP/2 CONNECT stream. */
export interface H2Tunnel {
  readonly status: number;
  readonly headers: http2.IncomingHttpHeaders;
  /** The CONNECT stream: a duplex carrying the tunnel's bytes. */
  readonly stream: http2.ClientHttp2Stream;
  readonly session: http2.ClientHttp2Session;
}

/**
 * Opens a CONNECT stream (RFC 9113 §8.5) to `target` over an HTTP/2 session: the given one,
 * or a new cleartext prior-knowledge session to the proxy (close it with `session.close()`).
 */
export async function connectTunnelH2(
  proxy: ProxyAddress | http2.ClientHttp2Session,
  target: string,
  headers: Record<string, string> = {},
): Promise<H2Tunnel> {
  let session: http2.ClientHttp2Session;
  if (typeof proxy === 'object' && 'request' in proxy) {
    session = proxy;
  } else {
    const { host, port } = split(proxy);
    session = http2.connect(`http://${host.includes(':') ? `[${host}]` : host}:${port}`);
    session.on('error', () => {});
  }
  const stream = session.request(
    { ':method': 'CONNECT', ':authority': target, ...headers },
    { endStream: false },
  );
  const [resHeaders] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
  return { status: Number(resHeaders[':status']), headers: resHeaders, stream, session };
}

/** What came back on a raw connection. */
export interface RawExchange {
  readonly data: Buffer;
  readonly text: string;
  /** True when the peer closed the connection (as opposed to the wait timing out). */
  readonly closed: boolean;
}

/**
 * Writes `bytes` on a fresh TCP connection and collects everything the proxy sends back
 * until it closes the connection or `timeoutMs` (default 2000) passes. For malformed input.
 */
export async function rawExchange(
  proxy: ProxyAddress,
  bytes: string | Buffer,
  options: { timeoutMs?: number } = {},
): Promise<RawExchange> {
  const { host, port } = split(proxy);
  const socket = net.connect(port, host);
  socket.on('error', () => {});
  await once(socket, 'connect');
  socket.write(bytes);
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  const closed = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), options.timeoutMs ?? 2000);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  socket.destroy();
  const data = Buffer.concat(chunks);
  return { data, text: data.toString('latin1'), closed };
}

/** Reads from `stream` until `n` bytes arrived (or it ends) and returns them. */
export async function readBytes(stream: Duplex, n: number, timeoutMs = 5000): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => finish(new Error(`read ${got} of ${n} bytes before the timeout`)),
      timeoutMs,
    );
    function finish(err?: Error): void {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      if (err) reject(err);
      else resolve(Buffer.concat(chunks));
    }
    function onData(c: Buffer): void {
      chunks.push(c);
      got += c.length;
      if (got >= n) finish();
    }
    function onEnd(): void {
      finish();
    }
    stream.on('data', onData);
    stream.on('end', onEnd);
  });
}
