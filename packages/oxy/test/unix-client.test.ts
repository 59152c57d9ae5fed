/**
 * A client of an endpoint that listens on a Unix socket path has no address (its socket is
 * unnamed): hooks see `client` and `peer` with host `''` and port 0, and the audit record, the
 * request log line and the connection's log fields write an empty `client` (and `peer`), never a
 * made-up `:0`.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { log } from 'foundations/telemetry';
import { composeApps, type RequestLogLine, requestLog, type SocketAddr } from '../src/index.ts';
import { captureTelemetry, hooksApp, readBytes, startApp, startTcpEcho } from '../src/testing/index.ts';

test('a Unix-socket client is an empty client in hooks, audit records, request log and log fields', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oxy-unix-client-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sock = path.join(dir, 'proxy.sock');
  const echo = await startTcpEcho();
  after(() => echo.close());
  const tele = captureTelemetry({ verbosity: 'DEBUG' });
  after(() => tele.stop());
  const seen: { client: SocketAddr; peer: SocketAddr }[] = [];
  const lines: RequestLogLine[] = [];
  const app = composeApps(
    hooksApp({
      ingress: {
        handleConnectionClose: (_stats, ctx) => {
          seen.push({ client: ctx.client, peer: ctx.peer });
          log.info('unix client closed'); // in the connection's context: its log fields
        },
      },
    }),
    requestLog({ write: (line) => lines.push(line) }),
  );
  const oxy = await startApp(app, { settings: { endpoints: { main: { addr: sock } } } });
  after(() => oxy.stop());

  const client = net.connect(sock);
  await once(client, 'connect');
  client.write(`CONNECT ${echo.authority} HTTP/1.1\r\nHost: ${echo.authority}\r\n\r\n`);
  const [head] = await once(client, 'data');
  assert.match(String(head), /^HTTP\/1\.1 200/);
  client.write('x');
  assert.equal((await readBytes(client, 1)).toString(), 'x');
  client.end();
  await once(client, 'close');
  await oxy.stop();

  assert.deepEqual(seen, [{ client: { host: '', port: 0 }, peer: { host: '', port: 0 } }]);
  const records = oxy.auditRecords();
  assert.equal(records.length, 1, JSON.stringify(records));
  assert.equal(records[0]?.client, '');
  assert.equal(records[0]?.peer, '');
  assert.equal(lines.length, 1);
  assert.equal(lines[0]?.client, '');
  const closed = tele.logs.find((r) => r.msg === 'unix client closed');
  assert.equal(closed?.fields.client, '');
});
