/**
 * The on-ramp of an `http` endpoint as a whole: one port serving HTTP/1.1 and HTTP/2, in the
 * clear or over TLS. It decides per connection which protocol serves it and hands the socket
 * to the HTTP/1.1 on-ramp or the HTTP/2 on-ramp; both drive the same request and tunnel
 * pipelines, so nothing about proxying differs between the two.
 *
 * - TLS on (`endpoints.<name>.tls.enabled`): the handshake first; ALPN `h2` → HTTP/2, anything
 *   else (`http/1.1`, or no ALPN) → HTTP/1.1.
 * - TLS off: the HTTP/1.1 on-ramp (`http1/lean.ts`) reads the first bytes; the HTTP/2
 *   preface (prior knowledge) → HTTP/2, anything else is HTTP/1.1, served there.
 *
 * Ordering rule: this runs after the ingress decision (`acceptConnection`), inside the
 * connection's telemetry context, and sets `conn.protocol` (and `conn.clientIdentity`, then
 * asks `TlsHook.handleClientIdentity`) before the chosen on-ramp reads a request; the
 * certificate, key and client CA are read once, when the endpoint is created.
 */
import type net from 'node:net';
import { defaultSettings } from 'foundations/settings';
import { log } from 'foundations/telemetry';
import type { ClientIdentity, IngressProtocol } from '../../context/contexts.ts';
import type { EndpointState, IngressConnection } from '../../context/state.ts';
import type { CertificateChoice } from '../../hooks/tls.ts';
import type { Runtime } from '../../runtime.ts';
import { inConnectionContext } from '../../telemetry/fork.ts';
import { ingressMetrics } from '../../telemetry/metrics.ts';
import { createLeanOnRamp } from '../http1/lean.ts';
import { createHttp1OnRamp } from '../http1/server.ts';
import type { SocketOnRamp } from '../ingress.ts';
import { createMasqueOnRamp } from '../masque/onramp.ts';
import { acceptTls } from '../tls/accept.ts';
import { alpnProtocols, type EndpointTls, loadEndpointTls } from '../tls/credentials.ts';
import { TlsSettings } from '../tls/settings.ts';
import { createHttp2OnRamp, type Http2OnRamp } from './server.ts';
import { Http2Settings } from './settings.ts';

/** The `http` endpoint on-ramp: HTTP/1.1 and HTTP/2 on one port, with or without TLS. */
export interface HttpOnRamp extends SocketOnRamp {
  /** The HTTP/2 side, or null when `http2.enabled` is false. */
  readonly http2: Http2OnRamp | null;
  /** True when TLS is on for this endpoint. */
  readonly tls: boolean;
  /**
   * Graceful drain of the HTTP/2 side: GOAWAY on every session, resolved once they have all
   * closed (their open streams finished). HTTP/1.1 connections drain through `Connection: close`.
   */
  drain(): Promise<void>;
  /** Closes both sides: destroys what is left and releases the upstream pools. */
  close(): void;
}

/** The TLS and HTTP/2 sections of an endpoint, or their defaults when the schema lacks them. */
function sections(endpoint: EndpointState): { tls: TlsSettings; http2: Http2Settings } {
  const ep = endpoint.settings as { tls?: TlsSettings; http2?: Http2Settings };
  return {
    tls: ep.tls ?? defaultSettings(TlsSettings),
    http2: ep.http2 ?? defaultSettings(Http2Settings),
  };
}

function setProtocol(conn: IngressConnection, protocol: IngressProtocol): void {
  // The context is created at accept, before any byte says which protocol the client speaks;
  // this is the one place that learns it.
  (conn as { protocol: IngressProtocol }).protocol = protocol;
}

/**
 * Creates the on-ramp of `http` endpoint `endpoint`. Throws `OXY_ERR_INVALID_APP` naming the
 * settings key when the TLS files or HTTP/2 limits are unusable.
 */
export function createHttpOnRamp(rt: Runtime, endpoint: EndpointState): HttpOnRamp {
  const where = `endpoints.${endpoint.name}`;
  const settings = sections(endpoint);
  const h1 = createHttp1OnRamp(rt);
  // One upstream pool for both versions: an HTTP/2 client's request and an HTTP/1.1 client's
  // to the same origin share its keep-alive connections and HTTP/2 sessions.
  const h2 = settings.http2.enabled
    ? createHttp2OnRamp(rt, endpoint, settings.http2, `${where}.http2`, h1.pool)
    : null;
  // MASQUE (CONNECT-UDP) over both versions: extended CONNECT streams and Upgrade requests.
  const masque = createMasqueOnRamp(rt, endpoint);
  if (masque !== null) {
    for (const protocol of masque.protocols) {
      h2?.handleExtendedConnect(protocol, (stream, head, conn) =>
        masque.serveHttp2(protocol, stream, head, conn),
      );
      h1.handleUpgradeProtocol(protocol, (req, socket, early, conn) =>
        masque.serveHttp1(req, socket, early, conn),
      );
    }
  }
  const endpointTls = settings.tls.enabled ? loadEndpointTls(settings.tls, `${where}.tls`) : null;
  const secureContext = endpointTls?.secureContext ?? null;
  const alpn = alpnProtocols(h2 !== null);
  const failed = (conn: IngressConnection, reason: string, metric: string): void => {
    conn.closeReason = reason;
    ingressMetrics.connections_failed_total({ endpoint: endpoint.name, reason: metric }).inc();
  };

  // Every HTTP/1.1 connection, cleartext or TLS, is served by the HTTP/1.1 on-ramp; a cleartext
  // one that opens with the HTTP/2 preface is handed to HTTP/2.
  const lean = createLeanOnRamp(
    rt,
    endpoint,
    h1,
    h2 === null
      ? null
      : (socket, conn) => {
          setProtocol(conn, 'h2c');
          h2.serve(socket, conn);
        },
  );

  const selectHook = rt.hooks.tlsSelectCertificate;
  const identityHook = rt.hooks.tlsClientIdentity;
  const serveTls = (socket: net.Socket, conn: IngressConnection, tlsOn: EndpointTls): void => {
    const selectContext =
      selectHook === null
        ? undefined
        : async (sni: string) => {
            let choice: CertificateChoice;
            try {
              choice = await selectHook(sni, conn);
            } catch (e) {
              throw rt.hookFailed('TlsHook.selectCertificate', e);
            }
            return choice.kind === 'use' ? tlsOn.contextFor(choice.certificate) : undefined;
          };
    acceptTls(
      socket,
      {
        secureContext: tlsOn.secureContext,
        alpn,
        handshakeTimeoutMs: settings.tls.handshake_timeout,
        clientAuth: tlsOn.clientAuth,
        ...(selectContext === undefined ? {} : { selectContext }),
      },
      (tlsSocket, protocol, identity) => {
        conn.clientIdentity = identity;
        const go = (): void => {
          if (protocol === 'h2' && h2 !== null) {
            setProtocol(conn, 'h2');
            h2.serve(tlsSocket, conn);
          } else {
            lean.serve(tlsSocket, conn);
            // The drain tells a busy HTTP/1.1 connection by the response in flight on
            // `conn.socket`; with TLS, Node keeps it on the TLS socket, so show it through.
            Object.defineProperty(socket, '_httpMessage', {
              configurable: true,
              get: () => (tlsSocket as { _httpMessage?: unknown })._httpMessage,
            });
          }
        };
        if (identityHook === null || tlsOn.clientAuth === 'none') inConnectionContext(conn, go);
        else inConnectionContext(conn, () => askIdentity(tlsSocket, conn, identity, go));
      },
      (reason, error) => {
        failed(conn, reason, 'tls_handshake');
        // Visible at the default verbosity, once per connection, with its fields: a refused
        // client certificate or TLS garbage is an operator's question (the rate limit bounds
        // a flood of them).
        inConnectionContext(conn, () => log.info('TLS handshake failed', { reason, err: error?.message }));
      },
    );
  };

  /** `TlsHook.handleClientIdentity`, then `go`, or the connection closed as refused. */
  const askIdentity = (
    tlsSocket: net.Socket,
    conn: IngressConnection,
    identity: ClientIdentity | null,
    go: () => void,
  ): void => {
    const refuse = (reason: string): void => {
      failed(conn, 'blocked', 'client_identity_refused');
      log.info('client identity refused', { reason, subject: identity?.subject });
      tlsSocket.destroy();
    };
    let decision: ReturnType<NonNullable<typeof identityHook>>;
    try {
      decision = identityHook!(identity, conn);
    } catch (e) {
      rt.hookFailed('TlsHook.handleClientIdentity', e);
      refuse('hook_failed');
      return;
    }
    if (!(decision instanceof Promise)) {
      if (decision.kind === 'accept') go();
      else refuse(decision.reason);
      return;
    }
    decision.then(
      (d) => {
        if (tlsSocket.destroyed) return;
        if (d.kind === 'accept') go();
        else refuse(d.reason);
      },
      (e: unknown) => {
        rt.hookFailed('TlsHook.handleClientIdentity', e);
        refuse('hook_failed');
      },
    );
  };

  return {
    protocol: 'http/1.1',
    http2: h2,
    tls: secureContext !== null,
    drain: () => h2?.drain() ?? Promise.resolve(),
    close(): void {
      lean.close();
      h1.close();
      h2?.close();
    },
    serve(socket: net.Socket, conn: IngressConnection): void {
      if (endpointTls !== null) serveTls(socket, conn, endpointTls);
      else lean.serve(socket, conn);
    },
  };
}
