#!/usr/bin/env bun
/**
 * The 100,000-device test on one machine, broker included: makes P-256 device certificates,
 * starts enough mosquitto instances for the per-process file limit, runs `cicada run` with
 * enough workers and source addresses, ramps to N connected mTLS devices, holds them
 * publishing QoS 1 every 29.5-30 s (subscribed to config), then stops. Bounded in time; stops
 * what it started. Prints JSON lines: samples every 10 s, then a summary.
 *   bun bench/scale.bench.ts [--devices 100000] [--rate 300] [--hold 300] [--brokers auto] [--per-broker 10000] [--workers auto] [--sources 0] [--source] [--tls-version 1.2] [--tls-groups LIST] [--tls-stack bun|cicada] [--ramp-s N] [--min-available-mb 1024] [--report FILE]
 * It runs the compiled executable (built into its state folder first), or with --source `bun src/cli/main.ts`.
 * A run that would exhaust the machine ends early instead: when the memory available falls
 * below --min-available-mb (checked every second) the run is stopped as by Ctrl-C, and the
 * summary says so and how many devices were held; its per-device figures divide by those.
 *   bun bench/scale.bench.ts --devices 20000 --hold 60        # routine use: a few minutes
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { machineMemory, machineStalls, treeUsage } from "../scripts/lib/procstat.ts";
import { startBrokers } from "../scripts/lib/testbed.ts";
import { DEFAULT_TLS_GROUPS } from "../src/transport/connect.ts";
import { buildExecutable, ensureCerts } from "./fixtures/common.ts";

const { values } = parseArgs({
  options: {
    devices: { type: "string", default: "100000" },
    rate: { type: "string", default: "300" },
    hold: { type: "string", default: "300" },
    brokers: { type: "string", default: "auto" },
    workers: { type: "string", default: "auto" },
    // Source addresses make Bun bind() before connect(), which caps each address at one
    // ephemeral range across all brokers and slows the kernel's search: more broker ports scale better.
    sources: { type: "string", default: "0" },
    "per-broker": { type: "string", default: "10000" },
    certs: { type: "string", default: join(tmpdir(), "cicada-bench-certs-ec") },
    // Run cicada from its sources instead of the compiled executable users run.
    source: { type: "boolean", default: false },
    // Passed to cicada run: offer only this TLS version.
    "tls-version": { type: "string" },
    "tls-stack": { type: "string" },
    "tls-groups": { type: "string" },
    // Stop the run early when the machine's available memory falls below this (MB).
    "min-available-mb": { type: "string", default: "1024" },
    // Keep cicada's own report (JSON) there: its phases, errors and health beyond the summary.
    report: { type: "string" },
    // Time given to the ramp (default devices / rate): more when the brokers connect slower than --rate.
    "ramp-s": { type: "string" },
  },
});
const devices = Number(values.devices);
const rate = Number(values.rate);
const holdS = Number(values.hold);
// --ramp-s gives the ramp time; it does not change --rate, which alone may need longer.
// Checked before anything is made or started.
const rampAtRateS = Math.ceil(devices / rate);
const rampS = values["ramp-s"] ? Number(values["ramp-s"]) : rampAtRateS;
if (rampS < rampAtRateS) {
  process.stderr.write(`error: --ramp-s ${rampS} is shorter than ${devices} devices at --rate ${rate} take (${rampAtRateS} s): raise --rate or --ramp-s\n`);
  process.exit(2);
}
const brokerCount = values.brokers === "auto" ? Math.ceil(devices / Number(values["per-broker"])) : Number(values.brokers);
const sources = Array.from({ length: Number(values.sources) }, (_, i) => `127.0.0.${i + 2}`);
const emit = (o: Record<string, unknown>) => console.log(JSON.stringify({ bench: "scale", ...o }));
const log = (s: string) => process.stderr.write(`# ${s}\n`);
const MAIN = join(import.meta.dir, "../src/cli/main.ts");
const MB = 1048576;

// 1. Certificates (kept between runs: making 100,000 takes about a minute).
const certDir = values.certs!;
let making = 0;
await ensureCerts(certDir, devices, "ec", (line) => {
  making = performance.now();
  log(line);
});
if (making) log(`certificates made in ${((performance.now() - making) / 1000).toFixed(0)} s`);

// 2. Brokers.
const state = mkdtempSync(join(tmpdir(), "cicada-scale-"));
// Built before the brokers start, so a failed build leaves nothing running.
const command = values.source ? [process.execPath, MAIN] : [buildExecutable(join(state, "cicada"))];
const brokers = await startBrokers(brokerCount, { certDir, stateDir: state, verbose: false });
// Until they are stopped in order below, whatever ends this process (a throw included) ends the
// brokers and cicada it started, by their PIDs.
const running = new Set(brokers.map((b) => b.pid));
process.on("exit", () => {
  for (const pid of running) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  }
});
log(`${brokerCount} mosquitto brokers on ports ${brokers.map((b) => b.port).join(",")}`);
const report = join(state, "report.json");
const durationS = rampS + 60 + holdS; // ramp, margin for stragglers, hold
const memStart = machineMemory();

// 3. cicada run.
const args = [
  "run", "--certs", certDir, "--port", brokers.map((b) => b.port).join(","), ...(sources.length ? ["--source-address", sources.join(",")] : []),
  "--users", String(devices), "--rate", String(rate), "--workers", values.workers!, "--duration", `${durationS}s`,
  "--interval", "29.5s..30s", "--qos", "1", "--keepalive", "120", "--connect-timeout", "60s", "--report", report,
  // The report (publish latency, late sends) covers the hold; the ramp's figures are sampled here.
  "--reset-stats",
  ...(values["tls-version"] ? ["--tls-version", values["tls-version"]] : []),
  ...(values["tls-stack"] ? ["--tls-stack", values["tls-stack"]] : []),
  ...(values["tls-groups"] ? ["--tls-groups", values["tls-groups"]] : []),
];
log(`cicada ${args.join(" ")}`);
const cicada = Bun.spawn([...command, ...args], { stdio: ["ignore", "ignore", "pipe"] });
running.add(cicada.pid);
// Ctrl-C or a kill ends the run early: cicada stops its devices and writes its report, then
// the brokers are stopped and the state folder removed as on a normal end.
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => cicada.kill("SIGINT"));
interface Progress { t: number; connected: number; publishPerS: number; failures: number }
const progress: Progress[] = [];
void (async () => {
  let buf = "";
  for await (const chunk of cicada.stderr) {
    buf += new TextDecoder().decode(chunk);
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.includes("stats reset")) continue;
      const m = /^\[(\d+)s\] devices ([\d,]+)\/[\d,]+ connected \| publish ([\d.]+)\/s.*failures ([\d,]+)/.exec(line);
      if (m) progress.push({ t: Number(m[1]), connected: Number(m[2]!.replace(/,/g, "")), publishPerS: Number(m[3]), failures: Number(m[4]!.replace(/,/g, "")) });
      else if (!line.startsWith("[")) process.stderr.write(`${line}\n`);
    }
  }
})();

// 4. Samples every 10 s while it runs.
const brokerPids = brokers.map((b) => b.pid);
let prev = { t: performance.now(), c: treeUsage([cicada.pid]), b: treeUsage(brokerPids), m: machineStalls() };
const cpu0 = { c: prev.c.cpuS, b: prev.b.cpuS };
const samples: Record<string, number>[] = [];
function sample(): void {
  const now = performance.now();
  const c = treeUsage([cicada.pid]);
  const b = treeUsage(brokerPids);
  const m = machineStalls();
  const mem = machineMemory();
  const dt = (now - prev.t) / 1000;
  // Share of the interval that some task (or every task) spent waiting: pressure stall information.
  const stalled = (k: "cpuSomeUs" | "memorySomeUs" | "memoryFullUs" | "ioSomeUs" | "ioFullUs") => +(((m[k] - prev.m[k]) / 1e6 / dt) * 100).toFixed(1);
  const p = progress[progress.length - 1];
  const sample = {
    t_s: p?.t ?? 0,
    connected: p?.connected ?? 0,
    cicada_cpu_percent: +(((c.cpuS - prev.c.cpuS) / dt) * 100).toFixed(1),
    cicada_rss_mb: Math.round(c.rssBytes / MB),
    // What the processes really hold together: the executable's shared pages counted once.
    cicada_pss_mb: Math.round(c.pssBytes / MB),
    cicada_processes: c.processes,
    cicada_cpu_s: +(c.cpuS - cpu0.c).toFixed(1),
    brokers_cpu_percent: +(((b.cpuS - prev.b.cpuS) / dt) * 100).toFixed(1),
    brokers_rss_mb: Math.round(b.rssBytes / MB),
    brokers_pss_mb: Math.round(b.pssBytes / MB),
    brokers_cpu_s: +(b.cpuS - cpu0.b).toFixed(1),
    machine_available_mb: Math.round(mem.availableBytes / MB),
    machine_free_mb: Math.round(mem.freeBytes / MB),
    machine_cached_mb: Math.round(mem.cachedBytes / MB),
    // Why processes waited when the cores were not all busy: a core, memory (reclaim) or I/O.
    stall_cpu_some_percent: stalled("cpuSomeUs"),
    stall_memory_some_percent: stalled("memorySomeUs"),
    stall_memory_full_percent: stalled("memoryFullUs"),
    stall_io_some_percent: stalled("ioSomeUs"),
    stall_io_full_percent: stalled("ioFullUs"),
    direct_reclaims: m.allocStalls - prev.m.allocStalls,
    direct_reclaim_scanned_pages: m.directScanPages - prev.m.directScanPages,
    kswapd_scanned_pages: m.kswapdScanPages - prev.m.kswapdScanPages,
    major_faults: m.majorFaults - prev.m.majorFaults,
    // The sampler's own delay past its 10 s: this process waited too.
    sample_interval_s: +dt.toFixed(1),
  };
  samples.push(sample);
  emit({ sample });
  prev = { t: now, c, b, m };
}
const sampler = setInterval(sample, 10_000);
// Out of memory, the kernel would kill a broker or a worker (or anything else on the machine);
// stopping first keeps the run's report and the machine.
const minAvailable = Number(values["min-available-mb"]) * MB;
let stoppedEarly: string | null = null;
const guard = setInterval(() => {
  const available = machineMemory().availableBytes;
  if (stoppedEarly || available >= minAvailable) return;
  const p = progress[progress.length - 1];
  stoppedEarly = `machine memory available fell to ${Math.round(available / MB)} MB (--min-available-mb ${values["min-available-mb"]}) with ${p?.connected ?? 0} devices connected`;
  log(`stopping the run: ${stoppedEarly}`);
  sample(); // the peak, before the stop releases it
  cicada.kill("SIGINT");
}, 1000);

const code = await cicada.exited;
running.delete(cicada.pid);
clearInterval(sampler);
clearInterval(guard);
for (const b of brokers) await b.stop();
running.clear();

// 5. Summary.
const rep = existsSync(report) ? JSON.parse(readFileSync(report, "utf8")) : null;
if (rep && values.report) copyFileSync(report, values.report);
rmSync(state, { recursive: true, force: true });
if (!rep) {
  emit({ error: `cicada run exited ${code} without a report` });
  process.exit(1);
}
const full = progress.find((p) => p.connected >= devices);
const maxConnected = Math.max(0, ...progress.map((p) => p.connected));
// Per-device figures divide by the devices the run reached: all of them, unless it stopped early
// or ran out of time first.
const held = full ? devices : Math.max(1, maxConnected, rep.users.connected);
// --reset-stats clears the stats once every device is connected; a run stopped before that
// has a report of its ramp alone.
const sumReasons = (byRow: Record<string, Record<string, number>>) => Object.values(byRow).reduce((a, reasons) => a + Object.values(reasons).reduce((b, n) => b + n, 0), 0);
const reportFailures = Object.values(rep.stats as Record<string, { failures: number }>).reduce((a, r) => a + r.failures, 0);
// The hold: from 30 s after the last device connected, without the last sample, which the run's
// stop overlaps (devices disconnecting, processes exiting: their CPU time leaves the sum).
const holdSamples = samples.slice(0, -1).filter((s) => full && s.t_s > full.t + 30);
function holdRate(): number | null {
  const window = full ? progress.filter((p) => p.t > full.t + 31) : [];
  return window.length ? Math.round(window.reduce((a, p) => a + p.publishPerS, 0) / window.length) : null;
}
const avg = (k: string) => (holdSamples.length ? holdSamples.reduce((a, s) => a + s[k]!, 0) / holdSamples.length : NaN);
const peak = (k: string) => Math.max(...samples.map((s) => s[k]!));
function rampCpu(k: string): number | null {
  const at = full && samples.find((s) => s.t_s >= full.t);
  return at ? +((at[k]! * 1000) / at.connected!).toFixed(3) : null;
}
emit({
  summary: {
    devices_target: devices,
    tls_version: values["tls-version"] ?? "1.2 or 1.3 (1.3 negotiated)",
    tls_stack: values["tls-stack"] ?? "bun",
    tls_groups: values["tls-groups"] ?? DEFAULT_TLS_GROUPS,
    brokers: brokerCount,
    workers: rep.workers?.processes ?? 1,
    source_addresses: sources.length,
    seconds_to_all_connected: full ? full.t : null,
    max_connected: maxConnected,
    stopped_early: stoppedEarly,
    connected_at_stop: rep.users.connected,
    // What the reset took out (the progress line at `full` may come after the reset and say 0).
    connect_failures_during_ramp: full ? (rep.ramp ? sumReasons(rep.ramp.failures) : full.failures) : reportFailures,
    // The report's ramp (what --reset-stats took out), or its errors when the run stopped during the ramp.
    failure_reasons_during_ramp: full ? (rep.ramp?.failures ?? null) : rep.errors,
    // From here on the report covers the hold only (--reset-stats).
    failures_after_ramp: full ? reportFailures : null,
    failure_reasons_after_ramp: full ? rep.errors : null,
    publishes: rep.stats.publish.count,
    // Average of the progress line's rate once every device has had a full interval to publish.
    publish_rate_hold_per_s: holdRate(),
    publish_p50_ms: rep.stats.publish.p50_ms,
    publish_p99_ms: rep.stats.publish.p99_ms,
    generator_kept_up: rep.health.kept_up,
    late_sends: rep.health.late_sends,
    cicada_cpu_percent_hold: +avg("cicada_cpu_percent").toFixed(1),
    cicada_rss_mb_peak: peak("cicada_rss_mb"),
    cicada_rss_kb_per_device: +((peak("cicada_rss_mb") * 1024) / held).toFixed(1),
    cicada_pss_mb_peak: peak("cicada_pss_mb"),
    cicada_pss_kb_per_device: +((peak("cicada_pss_mb") * 1024) / held).toFixed(1),
    // The ramp's CPU per device connected (to the first sample with all connected): cicada's against the brokers'.
    ramp_cicada_cpu_ms_per_connect: rampCpu("cicada_cpu_s"),
    ramp_brokers_cpu_ms_per_connect: rampCpu("brokers_cpu_s"),
    brokers_cpu_percent_hold: +avg("brokers_cpu_percent").toFixed(1),
    brokers_rss_mb_peak: peak("brokers_rss_mb"),
    brokers_rss_kb_per_device: +((peak("brokers_rss_mb") * 1024) / held).toFixed(1),
    brokers_pss_mb_peak: peak("brokers_pss_mb"),
    machine_memory_total_mb: Math.round(memStart.totalBytes / MB),
    machine_memory_used_peak_mb: Math.round((memStart.totalBytes - Math.min(...samples.map((s) => s.machine_available_mb! * MB))) / MB),
    // Where waiting came from when it was not the cores: the worst 10 s of memory and I/O stalls
    // (every task waiting), and the allocations that had to reclaim memory themselves.
    stall_memory_full_percent_max: peak("stall_memory_full_percent"),
    stall_io_full_percent_max: peak("stall_io_full_percent"),
    stall_cpu_some_percent_hold: +avg("stall_cpu_some_percent").toFixed(1),
    direct_reclaims: samples.reduce((a, s) => a + s.direct_reclaims!, 0),
    sample_interval_s_max: peak("sample_interval_s"),
    exit_code: code,
  },
});
