/**
 * A small authoritative DNS server on 127.0.0.1 for tests: it answers A and AAAA queries from
 * an in-memory table with the TTLs the test chose, says NXDOMAIN for unknown names, and can be
 * switched to SERVFAIL, REFUSED or silence (to make the client time out). It counts queries per
 * name so a test can tell a cache hit (no query) from a miss.
 *
 * It serves UDP and, on the same port, TCP (length-prefixed, RFC 1035 §4.2.2); an answer too
 * large for UDP is truncated (TC set) so the client retries over TCP, as a real server does.
 * Records are mutable while it runs.
 */

import dgram from 'node:dgram';
import net from 'node:net';
import {
  DNS_CLASS_IN,
  DNS_RCODE,
  DNS_TYPE,
  type DnsRecord,
  decodeDnsMessage,
  encodeDnsMessage,
} from '../protocols/dns/codec.ts';

/** The addresses served for one name. `ttl` is in seconds (default 60). */
export interface DnsTestRecord {
  A?: string[];
  AAAA?: string[];
  ttl?: number;
}

/**
 * How the server misbehaves: `none` answers normally, `servfail` and `refused` answer with that
 * rcode, `silent` drops every query (the client times out).
 */
export type DnsFailMode = 'none' | 'servfail' | 'refused' | 'silent';

/** One query the server received: the name, `A`/`AAAA` or the type number, and how it came. */
export interface DnsQueryLogEntry {
  readonly name: string;
  readonly type: string;
  readonly transport: 'udp' | 'tcp';
}

/** Options of `startDnsServer`. Names are matched case-insensitively, without a trailing dot. */
export interface DnsServerOptions {
  records?: Record<string, DnsTestRecord>;
  /** Names answered NXDOMAIN. Every name absent from `records` is NXDOMAIN anyway. */
  nxdomain?: string[];
  failMode?: DnsFailMode;
  /** Delay before each answer, in ms (default 0). */
  delayMs?: number;
}

/** A running test DNS server. */
export interface TestDnsServer {
  /** `"127.0.0.1:port"`, the form `dns.Resolver#setServers` and `egress.dns.nameservers` take. */
  readonly address: string;
  readonly port: number;
  /** The served table; edit it freely (keys in lower case). */
  readonly records: Map<string, DnsTestRecord>;
  /** Names forced to NXDOMAIN even when in `records`. */
  readonly nxdomain: Set<string>;
  failMode: DnsFailMode;
  delayMs: number;
  /** Sets the record for a name (replacing any previous one). */
  setRecord(name: string, record: DnsTestRecord): void;
  /** Queries received for `name` (any type), or for all names when omitted, since the start or the last `resetCounts()`. */
  queries(name?: string): number;
  /** Every query received, in order. */
  readonly log: DnsQueryLogEntry[];
  resetCounts(): void;
  close(): Promise<void>;
}

const normalise = (name: string): string => (name.endsWith('.') ? name.slice(0, -1) : name).toLowerCase();

/** Starts the server on 127.0.0.1, port chosen by the kernel. Close it in `after()`. */
export async function startDnsServer(options: DnsServerOptions = {}): Promise<TestDnsServer> {
  let udp = dgram.createSocket('udp4');
  const tcp = net.createServer();
  const sockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const records = new Map(Object.entries(options.records ?? {}).map(([k, v]) => [normalise(k), v]));
  const log: DnsQueryLogEntry[] = [];

  const answer = (query: Uint8Array, transport: 'udp' | 'tcp'): Buffer | null => {
    let msg: ReturnType<typeof decodeDnsMessage>;
    try {
      msg = decodeDnsMessage(query);
    } catch {
      // Boundary: a test server answers garbage with FORMERR when it can read the id, else drops it.
      if (query.length < 2) return null;
      const id = (query[0] as number) * 256 + (query[1] as number);
      return reply(id, false, [], [], DNS_RCODE.FORMERR);
    }
    const q = msg.questions[0];
    if (q === undefined) return reply(msg.header.id, msg.header.rd, [], [], DNS_RCODE.FORMERR);
    const name = normalise(q.name);
    log.push({
      name,
      type: q.type === DNS_TYPE.A ? 'A' : q.type === DNS_TYPE.AAAA ? 'AAAA' : String(q.type),
      transport,
    });
    if (server.failMode === 'silent') return null;
    if (server.failMode === 'servfail')
      return reply(msg.header.id, msg.header.rd, msg.questions, [], DNS_RCODE.SERVFAIL);
    if (server.failMode === 'refused')
      return reply(msg.header.id, msg.header.rd, msg.questions, [], DNS_RCODE.REFUSED);
    const rec = records.get(name);
    if (rec === undefined || server.nxdomain.has(name)) {
      return reply(msg.header.id, msg.header.rd, msg.questions, [], DNS_RCODE.NXDOMAIN);
    }
    const list = q.type === DNS_TYPE.A ? rec.A : q.type === DNS_TYPE.AAAA ? rec.AAAA : undefined;
    const answers: DnsRecord[] = (list ?? []).map((address) => ({
      name: q.name,
      type: q.type,
      class: DNS_CLASS_IN,
      ttl: rec.ttl ?? 60,
      data: new Uint8Array(),
      address,
    }));
    const full = reply(msg.header.id, msg.header.rd, msg.questions, answers, DNS_RCODE.NOERROR);
    // Over UDP an answer larger than the client can take is cut to the question with TC set
    // (RFC 1035 §4.2.1; RFC 6891 §6.2.5 for the EDNS size), so the client retries over TCP.
    if (transport === 'udp' && full.length > udpLimit(msg.additionals)) {
      return reply(msg.header.id, msg.header.rd, msg.questions, [], DNS_RCODE.NOERROR, true);
    }
    return full;
  };

  const later = (fn: () => void): void => {
    if (server.delayMs <= 0) {
      fn();
      return;
    }
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, server.delayMs);
    timers.add(t);
  };

  tcp.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2) {
        const len = pending.readUInt16BE(0);
        if (pending.length < 2 + len) break;
        const out = answer(pending.subarray(2, 2 + len), 'tcp');
        pending = pending.subarray(2 + len);
        if (out === null) continue;
        const framed = Buffer.concat([Buffer.from([out.length >> 8, out.length & 0xff]), out]);
        later(() => socket.writable && socket.write(framed));
      }
    });
  });

  // Bind UDP first, then TCP on the same port; retry if another process holds the TCP port.
  let port = 0;
  for (let attempt = 0; ; attempt++) {
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(0, '127.0.0.1', () => {
        udp.off('error', reject);
        resolve();
      });
    });
    port = udp.address().port;
    const ok = await new Promise<boolean>((resolve) => {
      tcp.once('error', () => resolve(false));
      tcp.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (ok) break;
    await new Promise<void>((r) => udp.close(() => r()));
    if (attempt >= 5) throw new Error('could not bind a TCP port matching the UDP port');
    udp = dgram.createSocket('udp4');
  }
  const bound = udp;
  bound.on('message', (query, rinfo) => {
    const out = answer(query, 'udp');
    if (out !== null) later(() => bound.send(out, rinfo.port, rinfo.address));
  });

  const server: TestDnsServer = {
    address: `127.0.0.1:${port}`,
    port,
    records,
    nxdomain: new Set((options.nxdomain ?? []).map(normalise)),
    failMode: options.failMode ?? 'none',
    delayMs: options.delayMs ?? 0,
    log,
    setRecord(name, record) {
      records.set(normalise(name), record);
    },
    queries(name) {
      if (name === undefined) return log.length;
      const n = normalise(name);
      return log.filter((q) => q.name === n).length;
    },
    resetCounts() {
      log.length = 0;
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await Promise.all([
        new Promise<void>((r) => bound.close(() => r())),
        new Promise<void>((r) => tcp.close(() => r())),
      ]);
    },
  };
  return server;
}

/** The largest UDP answer the client accepts: its EDNS OPT record's size, else 512. */
function udpLimit(additionals: readonly DnsRecord[]): number {
  const opt = additionals.find((r) => r.type === DNS_TYPE_OPT);
  return opt === undefined ? 512 : Math.max(512, opt.class);
}

const DNS_TYPE_OPT = 41;

function reply(
  id: number,
  rd: boolean,
  questions: readonly { name: string; type: number; class: number }[],
  answers: DnsRecord[],
  rcode: number,
  tc = false,
): Buffer {
  return encodeDnsMessage({
    header: { id, qr: true, opcode: 0, aa: true, tc, rd, ra: true, rcode },
    questions,
    answers,
    authorities: [],
    additionals: [],
  });
}
