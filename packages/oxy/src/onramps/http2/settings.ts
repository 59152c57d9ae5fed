/**
 * Settings of HTTP/2 on an HTTP endpoint. The core includes `Http2Settings` as the `http2` key
 * of each endpoint (`endpoints.<name>.http2`). The defaults favour throughput of many tunnels on
 * one connection (large flow-control windows) while bounding what one client can make us hold.
 */
import { type Infer, s } from 'foundations/settings';

/** Schema of `endpoints.<name>.http2`. */
export const Http2Settings = s.enabled(
  'HTTP/2 on this endpoint: cleartext with prior knowledge (the client starts with the HTTP/2 ' +
    'preface) and, when TLS is on, through ALPN `h2`. HTTP/1.1 is served on the same port either way.',
  true,
  {
    max_concurrent_streams: s.int(
      'Most streams (requests and CONNECT tunnels) one client may have open at once.',
      1000,
      { min: 1, max: 2 ** 31 - 1 },
    ),
    stream_window_size: s.size(
      'Flow-control window of each stream: bytes a client may send on a stream before we read them.',
      '1MiB',
    ),
    connection_window_size: s.size(
      'Flow-control window of the whole connection, shared by its streams.',
      '32MiB',
    ),
    max_frame_size: s.size('Largest DATA frame payload a client may send (16KiB to 16MiB - 1).', '64KiB'),
    max_header_list_size: s.size('Largest header block (decoded) a client may send.', '64KiB'),
    max_session_memory: s.size(
      'Memory one connection may use for HTTP/2 state before new streams are refused.',
      '64MiB',
    ),
    strict_fields: s.bool(
      'Refuse a request whose fields are malformed (RFC 9113 §8.2.1: CR, LF or NUL in a value, ' +
        'whitespace around it, a name that is not lowercase token characters) with RST_STREAM ' +
        'PROTOCOL_ERROR. Node drops such a field silently otherwise; the guard reads the connection ' +
        'in JavaScript, which costs throughput (docs/limits.md).',
      true,
    ),
    idle_timeout: s.duration('A connection with no open stream for this long is closed with GOAWAY.', '5m'),
  },
);

/** Parsed `endpoints.<name>.http2` settings. */
export type Http2Settings = Infer<typeof Http2Settings>;
