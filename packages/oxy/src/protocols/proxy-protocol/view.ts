/**
 * A JSON-friendly view of a decoded header, for audit records and logs: addresses as
 * `host:port` strings, TLVs by name. Bytes are hex; a UNIQUE_ID is its text when it is printable
 * US-ASCII (haproxy's unique ids are), else `hex:` and its hex. Building the view costs a few
 * small objects, so it is made when a record is written, never on the data path.
 */
import { formatSocketAddr } from './ip.ts';
import { PP2_CLIENT, type ProxyHeader, type ProxyTlv } from './types.ts';

/** The SSL TLV as the view shows it. */
export interface ProxySslView {
  readonly client_ssl: boolean;
  readonly client_cert_conn: boolean;
  readonly client_cert_sess: boolean;
  /**
   * A client certificate was presented (`client_cert_conn` or `client_cert_sess`) and verified
   * (`verify === 0`). haproxy sends `verify` 0 when the client sent no certificate at all, so
   * `verify` alone does not say that a certificate was checked.
   */
  readonly verified: boolean;
  readonly verify: number;
  readonly version?: string;
  readonly cn?: string;
  readonly cipher?: string;
  readonly sig_alg?: string;
  readonly key_alg?: string;
  readonly group?: string;
  readonly sig_scheme?: string;
  /** Hex of the DER certificate. */
  readonly client_cert?: string;
}

/** The TLVs by name. Types that may repeat (ALPN, AUTHORITY, unknown) keep the first; unknown ones are a list. */
export interface ProxyTlvsView {
  readonly alpn?: string;
  readonly authority?: string;
  /** `0x` and 8 hex digits (the header was verified against it). */
  readonly crc32c?: string;
  /** How many NOOP TLVs there were. */
  readonly noop?: number;
  readonly unique_id?: string;
  readonly ssl?: ProxySslView;
  readonly netns?: string;
  readonly unknown?: readonly { readonly type: number; readonly value: string }[];
}

/** The JSON view of a header. */
export interface ProxyHeaderView {
  readonly version: 1 | 2 | 'spp';
  readonly command: 'local' | 'proxy';
  readonly family: string;
  readonly transport: string;
  /** `host:port` (`[v6]:port`), a UNIX path, or `null` when the header carries no addresses. */
  readonly source: string | null;
  readonly destination: string | null;
  readonly tlvs: ProxyTlvsView;
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

function uniqueIdText(bytes: Uint8Array): string {
  for (const b of bytes) if (b < 0x20 || b > 0x7e) return `hex:${hex(bytes)}`;
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

function sslView(t: Extract<ProxyTlv, { type: 'ssl' }>): ProxySslView {
  const v: Record<string, unknown> = {
    client_ssl: (t.client & PP2_CLIENT.SSL) !== 0,
    client_cert_conn: (t.client & PP2_CLIENT.CERT_CONN) !== 0,
    client_cert_sess: (t.client & PP2_CLIENT.CERT_SESS) !== 0,
    verified: t.verify === 0 && (t.client & (PP2_CLIENT.CERT_CONN | PP2_CLIENT.CERT_SESS)) !== 0,
    verify: t.verify,
  };
  const pairs = [
    ['version', t.version],
    ['cn', t.cn],
    ['cipher', t.cipher],
    ['sig_alg', t.sigAlg],
    ['key_alg', t.keyAlg],
    ['group', t.group],
    ['sig_scheme', t.sigScheme],
  ] as const;
  for (const [k, val] of pairs) if (val !== undefined) v[k] = val;
  if (t.clientCert !== undefined) v['client_cert'] = hex(t.clientCert);
  return v as unknown as ProxySslView;
}

/** The TLVs of a header by name (see {@link ProxyTlvsView}). */
export function proxyTlvsView(tlvs: readonly ProxyTlv[]): ProxyTlvsView {
  const v: Record<string, unknown> = {};
  const unknown: { type: number; value: string }[] = [];
  let noop = 0;
  for (const t of tlvs) {
    switch (t.type) {
      case 'alpn':
      case 'authority':
      case 'netns':
        v[t.type] ??= t.value;
        break;
      case 'crc32c':
        v['crc32c'] = `0x${t.value.toString(16).padStart(8, '0')}`;
        break;
      case 'noop':
        noop++;
        break;
      case 'unique_id':
        v['unique_id'] ??= uniqueIdText(t.value);
        break;
      case 'ssl':
        v['ssl'] ??= sslView(t);
        break;
      case 'unknown':
        unknown.push({ type: t.code, value: hex(t.value) });
        break;
    }
  }
  if (noop > 0) v['noop'] = noop;
  if (unknown.length > 0) v['unknown'] = unknown;
  return v as ProxyTlvsView;
}

/** The JSON view of a header, for an audit record's `proxy_protocol` field. */
export function proxyHeaderView(header: ProxyHeader): ProxyHeaderView {
  const a = header.addresses;
  let source: string | null = null;
  let destination: string | null = null;
  if (a !== null && a.family === 'unix') {
    source = a.source;
    destination = a.destination;
  } else if (a !== null) {
    source = formatSocketAddr(a.source.host, a.source.port);
    destination = formatSocketAddr(a.destination.host, a.destination.port);
  }
  return {
    version: header.version,
    command: header.command,
    family: header.family,
    transport: header.transport,
    source,
    destination,
    tlvs: proxyTlvsView(header.tlvs),
  };
}
