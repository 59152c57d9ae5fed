/**
 * `EgressDecision.packets` with the real kernel on every side: a client namespace whose default
 * route is a TUN device bridged by the test over SEQPACKET into Oxy's `ip_seqpacket` endpoint;
 * the endpoint's `ip.offramp` is a SEQPACKET peer written here. The app's
 * `EgressHook.handleConnection` answers `packets` for two destinations:
 *
 * - TCP 198.18.0.80:80: the upgraded stream is carried to a connection opened inside the
 *   upgrade namespace; its packets reach the peer with the client's own address, and the peer
 *   writes them into a second namespace's TUN device where a real HTTP server listens on
 *   198.18.0.80, so a real kernel answers (its packets go back through the peer). curl's body
 *   is checked by sha256.
 * - UDP 198.18.0.54:53: each datagram reaches the peer as a UDP packet from the client's
 *   address; the peer asks a test DNS server and answers with a packet, which becomes dig's
 *   answer.
 *
 * A CONNECT whose decision is `packets` is refused (502, `OXY_ERR_EGRESS_NO_PACKET_PATH`).
 * Skips, with the kernel's message, only where namespaces, TUN devices or the upgrade service
 * are refused.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { captureTelemetry } from 'foundations/telemetry/testing';
import { type SeqpacketSocket, seqpacket, type TunDevice } from 'native';
import type { AuditRecord } from '../src/audit.ts';
import { isNamespaceRefusal } from '../src/flows/ip/tcp-upgrade.ts';
import { defineApp, EgressDecision } from '../src/index.ts';
import { icmpUnreachable } from '../src/protocols/icmp/generate.ts';
import { formatAddress } from '../src/protocols/ip/address.ts';
import { buildUdpPacket } from '../src/protocols/ip/builder.ts';
import { parseIp } from '../src/protocols/ip/packet.ts';
import { udpPayload } from '../src/protocols/udp/header.ts';
import { startDnsServer, type TestDnsServer } from '../src/testing/dns-server.ts';
import { type AppUnderTest, startApp, waitUntil } from '../src/testing/index.ts';
import {
  type Cleanup,
  inNamespace,
  tunNamespace as makeTunNamespace,
  type NamespaceRun,
  namespaceRefusal,
  type TunNamespace,
} from './fixtures/tun-namespace.ts';

const WEB = '198.18.0.80';
const WEB6 = '2001:db8::80';
/** A destination the off-ramp peer answers with ICMP host unreachable. */
const UNREACHABLE = '198.18.0.81';
const DNS = '198.18.0.54';
const CLIENT = '10.7.1.2';
const CLIENT6 = 'fd00:7::2';
const BODY_BYTES = 4 << 20;
/** The server's body: a fixed pattern both the server (another process) and the test make. */
const BODY_CODE = `const b=Buffer.alloc(${BODY_BYTES});for(let i=0;i<b.length;i+=4)b.writeUInt32LE((i*2654435761)>>>0,i);`;

let refused: string | null = null;
let dir: string;
let dns: TestDnsServer;
let oxy: AppUnderTest;
let offramp: seqpacket.SeqpacketServer;
let server: ChildProcess | null = null;
const cleanups: Cleanup[] = [];
/** Source addresses of the TCP packets the off-ramp peer received. */
const tcpSources = new Set<string>();
/** Context messages of the off-ramp connections. */
const contexts: unknown[] = [];
/** Reads the metrics (the app registry only: fast). */
const tele = captureTelemetry({ verbosity: 'ERROR' });

const app = defineApp({
  name: 'l3-egress-packets',
  version: '1.0.0',
  description: 'sends two test destinations out as packets through the IP off-ramp',
  start: () => ({
    egress: {
      handleConnection: (target) => {
        if ([WEB, WEB6, DNS, UNREACHABLE, 'packets.test'].includes(target.host))
          return EgressDecision.packets();
        return EgressDecision.block('not a test address');
      },
    },
  }),
});

/** `ip netns exec ns cmd…`, bounded in time (20 s unless told). */
const inNs = (ns: string, cmd: string[], timeoutMs = 20_000): Promise<NamespaceRun> =>
  inNamespace(ns, cmd, timeoutMs);

/** A namespace with `addr` and `addr6` on a TUN device that is its default route (v4, v6); this process holds the device. */
const tunNamespace = (tag: string, addr: string, addr6: string): Promise<TunNamespace> =>
  makeTunNamespace({ ns: `oxy-l3p-${process.pid}-${tag}`, device: 'oxyt0', addr4: addr, addr6 }, cleanups);

/** The off-ramp peer: UDP to the DNS address is answered from the test DNS server; TCP goes to the server's device. */
function startOffRampPeer(webDev: TunDevice): void {
  let tcpConn: SeqpacketSocket | null = null;
  webDev.on('packets', (ps) => tcpConn?.send(ps));
  offramp = seqpacket.listen(path.join(dir, 'offramp.sock'));
  offramp.on('connection', (s: SeqpacketSocket) => {
    let first = true;
    // Packets and answers keep coming as everything stops: none is sent to a closed socket.
    let open = true;
    s.on('close', () => {
      open = false;
      if (tcpConn === s) tcpConn = null;
    });
    s.on('messages', (ms) => {
      for (const m of ms) {
        if (first) {
          first = false;
          contexts.push(JSON.parse(m.toString()));
          continue;
        }
        const p = parseIp(m);
        const src = formatAddress(p.buf.subarray(p.srcOffset, p.srcOffset + p.addrLength));
        if (p.protocol === 6 && formatAddress(p.buf.subarray(p.dstOffset, p.dstOffset + 4)) === UNREACHABLE) {
          const icmp = icmpUnreachable(p, 'host');
          if (icmp !== null) s.send(icmp);
          continue;
        }
        if (p.protocol === 6) {
          tcpSources.add(src);
          tcpConn = s;
          webDev.write([Buffer.from(m)]);
          continue;
        }
        if (p.protocol !== 17) continue;
        const sport = p.buf.readUInt16BE(p.l4Offset);
        const u = dgram.createSocket('udp4');
        u.on('message', (answer) => {
          if (open) s.send(buildUdpPacket(DNS, 53, src, sport, answer));
          u.close();
        });
        u.send(udpPayload(p), dns.port, '127.0.0.1');
      }
    });
  });
}

/** Starts the HTTP server inside the server namespace, on port 80 of both its addresses. */
async function startServer(ns: string): Promise<void> {
  const code = `${BODY_CODE}require('node:http').createServer((q,r)=>{r.writeHead(200,{'content-length':b.length});r.end(b)}).listen({port:80,host:'::',ipv6Only:false},()=>console.log('ready'))`;
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  server = child;
  child.stdout!.setEncoding('utf8');
  let out = '';
  child.stdout!.on('data', (d: string) => {
    out += d;
  });
  await waitUntil(() => out.includes('ready'), 'the server in its namespace', 10_000);
}

let client: TunNamespace | null = null;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'oxy-l3p-'));
  refused = await namespaceRefusal('oxy-l3p');
  if (refused !== null) return;
  dns = await startDnsServer({ records: { 'svc.test': { A: ['192.0.2.9'] } } });
  const web = await tunNamespace('w', WEB, WEB6);
  startOffRampPeer(web.dev);
  await startServer(web.ns);
  oxy = await startApp(app, {
    settings: {
      endpoints: {
        main: { addr: '127.0.0.1:0' },
        ip: {
          protocol: 'ip_seqpacket',
          addr: path.join(dir, 'ip.sock'),
          ip: { offramp: path.join(dir, 'offramp.sock') },
        },
      },
    },
  });
  try {
    await oxy.proxy.runtime.tcpUpgrade();
  } catch (e) {
    if (!isNamespaceRefusal(e)) throw e;
    refused = e.message;
    return;
  }
  client = await tunNamespace('c', CLIENT, CLIENT6);
  const s = await seqpacket.connect(path.join(dir, 'ip.sock'));
  s.send(Buffer.from(JSON.stringify({ tenant: 'packets' })));
  let open = true;
  s.on('close', () => {
    open = false;
  });
  client.dev.on('packets', (ps) => open && s.send(ps));
  s.on('messages', (ms) => client?.dev.write(ms));
  cleanups.push(() => s.close());
});

after(async () => {
  tele.stop();
  server?.kill('SIGKILL');
  for (const c of cleanups.reverse()) await c();
  await oxy?.stop();
  offramp?.close();
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The first audit record `match` finds, waited for. */
async function recordOf(match: (r: AuditRecord) => boolean): Promise<AuditRecord> {
  await waitUntil(() => oxy.auditRecords().some(match), 'the audit record', 10_000);
  return oxy.auditRecords().find(match)!;
}

test('TCP: an upgraded stream downgraded to packets reaches a real server through the off-ramp', async (t) => {
  if (client === null) {
    t.skip(`the kernel refused: ${refused}`);
    return;
  }
  const r = await inNs(client.ns, ['sh', '-c', `curl -sS --max-time 20 http://${WEB}/ | sha256sum`], 30_000);
  const body = new Function(`${BODY_CODE}return b;`)() as Buffer;
  assert.equal(r.out.split(' ')[0], createHash('sha256').update(body).digest('hex'), r.err);
  // The packets left with the client's own address, not the upgrade namespace's.
  assert.deepEqual([...tcpSources], [CLIENT]);
  assert.ok(contexts.some((c) => (c as { endpoint?: string }).endpoint === 'ip'));
  const rec = await recordOf((x) => x.request_kind === 'ip-tcp' && x.target === `${WEB}:80`);
  assert.ok(rec.decisions.includes('egress:packets'), JSON.stringify(rec.decisions));
  assert.equal(rec.upstream, `${WEB}:80`);
  assert.doesNotMatch(rec.close_reason, /^OXY_ERR/);
  assert.ok(rec.bytes_down >= BODY_BYTES, `bytes_down ${rec.bytes_down}`);
  assert.ok(((await tele.metricValue('ip_packet_egress_flows_total', { protocol: 'tcp' })) ?? 0) >= 1);
});

test('TCP over IPv6: the downgrade connection leaves from the client v6 address', async (t) => {
  if (client === null) {
    t.skip(`the kernel refused: ${refused}`);
    return;
  }
  tcpSources.clear();
  const r = await inNs(
    client.ns,
    ['sh', '-c', `curl -sS -g --max-time 20 http://[${WEB6}]/ | sha256sum`],
    30_000,
  );
  const body = new Function(`${BODY_CODE}return b;`)() as Buffer;
  assert.equal(r.out.split(' ')[0], createHash('sha256').update(body).digest('hex'), r.err);
  // IPv6 sources only: a late segment of the IPv4 test's connection (a FIN retransmitted on a
  // loaded machine) may still come through from CLIENT.
  assert.deepEqual(
    [...tcpSources].filter((a) => a.includes(':')),
    [CLIENT6],
  );
  const rec = await recordOf((x) => x.request_kind === 'ip-tcp' && x.target === `[${WEB6}]:80`);
  assert.ok(rec.decisions.includes('egress:packets'), JSON.stringify(rec.decisions));
});

test('TCP: ICMP host unreachable from the off-ramp reaches the namespace kernel: the downgrade connect fails at once', async (t) => {
  if (client === null) {
    t.skip(`the kernel refused: ${refused}`);
    return;
  }
  const started = performance.now();
  const r = await inNs(client.ns, ['curl', '-sS', '--max-time', '20', `http://${UNREACHABLE}/`], 30_000);
  assert.notEqual(r.code, 0, 'curl failed');
  // Without the ICMP translation the connect would wait for egress.connect_timeout.
  assert.ok(performance.now() - started < 5000, `took ${performance.now() - started} ms`);
  const rec = await recordOf((x) => x.request_kind === 'ip-tcp' && x.target === `${UNREACHABLE}:80`);
  assert.ok(rec.decisions.includes('egress:packets'));
  assert.equal(rec.close_reason, 'OXY_ERR_CONNECT_FAILED');
});

test('UDP: a datagram session sent out as packets gets its answer back from the off-ramp', async (t) => {
  if (client === null) {
    t.skip(`the kernel refused: ${refused}`);
    return;
  }
  const d = await inNs(client.ns, ['dig', `@${DNS}`, 'svc.test', 'A', '+short', '+tries=2', '+time=2']);
  assert.equal(d.out.trim(), '192.0.2.9', `dig: ${d.out} ${d.err}`);
  // Ending the tunnel ends the flow, which writes its record.
  for (const c of cleanups.splice(cleanups.length - 1)) await c();
  const rec = await recordOf((x) => x.request_kind === 'ip-udp' && x.target === `${DNS}:53`);
  assert.ok(rec.decisions.includes('egress:packets'), JSON.stringify(rec.decisions));
  assert.equal(rec.upstream, `${DNS}:53`);
  assert.equal(rec.status, 200);
  assert.ok(((await tele.metricValue('ip_packet_egress_flows_total', { protocol: 'udp' })) ?? 0) >= 1);
});

test('a CONNECT decided packets is refused: 502, OXY_ERR_EGRESS_NO_PACKET_PATH', async (t) => {
  if (refused !== null && oxy === undefined) {
    t.skip(`the kernel refused: ${refused}`);
    return;
  }
  const { port } = oxy.proxy.address('main');
  const s = net.connect(port, '127.0.0.1');
  s.write('CONNECT packets.test:80 HTTP/1.1\r\nHost: packets.test:80\r\n\r\n');
  const [head] = (await once(s, 'data')) as [Buffer];
  s.destroy();
  assert.match(head.toString(), /^HTTP\/1\.1 502/);
  const rec = await recordOf((x) => x.target === 'packets.test:80');
  assert.ok(rec.decisions.includes('egress:packets'));
  assert.equal(rec.status, 502);
  assert.equal(rec.close_reason, 'OXY_ERR_EGRESS_NO_PACKET_PATH');
});
