/**
 * The example server's settings: telemetry, and endpoints with their routes. The defaults are
 * the seed's: one endpoint, "Example endpoint", on a free loopback port, answering /hello with
 * 200 "World" and /foo with 403 "bar". `config.yaml` is this schema, generated.
 */
import { type Infer, s } from 'foundations/settings';
import { TelemetrySettings } from 'foundations/telemetry';

/** What a route answers. */
export const ResponseSettings = s.object("A route's response.", {
  status_code: s.int("Status code of the route's response.", 200, { min: 100, max: 599 }),
  response: s.str("Content of the route's response.", ''),
});

/** One HTTP endpoint. */
export const EndpointSettings = s.object('An HTTP endpoint.', {
  addr: s.listenAddr('Address of the endpoint: host:port, or an absolute Unix socket path.', '127.0.0.1:0'),
  routes: s.map("Endpoint's URL path routes.", ResponseSettings, {}),
});

/** The whole config. */
export const HttpServerSettings = s.object('Example HTTP server settings.', {
  telemetry: TelemetrySettings,
  endpoints: s.map('HTTP endpoints configuration.', EndpointSettings, {
    'Example endpoint': {
      routes: {
        '/hello': { status_code: 200, response: 'World' },
        '/foo': { status_code: 403, response: 'bar' },
      },
    },
  }),
});

export type ResponseSettings = Infer<typeof ResponseSettings>;
export type EndpointSettings = Infer<typeof EndpointSettings>;
export type HttpServerSettings = Infer<typeof HttpServerSettings>;
