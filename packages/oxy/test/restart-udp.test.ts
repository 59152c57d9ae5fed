/**
 * A graceful restart under UDP load, with real processes: a `udp` endpoint's socket goes to the
 * new process, a datagram flow (one every millisecond, each echoed back) runs across three
 * restarts, and the test reports what was lost. The old process stops reading when the new one
 * is ready; its open session keeps its upstream socket and answers what it already had.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ServiceUnderTest } from '../../foundations/test/fixtures/restart-harness.ts';

const APP = path.join(import.meta.dirname, 'fixtures', 'restart-app.ts');

describe('oxy graceful restart of a udp endpoint', () => {
  const echo = dgram.createSocket('udp4');
  const services: ServiceUnderTest[] = [];
  before(async () => {
    echo.on('message', (m, from) => echo.send(m, from.port, from.address));
    echo.bind(0, '127.0.0.1');
    await once(echo, 'listening');
  });
  after(() => {
    for (const s of services) s.cleanup();
    echo.close();
  });

  it('3 restarts under a datagram every millisecond: every restarter exits 0, losses reported', async () => {
    const config = (sock: string): string =>
      [
        'endpoints:',
        '  main:',
        '    addr: 127.0.0.1:0',
        '  dgram:',
        '    protocol: udp',
        '    addr: 127.0.0.1:0',
        '    udp:',
        `      target: "127.0.0.1:${echo.address().port}"`,
        '      idle_timeout: 1s',
        'egress:',
        '  blocked_cidrs: []',
        'restart:',
        `  socket: ${sock}`,
        '  drain_timeout: 2s',
        'telemetry:',
        '  server:',
        '    enabled: false',
        '',
      ].join('\n');
    const svc = new ServiceUnderTest(config, APP);
    services.push(svc);
    await svc.start();
    let port = 0;
    for (let i = 0; i < 200 && port === 0; i++) {
      const m = /endpoint listening endpoint=dgram addr=127\.0\.0\.1:(\d+)/.exec(svc.stdoutText + svc.stderr);
      if (m) port = Number(m[1]);
      else await sleep(50);
    }
    assert.ok(port > 0, `no udp endpoint line in:\n${svc.stdoutText}${svc.stderr}`);

    const client = dgram.createSocket('udp4');
    client.bind(0, '127.0.0.1');
    await once(client, 'listening');
    const seen = new Set<number>();
    client.on('message', (m: Buffer) => seen.add(m.readUInt32BE(0)));
    let sent = 0;
    const timer = setInterval(() => {
      const b = Buffer.alloc(64);
      b.writeUInt32BE(sent++, 0);
      client.send(b, port, '127.0.0.1');
    }, 1);
    try {
      await sleep(300);
      for (let i = 1; i <= 3; i++) {
        const r = await svc.restart();
        assert.equal(r.code, 0, `restart ${i}: ${r.stdout}${r.stderr}`);
        await sleep(300);
      }
    } finally {
      clearInterval(timer);
    }
    await sleep(500); // the last answers
    client.close();
    const lost = sent - seen.size;
    // Reported, not hidden: UDP may lose a datagram across the hand-over of a session.
    process.stdout.write(`# udp restart: sent ${sent}, answered ${seen.size}, lost ${lost}\n`);
    assert.ok(sent > 500, `the flow ran (${sent} sent)`);
    assert.ok(lost <= sent * 0.02, `lost ${lost} of ${sent} (more than 2 %)`);
  });
});
