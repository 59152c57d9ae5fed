/**
 * Clients for integration tests: the three ways traffic reaches an Oxy HTTP endpoint
 * (absolute-form requests, CONNECT over HTTP/1.1, CONNECT streams over HTTP/2) and a raw
 * socket for malformed input. Each waits for a real answer from the proxy; none mocks it.
 */
import { execFile } from 'node:child_process';
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
    // A stream a previous read left paused (readUntil puts bytes back) flows again.
    stream.resume();
  });
}

/**
 * Reads from `stream` until the text received (latin1) contains `marker` (a string, or a RegExp
 * match) and returns the text up to the end of it. Bytes after the marker are put back: the
 * stream is then left paused with them unshifted, for the next `readUntil` or `readBytes`.
 * Rejects when the stream ends first or after `timeoutMs` (default 5000).
 */
export async function readUntil(stream: Duplex, marker: string | RegExp, timeoutMs = 5000): Promise<string> {
  let text = '';
  const matchEnd = (): number => {
    if (typeof marker === 'string') {
      const at = text.indexOf(marker);
      return at < 0 ? -1 : at + marker.length;
    }
    const m = marker.exec(text);
    return m === null ? -1 : m.index + m[0].length;
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => finish(new Error(`no ${String(marker)} before the timeout in: ${text}`)),
      timeoutMs,
    );
    function finish(err?: Error): void {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      if (err) reject(err);
      else resolve(text);
    }
    function onData(c: Buffer): void {
      text += c.toString('latin1');
      const end = matchEnd();
      if (end < 0) return;
      const rest = text.slice(end);
      text = text.slice(0, end);
      finish();
      if (rest !== '') {
        stream.pause();
        stream.unshift(Buffer.from(rest, 'latin1'));
      }
    }
    function onEnd(): void {
      finish(new Error(`the stream ended before ${String(marker)} in: ${text}`));
    }
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('close', onEnd);
    stream.resume();
  });
}

/**
 * Opens a plain TCP connection to the proxy and writes `bytes` (if any) once connected: for
 * hand-written requests whose answer the test reads itself (`readBytes`, `readUntil`,
 * {@link waitForClose}). Destroy it before stopping the app.
 */
export function rawConnect(proxy: ProxyAddress, bytes?: string | Buffer): net.Socket {
  const { host, port } = split(proxy);
  const socket = net.connect(port, host);
  if (bytes !== undefined) socket.write(bytes);
  return socket;
}

/**
 * Resolves with the milliseconds it took once `socket` closes; rejects after `timeoutMs` (default
 * 5000). Resumes the socket, so what still arrives goes to the test's listeners (or nowhere).
 */
export async function waitForClose(socket: net.Socket | Duplex, timeoutMs = 5000): Promise<number> {
  const t0 = performance.now();
  if (socket.destroyed && (socket as { closed?: boolean }).closed) return 0;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the socket stayed open for ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(performance.now() - t0);
    });
    // A paused socket never reads the FIN that closes it: let it flow (to the test's listeners).
    socket.resume();
  });
}

/** What a curl run gave. */
export interface CurlResult {
  /** curl's exit code (0 on success; e.g. 56 when a CONNECT is refused). */
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs curl, the reference client, with `-sS --max-time` and `args` (e.g.
 * `['-x', 'http://127.0.0.1:8080', '-p', url]`). Resolves with its exit code and output; never
 * rejects, so a test can assert on a failing run.
 */
export function curl(args: readonly string[], timeoutMs = 10_000): Promise<CurlResult> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', String(timeoutMs / 1000), ...args], (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}
