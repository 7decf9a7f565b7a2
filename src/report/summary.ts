// report/ — the end of a run: the terminal table, JSON/CSV/HTML reports, the timeline and thresholds.
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/** The end-of-run report: JSON (for --report and CI) and a Locust-like table for the terminal. */
import { Latency } from "../metrics/histogram.ts";
import { Row, rowReport, SCENARIO_ERROR_ROW, SLOW_HOOK_MS, type RowReport, type Stats } from "../metrics/stats.ts";
import type { TimelinePoint } from "./timeline.ts";

export interface HealthReport {
  late_sends: number;
  backpressure_skips: number;
  protocol_errors: number;
  /** Commands (--actuate) devices never received, from the jumps in each one's command numbers. */
  command_gaps: number;
  /** Timer callbacks that threw (each cost one connection). */
  timer_errors: number;
  /** MQTT 5 acks that said No matching subscribers (0x10). */
  no_matching_subscribers: number;
  /** Reconnects whose CONNACK said Session Present (--clean false). */
  sessions_resumed: number;
  /** Bytes --topic-alias kept off the wire. */
  topic_alias_bytes_saved: number;
  /** Time the ramp waited on --max-connecting (ms, summed over worker processes): the broker set the pace. */
  ramp_held_ms: number;
  loop_lag_p99_ms: number;
  loop_lag_max_ms: number;
  cpu_percent: number;
  rss_bytes: number;
  /** True when the generator kept to its own schedule, so latencies describe the broker. */
  kept_up: boolean;
}

export interface Report {
  config: Record<string, unknown>;
  started: string;
  ended: string;
  duration_s: number;
  interrupted: boolean;
  users: { target: number; active: number; connected: number };
  stats: Record<string, RowReport>;
  phases: Record<string, { count: number; p50_ms: number; p99_ms: number; max_ms: number }>;
  errors: Record<string, Record<string, number>>;
  /**
   * Every publish accounted for: sent = acked + failed + in_flight (at QoS 0 "acked" means
   * sent without error). `skipped` publishes never left (window_full, backpressure); they are
   * failures of the publish row too, but not part of `sent`.
   */
  publishes: { sent: number; acked: number; failed: number; in_flight: number; skipped: number };
  /**
   * Side by side over the run: publishes sent and acknowledged, and (with --subscribers or
   * --verify) delivered. MB = 10^6 bytes: whole packets as sent, payloads as delivered.
   */
  throughput: Throughput;
  /** Readings of the figures (e.g. a broker's Nagle delay on CONNACK); absent when there are none. */
  notes?: string[];
  /**
   * With --reset-stats, once the stats were reset: the devices connected, the seconds from the
   * start, and the ramp's failures by row and reason, which the reset took out of `errors`.
   */
  ramp?: RampReport;
  health: HealthReport;
  /** Worker processes, when the run had more than one. */
  workers?: WorkersReport;
  /** Machines of a federated run (`--redis`). */
  machines?: MachineReport[];
  /** Control messages the controller dropped in a federated run, by reason: forged, replayed, malformed (0 in a healthy run). */
  dropped_messages?: Record<string, number>;
  /** Every message accounted for end to end (--verify): what the devices published and the consumer received. */
  integrity?: Integrity;
  /** What the plain subscribers (--subscribers) were delivered. */
  subscribers?: SubscribersReport;
  /** The run's verdict against its --threshold expressions, when it had any. */
  thresholds?: { passed: boolean; held: string[]; broken: { expr: string; actual: number }[] };
  /** Renewals and revocations, when the run made any. */
  certificates?: CertificatesReport;
  /** The run over time, a point every 2 s. */
  timeline?: TimelinePoint[];
}

/**
 * End to end, from the verifying consumer: `published` = sent by the devices, `acked` by the
 * broker, `delivered` = distinct messages the consumer received; `lost` = published − delivered
 * (an ACL that acks and drops shows here, not as success); `duplicated` and `reordered` by each
 * device's seq. Commands: sent by the backend side, received by devices.
 */
export interface Integrity {
  published: number;
  acked: number;
  delivered: number;
  lost: number;
  duplicated: number;
  reordered: number;
  commands_sent: number;
  commands_received: number;
  commands_lost: number;
  delivery_p50_ms: number;
  delivery_p99_ms: number;
  delivery_max_ms: number;
}

/** The integrity block from what the devices counted (`stats`) and what the verifying consumer(s) counted. */
export function integrityOf(stats: Stats, v: { delivered: number; duplicated: number; reordered: number; commands_sent: number; latency: number[] }): Integrity {
  const lat = new Latency();
  lat.addSparse(v.latency);
  const l = lat.summary();
  const received = stats.rows.recv_message.count;
  return {
    published: stats.sent,
    acked: stats.rows.publish.count,
    delivered: v.delivered,
    lost: Math.max(0, stats.sent - v.delivered),
    duplicated: v.duplicated,
    reordered: v.reordered,
    commands_sent: v.commands_sent,
    commands_received: received,
    commands_lost: Math.max(0, v.commands_sent - received),
    delivery_p50_ms: l.p50_ms,
    delivery_p99_ms: l.p99_ms,
    delivery_max_ms: l.max_ms,
  };
}

/** Throughput out of the broker, as the subscribers saw it: messages and bytes per second over the run, and publish → delivery latency (from each payload's timestamp; same clock). */
export interface SubscribersReport {
  connections: number;
  filter: string;
  qos: number;
  delivered: number;
  delivered_per_s: number;
  bytes_per_s: number;
  /** Messages published by the devices, to set against `delivered` (fan-out multiplies it, a shared subscription does not). */
  published: number;
  e2e_p50_ms: number;
  e2e_p99_ms: number;
  e2e_max_ms: number;
}

export function subscribersOf(stats: Stats, sub: { connections: number; filter: string; qos: number }, t: { messages: number; bytes: number; latency: number[] }, seconds: number): SubscribersReport {
  const lat = new Latency();
  lat.addSparse(t.latency);
  const l = lat.summary();
  const per = (n: number) => Math.round((n / Math.max(1e-3, seconds)) * 10) / 10;
  return { ...sub, delivered: t.messages, delivered_per_s: per(t.messages), bytes_per_s: per(t.bytes), published: stats.sent, e2e_p50_ms: l.p50_ms, e2e_p99_ms: l.p99_ms, e2e_max_ms: l.max_ms };
}

export interface CertificatesReport {
  renewed: number;
  revoked: number;
  /** Revoked certificates the broker still accepted: a security finding about the platform. */
  revoked_but_accepted: number;
  renew_failures: number;
  revoke_failures: number;
}

export interface MachineReport {
  id: string;
  host: string;
  pid: number;
  /** Went silent during the run; its counts up to then are in the totals. */
  lost: boolean;
  users: number;
  /** Identity ranges it held at the end: [first index, count] into the sorted ids. */
  ranges: [number, number][];
  connected: number;
  processes: number;
  cpu_us: number;
  rss: number;
  /** Control messages this machine dropped (forged, replayed, malformed). */
  dropped: number;
  rejected?: string;
}

export interface WorkersReport {
  processes: number;
  /** CPU of the supervisor itself (merging, progress, IPC), percent of one core. */
  supervisor_cpu_percent: number;
  /** Workers that died or hung and were replaced. */
  restarts: number;
  list: { slot: number; pid: number; restarts: number; connected: number; rss: number; cpu_us: number }[];
}

export interface RampReport {
  devices: number;
  seconds: number;
  failures: Record<string, Record<string, number>>;
}

export interface ReportInput {
  config: Record<string, unknown>;
  started: Date;
  ended: Date;
  interrupted: boolean;
  users: { target: number; active: number; connected: number };
  stats: Stats;
  cpuMicros: number;
  rssBytes: number;
  workers?: WorkersReport;
  machines?: MachineReport[];
  dropped?: Record<string, number>;
  /** QoS 1/2 publishes still awaiting their ack (0 once a run has stopped and drained). */
  inflight?: number;
}

export interface Throughput {
  /** Connections made per second over the run (with --churn: reconnects), and the most in one timeline window (~2 s). */
  connects_per_s: number;
  peak_connects_per_s?: number;
  sent_per_s: number;
  sent_mb_per_s: number;
  acked_per_s: number;
  delivered_per_s?: number;
  delivered_mb_per_s?: number;
}

const perSecond = (n: number, seconds: number, digits = 1) => Math.round((n / Math.max(1e-3, seconds)) * 10 ** digits) / 10 ** digits;

/**
 * What a consumer (the subscribers or the verifying one) counted, as the report shows it: the
 * stats table's `deliver` row (messages, their rate) and `e2e` row (publish → delivery latency),
 * and the delivered rates beside the sent and acked ones.
 */
export function deliveryOf(t: { messages: number; bytes: number; latency: number[] }, seconds: number): { rows: { deliver: RowReport; e2e: RowReport }; throughput: Pick<Throughput, "delivered_per_s" | "delivered_mb_per_s"> } {
  const deliver = new Row();
  deliver.count = t.messages;
  const e2e = new Row();
  e2e.latency.addSparse(t.latency);
  e2e.count = e2e.latency.summary().count;
  return {
    rows: { deliver: rowReport(deliver, seconds), e2e: rowReport(e2e, seconds) },
    throughput: { delivered_per_s: perSecond(t.messages, seconds), delivered_mb_per_s: perSecond(t.bytes / 1e6, seconds, 3) },
  };
}

/**
 * What the figures point to that a reader might not recognise. A CONNACK phase clustered at
 * ~40 ms with the TCP and TLS phases fast is Nagle's algorithm on the broker: it holds the
 * CONNACK behind its TLS 1.3 session tickets until the client's delayed ACK (40 ms on Linux)
 * acknowledges them. Nothing the client sets takes it away (bench/connack.bench.ts).
 */
export function notesOn(phases: Report["phases"], scenarioErrors?: Row): { notes?: string[] } {
  const notes: string[] = [];
  for (const [reason, n] of scenarioErrors?.reasons ?? []) {
    if (reason.startsWith("blocked:")) notes.push(`The scenario's ${reason.slice(8)} hook ran over ${SLOW_HOOK_MS} ms ${n} time${n === 1 ? "" : "s"}: while it runs, no other device of its process does anything (see health.loop_lag_p99_ms). Keep hooks short.`);
  }
  const connack = phases.connack;
  const tcp = phases.tcp_connect;
  if (connack && connack.count >= 5 && connack.p50_ms >= 36 && connack.p50_ms <= 50 && (!tcp || tcp.p50_ms < 10)) {
    notes.push(
      `CONNACK p50 ${connack.p50_ms} ms while TCP connects took ${tcp?.p50_ms ?? "?"} ms: the signature of Nagle's algorithm on the broker holding CONNACK until the client's delayed ACK (~40 ms). On mosquitto set "set_tcp_nodelay true"; on other brokers, enable TCP_NODELAY on the MQTT listener.`,
    );
  }
  return notes.length ? { notes } : {};
}

export function buildReport(r: ReportInput): Report {
  const seconds = Math.max(1e-3, (r.ended.getTime() - r.started.getTime()) / 1000);
  const stats: Record<string, RowReport> = {};
  const errors = r.stats.failureReasons();
  // The built-in rows, then a scenario's own (d.measure, d.fail) and scenario_error.
  for (const [name, data] of r.stats.allRows()) stats[name] = rowReport(data, seconds);
  const phases: Report["phases"] = {};
  for (const [name, h] of Object.entries(r.stats.phases)) {
    const s = h.summary();
    phases[name] = { count: s.count, p50_ms: s.p50_ms, p99_ms: s.p99_ms, max_ms: s.max_ms };
  }
  const lag = r.stats.loopLag.summary();
  const publishes = r.stats.rows.publish.count + r.stats.rows.publish.failures;
  const h = r.stats.health;
  return {
    config: r.config,
    started: r.started.toISOString(),
    ended: r.ended.toISOString(),
    duration_s: Math.round(seconds * 10) / 10,
    interrupted: r.interrupted,
    users: r.users,
    stats,
    phases,
    errors,
    publishes: publishFlow(r.stats, r.inflight ?? 0),
    throughput: { connects_per_s: perSecond(r.stats.rows.connect.count, seconds), sent_per_s: perSecond(r.stats.sent, seconds), sent_mb_per_s: perSecond(r.stats.sentBytes / 1e6, seconds, 3), acked_per_s: perSecond(r.stats.rows.publish.count, seconds) },
    ...notesOn(phases, r.stats.custom.get(SCENARIO_ERROR_ROW)),
    health: {
      ...h,
      loop_lag_p99_ms: lag.p99_ms,
      loop_lag_max_ms: lag.max_ms,
      cpu_percent: Math.round((r.cpuMicros / 1e6 / seconds) * 1000) / 10,
      rss_bytes: r.rssBytes,
      kept_up: lag.p99_ms < 50 && h.late_sends <= Math.max(1, publishes * 0.01) && h.backpressure_skips === 0,
    },
    ...(r.workers ? { workers: r.workers } : {}),
    ...(r.machines ? { machines: r.machines } : {}),
    ...(r.dropped ? { dropped_messages: r.dropped } : {}),
    ...certificates(r.stats),
  };
}

/** Skipped before sending: counted as failures of the row, never sent. */
/** Publishes skipped before they were sent: the window or socket was full, or the broker's CONNACK said it would refuse them. */
const NOT_SENT = ["window_full", "backpressure", "receive_maximum_full", "over_server_maximum_packet_size", "qos_over_server_maximum", "retain_unavailable"];

function publishFlow(s: Stats, inflight: number): Report["publishes"] {
  const row = s.rows.publish;
  const skipped = NOT_SENT.reduce((a, r) => a + (row.reasons.get(r) ?? 0), 0);
  return { sent: s.sent, acked: row.count, failed: row.failures - skipped, in_flight: inflight, skipped };
}

function certificates(s: Stats): { certificates?: CertificatesReport } {
  const { renew, revoke } = s.rows;
  if (renew.count + renew.failures + revoke.count + revoke.failures === 0) return {};
  const accepted = revoke.reasons.get("revoked_but_accepted") ?? 0;
  return {
    certificates: { renewed: renew.count, revoked: revoke.count, revoked_but_accepted: accepted, renew_failures: renew.failures, revoke_failures: revoke.failures - accepted },
  };
}

/** What the run showed about revocation: said only of certificates that were actually tried against the broker. */
function revokeVerdict(rep: Report): string {
  const c = rep.certificates!;
  if (c.revoked_but_accepted) return `; ${c.revoked_but_accepted} REVOKED BUT STILL ACCEPTED by the broker`;
  if (c.revoked > 0) return `; every revoked certificate was refused (${c.revoked} tried)`;
  if (c.revoke_failures === 0) return "";
  const why = Object.entries(rep.errors.revoke ?? {}).map(([r, n]) => `${r} ${n}`).join(", ");
  return `; no revoked certificate was tried against the broker: ${c.revoke_failures} revoke${c.revoke_failures === 1 ? "" : "s"} failed before (${why})`;
}

const f = (n: number) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));

/** The report as a table, like Locust's end-of-run statistics. */
export function renderTable(rep: Report): string {
  const head = ["Name", "# reqs", "# fails", "Min", "Med", "p95", "p99", "Max", "Avg", "rate/s"];
  const lines = [head];
  for (const [name, s] of Object.entries(rep.stats)) {
    if (s.count === 0 && s.failures === 0) continue;
    const lat = s.latency_count ? [f(s.min_ms), f(s.p50_ms), f(s.p95_ms), f(s.p99_ms), f(s.max_ms), f(s.mean_ms)] : ["-", "-", "-", "-", "-", "-"];
    lines.push([name, String(s.count), `${s.failures}${s.count + s.failures ? ` (${((s.failures / (s.count + s.failures)) * 100).toFixed(1)}%)` : ""}`, ...lat, f(s.rate_per_s)]);
  }
  const widths = head.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  const fmt = (l: string[]) => l.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  let out = `${fmt(lines[0]!)}   (latencies in ms)\n${widths.map((w) => "-".repeat(w)).join("  ")}\n${lines.slice(1).map(fmt).join("\n")}\n`;
  const failures = Object.entries(rep.errors).flatMap(([row, reasons]) => Object.entries(reasons).map(([r, n]) => `  ${row.padEnd(12)} ${String(n).padStart(8)}  ${r}`));
  if (failures.length) out += `\nFailures:\n${failures.join("\n")}\n`;
  const p = rep.publishes;
  out += `\nPublishes: ${p.sent} sent = ${p.acked} acked + ${p.failed} failed + ${p.in_flight} in flight${p.skipped ? ` (${p.skipped} more skipped, never sent)` : ""}.`;
  const tp = rep.throughput;
  if (tp) out += `\nThroughput: ${tp.connects_per_s} connects/s${tp.peak_connects_per_s !== undefined ? ` (peak ${tp.peak_connects_per_s})` : ""}; sent ${tp.sent_per_s} msg/s (${tp.sent_mb_per_s} MB/s), acked ${tp.acked_per_s} msg/s${tp.delivered_per_s !== undefined ? `, delivered ${tp.delivered_per_s} msg/s (${tp.delivered_mb_per_s} MB/s)` : ""}.`;
  const i = rep.integrity;
  if (i) {
    out +=
      `\nIntegrity: ${i.delivered} of ${i.published} published delivered, ${i.lost} LOST, ${i.duplicated} duplicated, ${i.reordered} out of order` +
      ` (delivery p99 ${f(i.delivery_p99_ms)} ms)` +
      (i.commands_sent ? `; commands ${i.commands_received} of ${i.commands_sent} received, ${i.commands_lost} lost` : "") +
      ".";
  }
  const sub = rep.subscribers;
  if (sub) out += `\nSubscribers: ${sub.connections} on ${sub.filter} got ${sub.delivered} messages (${sub.delivered_per_s}/s, ${(sub.bytes_per_s / 1024).toFixed(1)} KiB/s) of ${sub.published} published; e2e p50 ${f(sub.e2e_p50_ms)} ms, p99 ${f(sub.e2e_p99_ms)} ms.`;
  for (const n of rep.notes ?? []) out += `\nNote: ${n}`;
  const h = rep.health;
  if (h.ramp_held_ms > 0) out += `\nRamp: held ${(h.ramp_held_ms / 1000).toFixed(1)} s (summed over worker processes) while --max-connecting connects were in flight: the broker set the pace.`;
  if (h.sessions_resumed || h.no_matching_subscribers || h.topic_alias_bytes_saved)
    out += `\nMQTT: ${h.sessions_resumed} sessions resumed, ${h.no_matching_subscribers} publishes with no matching subscribers, ${h.topic_alias_bytes_saved} bytes saved by topic aliases.`;
  out +=
    `\nDevices: ${rep.users.connected} connected of ${rep.users.active} started (target ${rep.users.target}).` +
    ` Generator: ${h.kept_up ? "kept up" : "DID NOT keep up — latencies include cicada's own delay"}` +
    ` (loop lag p99 ${f(h.loop_lag_p99_ms)} ms, late sends ${h.late_sends}, CPU ${h.cpu_percent}%, RSS ${(h.rss_bytes / 1048576).toFixed(0)} MiB)\n` +
    (rep.certificates
      ? `Certificates: ${rep.certificates.renewed} renewed, ${rep.certificates.revoked} revoked` +
        revokeVerdict(rep) +
        ".\n"
      : "") +
    (rep.machines ? `Machines: ${rep.machines.length} (${rep.machines.filter((m) => m.lost).length} lost).\n` : "") +
    (rep.workers ? `Workers: ${rep.workers.processes} processes, ${rep.workers.restarts} restarted.\n` : "");
  return out;
}
