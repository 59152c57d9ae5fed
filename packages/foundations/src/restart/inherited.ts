/**
 * Listening sockets a process is born with, from two sources:
 *
 * - **systemd socket activation**: `LISTEN_FDS` descriptors starting at fd 3, meant for us
 *   only when `LISTEN_PID` is our pid (or absent), named by `LISTEN_FDNAMES`;
 * - **our own restart handover**: `FOUNDATIONS_HANDOVER`, JSON written by the previous
 *   process: `{ "control": fd, "listeners": [{ "name", "addr", "fd" }],
 *   "datagrams": [{ "name", "host", "port", "fd" }] }` (UDP sockets; absent from older versions).
 *
 * Both are read once, at start-up, and removed from `process.env` so that nothing started
 * later (a restart child, a shell-out) believes the descriptors are its own. Bad values are
 * errors naming the variable, never a crash deep inside `listen()`.
 */
import fs from 'node:fs';
import net from 'node:net';
import { FND_ERR, FoundationsError } from '../errors.ts';
import type { ListenAddr } from '../settings/net.ts';

/** The environment variable carrying the restart handover from the old process. */
export const HANDOVER_ENV = 'FOUNDATIONS_HANDOVER';

/** systemd passes descriptors starting here (`SD_LISTEN_FDS_START`). */
const SD_LISTEN_FDS_START = 3;

/** One inherited listening socket. `name`/`addr` are null when the source did not say. */
export interface InheritedSocket {
  readonly fd: number;
  readonly name: string | null;
  readonly addr: ListenAddr | null;
  readonly source: 'systemd' | 'handover';
}

/** One UDP socket handed over by the previous process (systemd's come as `InheritedSocket`s). */
export interface InheritedDatagram {
  readonly fd: number;
  readonly name: string;
  /** The address and port it is bound to. */
  readonly host: string;
  readonly port: number;
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

function toListenAddr(v: unknown, where: string): ListenAddr {
  const a = v as Record<string, unknown> | null;
  if (a && a.kind === 'tcp' && typeof a.host === 'string' && typeof a.port === 'number') {
    return { kind: 'tcp', host: a.host, port: a.port };
  }
  if (a && a.kind === 'unix' && typeof a.path === 'string') return { kind: 'unix', path: a.path };
  throw listenError(`${HANDOVER_ENV}: ${where}.addr is not a listen address`);
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
    return { fd: e.fd, name: e.name, addr: toListenAddr(e.addr, where), source: 'handover' };
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
      return { fd: e.fd, name: e.name, host: e.host, port: e.port };
    },
  );
  return { controlFd: v.control, listeners, datagrams };
}

/** Removes both sources' variables, so processes we start do not inherit them by accident. */
export function scrubInheritanceEnv(env: NodeJS.ProcessEnv): void {
  for (const k of ['LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES', 'LISTEN_FDS_START', HANDOVER_ENV])
    delete env[k];
}

/**
 * The local address of a listening socket descriptor, read from /proc (Node cannot call
 * getsockname on a bare fd). Null when the fd is not a TCP or Unix socket we can find.
 */
export function socketAddressOfFd(fd: number): ListenAddr | null {
  let link: string;
  try {
    link = fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return null; // boundary: a closed or foreign fd simply has no address
  }
  const m = /^socket:\[(\d+)\]$/.exec(link);
  if (!m) return null;
  const inode = m[1] as string;
  return findTcp(inode, '/proc/net/tcp', 4) ?? findTcp(inode, '/proc/net/tcp6', 16) ?? findUnix(inode);
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

function findTcp(inode: string, table: string, bytes: 4 | 16): ListenAddr | null {
  for (const line of readLines(table)) {
    const f = line.trim().split(/\s+/);
    if (f[9] !== inode || f[1] === undefined) continue;
    const a = decodeProcAddr(f[1], bytes);
    return a ? { kind: 'tcp', host: a.host, port: a.port } : null;
  }
  return null;
}

function findUnix(inode: string): ListenAddr | null {
  for (const line of readLines('/proc/net/unix')) {
    const f = line.trim().split(/\s+/);
    if (f[6] === inode && f[7] !== undefined) return { kind: 'unix', path: f[7] };
  }
  return null;
}

/** True when two listen addresses name the same socket (port 0 never matches: it means "any"). */
export function sameListenAddr(a: ListenAddr, b: ListenAddr): boolean {
  if (a.kind === 'unix') return b.kind === 'unix' && a.path === b.path;
  if (b.kind === 'unix') return false;
  if (a.port === 0 || a.port !== b.port) return false;
  return normaliseHost(a.host) === normaliseHost(b.host);
}

function normaliseHost(host: string): string {
  if (net.isIPv6(host)) return new net.SocketAddress({ address: host, family: 'ipv6' }).address;
  return host;
}
