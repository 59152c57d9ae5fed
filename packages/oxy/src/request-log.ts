/**
 * `requestLog()`: an access log as an app. One structured line per request or tunnel (method,
 * target, status, bytes, timings, upstream, close reason, client), written from
 * `HttpRequestHook.handleRequestEnd`, so it covers every kind of traffic the framework ends in
 * one place (`flows/record.ts`) and keeps every fast path (that hook turns none off).
 *
 * It is an ordinary app: run it alone, or add it to others with `composeApps(myApp,
 * requestLog())` (events of composed apps all fire, in order). `requestLogHooks()` gives the
 * bare hooks for an app that wants to merge them into its own.
 *
 * Ordering rule: the line is written when the request's audit record is, after its response
 * (or tunnel) ended; it is written in the request's telemetry context, so it carries the
 * `conn_id`, `endpoint`, `client` and `request_id` fields like any log record of the request.
 */
import { log } from 'foundations/telemetry';
import { defineApp, type OxyApp } from './app.ts';
import { formatAddr } from './context/addr.ts';
import type { RequestContext } from './context/contexts.ts';
import type { RequestEndInfo } from './hooks/http-request.ts';
import type { Hooks } from './hooks/run.ts';

/** One request's line: snake_case fields, as the audit record and the framework's logs name them. */
export interface RequestLogLine {
  readonly request_id: string;
  readonly conn_id: string;
  readonly endpoint: string;
  /** The client, `host:port` (the PROXY header's source when there is one); empty on a Unix socket. */
  readonly client: string;
  readonly kind: RequestEndInfo['kind'];
  readonly method: string;
  readonly target: string;
  readonly status: number;
  readonly upstream: string | null;
  readonly upstream_reused: boolean;
  readonly bytes_up: number;
  readonly bytes_down: number;
  readonly duration_ms: number;
  readonly connect_ms: number | null;
  readonly first_byte_ms: number | null;
  readonly close_reason: string;
  /** The error's text, for a request that failed or was blocked. */
  readonly error?: string;
}

/** Options of {@link requestLog}. */
export interface RequestLogOptions {
  /** The app's name (in `composeApps`, names must be distinct). Default `request-log`. */
  readonly name?: string;
  /** Log only the requests this returns true for (e.g. failures: `(i) => i.error !== null`). */
  readonly filter?: (info: RequestEndInfo, ctx: RequestContext) => boolean;
  /**
   * Where each line goes. Default: the framework's log at INFO, message `request`, with the
   * line as fields (text or JSON as `telemetry.logging` says).
   */
  readonly write?: (line: RequestLogLine) => void;
}

/** The line of a finished request. */
export function requestLogLine(info: RequestEndInfo, ctx: RequestContext): RequestLogLine {
  const conn = ctx.ingress;
  const line = {
    request_id: ctx.id,
    conn_id: conn.id,
    endpoint: conn.endpoint.name,
    client: formatAddr(conn.client),
    kind: info.kind,
    method: info.method,
    target: info.target,
    status: info.status,
    upstream: info.upstream,
    upstream_reused: info.upstreamReused,
    bytes_up: info.bytesUp,
    bytes_down: info.bytesDown,
    duration_ms: info.durationMs,
    connect_ms: info.connectMs,
    first_byte_ms: info.firstByteMs,
    close_reason: info.closeReason,
  };
  return info.error === null ? line : { ...line, error: info.error.message };
}

const writeToLog = (line: RequestLogLine): void =>
  log.info('request', line as unknown as Record<string, unknown>);

/** The hooks of {@link requestLog}: `httpRequest.handleRequestEnd` only. */
export function requestLogHooks(options: RequestLogOptions = {}): Hooks {
  const write = options.write ?? writeToLog;
  const filter = options.filter;
  return {
    httpRequest: {
      handleRequestEnd(info: RequestEndInfo, ctx: RequestContext): void {
        if (filter !== undefined && !filter(info, ctx)) return;
        write(requestLogLine(info, ctx));
      },
    },
  };
}

/**
 * An app that writes one structured line per request or tunnel. Run it alone or compose it:
 * `composeApps(myApp, requestLog())`.
 */
export function requestLog(options: RequestLogOptions = {}): OxyApp {
  return defineApp({
    name: options.name ?? 'request-log',
    version: '1.0.0',
    description: 'Writes one structured log line per request or tunnel',
    start: () => requestLogHooks(options),
  });
}
