/**
 * The IP off-ramp: flows decided `forward` leave as IP packets, unchanged, over a SOCK_SEQPACKET
 * connection to `endpoints.<name>.ip.offramp`, one connection per tunnel opened on the first
 * forwarded packet. The connection speaks the `ip_seqpacket` on-ramp's own protocol: its first
 * message is a JSON context (`{"endpoint", "conn", "tunnel"}`), then one IP packet per message
 * both ways. So the peer may be another Oxy's `ip_seqpacket` endpoint, a router process that
 * writes to a TUN device, or a test; packets it sends back are the flows' replies.
 *
 * Ordering rule: packets sent while the connection opens wait in a bounded queue (in order);
 * past the bound, or once the connection failed or closed, they are dropped and counted.
 */
import { log } from 'foundations/telemetry';
import { type SeqpacketSocket, seqpacket } from 'native';

/** One tunnel's connection to the IP off-ramp. */
export class IpOffRamp {
  readonly #path: string;
  readonly #maxQueued: number;
  readonly #onPacket: (packet: Buffer) => void;
  readonly #onDrop: (reason: string) => void;
  #socket: SeqpacketSocket | null = null;
  #queue: Buffer[] | null = [];
  #closed = false;

  /**
   * Connects to `path` now. `context` is the first message; `onPacket` gets each packet read back;
   * `onDrop` counts a packet that could not be sent.
   */
  constructor(
    path: string,
    context: object,
    maxQueued: number,
    onPacket: (packet: Buffer) => void,
    onDrop: (reason: string) => void,
  ) {
    this.#path = path;
    this.#maxQueued = maxQueued;
    this.#onPacket = onPacket;
    this.#onDrop = onDrop;
    seqpacket.connect(path, { timeoutMs: 2000 }).then(
      (socket) => this.#opened(socket, Buffer.from(JSON.stringify(context))),
      (e: unknown) => this.#failed(e),
    );
  }

  /** Sends one IP packet (copied if it must wait). */
  send(packet: Buffer): void {
    const s = this.#socket;
    if (s !== null) {
      s.send(packet);
      return;
    }
    const q = this.#queue;
    if (q === null || q.length >= this.#maxQueued) {
      this.#onDrop(q === null ? 'offramp_down' : 'offramp_queue_full');
      return;
    }
    q.push(Buffer.from(packet));
  }

  /** Closes the connection; later sends are dropped. Idempotent. */
  close(): void {
    this.#closed = true;
    this.#queue = null;
    this.#socket?.close();
    this.#socket = null;
  }

  #opened(socket: SeqpacketSocket, hello: Buffer): void {
    if (this.#closed) {
      socket.close();
      return;
    }
    socket.on('messages', (packets) => {
      for (const p of packets) this.#onPacket(p);
    });
    socket.on('error', (e) => log.warn('IP off-ramp connection failed', { path: this.#path, err: e }));
    socket.on('close', () => {
      this.#socket = null;
      this.#queue = null;
    });
    socket.send(hello);
    const queued = this.#queue ?? [];
    this.#queue = null;
    this.#socket = socket;
    if (queued.length > 0) socket.send(queued);
  }

  #failed(e: unknown): void {
    const dropped = this.#queue?.length ?? 0;
    this.#queue = null;
    if (this.#closed) return;
    log.warn('IP off-ramp unreachable', { path: this.#path, err: e });
    for (let i = 0; i < dropped; i++) this.#onDrop('offramp_down');
  }
}
