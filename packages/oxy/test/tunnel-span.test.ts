/**
 * A tunnel's request span lasts as long as the tunnel. An idle tunnel's continuations are cut to
 * one chain when no span is recorded (`tunnels/connect.ts`, `onramps/tcp/reactor-accept.ts`);
 * a recorded span must still end with the tunnel, not as it starts. The three ways a tunnel is
 * adopted by JS: a CONNECT in connect mode, a CONNECT through Node's accept
 * (`OXY_REACTOR_ACCEPT=0`, read as an endpoint starts), a `tcp` endpoint's reactor accept.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, test } from 'node:test';
import { spliceAvailable } from '../src/flows/stream/splice.ts';
import {
  type AppUnderTest,
  captureTelemetry,
  connectTunnel,
  hooksApp,
  readBytes,
  startApp,
  startTcpEcho,
  waitUntil,
} from '../src/testing/index.ts';

const skip = !spliceAvailable && 'the native addon is not built';
const tele = captureTelemetry({ verbosity: 'INFO' });
after(() => tele.stop());
const echo = await startTcpEcho();
after(() => echo.close());

async function startWith(reactor: boolean, settings: Record<string, unknown> = {}): Promise<AppUnderTest> {
  const was = process.env.OXY_REACTOR_ACCEPT;
  if (!reactor) process.env.OXY_REACTOR_ACCEPT = '0';
  try {
    const app = await startApp(hooksApp({}), { settings });
    after(() => app.stop());
    // The addon takes the listening socket on the loop's next poll (see tcp-reactor-accept.test.ts).
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    return app;
  } finally {
    if (was === undefined) delete process.env.OXY_REACTOR_ACCEPT;
    else process.env.OXY_REACTOR_ACCEPT = was;
  }
}

/** Idles past the reactor's 50 ms adoption (the tcp fork starts there), echoes, checks no `name` span ended, closes; the span's ms. */
async function spanOf(socket: net.Socket, name: string): Promise<number> {
  await new Promise((r) => setTimeout(r, 300));
  socket.write('ping');
  assert.equal((await readBytes(socket, 4)).toString(), 'ping');
  assert.equal(tele.spans().filter((s) => s.name === name).length, 0, `no ${name} span ended while it runs`);
  socket.end();
  await waitUntil(() => tele.spans().some((s) => s.name === name), `the ${name} span`);
  return (tele.spans().find((s) => s.name === name) as { durationMs: number }).durationMs;
}

for (const reactor of [true, false]) {
  test(`a CONNECT's span ends with its tunnel (reactor accept ${reactor ? 'on' : 'off'})`, {
    skip,
  }, async () => {
    const proxy = await startWith(reactor);
    tele.clear();
    const t = await connectTunnel(proxy.address(), echo.authority);
    const ms = await spanOf(t.socket as net.Socket, 'connect');
    assert.ok(ms >= 200, `a span of ${ms} ms`);
  });
}

test("a tcp endpoint's adopted tunnel: its span ends with it", { skip }, async () => {
  const app = await startWith(true, {
    endpoints: { main: {}, raw: { protocol: 'tcp', tcp: { target: echo.authority } } },
  });
  tele.clear();
  const [host, port] = app.address('raw').split(':');
  const s = net.connect({ host, port: Number(port) });
  s.on('error', () => {});
  const ms = await spanOf(s, 'request');
  assert.ok(ms >= 200, `a span of ${ms} ms`);
});
