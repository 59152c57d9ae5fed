/**
 * Type tests of the public app surface, checked by `tsc` (`npm run check`): ext types flow from
 * the `ext` factories into every hook's context, mistakes are compile errors. The runtime part
 * checks `defineApp`'s own validation.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defineApp } from '../src/app.ts';
import { EgressDecision } from '../src/hooks/egress.ts';
import { ConnectDirective } from '../src/hooks/http-request.ts';
import { IngressDecision } from '../src/hooks/ingress.ts';

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
