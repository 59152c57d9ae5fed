/**
 * The child of the upgrade namespace, run by `namespace.ts` as
 * `unshare --user --net --map-root-user node namespace-child.ts` (so it is root in its own user
 * and network namespace, and nowhere else). It creates the TUN device, configures addresses and
 * routes with `ip`, listens on the namespace's listener, then hands both to the parent: the TUN
 * descriptor over fd 3 (SCM_RIGHTS; never Node IPC, which aborts on non-sockets), the listener
 * over Node IPC (closing its own copy in the send callback, or both would share one accept
 * queue). It stays alive until fd 3 closes, opening the downgrade connections asked for over
 * IPC (`{ type: 'connect', id, host, port, localAddress?, localPort? }`): each socket is handed
 * over in its 'connect' event, paused, so not a byte of it is read here.
 *
 * Every step reports a failure as one IPC message `{ type: 'error', step, message, code }`.
 */
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { passFd, tun } from 'native';

/** The configuration the parent passes in `OXY_NS_CONFIG` (JSON). */
export interface NamespaceChildConfig {
  readonly device: string;
  readonly mtu: number;
  /** Addresses on the device, CIDR (`10.0.0.1/24`, `fd00::1/64`). */
  readonly addresses: readonly string[];
  /** Routes into the device (the NAT pools). */
  readonly routes: readonly string[];
  /** The listener: host (`::` for both families) and port. */
  readonly listenHost: string;
  readonly listenPort: number;
}

const send = (m: object, handle?: net.Server, cb?: () => void) =>
  process.send!(m, handle as never, undefined as never, cb as never);

function fail(step: string, e: unknown): never {
  const err = e as { message?: string; code?: string; stderr?: Buffer };
  const stderr = err.stderr ? err.stderr.toString().trim() : '';
  send(
    { type: 'error', step, message: stderr || err.message || String(e), code: err.code ?? '' },
    undefined,
    () => process.exit(1),
  );
  // Exit even if the parent is gone and the callback never runs.
  setTimeout(() => process.exit(1), 2000).unref();
  throw e;
}

const cfg = JSON.parse(process.env.OXY_NS_CONFIG ?? '{}') as NamespaceChildConfig;
let dev: tun.TunDevice;
try {
  dev = tun.open(cfg.device, { maxPacketSize: cfg.mtu });
} catch (e) {
  fail('tun', e);
}
const ip = (args: string[], step: string) => {
  try {
    execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    fail(step, e);
  }
};
ip(['link', 'set', 'lo', 'up'], 'ip link set lo up');
ip(['link', 'set', dev.name, 'mtu', String(cfg.mtu)], 'ip link set mtu');
for (const a of cfg.addresses) {
  const v6 = a.includes(':');
  ip(
    [...(v6 ? ['-6'] : []), 'addr', 'add', a, 'dev', dev.name, ...(v6 ? ['nodad'] : [])],
    `ip addr add ${a}`,
  );
}
ip(['link', 'set', dev.name, 'up'], 'ip link set up');
for (const r of cfg.routes)
  ip([...(r.includes(':') ? ['-6'] : []), 'route', 'add', r, 'dev', dev.name], `ip route add ${r}`);
dev.setReading(false); // the parent reads; this copy only keeps the device until it is sent

const server = net.createServer();
server.on('error', (e) => fail('listen', e));
server.listen({ host: cfg.listenHost, port: cfg.listenPort, ipv6Only: false }, () => {
  const channel = new passFd.FdChannel(3);
  try {
    channel.send([dev.fd], Buffer.from(dev.name));
  } catch (e) {
    fail('pass the TUN descriptor', e);
  }
  dev.close(); // the parent holds the device now
  const port = (server.address() as net.AddressInfo).port;
  send({ type: 'ready', device: dev.name, port }, server, () => server.close());
  channel.on('end', () => process.exit(0));
  process.on('message', onRequest);
  channel.on('error', () => process.exit(0));
});

/** A downgrade connection request from the parent. */
interface ConnectRequest {
  readonly type: 'connect' | 'cancel';
  readonly id: number;
  readonly host: string;
  readonly port: number;
  readonly localAddress?: string;
  readonly localPort?: number;
}

const connecting = new Map<number, net.Socket>();

function onRequest(m: ConnectRequest): void {
  if (m.type === 'cancel') {
    connecting.get(m.id)?.destroy();
    connecting.delete(m.id);
    return;
  }
  if (m.type !== 'connect') return;
  const s = net.connect({
    host: m.host,
    port: m.port,
    ...(m.localAddress ? { localAddress: m.localAddress } : {}),
    ...(m.localPort ? { localPort: m.localPort } : {}),
  });
  // Paused, and handed over in its 'connect' event (before Node's first read): the peer's first
  // bytes (an SSH banner) stay in the kernel for the parent.
  s.pause();
  connecting.set(m.id, s);
  s.once('connect', () => {
    connecting.delete(m.id);
    process.send!({ type: 'connected', id: m.id }, s as never, { keepOpen: false } as never);
  });
  s.once('error', (e: NodeJS.ErrnoException) => {
    connecting.delete(m.id);
    send({ type: 'connect-error', id: m.id, message: e.message, code: e.code ?? '' });
  });
}
