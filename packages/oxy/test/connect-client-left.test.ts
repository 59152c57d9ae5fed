/**
 * A client that leaves while its upstream connect is under way, on the JS connect paths (Happy
 * Eyeballs, an upstream proxy) and on the addon's own (a tunnel no hook sees): the connect is
 * aborted at once, its socket destroyed, and the
 * unit recorded as a client that left (`client_closed`, nothing answered, no upstream), not
 * held until `egress.connect_timeout` and recorded 504. Once, every such unit waited the whole
 * timeout: the runner had no close of the client's to abort on.
 *
 * The same for JS work that takes no signal (a slow DNS override, `tcpConnectOverride`): the
 * unit is recorded at once, and a socket the work brings later is closed.
 *
 * The slow upstream is a listener whose accept queue is full (`fixtures/held-upstream.ts`):
 * Oxy's connect to it is a SYN_SENT socket in /proc/net/tcp until it is gone. Linux only.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import { after, test } from 'node:test';
import { native } from '../src/flows/stream/native-addon.ts';
import type { Hooks } from '../src/index.ts';
import { type AppUnderTest, hooksApp, startApp, waitUntil } from '../src/testing/index.ts';
import { connectsUnderWay, heldEcho } from './fixtures/held-upstream.ts';

const skip = process.platform !== 'linux' ? 'needs Linux (/proc/net/tcp)' : false;
/** Far beyond the test: a unit still there after a second was held by the connect. */
const CONNECT_TIMEOUT = '30s';

const apps: AppUnderTest[] = [];
after(async () => {
  await Promise.all(apps.map((a) => a.stop()));
});

async function app(hooks: Hooks, settings: Record<string, unknown> = {}): Promise<AppUnderTest> {
  const { egress, ...rest } = settings as { egress?: Record<string, unknown> };
  const a = await startApp(hooksApp(hooks), {
    settings: { ...rest, egress: { connect_timeout: CONNECT_TIMEOUT, ...egress } },
  });
  apps.push(a);
  return a;
}

function dial(a: AppUnderTest, endpoint = 'main'): net.Socket {
  const { host, port } = a.proxy.address(endpoint);
  const c = net.connect(port, host);
  c.on('error', () => {});
  return c;
}

function connectHead(target: string): string {
  return `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`;
}

/**
 * Waits for Oxy's connect to the held upstream (`up`), makes the client leave (`leave`), then
 * checks the connect is gone within a second and the unit's one record says the client left.
 */
async function leavesWhileConnecting(
  a: AppUnderTest,
  up: { port: number; fillers: number },
  leave: () => void,
  expect: { reason: string; upstream: string | null } = { reason: 'client_closed', upstream: null },
): Promise<void> {
  await waitUntil(() => connectsUnderWay(up.port) > up.fillers, "Oxy's connect to the held upstream");
  leave();
  await waitUntil(
    () => connectsUnderWay(up.port) === up.fillers,
    "Oxy's upstream connect gone after the client left",
    1000,
  );
  const [rec] = await a.waitForAudit(1, 1000);
  assert.equal(rec?.close_reason, expect.reason);
  assert.equal(rec?.status, 0);
  assert.equal(rec?.upstream, expect.upstream);
}

/** A hook that keeps the connect in JS (the addon's whole tunnel would run it otherwise). */
const established: Hooks = { egress: { handleConnectionEstablished: () => {} } };

/** A name for the held upstream that resolves to two addresses: a race in JS, no other hook. */
function twoAddresses(): Hooks {
  return { egress: { dnsResolveOverride: () => ['127.0.0.2', '127.0.0.1'] } };
}

test('HTTP/1.1 CONNECT: a client reset during the connect aborts it', { skip }, async () => {
  const up = await heldEcho();
  const a = await app(established);
  const c = dial(a);
  c.write(connectHead(`127.0.0.1:${up.port}`));
  await leavesWhileConnecting(a, up, () => c.resetAndDestroy());
});

for (const [name, endpoint, lines] of [
  ['HTTP/1.1 CONNECT carried whole by the addon', 'main', (t: string) => connectHead(t)],
  ['a tcp endpoint carried whole by the addon', 'raw', () => 'first bytes'],
] as const) {
  test(`${name}: a client reset during the connect aborts it`, {
    skip: skip || (native === null ? 'needs the native addon' : false),
  }, async () => {
    const up = await heldEcho();
    const target = `127.0.0.1:${up.port}`;
    const a = await app(
      {},
      { endpoints: { main: {}, raw: { protocol: 'tcp', addr: '127.0.0.1:0', tcp: { target } } } },
    );
    const c = dial(a, endpoint);
    c.write(lines(target));
    // The reactor thread sees the reset as the client socket's error, before the connect
    // completed: recorded as the JS connectors record a client that left.
    await leavesWhileConnecting(a, up, () => c.resetAndDestroy());
  });
}

test('HTTP/1.1 CONNECT read by the reactor, raced in JS: a client reset aborts it', {
  skip: skip || (native === null ? 'needs the native addon' : false),
}, async () => {
  const up = await heldEcho();
  const a = await app(twoAddresses());
  const c = dial(a);
  c.write(connectHead(`held.test:${up.port}`));
  await leavesWhileConnecting(a, up, () => c.resetAndDestroy());
});

test('HTTP/2 CONNECT: a stream reset during the connect aborts it', { skip }, async () => {
  const up = await heldEcho();
  const a = await app(established);
  const session = http2.connect(`http://${a.address()}`);
  session.on('error', () => {});
  after(() => session.destroy());
  const stream = session.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${up.port}` });
  stream.on('error', () => {});
  await leavesWhileConnecting(a, up, () => stream.close(http2.constants.NGHTTP2_CANCEL));
});

for (const [name, hooks] of [
  ['a tcp endpoint with an egress hook', established],
  ['a tcp endpoint whose target is a name (raw accept, raced in JS)', twoAddresses()],
] as const) {
  test(`${name}: a client reset during the connect aborts it`, { skip }, async () => {
    const up = await heldEcho();
    const host = hooks === established ? '127.0.0.1' : 'held.test';
    const a = await app(hooks, {
      endpoints: { main: {}, raw: { protocol: 'tcp', tcp: { target: `${host}:${up.port}` } } },
    });
    const c = dial(a, 'raw');
    await once(c, 'connect');
    await leavesWhileConnecting(a, up, () => c.resetAndDestroy());
  });
}

test('upstream proxy slow to accept: a client reset during the connect to it aborts it', {
  skip,
}, async () => {
  const up = await heldEcho();
  const a = await app({}, { egress: { upstream_proxy: { enabled: true, addr: `127.0.0.1:${up.port}` } } });
  const c = dial(a);
  c.write(connectHead('origin.test:443'));
  await leavesWhileConnecting(a, up, () => c.resetAndDestroy());
});

test('upstream proxy that never answers the CONNECT: a client reset closes the connection to it', {
  skip,
}, async () => {
  let proxySide: net.Socket | null = null;
  const silent = net.createServer((s) => {
    proxySide = s;
    s.on('error', () => {});
    s.resume(); // reads the CONNECT and answers nothing; Oxy's FIN then closes it
  });
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  after(() => silent.close());
  const { port } = silent.address() as net.AddressInfo;
  const a = await app({}, { egress: { upstream_proxy: { enabled: true, addr: `127.0.0.1:${port}` } } });
  const c = dial(a);
  c.write(connectHead('origin.test:443'));
  await waitUntil(() => proxySide !== null, 'the connection to the upstream proxy');
  const closed = once(proxySide as unknown as net.Socket, 'close');
  c.resetAndDestroy();
  const gone = await Promise.race([closed.then(() => true), new Promise((r) => setTimeout(r, 1000, false))]);
  assert.ok(gone, 'the connection to the upstream proxy closed within a second of the client leaving');
  const [rec] = await a.waitForAudit(1, 1000);
  assert.equal(rec?.close_reason, 'client_closed');
  assert.equal(rec?.status, 0);
});

/**
 * A client that leaves (its CONNECT to `target`) while JS work that takes no signal is still
 * under way: the unit is recorded at once, not when the work ends (`done`).
 */
async function leavesDuringSlowWork(
  hooks: Hooks,
  target: string,
  done: Promise<unknown>,
): Promise<AppUnderTest> {
  const a = await app(hooks);
  const c = dial(a);
  c.write(connectHead(target));
  await new Promise((r) => setTimeout(r, 100));
  c.resetAndDestroy();
  const [rec] = await a.waitForAudit(1, 1000);
  assert.equal(rec?.close_reason, 'client_closed');
  assert.equal(rec?.status, 0);
  await done;
  return a;
}

test('a client that leaves while the DNS override is still answering is recorded at once', {
  skip,
}, async () => {
  const answered = Promise.withResolvers<void>();
  await leavesDuringSlowWork(
    {
      egress: {
        dnsResolveOverride: async () => {
          await new Promise((r) => setTimeout(r, 1500));
          answered.resolve();
          return ['127.0.0.1'];
        },
      },
    },
    'slow.test:443',
    answered.promise,
  );
});

test('a client that leaves during tcpConnectOverride: the socket it brings later is closed', {
  skip,
}, async () => {
  const target = net.createServer((s) => s.on('error', () => {}));
  target.listen(0, '127.0.0.1');
  await once(target, 'listening');
  after(() => target.close());
  const { port } = target.address() as net.AddressInfo;
  const late = Promise.withResolvers<net.Socket>();
  await leavesDuringSlowWork(
    {
      egress: {
        tcpConnectOverride: async () => {
          await new Promise((r) => setTimeout(r, 1500));
          const s = net.connect(port, '127.0.0.1');
          await once(s, 'connect');
          late.resolve(s);
          return s;
        },
      },
    },
    `127.0.0.1:${port}`,
    late.promise,
  );
  const s = await late.promise;
  await waitUntil(() => s.destroyed, 'the late socket destroyed', 1000);
});
