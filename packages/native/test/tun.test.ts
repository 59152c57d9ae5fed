/**
 * TUN on the real kernel: a child in a user+network namespace made by the test creates tun0,
 * pings the kernel through it, and passes the descriptor to this process (SCM_RIGHTS), which
 * sends an ICMP echo through it and reads the kernel's reply. Skips, with the kernel's message,
 * only where user namespaces are refused.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { closeSync } from 'node:fs';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isNativeError, passFd, tun } from 'native';
import { pingThrough } from './icmp.ts';

const FIXTURE = fileURLToPath(new URL('./fixtures/tun-child.ts', import.meta.url));
const UNSHARE = ['--user', '--net', '--map-root-user'];
const probe = spawnSync('unshare', [...UNSHARE, 'true'], { encoding: 'utf8' });
const refused =
  probe.status === 0 ? false : `unshare refused: ${(probe.stderr || String(probe.error)).trim()}`;

const cleanups: (() => void)[] = [];
after(() => {
  for (const c of cleanups.reverse()) c();
});

function lines(child: ChildProcess): AsyncGenerator<Record<string, unknown>> {
  child.stdout!.setEncoding('utf8');
  let buf = '';
  return (async function* () {
    for await (const chunk of child.stdout!) {
      buf += chunk;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        yield JSON.parse(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    }
  })();
}

test('TUN in a user+net namespace: ping through it, then from this process via SCM_RIGHTS', {
  skip: refused,
}, async (t) => {
  const [mine, theirs] = passFd.socketPair('stream');
  const child = spawn('unshare', [...UNSHARE, process.execPath, FIXTURE], {
    stdio: ['ignore', 'pipe', 'inherit', theirs],
  });
  closeSync(theirs);
  cleanups.push(() => child.kill('SIGKILL'));
  const channel = new passFd.FdChannel(mine);
  cleanups.push(() => channel.close());
  const received = once(channel, 'message');

  const first = (await lines(child).next()).value as Record<string, unknown>;
  if (first.error) {
    // The kernel refused the TUN device itself: skip with its message.
    t.skip(`the kernel refused TUN in the namespace: ${first.error}`);
    return;
  }
  assert.equal(first.name, 'tun0');
  assert.deepEqual(first.childReply, { src: '10.0.0.1', dst: '10.0.0.2' });

  const [msg] = (await received) as [passFd.FdMessage];
  assert.equal(msg.data.toString(), 'tun0');
  assert.equal(msg.fds.length, 1);
  const dev = tun.fromFd(msg.fds[0]!, 'tun0');
  cleanups.push(() => dev.close());
  for (let seq = 2; seq < 5; seq++) {
    const reply = await pingThrough(dev, '10.0.0.2', '10.0.0.1', seq);
    assert.deepEqual(
      { src: reply!.src, dst: reply!.dst, id: reply!.id },
      { src: '10.0.0.1', dst: '10.0.0.2', id: 0x4242 },
    );
    assert.equal(reply!.payload.toString(), `ping ${seq} through a TUN device`);
  }
  // A batch of 32 echo requests written in one call: 32 replies come back.
  const { echoRequest, parseEchoReply } = await import('./icmp.ts');
  const seen = new Set<number>();
  const all = new Promise<void>((resolve) => {
    dev.on('packets', (pkts) => {
      for (const p of pkts) {
        const r = parseEchoReply(p);
        if (r && r.seq >= 100) seen.add(r.seq);
      }
      if (seen.size === 32) resolve();
    });
  });
  assert.equal(
    dev.write(
      Array.from({ length: 32 }, (_, i) => echoRequest('10.0.0.2', '10.0.0.1', 7, 100 + i, Buffer.alloc(56))),
    ),
    true,
  );
  await all;

  dev.close();
  channel.close(); // the child sees the end and exits, taking the namespace with it
  const [code] = await once(child, 'exit');
  assert.equal(code, 0);
});

test('opening /dev/net/tun without the capability gives a named error that says how to allow it', (t) => {
  const script = `import('native').then(({ tun }) => { try { tun.open('tunx'); console.log('opened') } catch (e) { console.log(e.code + ' ' + e.message) } })`;
  const r = spawnSync(
    'setpriv',
    ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script],
    {
      encoding: 'utf8',
      cwd: fileURLToPath(new URL('..', import.meta.url)),
    },
  );
  if (r.status !== 0 && r.stdout === '') {
    t.skip(`setpriv refused: ${r.stderr.trim()}`);
    return;
  }
  assert.match(r.stdout, /^NATIVE_ERR_E(ACCES|PERM) opening \/dev\/net\/tun as device tunx was refused/);
  assert.match(r.stdout, /run as root or inside a user namespace with CAP_NET_ADMIN/);
});

test('a TUN device name longer than 15 bytes is a TypeError, not a crash', () => {
  assert.throws(() => tun.open('a-very-long-device-name'), TypeError);
  assert.equal(isNativeError(new TypeError('x')), false);
});
