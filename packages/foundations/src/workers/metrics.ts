/**
 * `/metrics` of a supervisor: every worker's metrics, each sample labelled `worker="<index>"`,
 * plus the supervisor's own (`worker="supervisor"`), as one valid Prometheus exposition (one
 * HELP/TYPE per family). Workers send prom-client's JSON (`metricsAsJson`) over IPC; the
 * supervisor merges the families with prom-client's `AggregatorRegistry.aggregate`. Because
 * the `worker` label makes every series distinct, the "aggregation" is a union: nothing is
 * summed, and a query sums across workers itself (`sum without (worker) (…)`).
 */
import { AggregatorRegistry } from 'prom-client';

interface MetricJson {
  name: string;
  aggregator?: string;
  values?: { labels?: Record<string, string | number> }[];
}

/**
 * Renders `sources` (a `worker` label value and that process's `metricsAsJson()`) as
 * Prometheus text. Entries that are not metric JSON are skipped.
 */
export async function renderWorkerMetrics(
  sources: readonly { readonly worker: string; readonly metrics: unknown }[],
): Promise<string> {
  const labelled: object[][] = [];
  for (const { worker, metrics } of sources) {
    if (!Array.isArray(metrics)) continue;
    const families: object[] = [];
    for (const m of metrics as MetricJson[]) {
      if (typeof m?.name !== 'string' || !Array.isArray(m.values)) continue;
      families.push({
        ...m,
        aggregator: 'sum', // distinct label sets: a union (prom-client's defaults would drop some)
        values: m.values.map((v) => ({ ...v, labels: { ...v.labels, worker } })),
      });
    }
    labelled.push(families);
  }
  return AggregatorRegistry.aggregate(labelled).metrics();
}
