/**
 * The IP→TCP upgrade on the real kernel (the round trip of linux-and-node-facts §2): the upgrade
 * namespace made by the test, the NAT, the flow tracker, and packets captured from the kernel.
 * A hand-made client TCP (192.0.2.55:5555 → 203.0.113.10:443) is NAT-ed into the TUN device;
 * the kernel's listener accepts, this process gets the socket and finds the original
 * destination; data goes both ways and the close completes. The kernel's own packets (SYN|ACK,
 * data, FIN, ICMP port unreachable, echo reply) are parsed by our codecs and their checksums
 * verified. Skips, with the kernel's message, only where namespaces or TUN are refused.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import type net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { FlowTracker } from '../src/flows/ip/flow-tracker.ts';
import { NatMapping, UpgradeNat } from '../src/flows/ip/nat.ts';
import { startUpgradeNamespace, type UpgradeNamespace } from '../src/offramps/tun/namespace.ts';
import { parseIcmp, parseQuoted } from '../src/protocols/icmp/icmp.ts';
import { formatAddress } from '../src/protocols/ip/address.ts';
import {
  buildIp,
  buildTcpPacket,
  buildUdpPacket,
  icmpMessage,
  mssOption,
  type TcpSegmentOptions,
} from '../src/protocols/ip/builder.ts';
import { internetChecksum } from '../src/protocols/ip/checksum.ts';
import { l4ChecksumOk } from '../src/protocols/ip/l4-checksum.ts';
import { type IpPacket, parseIp } from '../src/protocols/ip/packet.ts';
import { parseTcpOf, TCP_FLAG } from '../src/protocols/tcp/header.ts';

const { SYN, ACK, FIN, PSH } = TCP_FLAG;
const probe = spawnSync('unshare', ['--user', '--net', '--map-root-user', 'true'], { encoding: 'utf8' });
const refused =
  probe.status === 0 ? false : `unshare refused: ${(probe.stderr || String(probe.error)).trim()}`;

/** Packets read from the device, awaited one by one with a predicate. */
class Capture {
  readonly #queue: IpPacket[] = [];
  #waiter: (() => void) | null = null;
  constructor(ns: UpgradeNamespace) {
    ns.tun.on('packets', (pkts) => {
      for (const b of pkts) {
        if (b[0]! >> 4 === 6 && b[6] === 58 && b[40] === 133) continue; // router solicitations
        this.#queue.push(parseIp(Buffer.from(b)));
      }
      this.#waiter?.();
    });
  }
  async next(what: string, match: (p: IpPacket) => boolean, timeoutMs = 5000): Promise<IpPacket> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.#queue.findIndex(match);
      if (i >= 0) return this.#queue.splice(i, 1)[0]!;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} from the kernel within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }
}

function kernelPacketValid(p: IpPacket): void {
  if (p.version === 4) assert.equal(internetChecksum(p.buf, 0, p.l4Offset), 0, 'kernel IPv4 header checksum');
  assert.equal(l4ChecksumOk(p), true, 'kernel upper-layer checksum, verified by our code');
}

describe('IP→TCP upgrade through a TUN device in a user+net namespace', { skip: refused }, () => {
  let ns: UpgradeNamespace | null = null;
  let skipped = '';
  before(async () => {
    try {
      ns = await startUpgradeNamespace({
        device: 'oxy0',
        addresses: ['10.0.0.1/24', 'fd00::1/64'],
        routes: ['10.9.0.0/16', 'fd00:9::/64'],
        listenPort: 0,
      });
    } catch (e) {
      if (/tun was refused/.test((e as Error).message)) skipped = (e as Error).message;
      else throw e;
    }
  });
  after(async () => {
    await ns?.close();
  });

  for (const [client, server, listener] of [
    ['192.0.2.55', '203.0.113.10', '10.0.0.1'],
    ['2001:db8::55', '2001:db8::10', 'fd00::1'],
  ] as const) {
    it(`${client.includes(':') ? 'IPv6' : 'IPv4'}: handshake, data both ways, close; the accepted socket maps to the original destination`, async (t) => {
      if (skipped || !ns) return t.skip(skipped);
      const cap = new Capture(ns);
      const nat = new UpgradeNat({
        v4: { pool: '10.9.0.0/16', listener: { address: '10.0.0.1', port: ns.port } },
        v6: { pool: 'fd00:9::/64', listener: { address: 'fd00::1', port: ns.port } },
        clampMss: 1300,
      });
      const tracker = new FlowTracker({ name: 'test' });
      nat.attach(tracker);
      const ends: string[] = [];
      tracker.subscribe({ handleFlowEnd: (f, why) => ends.push(`${why} ${f.packetsUp}/${f.packetsDown}`) });
      const accepted = once(ns.server, 'connection') as Promise<[net.Socket]>;

      // Client → proxy: track, NAT, write into the device. Device → client: NAT back, track.
      const toKernel = (seg: Omit<TcpSegmentOptions, 'srcPort' | 'dstPort'>) => {
        const p = parseIp(buildTcpPacket(client, server, { srcPort: 5555, dstPort: 443, ...seg }));
        const r = tracker.observe(p);
        assert.equal(r.kind, 'flow');
        if (r.kind === 'flow' && r.isNew)
          assert.ok(nat.map(p) instanceof NatMapping, 'the first packet claims a slot');
        assert.ok(nat.rewriteOutbound(p));
        ns!.tun.write(p.buf);
      };
      const fromKernel = async (what: string, flags: number) => {
        const p = await cap.next(
          what,
          (x) => x.protocol === 6 && (x.buf[x.l4Offset + 13]! & flags) === flags,
        );
        kernelPacketValid(p);
        assert.equal(formatAddress(p.buf, p.srcOffset, p.addrLength), listener);
        assert.ok(nat.rewriteInbound(p), `${what} maps back to a flow`);
        kernelPacketValid(p); // still valid after our incremental rewrite
        assert.equal(formatAddress(p.buf, p.srcOffset, p.addrLength), server);
        assert.equal(formatAddress(p.buf, p.dstOffset, p.addrLength), client);
        const r = tracker.observe(p);
        assert.equal(r.kind === 'flow' && !r.up, true);
        return parseTcpOf(p);
      };

      toKernel({ seq: 1000, flags: SYN, options: mssOption(1460) });
      const synAck = await fromKernel('SYN|ACK', SYN | ACK);
      assert.equal(synAck.ack, 1001);
      assert.equal(synAck.srcPort, 443);
      let theirs = (synAck.seq + 1) >>> 0;
      toKernel({ seq: 1001, ack: theirs, flags: ACK });
      toKernel({ seq: 1001, ack: theirs, flags: PSH | ACK, payload: Buffer.from('hello from fake client') });

      const [sock] = await accepted;
      const m = nat.originalDestination(sock.remoteAddress!, sock.remotePort!);
      assert.deepEqual(m?.originalDestination, { address: server, port: 443 });
      assert.deepEqual(m?.client, { address: client, port: 5555 });
      const [data] = (await once(sock, 'data')) as [Buffer];
      assert.equal(data.toString(), 'hello from fake client');
      sock.end('hi');

      const reply = await fromKernel('PSH|ACK "hi"', PSH | ACK);
      assert.equal(reply.payloadLength, 2);
      theirs = (theirs + 2) >>> 0;
      if ((reply.flags & FIN) === 0) await fromKernel('FIN', FIN | ACK);
      theirs = (theirs + 1) >>> 0;
      toKernel({ seq: 1023, ack: theirs, flags: FIN | ACK });
      await fromKernel('the last ACK', ACK);
      await once(sock, 'close');
      const flow = [...tracker.flows()][0]!;
      assert.equal(flow.state, 'time_wait');
      tracker.close();
      assert.equal(nat.size, 0, 'the mapping ends with the flow');
      assert.equal(ends.length, 1);
    });
  }

  it('kernel ICMP: port unreachable for a NAT-ed UDP flow is translated back; echo reply parses', async (t) => {
    if (skipped || !ns) return t.skip(skipped);
    const cap = new Capture(ns);
    const nat = new UpgradeNat({ v4: { pool: '10.9.0.0/16', listener: { address: '10.0.0.1', port: 9 } } });
    const q = parseIp(buildUdpPacket('192.0.2.55', 4000, '198.51.100.53', 53, Buffer.from('query')));
    const original = Buffer.from(q.buf);
    nat.map(q);
    nat.rewriteOutbound(q);
    ns.tun.write(q.buf);
    const err = await cap.next('ICMP port unreachable', (p) => p.protocol === 1 && p.buf[p.l4Offset] === 3);
    kernelPacketValid(err);
    assert.ok(nat.rewriteInbound(err));
    kernelPacketValid(err);
    const quoted = parseQuoted(err, parseIcmp(err));
    assert.equal(quoted.ip.buf.equals(original), true, 'the client sees its own datagram quoted');
    assert.equal(formatAddress(err.buf, err.srcOffset, 4), '198.51.100.53');

    const echo = buildIp({
      src: '10.9.0.77',
      dst: '10.0.0.1',
      protocol: 1,
      payload: icmpMessage(8, 0, 0x42420009, Buffer.from('ping')),
    });
    ns.tun.write(echo);
    const rep = await cap.next('echo reply', (p) => p.protocol === 1 && p.buf[p.l4Offset] === 0);
    kernelPacketValid(rep);
    const m = parseIcmp(rep);
    assert.deepEqual([m.id, m.seq, rep.buf.subarray(m.bodyOffset).toString()], [0x4242, 9, 'ping']);
  });

  it('downgrade: a connection opened in the namespace comes out of the TUN as packets, the socket comes here unread', async (t) => {
    if (skipped || !ns) return t.skip(skipped);
    const cap = new Capture(ns);
    const connected = ns.connect({ host: '10.9.0.5', port: 22, localAddress: '10.0.0.1' });
    const syn = await cap.next(
      'the downgrade SYN',
      (p) => p.protocol === 6 && p.buf[p.l4Offset + 13] === SYN,
    );
    kernelPacketValid(syn);
    const s = parseTcpOf(syn);
    assert.equal(formatAddress(syn.buf, syn.dstOffset, 4), '10.9.0.5');
    assert.equal(s.dstPort, 22);
    // Play the remote host: SYN|ACK, then at once a banner (as an SSH server sends first).
    const remote = (flags: number, seq: number, payload = Buffer.alloc(0)) =>
      ns!.tun.write(
        buildTcpPacket('10.9.0.5', '10.0.0.1', {
          srcPort: 22,
          dstPort: s.srcPort,
          seq,
          ack: (s.seq + 1) >>> 0,
          flags,
          payload,
        }),
      );
    remote(SYN | ACK, 5000);
    remote(PSH | ACK, 5001, Buffer.from('SSH-2.0-test\r\n'));
    const sock = await connected;
    assert.equal(sock.remoteAddress, '10.9.0.5');
    const [banner] = (await once(sock, 'data')) as [Buffer];
    assert.equal(banner.toString(), 'SSH-2.0-test\r\n', 'the bytes sent before the hand-over were not lost');
    sock.write('SSH-2.0-client\r\n');
    const out = await cap.next('the client data', (p) => p.protocol === 6 && parseTcpOf(p).payloadLength > 0);
    kernelPacketValid(out);
    assert.equal(
      out.buf.subarray(out.l4Offset + parseTcpOf(out).headerLength).toString(),
      'SSH-2.0-client\r\n',
    );
    sock.destroy();
    await assert.rejects(
      ns.connect({ host: '10.9.0.6', port: 22, timeoutMs: 300 }),
      (e: Error & { code?: string }) => e.code === 'OXY_ERR_CONNECT_TIMEOUT',
    );
  });

  it("a refused step is a named error: which step, the kernel's or the tool's message, how to allow it", async (t) => {
    if (skipped) return t.skip(skipped);
    await assert.rejects(
      startUpgradeNamespace({ device: 'oxy1', routes: ['300.1.0.0/16'], listenPort: 0 }),
      (e: Error & { code?: string }) =>
        e.code === 'OXY_ERR_NAMESPACE_FAILED' &&
        /ip route add 300\.1\.0\.0\/16 was refused: .*300/.test(e.message),
    );
    await assert.rejects(
      startUpgradeNamespace({ device: 'a-device-name-too-long', listenPort: 0 }),
      (e: Error & { code?: string }) =>
        e.code === 'OXY_ERR_NAMESPACE_FAILED' && /tun was refused/.test(e.message),
    );
  });
});
