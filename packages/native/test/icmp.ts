/**
 * Test helper: IPv4 ICMP echo packets built and parsed by hand, to talk to the kernel through
 * a TUN device.
 */

function checksum(buf: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2) sum += buf[buf.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function ip4(s: string): Buffer {
  return Buffer.from(s.split('.').map(Number));
}

/** An IPv4 ICMP echo request from `src` to `dst`. */
export function echoRequest(src: string, dst: string, id: number, seq: number, payload: Buffer): Buffer {
  const icmp = Buffer.alloc(8 + payload.length);
  icmp[0] = 8; // echo request
  icmp.writeUInt16BE(id, 4);
  icmp.writeUInt16BE(seq, 6);
  payload.copy(icmp, 8);
  icmp.writeUInt16BE(checksum(icmp), 2);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + icmp.length, 2);
  ip.writeUInt16BE(0x4000, 6); // don't fragment
  ip[8] = 64;
  ip[9] = 1; // ICMP
  ip4(src).copy(ip, 12);
  ip4(dst).copy(ip, 16);
  ip.writeUInt16BE(checksum(ip), 10);
  return Buffer.concat([ip, icmp]);
}

/** The echo reply in `pkt`, or null if it is something else (e.g. an IPv6 router solicitation). */
export function parseEchoReply(
  pkt: Buffer,
): { src: string; dst: string; id: number; seq: number; payload: Buffer } | null {
  if (pkt.length < 28 || pkt[0]! >> 4 !== 4 || pkt[9] !== 1) return null;
  const ihl = (pkt[0]! & 0xf) * 4;
  if (pkt[ihl] !== 0) return null; // not an echo reply
  return {
    src: [...pkt.subarray(12, 16)].join('.'),
    dst: [...pkt.subarray(16, 20)].join('.'),
    id: pkt.readUInt16BE(ihl + 4),
    seq: pkt.readUInt16BE(ihl + 6),
    payload: pkt.subarray(ihl + 8),
  };
}

/** Sends echo requests through `write` until a reply with `seq` arrives on `packets`. */
export async function pingThrough(
  device: {
    write(p: Buffer): boolean;
    on(e: 'packets', cb: (p: Buffer[]) => void): unknown;
    off(e: 'packets', cb: (p: Buffer[]) => void): unknown;
  },
  src: string,
  dst: string,
  seq: number,
  timeoutMs = 5000,
): Promise<ReturnType<typeof parseEchoReply>> {
  const payload = Buffer.from(`ping ${seq} through a TUN device`);
  return await new Promise((resolve, reject) => {
    const onPackets = (pkts: Buffer[]) => {
      for (const p of pkts) {
        const r = parseEchoReply(p);
        if (r && r.seq === seq) {
          clearTimeout(timer);
          device.off('packets', onPackets);
          resolve(r);
        }
      }
    };
    const timer = setTimeout(() => {
      device.off('packets', onPackets);
      reject(new Error(`no echo reply for seq ${seq} within ${timeoutMs} ms`));
    }, timeoutMs);
    device.on('packets', onPackets);
    device.write(echoRequest(src, dst, 0x4242, seq, payload));
  });
}
