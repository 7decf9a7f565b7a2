/**
 * `/metrics` in Prometheus' text exposition format (version 0.0.4), rendered from the merged
 * stats: counters per row and failure reason, latency histograms in seconds, devices,
 * workers and the generator's own health.
 */
import { PHASES, type Health, type Stats } from "../metrics/stats.ts";
import type { RunSession } from "../run/session.ts";
import type { FleetSnapshot } from "../cluster/fleet.ts";
import type { Latency } from "../metrics/histogram.ts";
import type { Integrity } from "../report/summary.ts";
import { hostname } from "node:os";

/** The content type of Prometheus' text exposition format. */
export const METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8";

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
  /** The processes running devices (this one, or each worker), labelled by machine and slot. */
  processes?: ProcessFigures[];
  /** Machines of a federated run that stopped answering. */
  machinesLost?: number;
  /** The verifying consumer's accounting so far (--verify): see Integrity. */
  integrity?: Integrity | null;
}

export interface ProcessFigures {
  machine: string;
  slot: number;
  pid: number;
  connected: number;
  rss: number;
  cpu_us: number;
  fds: number;
  fd_limit: number;
}

/** Health counters exported as they are, with what each means. */
const HEALTH: [keyof Health, string, string][] = [
  ["late_sends", "cicada_late_sends_total", "Publishes that left more than 100 ms after their scheduled time."],
  ["backpressure_skips", "cicada_backpressure_skips_total", "Publishes skipped because a socket's send buffer was full."],
  ["protocol_errors", "cicada_protocol_errors_total", "Inbound bytes that were not MQTT."],
  ["timer_errors", "cicada_timer_errors_total", "Timer callbacks that threw (each cost its device its connection, not the process)."],
  ["command_gaps", "cicada_command_gaps_total", "Numbered commands (--actuate) a device never received."],
  ["no_matching_subscribers", "cicada_no_matching_subscribers_total", "MQTT 5 acks saying no one was subscribed (reason 0x10)."],
  ["sessions_resumed", "cicada_sessions_resumed_total", "Connections whose CONNACK said Session Present."],
  ["ramp_held_ms", "cicada_ramp_held_milliseconds_total", "Time the ramp waited because --max-connecting connects were in flight (summed over processes)."],
];

const label = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

function histogram(out: string[], name: string, labels: string, l: Latency): void {
  const { counts, sumMs } = l.cumulative(BUCKETS_MS);
  const sep = labels ? `${labels},` : "";
  BUCKETS_S.forEach((b, i) => out.push(`${name}_bucket{${sep}le="${b}"} ${counts[i]}`));
  out.push(`${name}_bucket{${sep}le="+Inf"} ${l.count}`);
  out.push(`${name}_sum${labels ? `{${labels}}` : ""} ${sumMs / 1000}`);
  out.push(`${name}_count${labels ? `{${labels}}` : ""} ${l.count}`);
}

/**
 * What /metrics shows of a run (`latest`, the current or last one). A finished run keeps its final
 * counters, so a scrape after the end still sees them; its gauges drop to 0.
 */
export function metricsOf(latest: RunSession | null, running: boolean): MetricsInput {
  const snap = latest?.fleet.snapshot() ?? null;
  return { ...fleetMetrics(snap, running), subscribers: latest?.subscriberCounts() ?? null, integrity: (snap && latest?.integrity(snap)) ?? null };
}

/**
 * A fleet's figures for /metrics: a run's (metricsOf), or one machine's own (`cicada worker
 * --metrics`, with its stats). Processes are labelled with their machine: the machine's id in a
 * federated run, else `machine` (this host's name).
 */
export function fleetMetrics(snap: FleetSnapshot | null, running: boolean, stats: Stats | null = snap?.stats ?? null, machine = hostname()): MetricsInput {
  const alive = running && snap ? snap.workers.filter((w) => w.alive) : [];
  return {
    stats,
    running,
    target: running && snap ? snap.target : 0,
    connected: running && snap ? snap.connected : 0,
    workers: alive.length,
    machines: running && snap ? (snap.machines?.filter((m) => !m.lost && !m.rejected).length ?? 0) : 0,
    machinesLost: running && snap ? (snap.machines?.filter((m) => m.lost).length ?? 0) : 0,
    processes: alive.map((w) => ({ machine: w.machine ?? machine, slot: w.slot, pid: w.pid, connected: w.connected, rss: w.rss, cpu_us: w.cpu_us, fds: w.fds, fd_limit: w.fd_limit })),
  };
}

export function renderMetrics(m: MetricsInput): string {
  const out: string[] = [];
  const head = (name: string, type: string, help: string) => out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  /** A family of one sample, unlabelled. */
  const one = (name: string, type: string, help: string, value: number) => {
    head(name, type, help);
    out.push(`${name} ${value}`);
  };
  one("cicada_run_active", "gauge", "1 while a run is going.", m.running ? 1 : 0);
  one("cicada_devices_target", "gauge", "Devices the run asks for.", m.target);
  one("cicada_devices_connected", "gauge", "Devices connected now.", m.connected);
  one("cicada_workers", "gauge", "Worker processes running devices.", m.workers);
  one("cicada_machines", "gauge", "Machines of a federated run answering now.", m.machines);
  one("cicada_machines_lost", "gauge", "Machines of a federated run that stopped answering (their devices are not counted as connected).", m.machinesLost ?? 0);
  const s = m.stats;
  head("cicada_requests_total", "counter", "Successful operations per stats row (connect, subscribe, publish, recv_message, disconnect, renew, revoke, and a scenario's own rows).");
  // The built-in rows, then a scenario's own (d.measure, d.fail) and scenario_error.
  const rows = s ? s.allRows() : [];
  for (const [r, row] of rows) out.push(`cicada_requests_total{row="${r}"} ${row.count}`);
  head("cicada_failures_total", "counter", "Failed operations per stats row and reason.");
  for (const [r, row] of rows) for (const [why, n] of row.reasons) out.push(`cicada_failures_total{row="${r}",reason="${label(why)}"} ${n}`);
  head("cicada_latency_seconds", "histogram", "Latency per stats row (publish: from the scheduled send to the PUBACK).");
  for (const [r, row] of rows) histogram(out, "cicada_latency_seconds", `row="${r}"`, row.latency);
  one("cicada_published_total", "counter", "Messages the devices sent (QoS 0 and unacknowledged ones included).", s?.sent ?? 0);
  one("cicada_published_bytes_total", "counter", "Bytes of those publishes, whole MQTT packets as written.", s?.sentBytes ?? 0);
  const sub = m.subscribers;
  if (sub) {
    one("cicada_delivered_total", "counter", "Messages the consumer was delivered: the subscribers (--subscribers), or the verifying consumer (--verify).", sub.messages);
    one("cicada_delivered_bytes_total", "counter", "Payload bytes the consumer was delivered.", sub.bytes);
    head("cicada_delivery_latency_seconds", "histogram", "Publish → delivery latency at the consumer, from each payload's timestamp.");
    histogram(out, "cicada_delivery_latency_seconds", "", sub.latency);
  }
  const i = m.integrity;
  if (i) {
    one("cicada_undelivered_messages", "gauge", "Published but not (yet) delivered to the verifying consumer: in transit during the run; after it, the report's lost.", i.lost);
    one("cicada_duplicated_total", "counter", "Messages the verifying consumer got more than once (by each device's seq).", i.duplicated);
    one("cicada_reordered_total", "counter", "Messages the verifying consumer got after a later one of the same device.", i.reordered);
    one("cicada_commands_sent_total", "counter", "Commands the verifying consumer sent to devices (--actuate); received ones are cicada_requests_total{row=\"recv_message\"}.", i.commands_sent);
  }
  head("cicada_event_loop_lag_seconds", "histogram", "How late the scheduler's 10 ms tick ran: the generator's own delay.");
  if (s) histogram(out, "cicada_event_loop_lag_seconds", "", s.loopLag);
  for (const [key, name, help] of HEALTH) one(name, "counter", help, s?.health[key] ?? 0);
  head("cicada_phase_seconds", "histogram", "Each connection phase apart: TCP connect, TLS handshake, WebSocket upgrade, CONNECT → CONNACK, SUBSCRIBE → SUBACK, publish written → PUBACK, and publish → delivery (e2e).");
  if (s) for (const p of PHASES) histogram(out, "cicada_phase_seconds", `phase="${p}"`, s.phases[p]);
  const procs = m.processes ?? [];
  const per = (name: string, type: string, help: string, value: (p: ProcessFigures) => number) => {
    head(name, type, help);
    for (const p of procs) out.push(`${name}{machine="${label(p.machine)}",slot="${p.slot}",pid="${p.pid}"} ${value(p)}`);
  };
  per("cicada_process_devices_connected", "gauge", "Devices connected in each process running devices, by machine and worker slot.", (p) => p.connected);
  per("cicada_process_resident_memory_bytes", "gauge", "Resident memory of each process running devices.", (p) => p.rss);
  per("cicada_process_cpu_seconds_total", "counter", "CPU time (user + system) of each process running devices.", (p) => p.cpu_us / 1e6);
  per("cicada_process_open_fds", "gauge", "Open file descriptors of each process running devices (one per connection; sampled every 10 s).", (p) => p.fds);
  per("cicada_process_max_fds", "gauge", "The open-file limit (soft) of each process running devices: a process holds at most this many connections.", (p) => p.fd_limit);
  return `${out.join("\n")}\n`;
}
