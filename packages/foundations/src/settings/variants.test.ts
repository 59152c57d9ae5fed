/** `s.variants`: a section of several kinds picked by one key, in parsing, merging, errors and the generated YAML. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import YAML from 'yaml';
import { generateYaml, type Infer, parseSettings, SettingsError, s, toJsonSchema } from './index.ts';

const Endpoint = s.variants(
  'An endpoint.',
  'protocol',
  'What the endpoint speaks.',
  {
    http: {
      addr: s.listenAddr('Address.', '127.0.0.1:8080'),
      max_header_size: s.size('Largest head.', '16KiB'),
    },
    tcp: {
      addr: s.listenAddr('Address.', '127.0.0.1:9000'),
      target: s.str('Where to connect.', ''),
    },
  },
  'http',
);

const Settings = s.object('Settings.', { endpoints: s.map('Endpoints.', Endpoint, { main: {} }) });

function parse(...values: unknown[]): Infer<typeof Settings> {
  return parseSettings(
    Settings,
    values.map((value, i) => ({ source: `file${i + 1}.yaml`, value })),
  );
}

function errorOf(...values: unknown[]): string {
  try {
    parse(...values);
  } catch (e) {
    assert.ok(e instanceof SettingsError);
    return e.message;
  }
  assert.fail('expected a settings error');
}

test('the default kind applies when the key is not given, and each kind gets its own defaults', () => {
  const got = parse({ endpoints: { main: {}, raw: { protocol: 'tcp', target: 'a:1' } } });
  assert.deepEqual(got.endpoints.main, {
    protocol: 'http',
    addr: { kind: 'tcp', host: '127.0.0.1', port: 8080 },
    max_header_size: 16384,
  });
  assert.deepEqual(got.endpoints.raw, {
    protocol: 'tcp',
    addr: { kind: 'tcp', host: '127.0.0.1', port: 9000 },
    target: 'a:1',
  });
  const raw = got.endpoints.raw;
  if (raw?.protocol === 'tcp') assert.equal(raw.target, 'a:1'); // narrowed by the key
});

test('an unknown kind and a key of another kind are errors naming their path', () => {
  assert.match(
    errorOf({ endpoints: { main: { protocol: 'udp' } } }),
    /endpoints\.main\.protocol.*expected one of "http", "tcp", got "udp"/s,
  );
  assert.match(errorOf({ endpoints: { main: { target: 'a:1' } } }), /endpoints\.main.*target/s);
  assert.match(
    errorOf({ endpoints: { main: { protocol: 'tcp', max_header_size: '1KiB' } } }),
    /max_header_size/,
  );
});

test("a key of another kind's nested section is unknown, without a hint naming the key itself", () => {
  const Pp = (extra: 'timeout' | 'format') =>
    s.object('PROXY.', {
      enabled: s.bool('On.', false),
      ...(extra === 'timeout'
        ? { header_timeout: s.duration('Timeout.', '5s') }
        : { udp_format: s.str('Format.', 'v2') }),
    });
  const Ep = s.variants(
    'An endpoint.',
    'protocol',
    'What it speaks.',
    { tcp: { pp: Pp('timeout') }, udp: { pp: Pp('format') } },
    'tcp',
  );
  const Root = s.object('Settings.', { endpoints: s.map('Endpoints.', Ep, {}) });
  let message = '';
  try {
    parseSettings(Root, [{ source: 'f.yaml', value: { endpoints: { a: { pp: { udp_format: 'spp' } } } } }]);
  } catch (e) {
    message = (e as Error).message;
  }
  assert.match(message, /endpoints\.a\.pp\.udp_format: unknown key/);
  assert.doesNotMatch(message, /did you mean "udp_format"/);
});

test('a later file may change the kind; keys merge as the kind the result has', () => {
  const got = parse(
    { endpoints: { main: { addr: '127.0.0.1:1' } } },
    { endpoints: { main: { protocol: 'tcp' } } },
  );
  assert.equal(got.endpoints.main?.protocol, 'tcp');
  assert.deepEqual(got.endpoints.main?.addr, { kind: 'tcp', host: '127.0.0.1', port: 1 });
});

test("the generated YAML shows only the keys of each entry's kind, with comments, and loads back", () => {
  const yaml = generateYaml(Settings, { values: { endpoints: { main: {}, raw: { protocol: 'tcp' } } } });
  const doc = YAML.parse(yaml) as { endpoints: Record<string, Record<string, unknown>> };
  assert.deepEqual(Object.keys(doc.endpoints.main ?? {}), ['protocol', 'addr', 'max_header_size']);
  assert.deepEqual(Object.keys(doc.endpoints.raw ?? {}), ['protocol', 'addr', 'target']);
  assert.match(yaml, /# What the endpoint speaks\.\n\s+protocol: tcp/);
  assert.deepEqual(parse(doc).endpoints.raw?.protocol, 'tcp');
});

test('the JSON Schema offers each kind', () => {
  const json = JSON.stringify(toJsonSchema(Settings));
  assert.match(json, /"const":"http"/);
  assert.match(json, /"const":"tcp"/);
});

test('the JSON Schema takes what the loader takes: no key for the default kind, ~ for a map entry', () => {
  const json = toJsonSchema(Settings) as {
    properties: { endpoints: { additionalProperties: { oneOf: Record<string, unknown>[] } } };
  };
  const [http, tcp, nothing] = json.properties.endpoints.additionalProperties.oneOf as {
    properties?: { protocol: { const: string } };
    required?: string[];
  }[];
  // `endpoints: {main: {addr: …}}` is an http endpoint to the loader, so to editors too.
  assert.equal(http?.properties?.protocol.const, 'http');
  assert.equal(http?.required, undefined);
  assert.deepEqual(tcp?.required, ['protocol']);
  assert.deepEqual(nothing, { type: 'null' });
  assert.equal(parse({ endpoints: { main: { addr: '127.0.0.1:1' } } }).endpoints.main?.protocol, 'http');
  assert.deepEqual(Object.keys(parse({ endpoints: { main: null, raw: { protocol: 'tcp' } } }).endpoints), [
    'raw',
  ]);
});
