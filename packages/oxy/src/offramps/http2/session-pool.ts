/**
 * The HTTP/2 upstream: HTTPS origins that choose `h2` in ALPN get their requests as streams of
 * shared `node:http2` client sessions, one set per pool key (`https|<name>|<address>`, plus the
 * client connection's id when egress hooks make pools per client: `flows/http/route.ts`). The
 * trust configuration is the runtime's (`rt.upstreamTrust`, fixed for the process), so a key
 * names (trust, server name, address). It sits behind the HTTP/1.1 pool's `request`
 * (`offramps/http/pool.ts`), which hands it every `https` request while `egress.tls.http2` is
 * on; requests it learns are for an HTTP/1.1 origin go back to that pool.
 *
 * Ordering rules:
 * - A key's first request opens a connection: the egress pipeline (`connectDirect`, then
 *   `established`), then verified TLS (`connectTls`, ALPN `h2, http/1.1`; a verification
 *   failure is a 502 with the reason, never a retry in the clear). What ALPN chose is
 *   remembered per key ({@link PROTOCOL_MEMORY_MS}), so later requests go straight to the
 *   right client. Requests for the key that arrive meanwhile wait for that connection.
 * - `http/1.1`: the connection carries the first waiting request through the HTTP/1.1 pool
 *   (`requestOn`), the others go to that pool as any request would.
 * - `h2`: `http2.connect` over the verified socket; requests are dispatched once the peer's
 *   SETTINGS arrived, at most SETTINGS_MAX_CONCURRENT_STREAMS at a time per session. When every
 *   session of a key is full another is opened (at most {@link MAX_SESSIONS_PER_KEY}), else the
 *   request waits for a stream to end.
 * - A GOAWAY retires its session (no new streams; those in flight finish); a closed session is
 *   forgotten. A session with no stream for `egress.pool_idle_timeout` is closed.
 */
import http2 from 'node:http2';
import type tls from 'node:tls';
import { LRUCache } from 'lru-cache';
import { formatHostPort } from '../../context/addr.ts';
import type { SocketAddr } from '../../context/contexts.ts';
import { connectDirect, established } from '../../egress/connect.ts';
import { OXY_ERR, toOxyError } from '../../errors.ts';
import type { Runtime } from '../../runtime.ts';
import type { HttpPool, PendingRequest, RequestBody, ResponseSink, UpstreamTarget } from '../http/pool.ts';
import { connectTls } from '../tls/connect.ts';
import { type Http2Dispatcher, Http2Exchange } from './exchange.ts';

/** How long a key remembers what ALPN chose (an origin may start offering h2). */
export const PROTOCOL_MEMORY_MS = 10 * 60_000;

/** The most HTTP/2 sessions open at once to one pool key. */
export const MAX_SESSIONS_PER_KEY = 8;

/** One HTTP/2 session to an origin and how many of its streams are open. */
export class UpstreamSession {
  readonly session: http2.ClientHttp2Session;
  readonly key: string;
  /** `ip:port` it is connected to. */
  readonly upstream: string;
  readonly #owner: Http2Upstream;
  /** Streams open (counted from the request until the stream's 'close'). */
  active = 0;
  /** Streams it carried, in all. */
  streams = 0;
  /** The peer's SETTINGS arrived: its stream limit is known. */
  ready = false;
  /** The last stream id a GOAWAY said the peer processed, or null (no GOAWAY). */
  goawayLastStream: number | null = null;
  /** No new streams (GOAWAY, closing, or gone). */
  retired = false;
  #idle: NodeJS.Timeout | undefined;

  constructor(owner: Http2Upstream, key: string, session: http2.ClientHttp2Session, remote: SocketAddr) {
    this.#owner = owner;
    this.key = key;
    this.session = session;
    this.upstream = formatHostPort(remote.host, remote.port);
  }

  /** True when a new stream may start here now. */
  get hasRoom(): boolean {
    if (!this.ready || this.retired || this.session.closed || this.session.destroyed) return false;
    const max = this.session.remoteSettings.maxConcurrentStreams ?? 0xffffffff;
    return this.active < max;
  }

  /** A stream started. */
  opened(): void {
    this.active++;
    this.streams++;
    clearTimeout(this.#idle);
  }

  /** A stream closed: its slot is free. */
  closed(): void {
    this.active--;
    this.armIdle();
    this.#owner.pump(this.key);
  }

  /** Without a stream open, the session closes after `egress.pool_idle_timeout`. */
  armIdle(): void {
    if (this.active !== 0 || this.retired) return;
    clearTimeout(this.#idle);
    this.#idle = setTimeout(() => {
      if (this.active === 0) this.retire();
    }, this.#owner.idleTimeout);
    this.#idle.unref();
  }

  /** No new streams; the session closes once those in flight ended. */
  retire(): void {
    if (this.retired) return;
    this.retired = true;
    clearTimeout(this.#idle);
    this.#owner.forget(this);
    if (!this.session.closed) this.session.close();
  }
}

/** The HTTP/2 client of one HTTP pool. */
export class Http2Upstream implements Http2Dispatcher {
  readonly #rt: Runtime;
  readonly #pool: HttpPool;
  readonly #protocols = new LRUCache<string, 'h2' | 'http/1.1'>({ max: 4096, ttl: PROTOCOL_MEMORY_MS });
  readonly #sessions = new Map<string, UpstreamSession[]>();
  /** Requests waiting for room, per key. */
  readonly #waiting = new Map<string, Http2Exchange[]>();
  /** Keys with a connection being opened. */
  readonly #opening = new Set<string>();
  readonly idleTimeout: number;
  readonly responseTimeout: number;
  #closed = false;

  constructor(rt: Runtime, pool: HttpPool) {
    this.#rt = rt;
    this.#pool = pool;
    this.idleTimeout = Math.max(1, rt.settings.egress.pool_idle_timeout);
    this.responseTimeout = rt.settings.egress.response_timeout;
  }

  /** What ALPN chose for `key` lately, or undefined when not known. */
  protocolOf(key: string): 'h2' | 'http/1.1' | undefined {
    return this.#protocols.get(key);
  }

  /**
   * Records that the origin of `key` chose HTTP/1.1 on a connection opened elsewhere (the one
   * that proved an intercepted tunnel's origin, adopted by the HTTP/1.1 pool), so its requests
   * go to that pool instead of opening a connection here to find out.
   */
  learnedHttp1(key: string): void {
    this.#protocols.set(key, 'http/1.1');
  }

  /** Sessions open to `key` (for tests and metrics). */
  sessionsOf(key: string): readonly UpstreamSession[] {
    return this.#sessions.get(key) ?? [];
  }

  /**
   * Sends a request (the arguments of `HttpPool.request`) to an `https` target, or returns null
   * when the origin is known to speak HTTP/1.1 (the caller's pool sends it then).
   */
  request(
    target: UpstreamTarget,
    method: string,
    head: string,
    sink: ResponseSink,
    body: RequestBody | null,
  ): PendingRequest | null {
    if (this.#protocols.get(target.key) === 'http/1.1') return null;
    const ex = new Http2Exchange(this, target, method, head, sink, body);
    this.dispatch(ex);
    return ex;
  }

  dispatch(ex: Http2Exchange): void {
    if (ex.aborted) return;
    const key = ex.target.key;
    if (this.#protocols.get(key) === 'http/1.1' && ex.attempts === 0) {
      ex.delegate = this.#pool.request(ex.target, ex.method, ex.head, ex.sink, ex.body);
      return;
    }
    const s = this.#roomy(key);
    if (s !== undefined && (this.#waiting.get(key)?.length ?? 0) === 0) {
      ex.run(s, s.streams > 0);
      return;
    }
    let q = this.#waiting.get(key);
    if (q === undefined) {
      q = [];
      this.#waiting.set(key, q);
    }
    q.push(ex);
    this.pump(key);
  }

  #roomy(key: string): UpstreamSession | undefined {
    const list = this.#sessions.get(key);
    if (list === undefined) return undefined;
    for (const s of list) if (s.hasRoom) return s;
    return undefined;
  }

  /** Starts waiting requests of `key` where there is room, and opens a session if none has. */
  pump(key: string): void {
    const q = this.#waiting.get(key);
    if (q === undefined) return;
    while (q.length > 0) {
      const s = this.#roomy(key);
      if (s === undefined) break;
      const ex = q.shift() as Http2Exchange;
      if (!ex.aborted) ex.run(s, s.streams > 0);
    }
    while (q.length > 0 && (q[0] as Http2Exchange).aborted) q.shift();
    if (q.length === 0) {
      this.#waiting.delete(key);
      return;
    }
    if (this.#closed || this.#opening.has(key)) return;
    if ((this.#sessions.get(key)?.length ?? 0) >= MAX_SESSIONS_PER_KEY) return;
    this.#open(key, (q[0] as Http2Exchange).target);
  }

  #open(key: string, t: UpstreamTarget): void {
    const rt = this.#rt;
    this.#opening.add(key);
    const failed = (e: unknown): void => {
      this.#opening.delete(key);
      const q = this.#waiting.get(key) ?? [];
      this.#waiting.delete(key);
      const err = toOxyError(e, OXY_ERR.UPSTREAM_FAILED, 'upstream');
      for (const ex of q) ex.failWaiting(err);
    };
    connectDirect(rt, t.egress, t.addr, t.trusted).then(({ socket, remote }) => {
      if (this.#closed) {
        socket.destroy();
        failed(new Error('the pool is closed'));
        return;
      }
      try {
        established(rt, t.egress, socket, remote);
      } catch (e) {
        socket.destroy();
        failed(e);
        return;
      }
      connectTls({
        host: t.tls as string,
        port: t.addr.port,
        trust: rt.upstreamTrust,
        socket,
        alpn: ['h2', 'http/1.1'],
        timeoutMs: rt.settings.egress.connect_timeout,
      }).then(({ socket: tlsSocket, alpn }) => {
        this.#protocols.set(key, alpn);
        if (this.#closed) {
          tlsSocket.destroy();
          failed(new Error('the pool is closed'));
        } else if (alpn === 'h2') this.#startSession(key, tlsSocket, remote, failed);
        else this.#toHttp1(key, tlsSocket, remote);
      }, failed);
    }, failed);
  }

  /** The origin chose HTTP/1.1: the connection carries the first waiting request, the pool the rest. */
  #toHttp1(key: string, socket: tls.TLSSocket, remote: SocketAddr): void {
    this.#opening.delete(key);
    const q = this.#waiting.get(key) ?? [];
    this.#waiting.delete(key);
    let first = true;
    for (const ex of q) {
      if (ex.aborted) continue;
      if (first) {
        first = false;
        ex.delegate = this.#pool.requestOn(socket, remote, ex.target, ex.method, ex.head, ex.sink, ex.body);
      } else ex.delegate = this.#pool.request(ex.target, ex.method, ex.head, ex.sink, ex.body);
    }
    if (first) socket.destroy(); // everyone waiting left
  }

  /**
   * Makes `socket`, a verified connection to `remote` whose ALPN chose `h2` (opened elsewhere,
   * e.g. the connection that proved an intercepted tunnel's origin), a session of `key`.
   */
  adopt(key: string, socket: tls.TLSSocket, remote: SocketAddr): void {
    if (this.#closed) {
      socket.destroy();
      return;
    }
    this.#protocols.set(key, 'h2');
    this.#startSession(key, socket, remote, () => {});
  }

  #startSession(key: string, socket: tls.TLSSocket, remote: SocketAddr, failed: (e: unknown) => void): void {
    const session = http2.connect(`https://${formatHostPort(remote.host, remote.port)}`, {
      createConnection: () => socket,
    });
    const s = new UpstreamSession(this, key, session, remote);
    let list = this.#sessions.get(key);
    if (list === undefined) {
      list = [];
      this.#sessions.set(key, list);
    }
    list.push(s);
    const timer = setTimeout(() => {
      session.destroy();
      failed(new Error('the origin sent no HTTP/2 SETTINGS'));
    }, this.#rt.settings.egress.connect_timeout);
    session.once('remoteSettings', () => {
      clearTimeout(timer);
      s.ready = true;
      this.#opening.delete(key);
      this.pump(key);
      s.armIdle(); // every request that waited for it may have left
    });
    session.on('goaway', (_code: number, lastStreamID: number) => {
      s.goawayLastStream = lastStreamID;
      s.retire();
    });
    session.on('error', () => {}); // streams report their own failure
    session.once('close', () => {
      clearTimeout(timer);
      if (!s.ready) failed(new Error('the origin closed the HTTP/2 session before its SETTINGS'));
      s.retired = true;
      this.forget(s);
      this.pump(key);
    });
  }

  /** Removes a session from its key's list (it takes no new streams). */
  forget(s: UpstreamSession): void {
    const list = this.#sessions.get(s.key);
    if (list === undefined) return;
    const i = list.indexOf(s);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.#sessions.delete(s.key);
  }

  /** Closes every session; streams in flight finish first. */
  destroy(): void {
    this.#closed = true;
    for (const list of [...this.#sessions.values()]) for (const s of [...list]) s.retire();
  }
}
