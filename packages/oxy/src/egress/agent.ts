/**
 * The upstream HTTP connection pool for forwarded requests: a keep-alive `http.Agent` whose new
 * connections come from the egress pipeline (DNS, `handleUpstreamIps`, `blocked_cidrs`, Happy
 * Eyeballs or `tcpConnectOverride`, `handleConnectionEstablished`) instead of `net.connect`.
 *
 * Pool keys: the address decided on (the target, or the upstream proxy), plus the ingress
 * connection's id unless the runtime says the pool may be shared. With egress hooks installed,
 * two clients' requests to one origin must not share a connection that a hook allowed for one
 * of them only, so each client connection gets its own keep-alive connections upstream.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { SocketAddr } from '../context/contexts.ts';
import type { EgressState } from '../context/state.ts';
import { HttpPool } from '../offramps/http/pool.ts';
import { connectHttpsOrigin } from '../offramps/tls/origin.ts';
import type { Runtime } from '../runtime.ts';
import { connectDirect, established } from './connect.ts';

/** What a forwarded request tells the agent, through its request options. */
export interface EgressRequestOptions extends http.RequestOptions {
  readonly oxyEgress: EgressState;
  /** The address to connect to: the decided target or the upstream proxy. */
  readonly oxyAddr: SocketAddr;
  /** True for an upstream proxy: no `handleUpstreamIps`, no blocklist. */
  readonly oxyTrusted: boolean;
  readonly oxyPoolKey: string;
  /**
   * Set once the request was dropped (its client reset or left) before a connection was
   * given to it: a new connection made for it is closed on arrival rather than pooled unused,
   * so requests reset at once cannot pile up idle upstream connections.
   */
  readonly oxyCancel?: { cancelled: boolean };
  /**
   * For an `https://` target: the name TLS verifies (SNI unless an IP literal). The connection
   * is made by `connectHttpsOrigin` (egress, then verified TLS); pool keys carry it.
   */
  readonly oxyTls?: string;
}

type CreateCallback = (err: Error | null, socket?: Duplex) => void;

/** A keep-alive agent whose connections go through the egress pipeline. */
export class EgressAgent extends http.Agent {
  readonly #rt: Runtime;
  /** The lean client for requests without a body and without HTTP hooks (`offramps/http/pool.ts`). */
  readonly pool: HttpPool;

  constructor(rt: Runtime) {
    super({
      keepAlive: true,
      maxFreeSockets: Math.max(1, rt.settings.egress.pool_max_idle),
      timeout: rt.settings.egress.pool_idle_timeout,
      scheduling: 'lifo',
    });
    this.#rt = rt;
    this.pool = new HttpPool(rt);
  }

  /** Closes the idle connections of both pools. */
  override destroy(): void {
    super.destroy();
    this.pool.destroy();
  }

  /** The pool key (overrides Node's host:port:localAddress). */
  override getName(options: http.ClientRequestArgs): string {
    return (options as EgressRequestOptions).oxyPoolKey;
  }

  /** Opens a new upstream connection through the egress pipeline (asynchronously). */
  override createConnection(options: http.ClientRequestArgs, callback: CreateCallback): Duplex | undefined {
    const o = options as EgressRequestOptions;
    const rt = this.#rt;
    if (o.oxyTls !== undefined) {
      connectHttpsOrigin(rt, o.oxyEgress, o.oxyAddr, o.oxyTls, o.oxyTrusted).then(
        ({ socket }) => {
          if (o.oxyCancel?.cancelled === true) {
            socket.destroy();
            callback(new Error('request dropped before its upstream connection was ready'));
          } else callback(null, socket);
        },
        (e: unknown) => callback(e as Error),
      );
      return undefined;
    }
    connectDirect(rt, o.oxyEgress, o.oxyAddr, o.oxyTrusted).then(
      ({ socket, remote }) => {
        if (o.oxyCancel?.cancelled === true) {
          socket.destroy();
          callback(new Error('request dropped before its upstream connection was ready'));
          return;
        }
        try {
          established(rt, o.oxyEgress, socket, remote);
        } catch (e) {
          callback(e as Error);
          return;
        }
        callback(null, socket);
      },
      (e: unknown) => callback(e as Error),
    );
    return undefined;
  }
}
