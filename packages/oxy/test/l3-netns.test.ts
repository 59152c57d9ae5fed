/**
 * IP tunnels with the real kernel on the client side. The test makes two network namespaces,
 * each with a TUN device as its default route (IPv4 and IPv6); the test bridges one device to a
 * SEQPACKET tunnel into Oxy and the other over GUE (UDP). Real tools run inside: `dig` (IP→UDP
 * upgrade into the datagram runner, then egress to a test DNS server on 127.0.0.1), `ping` (the
 * gateway's echo), `curl` (a destination the flow hook refuses: the kernel's TCP sees the RST;
 * and a 16 MiB download whose sha256 is checked).
 * A flow hook forwards one destination as packets to a SEQPACKET off-ramp peer that routes the
 * DNS query itself. Client destinations are test addresses (198.18.0.0/15) that an egress
 * hook maps to loopback listeners: nothing leaves the machine.
 *
 * Skips, with the kernel's message, only where namespaces or TUN devices are refused.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { type SeqpacketSocket, seqpacket } from 'native';
import { defineApp, EgressDecision, IpFlowDecision } from '../src/index.ts';
import { decodeGue, encodeGue } from '../src/protocols/gue/codec.ts';
import { buildUdpPacket } from '../src/protocols/ip/builder.ts';
import { parseIp } from '../src/protocols/ip/packet.ts';
import { udpPayload } from '../src/protocols/udp/header.ts';
import { type AppUnderTest, startApp } from '../src/testing/app.ts';
import { startDnsServer, type TestDnsServer } from '../src/testing/dns-server.ts';
import {
  type Cleanup,
  inNamespace,
  type NamespaceRun,
  namespaceRefusal,
  type TunNamespace,
  tunNamespace,
} from './fixtures/tun-namespace.ts';

const DNS = '198.18.0.53';
const HTTP = '198.18.0.80';
const REFUSED = '198.18.0.66';
const ROUTED = '198.18.0.99';
const BIG = 16 << 20;

/** Why the kernel refused the namespaces or TUN devices, or null when they work. */
let refused: string | null = null;
let dir: string;
let dns: TestDnsServer;
let web: http.Server;
let webPort: number;
let big: Buffer | null = null;

/** The 16 MiB body (a fixed pattern), made on first use. */
function bigBody(): Buffer {
  if (big === null) {
    big = Buffer.alloc(BIG);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
  }
  return big;
}
let oxy: AppUnderTest;
let offramp: seqpacket.SeqpacketServer;
const cleanups: Cleanup[] = [];

type Client = TunNamespace;

const app = defineApp({
  name: 'l3-netns',
  version: '1.0.0',
  description: 'maps the test addresses to loopback listeners; refuses one; routes one as packets',
  start: () => ({
    ipFlow: {
      handleFlow: (flow) => {
        if (flow.dst.host === REFUSED) return IpFlowDecision.reject('test');
        if (flow.dst.host === ROUTED) return IpFlowDecision.forward();
        return IpFlowDecision.upgrade();
      },
    },
    egress: {
      // The same egress decision as for any tunnel: the test addresses land on loopback.
      handleConnection: (target) => {
        if (target.host === DNS) return EgressDecision.direct({ host: '127.0.0.1', port: dns.port });
        if (target.host === HTTP) return EgressDecision.direct({ host: '127.0.0.1', port: webPort });
        return EgressDecision.block('not a test address');
      },
    },
  }),
});

/** `ip netns exec ns cmd…`, bounded in time (15 s unless told). */
const inNs = (ns: string, cmd: string[], timeoutMs = 15_000): Promise<NamespaceRun> =>
  inNamespace(ns, cmd, timeoutMs);

/** A namespace whose default routes (v4 and v6) go into a TUN device this process holds. */
const clientNamespace = (tag: string, addr4: string, addr6: string): Promise<Client> =>
  tunNamespace({ ns: `oxy-l3-${process.pid}-${tag}`, device: 'oxyc0', addr4, addr6 }, cleanups);

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'oxy-l3ns-'));
  refused = await namespaceRefusal('oxy-l3');
  if (refused !== null) return;
  dns = await startDnsServer({ records: { 'svc.test': { A: ['192.0.2.7'] } } });
  // The 16 MiB body is made only when the TCP upgrade test runs.
  web = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-length': BIG });
    res.end(bigBody());
  });
  web.listen(0, '127.0.0.1');
  await once(web, 'listening');
  webPort = (web.address() as { port: number }).port;
  // The off-ramp peer is a tiny router: it sends each forwarded UDP packet's payload to the DNS
  // server from a socket of its own and turns the answer back into a packet.
  offramp = seqpacket.listen(path.join(dir, 'offramp.sock'));
  offramp.on('connection', (s: SeqpacketSocket) => {
    let first = true;
    s.on('messages', (ms) => {
      for (const m of ms) {
        if (first) {
          first = false;
          continue;
        }
        const p = parseIp(m);
        if (p.protocol !== 17) continue;
        const sport = p.buf.readUInt16BE(p.l4Offset);
        const src = [...p.buf.subarray(p.srcOffset, p.srcOffset + 4)].join('.');
        const u = dgram.createSocket('udp4');
        u.on('message', (answer) => {
          s.send(buildUdpPacket(ROUTED, 53, src, sport, answer));
          u.close();
        });
        u.send(udpPayload(p), dns.port, '127.0.0.1');
      }
    });
  });
  oxy = await startApp(app, {
    settings: {
      endpoints: {
        main: { addr: '127.0.0.1:0' },
        ip: {
          protocol: 'ip_seqpacket',
          addr: path.join(dir, 'ip.sock'),
          ip: { offramp: path.join(dir, 'offramp.sock') },
        },
        // GUE has no connection to close: its tunnels end by idling out, quickly here.
        gue: { protocol: 'ip_gue', addr: '127.0.0.1:0', gue: { idle_timeout: '1s' } },
      },
    },
  });
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
  await oxy?.stop();
  offramp?.close();
  web?.close();
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Bridges a client's TUN device to a SEQPACKET tunnel. */
async function viaSeqpacket(c: Client): Promise<void> {
  const s = await seqpacket.connect(path.join(dir, 'ip.sock'));
  s.send(Buffer.from(JSON.stringify({ tenant: c.ns })));
  c.dev.on('packets', (ps) => s.send(ps));
  s.on('messages', (ms) => c.dev.write(ms));
  cleanups.push(() => s.close());
}

/** Bridges a client's TUN device over GUE (variant 0, a 4-byte virtual network id). */
async function viaGue(c: Client): Promise<void> {
  const u = dgram.createSocket('udp4');
  u.bind(0, '127.0.0.1');
  await once(u, 'listening');
  const { port } = oxy.proxy.address('gue');
  const vni = Buffer.from([0, 0, 0, 7]);
  c.dev.on('packets', (ps) => {
    for (const p of ps) u.send(encodeGue(p, { extensions: vni }), port, '127.0.0.1');
  });
  u.on('message', (m) => {
    const g = decodeGue(m);
    c.dev.write(g.payload);
  });
  cleanups.push(() => {
    u.close();
  });
}

let seqClient: Client | null = null;
let gueClient: Client | null = null;

test('namespaces with a TUN default route, bridged into Oxy over SEQPACKET and GUE', async (t) => {
  if (refused !== null) {
    t.skip(`the kernel refused a namespace or TUN device: ${refused}`);
    return;
  }
  seqClient = await clientNamespace('s', '10.7.0.2', 'fd00::2');
  await viaSeqpacket(seqClient);
  gueClient = await clientNamespace('g', '10.7.0.3', 'fd00::3');
  await viaGue(gueClient);
});

for (const [name, pick] of [
  ['SEQPACKET', () => seqClient],
  ['GUE', () => gueClient],
] as const) {
  test(`${name}: dig through the tunnel (IP→UDP upgrade) and ping the gateway (v4, v6)`, async (t) => {
    const c = pick();
    if (c === null) {
      t.skip(refused === null ? 'no client namespace' : `the kernel refused: ${refused}`);
      return;
    }
    const d = await inNs(c.ns, ['dig', `@${DNS}`, 'svc.test', 'A', '+short', '+tries=2', '+time=2']);
    assert.equal(d.out.trim(), '192.0.2.7', `dig: ${d.out} ${d.err}`);
    const p4 = await inNs(c.ns, ['ping', '-c', '2', '-i', '0.2', '-W', '2', '100.64.0.1']);
    assert.match(p4.out, / 0% packet loss/, p4.out + p4.err);
    const p6 = await inNs(c.ns, ['ping', '-6', '-c', '2', '-i', '0.2', '-W', '2', 'fd00::1']);
    assert.match(p6.out, / 0% packet loss/, p6.out + p6.err);
  });
}

test('a refused destination: curl sees the connection refused (RST), dig gets ICMP prohibited', async (t) => {
  const c = seqClient;
  if (c === null) {
    t.skip(`the kernel refused: ${refused}`);
    return;
  }
  const r = await inNs(c.ns, ['curl', '-sS', '--max-time', '5', `http://${REFUSED}/`]);
  assert.equal(r.code, 7, `curl exit ${r.code}: ${r.err}`);
  assert.match(r.err, /refused|Couldn't connect/i);
  const d = await inNs(c.ns, ['dig', `@${REFUSED}`, 'svc.test', '+tries=1', '+time=2']);
  // The ICMP error reaches dig's socket at once (ECONNREFUSED-like EHOSTUNREACH), not a timeout.
  assert.match(d.out, /communications error to 198\.18\.0\.66#53: host unreachable/, d.out);
});

test('a flow forwarded as packets: the off-ramp peer routes the DNS query and its answer comes back', async (t) => {
  const c = seqClient;
  if (c === null) {
    t.skip(`the kernel refused: ${refused}`);
    return;
  }
  const d = await inNs(c.ns, ['dig', `@${ROUTED}`, 'svc.test', 'A', '+short', '+tries=2', '+time=2']);
  assert.equal(d.out.trim(), '192.0.2.7', `dig: ${d.out} ${d.err}`);
});

test('one audit record per upgraded flow, kind ip-udp, with the original destination', async (t) => {
  if (seqClient === null) {
    t.skip(`the kernel refused: ${refused}`);
    return;
  }
  // The flows are still open (UDP idles out later): ending the tunnels ends them.
  for (const c of cleanups.splice(0).reverse()) await c();
  const done = await oxy.waitForAudit(2, 5000);
  const dnsFlows = done.filter((r) => r.request_kind === 'ip-udp' && r.target === `${DNS}:53`);
  assert.ok(dnsFlows.length >= 2, `records: ${JSON.stringify(done.map((r) => [r.request_kind, r.target]))}`);
  for (const r of dnsFlows) {
    assert.equal(r.upstream, `127.0.0.1:${dns.port}`);
    assert.equal(r.status, 200);
    assert.ok(r.decisions.includes('egress:direct'));
  }
  seqClient = null;
  gueClient = null;
});

test('IP→TCP upgrade: curl fetches 16 MiB through the tunnel, sha256 checked', async (t) => {
  if (refused !== null) {
    t.skip(`the kernel refused: ${refused}`);
    return;
  }
  const available = await oxy.proxy.runtime.tcpUpgrade().then(
    () => null,
    (e: unknown) => (e as { code?: string }).code,
  );
  assert.equal(available, null, `the upgrade service failed to start: ${available}`);
  const c = await clientNamespace('t', '10.7.0.4', 'fd00::4');
  await viaSeqpacket(c);
  const r = await inNs(c.ns, ['sh', '-c', `curl -sS --max-time 120 http://${HTTP}/big | sha256sum`], 150_000);
  assert.equal(r.out.split(' ')[0], createHash('sha256').update(bigBody()).digest('hex'), r.err);
});
