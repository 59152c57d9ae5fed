/**
 * One forwarded exchange on the `http.request` path (bodies, hooks, HTTP/2): the request sent
 * upstream with its body streamed up, the response head through `handleResponse`, the body
 * streamed down. Split from `forward.ts`, which decides and routes; this owns how an exchange
 * ends. A body with a stage (`body-stage.ts`: body hooks, size limits) is pumped through it
 * (`body-pump.ts`) instead of piped; a stop from it fails the exchange like any failure.
 *
 * Ordering rules: whatever ends the exchange (completion, a client reset or hang-up, a stalled
 * body, no response head in time, an upstream failure), it settles once: exactly one audit
 * record, and the upstream request either complete (its connection back in the pool) or
 * destroyed. Until the response head is sent a failure rejects, for the caller to answer with
 * an error status and record; afterwards the response is cut.
 */
import http from 'node:http';
import http2 from 'node:http2';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { formatHostPort } from '../../context/addr.ts';
import type { RequestState } from '../../context/state.ts';
import type { EgressRequestOptions } from '../../egress/agent.ts';
import { httpStatusFor, OXY_ERR, OxyError, toOxyError } from '../../errors.ts';
import type { RequestHead, ResponseHead } from '../../hooks/http-request.ts';
import type { Runtime } from '../../runtime.ts';
import { httpEndpoint } from '../../settings.ts';
import { recordEnd } from '../record.ts';
import { type BodyPump, pumpBody, withoutLength } from './body-pump.ts';
import { type BodyStage, responseBodyStage } from './body-stage.ts';
import type { IncomingRequest } from './forward.ts';
import { filterRawHeaders, stripHopByHop, toRawHeaders } from './headers.ts';

/**
 * True when the response reached its end on the client side. On HTTP/1.1 that is the
 * response's own `writableFinished`; the HTTP/2 compatibility response (and its stream) report
 * `true` there as soon as the stream closes, a client's RST_STREAM included, so HTTP/2 asks
 * how the stream closed: without an error code, after we ended our side.
 */
function responseComplete(res: http.ServerResponse): boolean {
  const stream = (res as { stream?: http2.ServerHttp2Stream }).stream;
  if (stream === undefined) return res.writableFinished;
  return stream.writableEnded && (stream.rstCode ?? 0) === http2.constants.NGHTTP2_NO_ERROR;
}

/** True when the client can no longer get this response (it reset the stream, or hung up). */
function clientGone(res: http.ServerResponse): boolean {
  const stream = (res as { stream?: Duplex }).stream;
  if (stream !== undefined) return stream.destroyed;
  return res.destroyed || (res.socket?.destroyed ?? true);
}

/**
 * Sends the request upstream, streams its body up and the response down. Settles once the
 * exchange is over however it ends, with exactly one audit record written and the upstream
 * request either complete (its connection back in the pool) or destroyed; rejects (nothing
 * recorded yet: the caller answers and records) only while the client can still get an error
 * status. `requestStage` is the request body's stage (null: piped as it is); `bodyHead` is the
 * head the response body's filter is chosen with.
 */
export function exchange(
  rt: Runtime,
  request: RequestState,
  req: IncomingRequest,
  res: http.ServerResponse,
  options: EgressRequestOptions,
  bodyHead: RequestHead,
  requestStage: BodyStage | null,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (clientGone(res)) {
      // The client left while the hooks or the egress decision ran: nothing to send.
      requestStage?.abort('client_closed');
      req.resume();
      recordEnd(rt, request, 0, 0, 'client_closed');
      resolve();
      return;
    }
    const upReq = http.request(options);
    upReq.once('socket', (s) => upstreamOf(request, upReq, s));
    let bytesUp = 0;
    let bytesDown = 0;
    let settled = false;
    let bodyTimer: NodeJS.Timeout | undefined;
    let upResponse: http.IncomingMessage | null = null;
    // Bodies going through their stages; cancelled however the exchange ends.
    let requestPump: BodyPump | null = null;
    let responsePump: BodyPump | null = null;
    const bodyTimeout = httpEndpoint(request.ingress.endpoint.settings).body_read_timeout;

    /** Ends the exchange with its record; the upstream request is dropped unless it completed. */
    const settle = (reason: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(bodyTimer);
      req.unpipe(upReq);
      requestPump?.cancel(reason);
      responsePump?.cancel(reason);
      if (options.oxyCancel !== undefined) options.oxyCancel.cancelled = true;
      if (!upReq.writableFinished || upResponse === null || !upResponse.complete) upReq.destroy();
      recordEnd(rt, request, bytesUp, bytesDown, reason);
      resolve();
    };
    /** Fails the exchange: an error status while none was sent, otherwise the response is cut. */
    const fail = (e: OxyError): void => {
      if (settled) return;
      if (res.headersSent) {
        request.error = e;
        request.status = httpStatusFor(e);
        cutResponse(res);
        settle(e.code);
        return;
      }
      settled = true;
      clearTimeout(bodyTimer);
      req.unpipe(upReq);
      requestPump?.cancel(e.code);
      responsePump?.cancel(e.code);
      if (options.oxyCancel !== undefined) options.oxyCancel.cancelled = true;
      upReq.destroy();
      // The request body was not read to its end: the connection cannot carry another request.
      if (!req.complete) closeAfterResponse(req, res);
      reject(e);
    };

    upReq.on('error', (e) => fail(toOxyError(e, OXY_ERR.UPSTREAM_FAILED, 'upstream')));
    // Once the request is sent, its response head must come within `egress.response_timeout`.
    const responseLimit = rt.settings.egress.response_timeout;
    let responseTimer: NodeJS.Timeout | undefined;
    if (responseLimit > 0)
      upReq.once('finish', () => {
        if (settled || upResponse !== null) return;
        responseTimer = setTimeout(() => {
          if (upResponse === null)
            fail(new OxyError(OXY_ERR.RESPONSE_TIMEOUT, 'upstream response timeout', { source: 'upstream' }));
        }, responseLimit);
      });
    res.once('close', () => clearTimeout(responseTimer));
    upReq.once('close', () => clearTimeout(responseTimer));
    // A 101 to a request that did not ask to switch (hop-by-hop `Upgrade` is never forwarded):
    // Node reports it as an upgrade, or as an informational response followed by nothing.
    upReq.on('upgrade', (_upRes, socket: Duplex) => {
      socket.destroy();
      fail(switchedUnasked());
    });
    upReq.on('information', (info: { statusCode: number }) => {
      if (info.statusCode === 101) fail(switchedUnasked());
    });
    res.on('close', () =>
      settle(upResponse?.complete === true && responseComplete(res) ? 'done' : 'client_closed'),
    );
    upReq.on('response', (upRes) => {
      if (settled) {
        upRes.destroy();
        return;
      }
      if (upRes.statusCode === 101) {
        // A 101 without `Upgrade` reaches here as a final response: nothing can follow it.
        upRes.destroy();
        fail(switchedUnasked());
        return;
      }
      upResponse = upRes;
      request.respondedAt = performance.now();
      clearTimeout(responseTimer);
      relayResponse(rt, request, upRes, res, bodyHead).then(
        (body) => {
          if (settled) {
            body?.stage.abort('client_closed');
            return;
          }
          upRes.on('data', (chunk: Buffer) => {
            bytesDown += chunk.length;
          });
          upRes.on('error', () => cutResponse(res));
          if (body === null) upRes.pipe(res);
          // The head goes with the stage's first bytes: a stop before them is answered with its
          // status (`fail`); a stop after them cuts the response, with the stop's status recorded.
          else
            responsePump = pumpBody(
              upRes,
              body.stage,
              res,
              (e) => fail(toOxyError(e, OXY_ERR.UPSTREAM_FAILED, 'upstream')),
              body.sendHead,
            );
          // A body that makes no progress for a whole `egress.response_timeout` (the upstream
          // stopped sending, or the client stopped reading) is cut.
          if (responseLimit > 0) {
            let seen = -1;
            const stall = setTimeout(function check() {
              if (settled) return;
              if (bytesDown !== seen) {
                seen = bytesDown;
                stall.refresh();
                return;
              }
              settle(OXY_ERR.RESPONSE_TIMEOUT);
              cutResponse(res);
            }, responseLimit);
            res.once('close', () => clearTimeout(stall));
          }
        },
        (e: unknown) => fail(toOxyError(e, OXY_ERR.UPSTREAM_FAILED, 'upstream')),
      );
    });
    if (requestStage === null && req.complete && req.readableLength === 0) {
      // No body (or an empty one), already read: send the request now, not a tick after `end`.
      upReq.end();
      req.resume();
      return;
    }
    // A body that stops arriving would hold the upstream connection for ever: each piece must
    // follow the last within `body_read_timeout`.
    const onBodyTimeout = (): void => {
      fail(new OxyError(OXY_ERR.BODY_TIMEOUT, 'request body timeout', { source: 'downstream' }));
    };
    if (bodyTimeout > 0) bodyTimer = setTimeout(onBodyTimeout, bodyTimeout);
    req.on('data', (chunk: Buffer) => {
      bytesUp += chunk.length;
      bodyTimer?.refresh();
    });
    req.on('end', () => clearTimeout(bodyTimer));
    if (requestStage === null) req.pipe(upReq);
    // A stop answers the client (or cuts a response that started) and drops the upstream request.
    else
      requestPump = pumpBody(req, requestStage, upReq, (e) =>
        fail(toOxyError(e, OXY_ERR.UPSTREAM_FAILED, 'downstream')),
      );
  });
}

/**
 * Notes on the request the upstream connection it got from the agent: a pooled one at once, a
 * new one once connected (the agent hands it over connected; a socket still connecting is
 * waited for). Runs before the request is written, so `handleResponse` sees it.
 */
function upstreamOf(request: RequestState, upReq: http.ClientRequest, s: Duplex): void {
  const sock = s as Partial<net.Socket>;
  const note = (): void => {
    request.upstreamReused = upReq.reusedSocket;
    if (sock.remoteAddress !== undefined)
      request.upstream = formatHostPort(sock.remoteAddress, sock.remotePort ?? 0);
  };
  if (sock.connecting === true) s.once('connect', note);
  else note();
}

/**
 * Cuts a response that has started: the HTTP/1.1 connection is closed, the HTTP/2 stream reset
 * with INTERNAL_ERROR (a destroy would send NO_ERROR, which reads as a clean end).
 */
function cutResponse(res: http.ServerResponse): void {
  const stream = (res as { stream?: http2.ServerHttp2Stream }).stream;
  if (stream === undefined) res.destroy();
  else if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
}

function switchedUnasked(): OxyError {
  return new OxyError(OXY_ERR.UPSTREAM_FAILED, 'upstream switched protocols without being asked', {
    source: 'upstream',
  });
}

/**
 * Makes the client connection end once the response is written: an HTTP/1.1 connection closes,
 * an HTTP/2 stream is reset with NO_ERROR after the response (RFC 9113 §8.1: the client may stop
 * sending its body).
 */
export function closeAfterResponse(req: IncomingRequest, res: http.ServerResponse): void {
  const stream = (res as { stream?: http2.ServerHttp2Stream }).stream;
  if (stream === undefined) {
    res.shouldKeepAlive = false;
    return;
  }
  stream.once('finish', () => {
    if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
  });
  req.resume();
}

/** A response body with a stage, and how to send its head once the stage passes bytes on. */
interface StagedBody {
  readonly stage: BodyStage;
  readonly sendHead: () => void;
}

/**
 * Runs `handleResponse` and chooses the response body's stage. Without a stage the head is sent
 * at once (null is returned); with one it is returned with the head held back until the stage
 * passes its first bytes on (or the body ends), so that a stop, a limit or a failing filter
 * before that is answered with a status rather than a cut. A stage that may rewrite the body
 * drops `Content-Length` (HTTP/1.1 then sends it chunked, HTTP/2 without a length). Rejects,
 * before anything is sent, when a hook fails or the head declares a body over the limit.
 */
async function relayResponse(
  rt: Runtime,
  request: RequestState,
  upRes: http.IncomingMessage,
  res: http.ServerResponse,
  bodyHead: RequestHead,
): Promise<StagedBody | null> {
  const status = upRes.statusCode ?? 502;
  request.status = status;
  res.sendDate = false;
  if (rt.draining) res.shouldKeepAlive = false;
  const hook = rt.hooks.response;
  if (hook === null) {
    const stage = responseBodyStage(rt, bodyHead, { status, headers: upRes.headers }, request);
    const raw = filterRawHeaders(upRes.rawHeaders, '');
    const send = (): void => {
      request.status = status;
      res.writeHead(status, upRes.statusMessage, stage?.rewrites === true ? withoutLength(raw) : raw);
    };
    if (stage === null) send();
    return stage === null ? null : { stage, sendHead: send };
  }
  let resHead: ResponseHead = { status, headers: { ...upRes.headers } };
  try {
    resHead = (await hook(resHead, request)) ?? resHead;
  } catch (e) {
    throw rt.hookFailed('HttpRequestHook.handleResponse', e);
  }
  const stage = responseBodyStage(rt, bodyHead, resHead, request);
  stripHopByHop(resHead.headers);
  if (stage?.rewrites === true) delete resHead.headers['content-length'];
  const final = resHead;
  const send = (): void => {
    request.status = final.status;
    res.writeHead(final.status, toRawHeaders(final.headers));
  };
  if (stage === null) send();
  return stage === null ? null : { stage, sendHead: send };
}
