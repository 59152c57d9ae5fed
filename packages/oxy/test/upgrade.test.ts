/**
 * `Upgrade` through an absolute-form request (WebSocket-style): the 101 is relayed with its
 * headers, bytes flow both ways afterwards (including bytes sent right behind the heads), and
 * an upstream that refuses to switch has its answer relayed.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, test } from 'node:test';
import { readBytes } from '../src/testing/clients.ts';
import { startTestProxy } from './helpers.ts';

const upstream = http.createServer((_req, res) =>
  res.writeHead(426, { 'content-type': 'text/plain' }).end('upgrade required'),
);
upstream.on('upgrade', (req, socket, head) => {
  if (req.headers.upgrade !== 'echo') {
    socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    return;
  }
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-Up: yes\r\n\r\nwelcome;',
  );
  if (head.length > 0) socket.write(head);
  socket.pipe(socket);
});
upstream.listen(0, '127.0.0.1');
await new Promise((r) => upstream.once('listening', r));
after(() => upstream.close());
const upPort = (upstream.address() as net.AddressInfo).port;
const proxy = await startTestProxy();

function raw(request: string): net.Socket {
  const s = net.connect(proxy.address().port, '127.0.0.1');
  s.write(request);
  return s;
}

test('a 101 is relayed and the connection becomes a tunnel both ways', async () => {
  const s = raw(
    `GET http://127.0.0.1:${upPort}/chat HTTP/1.1\r\nHost: 127.0.0.1:${upPort}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly;`,
  );
  const head = (await readBytes(s, 1)).toString();
  let got = head;
  while (!got.includes('early;')) got += (await readBytes(s, 1)).toString();
  assert.match(got, /^HTTP\/1\.1 101/);
  assert.match(got, /x-up: yes/i);
  assert.match(got, /welcome;early;$/);
  s.write('more');
  assert.equal((await readBytes(s, 4)).toString(), 'more');
  s.destroy();
});

test('an upstream that does not switch has its answer relayed', async () => {
  const s = raw(
    `GET http://127.0.0.1:${upPort}/chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: other\r\n\r\n`,
  );
  const answer = (await readBytes(s, 1000, 2000)).toString();
  assert.match(answer, /^HTTP\/1\.1 400/);
  s.destroy();
});
