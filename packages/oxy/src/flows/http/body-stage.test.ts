/**
 * The body stage on its own: limits, observing, rewriting, stopping, a failing filter, async
 * filters kept in order, and the whole-body helper with its limit. The engines that move the
 * bytes are covered end to end in `test/body-hooks*.test.ts`.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defineApp } from '../../app.ts';
import { NO_EXT } from '../../context/ext.ts';
import { EndpointState, IngressConnection, RequestState } from '../../context/state.ts';
import { OXY_ERR } from '../../errors.ts';
import { type BodyFilter, BodyVerdict, type HttpBodyHook, wholeBody } from '../../hooks/http-body.ts';
import type { RequestHead, ResponseHead } from '../../hooks/http-request.ts';
import { resolveHooks } from '../../hooks/run.ts';
import { appSettings } from '../../proxy.ts';
import { Runtime } from '../../runtime.ts';
import { type BodyStage, BodyStopped, requestBodyStage, responseBodyStage } from './body-stage.ts';

const app = defineApp({ name: 't', version: '0', description: 'd', start: () => ({}) });

interface Setup {
  readonly rt: Runtime;
  readonly request: RequestState;
}

function setup(body: HttpBodyHook | undefined, limits: { req?: string; res?: string } = {}): Setup {
  const settings = appSettings(app, [
    {
      source: 'test',
      value: {
        telemetry: { server: { enabled: false } },
        endpoints: {
          main: {
            addr: '127.0.0.1:0',
            max_request_body: limits.req ?? '0B',
            max_response_body: limits.res ?? '0B',
          },
        },
      },
    },
  ]);
  const rt = new Runtime(resolveHooks(body === undefined ? {} : { httpBody: body }), NO_EXT, settings);
  const endpoint = new EndpointState('main', settings.endpoints.main as never, NO_EXT);
  const peer = { host: '127.0.0.1', port: 1 };
  const conn = new IngressConnection(endpoint, { peer, local: peer }, 'http/1.1', NO_EXT);
  const request = new RequestState(conn, 'forward', 'POST', { host: 'example.com', port: 80 }, NO_EXT);
  return { rt, request };
}

const head = (headers: RequestHead['headers'] = {}): RequestHead => ({
  method: 'POST',
  scheme: 'http',
  authority: 'example.com',
  path: '/',
  headers,
});
const resHead = (headers: ResponseHead['headers'] = {}, status = 200): ResponseHead => ({ status, headers });

/** Feeds chunks through a stage as an engine would (awaiting each), returning the bytes sent on. */
async function pass(stage: BodyStage, chunks: readonly string[]): Promise<string> {
  let out = '';
  for (const c of chunks) {
    const b = await stage.write(Buffer.from(c));
    if (b !== null) out += b.toString();
  }
  const last = await stage.end();
  if (last !== null) out += last.toString();
  return out;
}

function stopped(status: number, code: string): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof BodyStopped, `expected BodyStopped, got ${String(e)}`);
    assert.equal(e.status, status);
    assert.equal(e.code, code);
    return true;
  };
}

test('nothing watching: no stage at all', () => {
  const { rt, request } = setup(undefined);
  assert.equal(requestBodyStage(rt, head(), request), null);
  assert.equal(responseBodyStage(rt, 'GET', resHead(), request), null);
  const choosy = setup({ getRequestBodyFilter: () => undefined });
  assert.equal(requestBodyStage(choosy.rt, head(), choosy.request), null);
});

test('an observer sees every byte, in order, and the body passes unchanged with its length', async () => {
  const seen: string[] = [];
  let totals = { bytesIn: -1, bytesOut: -1 };
  const { rt, request } = setup({
    getRequestBodyFilter: () => ({
      onChunk: (c) => {
        seen.push(c.toString());
      },
      onEnd: (t) => {
        totals = { ...t };
      },
    }),
  });
  const stage = requestBodyStage(rt, head(), request);
  assert.ok(stage !== null);
  assert.equal(stage.rewrites, false);
  assert.equal(await pass(stage, ['ab', 'cd', 'e']), 'abcde');
  assert.deepEqual(seen, ['ab', 'cd', 'e']);
  assert.deepEqual(totals, { bytesIn: 5, bytesOut: 5 });
});

test('a rewriting filter changes the bytes and says the length may change', async () => {
  const { rt, request } = setup({
    getResponseBodyFilter: () => ({
      rewrites: true,
      onChunk: (c) => c.toString().toUpperCase(),
      onEnd: () => '!',
    }),
  });
  const stage = responseBodyStage(rt, 'GET', resHead({ 'content-length': '4' }), request);
  assert.ok(stage !== null);
  assert.equal(stage.rewrites, true);
  assert.equal(await pass(stage, ['ab', 'cd']), 'ABCD!');
});

test('an observer that returns bytes fails closed (500, OXY_ERR_HOOK_FAILED)', async () => {
  const { rt, request } = setup({ getRequestBodyFilter: () => ({ onChunk: () => 'x' }) });
  const stage = requestBodyStage(rt, head(), request);
  assert.ok(stage !== null);
  assert.throws(() => stage.write(Buffer.from('a')), stopped(500, OXY_ERR.HOOK_FAILED));
  // Nothing more reaches the filter.
  assert.equal(stage.write(Buffer.from('b')), null);
});

test('a stop verdict becomes BodyStopped with the app status and reason', async () => {
  const { rt, request } = setup({
    getRequestBodyFilter: () => ({
      onChunk: (c) => (c.includes('secret') ? BodyVerdict.stop(451, 'no secrets') : undefined),
    }),
  });
  const stage = requestBodyStage(rt, head(), request);
  assert.ok(stage !== null);
  assert.equal((stage.write(Buffer.from('fine')) as Buffer).toString(), 'fine');
  assert.throws(
    () => stage.write(Buffer.from('a secret')),
    (e: unknown) => stopped(451, OXY_ERR.BODY_STOPPED)(e) && (e as BodyStopped).reason === 'no secrets',
  );
});

test('a throwing filter and a throwing chooser fail the request closed with 500', async () => {
  const a = setup({
    getRequestBodyFilter: () => ({
      onChunk: () => {
        throw new Error('boom');
      },
    }),
  });
  const stage = requestBodyStage(a.rt, head(), a.request);
  assert.ok(stage !== null);
  assert.throws(() => stage.write(Buffer.from('x')), stopped(500, OXY_ERR.HOOK_FAILED));
  const b = setup({
    getResponseBodyFilter: () => {
      throw new Error('boom');
    },
  });
  assert.throws(
    () => responseBodyStage(b.rt, 'GET', resHead(), b.request),
    stopped(500, OXY_ERR.HOOK_FAILED),
  );
  const c = setup({ getRequestBodyFilter: (async () => ({})) as never });
  assert.throws(() => requestBodyStage(c.rt, head(), c.request), stopped(500, OXY_ERR.HOOK_FAILED));
});

test('an async filter rejecting fails closed; an async stop rejects with the status', async () => {
  const { rt, request } = setup({
    getRequestBodyFilter: (h) => ({
      onChunk: async (c) => {
        await new Promise((r) => setTimeout(r, 1));
        if (h.path === '/reject') throw new Error('late boom');
        return c.toString() === 'stop' ? BodyVerdict.stop(403, 'stopped') : undefined;
      },
    }),
  });
  const s1 = requestBodyStage(rt, { ...head(), path: '/reject' }, request);
  assert.ok(s1 !== null);
  await assert.rejects(async () => s1.write(Buffer.from('x')), stopped(500, OXY_ERR.HOOK_FAILED));
  const s2 = requestBodyStage(rt, head(), request);
  assert.ok(s2 !== null);
  assert.equal(((await s2.write(Buffer.from('go'))) as Buffer).toString(), 'go');
  await assert.rejects(async () => s2.write(Buffer.from('stop')), stopped(403, OXY_ERR.BODY_STOPPED));
});

test('async filters run one chunk at a time, in order, even when the engine does not wait', async () => {
  let running = 0;
  let most = 0;
  const order: string[] = [];
  const { rt, request } = setup({
    getResponseBodyFilter: () => ({
      rewrites: true,
      onChunk: async (c) => {
        running++;
        most = Math.max(most, running);
        // Later chunks finish sooner: only the stage's ordering keeps them in order.
        await new Promise((r) => setTimeout(r, 10 - order.length * 3));
        order.push(c.toString());
        running--;
        return c;
      },
    }),
  });
  const stage = responseBodyStage(rt, 'GET', resHead(), request);
  assert.ok(stage !== null);
  const outs = await Promise.all(['1', '2', '3'].map((c) => stage.write(Buffer.from(c))));
  assert.deepEqual(
    outs.map((b) => b?.toString()),
    ['1', '2', '3'],
  );
  assert.deepEqual(order, ['1', '2', '3']);
  assert.equal(most, 1);
});

test('limits: a declared length over the limit is refused before anything is sent', () => {
  const { rt, request } = setup(undefined, { req: '10B', res: '10B' });
  assert.throws(
    () => requestBodyStage(rt, head({ 'content-length': '11' }), request),
    stopped(413, OXY_ERR.BODY_TOO_LARGE),
  );
  assert.throws(
    () => responseBodyStage(rt, 'GET', resHead({ 'content-length': '11' }), request),
    stopped(502, OXY_ERR.BODY_TOO_LARGE),
  );
  assert.ok(requestBodyStage(rt, head({ 'content-length': '10' }), request) !== null);
  // No body can follow a HEAD, a 204 or a 304: no stage.
  assert.equal(responseBodyStage(rt, 'HEAD', resHead(), request), null);
  assert.equal(responseBodyStage(rt, 'GET', resHead({}, 304), request), null);
});

test('limits: a streamed body is stopped at the first byte over, and the filter is told', async () => {
  const aborted: string[] = [];
  const { rt, request } = setup(
    { getRequestBodyFilter: () => ({ onAbort: (r) => aborted.push(r) }) },
    { req: '5B' },
  );
  const stage = requestBodyStage(rt, head(), request);
  assert.ok(stage !== null);
  assert.equal((stage.write(Buffer.from('12345')) as Buffer).length, 5);
  assert.throws(() => stage.write(Buffer.from('6')), stopped(413, OXY_ERR.BODY_TOO_LARGE));
  assert.deepEqual(aborted, ['too_large']);
  stage.abort('client_closed');
  assert.deepEqual(aborted, ['too_large'], 'told once');
});

test('abort tells the filter once, and nothing more reaches it', async () => {
  const calls: string[] = [];
  const filter: BodyFilter = {
    onChunk: () => {
      calls.push('chunk');
    },
    onEnd: () => {
      calls.push('end');
    },
    onAbort: (r) => {
      calls.push(`abort:${r}`);
    },
  };
  const { rt, request } = setup({ getRequestBodyFilter: () => filter });
  const stage = requestBodyStage(rt, head(), request);
  assert.ok(stage !== null);
  stage.write(Buffer.from('a'));
  stage.abort('client_closed');
  stage.abort('again');
  assert.equal(stage.write(Buffer.from('b')), null);
  assert.equal(stage.end(), null);
  assert.deepEqual(calls, ['chunk', 'abort:client_closed']);
});

test('wholeBody: the whole body at once, replaced by what onBody returns', async () => {
  let got = '';
  const { rt, request } = setup({
    getRequestBodyFilter: () =>
      wholeBody({
        limit: 100,
        onBody: (b) => {
          got = b.toString();
          return `[${got}]`;
        },
      }),
  });
  const stage = requestBodyStage(rt, head(), request);
  assert.ok(stage !== null);
  assert.equal(stage.rewrites, true);
  // Nothing is sent before the end.
  assert.equal(stage.write(Buffer.from('hello ')), null);
  assert.equal(stage.write(Buffer.from('world')), null);
  assert.equal(((await stage.end()) as Buffer).toString(), '[hello world]');
  assert.equal(got, 'hello world');
});

test('wholeBody: undefined sends the body as it was; over the limit stops it (413 by default)', async () => {
  const a = setup({ getRequestBodyFilter: () => wholeBody({ limit: 8, onBody: () => undefined }) });
  const sa = requestBodyStage(a.rt, head(), a.request);
  assert.ok(sa !== null);
  assert.equal(await pass(sa, ['1234', '5678']), '12345678');
  const b = setup({
    getResponseBodyFilter: () => wholeBody({ limit: 8, overLimitStatus: 502, onBody: () => undefined }),
  });
  const sb = responseBodyStage(b.rt, 'GET', resHead(), b.request);
  assert.ok(sb !== null);
  assert.equal(sb.write(Buffer.from('1234')), null);
  assert.throws(() => sb.write(Buffer.from('56789')), stopped(502, OXY_ERR.BODY_STOPPED));
});
