/**
 * The seam for streaming body hooks: a request or response body passes, chunk by chunk,
 * through a {@link BodyStage} when something watches it. This copy is the contract only (no
 * body hooks exist here, so no stage is ever made); the HTTP exchange engine
 * (`flows/http/exchange.ts`) calls it at the points the real stages plug into.
 */
import type { RequestState } from '../../context/state.ts';
import type { RequestHead, ResponseHead } from '../../hooks/http-request.ts';
import type { Runtime } from '../../runtime.ts';

/** Passes one body, chunk by chunk, through the app's body hooks and the size limits. */
export interface BodyStage {
  /** True when the body may change length: send it chunked (HTTP/1.1) or without content-length (HTTP/2), never with the original Content-Length. */
  readonly rewrites: boolean;
  /** One chunk in; the bytes to send on (null or empty: nothing now). Throws or rejects with BodyStopped to stop the body. */
  write(chunk: Buffer): Buffer | null | Promise<Buffer | null>;
  /** The body ended; the last bytes to send. Throws or rejects with BodyStopped to stop. */
  end(): Buffer | null | Promise<Buffer | null>;
  /** The exchange ended before the body did; nothing more is called. */
  abort(reason: string): void;
}
/** Why a body was stopped: `status` for the client when no response head left yet (request body: answer it; response body after the head: cut the response). */
export class BodyStopped extends Error {
  readonly status: number;
  readonly reason: string;
  constructor(status: number, reason: string) {
    super(reason);
    this.status = status;
    this.reason = reason;
  }
}
/** The request body's stage, after handleRequest decided to forward and before the body is sent; null when nothing watches it (then it costs nothing). */
export function requestBodyStage(_rt: Runtime, _head: RequestHead, _request: RequestState): BodyStage | null {
  return null;
}
/** The response body's stage, after handleResponse; null when nothing watches it. */
export function responseBodyStage(
  _rt: Runtime,
  _head: RequestHead,
  _res: ResponseHead,
  _request: RequestState,
): BodyStage | null {
  return null;
}
