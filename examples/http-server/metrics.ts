/** The example server's metrics, declared once with their labels (the compiler checks them). */
import { counter, defineMetrics, gauge } from 'foundations/telemetry';

type Endpoint = { endpoint_name: string };

/** Metrics of the `http_server` group (exported as `<service>_http_server_<name>`). */
export const metrics = defineMetrics('http_server', {
  /** Number of active client connections. */
  active_connections: gauge<Endpoint>('Number of active client connections.'),
  /** Number of failed client connections. */
  failed_connections_total: counter<Endpoint>('Number of failed client connections.'),
  /** Number of HTTP requests. */
  requests_total: counter<Endpoint>('Number of HTTP requests.'),
  /** Number of failed requests. */
  requests_failed_total: counter<Endpoint & { status_code: number }>('Number of failed requests.'),
});
