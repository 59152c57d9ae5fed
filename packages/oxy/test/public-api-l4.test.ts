/**
 * The layer-4 hooks as an app writes them from the public entry point alone (`oxy`, i.e.
 * `src/index.ts`): a `DatagramHook` built with `DatagramVerdict` on a `udp` endpoint, and the
 * documented `ProxyProtocolHook` that requires a verified client certificate from the SSL TLV,
 * fed the header haproxy really sends for a TLS client without a certificate (SSL bit only,
 * `verify` 0), which must be refused, and its `proxyHeaderView` must not say `verified`.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import {
  DatagramVerdict,
  defineApp,
  IngressDecision,
  PP2_CLIENT,
  type ProxyHeader,
  type ProxyProtocolHook,
  proxyHeaderView,
} from '../src/index.ts';
import { encodeProxyHeader } from '../src/protocols/proxy-protocol/index.ts';
import { type AppUnderTest, startApp, startTcpEcho } from '../src/testing/index.ts';

const echo = dgram.createSocket('udp4');
echo.on('message', (msg, from) => echo.send(msg, from.port, from.address));
echo.bind(0, '127.0.0.1');
await once(echo, 'listening');
const tcpEcho = await startTcpEcho();
const seen: ProxyHeader[] = [];

// The hook exactly as docs/proxy-protocol.md shows it.
const proxyProtocol: ProxyProtocolHook = {
  handleConnection(header) {
    seen.push(header);
    const ssl = header.tlvs.find((t) => t.type === 'ssl');
    const certified = ssl !== undefined && (ssl.client & PP2_CLIENT.CERT_CONN) !== 0 && ssl.verify === 0;
    if (!certified) return IngressDecision.block('client certificate required');
    return IngressDecision.allow();
  },
};

const app = defineApp({
  name: 'public-l4',
  version: '1.0.0',
  description: 'layer-4 hooks from the public API',
  start: () => ({
    proxyProtocol,
    datagram: {
      handleDatagram(data, direction) {
        if (direction !== 'up') return undefined;
        const text = Buffer.from(data).toString();
        if (text.startsWith('drop')) return DatagramVerdict.drop('test');
        if (text.startsWith('up:')) return DatagramVerdict.rewrite(Buffer.from(text.toUpperCase()));
        return DatagramVerdict.pass();
      },
    },
  }),
});

let oxy: AppUnderTest;
after(async () => {
  await oxy?.stop();
  echo.close();
  await tcpEcho.close();
});

test('DatagramVerdict from oxy: drop and rewrite on a udp endpoint', async () => {
  oxy = await startApp(app, {
    settings: {
      egress: { blocked_cidrs: [] },
      endpoints: {
        main: {},
        dgram: { protocol: 'udp', addr: '127.0.0.1:0', udp: { target: `127.0.0.1:${echo.address().port}` } },
        raw: {
          protocol: 'tcp',
          addr: '127.0.0.1:0',
          tcp: { target: tcpEcho.authority },
          proxy_protocol: { enabled: true },
        },
      },
    },
  });
  const port = Number(oxy.address('dgram').split(':').at(-1));
  const s = dgram.createSocket('udp4');
  try {
    s.bind(0, '127.0.0.1');
    await once(s, 'listening');
    const got: string[] = [];
    s.on('message', (m) => got.push(m.toString()));
    for (const m of ['drop me', 'up:hello', 'plain']) s.send(m, port, '127.0.0.1');
    const deadline = Date.now() + 5000;
    while (got.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 100)); // a dropped datagram would have come back by now
    assert.deepEqual(got.sort(), ['UP:HELLO', 'plain']);
  } finally {
    s.close();
  }
});

test("the documented certificate check refuses haproxy's header for a client without a certificate", async () => {
  const [host, port] = oxy.address('raw').split(':');
  const header = (client: number) =>
    encodeProxyHeader(
      {
        addresses: {
          family: 'inet',
          source: { host: '192.0.2.9', port: 4000 + client },
          destination: { host: '127.0.0.1', port: Number(port) },
        },
        tlvs: [{ type: 'ssl', client, verify: 0, version: 'TLSv1.3', unknown: [] }],
      },
      { version: 2 },
    );
  const send = async (client: number): Promise<string> => {
    const c = net.connect(Number(port), host);
    c.on('error', () => {});
    await once(c, 'connect');
    c.write(Buffer.concat([header(client), Buffer.from('ping')]));
    let got = '';
    c.on('data', (d: Buffer) => {
      got += d.toString();
      if (got === 'ping') c.end();
    });
    await once(c, 'close');
    return got;
  };
  // No certificate (what haproxy sends): refused, and the view does not say verified.
  assert.equal(await send(PP2_CLIENT.SSL), '');
  const bare = seen.at(-1) as ProxyHeader;
  assert.equal(proxyHeaderView(bare).tlvs.ssl?.verified, false);
  // A verified certificate on this connection: served.
  assert.equal(await send(PP2_CLIENT.SSL | PP2_CLIENT.CERT_CONN), 'ping');
  assert.equal(proxyHeaderView(seen.at(-1) as ProxyHeader).tlvs.ssl?.verified, true);
});
