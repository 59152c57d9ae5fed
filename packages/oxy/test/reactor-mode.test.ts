/**
 * Which way the `oxy` command drives the addon's reactor: on the JS loop when every endpoint is
 * a `tcp` endpoint whose connections the reactor accepts and carries whole (JS has nothing to
 * do per connection), on a thread of its own (named `oxy-reactor`) otherwise, and as
 * `OXY_REACTOR` says when it is set. Seen from outside: the process's thread names in
 * /proc/<pid>/task/<tid>/comm after a connection went through, its bytes both ways.
 *
 * Linux only (/proc, the addon).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, test } from 'node:test';
import { native } from '../src/flows/stream/native-addon.ts';
import { startTcpEcho } from '../src/testing/index.ts';
import { type OxyCli, startOxyCli, tcpEndpointLines, threadFiles } from './fixtures/oxy-cli.ts';

/** An echo server on loopback, closed after the file; its "host:port". */
async function echoServer(): Promise<string> {
  const echo = await startTcpEcho();
  after(() => echo.close());
  return echo.authority;
}

/** Sends `payload` through `oxy`'s endpoint `name` and returns what came back before the close. */
async function echoThrough(oxy: OxyCli, name: string, payload: string): Promise<string> {
  const { host, port } = oxy.address(name);
  return new Promise<string>((resolve, reject) => {
    const c = net.connect(port, host, () => c.end(payload));
    let got = '';
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      got += d;
    });
    c.on('error', reject);
    c.on('close', () => resolve(got));
  });
}

/** The names of pid's threads. */
function threadNames(pid: number): string[] {
  return [...threadFiles(pid, 'comm').values()].map((name) => name.trim());
}

const skip = process.platform !== 'linux' || native === null ? 'needs Linux and the native addon' : false;

test('only tcp endpoints carried whole: the reactor runs on the JS loop, no oxy-reactor thread', {
  skip,
}, async () => {
  const target = await echoServer();
  const oxy = await startOxyCli(tcpEndpointLines(target), { OXY_REACTOR: '' });
  assert.equal(await echoThrough(oxy, 'l4', 'ping over the inline reactor'), 'ping over the inline reactor');
  const names = threadNames(oxy.pid);
  assert.ok(!names.includes('oxy-reactor'), `threads: ${names.join(', ')}`);
});

test('an http endpoint beside it: the reactor has its thread', { skip }, async () => {
  const target = await echoServer();
  const oxy = await startOxyCli([...tcpEndpointLines(target), '  main:', '    addr: "127.0.0.1:0"'], {
    OXY_REACTOR: '',
  });
  assert.equal(await echoThrough(oxy, 'l4', 'ping over the thread'), 'ping over the thread');
  const names = threadNames(oxy.pid);
  assert.ok(names.includes('oxy-reactor'), `threads: ${names.join(', ')}`);
});

test('OXY_REACTOR=thread keeps the thread for tcp endpoints alone', { skip }, async () => {
  const target = await echoServer();
  const oxy = await startOxyCli(tcpEndpointLines(target), { OXY_REACTOR: 'thread' });
  assert.equal(await echoThrough(oxy, 'l4', 'ping, thread asked'), 'ping, thread asked');
  const names = threadNames(oxy.pid);
  assert.ok(names.includes('oxy-reactor'), `threads: ${names.join(', ')}`);
});
