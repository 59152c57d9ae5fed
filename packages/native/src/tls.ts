/**
 * The JS half of tls.c: settings of Node's own TLS contexts that Node does not expose.
 *
 * A `tls.SecureContext` keeps its OpenSSL `SSL_CTX *` in `context._external`, a V8 External
 * that N-API cannot open (`napi_get_value_external` reads only externals N-API made). Node's
 * `util.inspect` prints an External's address (`[External: 5f2a1c0]`); that address is the
 * context's, and the addon calls OpenSSL on it. When Node prints anything else, nothing is
 * called and the setter reports false: the context keeps OpenSSL's default.
 */
import type tls from 'node:tls';
import { inspect } from 'node:util';
import { addon } from './addon.ts';

const EXTERNAL = /^\[External: ([0-9a-f]{1,16})\]$/;

/** The `SSL_CTX` address of `ctx`, or null when Node does not show it. */
function contextAddress(ctx: tls.SecureContext): bigint | null {
  const external = (ctx as { context?: { _external?: unknown } }).context?._external;
  if (external === undefined || external === null || typeof external !== 'object') return null;
  const m = EXTERNAL.exec(inspect(external));
  if (m === null) return null;
  const address = BigInt(`0x${m[1]}`);
  return address === 0n ? null : address;
}

/**
 * Sets how many TLS 1.3 session tickets a server sends after each full handshake on a TLS
 * socket made with `ctx` (`new tls.TLSSocket(s, { isServer: true, secureContext: ctx })`;
 * a context swapped in later by SNI keeps the first one's count). OpenSSL's default is 2.
 * Returns false, changing nothing, when the context's OpenSSL handle cannot be reached.
 */
export function setSessionTickets(ctx: tls.SecureContext, count: number): boolean {
  if (!Number.isInteger(count) || count < 0 || count > 0x7fffffff)
    throw new RangeError(`session ticket count must be an integer >= 0, got ${count}`);
  const address = contextAddress(ctx);
  return address !== null && addon.tlsSetTickets(address, count);
}
