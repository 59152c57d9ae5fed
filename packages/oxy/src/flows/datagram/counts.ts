/**
 * What datagram sessions forwarded, on its way to the metrics. The hot path only adds to a
 * session's own {@link SessionCounts}; one timer per process, running while any session is open,
 * adds every open session's new counts to `udp_datagrams_total` and `udp_bytes_total` each
 * second (summed by endpoint), so a session that never idles out (a VPN, QUIC) shows there too,
 * and a session adds the rest when it ends ({@link untrack}). Each datagram is counted once.
 */
import { datagramMetrics } from '../../telemetry/metrics.ts';

/** How often open sessions' counts are added to the metrics. */
const COUNTS_INTERVAL_MS = 1000;

/** One session's counts, and how much of them the metrics already have. */
export class SessionCounts {
  readonly endpoint: string;
  datagramsUp = 0;
  datagramsDown = 0;
  bytesUp = 0;
  bytesDown = 0;
  #reportedUp = 0;
  #reportedDown = 0;
  #reportedBytesUp = 0;
  #reportedBytesDown = 0;

  constructor(endpoint: string) {
    this.endpoint = endpoint;
  }

  /** Adds what was counted since the last call to `sum` ([up, down, bytes up, bytes down]). */
  takeInto(sum: number[]): void {
    sum[0] = (sum[0] ?? 0) + this.datagramsUp - this.#reportedUp;
    sum[1] = (sum[1] ?? 0) + this.datagramsDown - this.#reportedDown;
    sum[2] = (sum[2] ?? 0) + this.bytesUp - this.#reportedBytesUp;
    sum[3] = (sum[3] ?? 0) + this.bytesDown - this.#reportedBytesDown;
    this.#reportedUp = this.datagramsUp;
    this.#reportedDown = this.datagramsDown;
    this.#reportedBytesUp = this.bytesUp;
    this.#reportedBytesDown = this.bytesDown;
  }
}

/** Counts `n` datagrams of `endpoint` dropped for being longer than `max_datagram_size`. */
export function countTooLarge(endpoint: string, n: number): void {
  datagramMetrics.dropped_total({ endpoint, reason: 'too_large' }).inc(n);
}

const live = new Set<SessionCounts>();
let timer: ReturnType<typeof setInterval> | null = null;

/** Adds `endpoint`'s sums ([up, down, bytes up, bytes down]) to the metrics. */
function report(endpoint: string, sum: readonly number[]): void {
  const [up = 0, down = 0, bytesUp = 0, bytesDown = 0] = sum;
  if (up !== 0) datagramMetrics.datagrams_total({ endpoint, direction: 'up' }).inc(up);
  if (down !== 0) datagramMetrics.datagrams_total({ endpoint, direction: 'down' }).inc(down);
  if (bytesUp !== 0) datagramMetrics.bytes_total({ endpoint, direction: 'up' }).inc(bytesUp);
  if (bytesDown !== 0) datagramMetrics.bytes_total({ endpoint, direction: 'down' }).inc(bytesDown);
}

/** Adds every open session's counts since the last report to the metrics, summed by endpoint. */
function reportLive(): void {
  const sums = new Map<string, number[]>();
  for (const c of live) {
    let sum = sums.get(c.endpoint);
    if (sum === undefined) {
      sum = [0, 0, 0, 0];
      sums.set(c.endpoint, sum);
    }
    c.takeInto(sum);
  }
  for (const [endpoint, sum] of sums) report(endpoint, sum);
}

/** An open session's counts, reported each second from now on. */
export function track(c: SessionCounts): void {
  live.add(c);
  timer ??= setInterval(reportLive, COUNTS_INTERVAL_MS).unref();
}

/** A session that ended: the rest of its counts reported, and no more. */
export function untrack(c: SessionCounts): void {
  live.delete(c);
  if (live.size === 0 && timer !== null) {
    clearInterval(timer);
    timer = null;
  }
  const sum = [0, 0, 0, 0];
  c.takeInto(sum);
  report(c.endpoint, sum);
}
