/**
 * MASQUE on an `http` endpoint: CONNECT-UDP (RFC 9298) over HTTP/2 extended CONNECT
 * (`:protocol connect-udp`) and HTTP/1.1 `Upgrade: connect-udp`, carried by the one datagram
 * runner (`flows/datagram/session.ts`), so a tunnel gets the same egress decisions, DNS,
 * `blocked_cidrs`, datagram hook, metrics and `udp_session` audit record as a `udp` endpoint's
 * client. The HTTP on-ramps hand their MASQUE requests here; the capsule session itself is
 * `masque/server.ts`.
 *
 * Order: request checks (`checkMasqueRequest`: framing, template, target; refusals 400/501)
 * → `HttpRequestHook.handleProxyConnectRequest` (the same hook as CONNECT; a block is answered
 * with its status) → the session's egress route (decision, DNS, `handleUpstreamIps`,
 * blocklist, upstream socket, `handleConnectionEstablished`) → the answer: 200 (HTTP/2) or 101
 * (HTTP/1.1) once the session is `open`, else the refusal `refusalForError` gives (403
 * `destination_ip_prohibited`, 502 `dns_error`, …), always with `Proxy-Status` → DATAGRAM
 * capsules both ways (`handleDatagram`) → end (stream closed, idle, capsule error) → audit.
 * No datagram reaches the target before the answer is decided: those the client sends early
 * wait in the session's bounded queue, or in the unread stream.
 *
 * CONNECT-IP (RFC 9484) requests pass the same checks and are served by `connect-ip.ts` (an
 * address from the endpoint's `masque.ip_pool`, packets to the IP pipeline); with both pool
 * prefixes empty they are answered 501.
 */
import type http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import { defaultSettings, MAX_TIMER_MS } from 'foundations/settings';
import { log } from 'foundations/telemetry';
import { formatHostPort } from '../../context/addr.ts';
import { type EndpointState, type IngressConnection, RequestState } from '../../context/state.ts';
import { OXY_ERR, OxyError } from '../../errors.ts';
import { DatagramSession } from '../../flows/datagram/session.ts';
import { countFailure, recordEnd } from '../../flows/record.ts';
import type { ConnectDirective, HttpHeaders, RequestHead } from '../../hooks/http-request.ts';
import { acceptMasqueTunnel } from '../../masque/server.ts';
import { MAX_UDP_PAYLOAD, type UdpTunnel } from '../../masque/tunnel.ts';
import {
  checkMasqueRequest,
  type MasqueEndpointTemplates,
  type MasqueRefusal,
  type MasqueRequestHead,
  masqueRefusal,
  refusalForError,
} from '../../protocols/masque/request.ts';
import { type MasqueProtocol, parseUriTemplate, type UriTemplate } from '../../protocols/masque/template.ts';
import type { Runtime } from '../../runtime.ts';
import { httpEndpoint } from '../../settings.ts';
import { forkRequest } from '../../telemetry/fork.ts';
import { datagramMetrics } from '../../telemetry/metrics.ts';
import type { Http1RequestHead } from '../http1/server.ts';
import { type ConnectIpServe, serveConnectIp } from './connect-ip.ts';
import { Http1MasqueExchange, Http2MasqueExchange, type MasqueExchange } from './exchange.ts';
import { IpPool, registerIpPool } from './ip-pool.ts';
import { MasqueSettings } from './settings.ts';

/** The proxy's name in `Proxy-Status` fields. */
const PROXY_NAME = 'oxy';

/** Bytes of capsules queued to a slow client beyond which replies are dropped, as UDP would. */
const MAX_QUEUED_TO_CLIENT = 4 * 1024 * 1024;

/** The MASQUE side of an `http` endpoint, called by its HTTP/2 and HTTP/1.1 on-ramps. */
export interface MasqueOnRamp {
  /** The MASQUE protocols served (`connect-ip` is answered 501 when the endpoint has no address pool). */
  readonly protocols: readonly MasqueProtocol[];
  /** Serves an HTTP/2 extended CONNECT stream whose `:protocol` is `protocol`. */
  serveHttp2(
    protocol: MasqueProtocol,
    stream: http2.ServerHttp2Stream,
    head: RequestHead,
    conn: IngressConnection,
  ): void;
  /** Serves an HTTP/1.1 request with `Upgrade: connect-udp` (or `connect-ip`) on `socket`. */
  serveHttp1(req: Http1RequestHead, socket: Duplex, early: Buffer, conn: IngressConnection): void;
}

/** The endpoint's `masque` section, or its defaults when the schema lacks it. */
function masqueSection(endpoint: EndpointState): MasqueSettings {
  const ep = endpoint.settings as { masque?: MasqueSettings };
  return ep.masque ?? defaultSettings(MasqueSettings);
}

function parseTemplate(where: string, key: string, source: string, protocol: MasqueProtocol): UriTemplate {
  try {
    return parseUriTemplate(source, protocol);
  } catch (e) {
    throw new OxyError(
      OXY_ERR.INVALID_APP,
      `${where}.masque.${key}: ${e instanceof Error ? e.message : String(e)}`,
      { cause: e },
    );
  }
}

/**
 * The templates and the CONNECT-IP address pool of an enabled `masque` section, as a start and
 * `--check` read them. Throws `OXY_ERR_INVALID_APP` naming the key under `where`
 * (`endpoints.<name>`): a bad template, or a prefix of the wrong family or too small.
 */
export function masqueParts(
  settings: MasqueSettings,
  where: string,
): { templates: MasqueEndpointTemplates; pool: IpPool | null } {
  const udp = parseTemplate(where, 'udp_template', settings.udp_template, 'connect-udp');
  const ip = parseTemplate(where, 'ip_template', settings.ip_template, 'connect-ip');
  // CONNECT-IP needs an address pool; without one (both prefixes empty) it is answered 501.
  const { ipv4, ipv6 } = settings.ip_pool;
  const pool = ipv4 === '' && ipv6 === '' ? null : new IpPool(ipv4, ipv6, `${where}.masque.ip_pool`);
  return { templates: { udp, ip, proxyName: PROXY_NAME }, pool };
}

/**
 * Creates the MASQUE on-ramp of `http` endpoint `endpoint`, or null when `masque.enabled` is
 * false. Parses both templates now: a bad one throws `OXY_ERR_INVALID_APP` naming its key
 * (`endpoints.<name>.masque.udp_template`).
 */
export function createMasqueOnRamp(rt: Runtime, endpoint: EndpointState): MasqueOnRamp | null {
  const settings = masqueSection(endpoint);
  if (!settings.enabled) return null;
  const { templates, pool } = masqueParts(settings, `endpoints.${endpoint.name}`);
  const idleMs = httpEndpoint(endpoint.settings).tunnel_idle_timeout;
  if (pool !== null) registerIpPool(endpoint, pool);
  const ip: ConnectIpServe | null = pool === null ? null : { rt, pool, proxyName: PROXY_NAME, idleMs };

  const serve = (
    ex: MasqueExchange,
    head: MasqueRequestHead,
    hookHead: RequestHead,
    conn: IngressConnection,
  ) => {
    const checked = checkMasqueRequest(head, templates);
    if (!checked.ok) {
      conn.telemetry?.apply(() => log.debug('MASQUE request refused', { details: checked.refusal.details }));
      ex.refuse(checked.refusal);
      return;
    }
    if (checked.request.kind === 'connect-ip') {
      if (ip === null) {
        ex.refuse(
          masqueRefusal(501, 'http_request_error', 'connect-ip is not served on this endpoint', PROXY_NAME),
        );
        return;
      }
      serveConnectIp(ip, ex, checked.request, hookHead, conn);
      return;
    }
    const req = checked.request;
    conn.requests++;
    conn.tunnels++;
    const target = { host: req.target.host, port: req.port };
    const request = new RequestState(conn, 'connect-udp', head.method, target, rt.ext);
    void forkRequest(request, () => runTunnel(rt, request, ex, hookHead, idleMs))
      .catch((e: unknown) => {
        log.error('CONNECT-UDP tunnel failed', { err: e });
        ex.stream.destroy();
      })
      .finally(() => {
        conn.tunnels--;
      });
  };

  return {
    protocols: ['connect-udp', 'connect-ip'],
    serveHttp2(protocol, stream, head, conn): void {
      const mhead: MasqueRequestHead = {
        httpVersion: '2',
        method: head.method,
        protocol,
        path: head.path,
        scheme: head.scheme,
        authority: head.authority,
        headers: head.headers,
      };
      serve(new Http2MasqueExchange(stream), mhead, head, conn);
    },
    serveHttp1(req, socket, early, conn): void {
      socket.on('error', () => {}); // the tunnel reports its end; before it, a reset only ends the attempt
      const headers = req.headers as HttpHeaders;
      const mhead: MasqueRequestHead = {
        httpVersion: '1.1',
        method: req.method ?? 'GET',
        path: req.url ?? '',
        headers,
      };
      const hookHead: RequestHead = {
        method: mhead.method,
        scheme: '',
        authority: typeof headers['host'] === 'string' ? headers['host'] : '',
        path: mhead.path,
        headers,
      };
      serve(new Http1MasqueExchange(socket, early), mhead, hookHead, conn);
    },
  };
}

/** How a session answers its client: DATAGRAM capsules on the tunnel, once there is one. */
class CapsuleIngress {
  /** The endpoint's name, for the drop counter. */
  readonly endpoint: string;
  tunnel: UdpTunnel | null = null;
  /** The tunnel's stream, whose queued bytes bound what is buffered for a slow client. */
  stream: Duplex | null = null;
  #idle: NodeJS.Timeout | undefined;

  constructor(endpoint: string) {
    this.endpoint = endpoint;
  }

  reply(data: Uint8Array): void {
    const t = this.tunnel;
    if (t === null || t.closed) return;
    if ((this.stream?.writableLength ?? 0) > MAX_QUEUED_TO_CLIENT) {
      datagramMetrics.dropped_total({ endpoint: this.endpoint, reason: 'client_backpressure' }).inc();
      return;
    }
    t.send(data);
  }

  replyBatch(batch: { readonly count: number; payload(i: number): Uint8Array }): void {
    for (let i = 0; i < batch.count; i++) this.reply(batch.payload(i));
  }

  ended(): void {
    clearTimeout(this.#idle);
    // The session is over (idle, refused, the stream gone): end our side of the stream.
    void this.tunnel?.close();
  }

  /** Ends `session` after `idleMs` without a datagram either way (`tunnel_idle_timeout`). */
  armIdle(session: DatagramSession, idleMs: number): void {
    if (idleMs <= 0) return;
    const check = (): void => {
      const quiet = performance.now() - session.lastActive;
      if (quiet >= idleMs) session.close('idle_timeout');
      else this.#idle = setTimeout(check, Math.min(MAX_TIMER_MS, idleMs - quiet + 1)).unref();
    };
    this.#idle = setTimeout(check, idleMs).unref();
  }
}

/** Runs one CONNECT-UDP request from its request hook to the end of its session. */
async function runTunnel(
  rt: Runtime,
  request: RequestState,
  ex: MasqueExchange,
  hookHead: RequestHead,
  idleMs: number,
): Promise<void> {
  const hop = formatHostPort(request.target.host, request.target.port);
  const refuseEarly = (r: MasqueRefusal, reason: string): void => {
    request.status = r.status;
    countFailure(request, r.status);
    ex.refuse(r);
    recordEnd(rt, request, 0, 0, reason, { datagrams_up: 0, datagrams_down: 0 });
  };
  const connectHook = rt.hooks.proxyConnectRequest;
  if (connectHook !== null) {
    let d: ConnectDirective;
    try {
      d = await connectHook(hookHead, request);
    } catch (e) {
      const err = rt.hookFailed('HttpRequestHook.handleProxyConnectRequest', e);
      refuseEarly(refusalForError(err, PROXY_NAME, hop), err.code);
      return;
    }
    request.decisions.push(`connect:${d?.kind ?? 'allow'}`);
    if (d !== undefined && d.kind === 'block') {
      refuseEarly(
        masqueRefusal(d.status, 'http_request_denied', d.reason, PROXY_NAME, { nextHop: hop }),
        'blocked',
      );
      return;
    }
  }
  if (ex.closed) {
    request.status = 499;
    recordEnd(rt, request, 0, 0, 'client_closed', { datagrams_up: 0, datagrams_down: 0 });
    return;
  }
  const ingress = new CapsuleIngress(request.ingress.endpoint.name);
  const session = new DatagramSession(
    rt,
    request.ingress,
    request.target,
    ingress,
    performance.now(),
    MAX_UDP_PAYLOAD,
    {
      request,
    },
  );
  const gone = (): void => {
    if (session.state === 'opening') request.status = 499;
    session.close('client_closed');
  };
  ex.stream.once('close', gone);
  const outcome = await session.opened;
  if (!outcome.open) {
    if (session.state === 'refused') {
      const r = refusalForError(outcome.error, PROXY_NAME, hop);
      request.status = r.status;
      countFailure(request, r.status);
      ex.refuse(r);
      session.close('refused');
    }
    return;
  }
  ex.accept('connect-udp');
  const tunnel = acceptMasqueTunnel({
    protocol: 'connect-udp',
    stream: ex.stream,
    httpVersion: ex.httpVersion,
    head: ex.early,
  });
  ingress.tunnel = tunnel;
  ingress.stream = ex.stream;
  tunnel.on('datagram', (payload, contextId) => {
    // RFC 9298 §4: context 0 carries UDP payloads; no other context is registered here.
    if (contextId === 0) session.fromClientData(payload, performance.now());
    else datagramMetrics.dropped_total({ endpoint: ingress.endpoint, reason: 'context_id' }).inc();
  });
  tunnel.on('error', (e) => {
    log.debug('CONNECT-UDP capsule error', { code: e.code, err: e.message });
  });
  tunnel.once('close', () => session.close(tunnel.error === undefined ? 'client_closed' : tunnel.error.code));
  ingress.armIdle(session, idleMs);
}
