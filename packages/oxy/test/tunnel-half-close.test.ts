/**
 * `tunnel_half_close`: what a tunnel does when its upstream ends first. By default (false, as
 * nginx stream's `proxy_half_close off` and RFC 9110's CONNECT) the client gets everything the
 * upstream sent and its FIN, then both connections close: the upstream sees Oxy's FIN at once,
 * and the client's later bytes go nowhere. With `true` the client's side is carried on until the
 * client ends it too. Checked on every path a tunnel takes: the addon's whole tunnel (accepted on
 * its reactor thread when no hook decides), the JS splice behind a hook, the JS pump
 * (`tunnel_splice: false`), and a CONNECT tunnel; and a large answer to a client that reads
 * slowly arrives whole.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { EgressDecision } from '../src/hooks/egress.ts';
import { type AppUnderTest, hooksApp, readBytes, startApp } from '../src/testing/index.ts';

/** A target that answers `hello` and shuts its writing, then collects what still comes to it. */
interface HalfClosingTarget {
  readonly authority: string;
  /** Per connection, in order: what it read after its FIN, once its side of the client ended. */
  readonly after: Promise<string>[];
  close(): Promise<void>;
}

async function halfClosingTarget(answer: Buffer = Buffer.from('hello')): Promise<HalfClosingTarget> {
  const after: Promise<string>[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.end(answer);
    let seen = '';
    s.on('data', (d: Buffer) => (seen += d.toString()));
    after.push(new Promise((resolve) => s.on('close', () => resolve(seen))));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  return {
    authority: `127.0.0.1:${port}`,
    after,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

const target = await halfClosingTarget();
const opened: AppUnderTest[] = [];
after(async () => {
  await Promise.all(opened.map((a) => a.stop()));
  await target.close();
});

async function start(hooks: Parameters<typeof hooksApp>[0], raw: Record<string, unknown>) {
  const app = await startApp(hooksApp(hooks), {
    settings: {
      endpoints: { main: { ...raw }, raw: { protocol: 'tcp', tcp: { target: target.authority }, ...raw } },
      egress: { blocked_cidrs: [] },
    },
  });
  opened.push(app);
  // libuv registers the listening socket on the loop's next poll; only then can the addon's
  // reactor take its accepting over (tcp-reactor-accept.test.ts).
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  return app;
}

function dial(app: AppUnderTest, name: string): net.Socket {
  const [host, port] = app.address(name).split(':');
  const s = net.connect({ host, port: Number(port), allowHalfOpen: true });
  s.on('error', () => {});
  return s;
}

/** Reads `s` to its end. */
async function readToEnd(s: net.Socket): Promise<string> {
  let got = '';
  s.on('data', (d: Buffer) => (got += d.toString()));
  await once(s, 'end');
  return got;
}

/**
 * The client reads the answer and its end, then writes `late` and ends. Returns what the target
 * read after its own FIN (the late bytes when the half-close is carried, nothing otherwise).
 */
async function lateBytes(s: net.Socket, before: number): Promise<{ answer: string; late: string }> {
  const answer = await readToEnd(s);
  // With the half-close carried the target still waits; without, it has its FIN already.
  s.end('late');
  const late = await waitFor(() => target.after[before]);
  s.destroy();
  return { answer, late };
}

async function waitFor<T>(get: () => T | undefined): Promise<T> {
  for (let i = 0; i < 500; i++) {
    const v = get();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('timed out');
}

const PATHS = [
  { name: 'whole tunnel (no hooks)', hooks: {}, raw: {} },
  {
    name: 'JS splice (an egress hook)',
    hooks: { egress: { handleConnection: (t: never) => EgressDecision.direct(t) } },
    raw: {},
  },
  { name: 'JS pump (tunnel_splice: false)', hooks: {}, raw: { tunnel_splice: false } },
] as const;

for (const path of PATHS) {
  test(`by default the upstream's end ends the tunnel: ${path.name}`, async () => {
    const app = await start(path.hooks, path.raw);
    const before = target.after.length;
    const { answer, late } = await lateBytes(dial(app, 'raw'), before);
    assert.equal(answer, 'hello');
    assert.equal(late, '', 'nothing the client sent after the upstream ended reached it');
  });

  test(`tunnel_half_close: true carries the client's side on: ${path.name}`, async () => {
    const app = await start(path.hooks, { ...path.raw, tunnel_half_close: true });
    const before = target.after.length;
    const { answer, late } = await lateBytes(dial(app, 'raw'), before);
    assert.equal(answer, 'hello');
    assert.equal(late, 'late');
  });
}

test("a CONNECT tunnel: by default the upstream's end ends it; with tunnel_half_close: true it is carried", async () => {
  for (const halfClose of [false, true]) {
    const app = await start({}, { tunnel_half_close: halfClose });
    const s = dial(app, 'main');
    s.write(`CONNECT ${target.authority} HTTP/1.1\r\nHost: ${target.authority}\r\n\r\n`);
    const head = 'HTTP/1.1 200 Connection Established\r\n\r\n';
    assert.equal((await readBytes(s, head.length)).toString(), head);
    const before = target.after.length;
    const { answer, late } = await lateBytes(s, before);
    assert.equal(answer, 'hello');
    assert.equal(late, halfClose ? 'late' : '', `tunnel_half_close: ${halfClose}`);
  }
});

test('a large answer to a client that reads slowly arrives whole before the tunnel ends', async () => {
  const big = Buffer.alloc(8 * 1024 * 1024, 0x61);
  const bigTarget = await halfClosingTarget(big);
  after(() => bigTarget.close());
  for (const path of PATHS) {
    const app = await startApp(hooksApp(path.hooks), {
      settings: {
        endpoints: { raw: { protocol: 'tcp', tcp: { target: bigTarget.authority }, ...path.raw } },
        egress: { blocked_cidrs: [] },
      },
    });
    opened.push(app);
    const s = dial(app, 'raw');
    s.pause();
    await new Promise((r) => setTimeout(r, 300)); // the target's answer fills the buffers
    let n = 0;
    s.on('data', (d: Buffer) => (n += d.length));
    s.resume();
    await once(s, 'end');
    assert.equal(n, big.length, path.name);
    s.destroy();
  }
});
