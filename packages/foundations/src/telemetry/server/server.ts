/**
 * The telemetry server: a small HTTP server, separate from the service's own endpoints, for
 * health checks, Prometheus scraping and profiles; apps add routes to it.
 *
 * Built-in routes: `GET /health`, `GET /metrics`, `GET /pprof/heap`, `GET /pprof/heap_stats`,
 * `GET /pprof/profile?seconds=N`. An unknown path gets 404, a known path with another method
 * 405 (with `Allow`), a bad query 400, and a route that throws 500; nothing a client sends
 * can crash the process (malformed HTTP is answered 400 by Node's parser).
 */
import http from 'node:http';
import { FND_ERR, FoundationsError } from '../../errors.ts';
import { processListeners } from '../../restart/process-inheritance.ts';
import { log } from '../log/index.ts';
import { METRICS_CONTENT_TYPE, renderMetrics } from '../metrics/registry.ts';
import type { TelemetryListenAddr } from '../settings-types.ts';
import { cpuProfile, heapProfile, heapSamplingActive, heapStats, ProfilerBusyError } from './profiling.ts';

/** A request as a route handler sees it. */
export interface TelemetryRequest {
  readonly method: string;
  readonly url: URL;
  readonly headers: http.IncomingHttpHeaders;
  /** The Node request, e.g. to read a body. */
  readonly raw: http.IncomingMessage;
}

/** What a route handler returns. */
export interface TelemetryResponse {
  /** Default 200. */
  status?: number;
  /** Default `text/plain; charset=utf-8`. */
  contentType?: string;
  headers?: Record<string, string>;
  body: string | Uint8Array;
}

/** A route handler; a throw becomes a 500 and one error log record. */
export type RouteHandler = (req: TelemetryRequest) => TelemetryResponse | Promise<TelemetryResponse>;

const MAX_PROFILE_SECONDS = 300;

/** The running telemetry server. */
export class TelemetryServer {
  readonly #server: http.Server;
  readonly #routes = new Map<string, Map<string, RouteHandler>>();
  #unixPath: string | null = null;

  private constructor() {
    this.#server = http.createServer((req, res) => {
      this.#handle(req, res).catch((e: unknown) => {
        log.error('telemetry server: failed to answer', { err: e, path: req.url });
        if (!res.headersSent) res.writeHead(500).end();
        else res.destroy();
      });
    });
    this.#addBuiltins();
  }

  /** Starts a server on `addr` (a TCP `host:port` or a Unix socket path). */
  static async start(addr: TelemetryListenAddr): Promise<TelemetryServer> {
    const s = new TelemetryServer();
    await s.#listen(addr);
    return s;
  }

  /** Where the server listens (the actual port when the settings said 0). */
  address(): TelemetryListenAddr {
    // A Unix socket is bound under a temporary name and renamed, or adopted by fd (no name):
    // the configured path is where it is reachable.
    if (this.#unixPath !== null && this.#server.listening) return { kind: 'unix', path: this.#unixPath };
    const a = this.#server.address();
    if (typeof a === 'string') return { kind: 'unix', path: a };
    if (a === null) throw new FoundationsError(FND_ERR.TELEMETRY, 'telemetry server is not listening');
    return { kind: 'tcp', host: a.address, port: a.port };
  }

  /** The base URL of a TCP server, e.g. `http://127.0.0.1:9090`. */
  url(): string {
    const a = this.address();
    if (a.kind === 'unix')
      throw new FoundationsError(FND_ERR.TELEMETRY, 'telemetry server listens on a Unix socket');
    return `http://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
  }

  /**
   * Adds a route. Throws when `method path` is already routed, unless `replace` is set (e.g. a
   * supervisor serving its workers' `/metrics` and `/health` instead of its own).
   */
  addRoute(method: string, path: string, handler: RouteHandler, opts: { replace?: boolean } = {}): void {
    const m = method.toUpperCase();
    if (!path.startsWith('/'))
      throw new FoundationsError(FND_ERR.TELEMETRY, `route path "${path}" must start with "/"`);
    let byMethod = this.#routes.get(path);
    if (byMethod === undefined) {
      byMethod = new Map();
      this.#routes.set(path, byMethod);
    }
    if (byMethod.has(m) && opts.replace !== true)
      throw new FoundationsError(FND_ERR.TELEMETRY, `route ${m} ${path} is already defined`);
    byMethod.set(m, handler);
  }

  /** Stops accepting and closes open connections. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://telemetry.invalid');
    } catch {
      // Boundary: a request target that is not a path is the client's mistake.
      return send(res, { status: 400, body: 'bad request target\n' });
    }
    const byMethod = this.#routes.get(url.pathname);
    if (byMethod === undefined) return send(res, { status: 404, body: `no route for ${url.pathname}\n` });
    const method = req.method ?? 'GET';
    const handler = byMethod.get(method) ?? (method === 'HEAD' ? byMethod.get('GET') : undefined);
    if (handler === undefined) {
      const allow = [...byMethod.keys()].join(', ');
      return send(res, {
        status: 405,
        headers: { allow },
        body: `method ${method} not allowed; use ${allow}\n`,
      });
    }
    const answer = await handler({ method, url, headers: req.headers, raw: req });
    send(res, answer, method === 'HEAD');
  }

  #addBuiltins(): void {
    this.addRoute('GET', '/health', () => ({ body: 'ok\n' }));
    this.addRoute('GET', '/metrics', async () => ({
      contentType: METRICS_CONTENT_TYPE,
      body: await renderMetrics(),
    }));
    this.addRoute('GET', '/pprof/heap_stats', () => json(heapStats()));
    this.addRoute('GET', '/pprof/heap', async () => {
      if (!heapSamplingActive()) {
        return { status: 409, body: 'heap profiling is off; set telemetry.memory_profiler.enabled: true\n' };
      }
      return json(await heapProfile(), `heap-${Date.now()}.heapprofile`);
    });
    this.addRoute('GET', '/pprof/profile', async (req) => {
      const raw = req.url.searchParams.get('seconds') ?? '10';
      const seconds = /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
      if (!(seconds >= 1 && seconds <= MAX_PROFILE_SECONDS)) {
        return {
          status: 400,
          body: `seconds: expected an integer from 1 to ${MAX_PROFILE_SECONDS}, got "${raw}"\n`,
        };
      }
      try {
        return json(await cpuProfile(seconds), `cpu-${Date.now()}.cpuprofile`);
      } catch (e) {
        if (e instanceof ProfilerBusyError) return { status: 409, body: `${e.message}\n` };
        throw e;
      }
    });
  }

  async #listen(addr: TelemetryListenAddr): Promise<void> {
    // Through the process's listeners (foundations/restart): a socket inherited from the
    // previous process or systemd is reused, and this one is handed on at a graceful restart,
    // so a fixed telemetry port does not make the new process fail with EADDRINUSE.
    // Untracked: an open scrape connection must not hold a drain open.
    try {
      await processListeners().listen('telemetry', addr, this.#server, { untracked: true });
      if (addr.kind === 'unix') this.#unixPath = addr.path;
    } catch (e) {
      const reason = (e as Error).message;
      throw new FoundationsError(
        FND_ERR.TELEMETRY,
        `telemetry.server.addr: cannot listen on ${show(addr)}: ${reason}`,
        {
          cause: e,
        },
      );
    }
  }
}

function show(addr: TelemetryListenAddr): string {
  return addr.kind === 'unix' ? addr.path : `${addr.host}:${addr.port}`;
}

function json(value: unknown, filename?: string): TelemetryResponse {
  const headers: Record<string, string> =
    filename === undefined ? {} : { 'content-disposition': `attachment; filename="${filename}"` };
  return { contentType: 'application/json', headers, body: JSON.stringify(value) };
}

function send(res: http.ServerResponse, r: TelemetryResponse, headOnly = false): void {
  const body = typeof r.body === 'string' ? Buffer.from(r.body) : r.body;
  res.writeHead(r.status ?? 200, {
    'content-type': r.contentType ?? 'text/plain; charset=utf-8',
    'content-length': String(body.byteLength),
    'cache-control': 'no-store',
    ...r.headers,
  });
  res.end(headOnly ? undefined : body);
}
