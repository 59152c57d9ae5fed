/**
 * The app's own settings: a section `app` and per-endpoint `endpoints.<name>.app`, both typed
 * in `start()`, merged over their defaults, validated with errors naming the key path, shown
 * in the generated config, and reachable from hooks through `ctx.endpoint.appSettings`.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { generateYaml, s } from 'foundations/settings';
import { defineApp } from '../src/app.ts';
import { RequestDecision } from '../src/hooks/http-request.ts';
import { appSettings } from '../src/proxy.ts';
import { buildSettingsSchema } from '../src/settings.ts';
import { proxyRequest, startApp } from '../src/testing/index.ts';

const app = defineApp({
  name: 'settings-app',
  version: '1',
  description: 'app settings test',
  settings: {
    app: s.object('The app section.', { greeting: s.str('What to answer.', 'hello') }),
    endpoint: s.object('Per-endpoint part.', { tag: s.str('A tag for this endpoint.', 'untagged') }),
  },
  start(settings) {
    const greeting: string = settings.app.greeting;
    const tag: string = settings.endpoints.main?.app.tag ?? 'none';
    return {
      httpRequest: {
        handleRequest: (_head, ctx) =>
          RequestDecision.respond({
            status: 200,
            body: `${greeting} ${tag} ${ctx.ingress.endpoint.appSettings.tag}`,
          }),
      },
    };
  },
});

test('app and endpoint settings reach start() and the hooks, defaults merged', async () => {
  const proxy = await startApp(app, {
    settings: { app: { greeting: 'hi' }, endpoints: { main: { app: { tag: 'blue' } } } },
  });
  after(() => proxy.stop());
  const r = await proxyRequest(proxy.address(), 'http://example.test/');
  assert.equal(r.text, 'hi blue blue');
  proxy.recorder.expectHooks(proxy.recorder.connections()[0]!, ['http.handleRequest']);
});

test('a bad app setting names its path', () => {
  assert.throws(
    () => appSettings(app, [{ source: 'bad.yaml', value: { app: { greeting: 5 } } }]),
    /app\.greeting/,
  );
  assert.throws(
    () =>
      appSettings(app, [{ source: 'bad.yaml', value: { endpoints: { main: { app: { colour: 'x' } } } } }]),
    /endpoints\.main\.app\.colour/,
  );
});

test('the generated config shows the app sections with their descriptions', () => {
  const yaml = generateYaml(buildSettingsSchema(app.definition.settings, 'settings-app'));
  assert.match(yaml, /# The app section\.\napp:\n {2}# What to answer\.\n {2}greeting: hello/);
  assert.match(yaml, /# A tag for this endpoint\.\n\s+tag: untagged/);
});
