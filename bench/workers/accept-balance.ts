/**
 * How evenly N processes share incoming connections, for the two ways `workers` could share a
 * port (docs/workers.md, "Why one shared socket"):
 *
 * - `shared`: one kernel socket, held by this process (`Listeners.hold`, as the supervisor does),
 *   every child `listen({ fd })`s on it: all wait on the same accept queue;
 * - `reuseport`: every child binds its own socket with `reusePort: true`: the kernel hashes each
 *   new connection's 4-tuple to one of the sockets.
 *
 * Each child is a tiny HTTP server counting the connections it accepted. Load is wrk with
 * keep-alive (connections opened once: how a proxy in front of long-lived clients sees them)
 * and with `Connection: close` (one connection per request).
 *
 * Usage: npx node bench/workers/accept-balance.ts [processes=2] [seconds=5] [shared,reuseport]
 * (one mode per run gives fairer `Connection: close` figures: TIME_WAIT sockets of one run
 * slow the next)
 */
import { type ChildProcess, execFileSync, fork } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { Listeners } from 'foundations/restart';

if (process.env.BALANCE_CHILD !== undefined) {
  let accepted = 0;
  const server = http.createServer((_req, res) => res.end('ok'));
  server.on('connection', () => accepted++);
  const mode = process.env.BALANCE_CHILD;
  const port = Number(process.env.BALANCE_PORT);
  if (mode === 'shared') server.listen({ fd: 3 }, () => process.send?.('up'));
  else server.listen({ host: '127.0.0.1', port, reusePort: true }, () => process.send?.('up'));
  process.on('message', (m) => {
    if (m === 'count') process.send?.({ accepted });
  });
} else {
  const n = Number(process.argv[2] ?? 2);
  const seconds = Number(process.argv[3] ?? 5);
  const modes = (process.argv[4] ?? 'shared,reuseport').split(',') as ('shared' | 'reuseport')[];
  for (const mode of modes) {
    const held =
      mode === 'shared'
        ? await new Listeners().hold('bench', { kind: 'tcp', host: '127.0.0.1', port: 0 })
        : null;
    const port = held?.addr.kind === 'tcp' ? held.addr.port : await freePort();
    const children: ChildProcess[] = [];
    for (let i = 0; i < n; i++) {
      const c = fork(import.meta.filename, [], {
        env: { ...process.env, BALANCE_CHILD: mode, BALANCE_PORT: String(port) },
        stdio: held
          ? ['ignore', 'inherit', 'inherit', held.fd, 'ipc']
          : ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      await new Promise((r) => c.once('message', r));
      children.push(c);
    }
    for (const [label, args] of [
      ['keep-alive, 200 conns', ['-t2', '-c200']],
      ['Connection: close, 50 conns', ['-t2', '-c50', '-H', 'Connection: close']],
    ] as const) {
      const before = await counts(children);
      const out = execFileSync('wrk', [...args, `-d${seconds}s`, `http://127.0.0.1:${port}/`], {
        encoding: 'utf8',
      });
      const after = await counts(children);
      const per = after.map((a, i) => a - (before[i] ?? 0));
      const total = per.reduce((a, b) => a + b, 0);
      const rps = /Requests\/sec:\s+([\d.]+)/.exec(out)?.[1];
      console.log(
        `${mode.padEnd(9)} ${label.padEnd(28)} accepted per process ${JSON.stringify(per)} ` +
          `(largest share ${((100 * Math.max(...per)) / total).toFixed(1)}%), ${rps} req/s`,
      );
    }
    for (const c of children) c.kill();
  }
  process.exit(0);
}

function freePort(): Promise<number> {
  const s = net.createServer();
  return new Promise((resolve) =>
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    }),
  );
}

function counts(children: ChildProcess[]): Promise<number[]> {
  return Promise.all(
    children.map(
      (c) =>
        new Promise<number>((resolve) => {
          c.once('message', (m: { accepted: number }) => resolve(m.accepted));
          c.send('count');
        }),
    ),
  );
}
