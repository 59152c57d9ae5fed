import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isOxyError } from '../../errors.ts';
import { connectHappyEyeballs } from './happy-eyeballs.ts';

function code(expected: string, message?: RegExp) {
  return (e: unknown) => {
    assert.ok(isOxyError(e), String(e));
    assert.equal(e.code, expected, e.message);
    if (message !== undefined) assert.match(e.message, message);
    return true;
  };
}

describe('connectHappyEyeballs on loopback', () => {
  let server: net.Server;
  let port: number;
  const peers: string[] = [];

  before(async () => {
    // Bound to 127.0.0.1 only: 127.0.0.2 and friends refuse at once on the same port.
    server = net.createServer((s) => {
      peers.push(s.remoteAddress ?? '');
      s.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as net.AddressInfo).port;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  it('connects to a listening address and reports it as remoteAddress', async () => {
    const socket = await connectHappyEyeballs(['127.0.0.1'], port, { timeoutMs: 2000 });
    assert.equal(socket.remoteAddress, '127.0.0.1');
    assert.equal(socket.remotePort, port);
    assert.equal(socket.listenerCount('error'), 0);
    socket.destroy();
  });

  it('starts the next attempt as soon as one is refused, without waiting for the attempt delay', async () => {
    const t0 = performance.now();
    const socket = await connectHappyEyeballs(['127.0.0.2', '127.0.0.3', '127.0.0.1'], port, {
      timeoutMs: 5000,
      attemptDelayMs: 3000,
    });
    assert.equal(socket.remoteAddress, '127.0.0.1');
    assert.ok(performance.now() - t0 < 1000);
    socket.destroy();
  });

  it('reports CONNECT_REFUSED, naming the first address, when every address refuses', async () => {
    await assert.rejects(
      connectHappyEyeballs(['127.0.0.2', '127.0.0.3'], port, { timeoutMs: 2000 }),
      code(
        'OXY_ERR_CONNECT_REFUSED',
        new RegExp(`^connection refused by 127\\.0\\.0\\.2:${port} \\(and 1 more\\)$`),
      ),
    );
    await assert.rejects(
      connectHappyEyeballs(['::1'], port, { timeoutMs: 2000 }),
      code('OXY_ERR_CONNECT_REFUSED', new RegExp(`\\[::1\\]:${port}`)),
    );
  });

  it('binds the source address and skips addresses of the other family', async () => {
    const socket = await connectHappyEyeballs(['::1', '127.0.0.1'], port, {
      timeoutMs: 2000,
      localAddress: '127.0.0.5',
    });
    await new Promise((r) => socket.once('close', r).resume());
    assert.equal(peers.at(-1), '127.0.0.5');
    await assert.rejects(
      connectHappyEyeballs(['::1'], port, { timeoutMs: 2000, localAddress: '127.0.0.5' }),
      code('OXY_ERR_CONNECT_FAILED', /no address of the source address's family \(IPv4\)/),
    );
    await assert.rejects(
      connectHappyEyeballs(['127.0.0.1'], port, { timeoutMs: 2000, localAddress: '192.0.2.77' }),
      code('OXY_ERR_CONNECT_FAILED', /EADDRNOTAVAIL/),
    );
  });

  it('rejects an empty list and an aborted signal', async () => {
    await assert.rejects(
      connectHappyEyeballs([], port, { timeoutMs: 100 }),
      code('OXY_ERR_CONNECT_FAILED', /no address/),
    );
    await assert.rejects(
      connectHappyEyeballs(['127.0.0.1'], port, { timeoutMs: 100, signal: AbortSignal.abort() }),
      code('OXY_ERR_ABORTED'),
    );
  });

  it('one address: CONNECT_TIMEOUT at the deadline, naming it, and the attempt is destroyed', async () => {
    const sockets: net.Socket[] = [];
    const t0 = performance.now();
    await assert.rejects(
      connectHappyEyeballs(['127.0.0.1'], port, {
        timeoutMs: 150,
        connect: () => {
          const s = new net.Socket(); // never connects: an attempt into a blackhole
          sockets.push(s);
          return s;
        },
      }),
      code(
        'OXY_ERR_CONNECT_TIMEOUT',
        new RegExp(`^connect to 127\\.0\\.0\\.1:${port} timed out after 150 ms$`),
      ),
    );
    assert.ok(performance.now() - t0 >= 140);
    assert.equal(sockets.length, 1);
    assert.equal(sockets[0]?.destroyed, true);
  });

  it('one address: a connect that throws at once is the failed attempt', async () => {
    await assert.rejects(
      connectHappyEyeballs(['127.0.0.1'], port, {
        timeoutMs: 2000,
        connect: () => {
          throw Object.assign(new Error('bad source'), { code: 'EINVAL' });
        },
      }),
      code('OXY_ERR_CONNECT_FAILED', new RegExp(`^connect failed \\(EINVAL\\) to 127\\.0\\.0\\.1:${port}$`)),
    );
  });

  it('aborts pending attempts when the signal fires', async () => {
    const ac = new AbortController();
    const sockets: net.Socket[] = [];
    // A socket that never connects stands for a pending attempt; the signal must destroy it.
    const promise = connectHappyEyeballs(['127.0.0.1'], port, {
      timeoutMs: 5000,
      signal: ac.signal,
      connect: () => {
        const s = new net.Socket();
        sockets.push(s);
        return s;
      },
    });
    ac.abort(new Error('client went away'));
    await assert.rejects(promise, code('OXY_ERR_ABORTED'));
    assert.equal(sockets[0]?.destroyed, true);
  });
});

describe('connectHappyEyeballs in a private network namespace (blackhole and unreachable routes)', () => {
  const child = fileURLToPath(new URL('./testdata/netns-child.ts', import.meta.url));
  let results: Map<string, Record<string, unknown>> | undefined;
  let skipReason: string | undefined;

  before(async () => {
    const args = process.getuid?.() === 0 ? ['--net'] : ['--user', '--map-root-user', '--net'];
    const out = await new Promise<{ stdout: string; stderr: string; failed: boolean }>((resolve) => {
      execFile('unshare', [...args, process.execPath, child], { timeout: 30_000 }, (error, stdout, stderr) =>
        resolve({ stdout, stderr, failed: error !== null }),
      );
    });
    if (
      out.failed &&
      /unshare failed|Operation not permitted|cannot|not permitted/i.test(out.stderr) &&
      out.stdout === ''
    ) {
      skipReason = out.stderr.trim().split('\n')[0];
      return;
    }
    assert.equal(out.failed, false, out.stderr);
    results = new Map(
      out.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Record<string, unknown>)
        .map((r) => [r.name as string, r]),
    );
  });

  const get = (t: { skip(msg?: string): void }, name: string): Record<string, unknown> | undefined => {
    if (skipReason !== undefined) t.skip(`namespaces refused by the kernel: ${skipReason}`);
    return results?.get(name);
  };

  it('a blackholed first address costs only the attempt delay, and the loser is destroyed', (t) => {
    const r = get(t, 'blackhole-then-loopback');
    if (r === undefined) return;
    assert.equal(r.winner, '127.0.0.1', JSON.stringify(r));
    assert.ok((r.ms as number) >= 90 && (r.ms as number) < 1000, JSON.stringify(r));
    assert.equal(r.losersDestroyed, true);
  });

  it('all addresses blackholed: CONNECT_TIMEOUT at the overall deadline', (t) => {
    const r = get(t, 'blackhole-only');
    if (r === undefined) return;
    assert.equal(r.code, 'OXY_ERR_CONNECT_TIMEOUT', JSON.stringify(r));
    assert.match(r.message as string, /^connect to 10\.99\.0\.1:\d+ \(and 1 more\) timed out after 400 ms$/);
    assert.ok((r.ms as number) >= 390 && (r.ms as number) < 1500, JSON.stringify(r));
    assert.equal((r.started as string[]).length, 2);
    assert.equal(r.losersDestroyed, true);
  });

  it('an unreachable route and a missing route both give UNREACHABLE at once', (t) => {
    for (const name of ['unreachable', 'no-route']) {
      const r = get(t, name);
      if (r === undefined) return;
      assert.equal(r.code, 'OXY_ERR_UNREACHABLE', JSON.stringify(r));
      assert.match(r.message as string, /^no route to /);
      assert.ok((r.ms as number) < 1000, JSON.stringify(r));
    }
  });

  it('an unreachable first address hands over to the next at once', (t) => {
    const r = get(t, 'unreachable-then-loopback');
    if (r === undefined) return;
    assert.equal(r.winner, '127.0.0.1', JSON.stringify(r));
    assert.ok((r.ms as number) < 1000, JSON.stringify(r));
  });
});
