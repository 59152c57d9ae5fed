/**
 * The audit file around start and stop: a path that cannot be opened is a start-up error naming
 * `audit.path`, and a tunnel torn down by the shutdown still leaves its record (written after
 * the sink closed, once its connection has gone).
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import {
  captureTelemetry,
  connectTunnel,
  hooksApp,
  readBytes,
  startApp,
  startTcpEcho,
  waitUntil,
} from '../src/testing/index.ts';

test('an audit path that cannot be opened fails the start, naming audit.path', async () => {
  await assert.rejects(
    startApp(hooksApp(), { settings: { audit: { output: 'file', path: '/nonexistent-dir/audit.log' } } }),
    /audit\.path: cannot open \/nonexistent-dir\/audit\.log: ENOENT/,
  );
});

test('a tunnel still open at stop() is closed and audited, without an error after the sink closed', async () => {
  const echo = await startTcpEcho();
  after(() => echo.close());
  const oxy = await startApp(hooksApp());
  const t = await connectTunnel(oxy.address(), echo.authority);
  assert.equal(t.status, 200);
  t.socket.write('x');
  assert.equal((await readBytes(t.socket, 1)).toString(), 'x');
  t.socket.on('error', () => {});
  await oxy.stop();
  t.socket.destroy();
  // The record may land a few ticks after close(): stop() reads them back after its leak wait.
  const records = oxy.auditRecords();
  assert.equal(records.length, 1, JSON.stringify(records));
  assert.equal(records[0]?.kind, 'tunnel');
  assert.equal(records[0]?.target, echo.authority);
  assert.equal(records[0]?.bytes_up, 1);
});

test('a failing audit write (disk full) is logged once and the proxy keeps serving', async () => {
  const echo = await startTcpEcho();
  after(() => echo.close());
  const tele = captureTelemetry();
  after(() => tele.stop());
  const oxy = await startApp(hooksApp(), { settings: { audit: { output: 'file', path: '/dev/full' } } });
  for (let i = 0; i < 3; i++) {
    const t = await connectTunnel(oxy.address(), echo.authority);
    assert.equal(t.status, 200);
    t.socket.write('y');
    assert.equal((await readBytes(t.socket, 1)).toString(), 'y');
    t.socket.end();
    await new Promise((r) => t.socket.once('close', r));
  }
  await waitUntil(
    () => tele.logs.some((r) => r.msg.startsWith('audit log write failed')),
    'the audit error log',
  );
  assert.equal(tele.logs.filter((r) => r.msg.startsWith('audit log write failed')).length, 1);
  await oxy.stop();
});
