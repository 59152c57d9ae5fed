/**
 * What `http2.strict_fields` costs: h2load through Oxy's forward proxy (h2c, prior knowledge)
 * with the guard off and on, alternating, in this one process (the proxy and a local upstream
 * run here, so the CPU figure is the whole process's per request: compare the two rows of one
 * run, not with other benchmarks). Run on demand, not in `npm test` nor `npm run bench`:
 *
 *   node bench/tools/h2-strict-fields.ts [small|big] [--rounds 2]
 *
 * `small`: 20,000 GETs of a 5-byte body (4 connections, 16 streams each); `big`: 400 GETs of
 * 1 MiB. Prints one JSON line per measurement and the load average.
 */
import { execFile } from 'node:child_process';
import { loadavg } from 'node:os';
import { promisify } from 'node:util';
import { hooksApp, startApp, startHttpUpstream } from 'oxy/testing';

const run = promisify(execFile);
const big = process.argv[2] === 'big';
const rounds = Number(process.argv[process.argv.indexOf('--rounds') + 1] || 2) || 2;
const [path, n] = big ? ['/big', 400] : ['/hello', 20_000];
const upstream = await startHttpUpstream({
  'GET /hello': { status: 200, body: 'hello' },
  'GET /big': { status: 200, body: 'x'.repeat(1 << 20) },
});
for (let round = 0; round < rounds; round++) {
  for (const strict of [false, true]) {
    const oxy = await startApp(hooksApp(), {
      settings: { endpoints: { main: { http2: { strict_fields: strict } } } },
    });
    const a = oxy.proxy.address();
    const c0 = process.cpuUsage();
    const r = await run('h2load', [
      '-n',
      String(n),
      '-c',
      '4',
      '-m',
      '16',
      '-H',
      `:authority: ${upstream.authority}`,
      `http://${a.host}:${a.port}${path}`,
    ]);
    const c = process.cpuUsage(c0);
    process.stdout.write(
      `${JSON.stringify({
        strict_fields: strict,
        path,
        requests_per_s: Number(/finished in [^,]+, ([\d.]+) req\/s/.exec(r.stdout)?.[1]),
        succeeded: Number(/(\d+) succeeded/.exec(r.stdout)?.[1]),
        cpu_us_per_request: Math.round((c.user + c.system) / n),
      })}\n`,
    );
    await oxy.stop();
  }
}
await upstream.close();
process.stdout.write(`${JSON.stringify({ load_average: loadavg() })}\n`);
