/**
 * An Upgrade carried through an upstream proxy (`EgressDecision.viaProxy`): the tunnel's socket,
 * which the connector paused after reading the proxy's `200`, is read for the answer (it once
 * stayed paused, and every such upgrade hung), and bytes the proxy sent in the same read as its
 * `200` belong to the tunnel and reach the answer reader, not the floor.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { EgressDecision } from '../src/hooks/egress.ts';
import {
  hooksApp,
  rawConnect,
  readUntil,
  startApp,
  startTcpServer,
  waitUntil,
} from '../src/testing/index.ts';
import { onHead } from './fixtures/raw-http.ts';

const SWITCH = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\nfirst|';

/**
 * The upstream proxy, and the origin behind it in one: for `early.test` it sends the 101 in the
 * same write as its 200; for `origin.test`, once the upgrade request has come. Then it echoes.
 */
const proxy = await startTcpServer((s) =>
  onHead(s, (connect) => {
    const early = connect.startsWith('CONNECT early.test:80 ');
    s.write(`HTTP/1.1 200 Connection established\r\n\r\n${early ? SWITCH : ''}`);
    // Then the upgrade request; after its head, whatever comes is echoed.
    onHead(s, (_request, rest) => {
      if (!early) s.write(SWITCH);
      if (rest.length > 0) s.write(rest);
      s.pipe(s);
    });
  }),
);
const app = await startApp(
  hooksApp({
    egress: { handleConnection: () => EgressDecision.viaProxy({ host: '127.0.0.1', port: proxy.port }) },
  }),
);
after(() => Promise.all([app.stop(), proxy.close()]));

for (const host of ['origin.test', 'early.test']) {
  test(`an upgrade through an upstream proxy (${host}): the 101, the first bytes, then both ways`, async () => {
    const c = rawConnect(
      app.address(),
      `GET http://${host}/chat HTTP/1.1\r\nHost: ${host}\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\nhello`,
    );
    const head = await readUntil(c, 'first|', 3000);
    assert.match(head, /^HTTP\/1\.1 101 /);
    c.write('ping');
    assert.match(await readUntil(c, 'ping', 3000), /ping$/);
    c.destroy();
    const mine = (r: { status: number }) => r.status === 101 && JSON.stringify(r).includes(host);
    await waitUntil(() => app.auditRecords().some(mine), `the audit record of the upgrade to ${host}`);
    // The bytes that came with each side's head are the tunnel's too: up 'hello' and 'ping';
    // down 'first|' (with the 101) and the echoes of both.
    const rec = app.auditRecords().find(mine);
    assert.equal(rec?.bytes_up, 9);
    assert.equal(rec?.bytes_down, 15);
  });
}
