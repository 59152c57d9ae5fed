/**
 * CONNECT-IP (RFC 9484) served on an `http` endpoint, with the project's client (`oxy/masque`)
 * over HTTP/2 extended CONNECT and HTTP/1.1 Upgrade: the assigned address and routes, pings to
 * the gateway answered by the IP pipeline,
 * packets outside the address or scope dropped and counted, pool exhaustion (503 with
 * Proxy-Status), malformed capsules closing the tunnel, one audit record per tunnel.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import { after, describe, it } from 'node:test';
import { renderMetrics } from 'foundations/telemetry';
import { createMasqueClient, type IpTunnel, MasqueRefusedError } from '../src/masque/client.ts';
import { encodeDatagramCapsule } from '../src/protocols/capsule/codec.ts';
import { buildIp, icmpMessage } from '../src/protocols/ip/builder.ts';
import { IP_PROTO } from '../src/protocols/ip/packet.ts';
import { hooksApp, startApp, waitUntil } from '../src/testing/index.ts';

const oxy = await startApp(hooksApp(), {
  settings: {
    endpoints: { main: { masque: { ip_pool: { ipv4: '100.64.0.0/29', ipv6: 'fd00:64::/120' } } } },
  },
});
// A pool of one IPv4 address (100.64.0.2 in a /30) and no IPv6, to exhaust.
const tiny = await startApp(hooksApp(), {
  settings: { endpoints: { main: { masque: { ip_pool: { ipv4: '100.65.0.0/30', ipv6: '' } } } } },
});
after(async () => {
  await tiny.stop();
  await oxy.stop();
});

const versions = ['2', '1.1'] as const;

function ping(src: string, dst: string, seq: number): Buffer {
  const v6 = src.includes(':');
  return buildIp({
    src,
    dst,
    protocol: v6 ? IP_PROTO.ICMPV6 : IP_PROTO.ICMP,
    payload: icmpMessage(v6 ? 128 : 8, 0, (0x1234 << 16) | seq, Buffer.from(`ping ${seq}`)),
  });
}

async function next(t: IpTunnel): Promise<Buffer> {
  for await (const d of t) return Buffer.from(d);
  throw new Error('tunnel closed without a packet');
}

async function dropped(reason: string): Promise<number> {
  const text = await renderMetrics();
  const m = new RegExp(`connect_ip_packets_dropped_total\\{[^}]*reason="${reason}"[^}]*\\} (\\d+)`).exec(
    text,
  );
  return m === null ? 0 : Number(m[1]);
}

describe('CONNECT-IP', () => {
  for (const v of versions) {
    it(`assigns an address, advertises the scope and answers pings to the gateway over HTTP/${v}`, async () => {
      const client = createMasqueClient({ proxy: `http://${oxy.address()}`, httpVersion: v });
      const audits = oxy.auditRecords().length;
      const tunnel = await client.connectIp({ target: '192.0.2.0/24', ipproto: '*' });
      assert.equal(tunnel.status, v === '2' ? 200 : 101);
      await waitUntil(() => tunnel.assigned.length > 0 && tunnel.routes.length > 0, 'address and routes');
      const v4 = tunnel.assigned.find((a) => a.version === 4);
      const v6 = tunnel.assigned.find((a) => a.version === 6);
      assert.match(v4?.address ?? '', /^100\.64\.0\.[2-6]$/);
      assert.equal(v4?.prefixLength, 32);
      assert.match(v6?.address ?? '', /^fd00:64::/);
      assert.equal(v6?.prefixLength, 128);
      assert.deepEqual(tunnel.routes, [{ version: 4, start: '192.0.2.0', end: '192.0.2.255', protocol: 0 }]);

      // ADDRESS_REQUEST: answered with our address under the request's ID.
      const answer = await tunnel.requestAddresses([{ version: 4 }]);
      assert.deepEqual(answer, [{ ...v4, requestId: 1 }]);

      for (const [src, gw] of [
        [v4!.address, '100.64.0.1'],
        [v6!.address, 'fd00:64::1'],
      ] as const) {
        tunnel.send(ping(src, gw, 7));
        const reply = await next(tunnel);
        const six = src.includes(':');
        const l4 = six ? 40 : 20;
        assert.equal(reply[l4], six ? 129 : 0, 'an echo reply');
        assert.equal(reply.subarray(l4 + 8).toString(), 'ping 7');
      }
      await client.close();
      const records = await oxy.waitForAudit(audits + 1);
      const rec = records[records.length - 1]!;
      assert.equal(rec.kind, 'tunnel');
      assert.equal(rec.request_kind, 'connect-ip');
      assert.equal(rec.datagrams_up, 2);
      assert.equal(rec.datagrams_down, 2);
    });
  }

  it('drops and counts packets from another source, outside the scope, or malformed', async () => {
    const client = createMasqueClient({ proxy: `http://${oxy.address()}` });
    const tunnel = await client.connectIp({ target: '192.0.2.0/24', ipproto: 17 });
    await waitUntil(() => tunnel.assigned.length > 0, 'an address');
    const me = tunnel.assigned.find((a) => a.version === 4)!.address;
    const [source, scope, malformed] = [
      await dropped('source'),
      await dropped('scope'),
      await dropped('malformed'),
    ];
    tunnel.send(ping('100.64.0.99', '100.64.0.1', 1)); // not our address
    tunnel.send(ping(me, '198.51.100.1', 2)); // outside 192.0.2.0/24
    tunnel.send(ping(me, '192.0.2.9', 3)); // inside the prefix, but ICMP where ipproto is 17
    tunnel.send(Buffer.from('not an IP packet'));
    // Packets are handled in order: once the ping sent after them is answered, they were judged.
    tunnel.send(ping(me, '100.64.0.1', 4));
    assert.equal((await next(tunnel)).subarray(28).toString(), 'ping 4');
    assert.equal((await dropped('source')) - source, 1);
    assert.equal((await dropped('scope')) - scope, 2);
    assert.equal((await dropped('malformed')) - malformed, 1);
    await client.close();
  });

  it('answers 503 with Proxy-Status when the pool is exhausted, and reuses released addresses', async () => {
    const client = createMasqueClient({ proxy: `http://${tiny.address()}` });
    const first = await client.connectIp();
    await assert.rejects(client.connectIp(), (e: unknown) => {
      assert.ok(e instanceof MasqueRefusedError);
      assert.equal(e.status, 503);
      assert.equal(e.proxyStatus[0]?.error, 'connection_limit_reached');
      assert.match(e.proxyStatus[0]?.details ?? '', /pool is exhausted/);
      return true;
    });
    await first.close();
    // The release follows the stream's close on the proxy's side: retry for a moment.
    let again: IpTunnel | null = null;
    for (let i = 0; i < 50 && again === null; i++) {
      again = await client.connectIp().catch(() => null);
      if (again === null) await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(again !== null, 'the released address is leased again');
    if (again.assigned.length === 0) await once(again, 'addressAssign');
    assert.equal(again.assigned[0]?.address, '100.65.0.2');
    await again.close();
    await client.close();
  });

  it('closes the tunnel cleanly on a malformed capsule (RST_STREAM PROTOCOL_ERROR), audited', async () => {
    const audits = oxy.auditRecords().length;
    const session = http2.connect(`http://${oxy.address()}`);
    try {
      await new Promise((resolve) => session.once('remoteSettings', resolve));
      const stream = session.request(
        {
          ':method': 'CONNECT',
          ':protocol': 'connect-ip',
          ':scheme': 'http',
          ':authority': oxy.address(),
          ':path': '/.well-known/masque/ip/*/*/',
          'capsule-protocol': '?1',
        },
        { endStream: false },
      );
      stream.on('error', () => {});
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) =>
        stream.once('response', resolve),
      );
      assert.equal(headers[':status'], 200);
      // An ADDRESS_ASSIGN capsule (type 1) whose value is cut short: malformed.
      stream.write(Uint8Array.of(0x01, 0x03, 0x00, 0x04, 0x64));
      stream.resume();
      await new Promise((resolve) => stream.once('close', resolve));
      assert.equal(stream.rstCode, http2.constants.NGHTTP2_PROTOCOL_ERROR);
      const records = await oxy.waitForAudit(audits + 1);
      assert.equal(records[records.length - 1]!.close_reason, 'OXY_ERR_CAPSULE_MALFORMED');
    } finally {
      session.destroy();
    }
  });

  it('drops and counts packets to a client that does not read, beyond the bounded queue', async () => {
    // The tiny pool has one address, so the client knows it without reading ADDRESS_ASSIGN.
    const before = await dropped('client_backpressure');
    const session = http2.connect(`http://${tiny.address()}`);
    try {
      await new Promise((resolve) => session.once('remoteSettings', resolve));
      const stream = session.request(
        {
          ':method': 'CONNECT',
          ':protocol': 'connect-ip',
          ':scheme': 'http',
          ':authority': tiny.address(),
          ':path': '/.well-known/masque/ip/*/*/',
          'capsule-protocol': '?1',
        },
        { endStream: false },
      );
      stream.on('error', () => {});
      await new Promise((resolve) => stream.once('response', resolve));
      stream.pause();
      const body = Buffer.alloc(1200, 0x61);
      const capsule = Buffer.from(
        encodeDatagramCapsule(
          buildIp({
            src: '100.65.0.2',
            dst: '100.65.0.1',
            protocol: IP_PROTO.ICMP,
            payload: icmpMessage(8, 0, 1, body),
          }),
        ),
      );
      // About 2.5 MiB of echo replies for a client that reads none of them (queue bound: 1 MiB).
      for (let i = 0; i < 2000; i++) stream.write(capsule);
      await waitUntil(() => stream.writableLength === 0, 'the pings sent', 10_000);
      let now = before;
      for (let i = 0; i < 100 && now === before; i++) {
        await new Promise((r) => setTimeout(r, 50));
        now = await dropped('client_backpressure');
      }
      assert.ok(now > before, 'replies beyond the queue bound were dropped and counted');
    } finally {
      session.destroy();
    }
  });
  // The TCP download over CONNECT-IP, with a real kernel client: masque-connect-ip-netns.test.ts.
});
