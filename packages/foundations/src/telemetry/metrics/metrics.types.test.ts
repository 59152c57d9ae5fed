/**
 * Type tests: a wrong label name or value type, a missing label, or labels on a metric that
 * has none must not compile. `npx tsc --noEmit -p .` fails if any `@ts-expect-error` below is
 * not needed. The calls sit in a function that never runs; the runtime test only proves the
 * file loads.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { counter, defineMetrics, gauge, histogram } from './define.ts';

const m = defineMetrics('typecheck', {
  requests_total: counter<{ endpoint: string; status_code: number }>('Requests.'),
  open_connections: gauge('Open connections.'),
  latency_seconds: histogram<{ endpoint: string }>('Latency.', { buckets: [0.1, 1] }),
});

export function neverRun(): void {
  m.requests_total({ endpoint: 'main', status_code: 200 }).inc();
  m.open_connections().set(3);
  m.latency_seconds({ endpoint: 'main' }).observe(0.2);

  // @ts-expect-error: wrong label name
  m.requests_total({ endpoitn: 'main', status_code: 200 });
  // @ts-expect-error: wrong label value type
  m.requests_total({ endpoint: 'main', status_code: '200' });
  // @ts-expect-error: missing label
  m.requests_total({ endpoint: 'main' });
  // @ts-expect-error: extra label
  m.latency_seconds({ endpoint: 'main', extra: 1 });
  // @ts-expect-error: labels missing altogether
  m.requests_total();
  // @ts-expect-error: a metric without labels takes none
  m.open_connections({ endpoint: 'main' });
  // @ts-expect-error: a counter has no set()
  m.requests_total({ endpoint: 'main', status_code: 200 }).set(1);
  // @ts-expect-error: a histogram has no inc()
  m.latency_seconds({ endpoint: 'main' }).inc();
  // @ts-expect-error: undeclared metric
  m.nope();
  // @ts-expect-error: label values are strings, numbers or booleans
  counter<{ endpoint: string[] }>('Bad label type.');
}

it('type tests compile (checked by tsc)', () => {
  assert.equal(typeof neverRun, 'function');
});
