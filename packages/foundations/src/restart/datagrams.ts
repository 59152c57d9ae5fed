/**
 * UDP sockets that survive restarts, beside the stream listeners of listeners.ts.
 *
 * `bind(name, addr)` first looks for a UDP socket handed over by the previous process (by
 * name, then by address, if its address and bind-time options fit: matching.ts) or passed by
 * systemd (`ListenDatagram=`, by `FileDescriptorName=`), and adopts it as it is (the addon's
 * `UdpSocket.adopt`: Node's dgram cannot); only when none fits does it bind afresh. Every
 * socket is remembered so that a restart hands the very same kernel socket to the new
 * process: datagrams waiting in its receive queue are read there. `closeUnclaimed()` closes
 * the handed-over sockets no endpoint took (an endpoint the new config dropped or moved).
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
import { closeUnclaimed, type InheritedDatagram, type InheritedSocket, type Unclaimed } from './inherited.ts';
import {
  bindOptionsFit,
  bindOptionsOf,
  type DatagramBindOptions,
  fitsByAddress,
  fitsByName,
} from './matching.ts';

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
  /** The options fixed when it was bound (handed on, for the next process to compare); null: unknown. */
  readonly options: DatagramBindOptions | null;
  readonly origin: 'systemd' | 'handover' | 'bound';
}

let native: typeof Native | undefined;

function loadNative(): typeof Native {
  native ??= createRequire(import.meta.url)('native') as typeof Native;
  return native;
}

/** A UDP address as a `ListenAddr` (its `tcp` kind means an IP address and port), for matching.ts. */
function ipAddr(host: string, port: number): { kind: 'tcp'; host: string; port: number } {
  return { kind: 'tcp', host, port };
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
   * The UDP socket of endpoint `name` at `addr`: an inherited one (handover by name if its
   * address fits, port 0 keeping the inherited port, then any at exactly `addr`; systemd by
   * name), else a new one bound with `opts`. A handed-over socket is taken only when the options
   * fixed at bind time (`reuseAddr`, `reusePort`, `ipv6Only`) are those `opts` ask for. Reading
   * starts when the caller sets `onBatch`. Errors are `FND_ERR_LISTEN` naming the endpoint and
   * address.
   */
  bind(name: string, addr: DatagramAddr, opts: Native.UdpSocketOptions = {}): Native.UdpSocket {
    const where = `UDP endpoint "${name}" (${net.isIPv6(addr.host) ? `[${addr.host}]` : addr.host}:${addr.port})`;
    const { UdpSocket } = loadNative();
    const want = ipAddr(addr.host, addr.port);
    const free = this.unused.filter((d) => bindOptionsFit(opts, d.options, d.host));
    const handed =
      free.find(
        (d) => d.name === name && (d.source === 'systemd' || fitsByName(want, ipAddr(d.host, d.port), null)),
      ) ?? free.find((d) => fitsByAddress(want, ipAddr(d.host, d.port), null));
    const fromSystemd = handed ? undefined : this.#claimSystemd(name);
    let socket: Native.UdpSocket;
    try {
      if (handed) socket = UdpSocket.adopt(handed.fd, opts);
      else if (fromSystemd) socket = UdpSocket.adopt(fromSystemd.fd, opts);
      else socket = UdpSocket.bind({ ...opts, address: addr.host, port: addr.port });
    } catch (e) {
      if (fromSystemd) this.#release(fromSystemd);
      const code = (e as { code?: string }).code ?? '';
      const held = /EADDRINUSE/.test(code) ? this.#heldOnPort(addr.port, opts) : '';
      throw new FoundationsError(FND_ERR.LISTEN, `${where}: cannot bind: ${(e as Error).message}${held}`, {
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
      options: handed ? handed.options : fromSystemd ? null : bindOptionsOf(opts),
      origin: handed ? handed.source : fromSystemd ? 'systemd' : 'bound',
    });
    return socket;
  }

  /**
   * Closes this process's copy of every handed-over socket no endpoint took (see
   * `Listeners.closeUnclaimed`); one that came from systemd stays open. The old process keeps
   * its copy for replies until it exits, so the port is free once it has drained.
   */
  closeUnclaimed(): Unclaimed<InheritedDatagram> {
    return closeUnclaimed(this.unused, this.#used);
  }

  /** Stops reading every socket (the next process reads them now); they stay open for replies. */
  stopReading(): void {
    for (const d of this.active) d.socket.setReading(false);
  }

  /** Why binding may have failed with EADDRINUSE: a handed-over socket no endpoint took holds the port. */
  #heldOnPort(port: number, opts: Native.UdpSocketOptions): string {
    const held = this.unused.find((d) => d.port === port);
    if (held === undefined) return '';
    const at = `${net.isIPv6(held.host) ? `[${held.host}]` : held.host}:${held.port}`;
    const why = bindOptionsFit(opts, held.options, held.host)
      ? 'a restart cannot move an endpoint onto an address that overlaps one in use'
      : `bound with ${JSON.stringify(held.options)}, not ${JSON.stringify(bindOptionsOf(opts))}: ` +
        'a restart cannot change the options of a socket in use';
    return (
      ` (the old process holds the UDP socket ${at} of "${held.name}" until it exits, ${why}; ` +
      'stop and start the service instead)'
    );
  }
}
