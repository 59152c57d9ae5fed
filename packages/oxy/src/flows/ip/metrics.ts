/**
 * Metrics of the layer-3 pipeline: flows by protocol, flow ends by reason, packets refused by
 * reason, NAT slots. Kept apart from `telemetry/metrics.ts` so this layer can be merged and
 * removed as a whole; the names follow its groups (`<service>_ip_flows_active`, …).
 *
 * Hot-path rule: the tracker and the NAT cache their handles per label value at construction;
 * nothing here is touched per packet except a drop counter on a refused packet.
 */
import { counter, defineMetrics, gauge } from 'foundations/telemetry';

/** IP flows seen by flow trackers (`tracker` names the tracker: a tunnel endpoint). */
export const ipFlowMetrics = defineMetrics('ip_flows', {
  active: gauge<{ tracker: string; protocol: string }>('IP flows tracked now.'),
  created_total: counter<{ tracker: string; protocol: string }>('IP flows created.'),
  ended_total: counter<{ tracker: string; reason: string }>(
    'IP flows ended, by reason (idle, closed, reset, evicted, removed, shutdown).',
  ),
  bytes_total: counter<{ tracker: string; direction: 'up' | 'down' }>(
    'IP bytes of ended flows: up = from the flow initiator, down = replies. Counted at flow end.',
  ),
  packets_untracked_total: counter<{ tracker: string; reason: string }>(
    'Packets the tracker did not attach to a flow (malformed, fragment, table full, unmatched ICMP error, ...).',
  ),
});

/** IP fragment reassembly (`protocols/ip/reassembly.ts`). */
export const ipFragmentMetrics = defineMetrics('ip_fragments', {
  reassembled_total: counter<{ reassembler: string }>('Datagrams reassembled from fragments.'),
  dropped_total: counter<{ reassembler: string; reason: string }>(
    'Fragments dropped, by reason (timeout, overlap, too_big, too_many_fragments, over_limit, inconsistent).',
  ),
});

/** The userspace NAT of the IP→TCP upgrade. */
export const ipNatMetrics = defineMetrics('ip_nat', {
  mappings_active: gauge<{ nat: string }>('NAT mappings held now.'),
  mappings_total: counter<{ nat: string }>('NAT mappings created.'),
  mappings_refused_total: counter<{ nat: string; reason: string }>(
    'Flows that could not get a NAT mapping (pool exhausted, table full, other family).',
  ),
});

/** The IP pipeline of tunnels (`flows/ip/pipeline.ts`), by endpoint. */
export const ipPipelineMetrics = defineMetrics('ip_pipeline', {
  tunnels_active: gauge<{ endpoint: string }>('IP tunnels open now.'),
  tunnels_total: counter<{ endpoint: string }>('IP tunnels opened (refused ones included).'),
  packets_total: counter<{ endpoint: string; direction: 'up' | 'down' }>(
    'IP packets through tunnels: up = from clients, down = sent to clients (counted per flow end and per drop, not per packet).',
  ),
  packets_dropped_total: counter<{ endpoint: string; reason: string }>(
    'IP packets dropped, by reason (malformed: the parser reason; no_flow, protocol, rejected, a hook reason, ...).',
  ),
  flows_decided_total: counter<{ endpoint: string; decision: string }>(
    'Flow decisions: upgrade, redirect, forward, drop, reject.',
  ),
  icmp_sent_total: counter<{ endpoint: string; kind: string }>(
    'ICMP messages and TCP resets Oxy generated for clients: echo_reply, unreachable, time_exceeded, too_big, tcp_reset.',
  ),
});
