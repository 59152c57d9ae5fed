/**
 * Starting an app under test: in-process (`startApp`) for most tests, or as a child process
 * (`startAppProcess`) for what needs a real process (restarts, signals, crashes). Both run the
 * same code production runs, on ephemeral loopback ports, and both end with a `stop()` that
 * waits for a clean shutdown and fails the test if something leaked.
 *
 * Test defaults laid over the app's defaults (each can be overridden): every endpoint on
 * 127.0.0.1:0, `egress.blocked_cidrs: []` (test upstreams live on loopback, which production
 * blocks), the audit log written to a temporary file the test can read back.
 */
import { createHook } from 'node:async_hooks';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { defineApp, type OxyApp } from '../app.ts';
import type { AuditRecord } from '../audit.ts';
import type { Hooks } from '../hooks/run.ts';
import { type RunningProxy, startOxy } from '../proxy.ts';
import { HookRecorder } from './recorder.ts';

/** Plain settings objects merged over the defaults, as a `-c` file would be. */
export type SettingsOverrides = Record<string, unknown>;

/** Options of {@link startApp}. */
export interface StartAppOptions {
  /** Settings laid over the test defaults (deep-merged; lists replace). */
  readonly settings?: SettingsOverrides;
  /** What the previous process's `stateForRestart()` returned. */
  readonly restoredState?: unknown;
  /**
   * Fail `stop()` when sockets, servers or child processes opened while the app ran are still
   * open after it stopped. Default true.
   */
  readonly leakCheck?: boolean;
  /**
   * How long `stop()` waits for handles to close before calling them leaked. Default 5000 ms:
   * a loaded machine can take a while to deliver the last FIN of a pooled connection.
   */
  readonly leakGraceMs?: number;
}

/** An app running in this process. */
export interface AppUnderTest {
  readonly proxy: RunningProxy;
  /** Every hook call, per connection; see {@link HookRecorder}. */
  readonly recorder: HookRecorder;
  /** `host:port` of the `main` endpoint (or another, by name). */
  address(endpoint?: string): string;
  /** The audit records written so far; after `stop()`, every record the app wrote. */
  auditRecords(): AuditRecord[];
  /** Waits until `n` audit records were written (they are written when a tunnel or request ends). */
  waitForAudit(n: number, timeoutMs?: number): Promise<AuditRecord[]>;
  /** Drains and closes the app, then runs the leak check. */
  stop(): Promise<void>;
}

/** Handle types that must all be closed once an app has stopped. */
const LEAK_TYPES = new Set([
  'TCPWRAP',
  'TCPSERVERWRAP',
  'PIPEWRAP',
  'PIPESERVERWRAP',
  'PROCESSWRAP',
  'UDPWRAP',
]);

/** What it names: `TCPSERVERWRAP` → `TCPServerWrap`-style readable names for the message. */
const LEAK_NAMES: Readonly<Record<string, string>> = {
  TCPWRAP: 'TCP socket',
  TCPSERVERWRAP: 'TCP server',
  PIPEWRAP: 'pipe or Unix socket',
  PIPESERVERWRAP: 'Unix socket server',
  PROCESSWRAP: 'child process',
  UDPWRAP: 'UDP socket',
};

/**
 * Tracks the handles created while an app under test runs, by async id, until they are
 * destroyed. Counting process-wide resources instead would blame this test for handles that
 * an earlier test closes late.
 */
function trackHandles(): { open(): string[]; stop(): void } {
  const live = new Map<number, string>();
  // process.stdout and stderr open their pipe handles lazily, on first use: open them now so a
  // first log line while the app runs is not taken for a leak.
  void process.stdout.fd;
  void process.stderr.fd;
  const hook = createHook({
    init(id, type) {
      if (LEAK_TYPES.has(type)) live.set(id, type);
    },
    destroy(id) {
      live.delete(id);
    },
  }).enable();
  return {
    open() {
      const counts = new Map<string, number>();
      for (const type of live.values()) counts.set(type, (counts.get(type) ?? 0) + 1);
      return [...counts].map(([type, n]) => `${n} × ${LEAK_NAMES[type] ?? type}`);
    },
    stop: () => hook.disable(),
  };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep-merges `over` onto `base`: objects merge, everything else replaces. */
export function mergeSettings(base: SettingsOverrides, over: SettingsOverrides): SettingsOverrides {
  const out: SettingsOverrides = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isPlainObject(b) && isPlainObject(v) ? mergeSettings(b, v) : v;
  }
  return out;
}

function testDefaults(auditPath: string, overrides: SettingsOverrides): SettingsOverrides {
  // Every endpoint the overrides name gets port 0 unless they give an address.
  const endpoints: Record<string, unknown> = { main: { addr: '127.0.0.1:0' } };
  const named = overrides.endpoints;
  if (isPlainObject(named)) for (const name of Object.keys(named)) endpoints[name] = { addr: '127.0.0.1:0' };
  return {
    endpoints,
    egress: { blocked_cidrs: [] },
    audit: { output: 'file', path: auditPath },
  };
}

function readAudit(file: string): AuditRecord[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    // Boundary: no record written yet means no file yet.
    return [];
  }
  // A record is a whole line: the writer appends in the background, so a read may catch the
  // last one half written. Only lines ended by their newline are records yet.
  const lines = text.split('\n');
  lines.pop(); // after the last newline: '' or a record still being written
  return lines.filter((l) => l !== '').map((l) => JSON.parse(l) as AuditRecord);
}

async function waitForRecords(
  read: () => AuditRecord[],
  n: number,
  timeoutMs: number,
): Promise<AuditRecord[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const records = read();
    if (records.length >= n) return records;
    if (Date.now() > deadline) throw new Error(`expected ${n} audit records, got ${records.length}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * An app whose `start()` returns `hooks`: for tests of one behaviour that need no settings or
 * ext of their own (`startApp(hooksApp({ egress: { ... } }))`).
 */
export function hooksApp(hooks: Hooks = {}, name = 'test'): OxyApp {
  return defineApp({ name, version: '0.0.0', description: `${name} (hooks under test)`, start: () => hooks });
}

/**
 * Starts `app` in this process with test defaults and `options.settings` over them, recording
 * every hook call. Call `stop()` in `after()`.
 */
export async function startApp(
  app: OxyApp<never, never> | OxyApp,
  options: StartAppOptions = {},
): Promise<AppUnderTest> {
  const handles = options.leakCheck === false ? null : trackHandles();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oxy-test-'));
  const auditPath = path.join(dir, 'audit.log');
  const overrides = options.settings ?? {};
  const settings = mergeSettings(testDefaults(auditPath, overrides), overrides);
  const recorder = new HookRecorder();
  const def = (app as OxyApp).definition;
  const recorded = {
    definition: {
      ...def,
      start: async (s: never, restored: unknown) => recorder.wrap(await def.start(s, restored)),
    },
  } as OxyApp;
  let proxy: RunningProxy;
  try {
    proxy = await startOxy(recorded, settings, { restoredState: options.restoredState ?? null });
  } catch (e) {
    handles?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  let stopped: Promise<void> | null = null;
  // The audit records as they stood when stop() removed the temporary directory.
  let final: AuditRecord[] | null = null;
  return {
    proxy,
    recorder,
    address(endpoint = 'main') {
      const a = proxy.address(endpoint);
      return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
    },
    auditRecords: () => final ?? readAudit(auditPath),
    waitForAudit: (n, timeoutMs = 5000) => waitForRecords(() => final ?? readAudit(auditPath), n, timeoutMs),
    stop() {
      stopped ??= (async () => {
        await proxy.close();
        // Removed last: connections torn down by close() append their audit records late.
        const removeDir = (): void => {
          final = readAudit(auditPath);
          fs.rmSync(dir, { recursive: true, force: true });
        };
        if (handles === null) return removeDir();
        // A closed handle is destroyed on a later tick: give the last ones a moment.
        const deadline = Date.now() + (options.leakGraceMs ?? 5000);
        let leaks = handles.open();
        while (leaks.length > 0 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 20));
          leaks = handles.open();
        }
        handles.stop();
        removeDir();
        if (leaks.length > 0 || proxy.runtime.connections.size > 0) {
          const conns = proxy.runtime.connections.size;
          throw new Error(
            `the app leaked after stop(): ${[...leaks, ...(conns > 0 ? [`${conns} × ingress connection`] : [])].join(', ')} ` +
              '(close the clients, agents and peers the test opened before stopping the app, or pass leakCheck: false)',
          );
        }
      })();
      return stopped;
    },
  };
}

/** An app running as a child process. */
export interface AppProcess {
  readonly child: ChildProcess;
  /** `host:port` of each endpoint, by name, as the app logged them. */
  readonly endpoints: ReadonlyMap<string, string>;
  /** `host:port` of the `main` endpoint (or another). */
  address(endpoint?: string): string;
  /** The settings file the process was started with (rewrite it before a restart). */
  readonly configFile: string;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Sends SIGTERM, waits for exit (SIGKILL after `timeoutMs`), and returns the exit code. */
  stop(timeoutMs?: number): Promise<number | null>;
}

/** Options of {@link startAppProcess}. */
export interface StartAppProcessOptions {
  readonly settings?: SettingsOverrides;
  /** Extra command-line arguments after `-c <file>`. */
  readonly args?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  /**
   * Time allowed until every endpoint has logged that it listens. Default 60 s: a start on a
   * loaded two-core CI machine has taken over 15 s; a working start returns as soon as it listens.
   */
  readonly timeoutMs?: number;
}

/** The endpoint and address of an "endpoint listening" JSON log line, or undefined. */
function listeningLine(line: string): [string, string] | undefined {
  if (!line.includes('endpoint listening')) return undefined;
  try {
    const rec = JSON.parse(line) as { msg?: unknown; endpoint?: unknown; addr?: unknown };
    if (
      rec.msg === 'endpoint listening' &&
      typeof rec.endpoint === 'string' &&
      typeof rec.addr === 'string'
    ) {
      return [rec.endpoint, rec.addr];
    }
  } catch {
    // Boundary: not every output line is JSON (a crash prints plain text).
  }
  return undefined;
}

/**
 * Runs `entry` (a script that calls `bootstrap(app)`, e.g. Oxy's own `src/main.ts`) with the
 * pinned Node, a settings file made of the test defaults and `options.settings`, and JSON logs
 * on stdout; resolves once each endpoint has logged where it listens.
 */
export async function startAppProcess(
  entry: string,
  options: StartAppProcessOptions = {},
): Promise<AppProcess> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oxy-proc-'));
  const overrides = options.settings ?? {};
  const settings = mergeSettings(
    mergeSettings(testDefaults(path.join(dir, 'audit.log'), overrides), {
      telemetry: { logging: { output: 'terminal', format: 'json' }, server: { addr: '127.0.0.1:0' } },
      restart: { socket: path.join(dir, 'restart.sock') },
    }),
    overrides,
  );
  const configFile = path.join(dir, 'config.yaml');
  fs.writeFileSync(configFile, stringify(settings));
  const child = spawn(process.execPath, [entry, '-c', configFile, ...(options.args ?? [])], {
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const endpoints = new Map<string, string>();
  const expected = Object.keys(isPlainObject(settings.endpoints) ? settings.endpoints : { main: 1 }).length;
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the app did not listen within ${options.timeoutMs ?? 60_000} ms:\n${out}`)),
      options.timeoutMs ?? 60_000,
    );
    const onData = (chunk: Buffer): void => {
      out += chunk.toString('utf8');
      for (const line of out.split('\n')) {
        const m = listeningLine(line);
        if (m !== undefined) endpoints.set(m[0], m[1]);
      }
      if (endpoints.size >= expected) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (c: Buffer) => {
      out += c.toString('utf8');
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the app exited with code ${code} before listening:\n${out}`));
    });
  });
  try {
    await ready;
  } catch (e) {
    child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    child,
    endpoints,
    configFile,
    address(endpoint = 'main') {
      const a = endpoints.get(endpoint);
      if (a === undefined)
        throw new Error(`no endpoint ${endpoint} logged; have ${[...endpoints.keys()].join(', ')}`);
      return a;
    },
    output: () => out,
    async stop(timeoutMs = 10_000) {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
        await exited;
        clearTimeout(timer);
      }
      fs.rmSync(dir, { recursive: true, force: true });
      return child.exitCode;
    },
  };
}
