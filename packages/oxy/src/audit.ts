/**
 * The audit log: one JSON record per tunnel and per forwarded request, written when it ends,
 * to `audit.output` (off, stdout, or an appended file). Separate from the service log so it can
 * be shipped and kept on its own terms; written directly (not through pino) because it is
 * data, not diagnostics, and must not be dropped by verbosity or rate limits.
 */
import fs from 'node:fs';
import { log } from 'foundations/telemetry';
import type { ClientIdentity } from './context/contexts.ts';
import { OXY_ERR, OxyError } from './errors.ts';
import type { ProxyHeaderView } from './protocols/proxy-protocol/view.ts';
import type { AuditSettings } from './settings.ts';

/** One audit record. Field names are stable: downstream tools parse them. */
export interface AuditRecord {
  /** `tunnel` (CONNECT, Upgrade, a `tcp` connection), `request` (absolute-form) or `udp_session`. */
  readonly kind: 'tunnel' | 'request' | 'udp_session';
  readonly conn_id: string;
  readonly request_id: string;
  readonly endpoint: string;
  /** `ip:port` of the client (the PROXY protocol header's source when the endpoint reads one). */
  readonly client: string;
  /** `ip:port` of the socket's own peer: the PROXY header's sender when there was one, else `client`. */
  readonly peer: string;
  /** What the client asked for: `host:port`. */
  readonly target: string;
  /** `ip:port` actually connected to (or the upstream proxy's), null if none. */
  readonly upstream: string | null;
  /** Decisions taken, in order: `connect:allow`, `egress:direct`, `request:respond`, … */
  readonly decisions: readonly string[];
  /** The status the client got (200 for an established tunnel). */
  readonly status: number;
  readonly bytes_up: number;
  readonly bytes_down: number;
  readonly duration_ms: number;
  /** `done`, `client_reset`, `idle_timeout`, `blocked`, an `OXY_ERR_*` code, … */
  readonly close_reason: string;
  /** The PROXY protocol header the connection opened with (version, addresses, TLVs by name), when there was one. */
  readonly proxy_protocol?: ProxyHeaderView;
  /** Datagrams client → upstream (`udp_session` records only). */
  readonly datagrams_up?: number;
  /** Datagrams upstream → client (`udp_session` records only). */
  readonly datagrams_down?: number;
  /** The client's verified certificate identity (mTLS), or null without one. */
  readonly client_identity: AuditClientIdentity | null;
}

/** A client identity in an audit record: `ClientIdentity` with snake_case keys. */
export interface AuditClientIdentity {
  readonly subject: string;
  readonly sans: readonly string[];
  readonly issuer: string;
  readonly fingerprint_sha256: string;
  readonly not_before: string;
  readonly not_after: string;
  readonly serial: string;
}

/** The audit form of a client identity. */
export function auditIdentity(identity: ClientIdentity | null): AuditClientIdentity | null {
  if (identity === null) return null;
  return {
    subject: identity.subject,
    sans: identity.sans,
    issuer: identity.issuer,
    fingerprint_sha256: identity.fingerprintSha256,
    not_before: identity.notBefore,
    not_after: identity.notAfter,
    serial: identity.serialNumber,
  };
}

/** Where audit records go. */
export interface AuditSink {
  /** True when records are written anywhere (callers skip building records otherwise). */
  readonly enabled: boolean;
  write(record: AuditRecord): void;
  close(): Promise<void>;
}

const OFF: AuditSink = { enabled: false, write() {}, close: async () => {} };

/**
 * Opens the audit file for appending, synchronously, so a path that cannot be opened is a
 * start-up error naming `audit.path` rather than an unhandled stream error once running.
 */
function openFile(file: string): fs.WriteStream {
  let fd: number;
  try {
    fd = fs.openSync(file, 'a');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new OxyError(OXY_ERR.INVALID_APP, `audit.path: cannot open ${file}: ${code}`, { cause: e });
  }
  return fs.createWriteStream(file, { fd });
}

/** Opens the audit sink `settings` describe. Throws an OxyError naming `audit.path` when the file cannot be opened. */
export function openAudit(settings: AuditSettings): AuditSink {
  if (settings.output === 'off') return OFF;
  const stream = settings.output === 'stdout' ? process.stdout : openFile(settings.path);
  // A write that fails once running (disk full, file system gone) loses audit records but must
  // not take the proxy down with an unhandled stream error: log it, once per kind of failure.
  const reported = new Set<string>();
  if (stream !== process.stdout) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      const key = err.code ?? err.message;
      if (reported.has(key)) return;
      reported.add(key);
      log.error('audit log write failed; records are being lost', { path: settings.path, err });
    });
  }
  // `close()` runs after the drain destroyed the last connections, but a tunnel or request torn
  // down that way writes its record a few ticks later: appended synchronously rather than
  // written to the ended stream (which throws ERR_STREAM_WRITE_AFTER_END, uncaught).
  let ended = false;
  return {
    enabled: true,
    write(record) {
      const line = `${JSON.stringify(record)}\n`;
      if (!ended || stream === process.stdout) stream.write(line);
      else
        try {
          fs.appendFileSync(settings.path, line);
        } catch {
          // Boundary: the sink is closed and its file is gone (removed after shutdown).
        }
    },
    close() {
      if (stream === process.stdout) return Promise.resolve();
      ended = true;
      return new Promise((resolve) => (stream as fs.WriteStream).end(resolve));
    },
  };
}
