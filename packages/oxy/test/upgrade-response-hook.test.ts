/**
 * `HttpRequestHook.handleResponse` on an `Upgrade` request: it sees the upstream's answer, a
 * `101` or not, before the client does. Edits reach the client, another status for a `101`
 * turns the switch down, and a throw answers 502; in both cases the upstream connection is
 * closed. What the upstream sends behind its head while the hook runs is not lost.
 */
import assert from 'node:assert/strict';
import type { Duplex } from 'node:stream';
import { after, beforeEach, test } from 'node:test';
import type { AuditRecord } from '../src/audit.ts';
import type { ResponseHead } from '../src/index.ts';
import {
  hooksApp,
  rawConnect,
  readBytes,
  readUntil,
  startApp,
  startHttpUpstream,
  waitForClose,
  waitUntil,
} from '../src/testing/index.ts';

/** What the hook does, per test; `seen` is what it was given. */
let respond: (res: ResponseHead) => ResponseHead | undefined | Promise<ResponseHead | undefined> = () =>
  undefined;
let seen: { status: number; headers: Record<string, unknown> }[] = [];
beforeEach(() => {
  seen = [];
});

/** The upstream's side of each upgrade it was asked for, to see it closed. */
const upgraded: Duplex[] = [];
const upstream = await startHttpUpstream({}, '127.0.0.1', {
  upgrade(req, socket, head) {
    upgraded.push(socket);
    socket.on('error', () => {});
    if (req.headers.upgrade === 'echo') {
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-Up: yes\r\n\r\n',
      );
      // The new protocol's first bytes, right behind the head.
      socket.write('welcome;');
      if (head.length > 0) socket.write(head);
      socket.pipe(socket);
      return;
    }
    // Not switching: an answer whose body comes in two writes, the second later.
    socket.write('HTTP/1.1 426 Upgrade Required\r\nContent-Length: 9\r\nX-Up: no\r\n\r\nnot ');
    setTimeout(() => socket.end('here;'), 50);
  },
});
const proxy = await startApp(
  hooksApp({
    httpRequest: {
      handleResponse(res) {
        seen.push({ status: res.status, headers: { ...res.headers } });
        return respond(res);
      },
    },
  }),
);
after(() => upstream.close().then(() => proxy.stop()));

function upgrade(protocol: string, early = ''): ReturnType<typeof rawConnect> {
  const a = upstream.port;
  return rawConnect(
    proxy.address(),
    `GET http://127.0.0.1:${a}/ws HTTP/1.1\r\nHost: 127.0.0.1:${a}\r\nConnection: Upgrade\r\nUpgrade: ${protocol}\r\n\r\n${early}`,
  );
}

test('a 101 goes through the hook, its edits reach the client, and the tunnel works', async () => {
  respond = async (res) => {
    await new Promise((r) => setTimeout(r, 30));
    res.headers['proxy-status'] = 'oxy';
    return undefined;
  };
  const s = upgrade('echo', 'early;');
  const got = await readUntil(s, 'early;');
  assert.match(got, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  assert.match(got, /\r\nproxy-status: oxy\r\n/i);
  assert.match(got, /\r\nx-up: yes\r\n/i);
  assert.match(got, /\r\nupgrade: echo\r\n/i);
  assert.match(got, /\r\n\r\nwelcome;early;$/);
  s.write('more');
  assert.equal((await readBytes(s, 4)).toString(), 'more');
  s.destroy();
  assert.equal(seen.length, 1);
  assert.equal(seen[0]?.status, 101);
  assert.equal(seen[0]?.headers['x-up'], 'yes');
});

/**
 * The first audit record written after the first `before` that matches: an earlier test's tunnel
 * may still be writing its own record when the next test begins.
 */
async function recordAfter(before: number, match: (r: AuditRecord) => boolean): Promise<AuditRecord> {
  await waitUntil(() => proxy.auditRecords().slice(before).some(match), 'the audit record');
  return proxy.auditRecords().slice(before).find(match) as AuditRecord;
}

test('another status for a 101 refuses the upgrade: the client gets it, the upstream is closed', async () => {
  respond = () => ({ status: 403, headers: { 'proxy-status': 'oxy; error=denied' } });
  const before = proxy.auditRecords().length;
  const s = upgrade('echo');
  const answer = (await readBytes(s, 1000, 2000)).toString();
  assert.match(answer, /^HTTP\/1\.1 403 Forbidden\r\n/);
  assert.match(answer, /\r\nproxy-status: oxy; error=denied\r\n/i);
  assert.doesNotMatch(answer, /welcome|upgrade: echo/i);
  await waitForClose(s);
  await waitForClose(upgraded.at(-1) as Duplex);
  const record = await recordAfter(before, (r) => r.close_reason === 'blocked');
  assert.equal(record.status, 403);
});

test('an answer that does not switch goes through the hook, its body held and relayed whole', async () => {
  respond = async (res) => {
    await new Promise((r) => setTimeout(r, 100)); // the body's second half arrives meanwhile
    return { status: 502, headers: { ...res.headers, 'x-hooked': '1' } };
  };
  const s = upgrade('other');
  const answer = (await readBytes(s, 1000, 2000)).toString();
  assert.match(answer, /^HTTP\/1\.1 502 Bad Gateway\r\n/);
  assert.match(answer, /\r\nx-hooked: 1\r\n/i);
  assert.match(answer, /\r\nx-up: no\r\n/i);
  assert.match(answer, /\r\ncontent-length: 9\r\n/i);
  assert.match(answer, /\r\n\r\nnot here;$/);
  assert.equal(seen[0]?.status, 426);
});

test('a hook that throws answers 502 and closes the upstream connection', async () => {
  respond = () => {
    throw new Error('boom');
  };
  for (const protocol of ['echo', 'other']) {
    const before = proxy.auditRecords().length;
    const s = upgrade(protocol);
    const answer = (await readBytes(s, 1000, 2000)).toString();
    assert.match(answer, /^HTTP\/1\.1 502 /, protocol);
    assert.doesNotMatch(answer, /welcome|not /);
    await waitForClose(s);
    await waitForClose(upgraded.at(-1) as Duplex);
    await recordAfter(before, (r) => r.close_reason === 'OXY_ERR_HOOK_FAILED');
  }
});

test('a 101 for an answer that did not switch is the hook failing', async () => {
  respond = (res) => ({ ...res, status: 101 });
  const s = upgrade('other');
  const answer = (await readBytes(s, 1000, 2000)).toString();
  assert.match(answer, /^HTTP\/1\.1 502 /);
  await waitForClose(s);
  await waitUntil(() => upgraded.at(-1)?.destroyed === true, 'the upstream connection to be closed');
});

test('a client that leaves while the hook runs takes the upstream connection with it', async () => {
  let release = (): void => {};
  respond = () => new Promise((r) => (release = () => r(undefined)));
  const before = proxy.auditRecords().length;
  const s = upgrade('echo');
  await waitUntil(() => seen.length === 1, 'the hook to run');
  s.resetAndDestroy();
  await waitUntil(() => upgraded.at(-1)?.destroyed === true, 'the upstream connection to be closed');
  release(); // what the hook returns then goes nowhere
  await recordAfter(before, (r) => r.close_reason === 'client_closed');
});
