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
import type { Duplex } from 'node:stream';
import { formatHostPort } from '../../context/addr.ts';
import { EgressState, type IngressConnection, RequestState } from '../../context/state.ts';
import { connectTunnelEgress } from '../../egress/connect.ts';
import { httpStatusFor, isOxyError, OXY_ERR, OxyError } from '../../errors.ts';
import type { RequestHead } from '../../hooks/http-request.ts';
import type { Runtime } from '../../runtime.ts';
import { forkRequest } from '../../telemetry/fork.ts';
import { countFailure, errorBody, recordEnd } from '../record.ts';
import { carryStream } from '../stream/runner.ts';
import { reasonOf } from './exchange.ts';
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
  req: http.IncomingMessage,
  socket: Duplex,
  clientHead: Buffer,
  target: AbsoluteTarget,
): Promise<void> {
  conn.requests++;
  conn.tunnels++;
  const request = new RequestState(conn, 'upgrade', req.method ?? 'GET', target.addr, rt.ext);
  conn.endpoint.metrics.upgradeRequests.inc();
  return forkRequest(request, () => upgrade(rt, request, req, socket, clientHead, target))
    .catch((e: unknown) => {
      const status = httpStatusFor(e);
      request.status = status;
      countFailure(request, status);
      if (socket.writable) writeRawResponse(socket, status, errorBody(status, reasonOf(e)));
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
  req: http.IncomingMessage,
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

  await new Promise<void>((resolve, reject) => {
    const upReq = http.request({
      createConnection: () => upstream as never,
      method: head?.method ?? request.method,
      path: head?.path ?? target.path,
      headers,
      setHost: false,
    });
    let answered = false;
    upReq.on('error', (e) => {
      upstream.destroy();
      if (answered) return;
      answered = true;
      socket.off('close', onEarlyClose);
      reject(e);
    });
    // A client that leaves before the upstream answers takes the upstream connection with it.
    const onEarlyClose = (): void => {
      if (answered) return;
      answered = true;
      upReq.destroy();
      upstream.destroy();
      recordEnd(rt, request, 0, 0, 'client_closed');
      resolve();
    };
    socket.once('close', onEarlyClose);
    // The answer (101 or not) must come within `egress.response_timeout`.
    const limit = rt.settings.egress.response_timeout;
    const timer =
      limit > 0
        ? setTimeout(() => {
            if (!answered)
              upReq.destroy(
                new OxyError(OXY_ERR.RESPONSE_TIMEOUT, 'upstream response timeout', { source: 'upstream' }),
              );
          }, limit)
        : undefined;
    upReq.once('close', () => clearTimeout(timer));
    upReq.on('response', (upRes) => {
      if (answered) return;
      answered = true;
      socket.off('close', onEarlyClose);
      request.respondedAt = performance.now();
      // Not switching: relay the answer, streamed (never held whole), and close, as the
      // client's connection is spent. A body without a length is delimited by the close.
      request.status = upRes.statusCode ?? 502;
      let out = `HTTP/1.1 ${request.status} ${upRes.statusMessage ?? ''}\r\n`;
      const raw = filterRawHeaders(upRes.rawHeaders, 'content-length');
      for (let i = 0; i < raw.length; i += 2) out += `${raw[i]}: ${raw[i + 1]}\r\n`;
      const length = upRes.headers['content-length'];
      if (length !== undefined && upRes.headers['transfer-encoding'] === undefined)
        out += `Content-Length: ${length}\r\n`;
      socket.write(`${out}Connection: close\r\n\r\n`);
      let bytesDown = 0;
      let done = false;
      const finish = (reason: string): void => {
        if (done) return;
        done = true;
        upstream.destroy();
        recordEnd(rt, request, 0, bytesDown, reason);
        resolve();
      };
      upRes.on('data', (d: Buffer) => {
        bytesDown += d.length;
        if (!socket.write(d)) upRes.pause();
      });
      socket.on('drain', () => upRes.resume());
      upRes.on('end', () => {
        socket.once('finish', destroyOnFinish);
        socket.end();
        finish('not_upgraded');
      });
      upRes.on('error', () => {
        socket.destroy();
        finish('upstream_reset');
      });
      socket.once('close', () => finish('client_closed'));
    });
    upReq.on('upgrade', (upRes, upSocket: Duplex, upHead: Buffer) => {
      if (answered) {
        upSocket.destroy();
        return;
      }
      answered = true;
      socket.off('close', onEarlyClose);
      request.respondedAt = performance.now();
      request.status = 101;
      let out = `HTTP/1.1 101 ${upRes.statusMessage ?? 'Switching Protocols'}\r\n`;
      for (let i = 0; i < upRes.rawHeaders.length; i += 2)
        out += `${upRes.rawHeaders[i]}: ${upRes.rawHeaders[i + 1]}\r\n`;
      socket.write(`${out}\r\n`);
      if (upHead.length > 0) socket.write(upHead);
      if (clientHead.length > 0) upSocket.write(clientHead);
      // From here the upgraded connection is a stream unit like any tunnel: the same carrier
      // (pipeline hook, splice or pump), metrics and audit record.
      carryStream(rt, request, eg, socket, upSocket).then(resolve);
    });
    upReq.end();
  });
}
