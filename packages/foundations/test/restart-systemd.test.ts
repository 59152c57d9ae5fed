/**
 * systemd integration with the real tools from Debian's `systemd` package:
 * `systemd-socket-activate` hands the service its listening socket (matched by address,
 * or by name with --fdname, whatever the settings' address, before and after a restart),
 * restarts pass it on, one no endpoint takes stays open with a warning, and `sd_notify`
 * messages (READY, MAINPID, STOPPING) reach a real datagram socket.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { sdNotify } from '../src/restart/index.ts';
import { cleanEnv, FIXTURE, get, ServiceUnderTest, waitExit } from './fixtures/restart-harness.ts';

const haveTools = spawnSync('systemd-socket-activate', ['--help']).status === 0;
const skip = haveTools ? false : 'systemd-socket-activate is not installed (Debian package systemd)';

/** GETs until the activator listens (it starts the service on the first connection). */
async function getWhenUp(port: number): Promise<string> {
  for (let i = 0; ; i++) {
    try {
      return await get(port);
    } catch (e) {
      if (i > 100) throw e;
      await sleep(50);
    }
  }
}

/** A fixed port below the ephemeral range (systemd-socket-activate needs one); retried on conflict. */
function pickPort(): number {
  return 20000 + Math.floor(Math.random() * 10000);
}

describe('systemd socket activation', { skip }, () => {
  const services: ServiceUnderTest[] = [];
  after(() => {
    for (const s of services) s.cleanup();
  });

  async function activated(fdname: string | null, addrInConfig: (port: number) => string) {
    const port = pickPort();
    const svc = new ServiceUnderTest(
      (sock) => `restart:\n  socket: ${sock}\n  drain_timeout: 2s\naddr: ${addrInConfig(port)}\n`,
    );
    services.push(svc);
    const args = ['-l', `127.0.0.1:${port}`, ...(fdname ? [`--fdname=${fdname}`] : [])];
    const started = svc.start({
      command: 'systemd-socket-activate',
      args: [...args, process.execPath, FIXTURE, '-c', svc.config],
    });
    const body = await getWhenUp(port);
    const gen = await started;
    return { svc, port, body, gen };
  }

  it('serves through the inherited socket matched by address, and restarts keep it', async () => {
    const { svc, port, body, gen } = await activated(null, (p) => `127.0.0.1:${p}`);
    assert.equal(body, `${gen.pid} 1\n`);
    assert.equal(gen.port, port);
    const r = await svc.restart();
    assert.equal(r.code, 0, r.stderr);
    const second = await svc.waitGeneration(2);
    assert.equal(await get(port), `${second.pid} 2\n`);
    assert.ok(await waitExit(gen.pid, 5000));
  });

  it('matches the inherited socket by name (LISTEN_FDNAMES) even when the address differs', async () => {
    const { port, body, gen } = await activated('main', () => '127.0.0.1:0');
    assert.equal(gen.port, port, 'the systemd socket, not a fresh port 0');
    assert.equal(body, `${gen.pid} 1\n`);
  });

  it('keeps a named systemd socket across a restart that changes the address in the settings', async () => {
    // Neither 127.0.0.2 nor 127.0.0.3 is where the socket listens: the socket unit decides, as
    // it would on a fresh start with either file.
    const { svc, port, gen } = await activated('main', () => '127.0.0.2:0');
    assert.equal(gen.port, port);
    svc.writeConfig(fs.readFileSync(svc.config, 'utf8').replace('127.0.0.2:0', '127.0.0.3:0'));
    const r = await svc.restart();
    assert.equal(r.code, 0, r.stderr);
    const second = await svc.waitGeneration(2);
    assert.equal(second.port, port, "handed over as systemd's, so still taken by name");
    assert.ok(await waitExit(gen.pid, 5000));
    assert.equal(await get(port), `${second.pid} 2\n`);
  });

  it('leaves a systemd socket no endpoint takes open, with a warning naming it', async () => {
    const port = pickPort();
    const svc = new ServiceUnderTest(
      (sock) => `restart:\n  socket: ${sock}\n  drain_timeout: 2s\naddr: 127.0.0.1:0\n`,
    );
    services.push(svc);
    const started = svc.start({
      command: 'systemd-socket-activate',
      args: ['-l', `127.0.0.1:${port}`, '--fdname=unused', process.execPath, FIXTURE, '-c', svc.config],
    });
    // The activator starts the service on the first connection, which then waits unaccepted.
    const pokes: net.Socket[] = [];
    const poke = setInterval(() => pokes.push(net.connect(port, '127.0.0.1').on('error', () => {})), 100);
    const gen = await started.finally(() => clearInterval(poke));
    for (const p of pokes) p.destroy();
    assert.notEqual(gen.port, port);
    assert.match(svc.stderr, /warn: socket from systemd matches no endpoint; left open \{"name":"unused"/);
    assert.equal(await get(gen.port), `${gen.pid} 1\n`);
  });
});

describe('sd_notify', { skip }, () => {
  const dir = fs.mkdtempSync(path.join('/tmp', 'sdnotify-'));
  const notifySocket = path.join(dir, 'notify.sock');
  const received = path.join(dir, 'received.jsonl');
  let receiver: ChildProcess | undefined;
  after(() => {
    receiver?.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  // A real AF_UNIX datagram receiver: systemd-socket-activate binds it and, in inetd mode,
  // gives it to a tiny reader as stdin; each datagram becomes one JSON line in a file.
  const reader = `const fs=require('fs');const b=Buffer.alloc(65536);const z=new Int32Array(new SharedArrayBuffer(4));
for(;;){let n;try{n=fs.readSync(0,b,0,b.length,null)}catch(e){if(e.code==='EAGAIN'){Atomics.wait(z,0,0,5);continue}throw e}
fs.appendFileSync(process.argv[1],JSON.stringify(b.toString('utf8',0,n))+'\\n')}`;

  async function messages(): Promise<string[]> {
    await sleep(100);
    if (!fs.existsSync(received)) return [];
    return fs
      .readFileSync(received, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as string)
      .filter((m) => m !== 'BARRIER=1');
  }

  it('reports READY/MAINPID on start and restart, STOPPING on SIGTERM', async () => {
    receiver = spawn(
      'systemd-socket-activate',
      ['--datagram', '--inetd', '-l', notifySocket, process.execPath, '-e', reader, received],
      { stdio: 'ignore', env: cleanEnv() },
    );
    for (let i = 0; i < 100 && !fs.existsSync(notifySocket); i++) await sleep(20);
    assert.deepEqual(await sdNotify({ STATUS: 'probe' }, { ...process.env, NOTIFY_SOCKET: notifySocket }), {
      kind: 'sent',
    });
    assert.deepEqual(await sdNotify({ READY: 1 }, {}), { kind: 'skipped' });

    const svc = new ServiceUnderTest((sock) => `restart:\n  socket: ${sock}\n  drain_timeout: 2s\n`);
    after(() => svc.cleanup());
    const first = await svc.start({ env: { NOTIFY_SOCKET: notifySocket } });
    const r = await svc.restart();
    assert.equal(r.code, 0, r.stderr);
    const second = await svc.waitGeneration(2);
    assert.ok(await waitExit(first.pid, 5000));
    process.kill(second.pid, 'SIGTERM');
    assert.ok(await waitExit(second.pid, 5000));
    const got = await messages();
    assert.equal(got[0], 'STATUS=probe');
    assert.ok(got.includes(`READY=1\nMAINPID=${first.pid}\nSTATUS=restart-fixture ready`), got.join(' | '));
    assert.ok(got.includes(`READY=1\nMAINPID=${second.pid}\nSTATUS=restart-fixture ready`), got.join(' | '));
    assert.ok(got.includes(`MAINPID=${second.pid}`), 'the old process hands MAINPID to the new one');
    assert.equal(got.at(-1), 'STOPPING=1');
  });
});
