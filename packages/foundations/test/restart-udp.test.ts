/**
 * Graceful restarts of a UDP endpoint with real processes: the bound socket is handed to the
 * new process (the addon adopts it), a datagram flow every millisecond across the restart is
 * answered by one generation or the other, and what was lost is reported. A restart that moves
 * the endpoint binds the new port and frees the old; one that asks for other bind-time options
 * on the same port fails with the reason, and the old process serves on. Also the handover
 * variable's `datagrams` list: parsed, and malformed entries refused by name.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { HANDOVER_ENV, parseHandoverEnv } from '../src/restart/index.ts';
import { ServiceUnderTest, waitExit } from './fixtures/restart-harness.ts';

const FIXTURE = path.join(import.meta.dirname, 'fixtures', 'restart-udp-service.ts');
const services: ServiceUnderTest[] = [];
after(() => {
  for (const s of services) s.cleanup();
});

describe('UDP endpoint across a graceful restart', () => {
  it('keeps its port and socket; a flow every millisecond is answered throughout', async (t) => {
    const svc = new ServiceUnderTest((sock) => `restart:\n  socket: ${sock}\n  drain_timeout: 1s\n`, FIXTURE);
    services.push(svc);
    const first = await svc.start();
    const client = dgram.createSocket('udp4');
    after(() => client.close());
    await new Promise<void>((resolve) => client.bind(0, '127.0.0.1', () => resolve()));
    const answeredBy = new Map<number, string>();
    client.on('message', (m) => {
      const [pid, seq] = m.toString().split(' ');
      answeredBy.set(Number(seq), pid as string);
    });
    let seq = 0;
    const timer = setInterval(() => client.send(String(seq++), first.port, '127.0.0.1'), 1);
    await sleep(200);
    const r = await svc.restart();
    assert.equal(r.code, 0, r.stderr);
    const second = await svc.waitGeneration(2);
    assert.equal(second.port, first.port, 'the same socket, so the same port');
    assert.equal(second.restarted, true);
    await sleep(300);
    clearInterval(timer);
    await sleep(200);
    const sent = seq;
    const lost = sent - answeredBy.size;
    t.diagnostic(`sent ${sent} datagrams (one per ms) across the restart, ${lost} unanswered`);
    const pids = new Set(answeredBy.values());
    assert.ok(pids.has(String(first.pid)) && pids.has(String(second.pid)), [...pids].join());
    // after the handover every answer comes from the new process
    const last = [...answeredBy.entries()].sort((a, b) => a[0] - b[0]).slice(-20);
    assert.ok(last.every(([, pid]) => pid === String(second.pid)));
    assert.ok(lost <= sent * 0.01, `lost ${lost} of ${sent}`);
    assert.ok(await waitExit(first.pid, 10_000), 'the old process exits after draining');
  });
});

describe('UDP endpoint across a restart that changes its settings', () => {
  /** A free UDP port on 127.0.0.1 (closed again: the service binds it next). */
  async function freeUdpPort(): Promise<number> {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', () => resolve()));
    const { port } = s.address();
    s.close();
    return port;
  }

  /** The answer to one datagram sent to `port`. */
  async function ask(port: number, text: string): Promise<string> {
    const c = dgram.createSocket('udp4');
    try {
      const answer = new Promise<string>((resolve, reject) => {
        c.once('message', (m) => resolve(m.toString()));
        setTimeout(() => reject(new Error(`no answer from ${port}`)), 5000).unref();
      });
      c.send(text, port, '127.0.0.1');
      return await answer;
    } finally {
      c.close();
    }
  }

  const body = (sock: string, port: number, reusePort: boolean): string =>
    `restart:\n  socket: ${sock}\n  drain_timeout: 1s\naddr: 127.0.0.1:${port}\nreuse_port: ${reusePort}\n`;

  it('moves to a new port; the handed-over socket is closed and its port freed', async () => {
    const svc = new ServiceUnderTest((sock) => body(sock, 0, false), FIXTURE);
    services.push(svc);
    const first = await svc.start();
    const next = await freeUdpPort();
    svc.writeConfig(body(svc.socket, next, false));
    const r = await svc.restart();
    assert.equal(r.code, 0, r.stderr);
    const second = await svc.waitGeneration(2);
    assert.equal(second.port, next);
    assert.equal(await ask(next, 'moved'), `${second.pid} moved`);
    assert.match(svc.stderr, /info: inherited UDP socket matches no endpoint; closed \{"name":"echo"/);
    assert.ok(await waitExit(first.pid, 10_000));
    // Nothing holds the old port any more (the new process closes its copy a moment after it
    // says so, so the probe tries for up to 3 s).
    let lastError: unknown = null;
    for (let i = 0; i < 30; i++) {
      const probe = dgram.createSocket('udp4');
      lastError = await new Promise<unknown>((resolve) => {
        probe.once('error', resolve);
        probe.bind(first.port, '127.0.0.1', () => resolve(null));
      });
      try {
        probe.close();
      } catch {
        // boundary: a socket whose bind failed may be closed already
      }
      if (lastError === null) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(lastError, null, `the old port ${first.port} is still held`);
  });

  it('cannot change SO_REUSEPORT on a port in use: the restart fails saying so, the old one serves on', async () => {
    const port = await freeUdpPort();
    const svc = new ServiceUnderTest((sock) => body(sock, port, false), FIXTURE);
    services.push(svc);
    const first = await svc.start();
    svc.writeConfig(body(svc.socket, port, true));
    const r = await svc.restart();
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr + r.stdout, /EADDRINUSE/);
    assert.match(
      r.stderr + r.stdout,
      /bound with \{"reusePort":false\}, not \{"reusePort":true\}: a restart cannot change/,
    );
    assert.equal(await ask(port, 'still'), `${first.pid} still`);
  });
});

const haveActivate = spawnSync('systemd-socket-activate', ['--help']).status === 0;

describe('UDP endpoint from systemd (ListenDatagram=, by FileDescriptorName=)', {
  skip: haveActivate ? false : 'systemd-socket-activate is not installed (Debian package systemd)',
}, () => {
  it('adopts the activated socket by name, reads the datagram that started it, and hands it on', async () => {
    const svc = new ServiceUnderTest((sock) => `restart:\n  socket: ${sock}\n  drain_timeout: 1s\n`, FIXTURE);
    services.push(svc);
    const port = 20000 + Math.floor(Math.random() * 10000);
    const client = dgram.createSocket('udp4');
    after(() => client.close());
    const replies: string[] = [];
    client.on('message', (m) => replies.push(m.toString()));
    const started = svc.start({
      command: 'systemd-socket-activate',
      args: [
        '--datagram',
        '-l',
        `127.0.0.1:${port}`,
        '--fdname=echo',
        process.execPath,
        FIXTURE,
        '-c',
        svc.config,
      ],
    });
    // the activator starts the service on the first datagram; it waits in the socket for it
    const poke = setInterval(() => client.send('wake', port, '127.0.0.1'), 100);
    const first = await started.finally(() => clearInterval(poke));
    assert.equal(first.port, port);
    const until = Date.now() + 5000;
    while (!replies.includes(`${first.pid} wake`) && Date.now() < until) await sleep(20);
    assert.ok(replies.includes(`${first.pid} wake`), replies.join());
    const r = await svc.restart();
    assert.equal(r.code, 0, r.stderr);
    const second = await svc.waitGeneration(2);
    assert.equal(second.port, port);
    client.send('after', port, '127.0.0.1');
    while (!replies.includes(`${second.pid} after`) && Date.now() < until + 5000) await sleep(20);
    assert.ok(replies.includes(`${second.pid} after`), replies.join());
  });
});

describe('handover variable: datagrams', () => {
  const base = { control: 9, listeners: [] };
  const parse = (v: unknown) => parseHandoverEnv({ [HANDOVER_ENV]: JSON.stringify(v) });

  it('parses the list, and accepts its absence (an older version handing over)', () => {
    assert.deepEqual(
      parse({ ...base, datagrams: [{ name: 'dns', host: '::1', port: 53, fd: 4 }] })?.datagrams,
      [{ name: 'dns', host: '::1', port: 53, fd: 4, source: 'handover', options: null }],
      'no options: unknown, so not compared',
    );
    assert.deepEqual(
      parse({
        ...base,
        datagrams: [
          { name: 'dns', host: '::', port: 53, fd: 4, options: { reusePort: true }, systemd: true },
        ],
      })?.datagrams,
      [{ name: 'dns', host: '::', port: 53, fd: 4, source: 'systemd', options: { reusePort: true } }],
    );
    assert.deepEqual(parse(base)?.datagrams, []);
  });

  it('refuses malformed entries, naming the field', () => {
    const dns = { name: 'dns', host: '127.0.0.1', port: 53, fd: 4 };
    const bad: [unknown, RegExp][] = [
      [{ ...base, datagrams: {} }, /datagrams: expected a list/],
      [{ ...base, datagrams: [null] }, /datagrams\[0\]: expected an object/],
      [{ ...base, datagrams: [{ name: 'a', host: '127.0.0.1', port: 53, fd: 1 }] }, /datagrams\[0\]\.fd/],
      [{ ...base, datagrams: [{ name: 'a', host: 'localhost', port: 53, fd: 4 }] }, /datagrams\[0\]\.host/],
      [{ ...base, datagrams: [{ name: 'a', host: '127.0.0.1', port: 0, fd: 4 }] }, /datagrams\[0\]\.port/],
      [{ ...base, datagrams: [{ host: '127.0.0.1', port: 53, fd: 4 }] }, /datagrams\[0\]\.name/],
      [{ ...base, datagrams: [{ ...dns, options: [] }] }, /datagrams\[0\]\.options: expected an object/],
      [{ ...base, datagrams: [{ ...dns, options: { reusePort: 1 } }] }, /datagrams\[0\]\.options\.reusePort/],
      [{ ...base, datagrams: [{ ...dns, systemd: 'yes' }] }, /datagrams\[0\]\.systemd/],
    ];
    for (const [v, message] of bad) assert.throws(() => parse(v), { code: 'FND_ERR_LISTEN', message });
  });
});
