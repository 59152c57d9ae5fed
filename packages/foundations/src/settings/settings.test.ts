import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import YAML from 'yaml';
import { isFoundationsError } from '../errors.ts';
import {
  defaultSettings,
  generateYaml,
  type Infer,
  loadSettings,
  parseSettings,
  SettingsError,
  s,
  toJsonSchema,
} from './index.ts';

const Route = s.object('A route.', {
  status_code: s.int("Status code of the route's response.", 200, { min: 100, max: 599 }),
  response: s.str("Content of the route's response.", ''),
});

const Endpoint = s.object('An HTTP endpoint.', {
  addr: s.listenAddr('Address to listen on.', '127.0.0.1:8080'),
  header_read_timeout: s.duration('Time allowed to read request headers.', '10s'),
  max_header_size: s.size('Largest request head accepted.', '16KiB'),
  tls: s.enabled('TLS on this endpoint.', false, {
    cert: s.path('PEM certificate chain file.', ''),
    key: s.path('PEM private key file.', ''),
  }),
  routes: s.map('URL path routes.', Route, { '/hello': { response: 'World' } }),
});

const Settings = s.object('Test service settings.', {
  name: s.str('Service name.', 'test'),
  ratio: s.num('Sampling ratio.\n\nBetween 0.0 and 1.0.', 1, { min: 0, max: 1 }),
  verbose: s.bool('Verbose output.', false),
  level: s.oneOf('Log level.', ['debug', 'info', 'warn'] as const, 'info'),
  upstream: s.optional('Upstream proxy, or ~ for none.', s.socketAddr('Upstream address.', '127.0.0.1:3128')),
  collector: s.socketAddr('Trace collector.', '[::1]:4318'),
  blocked: s.cidrList('Blocked ranges.', ['10.0.0.0/8', 'fc00::/7']),
  tags: s.list('Tags.', s.str('A tag.', ''), ['a', 'b']),
  endpoints: s.map('HTTP endpoints.', Endpoint, { main: {} }),
});

type Settings = Infer<typeof Settings>;

const dir = mkdtempSync(join(tmpdir(), 'fnd-settings-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Parses one in-memory source and returns the SettingsError it throws. */
function errorOf(value: unknown, source = 'prod.yaml'): SettingsError {
  try {
    parseSettings(Settings, [{ source, value }]);
  } catch (e) {
    assert.ok(e instanceof SettingsError, String(e));
    return e;
  }
  assert.fail('expected a SettingsError');
}

test('defaults parse to values of every kind', () => {
  const d: Settings = defaultSettings(Settings);
  assert.equal(d.name, 'test');
  assert.equal(d.ratio, 1);
  assert.equal(d.level, 'info');
  assert.equal(d.upstream, null);
  assert.deepEqual(d.collector, { host: '::1', port: 4318 });
  assert.deepEqual(d.blocked, ['10.0.0.0/8', 'fc00::/7']);
  assert.deepEqual(d.tags, ['a', 'b']);
  const main = d.endpoints.main!;
  assert.deepEqual(main.addr, { kind: 'tcp', host: '127.0.0.1', port: 8080 });
  assert.equal(main.header_read_timeout, 10_000);
  assert.equal(main.max_header_size, 16_384);
  assert.deepEqual(main.tls, { enabled: false, cert: '', key: '' });
  assert.deepEqual(main.routes, { '/hello': { status_code: 200, response: 'World' } });
});

test('every helper reports malformed input with its path and the file', () => {
  const cases: [unknown, string][] = [
    [{ name: 5 }, 'name: expected a string, got 5 (in prod.yaml)'],
    [{ ratio: 2 }, 'ratio: expected a number from 0 to 1, got 2 (in prod.yaml)'],
    [{ ratio: 'x' }, 'ratio: expected a number from 0 to 1, got "x" (in prod.yaml)'],
    [{ verbose: 'yes' }, 'verbose: expected true or false, got "yes" (in prod.yaml)'],
    [{ level: 'trace' }, 'level: expected one of "debug", "info", "warn", got "trace" (in prod.yaml)'],
    [{ upstream: 'nope' }, 'upstream: expected "host:port", got "nope" (missing ":port") (in prod.yaml)'],
    [{ collector: 123 }, 'collector: expected "host:port", got 123 (in prod.yaml)'],
    [{ blocked: '10.0.0.0/8' }, 'blocked: expected a list of CIDRs, got "10.0.0.0/8" (in prod.yaml)'],
    [
      { blocked: ['10.0.0.0/8', '1.2.3.4/8'] },
      'blocked[1]: expected a CIDR like "10.0.0.0/8", got "1.2.3.4/8"',
    ],
    [{ tags: [1] }, 'tags[0]: expected a string, got 1 (in prod.yaml)'],
    [{ endpoints: [] }, 'endpoints: expected a mapping of names to entries, got a list (in prod.yaml)'],
    [{ endpoints: { main: 5 } }, 'endpoints.main: expected a mapping, got 5 (in prod.yaml)'],
    [
      { endpoints: { main: { addr: 123 } } },
      'endpoints.main.addr: expected "host:port" or an absolute socket path, got 123',
    ],
    [{ endpoints: { main: { addr: 'app.sock' } } }, 'must be absolute'],
    [
      { endpoints: { main: { header_read_timeout: 10 } } },
      'endpoints.main.header_read_timeout: expected a duration',
    ],
    [
      { endpoints: { main: { max_header_size: '16 kilobytes' } } },
      'endpoints.main.max_header_size: expected a size',
    ],
    [
      { endpoints: { main: { tls: { enabled: 1 } } } },
      'endpoints.main.tls.enabled: expected true or false, got 1',
    ],
    [
      { endpoints: { main: { routes: { '/x': { status_code: 99 } } } } },
      'endpoints.main.routes["/x"].status_code: expected an integer from 100 to 599, got 99',
    ],
    [
      { endpoints: { 'my endpoint': { routes: { '/x': { status_code: 2.5 } } } } },
      'endpoints["my endpoint"].routes["/x"].status_code: expected an integer',
    ],
    [[1, 2], 'expected a mapping, got a list (in prod.yaml)'],
  ];
  for (const [value, message] of cases) {
    const err = errorOf(value);
    assert.ok(err.message.includes(message), `${err.message}\n  should include\n${message}`);
    assert.equal(err.code, 'FND_ERR_SETTINGS');
    assert.equal(err.userError, true);
    assert.ok(isFoundationsError(err));
  }
});

test('unknown keys are errors naming the full path, with a hint for near misses', () => {
  const err = errorOf({ endpoints: { main: { adr: '1.2.3.4:80' } }, bogus: 1 });
  assert.deepEqual(
    err.issues.map((i) => `${i.path}: ${i.message} (in ${i.file})`),
    [
      'endpoints.main.adr: unknown key (did you mean "addr"?) (in prod.yaml)',
      'bogus: unknown key (in prod.yaml)',
    ],
  );
  assert.equal(err.path, 'endpoints.main.adr');
  assert.equal(err.file, 'prod.yaml');
  assert.match(err.message, /\(and 1 more\)$/);
});

test('files merge in order over the defaults; errors name the file that set the key', () => {
  const base = file(
    'base.yaml',
    'name: base\nlevel: debug\ntags: [x, y, z]\nendpoints:\n  main:\n    addr: 127.0.0.1:1\n    routes:\n      /a: {response: A}\n',
  );
  const prod = file(
    'prod.yaml',
    'level: warn\ntags: [p]\nendpoints:\n  main:\n    header_read_timeout: 2s\n  extra:\n    addr: /tmp/x.sock\n',
  );
  const local = file(
    'local.yaml',
    'name: local\nendpoints:\n  main:\n    routes:\n      /b: {status_code: 404}\n',
  );
  const got = loadSettings(Settings, [base, prod, local]);
  assert.equal(got.name, 'local');
  assert.equal(got.level, 'warn');
  assert.deepEqual(got.tags, ['p'], 'lists replace');
  const main = got.endpoints.main!;
  assert.deepEqual(main.addr, { kind: 'tcp', host: '127.0.0.1', port: 1 });
  assert.equal(main.header_read_timeout, 2000);
  assert.deepEqual(main.routes, {
    '/a': { status_code: 200, response: 'A' },
    '/b': { status_code: 404, response: '' },
  });
  assert.deepEqual(got.endpoints.extra?.addr, { kind: 'unix', path: '/tmp/x.sock' });
  assert.deepEqual(Object.keys(got.endpoints), ['main', 'extra']);

  const bad = file('bad.yaml', 'endpoints:\n  main:\n    addr: 123\n');
  assert.throws(() => loadSettings(Settings, [base, bad, local]), {
    message: `endpoints.main.addr: expected "host:port" or an absolute socket path, got 123 (in ${bad})`,
  });
  const unknown = file('unknown.yaml', 'endpoints:\n  main:\n    adr: 1\n');
  assert.throws(
    () => loadSettings(Settings, [unknown, base]),
    (e: SettingsError) => e.file === unknown,
  );
});

test('a map entry set to ~ is deleted; an empty section changes nothing; a set map drops defaults', () => {
  const got = parseSettings(Settings, [
    { source: 'a', value: { endpoints: { one: {}, two: {} } } },
    { source: 'b', value: { endpoints: { one: null, two: { tls: null } } } },
  ]);
  assert.deepEqual(Object.keys(got.endpoints), ['two']);
  assert.equal(got.endpoints.two?.tls.enabled, false);
  // a YAML key with only comments under it is null: it leaves the defaults
  assert.deepEqual(
    Object.keys(loadSettings(Settings, [file('empty.yaml', 'endpoints:\n  # nothing yet\n')]).endpoints),
    ['main'],
  );
  assert.deepEqual(loadSettings(Settings, [file('blank.yaml', '')]), defaultSettings(Settings));
  assert.equal(
    parseSettings(Settings, [{ source: 'x', value: { upstream: '[::1]:3128' } }]).upstream?.host,
    '::1',
  );
  assert.equal(
    parseSettings(Settings, [
      { source: 'x', value: { upstream: '1.1.1.1:1' } },
      { source: 'y', value: { upstream: null } },
    ]).upstream,
    null,
  );
});

test('a map entry named like a default entry starts from it; other default entries are dropped', () => {
  const Server = s.object('Server.', {
    endpoints: s.map('Endpoints.', Endpoint, {
      main: { addr: '127.0.0.1:1', routes: { '/a': { response: 'A' } } },
      admin: { addr: '127.0.0.1:2' },
    }),
  });
  const got = parseSettings(Server, [
    { source: 'x', value: { endpoints: { main: { addr: '127.0.0.1:9' } } } },
  ]);
  assert.deepEqual(Object.keys(got.endpoints), ['main']);
  assert.deepEqual(got.endpoints.main?.addr, { kind: 'tcp', host: '127.0.0.1', port: 9 });
  assert.deepEqual(got.endpoints.main?.routes, { '/a': { status_code: 200, response: 'A' } });
  const other = parseSettings(Server, [{ source: 'x', value: { endpoints: { public: {} } } }]);
  assert.deepEqual(Object.keys(other.endpoints), ['public']);
  assert.deepEqual(other.endpoints.public?.routes, { '/hello': { status_code: 200, response: 'World' } });
});

test('YAML anchors and merge keys work across entries', () => {
  const path = file(
    'anchors.yaml',
    'endpoints:\n  a: &base\n    header_read_timeout: 3s\n    addr: 127.0.0.1:1\n  b:\n    <<: *base\n    addr: 127.0.0.1:2\n',
  );
  const got = loadSettings(Settings, [path]);
  assert.equal(got.endpoints.b?.header_read_timeout, 3000);
  assert.deepEqual(got.endpoints.b?.addr, { kind: 'tcp', host: '127.0.0.1', port: 2 });
});

test('YAML syntax errors and unreadable files name the file and line', () => {
  const broken = file('broken.yaml', 'name: ok\nendpoints:\n  main: [unclosed\n');
  assert.throws(
    () => loadSettings(Settings, [broken]),
    (e: SettingsError) => {
      assert.match(
        e.message,
        new RegExp(`^YAML syntax error at line \\d+, column \\d+: .+ \\(in ${broken}\\)$`),
      );
      return e.file === broken && e.path === '';
    },
  );
  const dup = file('dup.yaml', 'name: a\nname: b\n');
  assert.throws(
    () => loadSettings(Settings, [dup]),
    /YAML syntax error at line 2, column 1: Map keys must be unique/,
  );
  assert.throws(
    () => loadSettings(Settings, [join(dir, 'missing.yaml')]),
    /cannot read config file: no such file \(in .*missing.yaml\)/,
  );
  assert.throws(
    () => loadSettings(Settings, [file('list.yaml', '- a\n- b\n')]),
    /expected a mapping of settings, got a list/,
  );
  assert.throws(() => loadSettings(Settings, [file('scalar.yaml', 'hello\n')]), /got "hello"/);
});

test('defining a field without a description or with a bad default throws at once', () => {
  assert.throws(() => s.str('', 'x'), /non-empty description/);
  assert.throws(() => s.duration('A timeout.', '10'), /default "10" of "A timeout." is invalid/);
  assert.throws(() => s.size('A size.', 'big'), /is invalid/);
  assert.throws(() => s.cidrList('Ranges.', ['10.0.0.1/8']), /is invalid/);
  assert.throws(() => s.int('Port.', 70000, { max: 65535 }), /is invalid/);
  assert.throws(
    () => s.object('Raw zod.', { x: YAML as never }),
    /field "x" of "Raw zod." is not a settings schema/,
  );
  assert.throws(() => s.optional('Opt section.', Route), /cannot be optional; use s.enabled/);
  assert.throws(() => s.enabled('Twice.', true, { enabled: s.bool('x', true) }), /must not define "enabled"/);
  assert.throws(() => s.map('Routes.', Route, { '/x': { status_code: 1 } }), /is invalid/);
});

test('generated YAML has every key with its description and loads back to the defaults', () => {
  const yaml = generateYaml(Settings, { header: 'test 1.0' });
  assert.match(yaml, /^# test 1.0\n/);
  assert.match(yaml, /# Sampling ratio\.\n#\n# Between 0\.0 and 1\.0\.\nratio: 1\n/);
  assert.match(yaml, /# Upstream proxy, or ~ for none\.\nupstream: ~\n/);
  assert.match(yaml, /collector: "\[::1\]:4318"/);
  assert.match(
    yaml,
    /# HTTP endpoints\.\nendpoints:\n {2}# "main": .*\n {2}main:\n {4}# Address to listen on\.\n {4}addr: "127\.0\.0\.1:8080"\n/,
  );
  assert.match(yaml, /header_read_timeout: 10s\n/);
  assert.match(yaml, /max_header_size: 16KiB\n/);
  assert.match(yaml, / {4}tls:\n {6}# Turns this on or off.*\n {6}enabled: false\n/);
  assert.match(
    yaml,
    / {6}# "\/hello": .*\n {6}\/hello:\n {8}# Status code of the route's response\.\n {8}status_code: 200\n/,
  );
  const path = file('generated.yaml', yaml);
  assert.deepEqual(loadSettings(Settings, [path]), defaultSettings(Settings));
  // and generating from values shows them, completed with defaults
  const values = { endpoints: { x: { addr: '/tmp/s', routes: {} } }, upstream: '1.2.3.4:5' };
  const custom = YAML.parse(generateYaml(Settings, { values }));
  assert.deepEqual(
    parseSettings(Settings, [{ source: 'g', value: custom }]),
    parseSettings(Settings, [{ source: 'v', value: values }]),
  );
  assert.deepEqual(custom.endpoints.x.routes, {});
});

/** A tiny JSON Schema checker for the keywords zod emits here (no validator is installed). */
function validate(schema: Record<string, unknown>, value: unknown, path = ''): string[] {
  if (Array.isArray(schema.anyOf)) {
    const ok = (schema.anyOf as Record<string, unknown>[]).some((s) => validate(s, value, path).length === 0);
    return ok ? [] : [`${path}: matches no alternative`];
  }
  const types = schema.type === undefined ? undefined : ([] as unknown[]).concat(schema.type);
  const actual = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
  const typeOk = (t: unknown) => (t === 'integer' ? Number.isInteger(value) : t === actual);
  if (types !== undefined && !types.some(typeOk)) return [`${path}: not ${types.join(' or ')}`];
  if (Array.isArray(schema.enum) && !schema.enum.includes(value)) return [`${path}: not in enum`];
  const errors: string[] = [];
  if (actual === 'object') {
    const props = (schema.properties ?? {}) as Record<string, Record<string, unknown>>;
    for (const [k, v] of Object.entries(value as object)) {
      const sub = props[k] ?? schema.additionalProperties;
      if (sub === false) errors.push(`${path}.${k}: not allowed`);
      else if (typeof sub === 'object' && sub !== null)
        errors.push(...validate(sub as Record<string, unknown>, v, `${path}.${k}`));
    }
  }
  if (actual === 'array' && typeof schema.items === 'object') {
    for (const [i, v] of (value as unknown[]).entries()) {
      errors.push(...validate(schema.items as Record<string, unknown>, v, `${path}[${i}]`));
    }
  }
  return errors;
}

test('JSON Schema describes the input form, with descriptions and defaults', () => {
  const schema = toJsonSchema(Settings);
  assert.equal(schema.$schema, 'https://json-schema.org/draft/2020-12/schema');
  JSON.parse(JSON.stringify(schema)); // plain JSON
  const props = schema.properties as Record<string, Record<string, unknown>>;
  assert.equal(props.collector?.type, 'string');
  assert.equal(props.collector?.default, '[::1]:4318');
  assert.equal(props.collector?.description, 'Trace collector.');
  assert.equal(schema.additionalProperties, false);
  const generated = YAML.parse(generateYaml(Settings));
  assert.deepEqual(validate(schema, generated), []);
  assert.deepEqual(validate(schema, { endpoints: { main: { adr: 1 } } }), [
    '.endpoints.main.adr: not allowed',
  ]);
  assert.deepEqual(validate(schema, { level: 'trace' }), ['.level: not in enum']);
});

test('types: values are the parsed form, defaults are checked against the input form', () => {
  const d = defaultSettings(Settings);
  const port: number = d.collector.port;
  const level: 'debug' | 'info' | 'warn' = d.level;
  // @ts-expect-error a duration is a number of milliseconds
  const timeout: string = d.endpoints.main!.header_read_timeout;
  // @ts-expect-error an optional is nullable
  const upstream: { host: string } = d.upstream;
  // @ts-expect-error the listen address is a union: narrow on kind first
  const host: string = d.endpoints.main!.addr.host;
  void [port, level, timeout, upstream, host];
  // @ts-expect-error a map's default entries are typed by the value schema
  assert.throws(() => s.map('Routes.', Route, { '/a': { status_code: 'x' } }));
  // @ts-expect-error oneOf's default must be one of the values
  assert.throws(() => s.oneOf('Level.', ['a', 'b'] as const, 'c'));
});
