/**
 * A sans-IO reader of the TLS ClientHello (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2): what a
 * tunnel needs to decide before any TLS runs: the server name (SNI, RFC 6066 §3), the ALPN
 * offer (RFC 7301) and the versions offered (`supported_versions`, RFC 8446 §4.2.1).
 *
 * It reads the record layer (handshake records, a ClientHello split over several of them) and
 * the handshake message, from bytes pushed as they arrive: a read may end anywhere, even
 * inside a length field. It only peeks: the caller keeps every byte and replays them to
 * whoever terminates or forwards the TLS.
 *
 * Strict on purpose (it faces clients that may be hostile): every length must fit its
 * container exactly, a repeated extension, a malformed SNI (a character outside letters,
 * digits, `-` and `_`, an empty or over-long label, an IP literal, a trailing dot) or a
 * non-handshake record is a {@link ClientHelloError}, and no more than `maxBytes` are buffered.
 *
 * Ordering rule: feed bytes in the order read; once `push` returned `done` or threw, the
 * parser is finished and further pushes throw.
 */
import net from 'node:net';

/** What a ClientHello says that a proxy needs. */
export interface ClientHello {
  /** `legacy_version` of the ClientHello (0x0303 for TLS 1.2 and 1.3). */
  readonly legacyVersion: number;
  /** The `host_name` of the SNI extension, lower-cased; null without SNI. */
  readonly serverName: string | null;
  /** ALPN protocol ids offered, in the client's order (empty without the extension). */
  readonly alpn: readonly string[];
  /** `supported_versions` offered (0x0304 is TLS 1.3); empty without the extension. */
  readonly supportedVersions: readonly number[];
  /** Bytes of the records that carried the ClientHello (the caller replays at least these). */
  readonly length: number;
}

/** Why a ClientHello was refused (stable; counted and logged). */
export type ClientHelloFailure =
  | 'not_tls'
  | 'bad_record'
  | 'not_client_hello'
  | 'malformed'
  | 'duplicate_extension'
  | 'bad_server_name'
  | 'bad_alpn'
  | 'too_large'
  | 'truncated';

/** A ClientHello that cannot be read; `reason` says why. The only error this module throws. */
export class ClientHelloError extends Error {
  readonly reason: ClientHelloFailure;
  constructor(reason: ClientHelloFailure, detail: string) {
    super(`TLS ClientHello: ${reason}: ${detail}`);
    this.name = 'ClientHelloError';
    this.reason = reason;
  }
}

/** What {@link ClientHelloParser.push} found so far. */
export type ClientHelloProgress =
  | { readonly kind: 'need_more' }
  | { readonly kind: 'done'; readonly hello: ClientHello };

const NEED_MORE: ClientHelloProgress = Object.freeze({ kind: 'need_more' });
const RECORD_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const MAX_RECORD = 16_384; // RFC 8446 §5.1: 2^14 bytes of plaintext
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const EXT_SUPPORTED_VERSIONS = 43;

/** Default bound of the bytes buffered: a ClientHello with post-quantum key shares is ~2 KiB. */
export const DEFAULT_MAX_CLIENT_HELLO = 32 * 1024;

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * Checks an SNI `host_name` (RFC 6066 §3: a DNS name, ASCII, no trailing dot, no IP literal)
 * and returns it lower-cased, or null when it is not acceptable.
 */
export function validServerName(raw: string): string | null {
  if (raw.length === 0 || raw.length > 253) return null;
  const name = raw.toLowerCase();
  if (net.isIP(name) !== 0) return null;
  const labels = name.split('.');
  for (const label of labels) if (!LABEL.test(label)) return null;
  // An all-numeric last label would read as an IPv4 literal's tail (`1.2.3` and friends).
  if (/^[0-9]+$/.test(labels[labels.length - 1] ?? '')) return null;
  return name;
}

/** A cursor over one handshake body; every read is bounds-checked. */
class Reader {
  readonly buf: Buffer;
  pos: number;
  readonly end: number;

  constructor(buf: Buffer, pos: number, end: number) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  need(n: number, what: string): void {
    if (this.end - this.pos < n) throw new ClientHelloError('malformed', `${what} overruns its container`);
  }
  u8(what: string): number {
    this.need(1, what);
    return this.buf[this.pos++]!;
  }
  u16(what: string): number {
    this.need(2, what);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  /** A sub-reader over the next `n` bytes (skipped here). */
  sub(n: number, what: string): Reader {
    this.need(n, what);
    const r = new Reader(this.buf, this.pos, this.pos + n);
    this.pos += n;
    return r;
  }
  get left(): number {
    return this.end - this.pos;
  }
}

function parseServerName(r: Reader): string {
  const list = r.sub(r.u16('server_name_list length'), 'server_name_list');
  if (r.left !== 0) throw new ClientHelloError('malformed', 'bytes after server_name_list');
  let host: string | null = null;
  if (list.left === 0) throw new ClientHelloError('bad_server_name', 'empty server_name_list');
  while (list.left > 0) {
    const type = list.u8('name_type');
    const name = list.sub(list.u16('server name length'), 'server name');
    if (type !== 0) continue; // unknown name types are skipped (RFC 6066 §3)
    if (host !== null) throw new ClientHelloError('bad_server_name', 'two host_name entries');
    const bytes = name.buf.subarray(name.pos, name.end);
    for (const b of bytes) {
      if (b < 0x21 || b > 0x7e)
        throw new ClientHelloError('bad_server_name', 'a byte outside printable ASCII');
    }
    const checked = validServerName(bytes.toString('latin1'));
    if (checked === null) throw new ClientHelloError('bad_server_name', 'not a valid DNS name');
    host = checked;
  }
  if (host === null) throw new ClientHelloError('bad_server_name', 'no host_name entry');
  return host;
}

function parseAlpn(r: Reader): string[] {
  const list = r.sub(r.u16('protocol_name_list length'), 'protocol_name_list');
  if (r.left !== 0) throw new ClientHelloError('malformed', 'bytes after protocol_name_list');
  if (list.left === 0) throw new ClientHelloError('bad_alpn', 'empty protocol_name_list');
  const out: string[] = [];
  while (list.left > 0) {
    const n = list.u8('protocol name length');
    if (n === 0) throw new ClientHelloError('bad_alpn', 'empty protocol name');
    const p = list.sub(n, 'protocol name');
    out.push(p.buf.toString('latin1', p.pos, p.end));
  }
  return out;
}

function parseVersions(r: Reader): number[] {
  const n = r.u8('supported_versions length');
  if (n < 2 || n % 2 !== 0) throw new ClientHelloError('malformed', 'odd or empty supported_versions');
  const list = r.sub(n, 'supported_versions');
  if (r.left !== 0) throw new ClientHelloError('malformed', 'bytes after supported_versions');
  const out: number[] = [];
  while (list.left > 0) out.push(list.u16('version'));
  return out;
}

/** Reads a complete ClientHello body (after the 4-byte handshake header). */
function parseBody(body: Reader, length: number): ClientHello {
  const legacyVersion = body.u16('legacy_version');
  if (legacyVersion >> 8 !== 3) throw new ClientHelloError('malformed', 'legacy_version is not 3.x');
  body.sub(32, 'random');
  const sid = body.u8('legacy_session_id length');
  if (sid > 32) throw new ClientHelloError('malformed', 'legacy_session_id longer than 32 bytes');
  body.sub(sid, 'legacy_session_id');
  const suites = body.u16('cipher_suites length');
  if (suites < 2 || suites % 2 !== 0) throw new ClientHelloError('malformed', 'odd or empty cipher_suites');
  body.sub(suites, 'cipher_suites');
  const compression = body.u8('legacy_compression_methods length');
  if (compression < 1) throw new ClientHelloError('malformed', 'no compression method');
  body.sub(compression, 'legacy_compression_methods');
  let serverName: string | null = null;
  let alpn: string[] = [];
  let supportedVersions: number[] = [];
  if (body.left > 0) {
    const exts = body.sub(body.u16('extensions length'), 'extensions');
    const seen = new Set<number>();
    while (exts.left > 0) {
      const type = exts.u16('extension type');
      const data = exts.sub(exts.u16('extension length'), 'extension data');
      if (seen.has(type)) throw new ClientHelloError('duplicate_extension', `extension ${type} twice`);
      seen.add(type);
      if (type === EXT_SERVER_NAME) serverName = parseServerName(data);
      else if (type === EXT_ALPN) alpn = parseAlpn(data);
      else if (type === EXT_SUPPORTED_VERSIONS) supportedVersions = parseVersions(data);
    }
  }
  if (body.left !== 0) throw new ClientHelloError('malformed', 'bytes after the extensions');
  return Object.freeze({
    legacyVersion,
    serverName,
    alpn: Object.freeze(alpn),
    supportedVersions: Object.freeze(supportedVersions),
    length,
  });
}

/**
 * Reads a ClientHello from bytes pushed as they are read. `push` returns `need_more` until the
 * whole message has arrived, then `done` with what it says; it throws {@link ClientHelloError}
 * for anything that is not a well-formed ClientHello (also on more than `maxBytes`).
 */
export class ClientHelloParser {
  readonly #max: number;
  #buf: Buffer = Buffer.alloc(0);
  #finished = false;

  constructor(maxBytes = DEFAULT_MAX_CLIENT_HELLO) {
    this.#max = maxBytes;
  }

  /** Adds `chunk` (the next bytes read) and reports progress. */
  push(chunk: Buffer): ClientHelloProgress {
    if (this.#finished) throw new ClientHelloError('malformed', 'the parser has finished');
    if (this.#buf.length + chunk.length > this.#max) {
      // What is buffered may still complete within the bound: judge it first.
      const room = this.#max - this.#buf.length;
      this.#buf = Buffer.concat([this.#buf, chunk.subarray(0, room)]);
      const progress = this.#scan(true);
      this.#finished = true;
      return progress;
    }
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    try {
      const progress = this.#scan(false);
      if (progress.kind === 'done') this.#finished = true;
      return progress;
    } catch (e) {
      this.#finished = true;
      throw e;
    }
  }

  /** The peer ended its side: throws `truncated` unless a ClientHello was read. */
  end(): void {
    if (!this.#finished) {
      this.#finished = true;
      throw new ClientHelloError('truncated', `stream ended after ${this.#buf.length} bytes`);
    }
  }

  /** Walks the records buffered so far; `full` means no more bytes will come (bound reached). */
  #scan(full: boolean): ClientHelloProgress {
    const buf = this.#buf;
    const fragments: Buffer[] = [];
    let handshakeBytes = 0;
    let pos = 0;
    while (true) {
      if (buf.length - pos < 5) break;
      const type = buf[pos]!;
      if (type !== RECORD_HANDSHAKE) {
        throw new ClientHelloError(pos === 0 ? 'not_tls' : 'bad_record', `record type ${type}`);
      }
      if (buf[pos + 1] !== 3 || buf[pos + 2]! > 4)
        throw new ClientHelloError(pos === 0 ? 'not_tls' : 'bad_record', 'record version');
      const len = buf.readUInt16BE(pos + 3);
      if (len === 0 || len > MAX_RECORD) throw new ClientHelloError('bad_record', `record length ${len}`);
      if (buf.length - pos - 5 < len) break;
      fragments.push(buf.subarray(pos + 5, pos + 5 + len));
      handshakeBytes += len;
      pos += 5 + len;
      if (handshakeBytes >= 4) {
        const hs = fragments.length === 1 ? fragments[0]! : Buffer.concat(fragments);
        if (hs[0] !== HANDSHAKE_CLIENT_HELLO)
          throw new ClientHelloError('not_client_hello', `handshake type ${hs[0]}`);
        const bodyLen = hs.readUIntBE(1, 3);
        if (bodyLen + 4 + 5 > this.#max)
          throw new ClientHelloError('too_large', `ClientHello of ${bodyLen} bytes`);
        if (hs.length >= bodyLen + 4) {
          // A ClientHello must be alone in its last record (RFC 8446 §5.1 forbids interleaving,
          // and nothing may follow it before the server answers).
          if (hs.length !== bodyLen + 4)
            throw new ClientHelloError('malformed', 'bytes after the ClientHello');
          return { kind: 'done', hello: parseBody(new Reader(hs, 4, hs.length), pos) };
        }
      }
    }
    if (pos === 0 && buf.length >= 1 && buf[0] !== RECORD_HANDSHAKE) {
      throw new ClientHelloError('not_tls', `record type ${buf[0]}`);
    }
    if (full) throw new ClientHelloError('too_large', `no ClientHello within ${this.#max} bytes`);
    return NEED_MORE;
  }
}

/** Reads a ClientHello from `bytes` at once (see {@link ClientHelloParser}). */
export function parseClientHello(bytes: Buffer, maxBytes = DEFAULT_MAX_CLIENT_HELLO): ClientHelloProgress {
  return new ClientHelloParser(maxBytes).push(bytes);
}
