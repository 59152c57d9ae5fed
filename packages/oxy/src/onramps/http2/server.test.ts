import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defaultSettings } from 'foundations/settings';
import { isOxyError } from '../../errors.ts';
import { http2ServerOptions } from './server.ts';
import { Http2Settings } from './settings.ts';

const defaults = defaultSettings(Http2Settings);

test('the default settings map to HTTP/2 SETTINGS with extended CONNECT on and push off', () => {
  const o = http2ServerOptions(defaults, 'endpoints.main.http2');
  assert.deepEqual(o.settings, {
    enablePush: false,
    enableConnectProtocol: true,
    maxConcurrentStreams: 1000,
    initialWindowSize: 1024 * 1024,
    maxFrameSize: 64 * 1024,
    maxHeaderListSize: 64 * 1024,
  });
  assert.equal(o.maxSessionMemory, 64);
});

test('values HTTP/2 cannot carry are start-up errors naming the key', () => {
  const cases: [Partial<Http2Settings>, RegExp][] = [
    [{ max_frame_size: 1024 }, /^endpoints\.main\.http2\.max_frame_size: must be between 16384 and 16777215/],
    [{ max_frame_size: 2 ** 24 }, /^endpoints\.main\.http2\.max_frame_size/],
    [{ stream_window_size: 2 ** 31 }, /^endpoints\.main\.http2\.stream_window_size/],
    [{ connection_window_size: 1000 }, /^endpoints\.main\.http2\.connection_window_size/],
    [{ max_header_list_size: 10 }, /^endpoints\.main\.http2\.max_header_list_size/],
  ];
  for (const [over, message] of cases) {
    assert.throws(
      () => http2ServerOptions({ ...defaults, ...over }, 'endpoints.main.http2'),
      (e: unknown) => isOxyError(e) && message.test(e.message),
      JSON.stringify(over),
    );
  }
});
