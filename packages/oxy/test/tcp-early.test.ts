/**
 * A `tcp` endpoint's client that speaks first: the reactor reads its first bytes as the upstream
 * connect starts and sends them at once (packages/native/src/splice.c, early_copy), so an
 * upstream on this host finds the connection and its first bytes together. A connect still under
 * way holds the bytes until it is done; a connect that fails forwarded nothing.
 *
 * Made deterministic from outside: the `oxy` process is stopped (SIGSTOP) while the client
 * connects and writes, so its bytes are there when the reactor accepts; what the reactor read is
 * seen in /proc/net/tcp (the accepted socket's receive queue). Both ways of driving the reactor:
 * on the JS loop (the default for a process of `tcp` endpoints) and on its thread.
 *
 * Linux only (/proc, the addon).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, test } from 'node:test';
import { native } from '../src/flows/stream/native-addon.ts';
import { readBytes, startTcpEcho, waitUntil } from '../src/testing/index.ts';
import { heldEcho } from './fixtures/held-upstream.ts';
import { rxQueue, speakWhileStopped, startOxyCli, tcpEndpointLines } from './fixtures/oxy-cli.ts';

const skip = process.platform !== 'linux' || native === null ? 'needs Linux and the native addon' : false;

for (const mode of ['inline', 'thread'] as const) {
  const env = { OXY_REACTOR: mode === 'thread' ? 'thread' : '' };

  test(`${mode}: bytes a client sent before its accept are read at once, held while the connect is under way, and arrive in order`, {
    skip,
    timeout: 20_000,
  }, async () => {
    const up = await heldEcho();
    const oxy = await startOxyCli(tcpEndpointLines(`127.0.0.1:${up.port}`), env);
    const payload = 'spoken before the upstream answered';
    const c = await speakWhileStopped(oxy, payload);
    // The reactor read them though the upstream has not completed the handshake (its accept
    // queue is full): they wait in the tunnel, not in the client's socket.
    await waitUntil(
      () => rxQueue(oxy.address('l4').port, c.localPort as number) === 0,
      'the bytes read early',
    );
    up.release();
    // The connect completes when the upstream takes it (the SYN's retry, a second later).
    assert.equal((await readBytes(c, payload.length, 15_000)).toString(), payload);
    c.write(' and after');
    assert.equal((await readBytes(c, 10)).toString(), ' and after');
    c.destroy();
  });

  test(`${mode}: more than one read's worth sent before the accept arrives whole and in order`, {
    skip,
    timeout: 20_000,
  }, async () => {
    const echo = await startTcpEcho();
    after(() => echo.close());
    const oxy = await startOxyCli(tcpEndpointLines(echo.authority), env);
    // Three times the reactor's copy buffer (16 KiB): the first read goes early, the rest once
    // the sockets are registered.
    const payload = randomBytes(48 * 1024);
    const c = await speakWhileStopped(oxy, payload);
    assert.ok((await readBytes(c, payload.length)).equals(payload));
    c.destroy();
  });

  test(`${mode}: a refused connect after the client spoke resets it and is recorded as refused`, {
    skip,
    timeout: 20_000,
  }, async () => {
    const oxy = await startOxyCli(tcpEndpointLines('127.0.0.1:1'), env, (dir) => [
      'audit:',
      '  output: file',
      `  path: "${dir}/audit.log"`,
    ]);
    const c = await speakWhileStopped(oxy, 'nobody there');
    const [err] = await Promise.race([once(c, 'error'), once(c, 'close').then(() => [null])]);
    assert.equal((err as NodeJS.ErrnoException | null)?.code, 'ECONNRESET');
    const audit = path.join(oxy.dir, 'audit.log');
    await waitUntil(
      () => fs.existsSync(audit) && fs.readFileSync(audit, 'utf8').includes('\n'),
      'the record',
    );
    const rec = JSON.parse(fs.readFileSync(audit, 'utf8').trim().split('\n')[0] as string);
    assert.equal(rec.kind, 'tunnel');
    assert.equal(rec.close_reason, 'OXY_ERR_CONNECT_REFUSED');
    assert.equal(rec.status, 502);
    assert.equal(rec.bytes_up, 0, 'what was read before the connect failed went nowhere');
  });
}

test('an upstream that speaks first: the silent client is carried as before', {
  skip,
  timeout: 20_000,
}, async () => {
  const server = net.createServer((s) => {
    s.write('220 ready\r\n');
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  after(() => server.close());
  const oxy = await startOxyCli(tcpEndpointLines(`127.0.0.1:${(server.address() as net.AddressInfo).port}`));
  const { host, port } = oxy.address('l4');
  // More than the misses after which the reactor stops trying early (EARLY_MISSES), so the later
  // ones run with it off; each still gets its banner and its echo.
  for (let i = 0; i < 12; i++) {
    const c = net.connect(port, host);
    assert.equal((await readBytes(c, 11)).toString(), '220 ready\r\n');
    c.write(`hello ${i}`);
    assert.equal((await readBytes(c, `hello ${i}`.length)).toString(), `hello ${i}`);
    c.destroy();
  }
});
