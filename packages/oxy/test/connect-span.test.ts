/**
 * A CONNECT tunnel's request span lasts as long as the tunnel: the connection's memory work
 * (`tunnels/connect.ts`, no wrapper promise per idle tunnel when no span is recorded) must not
 * end a recorded span when the tunnel starts. Both ways a CONNECT is served: the reactor's
 * connect mode and Node's accept (`OXY_REACTOR_ACCEPT=0` is read per endpoint start).
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

const tele = captureTelemetry({ verbosity: 'INFO' });
after(() => tele.stop());
const echo = await startTcpEcho();
after(() => echo.close());

for (const reactor of [true, false]) {
  test(`a CONNECT's span ends with its tunnel, not at its start (reactor accept ${reactor ? 'on' : 'off'})`, async () => {
    const was = process.env.OXY_REACTOR_ACCEPT;
    if (!reactor) process.env.OXY_REACTOR_ACCEPT = '0';
    const proxy = await startApp(hooksApp({}));
    if (was === undefined) delete process.env.OXY_REACTOR_ACCEPT;
    else process.env.OXY_REACTOR_ACCEPT = was;
    after(() => proxy.stop());
    tele.clear();
    const t = await connectTunnel(proxy.address(), echo.authority);
    // Idle past the reactor's 50 ms adoption, then a round trip.
    await new Promise((r) => setTimeout(r, 300));
    t.socket.write('ping');
    assert.equal((await readBytes(t.socket, 4)).toString(), 'ping');
    assert.equal(
      tele.spans().filter((s) => s.name === 'connect').length,
      0,
      'no CONNECT span ended while its tunnel runs',
    );
    t.socket.end();
    await waitUntil(() => tele.spans().some((s) => s.name === 'connect'), 'the CONNECT span');
    const span = tele.spans().find((s) => s.name === 'connect');
    assert.ok(span !== undefined && span.durationMs >= 250, `a span of ${span?.durationMs} ms`);
  });
}
