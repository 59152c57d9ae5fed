/**
 * Regression tests for the HTTP/1.1 framing defects of issue 19, on both HTTP/1 paths (the
 * lean on-ramp for bodiless requests, `node:http` for the rest): HTTP/1.0 with
 * Transfer-Encoding closes after the response (RFC 9112 §6.1), two Host fields or none in
 * HTTP/1.1 get 400 (§3.2), `HTTP/2.0` in a request line gets 505, and a client that half-closes
 * after its request still gets the response.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { hooksApp, startApp, startHttpUpstream, startTcpEcho } from '../src/testing/index.ts';
import { rawClient } from './fixtures/raw-http.ts';

const upstream = await startHttpUpstream({
  'GET /hello': { status: 200, body: 'hello' },
  // The peer has read the body by the time a route runs: answer with what it recorded.
  'POST /echo': (_req, res) => {
    setTimeout(() => res.end(upstream.requests.at(-1)?.body), 100);
  },
  'GET /slow': (_req, res) => {
    setTimeout(() => res.end('slow answer'), 200);
  },
});
const echo = await startTcpEcho();
const oxy = await startApp(hooksApp());
after(async () => {
  await Promise.all([upstream.close(), echo.close()]);
  await oxy.stop();
});
const u = upstream.authority;

test('HTTP/1.0 with Transfer-Encoding has faulty framing: 400 and the connection closed, even with keep-alive', async () => {
  const before = upstream.requests.length;
  const c = await rawClient(oxy.proxy.address(), { allowHalfOpen: true });
  await c.write(
    `POST http://${u}/echo HTTP/1.0\r\nHost: ${u}\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
  );
  const r = await c.response();
  assert.equal(r.status, 400);
  await c.closed();
  assert.equal(upstream.requests.length, before, 'nothing reached the upstream');
});

test('two Host fields, or none in HTTP/1.1, are a 400 on every path', async () => {
  const heads = [
    `GET http://${u}/hello HTTP/1.1\r\nHost: ${u}\r\nHost: other.test\r\n\r\n`,
    `GET http://${u}/hello HTTP/1.1\r\n\r\n`,
    `POST http://${u}/echo HTTP/1.1\r\nHost: ${u}\r\nHost: ${u}\r\nContent-Length: 1\r\n\r\nx`,
    `POST http://${u}/echo HTTP/1.1\r\nContent-Length: 1\r\n\r\nx`,
    `CONNECT ${echo.authority} HTTP/1.1\r\n\r\n`,
    `CONNECT ${echo.authority} HTTP/1.1\r\nHost: ${echo.authority}\r\nHost: ${echo.authority}\r\n\r\n`,
    `GET http://${u}/hello HTTP/1.1\r\nHost: ${u}\r\nHost: ${u}\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\n`,
    `GET http://${u}/hello HTTP/1.0\r\nHost: ${u}\r\nHost: ${u}\r\n\r\n`,
  ];
  const before = upstream.requests.length;
  for (const head of heads) {
    const c = await rawClient(oxy.proxy.address());
    await c.write(head);
    assert.equal((await c.response()).status, 400, head);
    await c.closed();
  }
  assert.equal(upstream.requests.length, before, 'nothing reached the upstream');
  // HTTP/1.0 without Host is fine.
  const c = await rawClient(oxy.proxy.address());
  await c.write(`GET http://${u}/hello HTTP/1.0\r\n\r\n`);
  assert.equal((await c.response()).status, 200);
});

test('HTTP/2.0 in an HTTP/1 request line is a 505, never forwarded', async () => {
  const before = upstream.requests.length;
  for (const head of [
    `GET http://${u}/hello HTTP/2.0\r\nHost: ${u}\r\n\r\n`,
    `POST http://${u}/echo HTTP/2.0\r\nHost: ${u}\r\nContent-Length: 1\r\n\r\nx`,
    `CONNECT ${echo.authority} HTTP/2.0\r\nHost: ${echo.authority}\r\n\r\n`,
  ]) {
    const c = await rawClient(oxy.proxy.address());
    await c.write(head);
    assert.equal((await c.response()).status, 505, head);
    await c.closed();
  }
  assert.equal(upstream.requests.length, before);
});

test('a client that half-closes after its request still gets the response, then the connection closes', async () => {
  for (const head of [
    `GET http://${u}/slow HTTP/1.1\r\nHost: ${u}\r\n\r\n`, // the lean path
    `POST http://${u}/echo HTTP/1.1\r\nHost: ${u}\r\nContent-Length: 11\r\n\r\nslow answer`, // node:http
  ]) {
    const before = oxy.auditRecords().length;
    const c = await rawClient(oxy.proxy.address(), { allowHalfOpen: true });
    await c.write(head);
    c.socket.end();
    const r = await c.response();
    assert.equal(r.status, 200, head);
    assert.equal(r.body.toString(), 'slow answer');
    await c.closed();
    const records = await oxy.waitForAudit(before + 1);
    assert.equal(records.at(-1)?.close_reason, 'done');
  }
});
