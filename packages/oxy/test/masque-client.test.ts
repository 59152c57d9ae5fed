/**
 * The `oxy/masque` client against a MASQUE server on loopback (`fixtures/masque-server.ts`),
 * over HTTP/2 extended CONNECT and HTTP/1.1 Upgrade: real sockets, a real UDP echo peer and
 * the test DNS server.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { isOxyError } from '../src/errors.ts';
import { createMasqueClient, MasqueRefusedError, type UdpTunnel } from '../src/masque/client.ts';
import {
  DNS_CLASS_IN,
  DNS_RCODE,
  DNS_TYPE,
  decodeDnsMessage,
  encodeDnsMessage,
} from '../src/protocols/dns/codec.ts';
import { generateCertificate } from '../src/testing/certs.ts';
import { startDnsServer, type TestDnsServer } from '../src/testing/dns-server.ts';
import { startMasqueServer, type TestMasqueServer } from './fixtures/masque-server.ts';

let server: TestMasqueServer;
let echo: dgram.Socket;
let echoPort: number;
let dns: TestDnsServer;

before(async () => {
  server = await startMasqueServer({ floodCount: 2_000 });
  echo = dgram.createSocket('udp4');
  echo.on('message', (msg, rinfo) => echo.send(msg, rinfo.port, rinfo.address));
  await new Promise<void>((resolve) => echo.bind(0, '127.0.0.1', resolve));
  echoPort = (echo.address() as AddressInfo).port;
  dns = await startDnsServer({ records: { 'www.example.test': { A: ['192.0.2.44'], ttl: 30 } } });
});

after(async () => {
  await server.close();
  echo.close();
  await dns.close();
});

const versions = ['2', '1.1'] as const;
const proxyFor = (v: '2' | '1.1') => `http://127.0.0.1:${v === '2' ? server.h2Port : server.h1Port}`;

function dnsQuery(id: number, name: string): Uint8Array {
  return encodeDnsMessage({
    header: { id, qr: false, opcode: 0, aa: false, tc: false, rd: true, ra: false, rcode: 0 },
    questions: [{ name, type: DNS_TYPE.A, class: DNS_CLASS_IN }],
    answers: [],
    authorities: [],
    additionals: [],
  });
}

async function nextDatagram(t: UdpTunnel): Promise<Uint8Array> {
  for await (const d of t) return d;
  throw new Error('tunnel closed without a datagram');
}

describe('MASQUE client: CONNECT-UDP', () => {
  it('carries 10,000 datagrams over HTTP/2 with none lost (paced by a window of 64)', async () => {
    const client = createMasqueClient({ proxy: proxyFor('2') });
    const tunnel = await client.connectUdp('127.0.0.1', echoPort);
    assert.equal(tunnel.status, 200);
    assert.equal(tunnel.headers['capsule-protocol'], '?1');
    const total = 10_000;
    const seen = new Uint8Array(total);
    let received = 0;
    let sent = 0;
    const payload = (i: number) => {
      const b = Buffer.alloc(100 + (i % 1100), i & 0xff);
      b.writeUInt32BE(i, 0);
      return b;
    };
    const pump = async () => {
      while (sent < total && sent - received < 64) {
        if (!tunnel.send(payload(sent++))) await tunnel.drain();
      }
    };
    await pump();
    for await (const d of tunnel) {
      const i = Buffer.from(d).readUInt32BE(0);
      assert.equal(seen[i], 0, `datagram ${i} twice`);
      assert.deepEqual(Buffer.from(d), payload(i), `datagram ${i} intact`);
      seen[i] = 1;
      if (++received === total) break;
      await pump();
    }
    assert.equal(
      seen.reduce((a, b) => a + b, 0),
      total,
    );
    await client.close();
    assert.ok(tunnel.closed);
  });

  for (const v of versions) {
    it(`resolves a name through the test DNS server over HTTP/${v}`, async () => {
      const client = createMasqueClient({ proxy: proxyFor(v), httpVersion: v });
      const tunnel = await client.connectUdp('localhost', dns.port);
      assert.equal(tunnel.status, v === '2' ? 200 : 101);
      tunnel.send(dnsQuery(0x4242, 'www.example.test'));
      const answer = decodeDnsMessage(await nextDatagram(tunnel));
      assert.equal(answer.header.id, 0x4242);
      assert.equal(answer.header.rcode, DNS_RCODE.NOERROR);
      assert.deepEqual(
        answer.answers.map((a) => [a.name, a.address, a.ttl]),
        [['www.example.test', '192.0.2.44', 30]],
      );
      await client.close();
    });

    it(`refuses with the RFC status and Proxy-Status over HTTP/${v}`, async () => {
      const client = createMasqueClient({ proxy: proxyFor(v), httpVersion: v });
      const cases = [
        { host: '127.0.0.1', port: 0, status: 400, error: 'http_request_error', details: /target_port 0/ },
        { host: '192.0.2.1', port: 53, status: 403, error: 'destination_ip_prohibited', details: /blocked/ },
        { host: 'nowhere.test', port: 53, status: 502, error: 'dns_error', details: /no such name/ },
      ];
      for (const c of cases) {
        await assert.rejects(client.connectUdp(c.host, c.port), (e: unknown) => {
          assert.ok(e instanceof MasqueRefusedError, String(e));
          assert.equal(e.code, 'OXY_ERR_MASQUE_REFUSED');
          assert.equal(e.status, c.status);
          assert.equal(e.proxyStatus[0]?.proxy, 'test');
          assert.equal(e.proxyStatus[0]?.error, c.error);
          assert.match(e.proxyStatus[0]?.details ?? '', c.details);
          return true;
        });
      }
      assert.equal(client.tunnels, 0);
      await client.close();
    });
  }

  it('runs many tunnels over one HTTP/2 session', async () => {
    const before = server.sessions;
    const client = createMasqueClient({ proxy: proxyFor('2') });
    const tunnels = await Promise.all(
      Array.from({ length: 25 }, () => client.connectUdp('127.0.0.1', echoPort)),
    );
    assert.equal(client.tunnels, 25);
    const replies = await Promise.all(
      tunnels.map(async (t, i) => {
        t.send(Buffer.from(`tunnel ${i}`));
        return Buffer.from(await nextDatagram(t)).toString();
      }),
    );
    assert.deepEqual(
      replies,
      tunnels.map((_, i) => `tunnel ${i}`),
    );
    assert.equal(server.sessions - before, 1);
    await client.close();
    assert.equal(client.tunnels, 0);
  });

  it('pushes back on the proxy when the iterator is slow, losing nothing', async () => {
    const client = createMasqueClient({ proxy: proxyFor('2'), highWaterMark: 8 });
    const tunnel = await client.connectUdp('flood.test', 9);
    let next = 0;
    for await (const d of tunnel) {
      assert.equal(Buffer.from(d).readUInt32BE(0), next);
      if (++next % 200 === 0) await new Promise((r) => setTimeout(r, 5));
      if (next === 2_000) break;
    }
    assert.ok(server.floodBackpressure > 0, 'the server saw flow control');
    await client.close();
  });

  for (const v of versions) {
    it(`fails the tunnel with a typed error on a capsule above the limit over HTTP/${v}`, async () => {
      const client = createMasqueClient({ proxy: proxyFor(v), httpVersion: v });
      const tunnel = await client.connectUdp('garbage.test', 9);
      const errors: unknown[] = [];
      tunnel.on('error', (e) => errors.push(e));
      await assert.rejects(
        nextDatagram(tunnel),
        (e: unknown) => isOxyError(e) && e.code === 'OXY_ERR_CAPSULE_TOO_LARGE',
      );
      assert.equal(errors.length, 1);
      assert.ok(tunnel.closed);
      await client.close();
    });
  }

  it('closes promptly after HTTP/2 refusals whose bodies it did not read (issue 16)', async () => {
    // A refusal (403) and a malformed 2xx (content-type on a capsule response), each with a
    // short body: the client never reads either, and close() used to wait for them forever.
    let n = 0;
    const plain = http2.createServer({ settings: { enableConnectProtocol: true } });
    plain.on('stream', (s) => {
      if (n++ % 2 === 0) s.respond({ ':status': 403, 'proxy-status': 'p; error=destination_ip_prohibited' });
      else s.respond({ ':status': 200, 'content-type': 'text/plain' });
      s.end('not for you\n');
    });
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
    try {
      const client = createMasqueClient({
        proxy: `http://127.0.0.1:${(plain.address() as AddressInfo).port}`,
      });
      await assert.rejects(
        client.connectUdp('127.0.0.1', echoPort),
        (e: unknown) => (e as MasqueRefusedError).status === 403,
      );
      await assert.rejects(client.connectUdp('127.0.0.1', echoPort), /content-type/);
      const closed = await Promise.race([
        client.close().then(() => 'closed'),
        new Promise((resolve) => setTimeout(resolve, 3000, 'hung')),
      ]);
      assert.equal(closed, 'closed');
    } finally {
      plain.close();
    }
  });

  it('refuses to use a proxy that does not enable extended CONNECT', async () => {
    const plain = await startMasqueServer({ enableConnectProtocol: false });
    try {
      const client = createMasqueClient({ proxy: `http://127.0.0.1:${plain.h2Port}` });
      await assert.rejects(client.connectUdp('127.0.0.1', echoPort), /SETTINGS_ENABLE_CONNECT_PROTOCOL/);
      await client.close();
    } finally {
      await plain.close();
    }
  });

  it('settles on abort, on an unreachable proxy and on a silent one', async () => {
    const client = createMasqueClient({ proxy: proxyFor('2') });
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(
      client.connectUdp('127.0.0.1', echoPort, { signal: ac.signal }),
      (e: unknown) => isOxyError(e) && e.code === 'OXY_ERR_ABORTED',
    );
    await client.close();
    const dead = createMasqueClient({ proxy: 'http://127.0.0.1:1', httpVersion: '1.1' });
    await assert.rejects(
      dead.connectUdp('127.0.0.1', echoPort),
      (e: unknown) => isOxyError(e) && e.code === 'OXY_ERR_CONNECT_REFUSED',
    );
    await dead.close();
    // A proxy that accepts but never speaks: the timeout covers the session's set-up.
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((sock) => sockets.add(sock));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      for (const v of versions) {
        const port = (silent.address() as AddressInfo).port;
        const mute = createMasqueClient({
          proxy: `http://127.0.0.1:${port}`,
          httpVersion: v,
          connectTimeoutMs: 200,
        });
        await assert.rejects(
          mute.connectUdp('127.0.0.1', echoPort),
          (e: unknown) => isOxyError(e) && e.code === 'OXY_ERR_CONNECT_TIMEOUT',
        );
        await mute.close();
      }
    } finally {
      for (const sock of sockets) sock.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});

describe('MASQUE client over TLS', () => {
  it('opens tunnels through an https proxy, HTTP/2 chosen by ALPN and HTTP/1.1', async () => {
    const cert = await generateCertificate();
    const secure = await startMasqueServer({ tls: { cert: cert.certPem, key: cert.keyPem } });
    try {
      for (const v of versions) {
        const port = v === '2' ? secure.h2Port : secure.h1Port;
        const client = createMasqueClient({
          proxy: `https://127.0.0.1:${port}`,
          httpVersion: v,
          tls: { ca: cert.caPem },
        });
        const tunnel = await client.connectUdp('127.0.0.1', dns.port);
        tunnel.send(dnsQuery(7, 'www.example.test'));
        assert.deepEqual(
          decodeDnsMessage(await nextDatagram(tunnel)).answers.map((a) => a.address),
          ['192.0.2.44'],
        );
        await client.close();
        // An untrusted certificate fails the open, typed.
        const untrusting = createMasqueClient({ proxy: `https://127.0.0.1:${port}`, httpVersion: v });
        await assert.rejects(
          untrusting.connectUdp('127.0.0.1', dns.port),
          (e: unknown) => isOxyError(e) && e.code === 'OXY_ERR_UPSTREAM_FAILED',
        );
        await untrusting.close();
      }
    } finally {
      await secure.close();
    }
  });

  it('reaches an IPv6 literal target end to end', async () => {
    const echo6 = dgram.createSocket('udp6');
    echo6.on('message', (msg, rinfo) => echo6.send(msg, rinfo.port, rinfo.address));
    await new Promise<void>((resolve) => echo6.bind(0, '::1', resolve));
    try {
      const client = createMasqueClient({ proxy: proxyFor('2') });
      const tunnel = await client.connectUdp('::1', (echo6.address() as AddressInfo).port);
      tunnel.send(Buffer.from('over v6'));
      assert.equal(Buffer.from(await nextDatagram(tunnel)).toString(), 'over v6');
      await client.close();
    } finally {
      echo6.close();
    }
  });
});

describe('MASQUE server side (acceptMasqueTunnel)', () => {
  it('resets the stream with PROTOCOL_ERROR when the client sends a malformed capsule', async () => {
    const session = http2.connect(`http://127.0.0.1:${server.h2Port}`);
    try {
      await new Promise((resolve) => session.once('remoteSettings', resolve));
      const stream = session.request(
        {
          ':method': 'CONNECT',
          ':protocol': 'connect-udp',
          ':scheme': 'http',
          ':authority': `127.0.0.1:${server.h2Port}`,
          ':path': `/.well-known/masque/udp/127.0.0.1/${echoPort}/`,
        },
        { endStream: false },
      );
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) =>
        stream.once('response', resolve),
      );
      const errors: Error[] = [];
      stream.on('error', (e) => errors.push(e));
      assert.equal(headers[':status'], 200);
      // A DATAGRAM capsule declaring 2^30 bytes: above the server's limit.
      stream.write(Uint8Array.of(0x00, 0xc0, 0, 0, 0, 0x40, 0, 0, 0));
      stream.resume();
      await new Promise((resolve) => stream.once('close', resolve));
      assert.equal(stream.rstCode, http2.constants.NGHTTP2_PROTOCOL_ERROR);
      assert.match(String(errors[0]), /NGHTTP2_PROTOCOL_ERROR/);
    } finally {
      session.destroy();
    }
  });
});

describe('MASQUE client: CONNECT-IP', () => {
  for (const v of versions) {
    it(`gets an address and routes, and exchanges IP packets, over HTTP/${v}`, async () => {
      const client = createMasqueClient({ proxy: proxyFor(v), httpVersion: v });
      const tunnel = await client.connectIp({ target: '10.9.0.0/16', ipproto: 17 });
      const routes = new Promise((resolve) => {
        // Sent with the answer: it may have arrived already, or arrive later.
        if (tunnel.routes.length > 0) resolve(tunnel.routes);
        else tunnel.once('routeAdvertisement', resolve);
      });
      const assigned = await tunnel.requestAddresses([{ version: 4 }]);
      assert.deepEqual(assigned, [{ requestId: 1, version: 4, address: '10.9.0.2', prefixLength: 32 }]);
      assert.deepEqual(tunnel.assigned, assigned);
      assert.deepEqual(await routes, [{ version: 4, start: '10.9.0.0', end: '10.9.255.255', protocol: 0 }]);
      // A minimal IPv4 header from our address to 10.9.1.1: the server reflects it.
      const packet = Buffer.from(
        '450000200000400040110000' + '0a090002' + '0a090101' + '0000000000000000',
        'hex',
      );
      tunnel.send(packet);
      for await (const d of tunnel) {
        assert.equal(Buffer.from(d).subarray(12, 20).toString('hex'), '0a0901010a090002');
        break;
      }
      await client.close();
    });
  }
});
