/** /metrics rendering and the Grafana dashboard that reads it. */
import { describe, expect, test } from "bun:test";
import parsePrometheus from "parse-prometheus-text-format";
import { createApp } from "../../src/api/app.ts";
import { RunManager } from "../../src/api/manager.ts";
import { renderMetrics } from "../../src/api/metrics.ts";
import { ROWS, Stats } from "../../src/metrics/stats.ts";
import { addEncoded, encodeStats, packStats, unpackStats } from "../../src/metrics/snapshot.ts";
import { buildReport, integrityOf } from "../../src/report/summary.ts";
import { checkThresholds, parseThreshold, type Threshold } from "../../src/report/thresholds.ts";
import { Latency } from "../../src/metrics/histogram.ts";
import { tempDir } from "../helpers/tmp.ts";

function sampleStats(): Stats {
  const s = new Stats();
  for (const ms of [0.5, 2, 3, 40, 700]) s.rows.publish.ok(ms);
  s.rows.connect.ok(12);
  s.rows.connect.fail('tls "handshake"\nfailed');
  s.health.late_sends = 4;
  s.loopLag.recordMs(1);
  return s;
}

describe("/metrics", () => {
  test("histogram buckets are cumulative and match the samples; label values are escaped", () => {
    const text = renderMetrics({ stats: sampleStats(), running: true, target: 10, connected: 7, workers: 2, machines: 0 });
    const families = parsePrometheus(text);
    const value = (name: string, labels: Record<string, string> = {}) =>
      Number(families.find((f) => f.name === name)!.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))!.value);
    expect(value("cicada_devices_connected")).toBe(7);
    expect(value("cicada_requests_total", { row: "publish" })).toBe(5);
    expect(value("cicada_failures_total", { row: "connect", reason: 'tls "handshake"\nfailed' })).toBe(1);
    expect(value("cicada_late_sends_total")).toBe(4);
    const bucket = (le: string) => Number(/cicada_latency_seconds_bucket\{row="publish",le="([^"]+)"\} (\d+)/g.exec(text.split("\n").find((l) => l.includes(`row="publish",le="${le}"`))!)![2]);
    expect(bucket("0.001")).toBe(1); // 0.5 ms
    expect(bucket("0.0025")).toBe(2); // + 2 ms
    expect(bucket("0.005")).toBe(3); // + 3 ms
    expect(bucket("0.05")).toBe(4); // + 40 ms
    expect(bucket("1")).toBe(5); // + 700 ms
    expect(bucket("+Inf")).toBe(5);
    const sum = Number(/cicada_latency_seconds_sum\{row="publish"\} (\S+)/.exec(text)![1]);
    expect(sum).toBeCloseTo(0.7455, 2);
  });

  test("with --subscribers: delivered messages, bytes and delivery latency; published counts every send", () => {
    const stats = sampleStats();
    stats.sent = 9;
    stats.sentBytes = 9 * 44;
    const latency = new Latency();
    for (const ms of [3, 30]) latency.recordMs(ms);
    const families = parsePrometheus(renderMetrics({ stats, running: true, target: 1, connected: 1, workers: 1, machines: 0, subscribers: { messages: 18, bytes: 720, latency } }));
    const value = (name: string) => Number(families.find((f) => f.name === name)!.metrics[0]!.value ?? (families.find((f) => f.name === name)!.metrics[0] as { count?: string }).count);
    expect(value("cicada_published_total")).toBe(9);
    expect(value("cicada_published_bytes_total")).toBe(396);
    expect(value("cicada_delivered_total")).toBe(18);
    expect(value("cicada_delivered_bytes_total")).toBe(720);
    expect(value("cicada_delivery_latency_seconds")).toBe(2);
    // Without subscribers the delivery families are absent, not zero.
    const plain = parsePrometheus(renderMetrics({ stats, running: true, target: 1, connected: 1, workers: 1, machines: 0 })).map((f) => f.name);
    expect(plain).not.toContain("cicada_delivered_total");
  });

  test("a scenario's own rows cross the wire encoding between processes and machines, and show in /metrics, the report and thresholds", () => {
    const worker = sampleStats();
    for (const ms of [1200, 3400]) worker.customRow("firmware_download").ok(ms);
    worker.customRow("firmware").fail("checksum");
    worker.customRow("scenario_error").fail("onMessage: TypeError: x");
    // A worker's delta, packed as machines send it, added into the controller's totals twice (two workers).
    const total = new Stats();
    for (let i = 0; i < 2; i++) addEncoded(total, unpackStats(packStats(encodeStats(worker))));
    expect(total.custom.get("firmware_download")!.count).toBe(4);
    expect(total.custom.get("firmware")!.reasons.get("checksum")).toBe(2);
    const families = parsePrometheus(renderMetrics({ stats: total, running: true, target: 1, connected: 1, workers: 2, machines: 0 }));
    const requests = families.find((f) => f.name === "cicada_requests_total")!.metrics;
    expect(requests.find((m) => m.labels?.row === "firmware_download")?.value).toBe("4");
    const failures = families.find((f) => f.name === "cicada_failures_total")!.metrics;
    expect(failures.find((m) => m.labels?.row === "scenario_error")?.labels?.reason).toBe("onMessage: TypeError: x");
    const report = buildReport({ config: {}, started: new Date(0), ended: new Date(10_000), interrupted: false, users: { target: 1, active: 1, connected: 1 }, stats: total, cpuMicros: 0, rssBytes: 0 });
    expect(report.stats.firmware_download!.count).toBe(4);
    expect(report.errors.firmware).toEqual({ checksum: 2 });
    // The built-in rows come first, in their order, then the scenario's by name.
    expect(Object.keys(report.stats)).toEqual([...ROWS, "firmware", "firmware_download", "scenario_error"]);
    const threshold = parseThreshold("firmware_download.p99_ms<3000", true);
    expect(typeof threshold).not.toBe("string");
    expect(checkThresholds(report, [threshold as Threshold]).map((b) => b.expr)).toEqual(["firmware_download.p99_ms<3000"]);
    // Without a scenario a row name must be a built-in one.
    expect(parseThreshold("firmware_download.p99_ms<3000")).toContain('no row "firmware_download"');
    // A forged delta cannot add rows with names no scenario could give.
    const forged = encodeStats(worker);
    forged.rows["Bad Name!"] = forged.rows.firmware!;
    const into = new Stats();
    addEncoded(into, forged);
    expect([...into.custom.keys()].sort()).toEqual(["firmware", "firmware_download", "scenario_error"]);
  });

  test("each connection phase has its histogram, every health counter and each process's memory and CPU are exported", () => {
    const stats = sampleStats();
    for (const ms of [2, 4]) stats.phases.connack.recordMs(ms);
    stats.phases.tls_handshake.recordMs(30);
    stats.health.sessions_resumed = 3;
    const text = renderMetrics({ stats, running: true, target: 1, connected: 1, workers: 2, machines: 0, processes: [
      { machine: "m1", slot: 0, pid: 11, connected: 7, rss: 5e7, cpu_us: 2_500_000, fds: 40, fd_limit: 1024 },
      { machine: "m2", slot: 0, pid: 12, connected: 9, rss: 6e7, cpu_us: 1_000_000, fds: 50, fd_limit: 20_000 },
    ] });
    const families = parsePrometheus(text);
    const family = (name: string) => families.find((f) => f.name === name)!;
    expect(family("cicada_phase_seconds").type).toBe("HISTOGRAM");
    const count = (phase: string) => Number(new RegExp(`cicada_phase_seconds_count\\{phase="${phase}"\\} (\\d+)`).exec(text)![1]);
    expect(count("connack")).toBe(2);
    expect(count("tls_handshake")).toBe(1);
    expect(count("e2e")).toBe(0);
    expect(Number(/cicada_phase_seconds_bucket\{phase="tls_handshake",le="0.025"\} (\d+)/.exec(text)![1])).toBe(0);
    expect(Number(/cicada_phase_seconds_bucket\{phase="tls_handshake",le="0.05"\} (\d+)/.exec(text)![1])).toBe(1);
    expect(family("cicada_sessions_resumed_total").metrics[0]!.value).toBe("3");
    expect(family("cicada_timer_errors_total").metrics[0]!.value).toBe("0");
    const rss = family("cicada_process_resident_memory_bytes").metrics;
    expect(rss.map((m) => [m.labels?.machine, m.labels?.slot, Number(m.value)])).toEqual([["m1", "0", 5e7], ["m2", "0", 6e7]]);
    expect(family("cicada_process_cpu_seconds_total").metrics.map((m) => Number(m.value))).toEqual([2.5, 1]);
    expect(family("cicada_process_devices_connected").metrics.map((m) => Number(m.value))).toEqual([7, 9]);
    expect(family("cicada_process_open_fds").metrics.map((m) => Number(m.value))).toEqual([40, 50]);
    expect(family("cicada_process_max_fds").metrics.map((m) => Number(m.value))).toEqual([1024, 20_000]);
    // Every family says what it is, and counters end in _total.
    for (const f of families) {
      expect(text).toContain(`# HELP ${f.name} `);
      if (f.type === "COUNTER") expect(f.name).toEndWith("_total");
    }
  });

  test("the Grafana dashboard queries only metrics /metrics exposes, with panels for rate, devices, latency and failures", async () => {
    using tmp = tempDir();
    const app = createApp(new RunManager([], `${tmp.path}/runs`, () => {}));
    const dash = (await (await app.request("/assets/grafana-dashboard.json")).json()) as { panels: { title: string; targets: { expr: string }[] }[] };
    // Everything /metrics can hold: a consumer's families and a worker's process figures included.
    const full = { stats: sampleStats(), running: true, target: 1, connected: 1, workers: 1, machines: 0, subscribers: { messages: 1, bytes: 1, latency: new Latency() }, processes: [{ machine: "m", slot: 0, pid: 1, connected: 1, rss: 1, cpu_us: 1, fds: 1, fd_limit: 2 }], integrity: integrityOf(sampleStats(), { delivered: 1, duplicated: 0, reordered: 0, commands_sent: 0, latency: [] }) };
    const exposed = new Set(parsePrometheus(renderMetrics(full)).map((f) => f.name));
    const used = new Set(dash.panels.flatMap((p) => p.targets.flatMap((t) => t.expr.match(/cicada_[a-z_]+/g) ?? [])).map((m) => m.replace(/_bucket$/, "")));
    expect(used.size).toBeGreaterThan(5);
    for (const m of used) expect(exposed.has(m)).toBe(true);
    const titles = dash.panels.map((p) => p.title).join(" | ");
    for (const t of ["Messages per second", "Connected devices", "Publish latency", "Failures per second"]) expect(titles).toContain(t);
  });
});
