#!/usr/bin/env bun
/**
 * --msg-rate as the knob: the whole `cicada run` (one process, mTLS) is asked for a total rate,
 * or `max`; a subscriber on the broker counts what arrives over a timed window, and the run's
 * CPU over that window gives µs per publish (+ PUBACK at QoS 1). With --pin, cicada runs on
 * core 0 and mosquitto on core 1 (taskset), so "max" shows what one cicada core sustains and
 * the broker's core load shows when it became the limit. One JSON line per rate and QoS:
 * With --tcp the broker listens on plain TCP and the devices are made-up ids without TLS. With
 * --count broker nothing subscribes: the broker's own count of PUBLISH received
 * ($SYS/broker/publish/messages/received, once a second) is the measure, so the broker does not
 * also deliver each message.
 *   bun bench/msgrate.bench.ts [--rates 500,2000,max] [--qos 1] [--devices 1000] [--window 10] [--pin] [--tcp] [--count subscriber|broker]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startBroker } from "../scripts/lib/testbed.ts";
import { Probe } from "../test/helpers/probe.ts";
import { issuedIdentity } from "../test/helpers/testbed.ts";
import { cpuUs, ensureCerts } from "./fixtures/common.ts";

const { values } = parseArgs({
  options: {
    rates: { type: "string", default: "500,2000" },
    qos: { type: "string", default: "1" },
    inflight: { type: "string", default: "8" },
    pin: { type: "boolean", default: false },
    tcp: { type: "boolean", default: false },
    devices: { type: "string", default: "1000" },
    window: { type: "string", default: "10" },
    count: { type: "string", default: "subscriber" },
    certs: { type: "string", default: join(tmpdir(), "cicada-bench-certs-ec") },
  },
});
const devices = Number(values.devices);
const windowS = Number(values.window);
const log = (s: string) => process.stderr.write(`# ${s}\n`);
const MAIN = join(import.meta.dir, "../src/cli/main.ts");

const root = await ensureCerts(values.certs!, devices, "ec", log);
const state = mkdtempSync(join(tmpdir(), "cicada-msgrate-"));
const broker = await startBroker({ certDir: root, stateDir: state, verbose: false, plain: values.tcp });
try {
  const id = issuedIdentity(root);
  const probe = Probe.connect({ port: broker.port, clientId: id.cn, ...id, plain: values.tcp });
  await probe.connack;
  const byBroker = values.count === "broker";
  await probe.subscribe(byBroker ? "$SYS/broker/publish/messages/received" : "+/attrs", 0);
  /** The broker's running count, read from its latest $SYS message. */
  const brokerCount = () => {
    for (let i = probe.packets.length - 1; i >= 0; i--) {
      const p = probe.packets[i]!;
      if (p.cmd === "publish") return Number(p.payload.toString());
    }
    return 0;
  };
  const seen = () => (byBroker ? brokerCount() : probe.packets.length);
  const pin = (core: number, argv: string[]) => (values.pin ? ["taskset", "-c", String(core), ...argv] : argv);
  if (values.pin) Bun.spawnSync(["taskset", "-pc", "1", String(broker.pid)]);
  for (const qos of values.qos!.split(",")) {
    for (const target of values.rates!.split(",")) {
      const ramp = devices / 500;
      const max = target === "max";
      const run = Bun.spawn(
        pin(0, [process.execPath, MAIN, "run", ...(values.tcp ? ["--no-tls", "--certs", join(state, "none")] : ["--certs", root]), "--port", String(broker.port), "--users", String(devices), "--rate", "500", "--qos", qos, "--inflight", values.inflight!, "--msg-rate", target, "--workers", "1", "--duration", `${Math.ceil(ramp + windowS + 8)}s`]),
        { stdio: ["ignore", "ignore", "inherit"] },
      );
      // Past the ramp and every device's first interval.
      await Bun.sleep((ramp + 2 + (max ? 0 : devices / Number(target))) * 1000);
      const n0 = seen();
      const c0 = cpuUs(run.pid);
      const b0 = cpuUs(broker.pid);
      const t0 = performance.now();
      await Bun.sleep(windowS * 1000);
      const n = seen() - n0;
      const cpu = cpuUs(run.pid) - c0;
      const brokerCpu = cpuUs(broker.pid) - b0;
      const secs = (performance.now() - t0) / 1000;
      await run.exited;
      const measured = n / secs;
      console.log(
        JSON.stringify({
          bench: "msgrate",
          devices,
          qos: Number(qos),
          target_msgs_per_s: max ? "max" : Number(target),
          measured_msgs_per_s: Math.round(measured * 10) / 10,
          ...(max ? {} : { error_percent: Math.round(((measured - Number(target)) / Number(target)) * 1000) / 10 }),
          client_cpu_us_per_msg: Math.round((cpu / n) * 10) / 10,
          client_cpu_percent: Math.round((cpu / 1e4 / secs) * 10) / 10,
          broker_cpu_percent: Math.round((brokerCpu / 1e4 / secs) * 10) / 10,
          pinned: values.pin,
          transport: values.tcp ? "tcp" : "mtls",
          window_s: windowS,
          counted_by: byBroker ? "broker" : "subscriber",
        }),
      );
      if (!byBroker) probe.packets.length = 0;
    }
  }
  probe.close();
} finally {
  await broker.stop();
  rmSync(state, { recursive: true, force: true });
}
