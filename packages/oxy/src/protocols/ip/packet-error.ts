/**
 * The one error every layer-3 parser throws: an `OxyError` (`OXY_ERR_PACKET_MALFORMED`) with a
 * stable `reason`, which is also the label of the drop counters. Callers drop the packet and
 * count the reason; nothing else may escape a parser (the fuzz tests check it).
 */
import { OXY_ERR, OxyError } from '../../errors.ts';

/** Why a packet was refused. Stable: these are metric label values. */
export type PacketDropReason =
  | 'truncated'
  | 'bad_version'
  | 'bad_header_length'
  | 'bad_total_length'
  | 'bad_checksum'
  | 'bad_options'
  | 'bad_extension_header'
  | 'too_many_extension_headers'
  | 'bad_fragment'
  | 'bad_transport_header'
  | 'bad_gue_header';

/** A packet that could not be parsed. */
export class PacketError extends OxyError {
  /** Why; a metric label value. */
  readonly reason: PacketDropReason;

  constructor(reason: PacketDropReason, message: string) {
    super(OXY_ERR.PACKET_MALFORMED, message, { source: 'downstream' });
    this.name = 'PacketError';
    this.reason = reason;
  }
}

/** True for a `PacketError` (the parse error of this layer). */
export function isPacketError(e: unknown): e is PacketError {
  return e instanceof PacketError;
}
