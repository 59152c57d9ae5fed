/**
 * An HPACK decoder (RFC 7541), sans-IO: header block bytes in, fields out, with the dynamic
 * table kept exactly as the peer's encoder keeps it. It exists so the HTTP/2 on-ramp can see a
 * request's fields as the client sent them: nghttp2 (through Node) drops a field whose value
 * carries CR, LF or NUL before JavaScript sees the request, where RFC 9113 §8.2.1 wants the
 * request refused as malformed (`onramps/http2/field-guard.ts`).
 *
 * Ordering rules: every header block of a connection goes through one decoder, in the order
 * the frames arrived, including blocks of streams that are refused (the table changes anyway).
 * A dynamic table size update is accepted only before the first field of a block (§4.2) and
 * never above the limit the server advertised (SETTINGS_HEADER_TABLE_SIZE). `decodeSome` may
 * stop inside a representation when the bytes end there; the caller keeps the rest and calls
 * again with more, so a block split over CONTINUATION frames never needs to be whole in memory.
 * Strings longer than {@link MAX_STRING} are refused, as nghttp2 refuses them.
 */
import { OXY_ERR, OxyError } from '../../errors.ts';
import { HUFFMAN_CODES, HUFFMAN_LENGTHS, STATIC_TABLE } from './tables.ts';

/** Longest name or value accepted (nghttp2's limit, so both refuse the same blocks). */
export const MAX_STRING = 65_536;

/** A decoded field; name and value are latin1 strings (one char per octet). */
export interface HpackField {
  readonly name: string;
  readonly value: string;
}

function malformed(message: string): OxyError {
  return new OxyError(OXY_ERR.HPACK_MALFORMED, message, { source: 'downstream' });
}

// The Huffman code as a binary trie: children of node n at [2n] (bit 0) and [2n+1] (bit 1); a
// child below zero is the leaf of symbol -(child + 1); zero is "no child" (the root is node 0).
const TRIE = ((): Int32Array => {
  const t = new Int32Array(2 * 512);
  let nodes = 1;
  for (let sym = 0; sym < HUFFMAN_CODES.length; sym++) {
    const code = HUFFMAN_CODES[sym] as number;
    const len = HUFFMAN_LENGTHS[sym] as number;
    let n = 0;
    for (let i = len - 1; i > 0; i--) {
      const slot = 2 * n + ((code >>> i) & 1);
      if (t[slot] === 0) t[slot] = nodes++;
      n = t[slot] as number;
    }
    t[2 * n + (code & 1)] = -(sym + 1);
  }
  return t;
})();
const EOS = 256;

/** Decodes Huffman-coded `bytes` (RFC 7541 §5.2); throws on EOS, bad padding or over-long padding. */
export function huffmanDecode(bytes: Uint8Array): Buffer {
  // Each symbol takes at least 5 bits, so 8/5 of the input bounds the output.
  const out = Buffer.allocUnsafe(Math.ceil((bytes.length * 8) / 5));
  let len = 0;
  let n = 0;
  let depth = 0;
  let ones = true;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i] as number;
    for (let bit = 7; bit >= 0; bit--) {
      const v = (b >>> bit) & 1;
      const child = TRIE[2 * n + v] as number;
      if (child < 0) {
        const sym = -child - 1;
        if (sym === EOS) throw malformed('HPACK: EOS inside a Huffman string');
        out[len++] = sym;
        n = 0;
        depth = 0;
        ones = true;
      } else {
        n = child;
        depth++;
        if (v === 0) ones = false;
      }
    }
  }
  // Padding: fewer than 8 bits, all ones (the most significant bits of EOS).
  if (depth > 7 || !ones) throw malformed('HPACK: bad Huffman padding');
  return out.subarray(0, len);
}

/** The result of reading a prefixed integer: value and the offset after it, or null when truncated. */
function readInt(buf: Uint8Array, at: number, prefixBits: number): [number, number] | null {
  const max = (1 << prefixBits) - 1;
  let value = (buf[at] as number) & max;
  let i = at + 1;
  if (value < max) return [value, i];
  let shift = 0;
  for (;;) {
    if (i >= buf.length) return null;
    const b = buf[i++] as number;
    value += (b & 0x7f) * 2 ** shift;
    shift += 7;
    if ((b & 0x80) === 0) break;
    // Nothing here needs more than 2^32: longer integers are an attack or a broken encoder.
    if (shift > 28) throw malformed('HPACK: integer too large');
  }
  if (value > 0xffffffff) throw malformed('HPACK: integer too large');
  return [value, i];
}

/** A string literal at `at`: its octets as latin1 and the offset after it, or null when truncated. */
function readString(buf: Uint8Array, at: number): [string, number] | null {
  if (at >= buf.length) return null;
  const huffman = ((buf[at] as number) & 0x80) !== 0;
  const r = readInt(buf, at, 7);
  if (r === null) return null;
  const [len, start] = r;
  // A Huffman string decodes to at most 8/5 of its length, a raw one to its length.
  if (len > MAX_STRING * (huffman ? 2 : 1)) throw malformed('HPACK: string too long');
  if (start + len > buf.length) return null;
  const raw = buf.subarray(start, start + len);
  const octets = huffman ? huffmanDecode(raw) : raw;
  if (octets.length > MAX_STRING) throw malformed('HPACK: string too long');
  return [Buffer.from(octets.buffer, octets.byteOffset, octets.length).toString('latin1'), start + len];
}

/** The HPACK decoding context of one direction of one connection. */
export class HpackDecoder {
  /** Dynamic table, oldest first (index 62 is the last element). */
  readonly #table: HpackField[] = [];
  #size = 0;
  #maxSize: number;
  readonly #limit: number;
  #fieldsInBlock = 0;

  /** `limit` is the SETTINGS_HEADER_TABLE_SIZE this side advertised (4096 unless changed). */
  constructor(limit = 4096) {
    this.#limit = limit;
    this.#maxSize = limit;
  }

  /** The dynamic table's size in the RFC's accounting (name + value + 32 per entry). */
  get tableSize(): number {
    return this.#size;
  }

  /** The dynamic table's entries, newest first (index 62 first), for tests and diagnostics. */
  get dynamicTable(): readonly HpackField[] {
    return [...this.#table].reverse();
  }

  /**
   * Decodes the complete representations at the start of `buf`, calling `onField` for each,
   * and returns how many bytes it used; the rest (a representation cut by the end of `buf`)
   * must be given again, followed by more bytes. Throws `OXY_ERR_HPACK_MALFORMED` for a
   * representation no encoder may send; the connection's HPACK state is then unusable.
   */
  decodeSome(buf: Uint8Array, onField: (field: HpackField) => void): number {
    let at = 0;
    while (at < buf.length) {
      const b = buf[at] as number;
      let next: number;
      if (b & 0x80) {
        // Indexed field (§6.1).
        const r = readInt(buf, at, 7);
        if (r === null) break;
        onField(this.#get(r[0]));
        next = r[1];
      } else if ((b & 0xe0) === 0x20) {
        // Dynamic table size update (§6.3), only before the block's first field.
        const r = readInt(buf, at, 5);
        if (r === null) break;
        if (this.#fieldsInBlock > 0) throw malformed('HPACK: table size update after a field');
        if (r[0] > this.#limit) throw malformed('HPACK: table size update above the advertised limit');
        this.#maxSize = r[0];
        this.#evict(0);
        at = r[1];
        continue;
      } else {
        // Literal with incremental indexing (§6.2.1, 6-bit index), or without / never indexed
        // (§6.2.2, §6.2.3, 4-bit index).
        const indexing = (b & 0xc0) === 0x40;
        const r = readInt(buf, at, indexing ? 6 : 4);
        if (r === null) break;
        let name: string;
        let p = r[1];
        if (r[0] === 0) {
          const s = readString(buf, p);
          if (s === null) break;
          [name, p] = s;
        } else {
          name = this.#get(r[0]).name;
        }
        const v = readString(buf, p);
        if (v === null) break;
        const field = { name, value: v[0] };
        if (indexing) this.#add(field);
        onField(field);
        next = v[1];
      }
      this.#fieldsInBlock++;
      at = next;
    }
    return at;
  }

  /** Ends the current header block (the next one may start with a table size update). */
  endBlock(): void {
    this.#fieldsInBlock = 0;
  }

  /** Decodes one whole header block; throws when it ends inside a representation. */
  decode(block: Uint8Array): HpackField[] {
    const fields: HpackField[] = [];
    const used = this.decodeSome(block, (f) => fields.push(f));
    this.endBlock();
    if (used !== block.length) throw malformed('HPACK: header block ends inside a field');
    return fields;
  }

  #get(index: number): HpackField {
    if (index === 0) throw malformed('HPACK: index 0');
    if (index <= STATIC_TABLE.length) {
      const [name, value] = STATIC_TABLE[index - 1] as readonly [string, string];
      return { name, value };
    }
    const field = this.#table[this.#table.length - 1 - (index - STATIC_TABLE.length - 1)];
    if (field === undefined) throw malformed(`HPACK: index ${index} beyond the tables`);
    return field;
  }

  #add(field: HpackField): void {
    const size = field.name.length + field.value.length + 32;
    // An entry larger than the table empties it and is not added (§4.4).
    this.#evict(size);
    if (size <= this.#maxSize) {
      this.#table.push(field);
      this.#size += size;
    }
  }

  /** Evicts oldest entries until `room` more bytes fit (or the table is empty). */
  #evict(room: number): void {
    while (this.#size + room > this.#maxSize && this.#table.length > 0) {
      const old = this.#table.shift() as HpackField;
      this.#size -= old.name.length + old.value.length + 32;
    }
  }
}
