/**
 * The fast-path plan: every public hook method, registered alone, turns off exactly the fast
 * paths it must. A hook method added without an expectation here fails the test, and one added
 * to `ResolvedHooks` without an entry in `DISABLES` does not compile.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type FastPath, planFastPaths } from './fast-paths.ts';
import { HOOK_METHODS, type Hooks, type ResolvedHooks, resolveHooks } from './hooks/run.ts';

/** What each public method must turn off, by `group.method`. */
const EXPECTED: Readonly<Record<string, readonly FastPath[]>> = {
  'lifecycle.stateForRestart': [],
  'lifecycle.handleShutdown': [],
  'ingress.handleConnection': ['reactorAccept'],
  'ingress.handleConnectionClose': ['reactorAccept'],
  'proxyProtocol.handleConnection': [],
  'tls.selectCertificate': [],
  'tls.handleClientIdentity': [],
  'httpRequest.handleProxyConnectRequest': [],
  'httpRequest.handleProxyConnectResponse': ['wholeTunnel', 'reactorAccept'],
  'httpRequest.handleRequest': ['leanForward', 'nativeForward'],
  'httpRequest.handleResponse': ['leanForward', 'nativeForward'],
  'httpRequest.handleRequestEnd': [],
  'httpBody.getRequestBodyFilter': ['leanForward', 'nativeForward'],
  'httpBody.getResponseBodyFilter': ['leanForward'],
  'tunnel.handleTunnelStart': ['wholeTunnel', 'reactorAccept', 'lateTunnelConnect'],
  'tunnel.getAppTunnelPipeline': ['wholeTunnel', 'reactorAccept'],
  'datagram.handleDatagram': ['rawDatagrams'],
  'egress.handleConnection': ['sharedPool', 'defaultEgress', 'lateTunnelConnect'],
  'egress.handleConnectionEstablished': ['wholeTunnel', 'reactorAccept', 'sharedPool', 'lateTunnelConnect'],
  'egress.handleUpstreamIps': ['sharedPool', 'literalEgress'],
  'egress.dnsResolveOverride': ['sharedPool'],
  'egress.tcpConnectOverride': ['wholeTunnel', 'reactorAccept', 'sharedPool', 'lateTunnelConnect'],
  'egress.selectUpstream': [
    'wholeTunnel',
    'reactorAccept',
    'sharedPool',
    'literalEgress',
    'lateTunnelConnect',
  ],
  'egress.udpConnectOverride': [],
  'ipTunnel.handleTunnel': [],
  'ipFlow.handleFlow': [],
  'ipFlow.handlePacket': [],
  'ipFlow.handleFlowEnd': [],
};

/** Every fast path, as the plan names them. */
const ALL = Object.keys(
  planFastPaths({ hooks: resolveHooks({}), egressExt: false, defaultProxy: false }),
) as FastPath[];

function disabledBy(
  hooks: ResolvedHooks,
  extra: { egressExt?: boolean; defaultProxy?: boolean; interception?: boolean } = {},
): FastPath[] {
  const plan = planFastPaths({
    hooks,
    egressExt: extra.egressExt ?? false,
    defaultProxy: extra.defaultProxy ?? false,
    interception: extra.interception ?? false,
  });
  return ALL.filter((p) => !plan[p]);
}

test('an app without hooks takes every fast path', () => {
  assert.deepEqual(disabledBy(resolveHooks({})), []);
});

test('every hook method turns off exactly the fast paths it must', () => {
  const seen = new Set<string>();
  for (const [group, methods] of Object.entries(HOOK_METHODS)) {
    for (const method of methods) {
      const name = `${group}.${method}`;
      seen.add(name);
      const expected = EXPECTED[name];
      assert.ok(expected !== undefined, `no fast-path expectation for ${name}: say what it turns off`);
      const hooks = resolveHooks({ [group]: { [method]: () => undefined } } as Hooks);
      assert.equal(
        Object.values(hooks).filter((f) => f !== null).length,
        1,
        `${name} resolves to exactly one method`,
      );
      assert.deepEqual(disabledBy(hooks), [...expected].sort(byOrder), name);
    }
  }
  assert.deepEqual([...seen].sort(), Object.keys(EXPECTED).sort(), 'EXPECTED names only real methods');
});

test('egress ext, a default upstream proxy and interception turn off what they must', () => {
  assert.deepEqual(disabledBy(resolveHooks({}), { egressExt: true }), ['sharedPool', 'lateTunnelConnect']);
  assert.deepEqual(disabledBy(resolveHooks({}), { defaultProxy: true }), [
    'wholeTunnel',
    'reactorAccept',
    'lateTunnelConnect',
  ]);
  // Every CONNECT tunnel's first bytes are read in JS to decide.
  assert.deepEqual(disabledBy(resolveHooks({}), { interception: true }), ['wholeTunnel', 'reactorAccept']);
});

test('a response body limit turns off the lean path and the native engine (neither counts bodies)', () => {
  const plan = planFastPaths({
    hooks: resolveHooks({}),
    egressExt: false,
    defaultProxy: false,
    responseBodyLimit: true,
  });
  assert.deepEqual(
    ALL.filter((p) => !plan[p]),
    ['leanForward', 'nativeForward'],
  );
});

function byOrder(a: FastPath, b: FastPath): number {
  return ALL.indexOf(a) - ALL.indexOf(b);
}
