/**
 * A PROXY protocol endpoint and a peer that resets its connection before Oxy accepts it: the
 * kernel no longer reports a reset socket's peer, so Node's socket has no `remoteAddress`. Such a
 * connection must still be judged by `trusted_cidrs` as a TCP peer (untrusted unless listed), not
 * taken for a Unix-socket peer (trusted by the socket file's permissions), or a peer outside
 * `trusted_cidrs` could have its header believed by resetting at once after its bytes.
 *
 * Deterministic: `oxy` is stopped while the client connects, writes and resets.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, test } from 'node:test';
import { speakWhileStopped, startOxyCli } from './fixtures/oxy-cli.ts';

test('a peer outside trusted_cidrs that resets before the accept is refused as untrusted; nothing reaches the target', {
  skip: process.platform !== 'linux' ? 'needs Linux (/proc)' : false,
  timeout: 30_000,
}, async () => {
  let reached = 0;
  const target = net.createServer((s) => {
    reached++;
    s.on('error', () => {});
    s.resume();
  });
  await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
  after(() => target.close());
  const oxy = await startOxyCli([
    '  l4:',
    '    protocol: tcp',
    '    addr: "127.0.0.1:0"',
    '    proxy_protocol:',
    '      enabled: true',
    '      trusted_cidrs: ["10.0.0.0/8"]',
    '    tcp:',
    `      target: "127.0.0.1:${(target.address() as net.AddressInfo).port}"`,
  ]);
  await speakWhileStopped(oxy, 'PROXY TCP4 192.0.2.1 127.0.0.1 1234 80\r\nhello', true);
  const telemetry = /telemetry server listening addr=(\S+)/.exec(oxy.log())?.[1];
  assert.ok(telemetry, 'the telemetry address in the log');
  const untrusted = /proxy_protocol_rejected_total\{[^}]*reason="untrusted"[^}]*\} 1\b/;
  let metrics = '';
  for (const end = performance.now() + 3000; !untrusted.test(metrics) && performance.now() < end; ) {
    metrics = await (await fetch(`${telemetry}/metrics`)).text();
    if (!untrusted.test(metrics)) await new Promise((r) => setTimeout(r, 50));
  }
  assert.match(metrics, untrusted, 'the connection counted as untrusted');
  // The target would have been reached within this time if the header had been believed.
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(reached, 0, 'nothing reached the target');
});
