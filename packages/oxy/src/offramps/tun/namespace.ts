/**
 * The upgrade namespace (the seed's "From an IP flow to a TCP stream"): a child in a new,
 * unprivileged user + network namespace creates a TUN device, gives it addresses and routes to
 * the NAT pools, listens on the namespace's listener, and passes the TUN descriptor (SCM_RIGHTS)
 * and the listener (Node IPC) back. This process then writes NAT-ed client packets into the
 * device and accepts the kernel's TCP connections from the listener, without privileges and
 * without touching the host's network.
 *
 * Ordering rules:
 * 1. `startUpgradeNamespace` resolves only when both the device and the listener arrived; it
 *    rejects with `OXY_ERR_NAMESPACE_FAILED` naming the refused step and how to allow it.
 * 2. The child lives as long as the namespace is in use (it will also open the downgrade
 *    connections); `close()` closes the device and the listener, then ends the child.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync } from 'node:fs';
import type net from 'node:net';
import { fileURLToPath } from 'node:url';
import { passFd, type TunDevice, tun } from 'native';
import { OXY_ERR, OxyError } from '../../errors.ts';
import type { NamespaceChildConfig } from './namespace-child.ts';

const CHILD = fileURLToPath(new URL('./namespace-child.ts', import.meta.url));
const UNSHARE = ['--user', '--net', '--map-root-user'];

/** Settings of the upgrade namespace. */
export interface UpgradeNamespaceOptions {
  /** TUN device name inside the namespace. Default 'oxy0'. */
  readonly device?: string;
  /** Device MTU. Default 1500. */
  readonly mtu?: number;
  /** Addresses of the device (CIDR); the first of each family is the listener's. */
  readonly addresses?: readonly string[];
  /** Routes into the device: the NAT pools. */
  readonly routes?: readonly string[];
  /** Listener port; 0 picks one. Default 8080. */
  readonly listenPort?: number;
  /** Give up waiting for the helper after this long (ms). Default 30 000. */
  readonly timeoutMs?: number;
  /**
   * Whether the network namespace is owned by a new, unprivileged user namespace. Default true;
   * false (a plain `unshare --net`) needs root (CAP_SYS_ADMIN), for kernels that refuse
   * unprivileged user namespaces.
   */
  readonly userNamespace?: boolean;
  /**
   * Read the device into one reused buffer (`TunOptions.reuseBuffers`): packets are valid only
   * until the 'packets' listeners and their microtasks have run. Default false.
   */
  readonly reuseReadBuffers?: boolean;
}

/** A running upgrade namespace. */
export interface UpgradeNamespace {
  /** The TUN device, read and written from this process. */
  readonly tun: TunDevice;
  /** The listener inside the namespace; its connections are the upgraded flows. */
  readonly server: net.Server;
  /** The listener's port. */
  readonly port: number;
  /** The namespace's child process. */
  readonly child: ChildProcess;
  /**
   * Downgrade: a TCP connection opened from inside the namespace (its SYN comes out of the TUN
   * device), handed over once connected; no byte of it is read before. Rejects with
   * `OXY_ERR_CONNECT_FAILED` (the kernel's message) or `OXY_ERR_CONNECT_TIMEOUT`.
   */
  connect(target: NamespaceConnectOptions): Promise<net.Socket>;
  /** Closes the device and the listener and ends the child. */
  close(): Promise<void>;
}

/** Where a downgrade connection goes, from where. */
export interface NamespaceConnectOptions {
  readonly host: string;
  readonly port: number;
  readonly localAddress?: string;
  readonly localPort?: number;
  /** Give up after this long (ms). Default 10 000. */
  readonly timeoutMs?: number;
}

/** Hints per refused step, for the error message. */
function hint(step: string, message: string): string {
  if (step === 'unshare')
    return (
      'allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0, ' +
      'kernel.apparmor_restrict_unprivileged_userns=0), or run in a container that permits unshare(CLONE_NEWUSER)'
    );
  if (step.startsWith('ip ') && /ENOENT|not found/i.test(message))
    return 'install iproute2 (the `ip` command)';
  if (step === 'tun') return 'the kernel refused the TUN device (its message says how to allow it)';
  return 'see docs/l3.md for the namespace requirements';
}

function failed(step: string, message: string): OxyError {
  return new OxyError(
    OXY_ERR.NAMESPACE_FAILED,
    `upgrade namespace: ${step} was refused: ${message}; ${hint(step, message)}`,
  );
}

/** Starts the upgrade namespace. */
export async function startUpgradeNamespace(opts: UpgradeNamespaceOptions = {}): Promise<UpgradeNamespace> {
  const addresses = opts.addresses ?? ['10.0.0.1/24', 'fd00::1/64'];
  const startTimeout = opts.timeoutMs ?? 30_000;
  const cfg: NamespaceChildConfig = {
    device: opts.device ?? 'oxy0',
    mtu: opts.mtu ?? 1500,
    addresses,
    routes: opts.routes ?? [],
    listenHost: addresses.some((a) => a.includes(':')) ? '::' : addresses[0]!.split('/')[0]!,
    listenPort: opts.listenPort ?? 8080,
  };
  const [mine, theirs] = passFd.socketPair('stream');
  let child: ChildProcess;
  try {
    const unshare = opts.userNamespace === false ? ['--net'] : UNSHARE;
    child = spawn('unshare', [...unshare, process.execPath, CHILD], {
      stdio: ['ignore', 'ignore', 'pipe', theirs, 'ipc'],
      env: { ...process.env, OXY_NS_CONFIG: JSON.stringify(cfg) },
    });
  } finally {
    closeSync(theirs);
  }
  const channel = new passFd.FdChannel(mine);
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    if (stderr.length < 4096) stderr += d;
  });
  // What the child hands over (a holder, since the callbacks fill it in).
  const got: { device: TunDevice | null; server: net.Server | null; port: number } = {
    device: null,
    server: null,
    port: 0,
  };
  try {
    await new Promise<void>((resolve, reject) => {
      // A helper that does not answer was not refused anything: a distinct error, so callers
      // (and tests) never mistake a slow machine for a kernel that lacks namespaces.
      const timer = setTimeout(
        () =>
          reject(
            new OxyError(
              OXY_ERR.NAMESPACE_TIMEOUT,
              `upgrade namespace: the helper did not answer within ${startTimeout} ms (a busy machine, or a hung helper; timeoutMs raises the bound)`,
            ),
          ),
        startTimeout,
      );
      const done = (e?: Error) => {
        clearTimeout(timer);
        if (e) reject(e);
        else if (got.device && got.server) resolve();
      };
      channel.on('message', (m) => {
        if (m.fds.length !== 1) return done(failed('pass the TUN descriptor', 'no descriptor received'));
        got.device = tun.fromFd(m.fds[0]!, m.data.toString(), {
          maxPacketSize: cfg.mtu,
          reuseBuffers: opts.reuseReadBuffers ?? false,
        });
        done();
      });
      child.on('message', (m: { type: string; step?: string; message?: string; port?: number }, handle) => {
        if (m.type === 'error') return done(failed(m.step ?? 'start', m.message ?? 'unknown error'));
        if (m.type === 'ready') {
          got.server = handle as net.Server;
          got.port = m.port ?? 0;
          done();
        }
      });
      child.on('error', (e) => done(failed('unshare', e.message)));
      child.on('close', (code) => {
        if (!got.device || !got.server)
          done(failed('unshare', stderr.trim() || `the child exited with code ${code}`));
      });
    });
  } catch (e) {
    got.device?.close();
    got.server?.close();
    channel.close();
    child.kill('SIGKILL');
    throw e;
  }
  const { device: dev, server: srv, port } = got;
  if (dev === null || srv === null)
    throw failed('start', 'the namespace child answered without a device or listener');
  child.channel?.unref();
  const waiting = new Map<number, { resolve: (s: net.Socket) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  child.on('message', (m: { type: string; id?: number; message?: string; code?: string }, handle) => {
    const w = m.id === undefined ? undefined : waiting.get(m.id);
    if (w === undefined) {
      if (m.type === 'connected') (handle as net.Socket | undefined)?.destroy(); // given up on
      return;
    }
    waiting.delete(m.id!);
    if (m.type === 'connected') w.resolve(handle as net.Socket);
    else if (m.type === 'connect-error')
      w.reject(new OxyError(OXY_ERR.CONNECT_FAILED, `downgrade connect failed: ${m.message} (${m.code})`));
  });
  child.once('exit', () => {
    for (const w of waiting.values()) w.reject(failed('connect', 'the namespace child exited'));
    waiting.clear();
  });
  return {
    tun: dev,
    server: srv,
    port,
    child,
    connect: (t) =>
      new Promise<net.Socket>((resolve, reject) => {
        const id = nextId++;
        const ms = t.timeoutMs ?? 10_000;
        const timer = setTimeout(() => {
          waiting.delete(id);
          child.send({ type: 'cancel', id });
          reject(
            new OxyError(
              OXY_ERR.CONNECT_TIMEOUT,
              `downgrade connect to ${t.host}:${t.port}: no answer in ${ms} ms`,
            ),
          );
        }, ms);
        const settle =
          <T>(f: (v: T) => void) =>
          (v: T) => {
            clearTimeout(timer);
            f(v);
          };
        waiting.set(id, { resolve: settle(resolve), reject: settle(reject) });
        const { timeoutMs: _, ...target } = t;
        child.send({ type: 'connect', id, ...target });
      }),
    close: async () => {
      dev.close();
      srv.close();
      channel.close(); // the child sees the end and exits, taking the namespace with it
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}
