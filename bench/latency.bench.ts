#!/usr/bin/env bun
/**
 * The latency floor: what cicada reports for publish → PUBACK at a low rate, against the true
 * round trip to the same broker. The round trip is a bare socket in this process sending one
 * QoS 1 PUBLISH and waiting for its PUBACK, one at a time, paced as the devices are. Then
 * `cicada run` (one process, plain TCP, QoS 1) publishes at --rate msg/s; its report gives the
 * publish row (from each publish's scheduled time) and the puback phase (from its write).
 * Both against one mosquitto, in turns; one JSON line each, then the differences:
 *   bun bench/latency.bench.ts [--rate 100] [--devices 10] [--seconds 15] [--rounds 2] [--pin]
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as mqtt from "mqtt-packet";
import { startBroker } from "../scripts/lib/testbed.ts";
import { makeCerts } from "../test/helpers/swarm.ts";

const { values } = parseArgs({
  options: {
    rate: { type: "string", default: "100" },
    devices: { type: "string", default: "10" },
    seconds: { type: "string", default: "15" },
    rounds: { type: "string", default: "2" },
    pin: { type: "boolean", default: false },
  },
});
const rate = Number(values.rate);
const devices = Number(values.devices);
const seconds = Number(values.seconds);
const log = (s: string) => process.stderr.write(`# ${s}\n`);
const MAIN = join(import.meta.dir, "../src/cli/main.ts");
const pin = (core: number) => (values.pin ? ["taskset", "-c", String(core)] : []);

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};
const r3 = (x: number) => Math.round(x * 1000) / 1000;

/** `n` QoS 1 PUBLISH → PUBACK round trips on one bare socket, one every 1000/rate ms; ms each. */
async function bareRoundTrips(port: number, n: number): Promise<number[]> {
  const parser = mqtt.parser({ protocolVersion: 4 });
  let waiting: ((p: mqtt.Packet) => void) | null = null;
  parser.on("packet", (p) => waiting?.(p));
  const next = () => new Promise<mqtt.Packet>((resolve) => (waiting = resolve));
  const connack = next();
  const sock = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      open: (s) => void s.write(mqtt.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: "bare-rtt", clean: true, keepalive: 60 })),
      data: (_s, d) => void parser.parse(Buffer.from(d)),
    },
  });
  await connack;
  const payload = Buffer.from(JSON.stringify({ timestamp: Date.now(), seq: 1 }).padEnd(38));
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const bytes = mqtt.generate({ cmd: "publish", topic: "bench/bare/attrs", payload, qos: 1, messageId: (i % 65535) + 1, retain: false, dup: false });
    const ack = next();
    const t0 = performance.now();
    sock.write(bytes);
    await ack;
    out.push(performance.now() - t0);
    await Bun.sleep(1000 / rate);
  }
  sock.end();
  return out;
}

const state = mkdtempSync(join(tmpdir(), "cicada-latency-"));
const certs = join(state, "cert");
await makeCerts(certs, devices);
const broker = await startBroker({ certDir: certs, stateDir: state, verbose: false, plain: true });
if (values.pin) Bun.spawnSync(["taskset", "-pc", "1", String(broker.pid)]);
try {
  for (let round = 0; round < Number(values.rounds); round++) {
    const rtt = await bareRoundTrips(broker.port, Math.min(3000, Math.round(rate * seconds)));
    const bare = { bench: "latency", what: "bare_round_trip", round, samples: rtt.length, p50_ms: r3(quantile(rtt, 0.5)), p99_ms: r3(quantile(rtt, 0.99)) };
    console.log(JSON.stringify(bare));
    const report = join(state, `r${round}.json`);
    const args = ["run", "--transport", "tcp", "--certs", certs, "--port", String(broker.port), "--users", String(devices), "--rate", "1000", "--msg-rate", String(rate), "--duration", `${seconds + 2}s`, "--workers", "1", "--reset-stats", "--report", report];
    const run = Bun.spawnSync([...pin(0), process.execPath, MAIN, ...args], { stdout: "ignore", stderr: "pipe" });
    if (run.exitCode !== 0) throw new Error(`cicada run exited ${run.exitCode}: ${run.stderr.toString().slice(-500)}`);
    const rep = JSON.parse(readFileSync(report, "utf8"));
    const row = { bench: "latency", what: "cicada", round, rate, devices, publishes: rep.stats.publish.count, publish_p50_ms: rep.stats.publish.p50_ms, publish_p99_ms: rep.stats.publish.p99_ms, puback_p50_ms: rep.phases.puback.p50_ms, puback_p99_ms: rep.phases.puback.p99_ms, loop_lag_p99_ms: rep.health.loop_lag_p99_ms };
    console.log(JSON.stringify(row));
    console.log(JSON.stringify({ bench: "latency", what: "over_round_trip", round, publish_p50_ms: r3(row.publish_p50_ms - bare.p50_ms), puback_p50_ms: r3(row.puback_p50_ms - bare.p50_ms) }));
  }
} finally {
  await broker.stop();
  rmSync(state, { recursive: true, force: true });
}
log("done");
