/**
 * The checks of a `udp` endpoint's `udp` keys beyond their schema (a size and a duration
 * helper have no range): what would fail or misbehave once the endpoint runs. The settings
 * checks (`settings-check.ts`, so `--check`, `--restart` and a start) and the on-ramp itself
 * (an app started without the CLI) call the same functions, so both name the same key.
 */
import type { SettingsProblem } from 'foundations/settings';
import { OXY_ERR, OxyError } from '../../errors.ts';
import type { UdpEndpointSettings } from '../../settings.ts';

/**
 * The largest `udp.max_datagram_size`: what one read of the endpoint's socket can hold (a UDP
 * payload over IPv6 is at most 65,527 bytes, over IPv4 65,507; a PROXY header counts in it).
 */
export const MAX_DATAGRAM_SIZE = 65535;

/** The problems of endpoint `name`'s `udp` keys that a start would refuse. */
export function udpSettingsProblems(name: string, ep: UdpEndpointSettings): SettingsProblem[] {
  const where = `endpoints.${name}.udp`;
  const problems: SettingsProblem[] = [];
  const size = ep.udp.max_datagram_size;
  if (!Number.isInteger(size) || size < 1 || size > MAX_DATAGRAM_SIZE)
    problems.push({
      path: `${where}.max_datagram_size`,
      message: `expected a size from 1B to ${MAX_DATAGRAM_SIZE}B (the largest UDP datagram), got ${size}B`,
    });
  if (!(ep.udp.idle_timeout > 0))
    problems.push({
      path: `${where}.idle_timeout`,
      message: `expected a duration above 0s (a session ends after this long without a datagram), got ${ep.udp.idle_timeout / 1000}s`,
    });
  return problems;
}

/** Throws the first of {@link udpSettingsProblems} as a start-up error naming its key (`OXY_ERR_LISTEN`). */
export function assertUdpSettings(name: string, ep: UdpEndpointSettings): void {
  const p = udpSettingsProblems(name, ep)[0];
  if (p !== undefined) throw new OxyError(OXY_ERR.LISTEN, `${p.path}: ${p.message}`);
}
