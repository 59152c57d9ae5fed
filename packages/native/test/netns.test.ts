/**
 * Entering network namespaces from the main thread (root): a TUN device opened inside a
 * namespace made by the test lives there, answers pings there, and this process's own
 * namespace is untouched. Skips, with the kernel's message, where setns is refused.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { after, test } from 'node:test';
import { netns, tun } from 'native';
import { pingThrough } from './icmp.ts';

const NAME = `oxytest${process.pid}`;
const made = spawnSync('ip', ['netns', 'add', NAME], { encoding: 'utf8' });
const refused =
  made.status === 0 ? false : `ip netns add refused: ${(made.stderr || String(made.error)).trim()}`;
after(() => {
  if (!refused) spawnSync('ip', ['netns', 'del', NAME]);
});

const ip = (...args: string[]) => execFileSync('ip', ['-n', NAME, ...args], { encoding: 'utf8' });

test('a TUN device opened inside a named netns lives there and answers pings', {
  skip: refused,
}, async () => {
  const dev = netns.run(`/run/netns/${NAME}`, () => tun.open('tunns0'));
  after(() => dev.close());
  assert.match(ip('link', 'show', 'tunns0'), /tunns0/);
  assert.equal(spawnSync('ip', ['link', 'show', 'tunns0']).status, 1, 'not in this process’s namespace');
  ip('addr', 'add', '10.1.0.1/24', 'dev', 'tunns0');
  ip('link', 'set', 'tunns0', 'up');
  const reply = await pingThrough(dev, '10.1.0.2', '10.1.0.1', 9);
  assert.equal(reply?.src, '10.1.0.1');
});

test('runInNew gives a fresh namespace; the thread comes back afterwards', (t) => {
  const before = readlinkSync('/proc/thread-self/ns/net');
  let inside = '';
  try {
    netns.runInNew(() => {
      inside = readlinkSync('/proc/thread-self/ns/net');
    });
  } catch (e) {
    if ((e as { code?: string }).code === 'NATIVE_ERR_EPERM') return t.skip((e as Error).message);
    throw e;
  }
  assert.notEqual(inside, before);
  assert.equal(readlinkSync('/proc/thread-self/ns/net'), before);
});

test('refusals: a missing namespace file, a file that is no namespace, an async function', () => {
  assert.throws(() => netns.run('/run/netns/does-not-exist', () => 1), {
    code: 'NATIVE_ERR_ENOENT',
    message: /ip netns add/,
  });
  assert.throws(() => netns.run('/proc/self/status', () => 1), { code: 'NATIVE_ERR_EINVAL' });
  if (!refused) {
    assert.throws(() => netns.run(`/run/netns/${NAME}`, async () => 1), { code: 'NATIVE_ERR_ASYNC' });
  }
});
