/**
 * The upstream side of an intercepted tunnel's requests: a keep-alive agent of the tunnel's
 * own (see {@link TunnelOriginAgent}).
 *
 * Why the tunnel's connection and not the shared pool: the egress decision (hooks, route,
 * upstream proxy) was taken once, for this tunnel and its client, and the connection made for it
 * already proved the origin's certificate before the client's handshake; a shared pool keyed by
 * origin would let one client's requests ride a connection another client's hooks allowed.
 *
 * Ordering rule: the first request takes the tunnel's connection; later ones (the origin
 * closed it, or HTTP/2 streams in parallel) connect along the same route and verify again.
 */
import type { Duplex } from 'node:stream';
import { EgressState, type RequestState } from '../context/state.ts';
import { EgressAgent } from '../egress/agent.ts';
import { connectStream, type EgressRoute } from '../egress/connect.ts';
import { connectTls } from '../offramps/tls/connect.ts';
import type { Runtime } from '../runtime.ts';

/**
 * The upstream side of one intercepted tunnel: a keep-alive agent whose first connection is
 * the tunnel's own (the verified TLS connection made before the client's handshake, which
 * proved the origin and chose the protocol), and whose further connections (when the origin
 * closed one, or HTTP/2 streams in parallel) are made along the tunnel's egress route and
 * verified again. Nothing is shared with other tunnels or clients: the egress decision was taken
 * once, for this tunnel's client, and its connections stay its own.
 */
export class TunnelOriginAgent extends EgressAgent {
  readonly #rt: Runtime;
  readonly #request: RequestState;
  readonly #route: EgressRoute;
  readonly #serverName: string | null;
  #first: Duplex | null;

  constructor(
    rt: Runtime,
    request: RequestState,
    route: EgressRoute,
    serverName: string | null,
    first: Duplex,
    maxSockets: number,
  ) {
    super(rt);
    this.maxSockets = maxSockets;
    this.#rt = rt;
    this.#request = request;
    this.#route = route;
    this.#serverName = serverName;
    this.#first = first;
  }

  /** One pool: every request of the tunnel goes to its origin. */
  override getName(): string {
    return 'tunnel';
  }

  /** The tunnel's own connection first, then new ones along the same route. */
  override createConnection(
    _options: unknown,
    callback: (err: Error | null, socket?: Duplex) => void,
  ): Duplex | undefined {
    const first = this.#first;
    this.#first = null;
    if (first !== null && !first.destroyed && first.writable) {
      queueMicrotask(() => {
        callback(null, first);
        first.resume(); // paused while the tunnel's first bytes were read
      });
      return undefined;
    }
    first?.destroy();
    const rt = this.#rt;
    const eg = new EgressState(this.#request.ingress, this.#request, this.#request.target, rt.ext);
    const name = this.#serverName;
    connectStream(rt, eg, this.#route)
      .then(({ socket }): Promise<{ socket: Duplex }> | { socket: Duplex } =>
        name === null
          ? { socket }
          : connectTls({
              host: name,
              port: this.#request.target.port,
              socket,
              trust: rt.upstreamTrust,
              alpn: ['http/1.1'],
              timeoutMs: rt.settings.egress.connect_timeout,
            }),
      )
      .then(
        (c) => callback(null, c.socket),
        (e: unknown) => callback(e as Error),
      );
    return undefined;
  }

  /** Closes every connection of the tunnel, the unused first one included. */
  override destroy(): void {
    this.#first?.destroy();
    this.#first = null;
    super.destroy();
  }
}
