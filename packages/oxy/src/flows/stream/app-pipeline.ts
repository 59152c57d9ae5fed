/**
 * A tunnel the app carries itself (`TunnelHook.getAppTunnelPipeline`), held to the same limits
 * and counts as one Oxy's pump or splice carries: `tunnel_idle_timeout` and
 * `tunnel_max_lifetime` close both sides, the bytes are counted, and an error on either side is
 * the close reason.
 *
 * The app owns both streams' reading, so nothing here reads or listens for data (a `data`
 * listener would start a stream the app has not started reading). The counts are the
 * upstream's socket counters since the pipeline began: bytes written to the upstream are the
 * tunnel's bytes up, bytes read from it its bytes down (what the app sent and received there,
 * after any rewriting). The idle check compares those counters, and the client's when it is a
 * socket, when it fires, as the pump does: no timer is touched per chunk.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { OXY_ERR } from '../../errors.ts';
import type { AppTunnelPipeline } from '../../hooks/tunnel.ts';
import type { PumpOptions } from './pump.ts';

/** What an app pipeline's tunnel reports at the end. */
export interface AppPipelineResult {
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly reason: string;
  /** What the pipeline threw, if it did. */
  readonly thrown: unknown;
}

/** Byte counters of a side, when it is a socket (an HTTP/2 stream has none of its own). */
function counters(side: Duplex): (() => number) | null {
  return side instanceof net.Socket ? () => side.bytesRead + side.bytesWritten : null;
}

/** Runs `pipeline` between the two sides under the endpoint's limits; destroys both at the end. */
export async function runAppPipeline(
  pipeline: AppTunnelPipeline,
  client: Duplex,
  upstream: Duplex,
  options: PumpOptions,
): Promise<AppPipelineResult> {
  const up = upstream instanceof net.Socket ? upstream : null;
  const written0 = up?.bytesWritten ?? 0;
  const read0 = up?.bytesRead ?? 0;
  const sides = [counters(client), counters(upstream)].filter((c) => c !== null);
  const activity = () => sides.reduce((n, c) => n + c(), 0);
  let reason: string | undefined;
  const close = (why: string) => {
    reason ??= why;
    client.destroy();
    upstream.destroy();
  };
  const onClientError = () => {
    reason ??= 'client_error';
  };
  const onUpstreamError = () => {
    reason ??= 'upstream_error';
  };
  client.on('error', onClientError);
  upstream.on('error', onUpstreamError);
  let last = activity();
  const idle =
    options.idleTimeoutMs > 0 && sides.length > 0
      ? setInterval(() => {
          const now = activity();
          if (now === last) close('idle_timeout');
          last = now;
        }, options.idleTimeoutMs).unref()
      : undefined;
  const life =
    options.maxLifetimeMs > 0
      ? setTimeout(() => close('max_lifetime'), options.maxLifetimeMs).unref()
      : undefined;
  let thrown: unknown;
  try {
    await pipeline(client, upstream);
  } catch (e) {
    thrown = e;
    reason ??= OXY_ERR.HOOK_FAILED;
  } finally {
    clearInterval(idle);
    clearTimeout(life);
  }
  client.destroy();
  upstream.destroy();
  return {
    bytesUp: up === null ? 0 : up.bytesWritten - written0,
    bytesDown: up === null ? 0 : up.bytesRead - read0,
    reason: reason ?? 'done',
    thrown,
  };
}
