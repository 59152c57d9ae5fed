/**
 * CONNECT-IP (RFC 9484) with a DNS-name target, with the project's client (`oxy/masque`) over
 * HTTP/2 and HTTP/1.1: the name is resolved through the egress pipeline (here a
 * `dnsResolveOverride` hook for `*.hooked.test`, and the test DNS server for the rest), its
 * addresses past `blocked_cidrs` are the scope and the ROUTE_ADVERTISEMENT ranges, packets to
 * them reach the target (a UDP echo on 127.0.0.1) while others are dropped; a name that does
 * not resolve gets 502 `dns_error`, one resolving only into blocked ranges 403, one without an
 * address of a family the pool serves 502 `destination_ip_unroutable`, all with `Proxy-Status`
 * and an audit record. Every address is loopback or documentation space that is blocked.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { renderMetrics } from 'foundations/telemetry';
import { createMasqueClient, type IpTunnel, MasqueRefusedError } from '../src/masque/client.ts';
import { buildIp, udpDatagram } from '../src/protocols/ip/builder.ts';
import { IP_PROTO, parseIp } from '../src/protocols/ip/packet.ts';
import { udpPayload } from '../src/protocols/udp/header.ts';
import {
  type AppUnderTest,
  hooksApp,
  startApp,
  startDnsServer,
  type TestDnsServer,
  waitUntil,
} from '../src/testing/index.ts';

/** What the resolver hook answers; other names go to the built-in resolver (the test DNS server). */
const HOOKED: Record<string, string[]> = {
  'echo.hooked.test': ['127.0.0.1', '::1', '127.0.0.1'],
  'partly.hooked.test': ['203.0.113.9', '127.0.0.1'],
  'blocked.hooked.test': ['203.0.113.5', '203.0.113.6'],
  'six.hooked.test': ['::1'],
};
const resolved: string[] = [];

let dns: TestDnsServer;
let echo: dgram.Socket;
let echoPort: number;
let echoed = 0;
let oxy: AppUnderTest;
/** A pool of IPv4 addresses only. */
let v4only: AppUnderTest;

before(async () => {
  dns = await startDnsServer({ records: {} });
  echo = dgram.createSocket('udp4');
  echo.on('message', (msg, from) => {
    echoed++;
    echo.send(msg, from.port, from.address);
  });
  echo.bind(0, '127.0.0.1');
  await once(echo, 'listening');
  echoPort = echo.address().port;
  const app = hooksApp({
    egress: {
      dnsResolveOverride: (host) => {
        resolved.push(host);
        return HOOKED[host];
      },
    },
  });
  const egress = { blocked_cidrs: ['203.0.113.0/24'], dns: { nameservers: [dns.address] } };
  oxy = await startApp(app, {
    settings: {
      egress,
      endpoints: { main: { masque: { ip_pool: { ipv4: '100.64.0.0/29', ipv6: 'fd00:64::/120' } } } },
    },
  });
  v4only = await startApp(app, {
    settings: {
      egress,
      endpoints: { main: { masque: { ip_pool: { ipv4: '100.66.0.0/29', ipv6: '' } } } },
    },
  });
});

after(async () => {
  await v4only.stop();
  await oxy.stop();
  echo.close();
  await dns.close();
});

async function next(t: IpTunnel): Promise<Buffer> {
  for await (const d of t) return Buffer.from(d);
  throw new Error('tunnel closed without a packet');
}

async function droppedScope(): Promise<number> {
  const m = /connect_ip_packets_dropped_total\{[^}]*reason="scope"[^}]*\} (\d+)/.exec(await renderMetrics());
  return m === null ? 0 : Number(m[1]);
}

const udp = (src: string, dst: string, text: string) =>
  buildIp({ src, dst, protocol: IP_PROTO.UDP, payload: udpDatagram(40000, echoPort, Buffer.from(text)) });

async function refusal(p: Promise<unknown>): Promise<MasqueRefusedError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof MasqueRefusedError) return e;
    throw e;
  }
  assert.fail('the request was not refused');
}

describe('CONNECT-IP to a DNS name', () => {
  for (const v of ['2', '1.1'] as const) {
    it(`advertises the resolved addresses and carries packets only to them over HTTP/${v}`, async () => {
      const client = createMasqueClient({ proxy: `http://${oxy.address()}`, httpVersion: v });
      try {
        const tunnel = await client.connectIp({ target: 'echo.hooked.test', ipproto: 17 });
        assert.equal(tunnel.status, v === '2' ? 200 : 101);
        assert.ok(resolved.includes('echo.hooked.test'), 'the resolver hook was asked');
        await waitUntil(() => tunnel.assigned.length > 0 && tunnel.routes.length > 0, 'address and routes');
        // Each address alone, once, IPv4 first, with the template's protocol.
        assert.deepEqual(tunnel.routes, [
          { version: 4, start: '127.0.0.1', end: '127.0.0.1', protocol: 17 },
          { version: 6, start: '::1', end: '::1', protocol: 17 },
        ]);
        const me = tunnel.assigned.find((a) => a.version === 4)!.address;
        const [scope, before] = [await droppedScope(), echoed];
        tunnel.send(udp(me, '127.0.0.2', 'elsewhere')); // outside the resolved scope
        tunnel.send(udp(me, '127.0.0.1', `hello ${v}`));
        const reply = parseIp(await next(tunnel));
        assert.equal(reply.protocol, IP_PROTO.UDP);
        assert.equal(udpPayload(reply).toString(), `hello ${v}`);
        assert.equal((await droppedScope()) - scope, 1, 'the packet outside the scope was dropped');
        assert.equal(echoed - before, 1, 'only the packet in scope reached the echo');
      } finally {
        await client.close();
      }
    });
  }

  it('leaves blocked addresses out of the scope', async () => {
    const client = createMasqueClient({ proxy: `http://${oxy.address()}` });
    try {
      const tunnel = await client.connectIp({ target: 'partly.hooked.test' });
      await waitUntil(() => tunnel.routes.length > 0, 'routes');
      assert.deepEqual(tunnel.routes, [{ version: 4, start: '127.0.0.1', end: '127.0.0.1', protocol: 0 }]);
    } finally {
      await client.close();
    }
  });

  it('answers 403 with Proxy-Status when every address is blocked, over HTTP/2', async () => {
    const client = createMasqueClient({ proxy: `http://${oxy.address()}` });
    const audits = oxy.auditRecords().length;
    try {
      const e = await refusal(client.connectIp({ target: 'blocked.hooked.test' }));
      assert.equal(e.status, 403);
      assert.equal(e.proxyStatus[0]?.error, 'destination_ip_prohibited');
      const records = await oxy.waitForAudit(audits + 1);
      const rec = records.find((r) => r.request_kind === 'connect-ip' && r.status === 403);
      assert.match(rec?.target ?? '', /^blocked\.hooked\.test:/);
    } finally {
      await client.close();
    }
  });

  it('answers 502 dns_error with Proxy-Status for a name that does not resolve, over HTTP/1.1', async () => {
    const client = createMasqueClient({ proxy: `http://${oxy.address()}`, httpVersion: '1.1' });
    try {
      const e = await refusal(client.connectIp({ target: 'nowhere.test' }));
      assert.equal(e.status, 502);
      assert.equal(e.proxyStatus[0]?.error, 'dns_error');
      assert.equal(e.proxyStatus[0]?.params['rcode'], 'NXDOMAIN');
      assert.equal(e.proxyStatus[0]?.params['next-hop'], 'nowhere.test');
      assert.ok(
        dns.log.some((q) => q.name === 'nowhere.test'),
        'the built-in resolver asked the nameserver',
      );
    } finally {
      await client.close();
    }
  });

  it('answers 502 destination_ip_unroutable when no address is of a family the pool serves', async () => {
    const client = createMasqueClient({ proxy: `http://${v4only.address()}` });
    try {
      const e = await refusal(client.connectIp({ target: 'six.hooked.test' }));
      assert.equal(e.status, 502);
      assert.equal(e.proxyStatus[0]?.error, 'destination_ip_unroutable');
    } finally {
      await client.close();
    }
  });
});
