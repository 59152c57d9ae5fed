/**
 * Type tests of the public app surface, checked by `tsc` (`npm run check`): ext types flow from
 * the `ext` factories into every hook's context, per-endpoint settings reach the hooks typed,
 * and mistakes are compile errors (an ext kind with required fields and no factory, an unknown
 * hook group or method next to a valid one). The runtime parts check that what compiles runs:
 * `defineApp`'s own validation, and an ext kind declared without a factory at run time.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { s } from 'foundations/settings';
import { defineApp } from '../src/app.ts';
import { EgressDecision } from '../src/hooks/egress.ts';
import { ConnectDirective, RequestDecision } from '../src/hooks/http-request.ts';
import { IngressDecision } from '../src/hooks/ingress.ts';
import { connectTunnel, proxyRequest } from '../src/testing/clients.ts';
import { startApp } from '../src/testing/index.ts';
import { startTcpEcho } from '../src/testing/peers.ts';

test('ext types are inferred from the factories and reach every hook', () => {
  const app = defineApp({
    name: 'typed',
    version: '1.0.0',
    description: 'type test',
    ext: { ingress: () => ({ psk: false }), egress: () => ({ tries: 0 }) },
    start() {
      return {
        ingress: {
          handleConnection(ctx) {
            const psk: boolean = ctx.ext.psk;
            // @ts-expect-error: ingress ext has no `nope`
            ctx.ext.nope;
            return psk ? IngressDecision.allow() : IngressDecision.block('no');
          },
        },
        httpRequest: {
          handleProxyConnectRequest(head, ctx) {
            ctx.ingress.ext.psk = head.headers['proxy-authorization'] === 'Preshared x';
            // @ts-expect-error: request ext was not declared, so it is empty
            ctx.ext.psk;
            return ConnectDirective.allow();
          },
        },
        egress: {
          handleConnection(target, ctx) {
            ctx.ext.tries += 1;
            return ctx.ingress.ext.psk ? EgressDecision.direct(target) : EgressDecision.block('private');
          },
        },
      };
    },
  });
  assert.equal(app.definition.name, 'typed');
});

test('explicit ext types work without factories in the type position', () => {
  interface Auth {
    user: string | null;
  }
  defineApp<{ ingress: Auth }>({
    name: 'explicit',
    version: '1',
    description: 'type test',
    ext: { ingress: () => ({ user: null }) },
    start: () => ({
      ingress: {
        handleConnection: (ctx) => {
          const u: string | null = ctx.ext.user;
          return u === 'x' ? IngressDecision.block('x') : IngressDecision.allow();
        },
      },
    }),
  });
});

test('defineApp refuses a definition without start or name', () => {
  // @ts-expect-error: start is required
  assert.throws(() => defineApp({ name: 'a', version: '1', description: 'd' }), /start/);
  assert.throws(() => defineApp({ name: '', version: '1', description: 'd', start: () => ({}) }), /name/);
});

test('an ext kind with required fields needs its factory; one with optional fields does not', () => {
  defineApp<{ ingress: { psk: boolean } }>({
    name: 'explicit',
    version: '1',
    description: 'type test',
    ext: { ingress: () => ({ psk: false }) },
    start: () => ({}),
  });
  // @ts-expect-error: `psk: boolean` would be undefined at run time: the factory is required
  defineApp<{ ingress: { psk: boolean } }>({
    name: 'explicit',
    version: '1',
    description: 'type test',
    start: () => ({}),
  });
  defineApp<{ ingress: { psk?: boolean } }>({
    name: 'explicit',
    version: '1',
    description: 'type test',
    start: () => ({}),
  });
});

test('an ext kind declared without a factory is an empty object the hooks may fill', async () => {
  const echo = await startTcpEcho();
  const app = defineApp<{ ingress: { psk?: boolean }; request: { seen?: number } }>({
    name: 'no-factory',
    version: '1',
    description: 'ext without factories',
    start: () => ({
      httpRequest: {
        handleProxyConnectRequest(head, ctx) {
          ctx.ingress.ext.psk = head.headers['proxy-authorization'] === 'Preshared k';
          ctx.ext.seen = (ctx.ext.seen ?? 0) + 1;
          return ConnectDirective.allow();
        },
      },
      egress: {
        handleConnection: (target, ctx) =>
          ctx.ingress.ext.psk === true && ctx.request?.ext.seen === 1
            ? EgressDecision.direct(target)
            : EgressDecision.block('no key'),
      },
    }),
  });
  const proxy = await startApp(app);
  after(() => echo.close().then(() => proxy.stop()));
  const yes = await connectTunnel(proxy.address(), echo.authority, {
    headers: { 'proxy-authorization': 'Preshared k' },
  });
  assert.equal(yes.status, 200);
  yes.socket.destroy();
  const no = await connectTunnel(proxy.address(), echo.authority);
  assert.equal(no.status, 403);
  no.socket.destroy();
});

test('per-endpoint app settings are typed in the hooks through the app definition', async () => {
  const app = defineApp({
    name: 'endpoint-typed',
    version: '1',
    description: 'type test',
    settings: { endpoint: s.object('Per endpoint.', { tag: s.str('A tag.', 'none') }) },
    start: () => ({
      httpRequest: {
        handleRequest(_head, ctx) {
          const tag: string = ctx.ingress.endpoint.appSettings.tag;
          // @ts-expect-error: the endpoint settings have no `colour`
          ctx.ingress.endpoint.appSettings.colour;
          return RequestDecision.respond({ status: 200, body: tag });
        },
      },
    }),
  });
  const proxy = await startApp(app, { settings: { endpoints: { main: { app: { tag: 'blue' } } } } });
  after(() => proxy.stop());
  assert.equal((await proxyRequest(proxy.address(), 'http://example.test/')).text, 'blue');
});

test('hook groups and methods are checked at compile time, next to valid siblings too', () => {
  const base = { name: 'names', version: '1', description: 'type test' };
  defineApp({
    ...base,
    // @ts-expect-error: `handleConnectionClos` is not an IngressHook method (next to a valid one)
    start: () => ({
      ingress: { handleConnection: () => IngressDecision.allow(), handleConnectionClos() {} },
    }),
  });
  defineApp({
    ...base,
    // @ts-expect-error: `ingres` is not a hook group (next to a valid group)
    start: () => ({ ingress: {}, ingres: {} }),
  });
  defineApp({
    ...base,
    // @ts-expect-error: the same typo in an async start
    start: async () => ({ egress: { handleUpstreamIps: (ips: string[]) => ips, handleUpstreamIp() {} } }),
  });
  defineApp({
    ...base,
    // @ts-expect-error: `ingres` is not a hook group (alone: no valid name beside it)
    start: () => ({ ingres: { handleConnection: () => IngressDecision.allow() } }),
  });
  defineApp({
    ...base,
    // @ts-expect-error: `handleConnectionClos` is not an IngressHook method (alone in its group)
    start: () => ({ ingress: { handleConnectionClos: () => {} } }),
  });
  defineApp({
    ...base,
    // @ts-expect-error: a lone unknown group from a method-style start
    start() {
      return { egres: { handleConnection: () => null } };
    },
  });
  class Gate {
    readonly verdict = IngressDecision.allow();
    handleConnection(): IngressDecision {
      return this.verdict;
    }
    handleConnectionClosed(): void {}
  }
  // @ts-expect-error: a class's extra method is a typo too (start-up refuses it as well)
  defineApp({ ...base, start: () => ({ ingress: new Gate() }) });
  class GoodGate {
    readonly verdict = IngressDecision.allow();
    handleConnection(): IngressDecision {
      return this.verdict;
    }
  }
  defineApp({ ...base, start: () => ({ ingress: new GoodGate() }) });
});
