/**
 * Descriptor passing between two processes: a child sends this process a file descriptor and
 * one end of a SEQPACKET pair over an inherited socket pair (SCM_RIGHTS); this process writes
 * to the file and talks to the child over the received socket.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, mkdtempSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { passFd, seqpacket } from 'native';

const FIXTURE = fileURLToPath(new URL('./fixtures/fd-child.ts', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'pass-fd-'));
const closers: (() => void)[] = [];
after(() => {
  for (const c of closers) c();
  rmSync(dir, { recursive: true, force: true });
});

test('a child passes a file and a SEQPACKET socket to its parent', async () => {
  const file = join(dir, 'out.txt');
  const [mine, theirs] = passFd.socketPair('stream');
  const child = spawn(process.execPath, [FIXTURE, file], { stdio: ['ignore', 'inherit', 'inherit', theirs] });
  closers.push(() => child.kill('SIGKILL'));
  closeSync(theirs);
  const channel = new passFd.FdChannel(mine);
  closers.push(() => channel.close());
  const [msg] = (await once(channel, 'message')) as [passFd.FdMessage];
  assert.equal(msg.data.toString(), `from ${child.pid}`);
  assert.equal(msg.fds.length, 2);
  const [fileFd, sockFd] = msg.fds as [number, number];

  writeSync(fileFd, 'written by the parent through a passed descriptor\n');
  closeSync(fileFd);
  assert.equal(readFileSync(file, 'utf8'), 'written by the parent through a passed descriptor\n');

  const sock = seqpacket.fromFd(sockFd);
  const replies: string[] = [];
  const done = new Promise<void>((resolve) =>
    sock.on('messages', (ms) => {
      replies.push(...ms.map(String));
      if (replies.length === 3) resolve();
    }),
  );
  sock.send([Buffer.from('one'), Buffer.from('two'), Buffer.from('three')]);
  await done;
  assert.deepEqual(replies, ['ONE', 'TWO', 'THREE']);
  sock.close(); // the child sees the end and exits
  const [code] = await once(child, 'exit');
  assert.equal(code, 0);
});

test('receive returns null when nothing waits, and sending to a closed peer is a named error', () => {
  const [a, b] = passFd.socketPair('seqpacket');
  assert.equal(passFd.receive(a), null);
  passFd.send(b, [b], Buffer.from('self'));
  const m = passFd.receive(a);
  assert.equal(m?.data.toString(), 'self');
  assert.equal(m?.fds.length, 1);
  closeSync(m!.fds[0]!);
  closeSync(a);
  assert.throws(() => passFd.send(b, [], Buffer.from('x')), {
    code: 'NATIVE_ERR_EPIPE',
    message: /peer closed/,
  });
  closeSync(b);
});
