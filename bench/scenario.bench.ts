#!/usr/bin/env bun
/**
 * What a scenario costs: the same fleet of mTLS devices run by `cicada run` as the built-in
 * dojot device, then as scenarios/dojot.ts (the same device written with the scenario API), then
 * as scenarios/tracker.ts with every tracker reporting every 5 s. Each run is held past its ramp
 * and first interval; over a timed window the whole process tree's CPU (the run and its worker
 * processes) and the brokers' count of PUBLISHes received ($SYS) give µs per message, CPU per
 * device, and RSS per device at the window's end. Modes alternate within a round, so the
 * ratios compare runs minutes apart on this noisy machine. One JSON line per run, then the ratios.
 * With --baseline DIR (a checkout of another commit, e.g. `git worktree add /tmp/base HEAD~1`), modes
 * baseline and baseline-5s run that commit's built-in device beside this one's.
 *   bun bench/scenario.bench.ts [--devices 20000] [--window 30] [--rounds 2] [--modes builtin,dojot,builtin-5s,tracker] [--ramp-rate 500] [--pin] [--baseline DIR]
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startBroker, type Broker } from "../scripts/lib/testbed.ts";
import { Probe } from "../test/helpers/probe.ts";
import { issuedIdentity } from "../test/helpers/testbed.ts";
import { cpuUs, ensureCerts, processTree, rssBytes } from "./fixtures/common.ts";

const { values } = parseArgs({
  options: {
    devices: { type: "string", default: "20000" },
    window: { type: "string", default: "30" },
    rounds: { type: "string", default: "2" },
    modes: { type: "string", default: "builtin,dojot,builtin-5s,tracker" },
    brokers: { type: "string", default: "2" },
    workers: { type: "string", default: "2" },
    pin: { type: "boolean", default: false },
    "ramp-rate": { type: "string", default: "500" },
    /** A checkout of another commit: modes baseline and baseline-5s run its built-in device (is the default run's cost unchanged?). */
    baseline: { type: "string" },
    certs: { type: "string", default: join(tmpdir(), "cicada-bench-certs-ec") },
  },
});
const devices = Number(values.devices);
const windowS = Number(values.window);
const log = (s: string) => process.stderr.write(`# ${s}\n`);
const MAIN = join(import.meta.dir, "../src/cli/main.ts");
const SCENARIOS = join(import.meta.dir, "../scenarios");
const RAMP_RATE = Number(values["ramp-rate"]);

/** What each mode runs: extra flags, environment, and how long until every device publishes steadily. */
const MODES: Record<string, { args: string[]; env: Record<string, string>; settleS: number; main?: string }> = {
  builtin: { args: [], env: {}, settleS: 31 },
  dojot: { args: ["--scenario", join(SCENARIOS, "dojot.ts")], env: {}, settleS: 31 },
  tracker: { args: ["--scenario", join(SCENARIOS, "tracker.ts")], env: { TRACKER_MOVING: "5s", TRACKER_PARKED: "5s" }, settleS: 6 },
  // The built-in device at the tracker's 5 s: what the tracker's own work adds at the same message rate.
  "builtin-5s": { args: ["--interval", "5s"], env: {}, settleS: 6 },
  ...(values.baseline
    ? {
        baseline: { args: [], env: {}, settleS: 31, main: join(values.baseline, "src/cli/main.ts") },
        "baseline-5s": { args: ["--interval", "5s"], env: {}, settleS: 6, main: join(values.baseline, "src/cli/main.ts") },
      }
    : {}),
};

const root = await ensureCerts(values.certs!, devices, "ec", log);

const state = mkdtempSync(join(tmpdir(), "cicada-scenario-bench-"));
const brokers: Broker[] = [];
const probes: Probe[] = [];
try {
  // A mosquitto holds at most ~20,000 connections here (its open-file limit): several share the fleet.
  for (let i = 0; i < Number(values.brokers); i++) brokers.push(await startBroker({ certDir: root, stateDir: state, verbose: false }));
  if (values.pin) for (const b of brokers) Bun.spawnSync(["taskset", "-pc", "1", String(b.pid)]);
  const id = issuedIdentity(root);
  for (const b of brokers) {
    // keepalive 0: the probe sends nothing for minutes, and must not be dropped for it.
    const p = Probe.connect({ port: b.port, clientId: id.cn, ...id, keepalive: 0 });
    await p.connack;
    await p.subscribe("$SYS/broker/publish/messages/received", 0);
    await p.subscribe("$SYS/broker/clients/connected", 0);
    probes.push(p);
  }
  /** The brokers' latest $SYS value of `topic`, added up. */
  const sys = (topic: string) => {
    let n = 0;
    for (const p of probes) {
      for (let i = p.packets.length - 1; i >= 0; i--) {
        const x = p.packets[i]!;
        if (x.cmd === "publish" && x.topic === topic) {
          n += Number(x.payload.toString());
          break;
        }
      }
    }
    return n;
  };
  const received = () => sys("$SYS/broker/publish/messages/received");
  const results: Record<string, { cpu: number[]; rss: number[] }> = {};
  for (let round = 1; round <= Number(values.rounds); round++) {
    for (const mode of values.modes!.split(",")) {
      const m = MODES[mode];
      if (!m) throw new Error(`unknown mode ${mode}: ${Object.keys(MODES).join(", ")}`);
      const ramp = devices / RAMP_RATE;
      const duration = Math.ceil(ramp * 4 + 60 + m.settleS + windowS);
      // The last run's devices gone first: the brokers still count them while they disconnect.
      const quiet = Date.now() + 120_000;
      while (sys("$SYS/broker/clients/connected") > probes.length && Date.now() < quiet) await Bun.sleep(500);
      await Bun.sleep(2000); // a fresh $SYS count, not the one from before this run's first connect
      const reportPath = join(state, `${mode}-${round}.json`);
      const argv = [process.execPath, m.main ?? MAIN, "run", "--report", reportPath, "--certs", root, "--port", brokers.map((b) => b.port).join(","), "--users", String(devices), "--rate", String(RAMP_RATE), "--workers", values.workers!, "--duration", `${duration}s`, ...m.args];
      const run = Bun.spawn(values.pin ? ["taskset", "-c", "0", ...argv] : argv, { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, ...m.env } });
      // Every device connected (the brokers say so: the ramp is slower than asked when they are busy with handshakes), then settled.
      const rampEnd = Date.now() + (ramp * 4 + 60) * 1000;
      while (sys("$SYS/broker/clients/connected") < devices + probes.length && Date.now() < rampEnd) await Bun.sleep(500);
      await Bun.sleep(m.settleS * 1000);
      const pids = processTree(run.pid);
      const n0 = received();
      const c0 = pids.reduce((a, p) => a + cpuUs(p), 0);
      const b0 = brokers.reduce((a, b) => a + cpuUs(b.pid), 0);
      const t0 = performance.now();
      await Bun.sleep(windowS * 1000);
      const n = received() - n0;
      const cpu = pids.reduce((a, p) => a + cpuUs(p), 0) - c0;
      const brokerCpu = brokers.reduce((a, b) => a + cpuUs(b.pid), 0) - b0;
      const rss = pids.reduce((a, p) => a + rssBytes(p), 0);
      const secs = (performance.now() - t0) / 1000;
      run.kill("SIGINT"); // the window is over; an interrupted run still writes its report
      const code = await run.exited;
      const report = existsSync(reportPath) ? (JSON.parse(readFileSync(reportPath, "utf8")) as { errors: Record<string, Record<string, number>>; stats: Record<string, { count: number }> }) : null;
      const core = cpu / 1e6 / secs;
      (results[mode] ??= { cpu: [], rss: [] }).cpu.push(cpu / secs / devices);
      results[mode]!.rss.push(rss / devices);
      console.log(
        JSON.stringify({
          bench: "scenario",
          mode,
          round,
          devices,
          processes: pids.length,
          exit: code,
          msgs_per_s: Math.round((n / secs) * 10) / 10,
          client_cpu_percent: Math.round(core * 1000) / 10,
          client_cpu_us_per_msg: n ? Math.round((cpu / n) * 10) / 10 : null,
          client_cpu_us_per_device_s: Math.round((cpu / secs / devices) * 100) / 100,
          devices_per_core: core > 0 ? Math.round(devices / core) : null,
          rss_bytes_per_device: Math.round(rss / devices),
          broker_cpu_percent: Math.round((brokerCpu / 1e4 / secs) * 10) / 10,
          connects: report?.stats.connect?.count ?? null,
          errors: report?.errors ?? null,
          window_s: windowS,
          pinned: values.pin,
        }),
      );
    }
  }
  const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
  const ratio = (a: string, b: string) => {
    const x = results[a];
    const y = results[b];
    if (!x || !y) return;
    console.log(
      JSON.stringify({
        bench: "scenario",
        ratio: `${a} / ${b}`,
        devices,
        cpu_ratio: Math.round((mean(x.cpu) / mean(y.cpu)) * 100) / 100,
        rss_ratio: Math.round((mean(x.rss) / mean(y.rss)) * 100) / 100,
        per_round_cpu: x.cpu.map((c, i) => Math.round((c / y.cpu[i]!) * 100) / 100),
        per_round_rss: x.rss.map((r, i) => Math.round((r / y.rss[i]!) * 100) / 100),
      }),
    );
  };
  ratio("builtin", "baseline");
  ratio("builtin-5s", "baseline-5s");
  ratio("tracker", "builtin-5s");
  ratio("dojot", "builtin");
} finally {
  for (const p of probes) p.close();
  for (const b of brokers) await b.stop();
  rmSync(state, { recursive: true, force: true });
}
