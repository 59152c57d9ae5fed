/**
 * `oxy new NAME`: writes a starter app into a new directory NAME, one that passes `npm test`
 * as soon as its dependencies are installed: a package.json, an app with one hook, its test
 * with `oxy/testing`, the generated config (with its JSON Schema for editors) and a README.
 *
 * It runs before the CLI proper (`main.ts` looks at the first argument), so the Foundations
 * command line stays as it is. It never overwrites: the directory must not exist yet.
 */
import fs from 'node:fs';
import path from 'node:path';
import { generateYaml, toJsonSchema, unwritableFile } from 'foundations/settings';
import { OXY_ERR, OxyError } from './errors.ts';
import { buildSettingsSchema } from './settings.ts';

/** What `oxy new` needs. */
export interface ScaffoldOptions {
  /** The directory to create; its base name is the app's name. */
  readonly dir: string;
  /**
   * Where the three packages come from: a directory holding `oxy-*.tgz`, `foundations-*.tgz`
   * and `native-*.tgz` (from `npm pack`), or undefined for the registry (`^version`).
   */
  readonly from?: string | undefined;
  /** Oxy's version, for the registry dependency. */
  readonly version: string;
}

/** The versions the starter's type check and tests are known to work with. */
const DEV_DEPENDENCIES = { '@types/node': '^24.10.0', typescript: '5.9.3' } as const;

function dependencies(opts: ScaffoldOptions): Record<string, string> {
  if (opts.from === undefined) return { oxy: `^${opts.version}` };
  const dir = path.resolve(opts.from);
  const files = fs.readdirSync(dir);
  const out: Record<string, string> = {};
  for (const name of ['oxy', 'foundations', 'native']) {
    const tgz = files.filter((f) => f.startsWith(`${name}-`) && f.endsWith('.tgz')).sort();
    if (tgz.length === 0) {
      throw new OxyError(
        OXY_ERR.NEW_APP,
        `oxy new: --from ${dir} holds no ${name}-*.tgz (run npm pack first)`,
      );
    }
    out[name] = `file:${path.join(dir, tgz[tgz.length - 1]!)}`;
  }
  return out;
}

const APP = (name: string) => `/**
 * ${name}: a forward proxy built on Oxy. One hook: connections to internal.example are
 * refused (403); everything else goes to its destination.
 */
import { defineApp, EgressDecision } from 'oxy';

export const app = defineApp({
  name: '${name}',
  version: '0.1.0',
  description: 'A forward proxy that keeps clients away from internal.example',
  start: () => ({
    egress: {
      handleConnection: (target) =>
        target.host === 'internal.example' ? EgressDecision.block('internal') : EgressDecision.direct(target),
    },
  }),
});
`;

const MAIN = `/** Runs the app with Oxy's command line: -c FILE, --check, --generate, --restart, --help. */
import { bootstrap } from 'oxy';
import { app } from './app.ts';

await bootstrap(app);
`;

const TEST = `import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { proxyRequest, startApp, startHttpUpstream } from 'oxy/testing';
import { app } from './app.ts';

test('requests go through; internal.example is refused by the egress hook', async () => {
  const upstream = await startHttpUpstream({ '/': { body: 'hello' } });
  const oxy = await startApp(app);
  after(() => oxy.stop().then(() => upstream.close()));
  const ok = await proxyRequest(oxy.address(), \`\${upstream.origin}/\`);
  assert.equal(ok.text, 'hello');
  const blocked = await proxyRequest(oxy.address(), 'http://internal.example/');
  assert.equal(blocked.status, 403);
  const [, second] = oxy.recorder.connections();
  oxy.recorder.expectHooks(second!, ['egress.handleConnection']);
});
`;

const README = (name: string) => `# ${name}

A forward proxy built on Oxy (a programmable proxy framework for Node.js), started with \`oxy new ${name}\`.

\`\`\`sh
npm install
npm test                 # the app's test, with oxy/testing
npm start                # node main.ts -c oxy.yaml: listens on 127.0.0.1:8080
curl -x http://127.0.0.1:8080 http://example.com/
\`\`\`

- \`app.ts\`: the app and its one hook (\`egress.handleConnection\`); \`app.test.ts\`: its test.
- \`oxy.yaml\`: every setting with its description (\`node main.ts --generate oxy.yaml\` writes it
  again); \`${name}.schema.json\` lets editors check it (the first line of oxy.yaml points there).
- \`node main.ts -c oxy.yaml --check\` validates the config; \`--restart -c oxy.yaml\` restarts the
  running instance gracefully.
`;

const TSCONFIG = `{
  "compilerOptions": {
    "target": "esnext",
    "module": "nodenext",
    "moduleResolution": "nodenext",
    "types": ["node"],
    "strict": true,
    "noEmit": true,
    "allowImportingTsExtensions": true,
    "erasableSyntaxOnly": true,
    "verbatimModuleSyntax": true
  },
  "include": ["*.ts"]
}
`;

/** Writes the starter app; returns the files written, relative to `opts.dir`. */
export function scaffold(opts: ScaffoldOptions): string[] {
  const dir = path.resolve(opts.dir);
  const name = path.basename(dir);
  if (!/^[a-z0-9][a-z0-9._-]*$/.test(name)) {
    throw new OxyError(
      OXY_ERR.NEW_APP,
      `oxy new: "${name}" is not a valid package name (lower case, digits, ".", "_", "-")`,
    );
  }
  if (fs.existsSync(dir)) throw new OxyError(OXY_ERR.NEW_APP, `oxy new: ${dir} already exists`);
  // Before mkdir: Node's recursive mkdirSync spins forever under /proc or /sys.
  const why = unwritableFile(path.join(dir, 'package.json'), true);
  if (why !== null) throw new OxyError(OXY_ERR.NEW_APP, `oxy new: ${why}`);
  const pkg = {
    name,
    version: '0.1.0',
    private: true,
    type: 'module',
    engines: { node: '>=24' },
    scripts: {
      start: 'node main.ts -c oxy.yaml',
      test: 'node --test',
      check: 'tsc --noEmit',
    },
    dependencies: dependencies(opts),
    devDependencies: DEV_DEPENDENCIES,
    // npm 11 asks before running install scripts: `native` builds Oxy's addon.
    allowScripts: { native: true },
  };
  const schema = buildSettingsSchema({}, name);
  const header =
    `yaml-language-server: $schema=${name}.schema.json\n` +
    `${name}: every setting with its description; edit what you need.`;
  const files: Record<string, string> = {
    'package.json': `${JSON.stringify(pkg, null, 2)}\n`,
    'app.ts': APP(name),
    'main.ts': MAIN,
    'app.test.ts': TEST,
    'oxy.yaml': generateYaml(schema, { header }),
    [`${name}.schema.json`]: `${JSON.stringify(toJsonSchema(schema), null, 2)}\n`,
    'tsconfig.json': TSCONFIG,
    'README.md': README(name),
    '.gitignore': 'node_modules/\n',
  };
  fs.mkdirSync(dir, { recursive: true });
  for (const [file, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, file), text);
  return Object.keys(files);
}
