/**
 * Loads the compiled addon once and types its raw functions. Everything else in this package
 * goes through the wrappers, which turn errnos into `NativeError`s; nothing outside it should
 * import this file. Loading fails with one clear error off Linux or when the build was skipped.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { NativeError } from './errors.ts';

/** The raw addon surface (see src/*.c for each function's contract). */
export interface Addon {
  seccompInstall(
    defaultKind: number,
    defaultErrno: number,
    groups: [number, number, string[]][],
    tsync: boolean,
  ): void;
  seccompUnknownSyscalls(names: string[]): string[];
  seccompSyscallName(nr: number): string | null;
  tunOpen(name: string): [number, string];
  setNetns(fd: number): void;
  unshareNetns(): void;
  unixSocket(type: number): number;
  unixBindListen(fd: number, path: string, backlog: number): void;
  unixConnect(fd: number, path: string): boolean;
  socketPair(type: number, nonBlocking: boolean, cloexec: boolean): [number, number];
  sendFds(fd: number, data: Buffer, fds: number[]): number;
  recvFds(fd: number, maxBytes: number): { data: Buffer; fds: number[] } | null;
  writeMany(fd: number, buffers: Buffer[], isSocket: boolean): number;
  setFdFlags(fd: number, nonBlocking: boolean, cloexec: boolean): void;
  socketKind(fd: number): [domain: number, type: number, listening: number];
  execve(path: string, argv: string[], env: string[], keepFds: number[]): never;
  tcpSetCongestion(fd: number, name: string): void;
  tcpSetQuickAck(fd: number, on: boolean): void;
  tcpQuickAck(fd: number): boolean;
  pollStart(
    fd: number,
    mode: number,
    isSocket: boolean,
    maxSize: number,
    batch: number,
    cb: (kind: number, value: unknown) => void,
    slab?: Buffer,
    lengths?: Int32Array,
  ): PollHandle;
  pollControl(handle: PollHandle, op: number, flag: boolean): void;
  spliceStart(
    fd0: number,
    fd1: number,
    pipeSize: number,
    owner: SpliceOwner,
    endOnUpstreamEnd: boolean,
  ): void;
  spliceBytes(owner: SpliceOwner): [number, number];
  spliceTotal(owner: SpliceOwner): number;
  spliceStop(owner: SpliceOwner): boolean;
  tunnelStart(
    owner: SpliceOwner,
    clientFd: number,
    ip: string,
    port: number,
    sourceIp: string,
    head: Buffer | null,
    early: Buffer | null,
    timeoutMs: number,
    pipeSize: number,
    smartConnect: boolean,
    endOnUpstreamEnd: boolean,
  ): void;
  trimMemory(): boolean;
  reactorMode(mode: 'thread' | 'inline'): 'thread' | 'inline';
  acceptStart(
    owner: ListenerOwner,
    listenFd: number,
    ip: string,
    port: number,
    sourceIp: string,
    timeoutMs: number,
    pipeSize: number,
    noDelay: boolean,
    wildcard: boolean,
    smartConnect: boolean,
    endOnUpstreamEnd: boolean,
  ): void;
  acceptConnectStart(
    owner: ConnectListenerOwner,
    listenFd: number,
    pipeSize: number,
    noDelay: boolean,
    wildcard: boolean,
    headTimeoutMs: number,
    smartConnect: boolean,
    endOnUpstreamEnd: boolean,
  ): void;
  acceptConnect(
    owner: ConnectListenerOwner,
    id: number,
    fd: number,
    ip: string,
    port: number,
    sourceIp: string,
    head: Buffer | null,
    early: Buffer | null,
    timeoutMs: number,
  ): void;
  acceptRelease(owner: ConnectListenerOwner): void;
  acceptUnpoll(fd: number): boolean;
  acceptStop(owner: ListenerOwner | ConnectListenerOwner): number;
  acceptAbort(owner: ListenerOwner | ConnectListenerOwner): void;
  writerOpen(owner: WriterOwner, fd: number): void;
  writerSend(owner: WriterOwner, data: Buffer | string, encoding: number): number;
  writerTrySend(owner: WriterOwner, data: Buffer | string, encoding: number): number;
  writerDrained(owner: WriterOwner): boolean;
  writerEnd(owner: WriterOwner): void;
  writerWritten(owner: WriterOwner): number;
  writerError(owner: WriterOwner): number;
  writerClose(owner: WriterOwner): void;
  udpSocket(
    family: number,
    reuseAddr: boolean,
    reusePort: boolean,
    v6Only: number,
    rcvbuf: number,
    sndbuf: number,
  ): number;
  udpAdopt(fd: number): number;
  udpBind(fd: number, ip: string, port: number): void;
  udpConnect(fd: number, ip: string, port: number): void;
  udpAddress(fd: number, peer: boolean): [string, number] | null;
  udpPackAddress(ip: string, port: number): Int32Array;
  udpStart(
    fd: number,
    scratch: ArrayBuffer,
    meta: Int32Array,
    batch: number,
    maxSize: number,
    rounds: number,
    maxQueue: number,
    cb: (kind: number, value: number) => void,
  ): UdpHandle;
  udpSend(
    h: UdpHandle,
    data: Uint8Array,
    offset: number,
    length: number,
    to: string | Int32Array | null,
    port: number,
    header: Uint8Array | null,
  ): number;
  udpSendMany(
    h: UdpHandle,
    data: Uint8Array,
    meta: Int32Array,
    first: number,
    count: number,
    to: Int32Array | null,
    header: Uint8Array | null,
    skip: number,
  ): number | [number, number];
  udpControl(h: UdpHandle, op: number, flag: boolean): void;
  udpStats(h: UdpHandle): number[];
  h1Engine(settings: number[], cb: (events: H1RawEvent[], quiet: number) => void): H1EngineHandle;
  h1Serve(engine: H1EngineHandle, fd: number, id: number, bytes: Buffer | null): boolean;
  h1Adopt(engine: H1EngineHandle, id: number, fd: number, upstream: string): boolean;
  h1Answer(engine: H1EngineHandle, id: number, bytes: Buffer, close: boolean): void;
  h1Drop(engine: H1EngineHandle, id: number): number;
  h1Busy(engine: H1EngineHandle, id: number): boolean;
  h1Control(engine: H1EngineHandle, op: number, flag: boolean): number | undefined;
  h1FilterBodies(engine: H1EngineHandle, cb: H1FilterCallback): void;
  h1Filter(engine: H1EngineHandle, id: number, mode: number): void;
  h1Resume(engine: H1EngineHandle, id: number, bytes: Buffer | null, stop: boolean): boolean;
  h1ParseRequest(buf: Buffer, max: number): number | H1ParsedRequest;
  h1ParseResponse(buf: Buffer, max: number, bodiless: boolean, close: boolean): number | H1ParsedResponse;
  h1Chunks(buf: Buffer): number | [number, number, number];
  tlsSetTickets(address: bigint, count: number): boolean;
}

/**
 * The native engine's call for a filtered response body (src/h1-body.c): `n` payload bytes at
 * the start of `buf` (the filter's to keep, unless lent), or the end (`n` < 0). Returns what goes to the
 * client: `undefined` the payload, a Buffer instead, `null` nothing, or a code (1 pending: the
 * connection waits for `h1Resume`; 2 stopped). Never throws.
 */
export type H1FilterCallback = (
  id: number,
  n: number,
  buf: Buffer | undefined,
  headSent: boolean,
) => Buffer | null | undefined | number;

/** An opaque native HTTP/1.1 engine (src/h1.c). */
export type H1EngineHandle = { readonly __h1Engine: unique symbol };

/**
 * One event of the native HTTP/1.1 engine (src/h1-js.c): [type, id, kind, status, responded,
 * reused, bodyUnread, bytesUp, bytesDown, msTotal, msConnect, msHead, method, host, port,
 * upstream, bytes].
 */
export type H1RawEvent = [
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  string,
  string,
  number,
  string,
  Buffer | null,
];

/** A request head as the native parser read it (a test surface). */
export interface H1ParsedRequest {
  headLength: number;
  method: string;
  host: string;
  port: number;
  keepAlive: number;
  contentLength: number;
  rewritten: string;
}

/** A response head as the native parser read it (a test surface). */
export interface H1ParsedResponse {
  headLength: number;
  status: number;
  keepAlive: number;
  chunked: number;
  contentLength: number;
  rewritten: string;
}

/** An opaque UDP socket handle owned by the addon (src/udp.c). */
export type UdpHandle = { readonly __udpHandle: unique symbol };

/** An opaque uv_poll handle owned by the addon. */
export type PollHandle = { readonly __pollHandle: unique symbol };

/**
 * The JS object a splicer is wrapped into (src/splice.c): the addon calls its `onSpliceEnd`
 * once when the splice ends by itself (kind 0: both directions ended; 1: an error, with the
 * errno and the side, 0, 1 or -1, that raised it; 2: a tunnel's connect failed, with its errno).
 */
export interface SpliceOwner {
  onSpliceEnd(kind: number, bytes0to1: number, bytes1to0: number, errno: number, side: number): void;
  /**
   * A tunnel (`tunnelStart`) connected upstream (its head is on its way to the client), after
   * `connectMs`. Announced just before `onSpliceEnd` when the tunnel ends within 50 ms of its
   * connect, else 50 ms after it: a short tunnel wakes the JS thread once.
   */
  onSpliceConnected?(connectMs: number): void;
}

/**
 * The JS object a reactor-thread listener is wrapped into (src/accept.c): it hears of finished
 * connections in batches and adopts the ones that run longer than 50 ms.
 */
export interface ListenerOwner {
  /**
   * Connections that ended, twelve numbers each (see src/accept.c; the last two are connect mode's): kind, bytes client→upstream,
   * upstream→client, errno, side, connect ms (-1: never connected), ms since the accept, ms since
   * the end, peer port, local port; their peers' hosts (and local hosts, for a wildcard
   * listener); tunnels still running that JS has not heard of; whether accepting has stopped.
   */
  onRecords(
    numbers: Float64Array,
    peers: string[],
    locals: string[] | null,
    live: number,
    stopped: boolean,
  ): void;
  /** A tunnel announced 50 ms after its connect: returns the owner it is wrapped into. */
  onTunnel(
    peer: string,
    peerPort: number,
    local: string | null,
    localPort: number,
    sinceAcceptMs: number,
  ): SpliceOwner;
}

/**
 * The JS object a connect-mode listener is wrapped into (src/accept-head.c): the reactor thread
 * reads each connection's request head; JS hears of CONNECT heads to decide and of connections
 * handed back to serve (`onHeads`), of the tunnels it started that ended (`onConnectRecords`)
 * and of the ones that run longer than 50 ms (`onConnectTunnel`).
 */
export interface ConnectListenerOwner {
  /**
   * Heads read, six numbers each: descriptor (JS's from now on), kind (0: a complete CONNECT
   * head with nothing after it; 1: handed back), ms since the accept, peer port, local port,
   * the head's length in `bytes` (one after another); the peers' hosts (and local hosts, for a
   * wildcard listener).
   */
  onHeads(numbers: Float64Array, bytes: Buffer, peers: string[], locals: string[] | null): void;
  /**
   * Tunnels started with `acceptConnect` that ended, twelve numbers each (the layout of
   * `ListenerOwner.onRecords`; field 10 the tunnel's id, field 11 the client's descriptor after a
   * failed connect, else -1); heads and tunnels JS has not heard the end of; whether accepting
   * has stopped.
   */
  onConnectRecords(numbers: Float64Array, live: number, stopped: boolean): void;
  /** A tunnel announced 50 ms after its connect: returns the owner it is wrapped into. */
  onConnectTunnel(id: number): SpliceOwner | null;
}

/** The JS object a socket writer is wrapped into (src/writer.c): `onWriterDrain` is called once its queue emptied, when asked. */
export interface WriterOwner {
  onWriterDrain(): void;
}

function load(): Addon {
  if (process.platform !== 'linux') {
    throw new NativeError(
      'NATIVE_ERR_UNSUPPORTED_PLATFORM',
      `the native addon (seccomp, TUN, SOCK_SEQPACKET, descriptor passing) is Linux only; this is ${process.platform}`,
    );
  }
  const require = createRequire(import.meta.url);
  // src/addon.ts in the repository, dist/src/addon.js in a packed package: build/ is at the root.
  const file = existsSync(new URL('../build/Release/oxy_native.node', import.meta.url))
    ? '../build/Release/oxy_native.node'
    : '../../build/Release/oxy_native.node';
  try {
    return require(file) as Addon;
  } catch (e) {
    throw new NativeError(
      'NATIVE_ERR_NOT_BUILT',
      `the native addon is not built or failed to load (${(e as Error).message}): run \`npm rebuild native\` ` +
        '(needs a C compiler, make and python3)',
    );
  }
}

/** The addon, loaded when this module is first imported. */
export const addon: Addon = load();
