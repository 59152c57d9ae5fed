/**
 * Listening sockets a process is born with, from two sources:
 *
 * - **systemd socket activation**: `LISTEN_FDS` descriptors starting at fd 3, meant for us
 *   only when `LISTEN_PID` is our pid (or absent), named by `LISTEN_FDNAMES`;
 * - **our own restart handover**: `FOUNDATIONS_HANDOVER`, JSON written by the previous
 *   process: `{ "control": fd, "listeners": [{ "name", "addr", "fd", "configured", "transport",
 *   "systemd", "fdname" }], "datagrams": [{ "name", "host", "port", "fd", "options", "systemd" }] }`.
 *   Older versions sent no `datagrams` and none of `configured`, `transport`, `options`,
 *   `systemd` and `fdname` (each optional: what is unknown is not compared, see matching.ts).
 *
 * Both are read once, at start-up, and removed from `process.env` so that nothing started
 * later (a restart child, a shell-out) believes the descriptors are its own. Bad values are
 * errors naming the variable, never a crash deep inside `listen()`.
 */
import fs from 'node:fs';
import net from 'node:net';
import { FND_ERR, FoundationsError } from '../errors.ts';
import type { ListenAddr } from '../settings/net.ts';
import { type DatagramBindOptions, type SocketTransport, sameHost } from './matching.ts';

/** The environment variable carrying the restart handover from the old process. */
export const HANDOVER_ENV = 'FOUNDATIONS_HANDOVER';

/** systemd passes descriptors starting here (`SD_LISTEN_FDS_START`). */
const SD_LISTEN_FDS_START = 3;

/** One inherited listening socket. `name`/`addr` are null when the source did not say. */
export interface InheritedSocket {
  readonly fd: number;
  /**
   * What endpoints match it by: the endpoint that had it, or for a socket from systemd its
   * `FileDescriptorName=` (also when an earlier process hands it on).
   */
  readonly name: string | null;
  /** The address it is bound to (port 0 replaced by the real port); null from systemd. */
  readonly addr: ListenAddr | null;
  /**
   * Who made it: `systemd` (a socket unit holds it; passed to this process, or to an earlier one
   * that handed it on), or `handover` (an earlier process of this service bound it).
   */
  readonly source: 'systemd' | 'handover';
  /** The address the previous process's settings gave (host names and port 0 as written), when it said. */
  readonly configured?: ListenAddr;
  /** Its transport, when the previous process said (systemd's are read from /proc). */
  readonly transport?: SocketTransport;
}

/** One UDP socket handed over by the previous process (systemd's come as `InheritedSocket`s). */
export interface InheritedDatagram {
  readonly fd: number;
  readonly name: string;
  /** The address and port it is bound to. */
  readonly host: string;
  readonly port: number;
  /** Who made it, as for `InheritedSocket.source`. */
  readonly source: 'systemd' | 'handover';
  /** The options it was bound with; null when unknown (systemd's, an older version's). */
  readonly options: DatagramBindOptions | null;
}

/** What the previous process handed over: the control channel, its listeners and UDP sockets. */
export interface Handover {
  /** Our end of the socketpair to the old process (reports and the app's state). */
  readonly controlFd: number;
  readonly listeners: readonly InheritedSocket[];
  readonly datagrams: readonly InheritedDatagram[];
}

function listenError(message: string): FoundationsError {
  return new FoundationsError(FND_ERR.LISTEN, message, { userError: true });
}

/** What `Listeners.closeUnclaimed` did with the inherited sockets no endpoint took. */
export interface Unclaimed<S> {
  /** Handed over by the previous process: this process's copy is closed. */
  readonly closed: readonly S[];
  /** From systemd: left open (the socket unit holds the socket anyway, see docs/restarts.md). */
  readonly kept: readonly S[];
}

/** Closes this process's copy of an inherited descriptor that nothing here uses. */
function closeInherited(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // boundary: EBADF means the descriptor is already gone, which is all that closing asked
  }
}

/**
 * Closes this process's copy of each of `unused` (inherited sockets no endpoint took), marking
 * it taken in `taken`; one from systemd stays open (its socket unit holds it anyway). Listening
 * and datagram sockets alike.
 */
export function closeUnclaimed<S extends { readonly fd: number; readonly source: 'systemd' | 'handover' }>(
  unused: readonly S[],
  taken: Set<S>,
): Unclaimed<S> {
  const closed: S[] = [];
  const kept: S[] = [];
  for (const s of unused) {
    if (s.source === 'systemd') {
      kept.push(s);
      continue;
    }
    closeInherited(s.fd);
    taken.add(s);
    closed.push(s);
  }
  return { closed, kept };
}

/** Parses systemd's variables. Returns [] when they are absent or meant for another pid. */
export function parseSystemdEnv(env: NodeJS.ProcessEnv, pid: number = process.pid): InheritedSocket[] {
  const count = env.LISTEN_FDS;
  if (count === undefined || count === '') return [];
  if (!/^\d{1,4}$/.test(count))
    throw listenError(`LISTEN_FDS: expected a count of descriptors, got "${count}"`);
  const listenPid = env.LISTEN_PID;
  if (listenPid !== undefined && listenPid !== '') {
    if (!/^\d+$/.test(listenPid)) throw listenError(`LISTEN_PID: expected a process id, got "${listenPid}"`);
    if (Number(listenPid) !== pid) return [];
  }
  const names =
    env.LISTEN_FDNAMES === undefined || env.LISTEN_FDNAMES === '' ? [] : env.LISTEN_FDNAMES.split(':');
  const n = Number(count);
  if (names.length !== 0 && names.length !== n) {
    throw listenError(`LISTEN_FDNAMES: ${names.length} names for LISTEN_FDS=${n} descriptors`);
  }
  const out: InheritedSocket[] = [];
  for (let i = 0; i < n; i++) {
    const name = names[i];
    // systemd says "unknown" when the unit gave no FileDescriptorName=.
    out.push({
      fd: SD_LISTEN_FDS_START + i,
      name: name === undefined || name === '' || name === 'unknown' ? null : name,
      addr: null,
      source: 'systemd',
    });
  }
  return out;
}

function isFd(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 3 && v < 65536;
}

function toListenAddr(v: unknown, where: string, field = 'addr'): ListenAddr {
  const a = v as Record<string, unknown> | null;
  if (a && a.kind === 'tcp' && typeof a.host === 'string' && typeof a.port === 'number') {
    return { kind: 'tcp', host: a.host, port: a.port };
  }
  if (a && a.kind === 'unix' && typeof a.path === 'string') return { kind: 'unix', path: a.path };
  throw listenError(`${HANDOVER_ENV}: ${where}.${field} is not a listen address`);
}

/**
 * A listener's `systemd` field (absent: false); anything else fails through `fail`, by default
 * as a bad handover (the workers' role variable passes its own).
 */
export function systemdFlag(
  v: unknown,
  where: string,
  fail: (message: string) => Error = (m) => listenError(`${HANDOVER_ENV}: ${m}`),
): boolean {
  if (v === undefined || typeof v === 'boolean') return v === true;
  throw fail(`${where}.systemd: expected true or false`);
}

/** `where` already starts with the variable's name. */
function toBindOptions(v: unknown, where: string): DatagramBindOptions {
  const o = v as Record<string, unknown> | null;
  if (typeof o !== 'object' || o === null || Array.isArray(o))
    throw listenError(`${where}.options: expected an object`);
  const out: { reuseAddr?: boolean; reusePort?: boolean; ipv6Only?: boolean } = {};
  for (const key of ['reuseAddr', 'reusePort', 'ipv6Only'] as const) {
    const flag = o[key];
    if (flag === undefined) continue;
    if (typeof flag !== 'boolean') throw listenError(`${where}.options.${key}: expected true or false`);
    out[key] = flag;
  }
  return out;
}

/** Parses our handover variable; null when absent. Throws naming the bad field. */
export function parseHandoverEnv(env: NodeJS.ProcessEnv): Handover | null {
  const text = env[HANDOVER_ENV];
  if (text === undefined || text === '') return null;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw listenError(`${HANDOVER_ENV}: not valid JSON`);
  }
  const v = value as Record<string, unknown> | null;
  if (typeof v !== 'object' || v === null) throw listenError(`${HANDOVER_ENV}: expected an object`);
  if (!isFd(v.control)) throw listenError(`${HANDOVER_ENV}: control: expected a descriptor number`);
  if (!Array.isArray(v.listeners)) throw listenError(`${HANDOVER_ENV}: listeners: expected a list`);
  const listeners = v.listeners.map((l: unknown, i: number): InheritedSocket => {
    const e = l as Record<string, unknown> | null;
    const where = `listeners[${i}]`;
    if (typeof e !== 'object' || e === null)
      throw listenError(`${HANDOVER_ENV}: ${where}: expected an object`);
    if (!isFd(e.fd)) throw listenError(`${HANDOVER_ENV}: ${where}.fd: expected a descriptor number`);
    if (typeof e.name !== 'string') throw listenError(`${HANDOVER_ENV}: ${where}.name: expected a string`);
    if (e.transport !== undefined && e.transport !== 'stream' && e.transport !== 'seqpacket')
      throw listenError(`${HANDOVER_ENV}: ${where}.transport: expected "stream" or "seqpacket"`);
    const fdname = e.fdname;
    if (fdname !== undefined && fdname !== null && typeof fdname !== 'string')
      throw listenError(`${HANDOVER_ENV}: ${where}.fdname: expected a string or null`);
    const systemd = systemdFlag(e.systemd, where);
    return {
      fd: e.fd,
      // A systemd socket is matched by the unit's name for it, as on a fresh start; an older
      // version sent only the endpoint's.
      name: systemd && fdname !== undefined ? fdname : e.name,
      addr: toListenAddr(e.addr, where),
      source: systemd ? 'systemd' : 'handover',
      ...(e.configured === undefined ? {} : { configured: toListenAddr(e.configured, where, 'configured') }),
      ...(e.transport === undefined ? {} : { transport: e.transport }),
    };
  });
  if (v.datagrams !== undefined && !Array.isArray(v.datagrams))
    throw listenError(`${HANDOVER_ENV}: datagrams: expected a list`);
  const datagrams = ((v.datagrams as unknown[] | undefined) ?? []).map(
    (d: unknown, i: number): InheritedDatagram => {
      const e = d as Record<string, unknown> | null;
      const where = `${HANDOVER_ENV}: datagrams[${i}]`;
      if (typeof e !== 'object' || e === null) throw listenError(`${where}: expected an object`);
      if (!isFd(e.fd)) throw listenError(`${where}.fd: expected a descriptor number`);
      if (typeof e.name !== 'string') throw listenError(`${where}.name: expected a string`);
      if (typeof e.host !== 'string' || net.isIP(e.host) === 0)
        throw listenError(`${where}.host: expected an IP address`);
      if (typeof e.port !== 'number' || !Number.isInteger(e.port) || e.port < 1 || e.port > 65535)
        throw listenError(`${where}.port: expected a port`);
      return {
        fd: e.fd,
        name: e.name,
        host: e.host,
        port: e.port,
        source: systemdFlag(e.systemd, `datagrams[${i}]`) ? 'systemd' : 'handover',
        options: e.options === undefined ? null : toBindOptions(e.options, where),
      };
    },
  );
  return { controlFd: v.control, listeners, datagrams };
}

/** Removes both sources' variables, so processes we start do not inherit them by accident. */
export function scrubInheritanceEnv(env: NodeJS.ProcessEnv): void {
  for (const k of ['LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES', 'LISTEN_FDS_START', HANDOVER_ENV])
    delete env[k];
}

/** What /proc tells of a socket descriptor. A UDP socket's address is `kind: 'tcp'` (an IP and port). */
export interface SocketOfFd {
  readonly addr: ListenAddr;
  readonly transport: SocketTransport;
}

/**
 * The local address and transport of a socket descriptor, read from /proc (Node cannot call
 * getsockname or getsockopt on a bare fd). Null when the fd is not a TCP, UDP or Unix socket
 * we can find.
 */
export function socketOfFd(fd: number): SocketOfFd | null {
  let link: string;
  try {
    link = fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return null; // boundary: a closed or foreign fd simply has no address
  }
  const m = /^socket:\[(\d+)\]$/.exec(link);
  if (!m) return null;
  const inode = m[1] as string;
  return (
    findIp(inode, '/proc/net/tcp', 4, 'stream') ??
    findIp(inode, '/proc/net/tcp6', 16, 'stream') ??
    findIp(inode, '/proc/net/udp', 4, 'datagram') ??
    findIp(inode, '/proc/net/udp6', 16, 'datagram') ??
    findUnix(inode)
  );
}

/** The local address of a socket descriptor (`socketOfFd`), or null. */
export function socketAddressOfFd(fd: number): ListenAddr | null {
  return socketOfFd(fd)?.addr ?? null;
}

function readLines(path: string): string[] {
  try {
    return fs.readFileSync(path, 'utf8').split('\n').slice(1);
  } catch {
    return []; // boundary: the table is absent without IPv6 or outside Linux
  }
}

/** Decodes /proc/net/tcp{,6} `HEX:PORT`: the address is 32-bit words in host (little) order. */
export function decodeProcAddr(text: string, bytes: 4 | 16): { host: string; port: number } | null {
  const [hex, portHex] = text.split(':');
  if (hex === undefined || portHex === undefined || hex.length !== bytes * 2) return null;
  const raw = Buffer.from(hex, 'hex');
  for (let i = 0; i < bytes; i += 4) raw.subarray(i, i + 4).reverse();
  let host: string;
  if (bytes === 4) host = Array.from(raw).join('.');
  else {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(raw.readUInt16BE(i).toString(16));
    host = new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
  }
  return { host, port: Number.parseInt(portHex, 16) };
}

/** /proc/net/{tcp,udp}{,6}: the same columns, the inode tenth. */
function findIp(inode: string, table: string, bytes: 4 | 16, transport: SocketTransport): SocketOfFd | null {
  for (const line of readLines(table)) {
    const f = line.trim().split(/\s+/);
    if (f[9] !== inode || f[1] === undefined) continue;
    const a = decodeProcAddr(f[1], bytes);
    return a ? { addr: { kind: 'tcp', host: a.host, port: a.port }, transport } : null;
  }
  return null;
}

/** /proc/net/unix's Type column: SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET. */
const UNIX_TYPES: Readonly<Record<string, SocketTransport>> = {
  '0001': 'stream',
  '0002': 'datagram',
  '0005': 'seqpacket',
};

function findUnix(inode: string): SocketOfFd | null {
  for (const line of readLines('/proc/net/unix')) {
    const f = line.trim().split(/\s+/);
    const transport = UNIX_TYPES[f[4] ?? ''];
    if (f[6] === inode && f[7] !== undefined && transport !== undefined)
      return { addr: { kind: 'unix', path: f[7] }, transport };
  }
  return null;
}

/** True when two listen addresses name the same socket (port 0 never matches: it means "any"). */
export function sameListenAddr(a: ListenAddr, b: ListenAddr): boolean {
  if (a.kind === 'unix') return b.kind === 'unix' && a.path === b.path;
  if (b.kind === 'unix') return false;
  if (a.port === 0 || a.port !== b.port) return false;
  return sameHost(a.host, b.host);
}
