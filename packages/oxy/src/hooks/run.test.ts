/** Hook resolution: class instances and plain objects, unknown names refused, absent methods null, recording. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { IngressContext } from '../context/contexts.ts';
import { IngressDecision } from './ingress.ts';
import { type HookCall, resolveHooks } from './run.ts';

test('methods of class instances (on the prototype) and plain objects are found and bound', () => {
  class Gate {
    readonly verdict = IngressDecision.block('class');
    handleConnection(): IngressDecision {
      return this.verdict;
    }
  }
  const h = resolveHooks({ ingress: new Gate() });
  assert.ok(h.ingressConnection);
  assert.equal((h.ingressConnection({} as IngressContext) as IngressDecision).kind, 'block');
  assert.equal(h.ingressConnectionClose, null);
  assert.equal(h.egressConnection, null);
});

test('unknown groups, unknown methods and non-objects are refused with a message naming them', () => {
  assert.throws(() => resolveHooks({ ingres: {} } as never), /hooks\.ingres is not a hook group/);
  assert.throws(
    () => resolveHooks({ ingress: { handleConnect: () => IngressDecision.allow() } } as never),
    /hooks\.ingress\.handleConnect is not a IngressHook method \(known: handleConnection, handleConnectionClose\)/,
  );
  assert.throws(() => resolveHooks({ egress: 5 } as never), /hooks\.egress must be an object/);
  assert.throws(() => resolveHooks(null as never), /start\(\) must return an object/);
});

test('recording reports each call with the context id, and nothing is wrapped without it', () => {
  const fn = () => IngressDecision.allow();
  const plain = resolveHooks({ ingress: { handleConnection: fn } });
  assert.equal(plain.ingressConnection?.name, 'bound fn');
  const calls: HookCall[] = [];
  const recorded = resolveHooks({ ingress: { handleConnection: fn } }, { record: (c) => calls.push(c) });
  recorded.ingressConnection?.({ id: 'c-1' } as IngressContext);
  assert.deepEqual(calls, [{ hook: 'IngressHook.handleConnection', contextId: 'c-1' }]);
});
