/**
 * UDP sockets that survive restarts, beside the stream listeners of listeners.ts.
 *
 * `bind(name, addr)` first looks for a UDP socket handed over by the previous process (by
 * name, then by address) or passed by systemd (`ListenDatagram=`, by `FileDescriptorName=`),
 * and adopts it as it is (the addon's `UdpSocket.adopt`: Node's dgram cannot); only when none
 * matches does it bind afresh. Every socket is remembered so that a restart hands the very
 * same kernel socket to the new process: datagrams waiting in its receive queue are read there.
 *
 * Ordering rules at a restart: the new process adopts the sockets and reads them as soon as
 * its app sets `onBatch`; the old one stops reading (`stopReading`, from `stopAccepting`) once
 * the new one reports ready, so for that moment both read and each datagram goes to one of
 * them. The old process keeps its copies open until it exits, so the sessions it is draining
 * can still send replies through them.
 *
 * The addon is loaded on first use, so services without UDP endpoints never need it.
 */
import { createRequire } from 'node:module';
import net from 'node:net';
import type * as Native from 'native';
import { FND_ERR, FoundationsError } from '../errors.ts';
import type { InheritedDatagram, InheritedSocket } from './inherited.ts';

/** An IP address and port to bind a UDP socket to. */
export interface DatagramAddr {
  readonly host: string;
  /** 0: an ephemeral port (the port bound is what a restart hands on). */
  readonly port: number;
}

/** A UDP socket opened through `DatagramListeners.bind`, with what a restart needs to pass it on. */
export interface ActiveDatagram {
  readonly name: string;
  /** The address bound (port 0 replaced by the real port). */
  readonly host: string;
  readonly port: number;
  readonly socket: Native.UdpSocket;
  /** The descriptor, handed on at a restart. */
  readonly fd: number;
  readonly origin: 'systemd' | 'handover' | 'bound';
}

let native: typeof Native | undefined;

function loadNative(): typeof Native {
  native ??= createRequire(import.meta.url)('native') as typeof Native;
  return native;
}

function sameHost(a: string, b: string): boolean {
  const norm = (h: string): string =>
    net.isIPv6(h) ? new net.SocketAddress({ address: h, family: 'ipv6' }).address : h;
  return norm(a) === norm(b);
}

/** Every UDP socket of the process that a restart hands on. */
export class DatagramListeners {
  readonly #inherited: InheritedDatagram[];
  readonly #used = new Set<InheritedDatagram>();
  readonly #active: ActiveDatagram[] = [];
  readonly #claimSystemd: (name: string) => InheritedSocket | undefined;
  readonly #release: (s: InheritedSocket) => void;

  /**
   * `inherited`: what the previous process handed over; `claimSystemd` takes an unclaimed
   * systemd socket by name from the stream listeners' list, `release` gives it back.
   */
  constructor(
    inherited: readonly InheritedDatagram[],
    claimSystemd: (name: string) => InheritedSocket | undefined,
    release: (s: InheritedSocket) => void,
  ) {
    this.#inherited = [...inherited];
    this.#claimSystemd = claimSystemd;
    this.#release = release;
  }

  /** The sockets opened so far and still open, in order (a closed one is not handed on). */
  get active(): readonly ActiveDatagram[] {
    return this.#active.filter((d) => !d.socket.closed);
  }

  /** Handed-over sockets no endpoint has claimed (yet). */
  get unused(): readonly InheritedDatagram[] {
    return this.#inherited.filter((d) => !this.#used.has(d));
  }

  /**
   * The UDP socket of endpoint `name` at `addr`: an inherited one (handover by name, then by
   * address; systemd by name), else a new one bound with `opts`. Reading starts when the
   * caller sets `onBatch`. Errors are `FND_ERR_LISTEN` naming the endpoint and address.
   */
  bind(name: string, addr: DatagramAddr, opts: Native.UdpSocketOptions = {}): Native.UdpSocket {
    const where = `UDP endpoint "${name}" (${net.isIPv6(addr.host) ? `[${addr.host}]` : addr.host}:${addr.port})`;
    const { UdpSocket } = loadNative();
    const free = this.#inherited.filter((d) => !this.#used.has(d));
    const handed =
      free.find((d) => d.name === name) ??
      free.find((d) => addr.port !== 0 && d.port === addr.port && sameHost(d.host, addr.host));
    const fromSystemd = handed ? undefined : this.#claimSystemd(name);
    let socket: Native.UdpSocket;
    try {
      if (handed) socket = UdpSocket.adopt(handed.fd, opts);
      else if (fromSystemd) socket = UdpSocket.adopt(fromSystemd.fd, opts);
      else socket = UdpSocket.bind({ ...opts, address: addr.host, port: addr.port });
    } catch (e) {
      if (fromSystemd) this.#release(fromSystemd);
      const code = (e as { code?: string }).code ?? '';
      throw new FoundationsError(FND_ERR.LISTEN, `${where}: cannot bind: ${(e as Error).message}`, {
        cause: e,
        userError: /EADDRINUSE|EACCES|EADDRNOTAVAIL|EPROTOTYPE/.test(code),
      });
    }
    if (handed) this.#used.add(handed);
    const bound = socket.address();
    this.#active.push({
      name,
      host: bound.address,
      port: bound.port,
      socket,
      fd: socket.fd,
      origin: handed ? 'handover' : fromSystemd ? 'systemd' : 'bound',
    });
    return socket;
  }

  /** Stops reading every socket (the next process reads them now); they stay open for replies. */
  stopReading(): void {
    for (const d of this.active) d.socket.setReading(false);
  }
}
