/**
 * CONNECT tunnels with `tunnel_splice` on (the default: bytes spliced in the kernel) and off
 * (the JS pump) behave the same from outside: megabytes both ways intact, half-close carried
 * across, and the audit record's byte counts exact.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type net from 'node:net';
import { after, test } from 'node:test';
import { connectTunnel, hooksApp, startApp, startTcpServer } from '../testing/index.ts';

// An upstream that counts what it receives and, on the client's FIN, answers with DOWN bytes.
const DOWN = randomBytes(3 << 20);
const server = await startTcpServer((s: net.Socket) => {
  const h = createHash('sha256');
  let n = 0;
  s.on('data', (d: Buffer) => {
    h.update(d);
    n += d.length;
  });
  s.on('end', () => s.end(Buffer.concat([Buffer.from(`${n} ${h.digest('hex')}\n`), DOWN])));
});
const spliced = await startApp(hooksApp());
const pumped = await startApp(hooksApp(), { settings: { endpoints: { main: { tunnel_splice: false } } } });
after(async () => {
  await server.close();
  await Promise.all([spliced.stop(), pumped.stop()]);
});

for (const [name, app] of [
  ['spliced (default)', spliced],
  ['pumped (tunnel_splice: false)', pumped],
] as const) {
  test(`${name}: 8 MiB up, 3 MiB down after a half-close, audited with exact counts`, async () => {
    const up = randomBytes(8 << 20);
    const t = await connectTunnel(app.address(), server.authority);
    assert.equal(t.status, 200);
    const parts: Buffer[] = [];
    t.socket.on('data', (d: Buffer) => parts.push(d));
    t.socket.end(up);
    await once(t.socket, 'end');
    t.socket.destroy();
    const got = Buffer.concat(parts);
    const nl = got.indexOf(10);
    const [n, hash] = got.subarray(0, nl).toString().split(' ');
    assert.equal(Number(n), up.length);
    assert.equal(hash, createHash('sha256').update(up).digest('hex'));
    assert.ok(got.subarray(nl + 1).equals(DOWN), 'download intact');
    let rec: ReturnType<typeof app.auditRecords>[number] | undefined;
    for (let i = 0; i < 50 && rec === undefined; i++) {
      rec = app.auditRecords().find((r) => r.target === server.authority && r.kind === 'tunnel');
      if (rec === undefined) await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(rec, 'an audit record');
    assert.equal(rec.bytes_up, up.length);
    assert.equal(rec.bytes_down, got.length);
    assert.equal(rec.close_reason, 'done');
  });
}
