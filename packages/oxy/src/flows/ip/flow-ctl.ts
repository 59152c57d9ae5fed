/**
 * What the IP pipeline keeps per flow (`IpFlow.data`) and the small steps around it that do not
 * depend on the tunnel: the flow view hooks get, the tracker's options from settings, the
 * gateway echo test, `handlePacket`'s verdict applied (with the checksums fixed after a
 * rewrite), and `handleFlowEnd`'s counts. Kept apart so `pipeline.ts` reads as the packet path.
 */
import type { SocketAddr } from '../../context/contexts.ts';
import type { IngressConnection } from '../../context/state.ts';
import type { IpDirection, IpFlowEndInfo, IpFlowView } from '../../hooks/ip.ts';
import type { ResolvedHooks } from '../../hooks/run.ts';
import type { IpTunnelSettings } from '../../onramps/ip-tunnel/settings.ts';
import { ICMP4, ICMP6 } from '../../protocols/icmp/icmp.ts';
import { fillChecksums } from '../../protocols/ip/l4-checksum.ts';
import { IP_PROTO, type IpPacket, parseIp } from '../../protocols/ip/packet.ts';
import { isPacketError } from '../../protocols/ip/packet-error.ts';
import type { Runtime } from '../../runtime.ts';
import { inConnectionContext } from '../../telemetry/fork.ts';
import type { DatagramSession } from '../datagram/session.ts';
import type { FlowEndReason, FlowTrackerOptions, IpFlow } from './flow-tracker.ts';

/** Where a flow's packets go: held (`deciding`, `starting`), or its way out. */
export type Way = 'deciding' | 'starting' | 'tcp' | 'udp' | 'forward' | 'drop' | 'reject';

/** The pipeline's state of one flow (`IpFlow.data`). */
export interface FlowCtl {
  readonly flow: IpFlow;
  readonly view: IpFlowView;
  way: Way;
  /** The decision's kind, for `handleFlowEnd` and metrics. */
  decision: string;
  /** Why packets are dropped or refused (`drop`, `reject`). */
  reason: string;
  redirect: SocketAddr | null;
  session: DatagramSession | null;
  pending: IpPacket[] | null;
}

const PROTOCOL_NAME: Readonly<Record<number, IpFlowView['protocol']>> = {
  [IP_PROTO.TCP]: 'tcp',
  [IP_PROTO.UDP]: 'udp',
  [IP_PROTO.ICMP]: 'icmp',
  [IP_PROTO.ICMPV6]: 'icmp',
};

/** The state of a new flow, `deciding`, with the view its hooks get; attached to the flow. */
export function newFlowCtl(flow: IpFlow): FlowCtl {
  const c: FlowCtl = {
    flow,
    view: {
      id: flow.id,
      version: flow.version,
      protocol: PROTOCOL_NAME[flow.protocol] ?? 'other',
      protocolNumber: flow.protocol,
      src: { host: flow.srcAddress, port: flow.srcPort },
      dst: { host: flow.dstAddress, port: flow.dstPort },
    },
    way: 'deciding',
    decision: 'deciding',
    reason: '',
    redirect: null,
    session: null,
    pending: null,
  };
  flow.data = c;
  return c;
}

/** A flow tracker's options from `endpoints.<name>.ip`. */
export function trackerOptions(name: string, ip: IpTunnelSettings): FlowTrackerOptions {
  const transitory = ip.tcp_transitory_timeout;
  return {
    name,
    maxFlows: ip.max_flows,
    tcpTimeouts: {
      established: ip.tcp_established_timeout,
      syn_sent: transitory,
      fin_wait: transitory,
      time_wait: transitory,
    },
    udpTimeouts: { replied: ip.udp_timeout, unreplied: Math.max(10_000, ip.udp_timeout / 6) },
    icmpTimeout: ip.icmp_timeout,
  };
}

/** Whether `p` is an ICMP or ICMPv6 echo request to `gw4` or `gw6`. */
export function isEchoTo(p: IpPacket, gw4: Buffer, gw6: Buffer): boolean {
  const v4 = p.version === 4;
  if (p.protocol !== (v4 ? IP_PROTO.ICMP : IP_PROTO.ICMPV6) || p.buf.length < p.l4Offset + 8) return false;
  if (p.buf[p.l4Offset] !== (v4 ? ICMP4.ECHO_REQUEST : ICMP6.ECHO_REQUEST)) return false;
  const gw = v4 ? gw4 : gw6;
  return gw.length === p.addrLength && gw.equals(p.buf.subarray(p.dstOffset, p.dstOffset + p.addrLength));
}

/**
 * Runs `handlePacket` on `p` and applies its verdict: the packet to carry on with (re-read and
 * its checksums fixed after `rewritten`), or null when it is dropped (`drop` is told why). A
 * throw or an unknown verdict drops the packet (fails closed), logged and counted.
 */
export function applyPacketHook(
  rt: Runtime,
  hook: NonNullable<ResolvedHooks['ipPacket']>,
  conn: IngressConnection,
  c: FlowCtl,
  p: IpPacket,
  direction: IpDirection,
  drop: (reason: string) => void,
): IpPacket | null {
  let v: ReturnType<typeof hook>;
  try {
    v = hook(p.buf, direction, c.view, conn);
  } catch (e) {
    inConnectionContext(conn, () => rt.hookFailed('IpFlowHook.handlePacket', e));
    drop('hook_failed');
    return null;
  }
  if (v === undefined) return p;
  // From plain JavaScript or a cast, anything may come back (null too): only a known verdict is
  // carried out; anything else fails closed below, never a TypeError outside the hook's try.
  if (typeof v === 'object' && v !== null) {
    if (v.kind === 'pass') return p;
    if (v.kind === 'drop') {
      drop(typeof v.reason === 'string' ? v.reason : 'hook');
      return null;
    }
    if (v.kind === 'rewritten') {
      try {
        const q = parseIp(p.buf, { verifyChecksum: false });
        fillChecksums(q);
        return q;
      } catch (e) {
        drop(isPacketError(e) ? e.reason : 'malformed');
        return null;
      }
    }
  }
  inConnectionContext(conn, () =>
    rt.hookFailed('IpFlowHook.handlePacket', new TypeError('unknown IP packet verdict')),
  );
  drop('hook_failed');
  return null;
}

/** `handleFlowEnd`'s counts of a flow that just ended. */
export function flowEndInfo(c: FlowCtl, reason: FlowEndReason): IpFlowEndInfo {
  const f = c.flow;
  return {
    decision: c.decision,
    reason,
    packetsUp: f.packetsUp,
    bytesUp: f.bytesUp,
    packetsDown: f.packetsDown,
    bytesDown: f.bytesDown,
    durationMs: Date.now() - f.createdAt,
  };
}
