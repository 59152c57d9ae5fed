// The harness's own checks: medians, tables and charts from result lines, and the two load
// generators against a tiny CONNECT proxy on loopback. Run on demand (bench is not in `npm test`):
//   npx node --test bench/lib/report.test.ts
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { runCommand } from './procs.ts';
import { median, page, type ResultLine, summarise, svgChart, table } from './report.ts';
import { buildConnload } from './setup.ts';

const ROOT = join(fileURLToPath(import.meta.url), '../../..');

function line(proxy: string, rps: number, busy = false, status: ResultLine['status'] = 'ok'): ResultLine {
  return {
    scenario: 'S1',
    proxy,
    run: 1,
    status,
    foreign_cpu: busy ? 0.5 : 0,
    busy,
    time: '2026-01-01T00:00:00Z',
    figures: { primary: rps, rps, p50_ms: 1, p99_ms: 2, errors: 0 },
  };
}

describe('report', () => {
  it('takes medians of odd and even lists', () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.ok(Number.isNaN(median([])));
  });

  it('uses quiet runs when it has three, else all runs, and says how many were busy', () => {
    const cells = summarise(
      [
        line('oxy', 100, true),
        line('oxy', 10),
        line('oxy', 20),
        line('oxy', 15),
        line('squid', 5, true),
        line('squid', 7, true),
      ],
      ['oxy', 'squid'],
    ).get('S1')!;
    const oxy = cells.find((c) => c.proxy === 'oxy')!;
    assert.equal(oxy.med.rps, 15);
    assert.equal(oxy.busyRuns, 0);
    const squid = cells.find((c) => c.proxy === 'squid')!;
    assert.equal(squid.med.rps, 6);
    assert.equal(squid.busyRuns, 2);
  });

  it('ranks the table, shows shares of direct and keeps failed rows last', () => {
    const lines = [
      line('direct', 1000),
      line('oxy', 500),
      line('squid', 250),
      { ...line('x', 0), status: 'error' as const, error: 'no start' },
    ];
    const t = table('S1', summarise(lines, ['direct', 'oxy', 'squid', 'x']).get('S1')!);
    const rows = t.split('\n');
    assert.match(rows[2]!, /^\| direct \| 1,000/);
    assert.match(rows[3]!, /^\| \*\*oxy\*\* \| 500\.0 .*\| 50 % \|/);
    assert.match(rows[5]!, /^\| x \| error: no start/);
  });

  it('draws one bar per measured row in a well-formed SVG', () => {
    const svg = svgChart('S1', summarise([line('oxy', 2), line('squid', 1)], ['oxy', 'squid']).get('S1')!);
    assert.equal((svg.match(/<rect /g) ?? []).length, 3); // background + two bars
    assert.match(svg, /^<svg xmlns=/);
    assert.ok(svg.trimEnd().endsWith('</svg>'));
  });

  it('puts Oxy beside its target on the page', () => {
    const md = page(
      [line('direct', 60000), line('oxy', 33000), line('trafficserver', 31000)],
      {
        machine: 'test',
        versions: { oxy: '0' },
        date: 'now',
        command: 'npm run bench',
        notes: [],
      },
      ['direct', 'oxy', 'trafficserver'],
    );
    assert.match(
      md,
      /\| S1 \| .* \| 33,000 requests\/s \| trafficserver 31,000 \| 1\.06× \| 0\.55× \| yes \|/,
    );
  });

  it('keeps the hand-written dated runs under the targets table, without their comment', () => {
    const info = {
      machine: 'test',
      versions: { oxy: '0' },
      date: 'now',
      command: 'npm run bench',
      notes: [],
    };
    const dated = '<!--\nwhy this file\n-->\n\n**Night.** oxy 1.5× its peer.\n';
    const md = page([line('oxy', 33000), line('trafficserver', 31000)], { ...info, dated }, [
      'oxy',
      'trafficserver',
    ]);
    const at = md.indexOf('**Night.** oxy 1.5× its peer.');
    assert.ok(at > md.indexOf('## Oxy against the targets') && at < md.indexOf('## S1'), md);
    assert.ok(!md.includes('why this file'));
  });
});

describe('load generators against a loopback CONNECT proxy', () => {
  let origin: http.Server;
  let proxy: net.Server;
  let originAddr = '';
  let proxyAddr = '';
  before(async () => {
    origin = http.createServer((_req, res) => res.end(Buffer.alloc(1024, 'x')));
    await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
    originAddr = `127.0.0.1:${(origin.address() as net.AddressInfo).port}`;
    // The smallest CONNECT proxy: answer 200 and splice the sockets together.
    proxy = net.createServer((client) => {
      client.once('data', (head) => {
        const target = /^CONNECT (\S+):(\d+) /.exec(head.toString('latin1'));
        if (!target) return client.destroy();
        const up = net.connect(Number(target[2]), target[1], () => {
          client.write('HTTP/1.1 200 OK\r\n\r\n');
          up.pipe(client).on('error', () => {});
          client.pipe(up).on('error', () => {});
        });
        up.on('error', () => client.destroy());
        client.on('error', () => up.destroy());
      });
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    proxyAddr = `127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
  });
  after(() => {
    origin.closeAllConnections();
    origin.close();
    proxy.close();
  });

  it('connload completes short tunnels and reports latencies', async () => {
    const bin = await buildConnload(ROOT, join(ROOT, 'bench/.work'));
    const r = await runCommand(
      bin,
      ['tunnels', '--proxy', proxyAddr, '--target', originAddr, '-c', '4', '-d', '1'],
      {
        timeoutMs: 20000,
      },
    );
    const j = JSON.parse(r.stdout) as Record<string, number>;
    assert.ok(j.tunnels! > 10, r.stdout);
    assert.equal(j.errors, 0);
    assert.ok(j.setup_p99_ms! >= j.setup_p50_ms!);
  });

  it('connload rejects bad arguments with its usage', async () => {
    const bin = await buildConnload(ROOT, join(ROOT, 'bench/.work'));
    const r = await runCommand(bin, ['tunnels', '--target', 'not-an-address']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /usage/);
  });

  it('the h2 client calls a proxy without HTTP/2 unsupported', async () => {
    const r = await runCommand(
      process.execPath,
      [
        join(ROOT, 'bench/tools/h2-connect.ts'),
        '--proxy',
        proxyAddr,
        '--target',
        originAddr,
        '--streams',
        '2',
        '--timeout',
        '10',
      ],
      { timeoutMs: 20000 },
    );
    assert.ok('unsupported' in JSON.parse(r.stdout), r.stdout);
  });
});
