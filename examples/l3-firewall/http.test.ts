/**
 * The layer-3 firewall's HTTP rules with the real kernel on the client side: a namespace made
 * by the test, whose default route is a TUN device bridged to the firewall's SEQPACKET endpoint.
 * `curl` inside it reaches a test address on port 80; the flow is upgraded to a stream, its
 * first bytes are HTTP, so each request is parsed and gets the HTTP firewall's rules: a blocked
 * path is answered 403, an allowed one reaches the server. A second app, composed with the
 * firewall, maps the test address to a loopback server (nothing leaves the machine).
 *
 * Skips, with the kernel's message, only where namespaces or TUN devices are refused.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { netns, seqpacket, type TunDevice, tun } from 'native';
import { composeApps, defineApp, EgressDecision } from 'oxy';
import { type AppUnderTest, startApp } from 'oxy/testing';
import { app as firewall } from './app.ts';

const run = promisify(execFile);
const WEB = '198.18.0.80';
const ns = `oxy-l3fw-${process.pid}`;
const dir = mkdtempSync(path.join(tmpdir(), 'oxy-l3fwh-'));
let refused: string | null = null;
let web: http.Server;
let webPort = 0;
let proxy: AppUnderTest | null = null;
let dev: TunDevice | null = null;
let nsMade = false;
let bridge: { close(): void } | null = null;
const served: string[] = [];

const mapping = defineApp({
  name: 'test-egress',
  version: '1.0.0',
  description: 'maps the test address to a loopback server',
  start: () => ({
    egress: {
      handleConnection: (target) =>
        target.host === WEB
          ? EgressDecision.direct({ host: '127.0.0.1', port: webPort })
          : EgressDecision.block('not a test address'),
    },
  }),
});

before(async () => {
  try {
    await run('ip', ['netns', 'add', ns]);
    nsMade = true;
    dev = netns.run(`/run/netns/${ns}`, () => tun.open('oxyc0'));
  } catch (e) {
    refused = (e as { stderr?: string }).stderr?.trim() || (e as Error).message;
    return;
  }
  web = http.createServer((req, res) => {
    served.push(req.url ?? '');
    res.end(`hello from ${req.url}`);
  });
  web.listen(0, '127.0.0.1');
  await once(web, 'listening');
  webPort = (web.address() as { port: number }).port;
  const sock = path.join(dir, 'fw.sock');
  proxy = await startApp(composeApps(firewall, mapping), {
    settings: {
      endpoints: { main: { addr: '127.0.0.1:0' }, tunnels: { protocol: 'ip_seqpacket', addr: sock } },
      app: {
        'l3-firewall': { blocked_hosts: [], blocked_paths: ['/admin'], tcp_ports: [80], udp_ports: [53] },
      },
    },
  });
  for (const args of [
    ['link', 'set', 'lo', 'up'],
    ['addr', 'add', '10.9.9.2/32', 'dev', 'oxyc0'],
    ['link', 'set', 'oxyc0', 'up', 'mtu', '1500'],
    ['route', 'add', 'default', 'dev', 'oxyc0'],
  ])
    await run('ip', ['-n', ns, ...args]);
  const s = await seqpacket.connect(sock);
  bridge = s;
  s.send(Buffer.from('tenant'));
  const d = dev;
  let open = true;
  d.on('packets', (ps: Buffer[]) => {
    if (open) s.send(ps);
  });
  s.on('messages', (ms: Buffer[]) => {
    if (open) d.write(ms);
  });
  s.on('close', () => {
    open = false;
  });
});

after(async () => {
  bridge?.close();
  dev?.close();
  if (nsMade) await run('ip', ['netns', 'del', ns]).catch(() => {});
  await proxy?.stop();
  web?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function curl(url: string): Promise<{ code: string; body: string }> {
  const r = await run(
    'ip',
    ['netns', 'exec', ns, 'curl', '-sS', '--max-time', '10', '-w', '\n%{http_code}', url],
    { timeout: 15_000, encoding: 'utf8' },
  );
  const lines = r.stdout.trimEnd().split('\n');
  return { code: lines.pop() ?? '', body: lines.join('\n') };
}

test('HTTP inside an upgraded port-80 flow gets the HTTP firewall rules', async (t) => {
  if (refused !== null) return t.skip(`the kernel refused a namespace or TUN device: ${refused}`);
  const ok = await curl(`http://${WEB}/hello`);
  assert.deepEqual(ok, { code: '200', body: 'hello from /hello' });
  const blocked = await curl(`http://${WEB}/admin/users`);
  assert.equal(blocked.code, '403');
  assert.match(blocked.body, /path blocked by firewall/);
  assert.deepEqual(served, ['/hello'], 'the blocked request never reached the server');
  // Each HTTP request has its own audit record, linked to its flow's stream (one flow per curl).
  const records = await proxy!.waitForAudit(4);
  const flows = new Set(records.filter((r) => r.request_kind === 'ip-tcp').map((r) => r.request_id));
  const inner = records.filter((r) => r.request_kind === 'tunnelled');
  assert.equal(inner.length, 2, 'both requests audited');
  assert.ok(inner.every((r) => flows.has(r.parent_request_id ?? '')));
});
