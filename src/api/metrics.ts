/**
 * `/metrics` in Prometheus' text exposition format (version 0.0.4), rendered from the merged
 * stats: counters per row and failure reason, latency histograms in seconds, devices,
 * workers and the generator's own health.
 */
import type { Stats } from "../metrics/stats.ts";
import type { Latency } from "../metrics/histogram.ts";

/** Histogram bucket bounds, seconds. */
export const BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] as const;
const BUCKETS_MS = BUCKETS_S.map((s) => s * 1000);

export interface MetricsInput {
  stats: Stats | null;
  running: boolean;
  target: number;
  connected: number;
  workers: number;
  machines: number;
  /** What the run's consumer (--subscribers, or --verify's) was delivered so far. */
  subscribers?: { messages: number; bytes: number; latency: Latency } | null;
}

const label = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

function histogram(out: string[], name: string, labels: string, l: Latency): void {
  const { counts, sumMs } = l.cumulative(BUCKETS_MS);
  const sep = labels ? `${labels},` : "";
  BUCKETS_S.forEach((b, i) => out.push(`${name}_bucket{${sep}le="${b}"} ${counts[i]}`));
  out.push(`${name}_bucket{${sep}le="+Inf"} ${l.count}`);
  out.push(`${name}_sum${labels ? `{${labels}}` : ""} ${sumMs / 1000}`);
  out.push(`${name}_count${labels ? `{${labels}}` : ""} ${l.count}`);
}

export function renderMetrics(m: MetricsInput): string {
  const out: string[] = [];
  const head = (name: string, type: string, help: string) => out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  head("cicada_run_active", "gauge", "1 while a run is going.");
  out.push(`cicada_run_active ${m.running ? 1 : 0}`);
  head("cicada_devices_target", "gauge", "Devices the run asks for.");
  out.push(`cicada_devices_target ${m.target}`);
  head("cicada_devices_connected", "gauge", "Devices connected now.");
  out.push(`cicada_devices_connected ${m.connected}`);
  head("cicada_workers", "gauge", "Worker processes running devices.");
  out.push(`cicada_workers ${m.workers}`);
  head("cicada_machines", "gauge", "Machines of a federated run.");
  out.push(`cicada_machines ${m.machines}`);
  const s = m.stats;
  head("cicada_requests_total", "counter", "Successful operations per stats row (connect, subscribe, publish, recv_message, disconnect, renew, revoke, and a scenario's own rows).");
  // The built-in rows, then a scenario's own (d.measure, d.fail) and scenario_error.
  const rows = s ? s.allRows() : [];
  for (const [r, row] of rows) out.push(`cicada_requests_total{row="${r}"} ${row.count}`);
  head("cicada_failures_total", "counter", "Failed operations per stats row and reason.");
  for (const [r, row] of rows) for (const [why, n] of row.reasons) out.push(`cicada_failures_total{row="${r}",reason="${label(why)}"} ${n}`);
  head("cicada_latency_seconds", "histogram", "Latency per stats row (publish: from the scheduled send to the PUBACK).");
  for (const [r, row] of rows) histogram(out, "cicada_latency_seconds", `row="${r}"`, row.latency);
  head("cicada_published_total", "counter", "Messages the devices sent (QoS 0 and unacknowledged ones included).");
  out.push(`cicada_published_total ${s?.sent ?? 0}`);
  head("cicada_published_bytes_total", "counter", "Bytes of those publishes, whole MQTT packets as written.");
  out.push(`cicada_published_bytes_total ${s?.sentBytes ?? 0}`);
  const sub = m.subscribers;
  if (sub) {
    head("cicada_delivered_total", "counter", "Messages the consumer was delivered: the subscribers (--subscribers), or the verifying consumer (--verify).");
    out.push(`cicada_delivered_total ${sub.messages}`);
    head("cicada_delivered_bytes_total", "counter", "Payload bytes the consumer was delivered.");
    out.push(`cicada_delivered_bytes_total ${sub.bytes}`);
    head("cicada_delivery_latency_seconds", "histogram", "Publish → delivery latency at the consumer, from each payload's timestamp.");
    histogram(out, "cicada_delivery_latency_seconds", "", sub.latency);
  }
  head("cicada_event_loop_lag_seconds", "histogram", "How late the scheduler's 10 ms tick ran: the generator's own delay.");
  if (s) histogram(out, "cicada_event_loop_lag_seconds", "", s.loopLag);
  head("cicada_late_sends_total", "counter", "Publishes that left more than 100 ms after their scheduled time.");
  out.push(`cicada_late_sends_total ${s?.health.late_sends ?? 0}`);
  head("cicada_backpressure_skips_total", "counter", "Publishes skipped because a socket's send buffer was full.");
  out.push(`cicada_backpressure_skips_total ${s?.health.backpressure_skips ?? 0}`);
  head("cicada_protocol_errors_total", "counter", "Inbound bytes that were not MQTT.");
  out.push(`cicada_protocol_errors_total ${s?.health.protocol_errors ?? 0}`);
  return `${out.join("\n")}\n`;
}
