/**
 * Oxy as a dependency of someone else's app: `npm pack` of foundations, native and oxy gives
 * tarballs that an app outside the repository installs (with npm, from the npm cache), type-
 * checks (`tsc --noEmit`, through the packed .d.ts), tests (`oxy new`'s starter test, with
 * `oxy/testing`), and runs: it proxies one request to a loopback origin.
 *
 * Packing rewrites a package's package.json and builds dist/ for a moment, which would confuse
 * tests running beside this one, so the three packages are packed from a copy of the repository
 * (sharing its node_modules). Slow by nature (three tsc builds, an install): one test.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { proxyRequest, startHttpUpstream } from 'oxy/testing';

const run = promisify(execFile);
const repo = path.resolve(import.meta.dirname, '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oxy-pack-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
// The pinned Node first on PATH: npm, the install script and `node main.ts` all run it.
const env: NodeJS.ProcessEnv = {
  ...process.env,
  PATH: `${path.dirname(process.execPath)}:${process.env.PATH}`,
  XDG_RUNTIME_DIR: tmp,
  npm_config_update_notifier: 'false',
};
delete env.NODE_TEST_CONTEXT;
for (const k of Object.keys(env))
  if (k.startsWith('npm_') && k !== 'npm_config_update_notifier') delete env[k];

/** A copy of the three packages and what packing needs, without builds or node_modules. */
function copyRepo(dest: string): void {
  for (const f of ['package.json', 'tsconfig.json', 'scripts/pack-manifest.mjs']) {
    fs.cpSync(path.join(repo, f), path.join(dest, f));
  }
  for (const p of ['foundations', 'native', 'oxy']) {
    fs.cpSync(path.join(repo, 'packages', p), path.join(dest, 'packages', p), {
      recursive: true,
      filter: (src) => !/[/\\](node_modules|build|dist|\.node-headers)$/.test(src),
    });
  }
  fs.symlinkSync(path.join(repo, 'node_modules'), path.join(dest, 'node_modules'));
}

test('packed tarballs install into an app elsewhere, which type-checks, passes its test and proxies', {
  timeout: 600_000,
}, async () => {
  const copy = path.join(tmp, 'repo');
  const packs = path.join(tmp, 'packs');
  fs.mkdirSync(packs);
  copyRepo(copy);
  await Promise.all(
    ['native', 'foundations', 'oxy'].map((p) =>
      run('npm', ['pack', '--silent', '--pack-destination', packs], {
        cwd: path.join(copy, 'packages', p),
        env,
      }),
    ),
  );
  assert.deepEqual(fs.readdirSync(packs).sort(), [
    'foundations-0.1.0.tgz',
    'native-0.1.0.tgz',
    'oxy-0.1.0.tgz',
  ]);
  assert.equal(fs.existsSync(path.join(copy, 'packages/oxy/dist')), false, 'postpack removes dist/');

  // oxy new writes the starter app; it depends on the three tarballs.
  await run(path.join(repo, 'packages/oxy/bin/oxy'), ['new', 'my-proxy', '--from', packs], { cwd: tmp, env });
  const app = path.join(tmp, 'my-proxy');
  const manifest = JSON.parse(fs.readFileSync(path.join(app, 'package.json'), 'utf8'));
  assert.equal(manifest.dependencies.node, undefined);
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: app, env });
  assert.equal(fs.existsSync(path.join(app, 'node_modules/node')), false, 'no second Node is installed');
  const installed = JSON.parse(fs.readFileSync(path.join(app, 'node_modules/oxy/package.json'), 'utf8'));
  assert.deepEqual(installed.exports['./testing'], {
    types: './dist/src/testing/index.d.ts',
    default: './dist/src/testing/index.js',
  });
  await run(path.join(app, 'node_modules/.bin/tsc'), ['--noEmit'], { cwd: app, env });
  const tested = await run('npm', ['test'], { cwd: app, env });
  assert.match(tested.stdout, /ℹ pass 1\n/);
  const version = await run(path.join(app, 'node_modules/.bin/oxy'), ['--version'], { cwd: app, env });
  assert.equal(version.stdout, 'oxy 0.1.0\n');

  // The app as production runs it, with loopback allowed for the test's origin.
  const upstream = await startHttpUpstream({ '/': { body: 'through the packed oxy' } });
  after(() => upstream.close());
  fs.writeFileSync(
    path.join(app, 'test.yaml'),
    [
      'endpoints:',
      '  main:',
      '    addr: "127.0.0.1:0"',
      'egress:',
      '  blocked_cidrs: []',
      'telemetry:',
      '  logging:',
      '    output: stderr',
    ].join('\n'),
  );
  const child = spawn(process.execPath, ['main.ts', '-c', 'test.yaml'], {
    cwd: app,
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  after(() => child.kill('SIGKILL'));
  let log = '';
  const addr = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no endpoint line in: ${log}`)), 30_000);
    child.stderr.on('data', (d: Buffer) => {
      log += d.toString();
      const m = /endpoint listening.*addr=(\S+)/.exec(log);
      if (m !== null) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
  });
  const r = await proxyRequest(addr, `${upstream.origin}/`);
  assert.equal(r.text, 'through the packed oxy');
  child.kill('SIGTERM');
  const [code] = await once(child, 'exit');
  assert.equal(code, 0, log);
});
