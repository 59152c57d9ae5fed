/** The TCP off-ramp's primitives: the egress CIDR blocklist and Happy Eyeballs connect. */
export { CidrBlocklist, DEFAULT_BLOCKED_CIDRS } from './blocklist.ts';
export {
  connectHappyEyeballs,
  DEFAULT_ATTEMPT_DELAY_MS,
  formatHostPort,
  type HappyEyeballsOptions,
} from './happy-eyeballs.ts';
