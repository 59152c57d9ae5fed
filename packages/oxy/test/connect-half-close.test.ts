/**
 * An HTTP/1.1 CONNECT whose client sends its head, its first bytes and its FIN in one write,
 * before the tunnel is open: the bytes reach the target, the FIN follows them, and the target's
 * answer comes back, on every way a tunnel is carried (the JS pump, the splice after a JS
 * connect, through an upstream proxy, the addon's whole tunnel). They were once lost on the JS
 * paths: the FIN met an empty input buffer, Node ended the socket's input, and the early bytes
 * could no longer go back in front of it.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, test } from 'node:test';
import { EgressDecision } from '../src/hooks/egress.ts';
import { type AppUnderTest, hooksApp, startApp, startTcpEcho, waitUntil } from '../src/testing/index.ts';

const echo = await startTcpEcho();
const apps: AppUnderTest[] = [];
after(async () => {
  await Promise.all(apps.map((a) => a.stop()));
  await echo.close();
});

async function app(...args: Parameters<typeof startApp>): Promise<AppUnderTest> {
  const a = await startApp(...args);
  apps.push(a);
  return a;
}

/** Sends CONNECT, `data` and FIN in one write; resolves with everything read until the close. */
function connectAndEnd(proxy: AppUnderTest, data: string): Promise<string> {
  const [host, port] = proxy.address().split(':');
  const s = net.connect({ host, port: Number(port), allowHalfOpen: true });
  s.on('error', () => {});
  s.end(`CONNECT ${echo.authority} HTTP/1.1\r\nHost: ${echo.authority}\r\n\r\n${data}`);
  let got = '';
  s.on('data', (d: Buffer) => {
    got += d.toString('latin1');
  });
  return new Promise((resolve) => s.on('close', () => resolve(got)));
}

const upstreamProxy = await app(hooksApp({}));
const ways: [string, () => Promise<AppUnderTest>][] = [
  [
    'the JS pump (tunnel_splice: false)',
    () => app(hooksApp({}), { settings: { endpoints: { main: { tunnel_splice: false } } } }),
  ],
  [
    'a JS connect, then the splice (an egress hook)',
    () => app(hooksApp({ egress: { handleConnection: (t) => EgressDecision.direct(t) } })),
  ],
  [
    'an upstream proxy',
    () => {
      const [h, p] = upstreamProxy.address().split(':');
      return app(
        hooksApp({
          egress: { handleConnection: () => EgressDecision.viaProxy({ host: h as string, port: Number(p) }) },
        }),
      );
    },
  ],
  ['the addon’s whole tunnel (no hook)', () => app(hooksApp({}))],
];

for (const [way, make] of ways) {
  test(`CONNECT, bytes and FIN in one write: the bytes arrive and the answer comes back (${way})`, async () => {
    const proxy = await make();
    const got = await connectAndEnd(proxy, 'hello-through-tunnel\n');
    assert.equal(got, 'HTTP/1.1 200 Connection Established\r\n\r\nhello-through-tunnel\n');
    await waitUntil(() => proxy.auditRecords().some((r) => r.kind === 'tunnel'), 'the tunnel record');
    const rec = proxy.auditRecords().find((r) => r.kind === 'tunnel');
    assert.equal(rec?.bytes_up, 21);
    assert.equal(rec?.bytes_down, 21);
    assert.equal(rec?.close_reason, 'done');
  });

  test(`CONNECT and FIN in one write, no bytes: the FIN reaches the target, which closes (${way})`, async () => {
    const proxy = await make();
    const got = await connectAndEnd(proxy, '');
    assert.equal(got, 'HTTP/1.1 200 Connection Established\r\n\r\n');
  });
}
