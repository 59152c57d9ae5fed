/**
 * Where a `udp` endpoint's sessions go: with PROXY v2 and `udp.target: ~`, each datagram goes
 * to the destination its own header names (one sender, one header source, two destinations:
 * two sessions).
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { after, test } from 'node:test';
import { decodeV2, encodeProxyHeader } from '../src/protocols/proxy-protocol/index.ts';
import { type AppUnderTest, hooksApp, startApp, waitUntil } from '../src/testing/index.ts';

const closers: (() => unknown)[] = [];
after(async () => {
  for (const c of closers.reverse()) await c();
});

/** A UDP server on `host` that answers every datagram with `tag` and the datagram. */
async function taggedEcho(tag: string, host = '127.0.0.1'): Promise<number> {
  const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  s.on('message', (m, from) => s.send(Buffer.concat([Buffer.from(tag), m]), from.port, from.address));
  s.bind(0, host);
  await once(s, 'listening');
  closers.push(() => s.close());
  return s.address().port;
}

async function start(endpoint: Record<string, unknown>): Promise<{ app: AppUnderTest; port: number }> {
  const app = await startApp(hooksApp({}), {
    settings: { endpoints: { main: {}, u: { protocol: 'udp', addr: '127.0.0.1:0', ...endpoint } } },
  });
  closers.push(() => app.stop());
  return { app, port: Number(app.address('u').split(':').at(-1)) };
}

async function socket(): Promise<dgram.Socket & { got: Buffer[] }> {
  const s = Object.assign(dgram.createSocket('udp4'), { got: [] as Buffer[] });
  s.on('message', (m) => s.got.push(m));
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  return s;
}

test("PROXY v2 with udp.target ~: each datagram goes to its own header's destination", async () => {
  const a = await taggedEcho('A:');
  const b = await taggedEcho('B:');
  const { app, port } = await start({
    udp: { target: null, idle_timeout: '300ms' },
    proxy_protocol: { enabled: true, udp_format: 'v2', trusted_cidrs: ['127.0.0.1/32'] },
  });
  const source = { host: '192.0.2.60', port: 5000 };
  const to = (p: number, payload: string) =>
    Buffer.concat([
      encodeProxyHeader(
        {
          transport: 'dgram',
          addresses: { family: 'inet', source, destination: { host: '127.0.0.1', port: p } },
        },
        { version: 2 },
      ),
      Buffer.from(payload),
    ]);
  const s = await socket();
  s.send(to(a, 'one'), port, '127.0.0.1');
  await waitUntil(() => s.got.length === 1, 'the first reply');
  s.send(to(b, 'two'), port, '127.0.0.1');
  s.send(to(a, 'three'), port, '127.0.0.1');
  await waitUntil(() => s.got.length === 3, 'three replies');
  s.close();
  const replies = s.got.map((r) => {
    const h = decodeV2(r);
    const from = h.addresses?.family === 'inet' ? h.addresses.source.port : 0;
    return `${from} ${r.subarray(h.length).toString()}`;
  });
  assert.deepEqual(replies.sort(), [`${a} A:one`, `${a} A:three`, `${b} B:two`].sort());
  await waitUntil(
    () => app.auditRecords().filter((r) => r.kind === 'udp_session').length === 2,
    'two sessions, one per destination',
  );
});
