/**
 * An egress decision that asks for a PROXY v2 header with a TLV the encoder cannot write (an
 * unknown type, a UNIQUE_ID over 128 bytes, a value over 64 KiB, a null entry, from plain
 * JavaScript or a cast) is an invalid decision: that connection fails as if the hook had thrown,
 * logged and counted, before anything is connected. Before, it passed the check and the encoder
 * threw later: on the addon's whole tunnel as an unhandled rejection that ended the process, and
 * on the JS path after the upstream connect, leaving that upstream socket open, with nothing
 * logged.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { captureTelemetry } from 'foundations/telemetry/testing';
import { EgressDecision as ED, type EgressDecision } from '../src/hooks/egress.ts';
import { type AppUnderTest, hooksApp, startApp } from '../src/testing/index.ts';

const accepted: net.Socket[] = [];
const upstream = net.createServer((s) => accepted.push(s));
upstream.listen(0, '127.0.0.1');
await once(upstream, 'listening');
const upstreamPort = (upstream.address() as net.AddressInfo).port;

/** A `tcp` endpoint `t` to the upstream above, loopback egress allowed. */
const settings = {
  endpoints: {
    main: {},
    t: { protocol: 'tcp', addr: '127.0.0.1:0', tcp: { target: `127.0.0.1:${upstreamPort}` } },
  },
  egress: { blocked_cidrs: [] },
};

const opened: AppUnderTest[] = [];
after(async () => {
  await Promise.all(opened.map((a) => a.stop()));
  for (const s of accepted) s.destroy();
  upstream.close();
});

const BAD: unknown[] = [
  { type: 'bogus', value: 'x' },
  { type: 'unique_id', value: new Uint8Array(200) },
  { type: 'authority', value: 'x'.repeat(70000) },
  null,
];

for (const path of ['whole tunnel', 'JS path'] as const) {
  test(`a v2 header with a TLV that cannot be written fails the hook, connects nothing (${path})`, async () => {
    using tele = captureTelemetry({ verbosity: 'ERROR' });
    let n = 0;
    const app = await startApp(
      hooksApp({
        egress: {
          handleConnection: (target) =>
            ED.direct(target, { proxyProtocol: { version: 2, tlvs: [BAD[n++ % BAD.length]] as never } }),
          // Any connect override turns the addon's whole tunnel off; undefined keeps the built-in connect.
          ...(path === 'JS path' ? { tcpConnectOverride: () => undefined } : {}),
        },
      }),
      { settings },
    );
    opened.push(app);
    const port = Number(app.address('t').split(':').at(-1));
    const before = accepted.length;
    for (let i = 0; i < BAD.length; i++) {
      const c = net.connect(port, '127.0.0.1');
      c.on('error', () => {});
      c.write('hi');
      await new Promise((r) => c.on('close', r)); // reset or closed: either way, refused
    }
    assert.equal(n, BAD.length, 'the hook was asked once per connection');
    assert.equal(accepted.length - before, 0, 'nothing was connected upstream');
    const failed = tele.logs.filter((r) => r.msg === 'app hook failed');
    assert.equal(failed.length, BAD.length, 'each connection logged as a failed hook');
    assert.match(String(failed[0]?.fields.err), /tlvs the wire can carry/);
  });
}

test('a v2 header with good TLVs still goes out (regression guard for the check)', async () => {
  const app = await startApp(
    hooksApp({
      egress: {
        handleConnection: (target): EgressDecision =>
          ED.direct(target, {
            proxyProtocol: { version: 2, tlvs: [{ type: 'authority', value: 'ok.example' }] },
          }),
      },
    }),
    { settings },
  );
  opened.push(app);
  const port = Number(app.address('t').split(':').at(-1));
  const got = new Promise<Buffer>((resolve) => {
    upstream.once('connection', (s) => s.once('data', resolve));
  });
  const c = net.connect(port, '127.0.0.1');
  c.on('error', () => {});
  c.write('hi');
  const first = await got;
  assert.ok(first.includes(Buffer.from('ok.example')), 'the header carries the TLV');
  c.destroy();
});
