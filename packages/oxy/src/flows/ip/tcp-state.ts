/**
 * The TCP state a flow tracker follows from the segments it sees in both directions, in the
 * manner of Linux conntrack (simplified: no sequence-window checks), with an idle timeout per
 * state. "up" is the direction of the flow's initiator.
 *
 * syn_sent → syn_received (SYN|ACK back) → established (the initiator's ACK) → fin_wait (a FIN)
 * → last_ack (the other FIN) → time_wait (the ACK of the second FIN); a RST from any state →
 * closed. A flow picked up mid-stream (first packet not a SYN) starts established.
 */
import { TCP_FLAG } from '../../protocols/tcp/header.ts';

/** TCP states of a flow. */
export type TcpFlowState =
  | 'syn_sent'
  | 'syn_received'
  | 'established'
  | 'fin_wait'
  | 'last_ack'
  | 'time_wait'
  | 'closed';

/** Idle timeouts per TCP state, in ms. */
export type TcpTimeouts = Readonly<Record<TcpFlowState, number>>;

/** Defaults close to Linux conntrack's (established shortened from 5 days to 2 hours). */
export const DEFAULT_TCP_TIMEOUTS: TcpTimeouts = {
  syn_sent: 120_000,
  syn_received: 60_000,
  established: 7_200_000,
  fin_wait: 120_000,
  last_ack: 30_000,
  time_wait: 120_000,
  closed: 10_000,
};

/** What the state machine keeps per flow besides the state. */
export interface TcpTrack {
  state: TcpFlowState;
  /** Direction of the first FIN: 0 none, 1 up, 2 down. */
  firstFin: 0 | 1 | 2;
}

/** The state after a segment with `flags` in direction `up`; mutates `t`. */
export function advanceTcp(t: TcpTrack, flags: number, up: boolean): void {
  if (flags & TCP_FLAG.RST) {
    t.state = 'closed';
    return;
  }
  const fin = (flags & TCP_FLAG.FIN) !== 0;
  const ack = (flags & TCP_FLAG.ACK) !== 0;
  const syn = (flags & TCP_FLAG.SYN) !== 0;
  switch (t.state) {
    case 'syn_sent':
      if (!up && syn && ack) t.state = 'syn_received';
      break;
    case 'syn_received':
      if (up && ack && !syn) t.state = 'established';
      break;
    case 'established':
      break;
    case 'fin_wait':
      if (fin && (up ? 1 : 2) !== t.firstFin) t.state = 'last_ack';
      return;
    case 'last_ack':
      if (ack && !fin && (up ? 1 : 2) === t.firstFin) t.state = 'time_wait';
      return;
    default:
      return;
  }
  if (fin) {
    t.firstFin = up ? 1 : 2;
    t.state = 'fin_wait';
  }
}

/** Whether a SYN in direction up on a flow in this state starts a new connection (port reuse). */
export function isReopen(state: TcpFlowState, flags: number, up: boolean): boolean {
  return (
    up &&
    (flags & (TCP_FLAG.SYN | TCP_FLAG.ACK)) === TCP_FLAG.SYN &&
    (state === 'time_wait' || state === 'closed')
  );
}
