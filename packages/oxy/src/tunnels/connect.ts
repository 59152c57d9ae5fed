/**
 * CONNECT tunnels, whatever the HTTP version: an on-ramp wraps its CONNECT in a
 * `ConnectExchange` (the request head, a way to accept with a 2xx head and get the tunnel's
 * byte stream, a way to refuse). This module runs the CONNECT's own hooks and hands the tunnel
 * to the stream runner (`flows/stream/runner.ts`), which every byte-stream unit shares. HTTP/1.1
 * hands over the socket itself; an HTTP/2 CONNECT stream is a Duplex too, so both drive this
 * same code.
 *
 * Order: `handleProxyConnectRequest` → the runner's egress (decision, DNS, IPs, blocklist,
 * connect, `handleConnectionEstablished`) → `handleProxyConnectResponse` → 2xx sent →
 * `getAppTunnelPipeline` → the app's pipeline, the kernel splice or the pump → audit record.
 */
import type { Duplex } from 'node:stream';
import type { SocketAddr } from '../context/contexts.ts';
import { type IngressConnection, RequestState } from '../context/state.ts';
import { clientReason, httpStatusFor } from '../errors.ts';
import {
  refuseStream,
  runStream,
  type SpliceableClient,
  type StreamIngress,
  type StreamRefusal,
} from '../flows/stream/runner.ts';
import type { ConnectDirective, RequestHead, ResponseHead } from '../hooks/http-request.ts';
import type { Runtime } from '../runtime.ts';
import { forkRequestUntil } from '../telemetry/fork.ts';

export type { SpliceableClient } from '../flows/stream/runner.ts';

/** A CONNECT as an on-ramp presents it. */
export interface ConnectExchange {
  readonly head: RequestHead;
  /** True once the client went away (the tunnel attempt is abandoned). */
  readonly closed: boolean;
  /** Sends the 2xx head and returns the stream carrying the tunnel's bytes. Called at most once. */
  accept(res: ResponseHead): Duplex;
  /** Answers `status` with a short text body and ends the exchange. */
  reject(status: number, body: string): void;
  /**
   * The client for the addon's whole-tunnel path ({@link spliceConnect}), or null when it cannot
   * take it (TLS, an HTTP/2 stream, writes still queued). Accepting is then the addon's: the
   * exchange is not `accept`ed, and `reject` still answers a failed connect.
   */
  spliceable?(): SpliceableClient | null;
  /**
   * The stream whose 'close' says the client left (its socket reset or failed, an HTTP/2
   * stream reset or its session gone), watched while the upstream connects
   * ({@link StreamIngress.clientStream}). Null when there is none to watch.
   */
  clientStream?(): Duplex | null;
}

/**
 * Runs one CONNECT tunnel to `target` until it ends; never throws. `ended`, if given, runs as
 * the tunnel ends, after `conn.tunnels` dropped: an on-ramp's end of the connection, instead
 * of a `.finally` of its own (a promise, a reaction and a pair of closures more per idle
 * tunnel). The tunnel waits on as few continuations as its telemetry allows
 * ({@link forkRequestUntil}).
 */
export function serveConnect(
  rt: Runtime,
  conn: IngressConnection,
  ex: ConnectExchange,
  target: SocketAddr,
  ended: (() => void) | null = null,
): Promise<void> {
  conn.requests++;
  conn.tunnels++;
  const request = new RequestState(conn, 'connect', 'CONNECT', target, rt.ext);
  conn.endpoint.metrics.connectRequests.inc();
  return forkRequestUntil(
    request,
    () => tunnel(rt, request, ex),
    (): void => {
      conn.tunnels--;
      ended?.();
    },
  );
}

function tunnel(rt: Runtime, request: RequestState, ex: ConnectExchange): Promise<void> {
  const ingress = new ConnectIngress(rt, request, ex);
  const connectHook = rt.hooks.proxyConnectRequest;
  // No hook: straight to the runner, without an async frame of its own.
  if (connectHook === null) return runStream(rt, request, ingress);
  return hooked(rt, request, ex, ingress, connectHook);
}

async function hooked(
  rt: Runtime,
  request: RequestState,
  ex: ConnectExchange,
  ingress: ConnectIngress,
  connectHook: NonNullable<Runtime['hooks']['proxyConnectRequest']>,
): Promise<void> {
  let d: ConnectDirective;
  try {
    d = await connectHook(ex.head, request);
  } catch (e) {
    const err = rt.hookFailed('HttpRequestHook.handleProxyConnectRequest', e);
    refuseStream(rt, request, ingress, httpStatusFor(err), clientReason(err), err.code);
    return;
  }
  request.decisions.push(`connect:${d?.kind ?? 'allow'}`);
  if (d !== undefined && d.kind === 'block') {
    request.error = d.reason;
    refuseStream(rt, request, ingress, d.status, d.reason, 'blocked');
    return;
  }
  return runStream(rt, request, ingress);
}

/** A CONNECT as the stream runner sees it: the response hook and the 2xx are its answer. */
class ConnectIngress implements StreamIngress {
  readonly #rt: Runtime;
  readonly #request: RequestState;
  readonly #ex: ConnectExchange;
  readonly spliceable: (() => SpliceableClient | null) | undefined;

  constructor(rt: Runtime, request: RequestState, ex: ConnectExchange) {
    this.#rt = rt;
    this.#request = request;
    this.#ex = ex;
    // A method of this class, not a closure per tunnel; undefined when the exchange has none.
    this.spliceable = ex.spliceable === undefined ? undefined : this.#spliceable;
  }

  #spliceable(this: ConnectIngress): SpliceableClient | null {
    return this.#ex.spliceable?.() ?? null;
  }

  get closed(): boolean {
    return this.#ex.closed;
  }

  clientStream(): Duplex | null {
    return this.#ex.clientStream?.() ?? null;
  }

  accept(): Duplex | StreamRefusal | Promise<Duplex | StreamRefusal> {
    const hook = this.#rt.hooks.proxyConnectResponse;
    if (hook === null) return this.#answer({ status: 200, headers: {} });
    return this.#hooked(hook);
  }

  async #hooked(
    hook: NonNullable<Runtime['hooks']['proxyConnectResponse']>,
  ): Promise<Duplex | StreamRefusal> {
    const proposed: ResponseHead = { status: 200, headers: {} };
    let res: ResponseHead;
    try {
      res = (await hook(proposed, this.#request)) ?? proposed;
    } catch (e) {
      const err = this.#rt.hookFailed('HttpRequestHook.handleProxyConnectResponse', e);
      return { status: httpStatusFor(err), reason: clientReason(err), why: err.code };
    }
    if (res.status < 200 || res.status > 299)
      return { status: res.status, reason: 'refused', why: 'blocked' };
    if (this.#ex.closed) return { status: 499, reason: 'client closed', why: 'client_closed' };
    return this.#answer(res);
  }

  #answer(res: ResponseHead): Duplex {
    this.#request.status = res.status;
    return this.#ex.accept(res);
  }

  reject(status: number, reason: string): void {
    this.#ex.reject(status, reason);
  }
}
