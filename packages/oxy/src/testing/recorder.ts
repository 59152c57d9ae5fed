/**
 * The hook recorder: every hook call an app receives, per connection, in order, with a compact
 * summary of its arguments and of what it returned. Tests assert the order as a transcript:
 *
 * ```ts
 * recorder.expectHooks(conn, ['ingress.handleConnection', 'http.handleProxyConnectRequest', …]);
 * ```
 *
 * It works by wrapping the hooks the app's `start()` returns before Oxy resolves them, so the
 * framework runs exactly as in production and an app without the recorder pays nothing. Only
 * methods the app implements fire; to see every step, record an app that implements them all
 * (`tracingHooks` in `hook-orders.ts` builds one that answers with the defaults).
 */
import assert from 'node:assert/strict';
import type { ExtTypes } from '../context/contexts.ts';
import type { Hooks } from '../hooks/run.ts';

/** Short group names used in transcripts: `http.handleRequest`, `egress.handleConnection`. */
export const GROUP_LABELS = {
  lifecycle: 'lifecycle',
  ingress: 'ingress',
  proxyProtocol: 'proxyProtocol',
  httpRequest: 'http',
  httpBody: 'httpBody',
  tunnel: 'tunnel',
  datagram: 'datagram',
  egress: 'egress',
  tls: 'tls',
  ipTunnel: 'ipTunnel',
  ipFlow: 'ipFlow',
} as const;

/** One recorded call. */
export interface RecordedCall {
  /** `group.method`, e.g. `ingress.handleConnection`. */
  readonly hook: string;
  /** The ingress connection's id (`conn_id`), or `process` for lifecycle hooks. */
  readonly conn: string;
  /** A compact summary of the arguments, e.g. `CONNECT 127.0.0.1:4000`. */
  readonly args: string;
  /** A compact summary of the result (`allow`, `block: reason`, `direct 1.2.3.4:443`), set when it settles. */
  result: string;
  /** Sequence number across the whole recorder. */
  readonly seq: number;
}

/** Compact text for a value a hook received or returned. */
export function summarize(value: unknown): string {
  if (value === undefined) return '-';
  if (value === null) return 'null';
  if (typeof value === 'string') return value.length > 60 ? `${value.slice(0, 57)}...` : value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return `[${value.map(summarize).join(', ')}]`;
  if (typeof value !== 'object') return typeof value;
  const v = value as Record<string, unknown>;
  if (typeof v.kind === 'string') {
    const rest = Object.entries(v)
      .filter(([k]) => k !== 'kind')
      .map(([, x]) => summarize(x))
      .join(' ');
    return rest === '' ? v.kind : `${v.kind} ${rest}`;
  }
  if (typeof v.host === 'string' && typeof v.port === 'number') {
    return v.host.includes(':') ? `[${v.host}]:${v.port}` : `${v.host}:${v.port}`;
  }
  if (typeof v.method === 'string' && 'headers' in v) {
    const url = typeof v.url === 'string' ? v.url : typeof v.authority === 'string' ? v.authority : '';
    return `${v.method} ${url}`.trim();
  }
  if (typeof v.status === 'number') return `${v.status}`;
  if (typeof v.closeReason === 'string') return `closed ${v.closeReason}`;
  if (typeof v.id === 'string') return `#${v.id}`;
  if (typeof v.pipe === 'function' || typeof v.write === 'function') return 'stream';
  return '{…}';
}

/** The ingress connection id of a hook's context argument, whatever its kind. */
function connectionOf(args: readonly unknown[]): string {
  for (let i = args.length - 1; i >= 0; i--) {
    const a = args[i] as { id?: unknown; ingress?: { id?: unknown }; endpoint?: unknown } | null;
    if (typeof a !== 'object' || a === null) continue;
    if (typeof a.ingress === 'object' && a.ingress !== null && typeof a.ingress.id === 'string')
      return a.ingress.id;
    if (typeof a.id === 'string' && 'endpoint' in a) return a.id;
  }
  return 'process';
}

function isContext(a: unknown): boolean {
  return typeof a === 'object' && a !== null && 'ext' in a && typeof (a as { id?: unknown }).id === 'string';
}

/** Records hook calls; see the module comment. */
export class HookRecorder {
  readonly calls: RecordedCall[] = [];
  #seq = 0;

  /**
   * Wraps `hooks` so every call is recorded, then passes through to the app's method. The
   * result is a plain object per group holding only the methods the app implements.
   */
  wrap<X extends ExtTypes>(hooks: Hooks<X>): Hooks<X> {
    const out: Record<string, unknown> = {};
    for (const [group, obj] of Object.entries(hooks)) {
      if (obj === undefined || obj === null || typeof obj !== 'object') {
        out[group] = obj;
        continue;
      }
      const label = GROUP_LABELS[group as keyof typeof GROUP_LABELS] ?? group;
      const wrapped: Record<string, unknown> = {};
      for (let o: object | null = obj; o !== null && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
        for (const name of Object.getOwnPropertyNames(o)) {
          const fn = (obj as Record<string, unknown>)[name];
          if (name === 'constructor' || typeof fn !== 'function' || name in wrapped) continue;
          wrapped[name] = this.#wrapMethod(`${label}.${name}`, fn.bind(obj) as (...a: unknown[]) => unknown);
        }
      }
      out[group] = wrapped;
    }
    return out as Hooks<X>;
  }

  #wrapMethod(hook: string, fn: (...a: unknown[]) => unknown): (...a: unknown[]) => unknown {
    return (...args: unknown[]) => {
      const call: RecordedCall = {
        hook,
        conn: connectionOf(args),
        args: args
          .filter((a) => !isContext(a))
          .map(summarize)
          .join(', '),
        result: '…',
        seq: this.#seq++,
      };
      this.calls.push(call);
      let result: unknown;
      try {
        result = fn(...args);
      } catch (err) {
        call.result = `threw ${(err as Error)?.message ?? String(err)}`;
        throw err;
      }
      if (result instanceof Promise) {
        return result.then(
          (v) => {
            call.result = summarize(v);
            return v;
          },
          (err: unknown) => {
            call.result = `threw ${(err as Error)?.message ?? String(err)}`;
            throw err;
          },
        );
      }
      call.result = summarize(result);
      return result;
    };
  }

  /** The ids of every connection seen, in order of first appearance (`process` excluded). */
  connections(): string[] {
    return [...new Set(this.calls.map((c) => c.conn).filter((c) => c !== 'process'))];
  }

  /** The calls of one connection, in order. */
  callsOf(conn: string): RecordedCall[] {
    return this.calls.filter((c) => c.conn === conn);
  }

  /** The hook names called for one connection, in order. */
  hooksOf(conn: string): string[] {
    return this.callsOf(conn).map((c) => c.hook);
  }

  /** A readable transcript of one connection (or every call), one line per call. */
  transcript(conn?: string): string {
    const calls = conn === undefined ? this.calls : this.callsOf(conn);
    return calls.map((c) => `${c.hook}(${c.args}) -> ${c.result}`).join('\n');
  }

  /**
   * Asserts that exactly `expected` hooks fired for `conn`, in this order. On a mismatch the
   * message shows both lists side by side, marking the first difference, and the transcript.
   */
  expectHooks(conn: string, expected: readonly string[]): void {
    const actual = this.hooksOf(conn);
    if (actual.length === expected.length && actual.every((h, i) => h === expected[i])) return;
    throw new assert.AssertionError({
      message: `hooks fired for connection ${conn} differ from the expected order:\n${diffLists(expected, actual)}\n\ntranscript:\n${this.transcript(conn) || '(no hook calls)'}`,
      actual,
      expected: [...expected],
      operator: 'expectHooks',
    });
  }

  /** Waits until `conn` has a call to `hook` (hooks like `handleConnectionClose` fire after the client sees the end). */
  async waitFor(conn: string, hook: string, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.callsOf(conn).some((c) => c.hook === hook)) {
      if (Date.now() > deadline) {
        throw new Error(
          `timed out waiting for ${hook} on connection ${conn}; seen:\n${this.transcript(conn)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Forgets every call. */
  clear(): void {
    this.calls.length = 0;
  }
}

/** Two lists side by side, `expected | actual`, with `>` on the first line that differs. */
export function diffLists(expected: readonly string[], actual: readonly string[]): string {
  const width = Math.max(8, ...expected.map((e) => e.length));
  const lines = [`   ${'expected'.padEnd(width)} | actual`];
  let marked = false;
  for (let i = 0; i < Math.max(expected.length, actual.length); i++) {
    const e = expected[i] ?? '(none)';
    const a = actual[i] ?? '(none)';
    const mark = e !== a && !marked ? '>' : ' ';
    if (mark === '>') marked = true;
    lines.push(`${mark}${String(i + 1).padStart(2)} ${e.padEnd(width)} | ${a}${e === a ? '' : '   <-'}`);
  }
  return lines.join('\n');
}
