/**
 * `oxy/masque`: a MASQUE client for Node. Opens CONNECT-UDP (RFC 9298) and CONNECT-IP
 * (RFC 9484) tunnels through a proxy over HTTP/2 extended CONNECT (RFC 8441, `:protocol`) or
 * HTTP/1.1 `Upgrade`, with datagrams carried in capsules (RFC 9297); Node has no QUIC, so no
 * HTTP/3 and no QUIC DATAGRAM frames.
 *
 * ```ts
 * const client = createMasqueClient({ proxy: 'https://proxy.example:443', tls: { ca } });
 * const dns = await client.connectUdp('192.0.2.53', 53);
 * dns.send(query);
 * for await (const answer of dns) { ... }
 * await client.close();
 * ```
 *
 * Rules:
 * - Over HTTP/2, every tunnel of a client shares one session (one TCP connection), opened on
 *   first use; the client waits for the proxy's SETTINGS and refuses to send extended CONNECT
 *   unless they carry SETTINGS_ENABLE_CONNECT_PROTOCOL. Over HTTP/1.1, each tunnel is its own
 *   connection.
 * - Opening settles on every path: the proxy's answer, a reset, a closed session, the timeout
 *   (`OXY_ERR_CONNECT_TIMEOUT`) or the caller's signal (`OXY_ERR_ABORTED`). A refusal is a
 *   {@link MasqueRefusedError} carrying the status and the parsed `Proxy-Status`.
 * - Templates are validated before anything is sent (`OXY_ERR_MASQUE_TEMPLATE`).
 */

import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type net from 'node:net';
import type tls from 'node:tls';
import { OXY_ERR, OxyError } from '../errors.ts';
import { type ProxyStatusEntry, parseProxyStatus } from '../protocols/masque/proxy-status.ts';
import {
  DEFAULT_TEMPLATES,
  expandUriTemplate,
  type MasqueProtocol,
  parseUriTemplate,
  type UriTemplate,
} from '../protocols/masque/template.ts';
import { settleOpen } from './settle.ts';
import { IpTunnel, type TunnelInit, UdpTunnel } from './tunnel.ts';

export type { IpAddressRange, IpPrefixEntry, IpVersion } from '../protocols/capsule/connect-ip.ts';
export type { ProxyStatusEntry } from '../protocols/masque/proxy-status.ts';
export {
  IpTunnel,
  type IpTunnelEvents,
  MAX_UDP_PAYLOAD,
  MasqueTunnel,
  type MasqueTunnelEvents,
  UdpTunnel,
} from './tunnel.ts';

/** Options of {@link createMasqueClient}. */
export interface MasqueClientOptions {
  /** Where the proxy listens: `http://host:port` (cleartext) or `https://host:port` (TLS). */
  readonly proxy: string | URL;
  /** `'2'` (extended CONNECT, the default) or `'1.1'` (Upgrade). */
  readonly httpVersion?: '2' | '1.1';
  /**
   * The CONNECT-UDP template: a path (`/.well-known/masque/udp/{target_host}/{target_port}/`,
   * the default) or an absolute URI, whose scheme and authority then go in the request.
   */
  readonly udpTemplate?: string;
  /** The CONNECT-IP template. Default `/.well-known/masque/ip/{target}/{ipproto}/`. */
  readonly ipTemplate?: string;
  /** TLS options for an `https:` proxy (`ca`, `servername`, client certificates...). */
  readonly tls?: tls.ConnectionOptions;
  /** Extra request headers, e.g. `proxy-authorization`. Lower-case names for HTTP/2. */
  readonly headers?: Readonly<Record<string, string>>;
  /** Largest capsule accepted from the proxy. Default 65,544 bytes. */
  readonly maxCapsuleSize?: number;
  /** Datagrams the async iterator queues before pausing the stream. Default 256. */
  readonly highWaterMark?: number;
  /** How long opening a tunnel may take, in ms. Default 10,000. */
  readonly connectTimeoutMs?: number;
}

/** Per-tunnel options. */
export interface OpenOptions {
  readonly signal?: AbortSignal;
}

/** The scope of a CONNECT-IP tunnel (RFC 9484 §4.6); both default to `*`. */
export interface IpScope {
  /** `*`, a DNS name, or an IP prefix (`192.0.2.0/24`, `2001:db8::/32`). */
  readonly target?: string;
  readonly ipproto?: number | '*';
}

/** A MASQUE client bound to one proxy. */
export interface MasqueClient {
  /** Opens a CONNECT-UDP tunnel to `host:port` (a DNS name or an IP literal). */
  connectUdp(host: string, port: number, options?: OpenOptions): Promise<UdpTunnel>;
  /** Opens a CONNECT-IP tunnel with the given scope. */
  connectIp(scope?: IpScope, options?: OpenOptions): Promise<IpTunnel>;
  /** Open tunnels. */
  readonly tunnels: number;
  /** Closes every tunnel, then the HTTP/2 session. */
  close(): Promise<void>;
}

/** The proxy answered something other than success. */
export class MasqueRefusedError extends OxyError {
  /** The `Proxy-Status` members of the answer, parsed (empty when absent). */
  readonly proxyStatus: readonly ProxyStatusEntry[];
  constructor(status: number, proxyStatus: string | string[] | undefined, why: string) {
    const entries = parseProxyStatus(proxyStatus);
    const named = entries.find((e) => e.error !== undefined);
    const detail = named === undefined ? '' : ` (${named.error}${named.details ? `: ${named.details}` : ''})`;
    super(OXY_ERR.MASQUE_REFUSED, `MASQUE proxy refused: ${why}${detail}`, { source: 'upstream', status });
    this.proxyStatus = entries;
  }
}

interface Target {
  readonly protocol: MasqueProtocol;
  readonly path: string;
}

type Head = Readonly<Record<string, string | string[] | undefined>>;

/** RFC 9297 §3.2: these make a capsule-protocol response malformed. */
function badCapsuleResponse(status: number, headers: Head): string | undefined {
  if (status === 204 || status === 205 || status === 206)
    return `status ${status} cannot start the capsule protocol`;
  for (const f of ['content-length', 'content-type', 'transfer-encoding']) {
    if (headers[f] !== undefined) return `a capsule-protocol response must not carry ${f}`;
  }
  return undefined;
}

/** Creates a client for `options.proxy`. Nothing connects until the first tunnel opens. */
export function createMasqueClient(options: MasqueClientOptions): MasqueClient {
  const proxy = new URL(options.proxy);
  if (proxy.protocol !== 'http:' && proxy.protocol !== 'https:') {
    throw new OxyError(
      OXY_ERR.INVALID_APP,
      `MASQUE proxy URL must be http: or https:, got ${proxy.protocol}`,
    );
  }
  const templates: Record<MasqueProtocol, UriTemplate> = {
    'connect-udp': parseUriTemplate(options.udpTemplate ?? DEFAULT_TEMPLATES['connect-udp'], 'connect-udp'),
    'connect-ip': parseUriTemplate(options.ipTemplate ?? DEFAULT_TEMPLATES['connect-ip'], 'connect-ip'),
  };
  const timeoutMs = options.connectTimeoutMs ?? 10_000;
  const open = new Set<UdpTunnel | IpTunnel>();
  let session: Promise<http2.ClientHttp2Session> | undefined;
  /** The session behind `session`, ready or not, so `close` can end one that never got SETTINGS. */
  let raw: http2.ClientHttp2Session | undefined;
  let closing = false;

  function originOf(protocol: MasqueProtocol): URL {
    return new URL(templates[protocol].origin ?? proxy.origin);
  }

  function getSession(): Promise<http2.ClientHttp2Session> {
    if (session !== undefined) return session;
    const s = http2.connect(proxy.origin, { ...options.tls, settings: { enablePush: false } });
    raw = s;
    const ready = new Promise<http2.ClientHttp2Session>((resolve, reject) => {
      const fail = (e: unknown) => reject(toError(e, 'the HTTP/2 connection to the MASQUE proxy failed'));
      s.once('error', fail);
      s.once('close', () => fail(new Error('session closed before SETTINGS')));
      s.once('remoteSettings', (settings) => {
        s.off('error', fail);
        if (settings.enableConnectProtocol !== true) {
          s.destroy();
          reject(
            new OxyError(
              OXY_ERR.MASQUE_REFUSED,
              'the proxy does not allow extended CONNECT (no SETTINGS_ENABLE_CONNECT_PROTOCOL)',
              { source: 'upstream' },
            ),
          );
          return;
        }
        resolve(s);
      });
    });
    // A later failure forgets the session so the next tunnel opens a fresh one.
    s.on('error', () => {});
    s.once('close', () => {
      if (session === ready) session = undefined;
    });
    session = ready;
    ready.catch(() => {
      if (session === ready) session = undefined;
    });
    return ready;
  }

  function track<T extends UdpTunnel | IpTunnel>(t: T): T {
    open.add(t);
    void t.whenClosed.then(() => open.delete(t));
    return t;
  }

  function makeTunnel(init: TunnelInit): UdpTunnel | IpTunnel {
    return init.protocol === 'connect-udp' ? new UdpTunnel(init) : new IpTunnel(init);
  }

  function openH2(target: Target, signal: AbortSignal | undefined): Promise<UdpTunnel | IpTunnel> {
    const origin = originOf(target.protocol);
    // The timeout and the signal cover the session's set-up too: a proxy that accepts but
    // never sends SETTINGS must not hang the caller.
    return settleOpen<UdpTunnel | IpTunnel>(timeoutMs, signal, (resolve, reject) => {
      let stream: http2.ClientHttp2Stream | undefined;
      let cancelled = false;
      getSession().then((s) => {
        if (cancelled) return;
        try {
          stream = s.request(
            {
              ':method': 'CONNECT',
              ':protocol': target.protocol,
              ':scheme': origin.protocol.slice(0, -1),
              ':authority': origin.host,
              ':path': target.path,
              'capsule-protocol': '?1',
              ...options.headers,
            },
            { endStream: false },
          );
        } catch (e) {
          // The session went away between SETTINGS and this request.
          reject(toError(e, 'the MASQUE request could not be sent'));
          return;
        }
        const st = stream;
        const fail = (e: unknown) => reject(toError(e, 'the MASQUE request stream failed'));
        const early = () => fail(new Error(`stream closed before an answer (code ${st.rstCode})`));
        st.once('error', fail);
        st.once('close', early);
        st.once('response', (headers) => {
          const status = Number(headers[':status']);
          st.off('error', fail);
          st.off('close', early);
          if (status < 200 || status > 299 || badCapsuleResponse(status, headers) !== undefined) {
            // Boundary: the open already failed; the reset below may surface as a stream error.
            st.on('error', () => {});
          }
          if (status < 200 || status > 299) {
            // The refusal's body is not wanted, but a stream whose readable side is never
            // consumed never emits 'close', and `session.close()` (in `close()`) waits for it.
            st.resume();
            st.close(http2.constants.NGHTTP2_CANCEL);
            reject(new MasqueRefusedError(status, headers['proxy-status'], `status ${status}`));
            return;
          }
          const bad = badCapsuleResponse(status, headers);
          if (bad !== undefined) {
            st.resume();
            st.close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
            reject(new MasqueRefusedError(status, headers['proxy-status'], bad));
            return;
          }
          resolve(
            makeTunnel({
              protocol: target.protocol,
              stream: st,
              status,
              headers,
              maxCapsuleSize: options.maxCapsuleSize,
              highWaterMark: options.highWaterMark,
              abort: () => st.close(http2.constants.NGHTTP2_PROTOCOL_ERROR),
            }),
          );
        });
      }, reject);
      return () => {
        cancelled = true;
        stream?.close(http2.constants.NGHTTP2_CANCEL);
      };
    });
  }

  function openH1(target: Target, signal: AbortSignal | undefined): Promise<UdpTunnel | IpTunnel> {
    const origin = originOf(target.protocol);
    return settleOpen<UdpTunnel | IpTunnel>(timeoutMs, signal, (resolve, reject) => {
      const req = (proxy.protocol === 'https:' ? https : http).request({
        ...(proxy.protocol === 'https:' ? options.tls : {}),
        host: proxy.hostname.replace(/^\[|\]$/g, ''),
        port: proxy.port || (proxy.protocol === 'https:' ? 443 : 80),
        method: 'GET',
        path: target.path,
        agent: false,
        headers: {
          Host: origin.host,
          Connection: 'Upgrade',
          Upgrade: target.protocol,
          'Capsule-Protocol': '?1',
          ...options.headers,
        },
      });
      req.once('error', (e) => reject(toError(e, 'the HTTP/1.1 connection to the MASQUE proxy failed')));
      req.once('response', (res) => {
        res.resume();
        reject(
          new MasqueRefusedError(
            res.statusCode ?? 0,
            res.headers['proxy-status'],
            `status ${res.statusCode}`,
          ),
        );
      });
      req.once('upgrade', (res: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
        const upgrade = String(res.headers.upgrade ?? '').toLowerCase();
        const connection = String(res.headers.connection ?? '').toLowerCase();
        const bad =
          res.statusCode !== 101
            ? `status ${res.statusCode}`
            : upgrade !== target.protocol
              ? `Upgrade answered ${JSON.stringify(res.headers.upgrade)}`
              : !connection.split(',').some((t) => t.trim() === 'upgrade')
                ? 'Connection does not name upgrade'
                : badCapsuleResponse(101, res.headers);
        if (bad !== undefined) {
          socket.destroy();
          reject(new MasqueRefusedError(res.statusCode ?? 0, res.headers['proxy-status'], bad));
          return;
        }
        socket.setNoDelay(true);
        resolve(
          makeTunnel({
            protocol: target.protocol,
            stream: socket,
            head,
            status: 101,
            headers: res.headers,
            maxCapsuleSize: options.maxCapsuleSize,
            highWaterMark: options.highWaterMark,
            abort: () => socket.destroy(),
          }),
        );
      });
      req.end();
      return () => req.destroy();
    });
  }

  async function openTunnel(target: Target, opts: OpenOptions | undefined): Promise<UdpTunnel | IpTunnel> {
    if (closing) throw new OxyError(OXY_ERR.CLIENT_CLOSED, 'the MASQUE client is closed');
    const t =
      options.httpVersion === '1.1' ? await openH1(target, opts?.signal) : await openH2(target, opts?.signal);
    return track(t);
  }

  return {
    async connectUdp(host, port, opts) {
      const path = expandUriTemplate(templates['connect-udp'], {
        target_host: host,
        target_port: String(port),
      });
      return (await openTunnel({ protocol: 'connect-udp', path }, opts)) as UdpTunnel;
    },
    async connectIp(scope = {}, opts) {
      const path = expandUriTemplate(templates['connect-ip'], {
        target: scope.target ?? '*',
        ipproto: String(scope.ipproto ?? '*'),
      });
      return (await openTunnel({ protocol: 'connect-ip', path }, opts)) as IpTunnel;
    },
    get tunnels() {
      return open.size;
    },
    async close() {
      closing = true;
      await Promise.all([...open].map((t) => t.close()));
      const s = raw;
      if (s === undefined || s.destroyed) return;
      // No tunnel is left: a ready session closes with GOAWAY; one still waiting for SETTINGS
      // (or that refused extended CONNECT) has nothing to finish and is destroyed.
      if (s.closed || s.remoteSettings.enableConnectProtocol !== true) s.destroy();
      else await new Promise<void>((resolve) => s.close(() => resolve()));
    },
  };
}

function toError(e: unknown, what: string): OxyError {
  if (e instanceof OxyError) return e;
  const cause = e instanceof Error ? e : new Error(String(e));
  const code =
    (cause as NodeJS.ErrnoException).code === 'ECONNREFUSED'
      ? OXY_ERR.CONNECT_REFUSED
      : OXY_ERR.UPSTREAM_FAILED;
  return new OxyError(code, `${what}: ${cause.message}`, { source: 'upstream', cause, retryable: true });
}
