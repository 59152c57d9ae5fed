/**
 * The audit log: one JSON record per tunnel and per forwarded request, written when it ends,
 * to `audit.output` (off, stdout, or an appended file). Separate from the service log so it can
 * be shipped and kept on its own terms; written directly (not through pino) because it is
 * data, not diagnostics, and must not be dropped by verbosity or rate limits.
 *
 * The file writer survives write errors (a full disk, a file system gone read-only):
 * - records wait in memory, in order, up to `audit.max_buffer` bytes; past that a record is
 *   dropped and counted (`oxy_audit_records_dropped_total`), never silently;
 * - a failed write is retried every `audit.retry_interval` on a freshly opened file, so writing
 *   resumes by itself once space is freed or the file system is back;
 * - a record is written whole or not at all: the line cut by a short write (ENOSPC, EFBIG) is
 *   truncated off the file and written again later;
 * - the file is reopened on SIGHUP and when `audit.path` no longer names it (moved or removed by
 *   `logrotate`), checked every `audit.retry_interval`.
 *
 * Ordering rules: one write in flight at a time, so lines never interleave and keep their
 * order; a reopen waits for the write in flight. After `close()` records are appended
 * synchronously (connections torn down by the drain report a few ticks later).
 */
import fs from 'node:fs';
import { log } from 'foundations/telemetry';
import type { ClientIdentity } from './context/contexts.ts';
import { OXY_ERR, OxyError } from './errors.ts';
import type { ProxyHeaderView } from './protocols/proxy-protocol/view.ts';
import type { AuditSettings } from './settings.ts';
import { auditMetrics } from './telemetry/metrics.ts';

/** One audit record. Field names are stable: downstream tools parse them. */
export interface AuditRecord {
  /**
   * `tunnel` (CONNECT, Upgrade, a `tcp` connection, a CONNECT-IP tunnel), `request`
   * (absolute-form), `udp_session`, or `connection`: a connection the app refused before any
   * request (`IngressHook` or `ProxyProtocolHook` blocked it, or threw), with an empty
   * `request_id` and `target`.
   */
  readonly kind: 'tunnel' | 'request' | 'udp_session' | 'connection';
  /**
   * The request kind behind the record (`RequestKind`): `connect`, `forward`, `upgrade`, `tcp`,
   * `udp`, `connect-udp` (a MASQUE CONNECT-UDP tunnel, written as a `udp_session`), `connect-ip`
   * (a MASQUE CONNECT-IP tunnel, written as a `tunnel` whose datagram counts are its IP packets),
   * `ip-tcp` (an IP tunnel's TCP flow upgraded to a stream, a `tunnel`), `ip-udp` (its UDP flow, a
   * `udp_session`), `intercepted` or `tunnelled` (requests read inside a tunnel, written as
   * `request`).
   */
  readonly request_kind?: string;
  readonly conn_id: string;
  readonly request_id: string;
  /**
   * For a request read inside a tunnel (`request_kind` `intercepted` or `tunnelled`): the
   * `request_id` of the CONNECT that carried it. Absent otherwise.
   */
  readonly parent_request_id?: string;
  readonly endpoint: string;
  /**
   * `ip:port` of the client (the PROXY protocol header's source when the endpoint reads one);
   * empty for a client of a Unix-socket endpoint, whose socket has no address.
   */
  readonly client: string;
  /**
   * `ip:port` of the socket's own peer: the PROXY header's sender when there was one, else
   * `client` (empty on a Unix socket).
   */
  readonly peer: string;
  /** What the client asked for: `host:port`. */
  readonly target: string;
  /** `ip:port` actually connected to (or the upstream proxy's), null if none. */
  readonly upstream: string | null;
  /**
   * For a request forwarded to an `https` origin: the protocol the origin chose in ALPN, `h2`
   * or `http/1.1`. Absent otherwise (cleartext, tunnels, no upstream reached).
   */
  readonly upstream_protocol?: 'h2' | 'http/1.1';
  /** Decisions taken, in order: `connect:allow`, `egress:direct`, `request:respond`, … */
  readonly decisions: readonly string[];
  /** The status the client got (200 for an established tunnel). */
  readonly status: number;
  readonly bytes_up: number;
  readonly bytes_down: number;
  readonly duration_ms: number;
  /** `done`, `client_reset`, `idle_timeout`, `blocked`, an `OXY_ERR_*` code, … */
  readonly close_reason: string;
  /** Why it was refused, when a block decision or `egress.blocked_cidrs` refused it: the hook's reason. Absent otherwise. */
  readonly block_reason?: string;
  /** The PROXY protocol header the connection opened with (version, addresses, TLVs by name), when there was one. */
  readonly proxy_protocol?: ProxyHeaderView;
  /** Datagrams client → upstream (`udp_session` records, and CONNECT-IP `tunnel` records: IP packets). */
  readonly datagrams_up?: number;
  /** Datagrams upstream → client (`udp_session` records, and CONNECT-IP `tunnel` records: IP packets). */
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

const STDOUT: AuditSink = {
  enabled: true,
  write(record) {
    process.stdout.write(`${JSON.stringify(record)}\n`);
  },
  close: async () => {},
};

/** Opens `file` for appending; throws an OxyError naming `audit.path`. */
function openFile(file: string): number {
  try {
    return fs.openSync(file, 'a');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new OxyError(OXY_ERR.INVALID_APP, `audit.path: cannot open ${file}: ${code}`, { cause: e });
  }
}

/** Opens the audit sink `settings` describe. Throws an OxyError naming `audit.path` when the file cannot be opened. */
export function openAudit(settings: AuditSettings): AuditSink {
  if (settings.output === 'off') return OFF;
  if (settings.output === 'stdout') return STDOUT;
  return new AuditFile(settings.path, settings.max_buffer, settings.retry_interval);
}

/** A write error that says how many bytes of the batch reached the file before it. */
type WriteFailure = NodeJS.ErrnoException & { written: number };

/** The file writer described at the top of this module. */
class AuditFile implements AuditSink {
  readonly enabled = true;
  readonly #path: string;
  readonly #maxBuffer: number;
  #fd: number;
  #ino = 0;
  #dev = 0;
  /** Lines not yet written, oldest first, and their total size. */
  #queue: string[] = [];
  #queued = 0;
  #writing = false;
  /** The last write failed: nothing is written until the retry timer reopens the file. */
  #failing = false;
  /** Writes have failed since the last success (logged once per such episode). */
  #troubled = false;
  #reopenWanted = false;
  #droppedSinceFailure = 0;
  #closed = false;
  #idle: (() => void) | null = null;
  readonly #timer: NodeJS.Timeout;
  readonly #onHup = (): void => this.#reopen();

  constructor(file: string, maxBuffer: number, retryMs: number) {
    this.#path = file;
    this.#maxBuffer = maxBuffer;
    this.#fd = openFile(file);
    this.#remember();
    this.#timer = setInterval(() => this.#check(), Math.max(10, retryMs)).unref();
    process.on('SIGHUP', this.#onHup);
  }

  write(record: AuditRecord): void {
    const line = `${JSON.stringify(record)}\n`;
    if (this.#closed) {
      this.#appendAfterClose(line);
      return;
    }
    const size = Buffer.byteLength(line);
    if (this.#queued + size > this.#maxBuffer) {
      this.#drop();
      return;
    }
    this.#queue.push(line);
    this.#queued += size;
    auditMetrics.buffered_bytes().set(this.#queued);
    if (!this.#failing) this.#flush();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    process.off('SIGHUP', this.#onHup);
    if (this.#writing) await new Promise<void>((resolve) => (this.#idle = resolve));
    const rest = this.#queue.join('');
    this.#queue = [];
    this.#queued = 0;
    if (rest.length > 0) this.#appendAfterClose(rest);
    fs.close(this.#fd, () => {});
  }

  #drop(): void {
    auditMetrics.records_dropped_total().inc();
    if (this.#droppedSinceFailure++ === 0)
      log.error('audit buffer full; records are being dropped', {
        path: this.#path,
        max_buffer: this.#maxBuffer,
      });
  }

  /** Appends whole lines synchronously (after close); counts what could not be written. */
  #appendAfterClose(text: string): void {
    try {
      fs.appendFileSync(this.#path, text);
    } catch {
      // Boundary: the sink is closed and its file is gone or full; the record is counted lost.
      auditMetrics.records_dropped_total().inc(countLines(text));
    }
  }

  /** Writes what is queued, one batch at a time. */
  #flush(): void {
    if (this.#writing || this.#failing || this.#queue.length === 0) return;
    this.#writing = true;
    const lines = this.#queue.length;
    const batch = Buffer.from(this.#queue.join(''));
    writeAll(this.#fd, batch, 0, (err) => {
      this.#writing = false;
      if (err === null) {
        this.#written(lines, batch.length);
        if (this.#troubled) this.#recovered();
      } else {
        this.#failed(err, batch);
      }
      const idle = this.#idle;
      this.#idle = null;
      if (idle !== null) {
        idle();
        return;
      }
      if (this.#reopenWanted) this.#reopen();
      else this.#flush();
    });
  }

  #written(lines: number, bytes: number): void {
    this.#queue.splice(0, lines);
    this.#queued -= bytes;
    auditMetrics.records_written_total().inc(lines);
    auditMetrics.buffered_bytes().set(this.#queued);
  }

  /** Keeps the whole lines that reached the file, cuts off a partial one, and waits for a retry. */
  #failed(err: WriteFailure, batch: Buffer): void {
    auditMetrics.write_errors_total().inc();
    // (A negative offset would search from the end: nothing written means no whole line.)
    const whole = err.written === 0 ? 0 : batch.lastIndexOf(10, err.written - 1) + 1;
    if (whole > 0) this.#written(countLines(batch.subarray(0, whole).toString()), whole);
    const partial = err.written - whole;
    if (partial > 0) {
      try {
        const st = fs.fstatSync(this.#fd);
        if (st.isFile()) fs.ftruncateSync(this.#fd, st.size - partial);
      } catch (e) {
        log.error('audit log: could not remove a partial line', { path: this.#path, err: e });
      }
    }
    this.#failing = true;
    if (!this.#troubled) {
      this.#troubled = true;
      this.#droppedSinceFailure = 0;
      log.error('audit log write failed; records are held and retried', { path: this.#path, err });
    }
  }

  #recovered(): void {
    this.#troubled = false;
    log.info('audit log writing again', { path: this.#path, dropped: this.#droppedSinceFailure });
    this.#droppedSinceFailure = 0;
  }

  /** Every retry interval: a failed write is retried on a reopened file; a moved file is reopened. */
  #check(): void {
    if (this.#failing) {
      this.#reopen();
      return;
    }
    let moved: boolean;
    try {
      const st = fs.statSync(this.#path);
      moved = st.ino !== this.#ino || st.dev !== this.#dev;
    } catch {
      // Boundary: the path is gone (removed or renamed away); reopening creates it.
      moved = true;
    }
    if (moved) this.#reopen();
  }

  /** Opens `audit.path` again (once the write in flight is done) and writes what waits. */
  #reopen(): void {
    if (this.#closed) return;
    if (this.#writing) {
      this.#reopenWanted = true;
      return;
    }
    this.#reopenWanted = false;
    let fd: number;
    try {
      fd = fs.openSync(this.#path, 'a');
    } catch (e) {
      this.#failing = true;
      if (!this.#troubled) {
        this.#troubled = true;
        this.#droppedSinceFailure = 0;
        log.error('audit log cannot be reopened; records are held and retried', { path: this.#path, err: e });
      }
      return;
    }
    fs.close(this.#fd, () => {});
    this.#fd = fd;
    this.#remember();
    // Writing resumes; the episode ends with the first write that succeeds.
    this.#failing = false;
    this.#flush();
  }

  #remember(): void {
    try {
      const st = fs.fstatSync(this.#fd);
      this.#ino = st.ino;
      this.#dev = st.dev;
    } catch {
      // Boundary: fstat on a descriptor just opened does not fail in practice; no rotation check.
    }
  }
}

function countLines(text: string): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

/** Writes `buf` from `offset` to its end, across short writes; the error says how much got out. */
function writeAll(fd: number, buf: Buffer, offset: number, done: (err: WriteFailure | null) => void): void {
  fs.write(fd, buf, offset, buf.length - offset, null, (err, n) => {
    if (err !== null) {
      done(Object.assign(err, { written: offset }));
      return;
    }
    if (offset + n >= buf.length) done(null);
    else writeAll(fd, buf, offset + n, done);
  });
}
