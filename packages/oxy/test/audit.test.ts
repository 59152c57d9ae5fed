/**
 * The audit file around start and stop: a path that cannot be opened is a start-up error naming
 * `audit.path`, and a tunnel torn down by the shutdown still leaves its record (written after
 * the sink closed, once its connection has gone).
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { connectTunnel, hooksApp, readBytes, startApp, startTcpEcho } from '../src/testing/index.ts';

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
