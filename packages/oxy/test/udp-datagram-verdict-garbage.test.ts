/**
 * A datagram hook that returns something that is not a verdict (null, a rewrite without
 * bytes or with a string, an array or another typed array, from plain JavaScript or a cast)
 * counts as a throw (hooks.intro.md): the datagram is dropped and counted as `hook_failed`,
 * the hook failure logged and counted, and the process, the session and other datagrams go on.
 * Before, each of these threw outside the hook's try (a `null.kind`, a `.length` of undefined,
 * or the native send refusing a string) and took the whole process down.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { after, test } from 'node:test';
import { captureTelemetry } from 'foundations/telemetry/testing';
import type { DatagramVerdict } from '../src/hooks/datagram.ts';
import { type AppUnderTest, hooksApp, startApp } from '../src/testing/index.ts';
import { startUdpEcho } from './fixtures/udp-echo.ts';

const echo = await startUdpEcho();
const echoPort = echo.port;

const GARBAGE: Record<string, unknown> = {
  null: null,
  'rewrite-no-data': { kind: 'rewrite' },
  'rewrite-string': { kind: 'rewrite', data: 'abc' },
  'rewrite-array': { kind: 'rewrite', data: [1, 2, 3] },
  'rewrite-uint16': { kind: 'rewrite', data: new Uint16Array(4) },
  'rewrite-dataview': { kind: 'rewrite', data: new DataView(new ArrayBuffer(4)) },
  number: 5,
};

const opened: AppUnderTest[] = [];
after(async () => {
  await Promise.all(opened.map((a) => a.stop()));
  echo.close();
});

for (const direction of ['up', 'down'] as const) {
  test(`a datagram hook returning garbage (${direction}) drops that datagram only, counted as a throw`, async () => {
    using tele = captureTelemetry({ verbosity: 'ERROR' });
    const app = await startApp(
      hooksApp({
        datagram: {
          handleDatagram: (data, dir) => {
            const text = Buffer.from(data).toString();
            if (dir === direction && Object.hasOwn(GARBAGE, text)) return GARBAGE[text] as DatagramVerdict;
            return undefined;
          },
        },
      }),
      {
        settings: {
          endpoints: {
            main: {},
            [`dns_${direction}`]: {
              protocol: 'udp',
              addr: '127.0.0.1:0',
              udp: { target: `127.0.0.1:${echoPort}` },
            },
          },
          egress: { blocked_cidrs: [] },
        },
      },
    );
    opened.push(app);
    const port = Number(app.address(`dns_${direction}`).split(':').at(-1));
    const client = dgram.createSocket('udp4');
    client.bind(0, '127.0.0.1');
    await once(client, 'listening');
    const answers: string[] = [];
    client.on('message', (m) => answers.push(m.toString()));
    const ask = async (text: string): Promise<void> => {
      client.send(text, port, '127.0.0.1');
      await new Promise((r) => setTimeout(r, 50));
    };
    await ask('first');
    for (const name of Object.keys(GARBAGE)) await ask(name);
    await ask('last');
    const deadline = Date.now() + 3000;
    while (!answers.includes('last') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    client.close();
    assert.deepEqual(
      answers,
      ['first', 'last'],
      'the garbage verdicts dropped their datagram; the others went through',
    );
    const failed = await tele.metricValue('udp_dropped_total', {
      endpoint: `dns_${direction}`,
      reason: 'hook_failed',
    });
    assert.equal(failed, Object.keys(GARBAGE).length);
    const hookFailures = tele.logs.filter((r) => r.msg === 'app hook failed');
    assert.equal(hookFailures.length, Object.keys(GARBAGE).length);
  });
}
