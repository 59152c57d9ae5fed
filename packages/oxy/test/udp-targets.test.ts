/**
 * Where a `udp` endpoint's sessions go: a name whose first address does not serve (`localhost`
 * gives ::1 first; the server listens on 127.0.0.1 only) moves to the next one, the first
 * datagram sent again; after a reply, the session stays on its address. With PROXY v2 and
 * `udp.target: ~`, each datagram goes to the destination its own header names (one sender,
 * one header source, two destinations: two sessions).
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { after, test } from 'node:test';
import { captureTelemetry } from 'foundations/telemetry/testing';
import type { AuditRecord } from '../src/audit.ts';
import { decodeV2 } from '../src/protocols/proxy-protocol/index.ts';
import { type AppUnderTest, hooksApp, startApp, waitUntil } from '../src/testing/index.ts';
import { datagramHeader } from './fixtures/pp-datagram.ts';

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

async function start(
  endpoint: Record<string, unknown>,
  hooks: Parameters<typeof hooksApp>[0] = {},
): Promise<{ app: AppUnderTest; port: number }> {
  const app = await startApp(hooksApp(hooks), {
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

async function sessionRecord(app: AppUnderTest): Promise<AuditRecord> {
  const match = (r: AuditRecord) => r.kind === 'udp_session';
  await waitUntil(() => app.auditRecords().some(match), 'the udp_session record');
  return app.auditRecords().find(match) as AuditRecord;
}

test('a name whose first address refuses: the session moves to the next, the datagram sent again', async () => {
  const port = await taggedEcho('v4:');
  const { app, port: front } = await start({ udp: { target: `localhost:${port}`, idle_timeout: '300ms' } });
  const s = await socket();
  s.send('first', front, '127.0.0.1');
  await waitUntil(() => s.got.length === 1, 'the reply to the first datagram, from 127.0.0.1');
  for (let i = 0; i < 50; i++) s.send(`n${i}`, front, '127.0.0.1');
  await waitUntil(() => s.got.length === 51, 'every reply');
  s.close();
  assert.equal(s.got[0]?.toString(), 'v4:first');
  const rec = await sessionRecord(app);
  assert.equal(rec.upstream, `127.0.0.1:${port}`);
  assert.equal(rec.datagrams_up, 51, 'the datagram sent again is counted once');
  assert.equal(rec.datagrams_down, 51);
});

test('after a reply, an unreachable address is only counted: the session stays on it', async () => {
  const tele = captureTelemetry({ verbosity: 'ERROR' });
  try {
    const port = await taggedEcho('second:');
    // The first address answers once, then nothing listens there.
    const decoy = dgram.createSocket('udp4');
    decoy.once('message', (m, from) => {
      decoy.send(Buffer.concat([Buffer.from('first:'), m]), from.port, from.address, () => decoy.close());
    });
    const decoyClosed = once(decoy, 'close');
    decoy.bind(port, '127.0.0.2');
    await once(decoy, 'listening');
    const { app, port: front } = await start(
      { udp: { target: `127.0.0.1:${port}`, idle_timeout: '500ms' } },
      { egress: { handleUpstreamIps: () => ['127.0.0.2', '127.0.0.1'] } },
    );
    const refused = async () =>
      (await tele.metricValue('udp_upstream_errors_total', { code: 'ECONNREFUSED' })) ?? 0;
    const s = await socket();
    s.send('a', front, '127.0.0.1');
    await waitUntil(() => s.got.length === 1, 'the first address answering');
    await decoyClosed;
    const before = await refused();
    for (let i = 0; ; i++) {
      s.send('b', front, '127.0.0.1');
      await new Promise((r) => setTimeout(r, 20));
      if ((await refused()) > before) break;
      assert.ok(i < 100, 'the refusal counted within 2 s');
    }
    s.send('c', front, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 100));
    s.close();
    assert.deepEqual(s.got.map(String), ['first:a'], 'nothing went to the second address');
    assert.equal((await sessionRecord(app)).upstream, `127.0.0.2:${port}`);
  } finally {
    tele.stop();
  }
});

test("PROXY v2 with udp.target ~: each datagram goes to its own header's destination", async () => {
  const a = await taggedEcho('A:');
  const b = await taggedEcho('B:');
  const { app, port } = await start({
    udp: { target: null, idle_timeout: '300ms' },
    proxy_protocol: { enabled: true, udp_format: 'v2', trusted_cidrs: ['127.0.0.1/32'] },
  });
  const source = { host: '192.0.2.60', port: 5000 };
  const to = (p: number, payload: string) =>
    Buffer.concat([datagramHeader('v2', source, { host: '127.0.0.1', port: p }), Buffer.from(payload)]);
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
