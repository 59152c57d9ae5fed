/**
 * The stream sockets a process inherited (restart handover or systemd) and which endpoint took
 * which: the bookkeeping behind `Listeners`' claims, by the rules of matching.ts.
 *
 * A socket is claimed at most once; a listen that fails gives it back (`release`). What no
 * endpoint took by the time the service is ready is closed (`closeUnclaimed`), except systemd's.
 * Sockets systemd passed come without an address or transport: those are read from /proc once,
 * and only when a claim needs them.
 */
import { formatListenAddr, type ListenAddr } from '../settings/net.ts';
import {
  closeUnclaimed,
  type InheritedSocket,
  type SocketOfFd,
  socketOfFd,
  type Unclaimed,
} from './inherited.ts';
import { fitsByAddress, fitsByName, type SocketTransport } from './matching.ts';

/** The inherited stream sockets of one `Listeners`. */
export class InheritedListeners {
  readonly #all: readonly InheritedSocket[];
  /** Taken by an endpoint, or released by `closeUnclaimed`. */
  readonly #taken = new Set<InheritedSocket>();
  /** What /proc said of the sockets that came without an address (systemd's). */
  readonly #seen = new Map<InheritedSocket, SocketOfFd | null>();

  constructor(inherited: readonly InheritedSocket[]) {
    this.#all = [...inherited];
  }

  /** The sockets no endpoint has claimed (yet). */
  get unused(): readonly InheritedSocket[] {
    return this.#all.filter((s) => !this.#taken.has(s));
  }

  /** Gives a claimed socket back, when listening on it failed. */
  release(s: InheritedSocket): void {
    this.#taken.delete(s);
  }

  /**
   * Closes this process's copy of every inherited socket that no endpoint took, so that an
   * endpoint the new settings dropped or moved refuses connections once the old process has
   * stopped accepting, instead of queueing them where nobody accepts. Sockets from systemd stay
   * open: the socket unit holds each one anyway, so closing ours would refuse nobody. Call it
   * once every endpoint is open (`Lifecycle.ready` does, after the restart socket).
   */
  closeUnclaimed(): Unclaimed<InheritedSocket> {
    return closeUnclaimed(this.unused, this.#taken);
  }

  /**
   * The inherited socket endpoint `name` at `addr` may take, now claimed: of the given
   * `transport` (or unknown), named `name` with an address that fits `addr` (a systemd socket
   * named so, whatever its address), else any at exactly `addr`. Undefined: bind afresh.
   */
  claim(name: string, addr: ListenAddr, transport: SocketTransport): InheritedSocket | undefined {
    const free = this.unused.filter((s) => {
      const t = this.#describe(s).transport;
      return t === null || t === transport;
    });
    const found =
      free.find((s) => {
        if (s.name !== name) return false;
        if (s.source === 'systemd') return true; // the socket unit says where it listens
        const bound = this.#describe(s).addr;
        return bound !== null && fitsByName(addr, bound, s.configured ?? null);
      }) ??
      free.find((s) => {
        const bound = this.#describe(s).addr;
        return bound !== null && fitsByAddress(addr, bound, s.configured ?? null);
      });
    if (found) this.#taken.add(found);
    return found;
  }

  /** The address and transport of `s`: as the previous process said, else from /proc (once). */
  #describe(s: InheritedSocket): { addr: ListenAddr | null; transport: SocketTransport | null } {
    if (s.addr !== null) return { addr: s.addr, transport: s.transport ?? null };
    let seen = this.#seen.get(s);
    if (seen === undefined) {
      seen = socketOfFd(s.fd);
      this.#seen.set(s, seen);
    }
    return { addr: seen?.addr ?? null, transport: s.transport ?? seen?.transport ?? null };
  }

  /** An unclaimed systemd socket named `name` that is not a stream listener, now claimed (systemd names UDP sockets too). */
  claimSystemdDatagram(name: string): InheritedSocket | undefined {
    const found = this.unused.find((s) => {
      if (s.source !== 'systemd' || s.name !== name) return false;
      const t = this.#describe(s).transport;
      return t === null || t === 'datagram';
    });
    if (found) this.#taken.add(found);
    return found;
  }

  /**
   * Why binding `addr` may have failed with EADDRINUSE: an inherited socket no endpoint took
   * holds its port. A sentence to append to the error, or ''.
   */
  heldOnPort(addr: ListenAddr): string {
    if (addr.kind !== 'tcp') return '';
    const held = this.unused.find((s) => {
      const bound = this.#describe(s).addr;
      return bound?.kind === 'tcp' && bound.port === addr.port;
    });
    const at = held && this.#describe(held).addr;
    if (!held || !at) return '';
    const what = `${formatListenAddr(at)}${held.name === null ? '' : ` ("${held.name}")`}`;
    if (held.source === 'systemd') return ` (a socket from systemd, ${what}, holds the port)`;
    return (
      ` (the old process listens on ${what} until this one is ready: a restart cannot move an ` +
      'endpoint onto an address that overlaps one in use; stop and start the service instead)'
    );
  }
}
