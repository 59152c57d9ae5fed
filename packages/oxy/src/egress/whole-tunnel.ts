/**
 * The addon's connector: for a tunnel whose route is one direct address and whose client is a
 * plain TCP socket, the native addon's reactor thread connects, writes the on-ramp's answer
 * (a CONNECT's 2xx, nothing for a `tcp` endpoint), the early bytes, and splices. It is a
 * connector of the egress pipeline like Happy Eyeballs: the decision, DNS, `handleUpstreamIps`
 * and the blocklist ran before it (`routeEgress`), and it reports to the same metrics.
 *
 * Whether it may be used is the fast-path plan's call (`rt.fast.wholeTunnel`) plus what only
 * the route and the client can tell: one address without a zone, splicing on, a client the
 * addon can take.
 */
import type { Duplex } from 'node:stream';
import type { EgressState } from '../context/state.ts';
import type { PumpOptions } from '../flows/stream/pump.ts';
import { type RawClient, rawTunnel } from '../flows/stream/raw-tunnel.ts';
import {
  canSpliceOne,
  type SpliceConnectResult,
  type SpliceConnectTarget,
  spliceConnect,
} from '../flows/stream/splice.ts';
import { connectFailure } from '../offramps/tcp/happy-eyeballs.ts';
import type { Runtime } from '../runtime.ts';
import { connectFailed, connectObserved, type EgressRoute, sourceFor } from './connect.ts';

/** A client the addon can run a whole tunnel for: a plain TCP socket, read by nobody. */
export interface SpliceableClient {
  readonly socket: Duplex | null;
  /**
   * Instead of `socket`: an accepted handle that never became a socket (`onramps/tcp/raw-accept.ts`),
   * and where its tunnel is to be reported once started (a drain stops it through that).
   */
  readonly raw?: RawClient;
  /**
   * Instead of `socket`: a connection whose head the addon's reactor thread read and still holds
   * (`onramps/http1/reactor-connect.ts`): the listener connects and carries it.
   */
  readonly reactor?: ReactorClient;
  /** Bytes that came before the tunnel started (after a CONNECT head), for the upstream. */
  readonly early: Buffer | null;
  /** The answer to write to the client once connected (may be empty). */
  readonly head: Buffer;
}

/** A client the addon's listener holds: it runs the whole tunnel as `spliceConnect` would. */
export interface ReactorClient {
  /** Connects and carries; resolves as `spliceConnect` does (a failed connect leaves the client to answer). */
  connect(
    to: SpliceConnectTarget,
    options: PumpOptions,
    onConnected: (connectMs: number) => void,
  ): Promise<SpliceConnectResult>;
}

/** The single address the addon can connect to for `route`, or null when it cannot take it. */
export function wholeTunnelAddress(route: EgressRoute): string | null {
  if (route.kind !== 'direct' || route.ips.length !== 1) return null;
  const ip = route.ips[0] as string;
  // A zone id (fe80::1%eth0) is not for the addon; several addresses race in JS (Happy Eyeballs).
  return ip.includes('%') ? null : ip;
}

/** True when the addon can take `client` for a whole tunnel. */
export function canRunWhole(client: SpliceableClient): boolean {
  return (
    client.raw !== undefined ||
    client.reactor !== undefined ||
    (client.socket !== null && canSpliceOne(client.socket))
  );
}

/**
 * Runs the whole tunnel to `ip`:`port` on the addon's thread until it ends. `request`'s status
 * becomes 200 once the upstream connected (the head is on its way), or just before the end of a
 * tunnel that ended within 50 ms of its connect. Never rejects. A failed connect resolves with its
 * `connectError` set: {@link wholeTunnelFailure} makes and counts its error. The caller's own
 * continuation reads the result: an idle tunnel keeps one continuation less waiting (no
 * promise, reaction and closure here per tunnel).
 */
export function connectWholeTunnel(
  rt: Runtime,
  eg: EgressState,
  ip: string,
  port: number,
  client: SpliceableClient,
  request: { status: number },
): Promise<SpliceConnectResult> {
  const target: SpliceConnectTarget = {
    ip,
    port,
    sourceIp: sourceFor(rt, ip) ?? '',
    head: client.head,
    early: client.early,
    connectTimeoutMs: rt.settings.egress.connect_timeout,
    smartConnect: eg.ingress.endpoint.smartConnect,
    endOnUpstreamEnd: eg.ingress.endpoint.stream.endOnUpstreamEnd,
  };
  const connected = (connectMs: number): void => {
    connectObserved(performance.now() - connectMs);
    request.status = 200;
  };
  const options = eg.ingress.endpoint.stream;
  try {
    return client.raw !== undefined
      ? rawTunnel(client.raw, target, options, connected)
      : client.reactor !== undefined
        ? client.reactor.connect(target, options, connected)
        : spliceConnect(client.socket as Duplex, target, options, connected);
  } catch (e) {
    return Promise.reject(e);
  }
}

/** The error of a whole tunnel whose connect to `ip`:`port` failed with `connectError`, counted. */
export function wholeTunnelFailure(rt: Runtime, ip: string, port: number, connectError: string): Error {
  const error = connectFailure(ip, port, connectError, rt.settings.egress.connect_timeout);
  connectFailed(error.code);
  return error;
}
