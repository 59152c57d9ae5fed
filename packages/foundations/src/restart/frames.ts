/**
 * The wire format of both restart conversations: length-prefixed JSON. Each frame is a
 * 4-byte big-endian length followed by that many bytes of UTF-8 JSON holding one object
 * with a string `type`. Unix stream sockets keep no message boundaries, so the prefix
 * provides them; JSON keeps the messages readable with `socat` and extensible.
 *
 * Two conversations use it (see docs/restarts.md):
 * - restarter ⇄ running instance, over the restart socket: `RestarterMessage`;
 * - old process ⇄ new process, over the inherited control socketpair: `HandoverMessage`.
 */
import { FND_ERR, FoundationsError } from '../errors.ts';

/** Frames on the restart socket are small; anything larger is a protocol error. */
export const MAX_CONTROL_FRAME = 64 * 1024;
/** Frames on the handover channel carry the app's state, which may be large. */
export const MAX_STATE_FRAME = 256 * 1024 * 1024;

/** Messages between `oxy --restart` and the running instance. */
export type RestarterMessage =
  /** `config`: absolute paths of the files the new process loads (absent: the instance's own). */
  | { readonly type: 'restart'; readonly config?: readonly string[] }
  /** `config`: the files the new process was started with and loaded before it reported ready. */
  | { readonly type: 'complete'; readonly pid: number; readonly config?: readonly string[] }
  | { readonly type: 'failed'; readonly reason: string }
  | { readonly type: 'refused'; readonly reason: string };

/** Messages between the old process and the new one it started. */
export type HandoverMessage =
  | { readonly type: 'state'; readonly state: unknown }
  | { readonly type: 'ready'; readonly pid: number }
  | { readonly type: 'failed'; readonly reason: string };

/** Encodes one message as a frame. Throws `FND_ERR_RESTART` if it cannot be serialised. */
export function encodeFrame(message: RestarterMessage | HandoverMessage): Buffer {
  let json: string;
  try {
    json = JSON.stringify(message);
  } catch (e) {
    throw new FoundationsError(FND_ERR.RESTART, `cannot serialise "${message.type}" message: ${String(e)}`, {
      cause: e,
    });
  }
  const body = Buffer.from(json, 'utf8');
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, 4);
  return frame;
}

/**
 * Splits a byte stream into decoded messages. Feed it chunks with `push()`; it returns
 * every complete message so far. Malformed input (oversized length, invalid JSON, a value
 * that is not an object with a string `type`) throws `FND_ERR_RESTART` naming the problem;
 * the stream is then unusable and should be closed.
 */
export class FrameDecoder {
  readonly #maxFrame: number;
  #buffer: Buffer = Buffer.alloc(0);

  /** `maxFrame` bounds the body length accepted, so a peer cannot make us buffer forever. */
  constructor(maxFrame: number = MAX_CONTROL_FRAME) {
    this.#maxFrame = maxFrame;
  }

  /** Bytes received but not yet part of a complete frame. */
  get pending(): number {
    return this.#buffer.length;
  }

  /** Appends a chunk and returns the messages it completed, in order. */
  push(chunk: Buffer): Array<{ type: string; [key: string]: unknown }> {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    const out: Array<{ type: string; [key: string]: unknown }> = [];
    while (this.#buffer.length >= 4) {
      const length = this.#buffer.readUInt32BE(0);
      if (length > this.#maxFrame) {
        throw new FoundationsError(
          FND_ERR.RESTART,
          `restart protocol: frame of ${length} bytes exceeds the limit of ${this.#maxFrame}`,
        );
      }
      if (this.#buffer.length < 4 + length) break;
      const body = this.#buffer.subarray(4, 4 + length);
      this.#buffer = this.#buffer.subarray(4 + length);
      out.push(decodeBody(body));
    }
    return out;
  }
}

/** Parses one frame body; exported for the synchronous reader in the new process. */
export function decodeBody(body: Buffer): { type: string; [key: string]: unknown } {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new FoundationsError(FND_ERR.RESTART, `restart protocol: frame is not valid JSON (${String(e)})`, {
      cause: e,
    });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new FoundationsError(FND_ERR.RESTART, 'restart protocol: frame is not a JSON object');
  }
  const type = (value as Record<string, unknown>).type;
  if (typeof type !== 'string') {
    throw new FoundationsError(FND_ERR.RESTART, 'restart protocol: frame has no string "type"');
  }
  return value as { type: string; [key: string]: unknown };
}

/** `value` when it is a list of strings, else `undefined`. */
export function stringList(value: unknown): readonly string[] | undefined {
  return Array.isArray(value) && value.every((v) => typeof v === 'string') ? value : undefined;
}

/** Validates a message received by the restarter; throws `FND_ERR_RESTART` on anything else. */
export function toRestarterAnswer(m: {
  type: string;
  [key: string]: unknown;
}): Exclude<RestarterMessage, { type: 'restart' }> {
  switch (m.type) {
    case 'complete':
      if (typeof m.pid === 'number' && Number.isInteger(m.pid)) {
        const config = stringList(m.config);
        return config === undefined
          ? { type: 'complete', pid: m.pid }
          : { type: 'complete', pid: m.pid, config };
      }
      break;
    case 'failed':
    case 'refused':
      if (typeof m.reason === 'string') return { type: m.type, reason: m.reason };
      break;
  }
  throw new FoundationsError(
    FND_ERR.RESTART,
    `restart protocol: unexpected answer ${JSON.stringify(m).slice(0, 200)}`,
  );
}

/** Validates a message the new process sent to the old one. */
export function toChildReport(m: {
  type: string;
  [key: string]: unknown;
}): Extract<HandoverMessage, { type: 'ready' | 'failed' }> {
  if (m.type === 'ready' && typeof m.pid === 'number') return { type: 'ready', pid: m.pid };
  if (m.type === 'failed' && typeof m.reason === 'string') return { type: 'failed', reason: m.reason };
  throw new FoundationsError(
    FND_ERR.RESTART,
    `restart handover: unexpected report ${JSON.stringify(m).slice(0, 200)}`,
  );
}
