import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { s } from '../settings/index.ts';
import { type LogRecord, setLogCapture } from '../telemetry/log/logger.ts';
import { helpText, parseCli, runCli } from './index.ts';
import { serviceRunner } from './testdata/run-service.ts';

const { dir, file, run } = serviceRunner('fnd-cli-');

/** No stack trace: no "at " frames, no file URLs. */
function assertNoStack(text: string): void {
  assert.doesNotMatch(text, /^\s+at /m);
  assert.doesNotMatch(text, /file:\/\//);
}

test('--help lists the built-in and the app options', async () => {
  const r = await run('--help');
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^fixture 1\.2\.3: A fixture service for CLI tests\.\n\nUsage: fixture \[options\]/);
  for (const flag of [
    '-c, --config FILE',
    '-g, --generate FILE',
    '--check',
    '--restart',
    '-h, --help',
    '-v, --version',
  ]) {
    assert.ok(r.stdout.includes(flag), flag);
  }
  assert.match(r.stdout, /fixture options:\n {2}-s, --shout +Print the greeting in capitals\.\n/);
  assert.match(r.stdout, /--tag TAG +A tag \(repeatable\)\.\n/);
  assert.match(r.stdout, /--mode VALUE +A mode\. \(default: "normal"\)\n/);
  assert.equal((await run('-h')).stdout, r.stdout);
});

test('--version prints name and version', async () => {
  for (const flag of ['--version', '-v']) {
    const r = await run(flag);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, 'fixture 1.2.3\n');
  }
});

test('--generate - writes the annotated default config to stdout; FILE writes a file that loads back', async () => {
  const r = await run('--generate', '-');
  assert.equal(r.code, 0);
  assert.match(
    r.stdout,
    /^# yaml-language-server: \$schema=fixture\.schema\.json\n# fixture 1\.2\.3: A fixture service for CLI tests\.\n/,
  );
  assert.match(r.stdout, /# What main prints\.\ngreeting: hello\n/);
  assert.match(r.stdout, /\n# Telemetry settings\.\ntelemetry:\n {2}# Logging settings\.\n {2}logging:\n/);
  assert.match(r.stdout, /restart:\n {2}# Listen on the restart socket/);
  const out = join(dir, 'generated.yaml');
  const g = await run('-g', out);
  assert.equal(g.code, 0);
  assert.equal(g.stdout, '');
  assert.equal(readFileSync(out, 'utf8'), r.stdout);
  // The schema its first line names is written beside it, and is what --schema prints.
  const schema = await run('--schema');
  assert.equal(schema.code, 0);
  assert.equal(readFileSync(join(dir, 'fixture.schema.json'), 'utf8'), schema.stdout);
  const parsed = JSON.parse(schema.stdout);
  assert.equal(parsed.$schema, 'https://json-schema.org/draft/2020-12/schema');
  assert.equal(parsed.properties.greeting.default, 'hello');
  const check = await run('--check', '-c', out);
  assert.equal(check.code, 0);
  assert.equal(check.stdout, `${out}: ok\n`);
  // with -c, --generate shows the effective config
  const over = file('over.yaml', 'greeting: hi\n');
  const eff = YAML.parse((await run('-c', over, '-g', '-')).stdout);
  assert.equal(eff.greeting, 'hi');
  assert.equal(eff.telemetry.server.enabled, true);
});

test('--check: ok exits 0; a bad config exits 2 with one line per problem and no stack', async () => {
  const ok = await run('--check');
  assert.deepEqual([ok.code, ok.stdout], [0, '(defaults): ok\n']);
  const a = file('a.yaml', 'greeting: one\n');
  const b = file('b.yaml', 'upstream: 123\ntelemetry:\n  logging:\n    verbosity: LOUD\n');
  const both = await run('--check', '-c', a, '-c', b);
  assert.equal(both.code, 2);
  assert.equal(both.stdout, '');
  assert.deepEqual(both.stderr.trimEnd().split('\n'), [
    'fixture: telemetry.logging.verbosity: expected one of "TRACE", "DEBUG", "INFO", "WARN", "ERROR", got "LOUD" (in b.yaml)',
    'fixture: upstream: expected "host:port", got 123 (in b.yaml)',
  ]);
  const syntax = await run('--check', '-c', file('s.yaml', 'greeting: [\n'));
  assert.equal(syntax.code, 2);
  assert.match(syntax.stderr, /^fixture: YAML syntax error at line \d+, column \d+: .* \(in s\.yaml\)\n$/);
  assertNoStack(syntax.stderr);
});

test('starting with a bad config prints one line and exits 2', async () => {
  const r = await run('-c', file('bad.yaml', 'greting: hi\n'));
  assert.equal(r.code, 2);
  assert.equal(r.stderr, 'fixture: greting: unknown key (did you mean "greeting"?) (in bad.yaml)\n');
  assert.doesNotMatch(r.stdout, /^main /m);
  const missing = await run('-c', 'nope.yaml');
  assert.equal(missing.code, 2);
  assert.equal(missing.stderr, 'fixture: cannot read config file: no such file (in nope.yaml)\n');
});

test('unknown flags, missing values and stray arguments exit 2 with one line', async () => {
  for (const [args, line] of [
    [['--bogus'], "fixture: unknown option '--bogus' (see --help)\n"],
    [['-x'], "fixture: unknown option '-x' (see --help)\n"],
    [['-c'], "fixture: option '-c, --config <value>' argument missing (see --help)\n"],
    [['extra'], "fixture: unexpected argument 'extra' (see --help)\n"],
    [
      ['-g', join(dir, 'no/such/dir.yaml')],
      /^fixture: ENOENT: no such file or directory, open '.*dir\.yaml'\n$/,
    ],
  ] as const) {
    const r = await run(...args);
    assert.equal(r.code, 2, args.join(' '));
    if (typeof line === 'string') assert.equal(r.stderr, line);
    else assert.match(r.stderr, line);
    assertNoStack(r.stderr);
  }
});

test('main gets merged settings, app options and the config files', async () => {
  const a = file(
    'm1.yaml',
    'greeting: one\nupstream: "[::1]:3128"\ntelemetry:\n  server:\n    enabled: false\n',
  );
  const b = file('m2.yaml', 'greeting: two\n');
  const r = await run('-c', a, '--config', b, '-s', '--tag', 'x', '--tag', 'y');
  assert.equal(r.code, 0, r.stderr);
  const line = r.stdout.split('\n').find((l) => l.startsWith('main '));
  assert.deepEqual(JSON.parse(line!.slice(5)), {
    greeting: 'TWO',
    upstream: { host: '::1', port: 3128 },
    tags: ['x', 'y'],
    mode: 'normal',
    configFiles: ['m1.yaml', 'm2.yaml'],
  });
});

test('a user error from main exits 2 with one line; a crash exits 1 with one line, the stack only at DEBUG', async () => {
  const user = await run('-c', file('u.yaml', 'fail: user\n'));
  assert.equal(user.code, 2);
  assert.equal(user.stderr, 'fixture: the app refused this\n');
  const crash = await run('-c', file('c.yaml', 'fail: crash\n'));
  assert.equal(crash.code, 1);
  assert.equal(crash.stderr, 'fixture: fatal: boom\n');
  const debug = await run(
    '-c',
    file('d.yaml', 'fail: crash\ntelemetry:\n  logging:\n    verbosity: DEBUG\n'),
  );
  assert.equal(debug.code, 1);
  assert.match(debug.stderr, /^fixture: fatal: boom\nError: boom\n\s+at /);
});

test('a Foundations failure at start-up (telemetry cannot listen) exits 1 with one line', async () => {
  const r = await run('-c', file('t.yaml', 'telemetry:\n  server:\n    addr: /nonexistent/dir/t.sock\n'));
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^fixture: telemetry\.server\.addr: cannot listen on \/nonexistent\/dir\/t\.sock: .*\n$/,
  );
  assertNoStack(r.stderr);
  assert.doesNotMatch(r.stdout, /^main /m);
});

test('--restart with no running instance exits non-zero with one line', async () => {
  const r = await run('--restart', '-c', file('r.yaml', `restart:\n  socket: ${join(dir, 'none.sock')}\n`));
  assert.equal(r.code, 3);
  assert.match(
    r.stderr,
    /^restart: no instance is listening: .*none\.sock does not exist; an instance is found by its restart\.socket.*\n$/,
  );
});

test('parseCli and runCli work in-process without exiting', async () => {
  const spec = {
    info: { name: 'inproc', version: '0', description: 'In-process.' },
    settings: s.object('Settings.', { n: s.int('A number.', 1) }),
    options: { fast: { type: 'boolean', description: 'Go fast.' } },
    main() {},
  } as const;
  const cmd = parseCli(['--fast'], spec);
  assert.equal(cmd.kind, 'run');
  if (cmd.kind === 'run') assert.deepEqual([cmd.settings, cmd.options], [{ n: 1 }, { fast: true }]);
  assert.equal(parseCli(['--help'], spec).kind, 'help');
  assert.doesNotMatch(helpText(spec), /--restart/, 'no restart section, no --restart');
  assert.throws(() => parseCli(['--restart'], spec), { code: 'FND_ERR_CLI', userError: true });
  const out: string[] = [];
  const err: string[] = [];
  const io = { stdout: (t: string) => out.push(t), stderr: (t: string) => err.push(t) };
  assert.equal(await runCli(['--check'], spec, io), 0);
  assert.deepEqual(out, ['(defaults): ok\n']);
  const seen: number[] = [];
  assert.equal(await runCli([], { ...spec, main: ({ settings }) => void seen.push(settings.n) }, io), 0);
  assert.deepEqual(seen, [1]);
  assert.throws(
    () => parseCli([], { ...spec, options: { config: { type: 'string', description: 'x' } } }),
    /clashes with a built-in/,
  );
});

test('types: app option values are typed from their declarations', () => {
  const spec = {
    info: { name: 't', version: '0', description: 'T.' },
    settings: s.object('Settings.', {}),
    options: {
      flag: { type: 'boolean', description: 'A flag.' },
      name: { type: 'string', description: 'A name.' },
      mode: { type: 'string', default: 'x', description: 'A mode.' },
      tag: { type: 'string', multiple: true, description: 'Tags.' },
    },
    main() {},
  } as const;
  const cmd = parseCli(['--tag', 'a'], spec);
  assert.equal(cmd.kind, 'run');
  if (cmd.kind !== 'run') return;
  const flag: boolean = cmd.options.flag;
  const name: string | undefined = cmd.options.name;
  const mode: string = cmd.options.mode;
  const tags: string[] = cmd.options.tag;
  // @ts-expect-error a string option without a default may be undefined
  const named: string = cmd.options.name;
  assert.deepEqual([flag, name, mode, tags, named], [false, undefined, 'x', ['a'], undefined]);
});

test("a spec's warnings: --check prints them and exits 0, a start logs each once at WARN and runs", async () => {
  const spec = {
    info: { name: 'warner', version: '0', description: 'Warns.' },
    settings: s.object('Settings.', { n: s.int('A number.', 1) }),
    warnings: (v: { n: number }) => (v.n > 1 ? [{ path: 'n', message: `${v.n} is more than one` }] : []),
    main() {},
  } as const;
  const f = join(dir, file('warn.yaml', 'n: 2\n'));
  const out: string[] = [];
  const err: string[] = [];
  const io = { stdout: (t: string) => out.push(t), stderr: (t: string) => err.push(t) };
  assert.equal(await runCli(['--check', '-c', f], spec, io), 0, err.join(''));
  assert.deepEqual(err, [`warner: warning: n: 2 is more than one (in ${f})\n`]);
  assert.deepEqual(out, [`${f}: ok\n`]);
  const records: LogRecord[] = [];
  const previous = setLogCapture({ fn: (r) => records.push(r), level: 'INFO' });
  const ran: boolean[] = [];
  try {
    assert.equal(await runCli(['-c', f], { ...spec, main: () => void ran.push(true) }, io), 0);
  } finally {
    setLogCapture(previous);
  }
  assert.deepEqual(ran, [true], 'main ran');
  const warned = records.filter((r) => r.level === 'WARN');
  assert.deepEqual(
    warned.map((r) => r.msg),
    [`setting: n: 2 is more than one (in ${f})`],
  );
  err.length = 0;
  assert.equal(await runCli(['--check', '-c', join(dir, file('quiet.yaml', 'n: 1\n'))], spec, io), 0);
  assert.deepEqual(err, [], 'no warning, no line');
});
