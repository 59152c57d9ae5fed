import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EgressDecision } from '../hooks/egress.ts';
import { IngressDecision } from '../hooks/ingress.ts';
import { diffLists, HookRecorder, summarize } from './recorder.ts';

const endpoint = {
  name: 'main',
  addr: { kind: 'tcp', host: '127.0.0.1', port: 1 },
  appSettings: null,
  ext: {},
};
const ingress = { id: 'c1', endpoint, client: { host: '127.0.0.1', port: 5000 }, ext: {} };
const egress = { id: 'e1', ingress, request: null, target: { host: 'example.com', port: 443 }, ext: {} };

test('records calls per connection with argument and result summaries', async () => {
  const recorder = new HookRecorder();
  class Egress {
    async handleConnection(target: { host: string; port: number }) {
      return EgressDecision.direct(target);
    }
  }
  const hooks = recorder.wrap({
    ingress: { handleConnection: () => IngressDecision.allow() },
    egress: new Egress(),
  });
  hooks.ingress?.handleConnection?.(ingress as never);
  await hooks.egress?.handleConnection?.({ host: 'example.com', port: 443 }, egress as never);
  assert.deepEqual(recorder.connections(), ['c1']);
  recorder.expectHooks('c1', ['ingress.handleConnection', 'egress.handleConnection']);
  assert.equal(
    recorder.transcript('c1'),
    'ingress.handleConnection() -> allow\negress.handleConnection(example.com:443) -> direct example.com:443',
  );
});

test('a differing order fails with a side-by-side diff and the transcript', () => {
  const recorder = new HookRecorder();
  const hooks = recorder.wrap({ ingress: { handleConnection: () => IngressDecision.block('nope') } });
  hooks.ingress?.handleConnection?.(ingress as never);
  assert.throws(
    () => recorder.expectHooks('c1', ['ingress.handleConnection', 'ingress.handleConnectionClose']),
    (err: Error) => {
      assert.match(err.message, /hooks fired for connection c1 differ/);
      assert.match(err.message, />\s*2 ingress\.handleConnectionClose\s*\| \(none\)/);
      assert.match(err.message, /ingress\.handleConnection\(\) -> block nope/);
      return true;
    },
  );
});

test('a throwing hook is recorded as such and still throws', () => {
  const recorder = new HookRecorder();
  const hooks = recorder.wrap({
    ingress: {
      handleConnection: (): IngressDecision => {
        throw new Error('boom');
      },
    },
  });
  assert.throws(() => hooks.ingress?.handleConnection?.(ingress as never), /boom/);
  assert.equal(recorder.calls[0]?.result, 'threw boom');
});

test('summaries stay short and readable', () => {
  assert.equal(summarize({ host: '::1', port: 80 }), '[::1]:80');
  assert.equal(summarize({ kind: 'block', reason: 'x' }), 'block x');
  assert.equal(summarize('a'.repeat(100)).length, 60);
  assert.match(diffLists(['a', 'b'], ['a', 'c']), /> 2 b\s+\| c/);
});
