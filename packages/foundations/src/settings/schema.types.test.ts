/**
 * Type tests of the settings helpers, checked by `tsc` (`npm run check`): each builder's output
 * type is exactly what a program receives after parsing, so a wrong type is a compile error.
 * `npx tsc --noEmit -p .` fails if any `@ts-expect-error` below is not an error.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ListenAddr, SocketAddr } from './net.ts';
import { type Infer, s } from './schema.ts';

/** True only when `A` and `B` are the same type (not merely assignable). */
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const same = <A, B>(_proof: Same<A, B>) => undefined;

const schema = s.object('All builders.', {
  str: s.str('A string.', 'a'),
  int: s.int('An integer.', 1),
  num: s.num('A number.', 1.5),
  bool: s.bool('A flag.', true),
  path: s.path('A path.', '/tmp'),
  one: s.oneOf('One of.', ['a', 'b'] as const, 'a'),
  opt: s.optional('Optional.', s.str('Inner.', 'x')),
  sock: s.socketAddr('Socket address.', '127.0.0.1:1'),
  listen: s.listenAddr('Listen address.', '127.0.0.1:1'),
  dur: s.duration('Duration.', '1s'),
  size: s.size('Size.', '1KiB'),
  cidrs: s.cidrList('CIDRs.', ['10.0.0.0/8']),
  list: s.list('List.', s.duration('Item.', '1s'), ['2s']),
  map: s.map('Map.', s.object('Entry.', { port: s.int('Port.', 1) }), {}),
  sec: s.enabled('Section.', false, { n: s.int('N.', 0) }),
});
type Value = Infer<typeof schema>;

test('every builder parses to the type its output claims', () => {
  same<Value['str'], string>(true);
  same<Value['int'], number>(true);
  same<Value['num'], number>(true);
  same<Value['bool'], boolean>(true);
  same<Value['path'], string>(true);
  same<Value['one'], 'a' | 'b'>(true);
  same<Value['opt'], string | null>(true);
  same<Value['sock'], SocketAddr>(true);
  same<Value['listen'], ListenAddr>(true);
  same<Value['dur'], number>(true);
  same<Value['size'], number>(true);
  same<Value['cidrs'], string[]>(true);
  same<Value['list'], number[]>(true);
  same<Value['map'], Record<string, { port: number }>>(true);
  same<Value['sec'], { enabled: boolean; n: number }>(true);
  // @ts-expect-error: a CIDR list holds strings only, never a parse failure
  same<Value['cidrs'], (string | { error: string })[]>(true);
  // @ts-expect-error: a duration is milliseconds, not the text written
  same<Value['dur'], string>(true);
  assert.ok(schema);
});
