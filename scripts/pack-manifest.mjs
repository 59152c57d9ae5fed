// `prepack`/`postpack` of the publishable packages (foundations, native, oxy).
//
// The repository runs the TypeScript sources directly, so each package.json exports `.ts`
// files; Node refuses to strip types under node_modules, so the tarball must export the
// compiled JavaScript in dist/ instead. `prepare` (prepack, after `npm run build`) rewrites the
// package.json that goes into the tarball: every export becomes `{ types, default }` into
// dist/, and the repository-only scripts go. `restore` (postpack) puts the original back and
// removes dist/, so the working tree keeps running from source. Plain JS: npm may run it with
// any Node.
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';

const manifest = 'package.json';
const backup = '.package.json.prepack';

function compiled(target) {
  if (typeof target !== 'string' || !target.endsWith('.ts')) return target;
  const base = `./dist/${target.replace(/^\.\//, '').replace(/\.ts$/, '')}`;
  return { types: `${base}.d.ts`, default: `${base}.js` };
}

const mode = process.argv[2];
if (mode === 'prepare') {
  if (existsSync(backup))
    throw new Error(`${backup} exists: a previous pack did not finish; restore it first`);
  const text = readFileSync(manifest, 'utf8');
  writeFileSync(backup, text);
  const pkg = JSON.parse(text);
  pkg.exports = Object.fromEntries(Object.entries(pkg.exports ?? {}).map(([k, v]) => [k, compiled(v)]));
  for (const s of ['build', 'prepack', 'postpack']) delete pkg.scripts?.[s];
  if (pkg.scripts && Object.keys(pkg.scripts).length === 0) delete pkg.scripts;
  writeFileSync(manifest, `${JSON.stringify(pkg, null, 2)}\n`);
} else if (mode === 'restore') {
  if (existsSync(backup)) renameSync(backup, manifest);
  rmSync('dist', { recursive: true, force: true });
} else {
  console.error('usage: node pack-manifest.mjs prepare|restore');
  process.exit(2);
}
