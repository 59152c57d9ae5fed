/**
 * Runs inside a network namespace that `happy-eyeballs.test.ts` creates with `unshare --net`, so
 * that blackholed and unroutable addresses exist without touching any real network:
 * 10.99.0.0/16 is routed into loopback, where the namespace neither owns the address nor
 * forwards, so SYNs vanish without an answer (a blackhole that needs no kernel module);
 * 10.98.0.0/16 is an `unreachable` route (EHOSTUNREACH at once); nothing else is routed.
 * It runs each scenario and prints one JSON line per scenario for the parent to assert on.
 */

import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { connectHappyEyeballs } from '../happy-eyeballs.ts';

for (const args of [
  ['link', 'set', 'lo', 'up'],
  ['route', 'add', '10.99.0.0/16', 'dev', 'lo'],
  ['route', 'add', 'unreachable', '10.98.0.0/16'],
]) {
  execFileSync('ip', args, { stdio: 'inherit' });
}

const server = net.createServer((s) => s.end());
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
const port = (server.address() as net.AddressInfo).port;

async function scenario(
  name: string,
  addresses: string[],
  opts: { timeoutMs: number; attemptDelayMs?: number },
) {
  const started: string[] = [];
  const sockets: net.Socket[] = [];
  const t0 = performance.now();
  const out: Record<string, unknown> = { name };
  try {
    const socket = await connectHappyEyeballs(addresses, port, {
      ...opts,
      connect: (address, p) => {
        started.push(`${address}@${Math.round(performance.now() - t0)}`);
        const s = net.connect({ host: address, port: p, autoSelectFamily: false });
        sockets.push(s);
        return s;
      },
    });
    out.winner = socket.remoteAddress;
    socket.destroy();
  } catch (e) {
    out.code = (e as { code?: string }).code;
    out.message = (e as Error).message;
  }
  out.ms = Math.round(performance.now() - t0);
  out.started = started;
  await new Promise((r) => setImmediate(r));
  out.losersDestroyed = sockets.filter((s) => s.remoteAddress !== out.winner).every((s) => s.destroyed);
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

await scenario('blackhole-then-loopback', ['10.99.0.1', '127.0.0.1'], {
  timeoutMs: 5000,
  attemptDelayMs: 100,
});
await scenario('blackhole-only', ['10.99.0.1', '10.99.0.2'], { timeoutMs: 400, attemptDelayMs: 100 });
await scenario('unreachable', ['10.98.0.1'], { timeoutMs: 5000 });
await scenario('no-route', ['192.0.2.1'], { timeoutMs: 5000 });
await scenario('unreachable-then-loopback', ['10.98.0.1', '127.0.0.1'], {
  timeoutMs: 5000,
  attemptDelayMs: 3000,
});
server.close();
