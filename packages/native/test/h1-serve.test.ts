/**
 * Which connections the native HTTP/1.1 engine takes (src/h1-js.c `h1Serve`): one whose first
 * bytes, already read or waiting in the socket, say CONNECT or the HTTP/2 preface is declined
 * (the engine would only hand it back), without consuming them; anything else, including too
 * few bytes to tell, is taken. Real loopback sockets; the server pauses on connect so that the
 * client's bytes wait in the kernel, unread, as they do when a loaded proxy accepts late.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { h1 } from 'native';

type Handle = { fd: number };

let server: net.Server;
const accepted: net.Socket[] = [];
const engine = h1.h1Engine(
  {
    maxHeaderSize: 16384,
    maxResponseHeaderSize: 16384,
    headerTimeoutMs: 10000,
    idleTimeoutMs: 10000,
    responseTimeoutMs: 10000,
    bodyTimeoutMs: 10000,
    poolIdleTimeoutMs: 10000,
    poolMaxIdle: 4,
    sweepMs: 1000,
  },
  () => {},
);

before(async () => {
  server = net.createServer({ pauseOnConnect: true }, (s) => accepted.push(s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
});

after(async () => {
  h1.h1Close(engine);
  for (const s of accepted) s.destroy();
  await new Promise((r) => server.close(r));
});

/** A connection to the server whose client sent `bytes`; resolves with the server's side once they wait in it. */
async function withBytes(bytes: string): Promise<{ server: net.Socket; client: net.Socket }> {
  const n = accepted.length;
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  client.on('error', () => {});
  await once(client, 'connect');
  if (bytes.length > 0) client.write(bytes);
  for (let i = 0; i < 200 && accepted.length === n; i++) await new Promise((r) => setTimeout(r, 5));
  // Loopback delivers at once; a little more for the scheduler.
  await new Promise((r) => setTimeout(r, 20));
  return { server: accepted[n] as net.Socket, client };
}

function fdOf(s: net.Socket): number {
  return (s as unknown as { _handle: Handle })._handle.fd;
}

test('a CONNECT waiting in the socket is declined, and its bytes are still there to read', async () => {
  const { server: s, client } = await withBytes(
    'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n',
  );
  assert.equal(h1.h1Serve(engine, fdOf(s), 1, null), false);
  s.resume();
  const [data] = (await once(s, 'data')) as [Buffer];
  assert.match(data.toString('latin1'), /^CONNECT example\.com:443 /);
  client.destroy();
});

test('the HTTP/2 preface waiting, or either already read, is declined', async () => {
  const { server: s, client } = await withBytes('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
  assert.equal(h1.h1Serve(engine, fdOf(s), 2, null), false);
  assert.equal(h1.h1Serve(engine, fdOf(s), 3, Buffer.from('PRI * HTTP/2.0\r\n')), false);
  assert.equal(h1.h1Serve(engine, fdOf(s), 4, Buffer.from('CONNECT a:1 HTTP/1.1\r\n')), false);
  client.destroy();
});

test('a forward request, or too few bytes to tell, is taken', async () => {
  for (const [id, bytes] of [
    [5, 'GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n'],
    [6, ''],
    [7, 'CONN'],
  ] as const) {
    const { server: s, client } = await withBytes(bytes);
    assert.equal(h1.h1Serve(engine, fdOf(s), id, null), true, JSON.stringify(bytes));
    h1.h1Drop(engine, id);
    client.destroy();
  }
});
