#!/usr/bin/env bun
/**
 * Fleet figures through `cicada run` itself (supervisor + worker processes), one JSON line each:
 *   hold        — mTLS devices held by a supervisor and N workers across several mosquitto brokers
 *   coordination — the supervisor's own CPU with many workers (merging stats, IPC, progress)
 *   federation — the controller's own CPU with many machines joined over Redis
 *   verify     — the verifying consumer (--verify): CPU per delivered message, and whether it
 *                keeps up, at --verify-rate messages per second (devices publishing every 1 s)
 *   bun bench/fleet.bench.ts [--devices 38000] [--workers 2] [--brokers 4] [--rate 400] [--hold 30]
 *                            [--coord-workers 10] [--verify-rate 3300] [--verify-connections auto] [--only hold,coordination,federation,verify]
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startBrokers, startRedis } from "../scripts/lib/testbed.ts";
import { cpuUs, ensureCerts } from "./fixtures/common.ts";

const { values } = parseArgs({
  options: {
    devices: { type: "string", default: "38000" },
    workers: { type: "string", default: "2" },
    brokers: { type: "string", default: "4" },
    rate: { type: "string", default: "400" },
    hold: { type: "string", default: "30" },
    "coord-workers": { type: "string", default: "10" },
    "verify-rate": { type: "string", default: "3300" },
    "verify-connections": { type: "string", default: "auto" },
    only: { type: "string", default: "hold,coordination" },
    certs: { type: "string", default: join(tmpdir(), "cicada-bench-certs-ec") },
  },
});
const only = new Set(values.only!.split(","));
const emit = (o: Record<string, unknown>) => console.log(JSON.stringify({ bench: "fleet", ...o }));
const log = (s: string) => process.stderr.write(`# ${s}\n`);
const MAIN = join(import.meta.dir, "../src/cli/main.ts");

const certs = (n: number) => ensureCerts(values.certs!, n, "ec", log);

/** CPU seconds (user + system) a process has used so far. */
const cpuSeconds = (pid: number) => cpuUs(pid) / 1e6;

async function run(args: string[], brokerCount: number, certDir: string, onStarted?: (pid: number) => Promise<void>, env: Record<string, string | undefined> = process.env): Promise<Record<string, any>> {
  const state = mkdtempSync(join(tmpdir(), "cicada-bench-state-"));
  const brokers = await startBrokers(brokerCount, { certDir, stateDir: state, verbose: false });
  const report = join(state, "report.json");
  try {
    const ports = brokers.map((b) => b.port).join(",");
    const proc = Bun.spawn([process.execPath, MAIN, "run", "--certs", certDir, "--port", ports, "--report", report, ...args], { stdio: ["ignore", "ignore", "inherit"], env });
    if (onStarted) await onStarted(proc.pid);
    const code = await proc.exited;
    if (code !== 0) throw new Error(`cicada run exited ${code}`);
    return JSON.parse(readFileSync(report, "utf8"));
  } finally {
    for (const b of brokers) await b.stop();
    rmSync(state, { recursive: true, force: true });
  }
}

if (only.has("hold")) {
  const devices = Number(values.devices), workers = Number(values.workers), rate = Number(values.rate), hold = Number(values.hold);
  const certDir = await certs(devices);
  const duration = Math.ceil(devices / rate) + 30 + hold;
  log(`hold: ${devices} devices, ${workers} workers, ${values.brokers} brokers, ramp ${rate}/s, run ${duration}s`);
  const rep = await run(["--users", String(devices), "--workers", String(workers), "--rate", String(rate), "--duration", `${duration}s`, "--interval", "300s", "--keepalive", "120", "--connect-timeout", "60s"], Number(values.brokers), certDir);
  emit({
    figure: "hold",
    devices_target: devices,
    connected_at_end: rep.users.connected,
    connect_count: rep.stats.connect.count,
    connect_failures: rep.stats.connect.failures,
    disconnect_failures: rep.stats.disconnect.failures,
    workers: rep.workers.processes,
    worker_connected: rep.workers.list.map((w: { connected: number }) => w.connected),
    worker_restarts: rep.workers.restarts,
    brokers: Number(values.brokers),
    connect_p50_ms: rep.stats.connect.p50_ms,
    connect_p99_ms: rep.stats.connect.p99_ms,
    rss_mb_total: Math.round(rep.health.rss_bytes / 1048576),
    supervisor_cpu_percent: rep.workers.supervisor_cpu_percent,
  });
}

if (only.has("coordination")) {
  const workers = Number(values["coord-workers"]);
  const devices = workers * 100;
  const certDir = await certs(devices);
  log(`coordination: ${workers} workers × 100 devices publishing every 1 s; supervisor CPU over a 20 s steady window`);
  let steady = NaN;
  const rep = await run(["--users", String(devices), "--workers", String(workers), "--rate", "500", "--duration", "45s", "--interval", "1s"], 2, certDir, async (pid) => {
    await Bun.sleep(15_000); // start-up and ramp
    const a = cpuSeconds(pid);
    await Bun.sleep(20_000);
    steady = ((cpuSeconds(pid) - a) / 20) * 100;
  });
  emit({
    figure: "coordination",
    workers: rep.workers.processes,
    devices,
    publishes: rep.stats.publish.count,
    supervisor_cpu_percent_steady: +steady.toFixed(2),
    supervisor_cpu_percent_whole_run: rep.workers.supervisor_cpu_percent,
  });
}

// The controller of a federated run: its CPU with N machines (cicada worker, 1 process each) over
// Redis, with plain messages and with messages signed by a cluster key (HMAC + schema + freshness).
for (const signed of only.has("federation") ? [false, true] : []) {
  const machines = Number(values["coord-workers"]);
  const devices = machines * 100;
  const certDir = await certs(devices);
  log(`federation${signed ? " (signed)" : ""}: controller + ${machines} machines × 100 devices publishing every 1 s; controller CPU over a 20 s steady window`);
  const state = mkdtempSync(join(tmpdir(), "cicada-bench-state-"));
  const redis = await startRedis({ stateDir: state });
  const env = { ...process.env, ...(signed ? { CICADA_CLUSTER_KEY: "bench-cluster-key-0123456789abcdef" } : {}) };
  const agents = Array.from({ length: machines }, (_, i) =>
    Bun.spawn([process.execPath, MAIN, "worker", "--redis", redis.url, "--certs", certDir, "--workers", "1", "--name", `m${i}`, "--once"], { stdio: ["ignore", "ignore", "ignore"], env }),
  );
  let steady = NaN;
  try {
    const rep = await run(["--redis", redis.url, "--expect-machines", String(machines), "--users", String(devices), "--rate", "500", "--duration", "45s", "--interval", "1s"], 2, certDir, async (pid) => {
      await Bun.sleep(15_000); // joining and ramp
      const a = cpuSeconds(pid);
      await Bun.sleep(20_000);
      steady = ((cpuSeconds(pid) - a) / 20) * 100;
    }, env);
    emit({
      figure: "federation",
      signed,
      dropped_messages: rep.dropped_messages ?? {},
      machines: rep.machines.length,
      processes: rep.workers.processes,
      devices,
      connected: rep.users.connected,
      publishes: rep.stats.publish.count,
      controller_cpu_percent_steady: +steady.toFixed(2),
    });
  } finally {
    for (const a of agents) if (a.exitCode === null) a.kill("SIGTERM");
    await Promise.all(agents.map((a) => a.exited));
    await redis.stop();
    rmSync(state, { recursive: true, force: true });
  }
}

// The verifying consumer runs in the supervisor process (the workers run the devices): the
// supervisor's CPU with and without --verify, over the same steady window, in one run each.
if (only.has("verify")) {
  const devices = Number(values["verify-rate"]);
  const certDir = await certs(devices);
  const consumer = join(tmpdir(), "cicada-bench-verify");
  if (!existsSync(join(consumer, "verify.crt"))) {
    const { issuedIdentity } = await import("../test/helpers/testbed.ts");
    const id = issuedIdentity(certDir);
    const { mkdirSync, writeFileSync } = await import("node:fs");
    mkdirSync(consumer, { recursive: true });
    writeFileSync(join(consumer, "verify.crt"), id.cert);
    writeFileSync(join(consumer, "verify.key"), id.key, { mode: 0o600 });
  }
  const cpu: Record<string, number> = {};
  for (const verify of [false, true]) {
    log(`verify${verify ? "" : " (baseline)"}: ${devices} devices publishing every 1 s over 2 workers and 2 brokers; supervisor CPU over a 20 s steady window`);
    const extra = verify ? ["--verify", "--verify-cert", join(consumer, "verify.crt"), "--verify-key", join(consumer, "verify.key"), "--verify-connections", values["verify-connections"]!] : [];
    const rep = await run(["--users", String(devices), "--workers", "2", "--rate", "1000", "--duration", "40s", "--interval", "1s", ...extra], 2, certDir, async (pid) => {
      await Bun.sleep(15_000); // ramp
      const a = cpuSeconds(pid);
      await Bun.sleep(20_000);
      cpu[String(verify)] = cpuSeconds(pid) - a;
    });
    if (!verify) continue;
    const i = rep.integrity;
    const rate = rep.stats.publish.rate_per_s;
    emit({
      figure: "verify",
      devices,
      consumer_links: 2 * rep.config.verify_connections,
      published_per_s: rate,
      published: i.published,
      delivered: i.delivered,
      lost: i.lost,
      duplicated: i.duplicated,
      delivery_p99_ms: i.delivery_p99_ms,
      kept_up: i.lost === 0 && rep.health.kept_up,
      supervisor_cpu_s_baseline: +cpu.false!.toFixed(2),
      supervisor_cpu_s_verify: +cpu.true!.toFixed(2),
      consumer_cpu_us_per_message: +(((cpu.true! - cpu.false!) * 1e6) / (rate * 20)).toFixed(1),
    });
  }
}
