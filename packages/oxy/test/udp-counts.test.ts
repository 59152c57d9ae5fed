/**
 * What a `udp` endpoint counts, read from its metrics: a session that goes on shows in
 * `oxy_udp_datagrams_total` and `oxy_udp_bytes_total` while it lives (each datagram once,
 * however the session ends); a datagram longer than `max_datagram_size`, from the client, from
 * the upstream, or made by a rewrite, is dropped and counted as `too_large`, and never as
 * forwarded; behind a PROXY v2 or SPP header, so is a reply that would not fit in one datagram
 * with the header in front.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { after, test } from 'node:test';
import { captureTelemetry } from 'foundations/telemetry/testing';
import type { AuditRecord } from '../src/audit.ts';
import { DatagramVerdict } from '../src/hooks/datagram.ts';
import { type AppUnderTest, hooksApp, startApp, waitUntil } from '../src/testing/index.ts';
import { datagramHeader } from './fixtures/pp-datagram.ts';

/** An echo that answers "grow N" with N bytes, and anything else with itself; it logs what it got. */
const heard: number[] = [];
const echo = dgram.createSocket('udp4');
echo.on('message', (msg, from) => {
  heard.push(msg.length);
  const grow = /^grow (\d+)$/.exec(msg.toString());
  echo.send(grow === null ? msg : Buffer.alloc(Number(grow[1]), 0x61), from.port, from.address);
});
echo.bind(0, '127.0.0.1');
await once(echo, 'listening');
const target = `127.0.0.1:${echo.address().port}`;

const tele = captureTelemetry({ verbosity: 'ERROR' });
const opened: AppUnderTest[] = [];
after(async () => {
  await Promise.all(opened.map((a) => a.stop()));
  tele.stop();
  echo.close();
});

async function start(hooks: Parameters<typeof hooksApp>[0], udp: Record<string, unknown>) {
  const app = await startApp(hooksApp(hooks), {
    settings: { endpoints: { main: {}, u: { protocol: 'udp', addr: '127.0.0.1:0', udp } } },
  });
  opened.push(app);
  return app;
}

const metric = async (name: string, labels: Record<string, string>) =>
  (await tele.metricValue(name, labels)) ?? 0;
const tooLarge = () => metric('udp_dropped_total', { endpoint: 'u', reason: 'too_large' });

async function client(app: AppUnderTest) {
  const s = dgram.createSocket('udp4');
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  const port = Number(app.address('u').split(':').at(-1));
  const got: Buffer[] = [];
  s.on('message', (m) => got.push(m));
  return {
    got,
    local: `127.0.0.1:${s.address().port}`,
    send: (data: string | Buffer) => s.send(data, port, '127.0.0.1'),
    close: () => s.close(),
  };
}

async function recordOf(app: AppUnderTest, local: string): Promise<AuditRecord> {
  const match = (r: AuditRecord) => r.kind === 'udp_session' && r.client === local;
  await waitUntil(() => app.auditRecords().some(match), 'the udp_session record');
  return app.auditRecords().find(match) as AuditRecord;
}

test('an open session shows in the datagram and byte counters; each datagram counted once', async () => {
  const app = await start({}, { target, idle_timeout: '60s' });
  // Labelled by endpoint, so two udp endpoints' traffic can be told apart.
  const up = () => metric('udp_datagrams_total', { endpoint: 'u', direction: 'up' });
  const down = () => metric('udp_datagrams_total', { endpoint: 'u', direction: 'down' });
  const bytesUp = () => metric('udp_bytes_total', { endpoint: 'u', direction: 'up' });
  const [up0, down0, bytes0] = [await up(), await down(), await bytesUp()];
  const c = await client(app);
  for (let i = 0; i < 20; i++) c.send(Buffer.alloc(10, i));
  await waitUntil(() => c.got.length === 20, '20 replies');
  // The session is still open (60 s idle timeout): the counters move anyway, within a second or so.
  let n = 0;
  while ((await up()) - up0 < 20 || (await down()) - down0 < 20) {
    assert.ok(n++ < 150, 'the open session counted within 3 s');
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal((await bytesUp()) - bytes0, 200);
  // More datagrams, then the end of the session: the counters hold each datagram once.
  for (let i = 0; i < 5; i++) c.send('more');
  await waitUntil(() => c.got.length === 25, '25 replies');
  c.close();
  opened.splice(opened.indexOf(app), 1);
  await app.stop();
  assert.equal((await up()) - up0, 25);
  assert.equal((await down()) - down0, 25);
  assert.equal((await bytesUp()) - bytes0, 220);
});

test('too large from the client or from the upstream: dropped, counted as too_large, not as forwarded', async () => {
  const app = await start({}, { target, idle_timeout: '300ms', max_datagram_size: '1000B' });
  const before = await tooLarge();
  heard.length = 0;
  const c = await client(app);
  c.send(Buffer.alloc(1001));
  c.send(Buffer.alloc(1500));
  c.send(Buffer.alloc(1000)); // the largest allowed
  await waitUntil(() => c.got.length === 1, 'the 1000-byte echo');
  assert.deepEqual(heard, [1000], 'only the datagram that fits reached the upstream');
  assert.equal((await tooLarge()) - before, 2);
  c.send('grow 1001'); // a reply one byte too long
  c.send('grow 1000');
  await waitUntil(() => c.got.length === 2, 'the 1000-byte reply');
  assert.equal(c.got[1]?.length, 1000);
  let n = 0;
  while ((await tooLarge()) - before < 3) {
    assert.ok(n++ < 150, 'the long reply counted within 3 s');
    await new Promise((r) => setTimeout(r, 20));
  }
  const rec = await recordOf(app, c.local);
  c.close();
  assert.equal(rec.datagrams_up, 3);
  assert.equal(rec.datagrams_down, 2);
  assert.equal(rec.bytes_down, 2000);
});

test('a rewrite longer than max_datagram_size is not sent, and counted as too_large', async () => {
  const app = await start(
    {
      datagram: {
        handleDatagram: (data, direction) =>
          direction === 'up' && data[0] === 0x42
            ? DatagramVerdict.rewrite(new Uint8Array(70_000))
            : undefined,
      },
    },
    { target, idle_timeout: '300ms', max_datagram_size: '1000B' },
  );
  const before = await tooLarge();
  heard.length = 0;
  const c = await client(app);
  c.send('B: make me big');
  c.send('fine');
  await waitUntil(() => c.got.length === 1, 'the echo of the datagram that passed');
  assert.deepEqual(heard, [4]);
  assert.equal((await tooLarge()) - before, 1);
  const rec = await recordOf(app, c.local);
  c.close();
  assert.equal(rec.datagrams_up, 1);
  assert.equal(rec.bytes_up, 4);
});

for (const format of ['v2', 'spp'] as const)
  for (const [how, hooks] of [
    ['no hook', {}],
    ['a datagram hook', { datagram: { handleDatagram: () => DatagramVerdict.pass() } }],
  ] as const)
    test(`${format}, ${how}: a reply too long to reach the client behind the header is dropped as too_large`, async () => {
      const app = await startApp(hooksApp(hooks), {
        settings: {
          endpoints: {
            main: {},
            u: {
              protocol: 'udp',
              addr: '127.0.0.1:0',
              udp: { target, idle_timeout: '300ms' },
              proxy_protocol: { enabled: true, udp_format: format },
            },
          },
        },
      });
      opened.push(app);
      const before = await tooLarge();
      const port = Number(app.address('u').split(':').at(-1));
      const from = { host: '198.51.100.7', port: 7000 };
      const front = { host: '127.0.0.1', port };
      const head = datagramHeader(format, from, front);
      const c = await client(app);
      // The largest IPv4 payload is 65,507 bytes: a reply of that size no longer fits with the
      // header in front; one of 65,507 less the header does.
      const fits = 65_507 - head.length;
      c.send(Buffer.concat([head, Buffer.from('grow 65507')]));
      c.send(Buffer.concat([head, Buffer.from(`grow ${fits}`)]));
      await waitUntil(() => c.got.length === 1, 'the reply that fits');
      assert.equal(c.got[0]?.length, 65_507);
      let n = 0;
      while ((await tooLarge()) - before < 1) {
        assert.ok(n++ < 150, 'the long reply counted within 3 s');
        await new Promise((r) => setTimeout(r, 20));
      }
      const rec = await recordOf(app, '198.51.100.7:7000');
      c.close();
      assert.equal(rec.datagrams_down, 1);
      assert.equal(rec.bytes_down, fits);
    });
