/** Hook resolution: class instances and plain objects, unknown names refused, absent methods null, recording. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EgressContext, IngressContext } from '../context/contexts.ts';
import { EgressDecision } from './egress.ts';
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

test('recording reports each call with the context id, and events are not wrapped without it', () => {
  const fn = () => IngressDecision.allow();
  const close = () => {};
  const plain = resolveHooks({ ingress: { handleConnection: fn, handleConnectionClose: close } });
  assert.equal(plain.ingressConnectionClose?.name, 'bound close');
  assert.equal(plain.ingressConnection?.name, 'checked IngressHook.handleConnection');
  const calls: HookCall[] = [];
  const recorded = resolveHooks({ ingress: { handleConnection: fn } }, { record: (c) => calls.push(c) });
  recorded.ingressConnection?.({ id: 'c-1' } as IngressContext);
  assert.deepEqual(calls, [{ hook: 'IngressHook.handleConnection', contextId: 'c-1' }]);
});

test('a decision of an unknown kind throws OXY_ERR_INVALID_DECISION, sync or async; a known one passes', async () => {
  const ctx = { id: 'c-1' } as IngressContext;
  const bad = resolveHooks({ ingress: { handleConnection: () => ({ kind: 'maybe' }) as never } });
  assert.throws(() => bad.ingressConnection?.(ctx), {
    code: 'OXY_ERR_INVALID_DECISION',
    message: /returned \{ kind: "maybe" \}, not an IngressDecision/,
  });
  const late = resolveHooks({ ingress: { handleConnection: async () => undefined as never } });
  await assert.rejects(async () => late.ingressConnection?.(ctx), { code: 'OXY_ERR_INVALID_DECISION' });
  const good = resolveHooks({ ingress: { handleConnection: () => IngressDecision.block('no') } });
  assert.deepEqual(good.ingressConnection?.(ctx), { kind: 'block', reason: 'no' });
});

test('handleUpstreamIps may block with a reason; a non-address in its list is refused', async () => {
  const eg = { id: 'e-1' } as EgressContext;
  const h = resolveHooks({
    egress: {
      handleUpstreamIps: (ips) => (ips.length > 1 ? EgressDecision.block('too many') : ips),
    },
  });
  assert.throws(() => h.upstreamIps?.(['192.0.2.1', '192.0.2.2'], eg), {
    code: 'OXY_ERR_EGRESS_BLOCKED',
    message: 'too many',
  });
  assert.deepEqual(h.upstreamIps?.(['192.0.2.1'], eg), ['192.0.2.1']);
  const bad = resolveHooks({ egress: { handleUpstreamIps: () => ['example.com'] } });
  assert.throws(() => bad.upstreamIps?.([], eg), { code: 'OXY_ERR_INVALID_DECISION' });
});

test('EgressDecision.packets is a valid egress decision, with or without an IP address; a name or a bad addr is refused', () => {
  const target = { host: '198.18.0.80', port: 80 };
  const eg = { id: 'e-1' } as EgressContext;
  const decide = (d: unknown) => resolveHooks({ egress: { handleConnection: () => d as EgressDecision } });
  assert.deepEqual(EgressDecision.packets(), { kind: 'packets' });
  assert.deepEqual(decide(EgressDecision.packets()).egressConnection?.(target, eg), { kind: 'packets' });
  const to = EgressDecision.packets({ addr: { host: '2001:db8::1', port: 53 } });
  assert.deepEqual(decide(to).egressConnection?.(target, eg), to);
  for (const bad of [
    EgressDecision.packets({ addr: { host: 'example.com', port: 80 } }),
    { kind: 'packets', options: { addr: { host: '192.0.2.1', port: 70000 } } },
    { kind: 'packets', options: 'no' },
  ]) {
    assert.throws(() => decide(bad).egressConnection?.(target, eg), {
      code: 'OXY_ERR_INVALID_DECISION',
      message: /packets with an optional IP address/,
    });
  }
});

test('EgressDecision.direct with v2 TLVs the wire cannot carry is refused with the decision, not later by the encoder', () => {
  const target = { host: '192.0.2.1', port: 443 };
  const eg = { id: 'e-1' } as EgressContext;
  const decide = (d: unknown) => resolveHooks({ egress: { handleConnection: () => d as EgressDecision } });
  const withTlvs = (tlvs: unknown[]) => ({
    kind: 'direct',
    addr: target,
    options: { proxyProtocol: { version: 2, tlvs } },
  });
  // The largest that fits: 65535 bytes of header body, less TCP6's 36 of addresses and 3 of TLV head.
  const biggest = withTlvs([{ type: 'noop', value: new Uint8Array(65535 - 36 - 3) }]);
  assert.deepEqual(decide(biggest).egressConnection?.(target, eg), biggest);
  for (const tlv of [
    { type: 'bogus', value: 'x' },
    null,
    { type: 'unique_id', value: new Uint8Array(129) },
    { type: 'authority', value: 'x'.repeat(70000) },
    { type: 'noop', value: new Uint8Array(65535 - 36 - 3 + 1) },
    { type: 'ssl', client: 1, verify: 0 },
    { type: 'netns', value: 'é' },
    { type: 'unknown', code: 256, value: new Uint8Array(1) },
  ]) {
    assert.throws(
      () => decide(withTlvs([tlv])).egressConnection?.(target, eg),
      { code: 'OXY_ERR_INVALID_DECISION', message: /tlvs the wire can carry/ },
      JSON.stringify(tlv)?.slice(0, 60),
    );
  }
});

test('EgressDecision.direct with a PROXY header: v1 without TLVs, v2 with them; v1 with TLVs or a CRC is refused, not sent without them', () => {
  const target = { host: '192.0.2.1', port: 443 };
  const eg = { id: 'e-1' } as EgressContext;
  const decide = (d: unknown) => resolveHooks({ egress: { handleConnection: () => d as EgressDecision } });
  for (const good of [
    EgressDecision.direct(target, { proxyProtocol: { version: 1 } }),
    EgressDecision.direct(target, {
      proxyProtocol: { version: 2, crc32c: true, tlvs: [{ type: 'authority', value: 'a' }] },
    }),
    EgressDecision.direct(target, {}),
  ])
    assert.deepEqual(decide(good).egressConnection?.(target, eg), good);
  for (const bad of [
    {
      kind: 'direct',
      addr: target,
      options: { proxyProtocol: { version: 1, tlvs: [{ type: 'noop', value: new Uint8Array(1) }] } },
    },
    { kind: 'direct', addr: target, options: { proxyProtocol: { version: 1, crc32c: true } } },
    { kind: 'direct', addr: target, options: { proxyProtocol: { version: 3 } } },
    { kind: 'direct', addr: target, options: { proxyProtocol: { version: 2, tlvs: 'alpn' } } },
  ]) {
    assert.throws(() => decide(bad).egressConnection?.(target, eg), {
      code: 'OXY_ERR_INVALID_DECISION',
      message: /optional proxyProtocol/,
    });
  }
});
