/**
 * Path MTU discovery through an IP tunnel, with the real kernel on the client side: the client
 * namespace's TUN device (the test bridges it to a SEQPACKET tunnel into Oxy) has MTU 9000, the
 * endpoint's `ip.mtu` is 1400. curl uploads and downloads through the IP→TCP upgrade service
 * (IPv4 and IPv6); the client's large segments are answered with "fragmentation needed" /
 * "packet too big" carrying 1400, its route cache learns it (`ip route get` shows `mtu 1400`),
 * both transfers complete with their sha256 intact, and no packet Oxy sends down the tunnel is
 * larger than 1400 (the upgraded SYN's MSS was clamped to the tunnel's MTU).
 *
 * Skips, with the kernel's message, only where namespaces, TUN devices or the upgrade
 * namespace are refused.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { seqpacket } from 'native';
import { defineApp, EgressDecision } from '../src/index.ts';
import { ICMP4, ICMP6, parseIcmp } from '../src/protocols/icmp/icmp.ts';
import { IP_PROTO, parseIp } from '../src/protocols/ip/packet.ts';
import { type AppUnderTest, startApp } from '../src/testing/app.ts';
import {
  type Cleanup,
  inNamespace,
  type NamespaceRun,
  namespaceRefusal,
  tunNamespace,
} from './fixtures/tun-namespace.ts';

const HTTP4 = '198.18.0.80';
const HTTP6 = '2001:db8::80';
const TUNNEL_MTU = 1400;
const CLIENT_MTU = 9000;
const SIZE = 4 << 20;

let refused: string | null = null;
let dir: string;
let web: http.Server;
let webPort: number;
let oxy: AppUnderTest;
const body = randomBytes(SIZE);
const cleanups: Cleanup[] = [];

const app = defineApp({
  name: 'l3-mtu',
  version: '1.0.0',
  description: 'maps the test addresses to a loopback HTTP server',
  start: () => ({
    egress: {
      handleConnection: (target) =>
        target.host === HTTP4 || target.host === HTTP6
          ? EgressDecision.direct({ host: '127.0.0.1', port: webPort })
          : EgressDecision.block('not a test address'),
    },
  }),
});

/** `ip netns exec ns cmd…`, bounded in time (60 s unless told). */
const inNs = (ns: string, cmd: string[], timeoutMs = 60_000): Promise<NamespaceRun> =>
  inNamespace(ns, cmd, timeoutMs);

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'oxy-l3mtu-'));
  refused = await namespaceRefusal('oxy-mtu');
  if (refused !== null) return;
  writeFileSync(path.join(dir, 'upload.bin'), body);
  // GET: the body; POST: the sha256 of what arrived.
  web = http.createServer((req, res) => {
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-length': SIZE });
      res.end(body);
      return;
    }
    const h = createHash('sha256');
    req.on('data', (d: Buffer) => h.update(d));
    req.on('end', () => res.end(h.digest('hex')));
  });
  web.listen(0, '127.0.0.1');
  await once(web, 'listening');
  webPort = (web.address() as { port: number }).port;
  oxy = await startApp(app, {
    settings: {
      endpoints: {
        main: { addr: '127.0.0.1:0' },
        ip: { protocol: 'ip_seqpacket', addr: path.join(dir, 'ip.sock'), ip: { mtu: TUNNEL_MTU } },
      },
    },
  });
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
  await oxy?.stop();
  web?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** What Oxy sent down the tunnel: the largest packet, and the "too big" errors with their MTU. */
interface Down {
  largest: number;
  tooBig: number[];
}

/** A namespace whose default routes go into a TUN device (MTU 9000) bridged to a SEQPACKET tunnel. */
async function client(): Promise<{ ns: string; down: Down }> {
  const { ns, dev } = await tunNamespace(
    { ns: `oxy-mtu-${process.pid}`, device: 'oxyc0', addr4: '10.7.0.5', addr6: 'fd00::5', mtu: CLIENT_MTU },
    cleanups,
  );
  const s = await seqpacket.connect(path.join(dir, 'ip.sock'));
  cleanups.push(() => s.close());
  s.send(Buffer.from('mtu-test'));
  const down: Down = { largest: 0, tooBig: [] };
  dev.on('packets', (ps) => s.send(ps));
  s.on('messages', (ms) => {
    for (const m of ms) {
      down.largest = Math.max(down.largest, m.length);
      const p = parseIp(m);
      if (p.protocol !== IP_PROTO.ICMP && p.protocol !== IP_PROTO.ICMPV6) continue;
      const icmp = parseIcmp(p);
      const tooBig =
        p.version === 4
          ? icmp.type === ICMP4.DEST_UNREACH && icmp.code === 4
          : icmp.type === ICMP6.PACKET_TOO_BIG;
      if (tooBig) down.tooBig.push(icmp.mtu ?? -1);
    }
    dev.write(ms);
  });
  return { ns, down };
}

test('a client with a larger MTU than the tunnel learns the tunnel MTU; uploads and downloads complete', async (t) => {
  if (refused !== null) {
    t.skip(`the kernel refused a namespace or TUN device: ${refused}`);
    return;
  }
  const available = await oxy.proxy.runtime.tcpUpgrade().then(
    () => null,
    (e: unknown) => (e as Error).message,
  );
  if (available !== null) {
    t.skip(`the IP→TCP upgrade service cannot start here: ${available}`);
    return;
  }
  const { ns, down } = await client();
  const hash = createHash('sha256').update(body).digest('hex');
  for (const [host, url] of [
    [HTTP4, `http://${HTTP4}/`],
    [HTTP6, `http://[${HTTP6}]/`],
  ] as const) {
    // The download first, before the client learned anything: only the MSS clamp keeps the
    // server side's segments within the tunnel.
    const get = await inNs(ns, ['sh', '-c', `curl -sS --max-time 60 ${url} | sha256sum`]);
    assert.equal(get.out.split(' ')[0], hash, `download from ${host}: ${get.err}`);
    assert.ok(down.largest <= TUNNEL_MTU, `largest packet down the tunnel: ${down.largest}`);
    const before = await inNs(ns, ['ip', 'route', 'get', host]);
    assert.doesNotMatch(before.out, /mtu/, `no learned MTU yet: ${before.out}`);
    const up = await inNs(ns, [
      'curl',
      '-sS',
      '--max-time',
      '60',
      '--data-binary',
      `@${dir}/upload.bin`,
      url,
    ]);
    assert.equal(up.out, hash, `upload to ${host}: ${up.err}`);
    const learned = await inNs(ns, ['ip', 'route', 'get', host]);
    assert.match(learned.out, new RegExp(`mtu ${TUNNEL_MTU}\\b`), `route cache for ${host}: ${learned.out}`);
  }
  assert.ok(down.tooBig.length >= 2, `"too big" answers sent: ${down.tooBig.length}`);
  assert.ok(
    down.tooBig.every((m) => m === TUNNEL_MTU),
    `every one carries ${TUNNEL_MTU}: ${down.tooBig}`,
  );
  assert.ok(down.largest <= TUNNEL_MTU, `largest packet down the tunnel: ${down.largest}`);
});
