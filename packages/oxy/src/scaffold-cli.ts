/**
 * The `oxy new` subcommand's command line: `oxy new NAME [--from DIR]`. Kept apart from the
 * Foundations CLI (which takes no positional arguments); main.ts hands it the arguments.
 */
import { parseArgs } from 'node:util';
import { isOxyError } from './errors.ts';
import { scaffold } from './scaffold.ts';

const USAGE =
  'Usage: oxy new NAME [--from DIR]\n\n' +
  'Writes a starter app into the new directory NAME: package.json, app.ts (one hook), app.test.ts\n' +
  '(oxy/testing), main.ts, oxy.yaml (every setting) with its JSON Schema, tsconfig.json, README.md.\n\n' +
  '  --from DIR  depend on the oxy, foundations and native tarballs in DIR (from npm pack)\n' +
  '              instead of the registry\n';

/** Runs `oxy new` with `args` (after "new"); returns the exit code (0 ok, 2 usage or refused). */
export function runNew(args: readonly string[]): number {
  let values: { from?: string | undefined; help?: boolean | undefined };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: [...args],
      options: { from: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
    }));
  } catch (e) {
    process.stderr.write(`oxy new: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length !== 1) {
    process.stderr.write(`oxy new: give one directory name\n\n${USAGE}`);
    return 2;
  }
  const dir = positionals[0]!;
  try {
    const files = scaffold({ dir, from: values.from, version: '0.1.0' });
    process.stdout.write(
      `oxy new: wrote ${files.join(', ')} in ${dir}/\n\nNext:\n  cd ${dir}\n  npm install\n  npm test\n  npm start\n`,
    );
    return 0;
  } catch (e) {
    if (!isOxyError(e)) throw e;
    process.stderr.write(`${e.message}\n`);
    return 2;
  }
}
