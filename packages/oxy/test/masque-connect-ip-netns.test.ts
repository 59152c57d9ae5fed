/**
 * CONNECT-IP (RFC 9484) with the real kernel on the client side: the test makes a network
 * namespace whose default route is a TUN device and bridges that device to a CONNECT-IP tunnel
 * opened with the project's client (`oxy/masque`, HTTP/2 extended CONNECT). The address the
 * proxy assigns goes on the device, so the namespace's kernel speaks from it. Inside: `ping`
 * reaches the tunnel's gateway, and `curl` downloads a file whose sha256 is checked: its TCP
 * flow goes through the IP pipeline, is upgraded to a stream through the kernel (the IP→TCP
 * upgrade service) and reaches a loopback HTTP server through the egress pipeline. The client's
 * destination is a test address (198.18.0.0/15) that an egress hook maps to that server.
 *
 * Skips, with the kernel's message, only where namespaces or TUN devices are refused.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { netns, type TunDevice, tun } from 'native';
import { defineApp, EgressDecision } from '../src/index.ts';
import { createMasqueClient, type IpTunnel, type MasqueClient } from '../src/masque/client.ts';
import { type AppUnderTest, startApp, waitUntil } from '../src/testing/index.ts';

const run = promisify(execFile);
const HTTP = '198.18.0.80';
const SIZE = 8 << 20;
const ns = `oxy-cip-${process.pid}`;

let refused: string | null = null;
let web: http.Server;
let webPort = 0;
let body: Buffer;
let oxy: AppUnderTest;
let dev: TunDevice | null = null;
let client: MasqueClient | null = null;
let tunnel: IpTunnel | null = null;
let nsMade = false;

const app = defineApp({
  name: 'connect-ip-netns',
  version: '1.0.0',
  description: 'maps the test HTTP address to a loopback server',
  start: () => ({
    egress: {
      handleConnection: (target) =>
        target.host === HTTP
          ? EgressDecision.direct({ host: '127.0.0.1', port: webPort })
          : EgressDecision.block('not a test address'),
    },
  }),
});

async function inNs(cmd: string[], timeoutMs = 60_000): Promise<{ out: string; err: string; code: number }> {
  try {
    const r = await run('ip', ['netns', 'exec', ns, ...cmd], {
      timeout: timeoutMs,
      maxBuffer: 1 << 20,
      encoding: 'utf8',
    });
    return { out: r.stdout, err: r.stderr, code: 0 };
  } catch (e) {
    const x = e as { stdout?: string; stderr?: string; code?: number };
    return { out: x.stdout ?? '', err: x.stderr ?? '', code: typeof x.code === 'number' ? x.code : -1 };
  }
}

before(async () => {
  try {
    await run('ip', ['netns', 'add', ns]);
    nsMade = true;
    dev = netns.run(`/run/netns/${ns}`, () => tun.open('oxyc0'));
  } catch (e) {
    refused = (e as { stderr?: string }).stderr?.trim() || (e as Error).message;
    return;
  }
  body = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i += 4) body.writeUInt32LE((i * 2654435761) >>> 0, i);
  web = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-length': SIZE });
    res.end(body);
  });
  web.listen(0, '127.0.0.1');
  await once(web, 'listening');
  webPort = (web.address() as { port: number }).port;
  oxy = await startApp(app, { settings: { endpoints: { main: { addr: '127.0.0.1:0' } } } });

  client = createMasqueClient({ proxy: `http://${oxy.address()}`, httpVersion: '2' });
  const t = await client.connectIp();
  tunnel = t;
  await waitUntil(() => t.assigned.some((a) => a.version === 4), 'an IPv4 address assigned');
  const mine = t.assigned.find((a) => a.version === 4)!.address;
  for (const args of [
    ['link', 'set', 'lo', 'up'],
    ['addr', 'add', `${mine}/32`, 'dev', 'oxyc0'],
    ['link', 'set', 'oxyc0', 'up', 'mtu', '1400'],
    ['route', 'add', 'default', 'dev', 'oxyc0'],
  ])
    await run('ip', ['-n', ns, ...args]);
  // The bridge: the namespace's packets into the tunnel, the tunnel's packets into the device.
  const d = dev;
  d.on('packets', (ps: Buffer[]) => {
    // The namespace may still send after `after()` closed the client and before the device.
    if (t.closed) return;
    for (const p of ps) t.send(p);
  });
  void (async () => {
    for await (const p of t) d.write([Buffer.from(p)]);
  })().catch(() => {});
});

after(async () => {
  await client?.close().catch(() => {});
  dev?.close();
  if (nsMade) await run('ip', ['netns', 'del', ns]).catch(() => {});
  await oxy?.stop();
  web?.close();
});

test('ping from a namespace reaches the CONNECT-IP gateway', async (t) => {
  if (refused !== null) return t.skip(`the kernel refused a namespace or TUN device: ${refused}`);
  const gw = '100.64.0.1';
  const r = await inNs(['ping', '-c', '2', '-W', '3', gw], 15_000);
  assert.equal(r.code, 0, `ping failed: ${r.out}${r.err}`);
  assert.match(r.out, /2 received/);
});

test('curl in the namespace downloads through CONNECT-IP, upgraded to TCP (sha256 checked)', async (t) => {
  if (refused !== null) return t.skip(`the kernel refused a namespace or TUN device: ${refused}`);
  const r = await inNs(['sh', '-c', `curl -sS --max-time 50 http://${HTTP}/ | sha256sum`]);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out.split(' ')[0], createHash('sha256').update(body).digest('hex'));
  // The flow's own audit record: a stream of kind ip-tcp to the original destination.
  await waitUntil(
    () => oxy.auditRecords().some((a) => a.request_kind === 'ip-tcp' && String(a.target).startsWith(HTTP)),
    'the upgraded flow audited',
  );
  assert.ok(tunnel !== null && !tunnel.closed);
});
