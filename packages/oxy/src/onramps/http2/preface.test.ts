import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { classifyPreface, HTTP2_PREFACE, sniffHttp2Preface } from './preface.ts';

test('classifyPreface: whole preface, proper prefix, first differing byte', () => {
  assert.equal(classifyPreface(HTTP2_PREFACE), 'h2');
  assert.equal(classifyPreface(Buffer.concat([HTTP2_PREFACE, Buffer.from([0, 0, 0, 4])])), 'h2');
  assert.equal(classifyPreface(HTTP2_PREFACE.subarray(0, 10)), undefined);
  assert.equal(classifyPreface(Buffer.alloc(0)), undefined);
  assert.equal(classifyPreface(Buffer.from('GET / HTTP/1.1\r\n')), 'http1');
  assert.equal(classifyPreface(Buffer.from('PRI * HTTP/1.1\r\n')), 'http1');
  assert.equal(classifyPreface(Buffer.from('P')), undefined);
  assert.equal(classifyPreface(Buffer.from([0x16, 3, 1])), 'http1'); // a TLS ClientHello
});

/** A connected socket pair over loopback: [server side, client side]. */
async function pair(): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer({ allowHalfOpen: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const [accepted] = (await once(server, 'connection')) as [net.Socket];
  server.close();
  after(() => {
    accepted.destroy();
    client.destroy();
  });
  return [accepted, client];
}

async function readAll(socket: net.Socket, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  socket.on('data', (c: Buffer) => {
    chunks.push(c);
    got += c.length;
  });
  while (got < n) await new Promise((r) => setTimeout(r, 5));
  return Buffer.concat(chunks);
}

test('sniff: the preface split over writes is recognised and every byte is given back', async () => {
  const [s, c] = await pair();
  const verdict = sniffHttp2Preface(s, 2000);
  const rest = Buffer.from('frames follow');
  c.write(HTTP2_PREFACE.subarray(0, 3));
  await new Promise((r) => setTimeout(r, 20));
  c.write(HTTP2_PREFACE.subarray(3, 20));
  await new Promise((r) => setTimeout(r, 20));
  c.write(Buffer.concat([HTTP2_PREFACE.subarray(20), rest]));
  assert.equal(await verdict, 'h2');
  const all = await readAll(s, HTTP2_PREFACE.length + rest.length);
  assert.deepEqual(all, Buffer.concat([HTTP2_PREFACE, rest]));
});

test('sniff: HTTP/1.1 is told from the first byte and given back whole', async () => {
  const [s, c] = await pair();
  const verdict = sniffHttp2Preface(s, 2000);
  c.write('GET http://example.com/ HTTP/1.1\r\n\r\n');
  assert.equal(await verdict, 'http1');
  assert.equal((await readAll(s, 35)).toString(), 'GET http://example.com/ HTTP/1.1\r\n\r\n');
});

test('sniff: silence past the timeout, or a close mid-preface, is "closed"', async () => {
  const [s1] = await pair();
  const t0 = performance.now();
  assert.equal(await sniffHttp2Preface(s1, 100), 'timeout');
  assert.ok(performance.now() - t0 >= 90);
  const [s2, c2] = await pair();
  const verdict = sniffHttp2Preface(s2, 2000);
  c2.end(HTTP2_PREFACE.subarray(0, 5));
  assert.equal(await verdict, 'closed');
});
