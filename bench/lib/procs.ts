/**
 * Process management for the benchmark: every server and load generator the harness starts goes
 * through here, so that each one is tracked by PID, stopped by PID, and never outlives the
 * harness, also when it is interrupted (Ctrl-C, SIGTERM) or crashes.
 *
 * Ordering rule: `installCleanup()` runs once at start-up, before the first `startProcess()`.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createWriteStream, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** A process the harness started, with the file its output goes to. */
export interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly logFile: string;
  /** Resolves with the exit code (or signal name) once the process has gone. */
  readonly exited: Promise<number | string>;
}

const live = new Set<Proc>();

/**
 * Whether each process starts in a session of its own (`BENCH_SESSIONS=own`, the default) or in
 * the harness's (`shared`). Where the kernel groups the scheduling of a session's threads
 * (autogroup, on by default in Debian's kernel), a session is what a service's cgroup is under
 * systemd: CPU is shared between the proxy, the upstream and the load generator as services, as
 * on a server, and not by thread count, which favours the proxy with the most threads.
 */
export function ownSessions(): boolean {
  return process.env.BENCH_SESSIONS !== 'shared';
}

/** Options for {@link startProcess}. */
export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Where stdout and stderr go (appended). */
  logFile: string;
}

/** The last JSON line a load generator or probe printed (`T`: its shape, flat figures by default). */
export function lastJson<T = Record<string, number | string | boolean>>(text: string): T {
  const line = text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .pop();
  if (!line) throw new Error(`no JSON result in output: ${text.slice(-300)}`);
  return JSON.parse(line) as T;
}

/** Starts a long-running process (a proxy, the upstream) with its output sent to a log file. */
export function startProcess(name: string, cmd: string, args: string[], opts: StartOptions): Proc {
  const log = createWriteStream(opts.logFile, { flags: 'a' });
  const child = spawn(cmd, args, {
    env: { ...process.env, ...opts.env },
    cwd: opts.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: ownSessions(),
  });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  if (child.pid === undefined) throw new Error(`${name}: could not start ${cmd}`);
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
    child.once('error', (err) => resolve(String(err)));
  });
  const proc: Proc = { name, child, pid: child.pid, logFile: opts.logFile, exited };
  live.add(proc);
  void exited.then(() => live.delete(proc));
  return proc;
}

/** Stops a process by its PID: SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
export async function stopProcess(proc: Proc, graceMs = 5000): Promise<void> {
  if (!live.has(proc)) return;
  try {
    process.kill(proc.pid, 'SIGTERM');
  } catch {
    // already gone: nothing to stop
  }
  const timedOut = await Promise.race([proc.exited.then(() => false), sleep(graceMs).then(() => true)]);
  if (timedOut) {
    try {
      process.kill(proc.pid, 'SIGKILL');
    } catch {
      // exited between the check and the kill
    }
    await proc.exited;
  }
}

/** Waits until something accepts TCP connections on host:port, or throws after `timeoutMs`. */
export async function waitForPort(host: string, port: number, timeoutMs: number, proc?: Proc): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let gone = false;
  void proc?.exited.then(() => {
    gone = true;
  });
  while (Date.now() < deadline) {
    if (gone)
      throw new Error(`${proc?.name} exited before listening on ${host}:${port} (see ${proc?.logFile})`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host, port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
}

/**
 * Waits until a UDP socket is bound to 127.0.0.1:port (found in /proc/net/udp: there is nothing
 * to connect to), or throws after `timeoutMs` or when `proc` exits first.
 */
export async function waitForUdpPort(port: number, timeoutMs: number, proc?: Proc): Promise<void> {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const deadline = Date.now() + timeoutMs;
  let gone = false;
  void proc?.exited.then(() => {
    gone = true;
  });
  while (Date.now() < deadline) {
    if (gone)
      throw new Error(
        `${proc?.name} exited before listening on udp 127.0.0.1:${port} (see ${proc?.logFile})`,
      );
    const table = readFileSync('/proc/net/udp', 'utf8');
    if (table.split('\n').some((l) => l.trim().split(/\s+/)[1] === local)) return;
    await sleep(100);
  }
  throw new Error(`nothing listens on udp 127.0.0.1:${port} after ${timeoutMs} ms`);
}

/** Result of {@link runCommand}. */
export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a short command to completion (load generators, version probes), tracked like the rest. */
export function runCommand(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {},
): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: ownSessions(),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.stdin.on('error', () => {}); // the command may exit before reading its input
    child.stdin.end(opts.input ?? '');
    const pid = child.pid;
    const proc: Proc | undefined =
      pid === undefined
        ? undefined
        : { name: cmd, child, pid, logFile: '', exited: new Promise((r) => child.once('exit', r)) };
    if (proc) live.add(proc);
    const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : undefined;
    child.once('error', (err) => {
      if (proc) live.delete(proc);
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: stderr + String(err) });
    });
    child.once('close', (code) => {
      if (proc) live.delete(proc);
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Kills every process the harness still tracks, by PID. Synchronous so it can run from `exit`. */
export function killAll(): void {
  for (const p of live) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}

/** Makes sure nothing the harness started survives it, whichever way it ends. */
export function installCleanup(): void {
  process.once('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\nbench: ${sig}, stopping everything it started\n`);
      killAll();
      process.exit(130);
    });
  }
}

/**
 * Binds every thread of `root`'s process tree to `cpus` (a taskset list, "1" or "0-1"); threads
 * and processes started later inherit it from their parent thread. For the `--pin` layout.
 */
export function pinTree(root: number, cpus: string): void {
  for (const pid of processTree(root))
    spawnSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
}

/** The PID and all its descendants (found through /proc), e.g. a proxy's worker processes. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const ppid = parentOf(Number(entry));
    if (ppid === undefined) continue;
    const list = children.get(ppid) ?? [];
    list.push(Number(entry));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const stack = [root];
  while (stack.length > 0) {
    const pid = stack.pop()!;
    out.push(pid);
    stack.push(...(children.get(pid) ?? []));
  }
  return out;
}

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[1]);
  } catch {
    return undefined; // exited while we looked
  }
}

/** Proportional set size of a process tree in bytes (shared pages split fairly among processes). */
export function treePss(root: number): number {
  let total = 0;
  for (const pid of processTree(root)) {
    try {
      const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
      total += m ? Number(m[1]) * 1024 : 0;
    } catch {
      // exited while we looked
    }
  }
  return total;
}

/** CPU time (user + system, own and reaped children) of a process tree, in clock ticks. */
export function treeCpuTicks(root: number): number {
  let total = 0;
  for (const pid of processTree(root)) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // utime, stime, cutime, cstime are fields 14..17 of stat(5); f[0] is field 3.
      total += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    } catch {
      // exited while we looked
    }
  }
  return total;
}
