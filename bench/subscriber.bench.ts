#!/usr/bin/env bun
/**
 * What a delivered message costs cicada's subscribers (--subscribers): the same `cicada run`
 * (one process, plain TCP, QoS 0, --msg-rate R) without and then with one subscriber on every
 * device's topic, CPU over the same window; the difference over the messages the broker sent
 * the subscriber ($SYS/broker/publish/messages/sent) is the subscriber's CPU per message.
 * cicada on core 0 and mosquitto on core 1 with --pin. One JSON line per run, then the figure:
 *   bun bench/subscriber.bench.ts [--rate 20000] [--devices 500] [--window 10] [--pin]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startBroker } from "../scripts/lib/testbed.ts";
import { Probe } from "../test/helpers/probe.ts";
import { cpuUs } from "./fixtures/common.ts";

const { values } = parseArgs({
  options: {
    rate: { type: "string", default: "20000" },
    devices: { type: "string", default: "500" },
    window: { type: "string", default: "10" },
    pin: { type: "boolean", default: false },
  },
});
const rate = Number(values.rate);
const devices = Number(values.devices);
const windowS = Number(values.window);
const MAIN = join(import.meta.dir, "../src/cli/main.ts");

const state = mkdtempSync(join(tmpdir(), "cicada-subscriber-"));
const broker = await startBroker({ certDir: join(state, "cert"), stateDir: state, verbose: false, plain: true });
if (values.pin) Bun.spawnSync(["taskset", "-pc", "1", String(broker.pid)]);
const sys = Probe.connect({ port: broker.port, plain: true, clientId: "bench-sys", ca: "", cert: "", key: "" });
await sys.connack;
await sys.subscribe("$SYS/broker/publish/messages/sent", 0);
/** The broker's running count of PUBLISH sent, from its latest $SYS message. */
const sent = () => {
  for (let i = sys.packets.length - 1; i >= 0; i--) {
    const p = sys.packets[i]!;
    if (p.cmd === "publish") return Number(p.payload.toString());
  }
  return 0;
};
try {
  const cpu: Record<string, { us: number; delivered: number }> = {};
  for (const subscribers of [0, 1]) {
    const args = ["run", "--no-tls", "--certs", join(state, "none"), "--port", String(broker.port), "--users", String(devices), "--rate", "1000", "--qos", "0", "--msg-rate", String(rate), "--workers", "1", "--duration", `${windowS + 6}s`];
    if (subscribers) args.push("--subscribers", "1", "--sub-qos", "0");
    const run = Bun.spawn([...(values.pin ? ["taskset", "-c", "0"] : []), process.execPath, MAIN, ...args], { stdio: ["ignore", "ignore", "ignore"] });
    await Bun.sleep(3000 + (devices / rate) * 1000);
    const c0 = cpuUs(run.pid);
    const s0 = sent();
    const t0 = performance.now();
    await Bun.sleep(windowS * 1000);
    const us = cpuUs(run.pid) - c0;
    const delivered = sent() - s0;
    const secs = (performance.now() - t0) / 1000;
    await run.exited;
    cpu[subscribers] = { us, delivered };
    console.log(JSON.stringify({ bench: "subscriber", subscribers, rate, devices, client_cpu_percent: Math.round((us / 1e4 / secs) * 10) / 10, delivered_per_s: Math.round(delivered / secs), pinned: values.pin }));
  }
  const extra = cpu[1]!.us - cpu[0]!.us;
  console.log(JSON.stringify({ bench: "subscriber", what: "cpu_us_per_delivered_message", value: Math.round((extra / cpu[1]!.delivered) * 100) / 100, delivered: cpu[1]!.delivered }));
} finally {
  sys.close();
  await broker.stop();
  rmSync(state, { recursive: true, force: true });
}
