/**
 * The contract between an HTTP on-ramp and the exchange engine (`exchange.ts`): what the
 * on-ramp hands over for one forwarded request (`ForwardInput`, its `BodySource`), where the
 * response goes (`ExchangeResponse`), and the handle the on-ramp keeps (`ForwardRun`). Types
 * only, so on-ramps and the engine can be read apart.
 */
import type { RequestKind } from '../../context/contexts.ts';
import type { RequestState } from '../../context/state.ts';
import type { AbsoluteTarget } from './headers.ts';

/** Where an exchange's response goes. Exactly one of `end`, `fail` and `answer` ends it. */
export interface ExchangeResponse {
  /**
   * The response head, `rawHeaders` as the upstream sent them (or the hook left them): hop-by-hop
   * fields may still be in, for the receiver to drop as it frames the response. Nothing needs to
   * be sent yet. Without `Content-Length` the body is framed chunked (HTTP/1.1).
   */
  head(status: number, statusText: string, rawHeaders: readonly string[]): void;
  /** A piece of the body. Return false to pause the upstream until `resume` is called. */
  body(chunk: Buffer, resume: () => void): boolean;
  /** The response is complete; `last` is a final piece of body, `trailers` its trailer fields. */
  end(last: Buffer | null, trailers: readonly string[] | null): void;
  /**
   * The proxy answers `status` with the short text `body` itself (the upstream failed, the
   * egress decision refused); if the response's head already left, the response is cut instead
   * (HTTP/1.1: the connection closed without the end of the framing; HTTP/2: RST_STREAM
   * INTERNAL_ERROR).
   */
  fail(status: number, body: string): void;
  /** A response `handleRequest` decided on (`respond`): status, fields and a whole body. */
  answer(status: number, rawHeaders: readonly string[], body: string | Uint8Array): void;
  /** A 1xx the upstream sent (`100 Continue`), for a client that may be waiting for it. */
  informational(status: number, rawHeaders: readonly string[]): void;
  /** The request body will not be read to its end: the client connection must not carry another request. */
  bodyUnread(): void;
}

/** A client's request body, as an on-ramp delivers it. */
export interface BodySource {
  /** The body's length from `Content-Length`, or -1 when unknown (chunked, or HTTP/2 without one). */
  readonly length: number;
  /**
   * Starts delivering: `data` for each piece (false: pause until `resume` is called), then
   * `end` with the trailer fields (`[name, value, …]`) if any, or `error`.
   */
  start(sink: BodySink): void;
  /** Stops delivering: the exchange is over; what is left of the body is discarded. */
  stop(): void;
}

/** What a {@link BodySource} delivers to. */
export interface BodySink {
  data(chunk: Buffer, resume: () => void): boolean;
  end(trailers: readonly string[] | null): void;
  error(e: unknown): void;
}

/** A running exchange, as the on-ramp sees it. */
export interface ForwardRun {
  /** The client went away before the response ended: drop the upstream exchange. */
  clientClosed(): void;
}

/** What an on-ramp hands the engine for one forwarded request. */
export interface ForwardInput {
  readonly method: string;
  /** The absolute target (absolute-form, or origin-form completed with the endpoint's origin). */
  readonly target: AbsoluteTarget;
  /** The client's fields, `[name, value, …]`, hop-by-hop ones still in. */
  readonly rawHeaders: readonly string[];
  /** The body, or null when the request has none. */
  readonly body: BodySource | null;
  /** Carry `Expect: 100-continue` upstream and relay the `100` (the on-ramp did not answer it). */
  readonly expectContinue: boolean;
  /** The audit record's request kind (default `forward`). */
  readonly kind?: RequestKind;
  /** The tunnel this request was read in (intercepted or tunnelled HTTP): its id is the parent. */
  readonly parent?: RequestState;
}
