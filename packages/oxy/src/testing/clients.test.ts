/**
 * The kit's small client and waiting helpers on real sockets: readUntil across chunks and its
 * failures, waitForClose, waitUntil's message, unusedPort refusing, curl's exit code.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, test } from 'node:test';
import { curl, rawConnect, readBytes, readUntil, waitForClose } from './clients.ts';
import { startTcpServer, unusedPort } from './peers.ts';
import { waitUntil } from './wait.ts';

test('readUntil collects chunks until the marker, and fails naming it when the stream ends first', async () => {
  const server = await startTcpServer((s) => {
    s.write('HTTP/1.1 200 OK\r\n');
    setTimeout(() => s.end('x: 1\r\n\r\nbody'), 20);
  });
  after(() => server.close());
  const s = rawConnect(server.authority);
  assert.equal(await readUntil(s, '\r\n\r\n'), 'HTTP/1.1 200 OK\r\nx: 1\r\n\r\n');
  // What came behind the marker was put back for the next read.
  assert.equal((await readBytes(s, 4)).toString(), 'body');
  s.destroy();
  const again = rawConnect(server.authority);
  await assert.rejects(readUntil(again, 'never sent'), /the stream ended before never sent/);
  again.destroy();
  const third = rawConnect(server.authority);
  assert.match(await readUntil(third, /200 OK/), /^HTTP\/1\.1 200 OK/);
  assert.ok((await waitForClose(third)) >= 0);
});

test('waitUntil names what never happened; unusedPort refuses connections', async () => {
  await assert.rejects(
    waitUntil(() => false, 'the impossible', 50),
    /timed out waiting for the impossible/,
  );
  const port = await unusedPort();
  const s = net.connect(port, '127.0.0.1');
  const err = await new Promise<NodeJS.ErrnoException>((resolve) => s.on('error', resolve));
  assert.equal(err.code, 'ECONNREFUSED');
});

test('curl resolves with its exit code and stderr on failure, never rejects', async () => {
  const port = await unusedPort();
  const r = await curl([`http://127.0.0.1:${port}/`], 2000);
  assert.equal(r.code, 7, r.stderr);
  assert.match(r.stderr, /Failed to connect|Could not connect/);
});
