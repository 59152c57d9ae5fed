/**
 * The restart library's pieces on their own: task tracker, frame codec (with malformed
 * input), inheritance variables (with malformed input), /proc address and transport lookup, Unix socket
 * binding rules, the handover channel and sd_notify formatting.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { passFd, UdpSocket } from 'native';
import { isFoundationsError } from '../src/errors.ts';
import { toChildReport, toRestarterAnswer } from '../src/restart/frames.ts';
import {
  decodeProcAddr,
  encodeFrame,
  FrameDecoder,
  formatNotifyState,
  HandoverChannel,
  Lifecycle,
  Listeners,
  parseHandoverEnv,
  parseSystemdEnv,
  sameListenAddr,
  serverFd,
  socketAddressOfFd,
  socketOfFd,
  TaskTracker,
} from '../src/restart/index.ts';

const code = (c: string) => (e: unknown) => isFoundationsError(e) && e.code === c;

describe('TaskTracker', () => {
  it('wait() settles only once closed and empty', async () => {
    const t = new TaskTracker();
    const a = t.start();
    let settled = false;
    const w = t.wait().then((r) => {
      settled = true;
      return r;
    });
    a.done();
    await new Promise((r) => setImmediate(r));
    assert.equal(settled, false, 'not closed yet');
    const b = t.start();
    t.close();
    assert.equal(t.size, 1);
    b.done();
    b.done(); // idempotent
    assert.equal(await w, 'done');
    assert.equal(t.size, 0);
  });

  it('tracks promises and functions, including failures; refuses work after close', async () => {
    const t = new TaskTracker();
    const p = t.track(new Promise((r) => setTimeout(() => r(1), 20)));
    const f = t.track(async () => 2);
    const bad = t.track(() => {
      throw new Error('sync throw');
    });
    await assert.rejects(bad, /sync throw/);
    assert.equal(t.size, 1, 'the async function and the throwing one are done; the timer is not');
    t.close();
    assert.throws(() => t.start(), code('FND_ERR_RESTART'));
    assert.equal(await f, 2);
    assert.equal(await p, 1);
    assert.equal(await t.wait(), 'done');
  });

  it('wait(timeout) reports a timeout while tasks remain; `using` ends a task', async () => {
    const t = new TaskTracker();
    const token = t.start();
    t.close();
    assert.equal(await t.wait(30), 'timeout');
    {
      using _scoped = token;
    }
    assert.equal(await t.wait(30), 'done');
  });
});

describe('frames', () => {
  it('decodes frames split across chunks and several in one chunk', () => {
    const bytes = Buffer.concat([
      encodeFrame({ type: 'restart' }),
      encodeFrame({ type: 'complete', pid: 42 }),
    ]);
    const d = new FrameDecoder();
    const out = [];
    for (let i = 0; i < bytes.length; i += 3) out.push(...d.push(bytes.subarray(i, i + 3)));
    assert.deepEqual(out, [{ type: 'restart' }, { type: 'complete', pid: 42 }]);
    assert.equal(d.pending, 0);
    assert.deepEqual(new FrameDecoder().push(bytes).length, 2);
  });

  it('rejects malformed input with a clear error', () => {
    const frame = (body: string): Buffer => {
      const b = Buffer.from(body);
      const h = Buffer.alloc(4);
      h.writeUInt32BE(b.length);
      return Buffer.concat([h, b]);
    };
    const huge = Buffer.from([0xff, 0xff, 0xff, 0xff]);
    assert.throws(() => new FrameDecoder(1024).push(huge), /exceeds the limit of 1024/);
    assert.throws(() => new FrameDecoder().push(frame('{not json')), /not valid JSON/);
    assert.throws(() => new FrameDecoder().push(frame('[1]')), /not a JSON object/);
    assert.throws(() => new FrameDecoder().push(frame('null')), /not a JSON object/);
    assert.throws(() => new FrameDecoder().push(frame('{"type":7}')), /no string "type"/);
    assert.throws(() => encodeFrame({ type: 'state', state: 1n }), code('FND_ERR_RESTART'));
    assert.throws(() => toRestarterAnswer({ type: 'complete', pid: 'x' }), /unexpected answer/);
    assert.throws(() => toRestarterAnswer({ type: 'failed' }), /unexpected answer/);
    assert.throws(() => toRestarterAnswer({ type: 'restart' }), /unexpected answer/);
    assert.throws(() => toChildReport({ type: 'ready' }), /unexpected report/);
    assert.deepEqual(toRestarterAnswer({ type: 'refused', reason: 'busy' }), {
      type: 'refused',
      reason: 'busy',
    });
  });
});

describe('inheritance variables', () => {
  it('parses systemd LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES', () => {
    assert.deepEqual(parseSystemdEnv({}), []);
    assert.deepEqual(
      parseSystemdEnv({ LISTEN_FDS: '2', LISTEN_PID: '1' }, 2),
      [],
      'meant for another process',
    );
    assert.deepEqual(
      parseSystemdEnv({ LISTEN_FDS: '2', LISTEN_PID: '7', LISTEN_FDNAMES: 'web:unknown' }, 7),
      [
        { fd: 3, name: 'web', addr: null, source: 'systemd' },
        { fd: 4, name: null, addr: null, source: 'systemd' },
      ],
    );
    assert.equal(parseSystemdEnv({ LISTEN_FDS: '1' }).length, 1, 'no LISTEN_PID: ours');
  });

  it('rejects malformed systemd variables naming the variable', () => {
    assert.throws(() => parseSystemdEnv({ LISTEN_FDS: 'two' }), /LISTEN_FDS: expected a count/);
    assert.throws(
      () => parseSystemdEnv({ LISTEN_FDS: '1', LISTEN_PID: 'me' }),
      /LISTEN_PID: expected a process id/,
    );
    assert.throws(() => parseSystemdEnv({ LISTEN_FDS: '2', LISTEN_FDNAMES: 'a' }), /LISTEN_FDNAMES: 1 names/);
  });

  it('parses the handover variable and rejects malformed ones naming the field', () => {
    const ok = parseHandoverEnv({
      FOUNDATIONS_HANDOVER: JSON.stringify({
        control: 5,
        listeners: [{ name: 'main', addr: { kind: 'tcp', host: '::1', port: 80 }, fd: 3 }],
      }),
    });
    assert.deepEqual(ok, {
      controlFd: 5,
      listeners: [{ fd: 3, name: 'main', addr: { kind: 'tcp', host: '::1', port: 80 }, source: 'handover' }],
      datagrams: [],
    });
    assert.equal(parseHandoverEnv({}), null);
    const current = parseHandoverEnv({
      FOUNDATIONS_HANDOVER: JSON.stringify({
        control: 5,
        listeners: [
          {
            name: 'main',
            addr: { kind: 'tcp', host: '127.0.0.1', port: 8080 },
            fd: 3,
            configured: { kind: 'tcp', host: 'localhost', port: 8080 },
            transport: 'stream',
            systemd: true,
          },
        ],
      }),
    });
    assert.deepEqual(current?.listeners, [
      {
        fd: 3,
        name: 'main',
        addr: { kind: 'tcp', host: '127.0.0.1', port: 8080 },
        source: 'systemd',
        configured: { kind: 'tcp', host: 'localhost', port: 8080 },
        transport: 'stream',
      },
    ]);
    const bad = (v: string, re: RegExp): void => {
      assert.throws(
        () => parseHandoverEnv({ FOUNDATIONS_HANDOVER: v }),
        (e: unknown) => {
          assert.ok(code('FND_ERR_LISTEN')(e));
          assert.match((e as Error).message, re);
          return true;
        },
      );
    };
    bad('{', /not valid JSON/);
    bad('7', /expected an object/);
    bad('{"control":"x","listeners":[]}', /control: expected a descriptor/);
    bad('{"control":1,"listeners":[]}', /control: expected a descriptor/);
    bad('{"control":4}', /listeners: expected a list/);
    bad('{"control":4,"listeners":[3]}', /listeners\[0\]: expected an object/);
    bad('{"control":4,"listeners":[{"name":"a","fd":-1}]}', /listeners\[0\]\.fd/);
    bad('{"control":4,"listeners":[{"fd":3}]}', /listeners\[0\]\.name/);
    bad('{"control":4,"listeners":[{"name":"a","fd":3,"addr":{"kind":"udp"}}]}', /listeners\[0\]\.addr/);
    const a = '"name":"a","fd":3,"addr":{"kind":"unix","path":"/a"}';
    bad(`{"control":4,"listeners":[{${a},"configured":{}}]}`, /listeners\[0\]\.configured is not/);
    bad(`{"control":4,"listeners":[{${a},"transport":"dgram"}]}`, /listeners\[0\]\.transport/);
    bad(`{"control":4,"listeners":[{${a},"systemd":1}]}`, /listeners\[0\]\.systemd/);
  });
});

describe('socket addresses', () => {
  it('decodes /proc/net/tcp{,6} addresses', () => {
    assert.deepEqual(decodeProcAddr('0100007F:1F90', 4), { host: '127.0.0.1', port: 8080 });
    assert.deepEqual(decodeProcAddr('00000000000000000000000001000000:0050', 16), { host: '::1', port: 80 });
    assert.deepEqual(decodeProcAddr('B80D0120000000000000000001000000:01BB', 16), {
      host: '2001:db8::1',
      port: 443,
    });
    assert.equal(decodeProcAddr('zz', 4), null);
    assert.equal(decodeProcAddr('0100007F', 4), null);
  });

  it('finds the local address of a listening descriptor (TCP v4, v6 and Unix)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'restart-units-'));
    after(() => fs.rmSync(dir, { recursive: true, force: true }));
    for (const [opts, want] of [
      [{ host: '127.0.0.1', port: 0 }, 'tcp'],
      [{ host: '::1', port: 0 }, 'tcp'],
      [{ path: path.join(dir, 's.sock') }, 'unix'],
    ] as const) {
      const server = net.createServer();
      await new Promise<void>((r) => server.listen(opts, r));
      const found = socketAddressOfFd(serverFd(server));
      const a = server.address();
      if (want === 'tcp') {
        const ai = a as net.AddressInfo;
        assert.deepEqual(found, { kind: 'tcp', host: ai.address, port: ai.port });
      } else assert.deepEqual(found, { kind: 'unix', path: a });
      server.close();
    }
    assert.equal(socketAddressOfFd(0x7ffe), null);
  });

  it('tells the transport of a descriptor: stream listeners from UDP sockets', async () => {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    assert.equal(socketOfFd(serverFd(server))?.transport, 'stream');
    server.close();
    const udp = UdpSocket.bind({ address: '127.0.0.1' });
    assert.deepEqual(socketOfFd(udp.fd), {
      addr: { kind: 'tcp', host: '127.0.0.1', port: udp.address().port },
      transport: 'datagram',
    });
    udp.close();
  });

  it('compares listen addresses; port 0 never matches', () => {
    assert.ok(
      sameListenAddr({ kind: 'tcp', host: '::1', port: 80 }, { kind: 'tcp', host: '0:0::1', port: 80 }),
    );
    assert.ok(
      !sameListenAddr(
        { kind: 'tcp', host: '127.0.0.1', port: 0 },
        { kind: 'tcp', host: '127.0.0.1', port: 0 },
      ),
    );
    assert.ok(!sameListenAddr({ kind: 'tcp', host: '127.0.0.1', port: 1 }, { kind: 'unix', path: '/x' }));
    assert.ok(sameListenAddr({ kind: 'unix', path: '/x' }, { kind: 'unix', path: '/x' }));
  });
});

describe('Listeners: Unix sockets', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'restart-listen-'));
  const servers: net.Server[] = [];
  after(() => {
    for (const s of servers) s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const open = async (p: string, mode?: number): Promise<net.Server> => {
    const s = net.createServer();
    servers.push(s);
    return new Listeners().listen('ctl', { kind: 'unix', path: p }, s, mode === undefined ? {} : { mode });
  };

  it('binds with the requested mode, refuses a live socket, replaces a stale one, keeps other files', async () => {
    const p = path.join(dir, 'a.sock');
    await open(p, 0o600);
    assert.equal(fs.statSync(p).mode & 0o777, 0o600);
    await assert.rejects(
      open(p),
      (e: unknown) => code('FND_ERR_LISTEN')(e) && /EADDRINUSE/.test((e as Error).message),
    );
    // Closing our server must not remove the path (it was bound under a temporary name).
    net.Server.prototype.close.call(servers[0] as net.Server);
    assert.ok(fs.statSync(p).isSocket(), 'the socket file stays after close');
    await open(p, 0o600); // stale now: replaced
    const plain = path.join(dir, 'plain');
    fs.writeFileSync(plain, 'keep me');
    await assert.rejects(open(plain), /EEXIST/);
    assert.equal(fs.readFileSync(plain, 'utf8'), 'keep me');
  });
});

describe('HandoverChannel', () => {
  it('reads the state through a non-blocking socketpair and reports once', () => {
    const [ours, theirs] = passFd.socketPair('stream');
    const state = { counter: 3, big: 'x'.repeat(100_000) };
    const frame = encodeFrame({ type: 'state', state });
    // In two writes, as a stream may deliver it; both fit in the socket buffer.
    fs.writeSync(ours, frame.subarray(0, 50_000));
    fs.writeSync(ours, frame.subarray(50_000));
    const ch = new HandoverChannel(theirs);
    assert.deepEqual(ch.readState(2000), state);
    ch.reportReady();
    assert.equal(ch.open, false);
    ch.reportFailed('ignored after the first report');
    const d = new FrameDecoder();
    const buf = Buffer.alloc(1024);
    const n = fs.readSync(ours, buf);
    assert.deepEqual(d.push(buf.subarray(0, n)), [{ type: 'ready', pid: process.pid }]);
    fs.closeSync(ours);
  });

  it('fails clearly on a wrong first message, a closed channel or silence', () => {
    const [a, b] = passFd.socketPair('stream');
    fs.writeSync(a, encodeFrame({ type: 'ready', pid: 1 }));
    assert.throws(() => new HandoverChannel(b).readState(500), /expected the state, got "ready"/);
    fs.closeSync(a);
    assert.throws(() => new HandoverChannel(b).readState(500), /closed the channel/);
    fs.closeSync(b);
    const [c, d] = passFd.socketPair('stream');
    assert.throws(() => new HandoverChannel(d).readState(100), /timed out/);
    fs.closeSync(c);
    fs.closeSync(d);
  });
});

describe('sd_notify formatting', () => {
  it('formats assignments and rejects injected lines', () => {
    assert.deepEqual(formatNotifyState({ READY: 1, MAINPID: 9, STATUS: 'ok', X: undefined }), [
      'READY=1',
      'MAINPID=9',
      'STATUS=ok',
    ]);
    assert.throws(() => formatNotifyState({ STATUS: 'a\nREADY=1' }), /STATUS contains a newline/);
    assert.throws(() => formatNotifyState({ 'bad key': 1 }), /invalid variable name/);
  });
});

describe('Lifecycle in process', () => {
  it('drains tracked connections on shutdown, then runs beforeExit and exits 0', async () => {
    const events: string[] = [];
    const lc = new Lifecycle(
      {
        info: { name: 't', version: '0', description: 't' },
        settings: { enabled: false, socket: '/nonexistent/x.sock', drain_timeout: 2000, ready_timeout: 1000 },
        signals: false,
        log: () => {},
        drain: () => {
          events.push('drain');
        },
        beforeExit: () => {
          events.push('beforeExit');
        },
        exit: (c) => events.push(`exit ${c}`),
      },
      new Listeners(),
      null,
    );
    assert.deepEqual(await lc.restart(), { type: 'refused', reason: 'this instance is still starting' });
    const server = await lc.listen('main', { kind: 'tcp', host: '127.0.0.1', port: 0 }, net.createServer());
    await lc.ready();
    assert.equal(lc.phase, 'ready');
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await new Promise((r) => client.once('connect', r));
    while (lc.listeners.connections.size === 0) await new Promise((r) => setImmediate(r));
    const done = lc.shutdown();
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(events, ['drain'], 'waits for the open connection');
    assert.equal(server.listening, false, 'stopped accepting');
    client.end();
    assert.equal(await lc.drained, 'shutdown');
    await done;
    assert.deepEqual(events, ['drain', 'beforeExit', 'exit 0']);
    assert.deepEqual(await lc.restart(), { type: 'refused', reason: 'this instance is shutting down' });
  });
});
