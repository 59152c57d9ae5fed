import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { OXY_ERR, OxyError } from '../../errors.ts';
import { formatProxyStatus, parseCapsuleProtocol, parseProxyStatus } from './proxy-status.ts';
import {
  checkMasqueRequest,
  type MasqueEndpointTemplates,
  type MasqueRequestHead,
  masqueProtocolOf,
  masqueSuccess,
  refusalForError,
} from './request.ts';
import { DEFAULT_TEMPLATES, parseUriTemplate } from './template.ts';

const endpoint = {
  udp: parseUriTemplate(DEFAULT_TEMPLATES['connect-udp'], 'connect-udp'),
  ip: parseUriTemplate(DEFAULT_TEMPLATES['connect-ip'], 'connect-ip'),
};

const h2 = (over: Partial<MasqueRequestHead> = {}): MasqueRequestHead => ({
  httpVersion: '2',
  method: 'CONNECT',
  protocol: 'connect-udp',
  scheme: 'https',
  authority: 'proxy.example',
  path: '/.well-known/masque/udp/192.0.2.6/443/',
  headers: { 'capsule-protocol': '?1' },
  ...over,
});

const h1 = (
  over: Partial<MasqueRequestHead> = {},
  headers: MasqueRequestHead['headers'] = {},
): MasqueRequestHead => ({
  httpVersion: '1.1',
  method: 'GET',
  path: '/.well-known/masque/udp/192.0.2.6/443/',
  headers: {
    host: 'proxy.example',
    connection: 'Upgrade',
    upgrade: 'connect-udp',
    'capsule-protocol': '?1',
    ...headers,
  },
  ...over,
});

function refused(
  head: MasqueRequestHead,
  status: number,
  details: RegExp,
  ep: MasqueEndpointTemplates = endpoint,
) {
  const r = checkMasqueRequest(head, ep);
  assert.equal(r.ok, false, JSON.stringify(head));
  if (r.ok) return;
  assert.equal(r.refusal.status, status);
  assert.match(r.refusal.details, details);
  assert.equal(r.refusal.error, 'http_request_error');
  const [entry] = parseProxyStatus(r.refusal.proxyStatus);
  assert.equal(entry?.proxy, 'oxy');
  assert.equal(entry?.error, 'http_request_error');
  assert.equal(entry?.details, r.refusal.details);
}

describe('MASQUE request checks (RFC 9298 §3, RFC 9484 §4)', () => {
  it('accepts the RFC 9298 HTTP/2 and HTTP/1.1 examples', () => {
    const want = {
      ok: true,
      request: {
        kind: 'connect-udp',
        target: { host: '192.0.2.6', kind: 'ipv4' },
        port: 443,
        capsuleProtocol: true,
      },
    };
    assert.deepEqual(checkMasqueRequest(h2(), endpoint), want);
    assert.deepEqual(checkMasqueRequest(h1(), endpoint), want);
    // The absolute form of Figure 3, and Capsule-Protocol left out (not required).
    const abs = h1(
      { path: 'https://example.org/.well-known/masque/udp/192.0.2.6/443/' },
      { 'capsule-protocol': undefined },
    );
    const r = checkMasqueRequest(abs, endpoint);
    assert.ok(r.ok && r.request.kind === 'connect-udp' && r.request.capsuleProtocol === false);
  });

  it('accepts the RFC 9484 full-tunnel and scoped requests', () => {
    const r = checkMasqueRequest(
      h2({ protocol: 'connect-ip', path: '/.well-known/masque/ip/*/*/' }),
      endpoint,
    );
    assert.deepEqual(r, {
      ok: true,
      request: { kind: 'connect-ip', target: { kind: 'any' }, ipproto: '*', capsuleProtocol: true },
    });
    const scoped = checkMasqueRequest(
      h1({ path: '/.well-known/masque/ip/192.0.2.0%2F24/17/' }, { upgrade: 'connect-ip' }),
      endpoint,
    );
    assert.deepEqual(scoped.ok && scoped.request, {
      kind: 'connect-ip',
      target: { kind: 'prefix', version: 4, address: '192.0.2.0', prefixLength: 24 },
      ipproto: 17,
      capsuleProtocol: true,
    });
  });

  it('answers 400 for HTTP/1.1 requests missing what §3.2 requires', () => {
    refused(h1({ method: 'POST' }), 400, /needs method GET/);
    refused(h1({}, { host: undefined }), 400, /Host/);
    refused(h1({}, { host: ['a', 'b'] }), 400, /single Host/);
    refused(h1({}, { connection: 'keep-alive' }), 400, /Connection/);
    refused(h1({}, { upgrade: 'websocket' }), 400, /not a connect-udp or connect-ip/);
    refused(h1({}, { 'transfer-encoding': 'chunked' }), 400, /must not carry transfer-encoding/);
    refused(h1({}, { 'content-length': '0' }), 400, /content-length/);
  });

  it('answers 400 for HTTP/2 requests missing what §3.4 requires', () => {
    refused(h2({ method: 'GET' }), 400, /needs method CONNECT/);
    refused(h2({ authority: '' }), 400, /:authority/);
    refused(h2({ scheme: undefined }), 400, /:scheme/);
    refused(h2({ path: '' }), 400, /:path/);
    refused(h2({ protocol: 'websocket' }), 400, /not a connect-udp/);
    refused(h2({ headers: { 'content-type': 'text/plain' } }), 400, /content-type/);
  });

  it('answers 400 for a malformed template match or invalid variables', () => {
    refused(
      h2({ path: '/.well-known/masque/udp/192.0.2.6/' }),
      400,
      /does not match the connect-udp template/,
    );
    refused(h2({ path: '/.well-known/masque/udp/192.0.2.6/0/' }), 400, /target_port 0 is outside 1-65535/);
    refused(h2({ path: '/.well-known/masque/udp/192.0.2.6/65536/' }), 400, /outside 1-65535/);
    refused(h2({ path: '/.well-known/masque/udp/%5B%3A%3A1%5D/53/' }), 400, /without brackets/);
    refused(h2({ path: '/.well-known/masque/udp/bad_host!/53/' }), 400, /not a DNS name/);
    const ip = (path: string) => h2({ protocol: 'connect-ip', path });
    refused(ip('/.well-known/masque/ip/*/256/'), 400, /ipproto 256/);
    refused(ip('/.well-known/masque/ip/192.0.2.1%2F24/*/'), 400, /bits below the \/24 prefix/);
    refused(ip('/.well-known/masque/ip/*/'), 400, /does not match the connect-ip template/);
  });

  it('answers 501 for a protocol the endpoint does not serve', () => {
    refused(h2({ protocol: 'connect-ip', path: '/.well-known/masque/ip/*/*/' }), 501, /not served/, {
      udp: endpoint.udp,
      ip: undefined,
    });
  });

  it('routes by upgrade token, case-insensitively', () => {
    assert.equal(
      masqueProtocolOf({ httpVersion: '1.1', headers: { upgrade: 'foo, CONNECT-UDP' } }),
      'connect-udp',
    );
    assert.equal(masqueProtocolOf({ httpVersion: '2', protocol: 'connect-ip', headers: {} }), 'connect-ip');
    assert.equal(masqueProtocolOf({ httpVersion: '2', protocol: 'websocket', headers: {} }), undefined);
  });

  it('maps later failures to the RFC 9209 error types and statuses', () => {
    const cases: [OxyError, number, string, string | undefined][] = [
      [
        new OxyError(OXY_ERR.EGRESS_BLOCKED, 'blocked by egress.blocked_cidrs'),
        403,
        'destination_ip_prohibited',
        undefined,
      ],
      [new OxyError(OXY_ERR.DNS_NXDOMAIN, 'no such name'), 502, 'dns_error', 'NXDOMAIN'],
      [new OxyError(OXY_ERR.DNS_TIMEOUT, 'dns timed out'), 504, 'dns_timeout', undefined],
      [new OxyError(OXY_ERR.CONNECT_REFUSED, 'refused'), 502, 'connection_refused', undefined],
      [new OxyError(OXY_ERR.UNREACHABLE, 'no route'), 502, 'destination_ip_unroutable', undefined],
      [new OxyError(OXY_ERR.BLOCKED, 'app said no', { status: 451 }), 451, 'http_request_denied', undefined],
    ];
    for (const [e, status, error, rcode] of cases) {
      const r = refusalForError(e, 'oxy', 'example.com:53');
      assert.equal(r.status, status, e.code);
      assert.equal(r.error, error);
      const [entry] = parseProxyStatus(r.proxyStatus);
      assert.equal(entry?.error, error);
      assert.equal(entry?.details, e.message);
      assert.equal(entry?.params['next-hop'], 'example.com:53');
      assert.equal(entry?.params['rcode'], rcode);
    }
    assert.equal(refusalForError(new Error('boom')).status, 502);
  });

  it('names the success answer for each HTTP version', () => {
    assert.deepEqual(masqueSuccess('connect-udp', '1.1'), {
      status: 101,
      headers: { Connection: 'Upgrade', Upgrade: 'connect-udp', 'Capsule-Protocol': '?1' },
    });
    assert.deepEqual(masqueSuccess('connect-ip', '2'), {
      status: 200,
      headers: { 'capsule-protocol': '?1' },
    });
  });
});

describe('Structured Fields for MASQUE', () => {
  it('reads Capsule-Protocol as an sf-boolean item (RFC 9297 §3.4)', () => {
    assert.equal(parseCapsuleProtocol('?1'), true);
    assert.equal(parseCapsuleProtocol(' ?1 '), true);
    assert.equal(parseCapsuleProtocol('?1;foo=bar'), true, 'unknown parameters are ignored');
    assert.equal(parseCapsuleProtocol(['?1']), true);
    for (const v of [undefined, '?0', '1', 'true', '?1, ?1', '?2', '"?1"', '?1 x'])
      assert.equal(parseCapsuleProtocol(v), false, String(v));
    assert.equal(parseCapsuleProtocol(['?1', '?1']), false, 'repeated: a List, not an Item');
  });

  it('writes and reads Proxy-Status (RFC 9209)', () => {
    const v = formatProxyStatus({
      proxy: 'oxy',
      error: 'dns_error',
      rcode: 'NXDOMAIN',
      details: 'say "hi" \\ é',
    });
    assert.equal(v, 'oxy; error=dns_error; rcode="NXDOMAIN"; details="say \\"hi\\" \\\\ ?"');
    assert.deepEqual(parseProxyStatus(v), [
      {
        proxy: 'oxy',
        params: { error: { token: 'dns_error' }, rcode: 'NXDOMAIN', details: 'say "hi" \\ ?' },
        error: 'dns_error',
        details: 'say "hi" \\ ?',
      },
    ]);
    assert.equal(
      formatProxyStatus({ proxy: 'my proxy', error: 'http_request_error' }),
      '"my proxy"; error=http_request_error',
    );
    const two = parseProxyStatus([
      'ExampleCDN; error=connection_timeout',
      'r34.example.net; received-status=503',
    ]);
    assert.deepEqual(
      two.map((e) => [e.proxy, e.error, e.params['received-status']]),
      [
        ['ExampleCDN', 'connection_timeout', undefined],
        ['r34.example.net', undefined, 503],
      ],
    );
    for (const bad of ['oxy; error=', 'oxy;;', '"unterminated', 'oxy, , x', '(x)'])
      assert.deepEqual(parseProxyStatus(bad), [], bad);
  });
});
