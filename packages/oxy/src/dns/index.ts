/** Host name resolution for egress: the resolver, its settings, and the RFC 8305 ordering. */
export {
  DnsResolver,
  type DnsResolverEvents,
  type DnsResolverOptions,
  interleave,
  type ResolvedAddresses,
  type ResolveOptions,
} from './resolver.ts';
export { DnsSettings } from './settings.ts';
