/**
 * `Upgrade` through an absolute-form request (WebSocket over a plain forward proxy): the
 * request goes upstream like a forwarded one, but on its own connection (never pooled), and a
 * `101` turns both connections into a tunnel carried by the stream runner (`carryStream`). Any
 * other answer is relayed and the client connection closed.
 *
 * Order: `handleRequest` → egress pipeline (as for a tunnel) → request sent → answer head read
 * → `handleResponse` (when installed; it may edit the head, or refuse a `101`) → `101` relayed
 * → `getAppTunnelPipeline` → the pipeline, splice or pump → audit record.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import { formatHostPort } from '../../context/addr.ts';
import { EgressState, type IngressConnection, RequestState } from '../../context/state.ts';
import { connectTunnelEgress } from '../../egress/connect.ts';
import { clientReason, httpStatusFor, isOxyError } from '../../errors.ts';
import type { RequestHead, ResponseHead } from '../../hooks/http-request.ts';
import type { Http1RequestHead } from '../../onramps/http1/server.ts';
import type { Runtime } from '../../runtime.ts';
import { forkRequest } from '../../telemetry/fork.ts';
import { countFailure, errorBody, recordEnd } from '../record.ts';
import { carryStream } from '../stream/runner.ts';
import {
  type AbsoluteTarget,
  filterRawHeaders,
  rawToHeaders,
  stripHopByHop,
  toRawHeaders,
} from './headers.ts';
import { runRequestHook } from './request-hook.ts';
import { type AnswerHead, UpgradeAnswer } from './upgrade-answer.ts';

function noop(): void {}

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
  // Bytes an upstream proxy sent with its 200 are the tunnel's first: the answer starts there.
  if (c.head !== null) upstream.unshift(c.head);
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
  const reader = new UpgradeAnswer(upstream, rt.settings.egress.response_timeout);
  // A client that leaves before its answer is relayed takes the upstream connection with it.
  let clientLeft = false;
  const onEarlyClose = (): void => {
    clientLeft = true;
    reader.close();
    upstream.destroy();
  };
  socket.once('close', onEarlyClose);
  upstream.write(`${text}\r\n`);
  let answer: AnswerHead | null;
  let res: ResponseHead | null = null;
  try {
    answer = await reader.head;
    if (answer !== null) {
      request.respondedAt = performance.now();
      request.status = answer.status;
      const hook = rt.hooks.response;
      if (hook !== null) {
        // After a 101 nobody reads the upstream while the hook runs: an error it raises must
        // not go unheard (the carrier then finds it destroyed).
        upstream.on('error', noop);
        try {
          res = await runResponseHook(rt, hook, request, answer);
        } finally {
          upstream.off('error', noop);
        }
      }
    }
  } catch (e) {
    // The upstream failed or timed out, or the response hook threw: serveUpgrade answers it.
    reader.close();
    upstream.destroy();
    throw e;
  } finally {
    socket.off('close', onEarlyClose);
  }
  if (answer === null || clientLeft) {
    reader.close();
    upstream.destroy();
    recordEnd(rt, request, 0, 0, 'client_closed');
    return;
  }
  if (answer.rest !== null) {
    if (res === null || res.status === 101) {
      await switchProtocols(rt, request, eg, socket, upstream, clientHead, answer, answer.rest, res);
      return;
    }
    // The app turned the switch down: its answer goes to the client, the upstream connection
    // (already speaking the new protocol) is closed, as a CONNECT refused by its hook is.
    upstream.destroy();
    refuseSwitch(rt, request, socket, res);
    return;
  }
  await relayAnswer(rt, request, socket, upstream, reader, answer, res);
}

/** Answers the status a response hook put in place of a `101`, with its fields and no body of its own. */
function refuseSwitch(rt: Runtime, request: RequestState, socket: Duplex, res: ResponseHead): void {
  request.status = res.status;
  countFailure(request, res.status);
  const fields = { ...res.headers };
  stripHopByHop(fields);
  delete fields['content-length'];
  writeRawResponse(socket, res.status, errorBody(res.status, 'refused'), toRawHeaders(fields));
  recordEnd(rt, request, 0, 0, 'blocked');
}

/**
 * Runs `HttpRequestHook.handleResponse` on the upstream's answer and returns the head to send:
 * the hook's replacement, or the head it edited in place. A 1xx is no final answer, except a
 * `101` kept for an upstream that switched: anything else is the hook's failure (502).
 */
async function runResponseHook(
  rt: Runtime,
  hook: NonNullable<Runtime['hooks']['response']>,
  request: RequestState,
  answer: AnswerHead,
): Promise<ResponseHead> {
  const proposed: ResponseHead = { status: answer.status, headers: rawToHeaders(answer.rawHeaders) };
  let res: ResponseHead;
  try {
    res = (await hook(proposed, request)) ?? proposed;
  } catch (e) {
    throw rt.hookFailed('HttpRequestHook.handleResponse', e);
  }
  if (res.status < 200 && !(res.status === 101 && answer.rest !== null)) {
    const why = answer.rest === null ? 'an answer that did not switch protocols' : 'a 101';
    throw rt.hookFailed('HttpRequestHook.handleResponse', new Error(`returned ${res.status} for ${why}`));
  }
  return res;
}

/**
 * Relays a `101` (as received, or as the response hook left it) and hands both connections to
 * the stream runner: from here the upgraded connection is a stream unit like any tunnel, with
 * the same carrier (pipeline hook, splice or pump), metrics and audit record.
 */
function switchProtocols(
  rt: Runtime,
  request: RequestState,
  eg: EgressState,
  socket: Duplex,
  upstream: Duplex,
  clientHead: Buffer,
  answer: AnswerHead,
  upHead: Buffer,
  res: ResponseHead | null,
): Promise<void> {
  request.status = 101;
  let raw = answer.rawHeaders;
  if (res !== null) {
    const fields = { ...res.headers };
    stripHopByHop(fields, true);
    raw = toRawHeaders(fields);
  }
  let out = `HTTP/1.1 101 ${answer.statusText || 'Switching Protocols'}\r\n`;
  for (let i = 0; i < raw.length; i += 2) out += `${raw[i]}: ${raw[i + 1]}\r\n`;
  socket.write(`${out}\r\n`);
  if (upHead.length > 0) socket.write(upHead);
  if (clientHead.length > 0) upstream.write(clientHead);
  // What each side sent after its head went across above: counted as the tunnel's bytes.
  return carryStream(rt, request, eg, socket, upstream, upHead.length, clientHead.length);
}

/**
 * Relays an answer that is not a `101`: streamed (never held whole), then the client
 * connection is closed, as it is spent. A body without a length is delimited by the close.
 * The framing is the upstream's whatever the response hook did to the head, as the body is.
 */
function relayAnswer(
  rt: Runtime,
  request: RequestState,
  socket: Duplex,
  upstream: Duplex,
  reader: UpgradeAnswer,
  answer: AnswerHead,
  res: ResponseHead | null,
): Promise<void> {
  let length: string | undefined;
  let chunked = false;
  const upRaw = answer.rawHeaders;
  for (let i = 0; i < upRaw.length; i += 2) {
    const name = (upRaw[i] as string).toLowerCase();
    if (name === 'content-length') length = upRaw[i + 1];
    else if (name === 'transfer-encoding') chunked = true;
  }
  let status = answer.status;
  let statusText = answer.statusText;
  let fields: string[];
  if (res === null) fields = filterRawHeaders(upRaw, 'content-length');
  else {
    if (res.status !== status) statusText = http.STATUS_CODES[res.status] ?? '';
    status = res.status;
    const h = { ...res.headers };
    stripHopByHop(h);
    delete h['content-length'];
    fields = toRawHeaders(h);
  }
  request.status = status;
  let out = `HTTP/1.1 ${status} ${statusText}\r\n`;
  for (let i = 0; i < fields.length; i += 2) out += `${fields[i]}: ${fields[i + 1]}\r\n`;
  if (length !== undefined && !chunked) out += `Content-Length: ${length}\r\n`;
  socket.write(`${out}Connection: close\r\n\r\n`);
  return new Promise<void>((resolve) => {
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
    socket.on('drain', () => reader.resume());
    socket.once('close', () => finish('client_closed'));
    reader.relay({
      body: (d) => {
        bytesDown += d.length;
        if (!socket.write(d)) reader.pause();
      },
      end: () => {
        socket.once('finish', destroyOnFinish);
        socket.end();
        finish('not_upgraded');
      },
      error: () => {
        socket.destroy();
        finish('upstream_reset');
      },
    });
  });
}
