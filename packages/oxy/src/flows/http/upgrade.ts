/**
 * `Upgrade` through an absolute-form request (WebSocket over a plain forward proxy): the
 * request goes upstream like a forwarded one, but on its own connection (never pooled), and a
 * `101` turns both connections into a tunnel carried by the stream runner (`carryStream`). Any other answer is
 * relayed and the client connection closed.
 *
 * Order: `handleRequest` → egress pipeline (as for a tunnel) → request sent → `101` relayed →
 * `getAppTunnelPipeline` → the pipeline, splice or pump → audit record.
 */
import http from 'node:http';
import { createRequire } from 'node:module';
import type { Duplex } from 'node:stream';
import { formatHostPort } from '../../context/addr.ts';
import { EgressState, type IngressConnection, RequestState } from '../../context/state.ts';
import { connectTunnelEgress } from '../../egress/connect.ts';
import { clientReason, httpStatusFor, isOxyError, OXY_ERR, OxyError, toOxyError } from '../../errors.ts';
import type { RequestHead } from '../../hooks/http-request.ts';
import type { Http1RequestHead } from '../../onramps/http1/server.ts';
import type { Runtime } from '../../runtime.ts';
import { forkRequest } from '../../telemetry/fork.ts';
import { countFailure, errorBody, recordEnd } from '../record.ts';
import { carryStream } from '../stream/runner.ts';
import { type AbsoluteTarget, filterRawHeaders, stripHopByHop, toRawHeaders } from './headers.ts';
import { runRequestHook } from './request-hook.ts';

function destroyOnFinish(this: Duplex): void {
  this.destroy();
}

/**
 * Writes a complete HTTP/1.1 response on a raw socket and closes it once the response is
 * written: endpoints allow half-open sockets, and a client that keeps its side open must not
 * keep the connection.
 */
export function writeRawResponse(socket: Duplex, status: number, body: string, headers: string[] = []): void {
  let head = `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Unknown'}\r\n`;
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  head += `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n`;
  socket.once('finish', destroyOnFinish);
  socket.end(head + body);
}

/** Serves one `Upgrade` request; never throws. */
export function serveUpgrade(
  rt: Runtime,
  conn: IngressConnection,
  req: Http1RequestHead,
  socket: Duplex,
  clientHead: Buffer,
  target: AbsoluteTarget,
): Promise<void> {
  conn.requests++;
  conn.tunnels++;
  const request = new RequestState(conn, 'upgrade', req.method, target.addr, rt.ext);
  conn.endpoint.metrics.upgradeRequests.inc();
  return forkRequest(request, () => upgrade(rt, request, req, socket, clientHead, target))
    .catch((e: unknown) => {
      const status = httpStatusFor(e);
      request.status = status;
      countFailure(request, status);
      if (socket.writable) writeRawResponse(socket, status, errorBody(status, clientReason(e)));
      else socket.destroy();
      request.error = e;
      recordEnd(rt, request, 0, 0, isOxyError(e) ? e.code : 'error');
    })
    .finally(() => {
      conn.tunnels--;
    });
}

async function upgrade(
  rt: Runtime,
  request: RequestState,
  req: Http1RequestHead,
  socket: Duplex,
  clientHead: Buffer,
  target: AbsoluteTarget,
): Promise<void> {
  let head: RequestHead | null = null;
  let addr = request.target;
  const hook = rt.hooks.request;
  if (hook !== null) {
    const ran = await runRequestHook(rt, hook, request, target, req.headers);
    const d = ran.decision;
    if (d.kind !== 'forward') {
      const status = d.status;
      request.status = status;
      const body = d.kind === 'respond' ? String(d.body ?? '') : errorBody(status, d.reason);
      if (d.kind === 'block') countFailure(request, status);
      writeRawResponse(socket, status, body);
      if (d.kind === 'block') request.error = d.reason;
      recordEnd(rt, request, 0, 0, d.kind === 'block' ? 'blocked' : 'responded');
      return;
    }
    head = ran.head;
    addr = ran.addr;
  }

  const eg = new EgressState(request.ingress, request, addr, rt.ext);
  const c = await connectTunnelEgress(rt, eg, request.decisions);
  request.upstream = formatHostPort(c.remote.host, c.remote.port);
  const upstream = c.socket;
  let headers: string[];
  if (head === null) headers = filterRawHeaders(req.rawHeaders, 'host', true);
  else {
    const h = { ...head.headers };
    stripHopByHop(h, true);
    delete h.host;
    headers = toRawHeaders(h);
  }
  headers.push('Host', head?.authority ?? target.authority);

  const method = head?.method ?? request.method;
  let text = `${method} ${head?.path ?? target.path} HTTP/1.1\r\n`;
  for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
  await new Promise<void>((resolve, reject) => {
    const reader = new UpgradeAnswer(upstream, rt.settings.egress.response_timeout);
    let answered = false;
    // A client that leaves before the upstream answers takes the upstream connection with it.
    const onEarlyClose = (): void => {
      if (answered) return;
      answered = true;
      reader.close();
      upstream.destroy();
      recordEnd(rt, request, 0, 0, 'client_closed');
      resolve();
    };
    socket.once('close', onEarlyClose);
    reader.onError = (e) => {
      upstream.destroy();
      if (answered) return;
      answered = true;
      socket.off('close', onEarlyClose);
      reject(e);
    };
    reader.onSwitched = (statusText, raw, upHead) => {
      answered = true;
      socket.off('close', onEarlyClose);
      request.respondedAt = performance.now();
      request.status = 101;
      let out = `HTTP/1.1 101 ${statusText || 'Switching Protocols'}\r\n`;
      for (let i = 0; i < raw.length; i += 2) out += `${raw[i]}: ${raw[i + 1]}\r\n`;
      socket.write(`${out}\r\n`);
      if (upHead.length > 0) socket.write(upHead);
      if (clientHead.length > 0) upstream.write(clientHead);
      // From here the upgraded connection is a stream unit like any tunnel: the same carrier
      // (pipeline hook, splice or pump), metrics and audit record.
      carryStream(rt, request, eg, socket, upstream).then(resolve);
    };
    reader.onAnswer = (status, statusText, raw) => {
      answered = true;
      socket.off('close', onEarlyClose);
      request.respondedAt = performance.now();
      // Not switching: relay the answer, streamed (never held whole), and close, as the
      // client's connection is spent. A body without a length is delimited by the close.
      request.status = status;
      let out = `HTTP/1.1 ${status} ${statusText}\r\n`;
      let length: string | undefined;
      let chunked = false;
      for (let i = 0; i < raw.length; i += 2) {
        const name = (raw[i] as string).toLowerCase();
        if (name === 'content-length') length = raw[i + 1];
        else if (name === 'transfer-encoding') chunked = true;
      }
      const fields = filterRawHeaders(raw, 'content-length');
      for (let i = 0; i < fields.length; i += 2) out += `${fields[i]}: ${fields[i + 1]}\r\n`;
      if (length !== undefined && !chunked) out += `Content-Length: ${length}\r\n`;
      socket.write(`${out}Connection: close\r\n\r\n`);
      let bytesDown = 0;
      let done = false;
      const finish = (reason: string): void => {
        if (done) return;
        done = true;
        reader.close();
        upstream.destroy();
        recordEnd(rt, request, 0, bytesDown, reason);
        resolve();
      };
      reader.onBody = (d) => {
        bytesDown += d.length;
        if (!socket.write(d)) reader.pause();
      };
      socket.on('drain', () => reader.resume());
      reader.onEnd = () => {
        socket.once('finish', destroyOnFinish);
        socket.end();
        finish('not_upgraded');
      };
      reader.onError = () => {
        socket.destroy();
        finish('upstream_reset');
      };
      socket.once('close', () => finish('client_closed'));
    };
    upstream.write(`${text}\r\n`);
  });
}

/** Node's binding of llhttp (`_http_common`), typed with the members used here. */
interface NativeParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | Error;
  finish(): number | Error | undefined;
  close(): void;
  [callback: number]: unknown;
}
const { HTTPParser } = createRequire(import.meta.url)('_http_common') as {
  HTTPParser: {
    new (): NativeParser;
    readonly RESPONSE: number;
    readonly kOnHeaders: number;
    readonly kOnHeadersComplete: number;
    readonly kOnBody: number;
    readonly kOnMessageComplete: number;
    readonly kLenientNone: number;
  };
};

/**
 * The upstream's answer to an `Upgrade` request, read by llhttp (strict): a 101 hands over the
 * bytes after its head; any other final answer is streamed as it comes. 1xx other than 101 are
 * skipped. The answer must come within `egress.response_timeout`.
 */
class UpgradeAnswer {
  onSwitched: (statusText: string, rawHeaders: string[], rest: Buffer) => void = () => {};
  onAnswer: (status: number, statusText: string, rawHeaders: string[]) => void = () => {};
  onBody: (chunk: Buffer) => void = () => {};
  onEnd: () => void = () => {};
  onError: (e: Error) => void = () => {};
  readonly #socket: Duplex;
  readonly #parser: NativeParser;
  #fields: string[] = [];
  #switched = false;
  #answered = false;
  #closed = false;
  #executing = false;
  readonly #timer: NodeJS.Timeout | undefined;

  constructor(socket: Duplex, limitMs: number) {
    this.#socket = socket;
    const p = new HTTPParser();
    p.initialize(HTTPParser.RESPONSE, {}, http.maxHeaderSize, HTTPParser.kLenientNone);
    p[HTTPParser.kOnHeaders] = (headers: string[]) => {
      for (const h of headers) this.#fields.push(h);
    };
    p[HTTPParser.kOnHeadersComplete] = (
      _major: number,
      _minor: number,
      headers: string[] | undefined,
      _method: unknown,
      _url: unknown,
      status: number,
      statusText: string,
    ): number => {
      const raw = this.#fields.concat(headers ?? []);
      this.#fields = [];
      if (status === 101) {
        this.#switched = true;
        this.#switchedHead = [statusText, raw];
        return 2; // stop: what follows belongs to the new protocol
      }
      if (status < 200) return 0;
      this.#answer(status, statusText, raw);
      return 0;
    };
    p[HTTPParser.kOnBody] = (chunk: Buffer) => this.onBody(chunk);
    p[HTTPParser.kOnMessageComplete] = () => {
      if (this.#answered && !this.#switched) this.onEnd();
    };
    this.#parser = p;
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
    this.#timer =
      limitMs > 0
        ? setTimeout(() => {
            if (!this.#answered)
              this.#fail(
                new OxyError(OXY_ERR.RESPONSE_TIMEOUT, 'upstream response timeout', { source: 'upstream' }),
              );
          }, limitMs)
        : undefined;
  }

  #switchedHead: [string, string[]] | null = null;

  #answer(status: number, statusText: string, raw: string[]): void {
    this.#answered = true;
    clearTimeout(this.#timer);
    this.onAnswer(status, statusText, raw);
  }

  readonly #onData = (d: Buffer): void => {
    if (this.#closed) return;
    this.#executing = true;
    const r = this.#parser.execute(d);
    this.#executing = false;
    if (this.#closed) {
      this.#parser.close(); // closed from one of its callbacks: freed now, after `execute`
      return;
    }
    if (r instanceof Error) {
      this.#fail(r);
      return;
    }
    const sw = this.#switchedHead;
    if (sw !== null) {
      this.#switchedHead = null;
      this.#answered = true;
      clearTimeout(this.#timer);
      const rest = r < d.length ? d.subarray(r) : Buffer.alloc(0);
      this.close();
      this.#socket.pause();
      this.onSwitched(sw[0], sw[1], rest);
    }
  };

  readonly #onEnd = (): void => {
    if (this.#closed) return;
    // A body delimited by the close ends here.
    this.#executing = true;
    const r = this.#parser.finish();
    this.#executing = false;
    if (this.#closed) {
      this.#parser.close();
      return;
    }
    if (r instanceof Error) this.#fail(r);
    else if (!this.#answered) this.#fail(new Error('upstream closed the connection'));
  };

  readonly #onError = (e: Error): void => {
    this.#fail(e);
  };

  readonly #onClose = (): void => {
    if (!this.#closed) this.#fail(new Error('upstream closed the connection'));
  };

  #fail(e: Error): void {
    if (this.#closed) return;
    this.close();
    this.onError(toOxyError(e, OXY_ERR.UPSTREAM_FAILED, 'upstream'));
  }

  pause(): void {
    this.#socket.pause();
  }

  resume(): void {
    this.#socket.resume();
  }

  /** Stops reading (idempotent); the socket is left to its owner. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    const s = this.#socket;
    s.off('data', this.#onData);
    s.off('end', this.#onEnd);
    s.off('error', this.#onError);
    s.off('close', this.#onClose);
    // The native parser must not be freed under its own callbacks.
    if (!this.#executing) this.#parser.close();
  }
}
