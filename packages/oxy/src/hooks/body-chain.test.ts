/**
 * Body filters chained for `composeApps`: each app's filter gets what the previous one passed
 * on, a stop anywhere stops the body, bytes added at the end go through the later filters; and
 * a composed app really runs both apps' body hooks on a forwarded request.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { composeApps } from '../compose.ts';
import { defineApp } from '../index.ts';
import { startApp } from '../testing/app.ts';
import { proxyRequest } from '../testing/clients.ts';
import { startHttpUpstream } from '../testing/peers.ts';
import { chainFilters } from './body-chain.ts';
import { type BodyFilter, BodyVerdict } from './http-body.ts';

const upper: BodyFilter = { rewrites: true, onChunk: (c) => c.toString().toUpperCase(), onEnd: () => '!' };

test('each filter gets what the previous one passed on; onEnd bytes go through the later ones', async () => {
  const seen: string[] = [];
  const chain = chainFilters([upper, { onChunk: (c) => void seen.push(c.toString()) }]);
  assert.equal(chain.rewrites, true);
  assert.equal(String(await chain.onChunk?.(Buffer.from('ab'))), 'AB');
  assert.equal(String(await chain.onEnd?.({ bytesIn: 2, bytesOut: 2 })), '!');
  assert.deepEqual(seen, ['AB', '!']);
});

test('a stop anywhere stops the body; a held chunk goes no further; abort reaches every filter', async () => {
  const aborted: string[] = [];
  const chain = chainFilters([
    {
      rewrites: true,
      onChunk: (c) => (c.toString() === 'hold' ? null : undefined),
      onAbort: () => void aborted.push('a'),
    },
    {
      onChunk: (c) => (c.includes('bad') ? BodyVerdict.stop(451, 'bad') : undefined),
      onAbort: () => void aborted.push('b'),
    },
  ]);
  assert.equal(await chain.onChunk?.(Buffer.from('hold')), null);
  assert.deepEqual(await chain.onChunk?.(Buffer.from('so bad')), {
    kind: 'stop',
    status: 451,
    reason: 'bad',
  });
  chain.onAbort?.('client_closed');
  assert.deepEqual(aborted, ['a', 'b']);
});

test('a composed app runs the body hooks of both apps, in order', async () => {
  const upstream = await startHttpUpstream({ '/t': { body: 'hello' } });
  const seen: string[] = [];
  const a = defineApp({
    name: 'a',
    version: '1',
    description: 'uppercases',
    start: () => ({ httpBody: { getResponseBodyFilter: () => upper } }),
  });
  const b = defineApp({
    name: 'b',
    version: '1',
    description: 'observes',
    start: () => ({
      httpBody: { getResponseBodyFilter: () => ({ onChunk: (c) => void seen.push(c.toString()) }) },
    }),
  });
  const oxy = await startApp(composeApps(a, b));
  after(async () => {
    await oxy.stop();
    await upstream.close();
  });
  const res = await proxyRequest(oxy.address(), `${upstream.origin}/t`);
  assert.equal(res.text, 'HELLO!');
  assert.deepEqual(seen, ['HELLO', '!']);
});
