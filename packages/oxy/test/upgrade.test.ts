/**
 * `Upgrade` through an absolute-form request (WebSocket-style): the 101 is relayed with its
 * headers, bytes flow both ways afterwards (including bytes sent right behind the heads), and
 * an upstream that refuses to switch has its answer relayed.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import {
  hooksApp,
  rawConnect,
  readBytes,
  readUntil,
  startApp,
  startHttpUpstream,
} from '../src/testing/index.ts';

const upstream = await startHttpUpstream(
  { '/chat': { status: 426, headers: { 'content-type': 'text/plain' }, body: 'upgrade required' } },
  '127.0.0.1',
  {
    upgrade(req, socket, head) {
      if (req.headers.upgrade !== 'echo') {
        socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
        return;
      }
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-Up: yes\r\n\r\nwelcome;',
      );
      if (head.length > 0) socket.write(head);
      socket.pipe(socket);
    },
  },
);
const upPort = upstream.port;
const proxy = await startApp(hooksApp());
after(() => upstream.close().then(() => proxy.stop()));

test('a 101 is relayed and the connection becomes a tunnel both ways', async () => {
  const s = rawConnect(
    proxy.address(),
    `GET http://127.0.0.1:${upPort}/chat HTTP/1.1\r\nHost: 127.0.0.1:${upPort}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly;`,
  );
  const got = await readUntil(s, 'early;');
  assert.match(got, /^HTTP\/1\.1 101/);
  assert.match(got, /x-up: yes/i);
  assert.match(got, /welcome;early;$/);
  s.write('more');
  assert.equal((await readBytes(s, 4)).toString(), 'more');
  s.destroy();
});

test('an upstream that does not switch has its answer relayed', async () => {
  const s = rawConnect(
    proxy.address(),
    `GET http://127.0.0.1:${upPort}/chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: other\r\n\r\n`,
  );
  const answer = (await readBytes(s, 1000, 2000)).toString();
  assert.match(answer, /^HTTP\/1\.1 400/);
  s.destroy();
});
