/** Rate as the knob (--msg-rate) and connection-only runs (--publish off), against real mosquitto with mutual TLS, counted at the broker. */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { waitFor } from "../helpers/broker.ts";
import { Probe } from "../helpers/probe.ts";
import { makeCerts } from "../helpers/swarm.ts";
import { startRedis } from "../../scripts/lib/testbed.ts";
import { consumerFiles, HAVE_MOSQUITTO, HAVE_REDIS, probeOn, startBroker } from "../helpers/testbed.ts";
import { brokerConnections, cicada, spawnCicada, tempDir } from "../helpers/tmp.ts";
import { createApp } from "../../src/api/app.ts";
import { RunManager } from "../../src/api/manager.ts";

const publishes = (p: Probe) => p.packets.filter((x) => x.cmd === "publish").length;

/** msg/s the broker delivers to `probe` over the next `ms`, timed here. */
async function rateAt(probe: Probe, ms: number): Promise<number> {
  const n0 = publishes(probe);
  const t0 = performance.now();
  await Bun.sleep(ms);
  return ((publishes(probe) - n0) * 1000) / (performance.now() - t0);
}

/** A run's control API, driven in process. */
function apiOf(manager: RunManager) {
  const app = createApp(manager);
  return (method: string, path: string, body?: unknown) => app.request(path, { method, headers: { "content-type": "application/json" }, ...(body ? { body: JSON.stringify(body) } : {}) });
}

describe.skipIf(!HAVE_MOSQUITTO)("--msg-rate and --publish off, with mosquitto (mTLS)", () => {
  test("--msg-rate 200 over 40 devices in two processes: the broker sees 200 msg/s, within 2 %", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 40);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using probe = await probeOn(certDir, broker, "+/attrs", 0);
    const report = join(tmp.path, "r.json");
    const run = spawnCicada(["run", "--certs", certDir, "--port", String(broker.port), "--users", "40", "--rate", "400", "--msg-rate", "200", "--workers", "2", "--duration", "12s", "--report", report]);
    await waitFor(() => publishes(probe) > 0, "the first publish", 20_000);
    // Past the ramp and every device's first interval: count over 5 s, timed here.
    await Bun.sleep(2000);
    const rate = await rateAt(probe, 5000);
    expect(Math.abs(rate - 200) / 200).toBeLessThan(0.02);
    expect(await run.proc.exited).toBe(0);
    const r = JSON.parse(readFileSync(report, "utf8"));
    expect(r.config.msg_rate).toBe(200);
    expect(r.config.interval_ms).toEqual([200, 200]);
    // One topic per device: the rate is spread evenly over all 40.
    const topics = new Set(probe.packets.flatMap((p) => (p.cmd === "publish" ? [p.topic] : [])));
    expect(topics.size).toBe(40);
  }, 60_000);

  test("live over the API, across two worker processes: msg_rate 100 → 400, then paused, then resumed", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 20);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using probe = await probeOn(certDir, broker, "+/attrs", 0);
    // With a subscriber too, whose deliveries /metrics exposes.
    const sub = ["--subscribers", "1", ...consumerFiles(certDir, tmp.path)];
    const manager = new RunManager(["--certs", certDir, "--port", String(broker.port), "--users", "20", "--rate", "200", "--msg-rate", "100", "--workers", "2", "--duration", "2m", ...sub], join(tmp.path, "runs"), () => {});
    const call = apiOf(manager);
    const rateOver = (ms: number) => rateAt(probe, ms);
    try {
      expect((await call("POST", "/api/runs", {})).status).toBe(201);
      await waitFor(() => publishes(probe) > 0, "the first publish", 20_000);
      await Bun.sleep(1000);
      expect(Math.abs((await rateOver(3000)) - 100) / 100).toBeLessThan(0.05);
      expect((await call("PATCH", "/api/runs/current", { msg_rate: 400 })).status).toBe(200);
      await Bun.sleep(500);
      expect(Math.abs((await rateOver(3000)) - 400) / 400).toBeLessThan(0.05);
      // Past what one device can do: refused, nothing changed.
      const tooFast = await call("PATCH", "/api/runs/current", { msg_rate: 5000 });
      expect(tooFast.status).toBe(400);
      expect(((await tooFast.json()) as { errors: string[] }).errors[0]).toContain("a device publishes at most every 10 ms");
      expect((await call("PATCH", "/api/runs/current", { publish: "off" })).status).toBe(200);
      await Bun.sleep(300);
      expect(await rateOver(2000)).toBe(0);
      expect((await call("PATCH", "/api/runs/current", { publish: "on" })).status).toBe(200);
      await Bun.sleep(500);
      expect(Math.abs((await rateOver(3000)) - 400) / 400).toBeLessThan(0.05);
      // The subscriber's deliveries, scraped: as many as the probe got (both subscribed before the first publish).
      const metrics = await (await call("GET", "/metrics")).text();
      const delivered = Number(/^cicada_delivered_total (\d+)$/m.exec(metrics)?.[1]);
      expect(delivered).toBeGreaterThan(1000);
      expect(Math.abs(delivered - publishes(probe))).toBeLessThan(50);
      // The devices' counts reach the top once a second from each worker: behind by at most that.
      expect(Number(/^cicada_published_total (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThan(delivered - 2 * 400);
      // max: every device as fast as its window allows, far past 400/s; back to a number after.
      expect((await call("PATCH", "/api/runs/current", { msg_rate: "max" })).status).toBe(200);
      await Bun.sleep(500);
      expect(await rateOver(1000)).toBeGreaterThan(2000);
      expect((await call("PATCH", "/api/runs/current", { msg_rate: 400 })).status).toBe(200);
      // Paused devices stayed connected: nothing was lost or refused on the way.
      const stopped = (await (await call("POST", "/api/runs/current/stop")).json()) as { report: { stats: Record<string, { count: number; failures: number }> } };
      expect(stopped.report.stats.connect!.count).toBe(20);
      expect(stopped.report.stats.publish!.failures).toBe(0);
    } finally {
      if (manager.session) await manager.stop(true);
    }
  }, 90_000);

  test.skipIf(!HAVE_REDIS)("live over the API of a federated run: the machine applies a new msg_rate and a pause from the controller's beats", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 20);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using redis = await startRedis({ stateDir: tmp.path });
    await using probe = await probeOn(certDir, broker, "+/attrs", 0);
    const machine = spawnCicada(["worker", "--redis", redis.url, "--certs", certDir, "--workers", "1", "--name", "m1", "--once"]);
    const manager = new RunManager(["--redis", redis.url, "--certs", certDir, "--port", String(broker.port), "--users", "20", "--rate", "200", "--msg-rate", "50", "--duration", "2m"], join(tmp.path, "runs"), () => {});
    const call = apiOf(manager);
    const rateOver = (ms: number) => rateAt(probe, ms);
    try {
      expect((await call("POST", "/api/runs", {})).status).toBe(201);
      await waitFor(() => publishes(probe) > 0, "the first publish", 30_000);
      await Bun.sleep(1000);
      expect(Math.abs((await rateOver(3000)) - 50) / 50).toBeLessThan(0.1);
      expect((await call("PATCH", "/api/runs/current", { msg_rate: 200 })).status).toBe(200);
      // The next beat (every second) carries it.
      await Bun.sleep(2000);
      expect(Math.abs((await rateOver(3000)) - 200) / 200).toBeLessThan(0.05);
      expect((await call("PATCH", "/api/runs/current", { publish: "off" })).status).toBe(200);
      await Bun.sleep(2000);
      expect(await rateOver(2000)).toBe(0);
      await call("POST", "/api/runs/current/stop");
      expect(await machine.proc.exited).toBe(0);
    } finally {
      if (manager.session) await manager.stop(true);
      if (machine.proc.exitCode === null) machine.proc.kill("SIGKILL");
    }
  }, 90_000);

  test("--publish off: devices connect, subscribe and hold; not one publish", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 10);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using probe = await probeOn(certDir, broker, "+/attrs", 0);
    const report = join(tmp.path, "r.json");
    const r = await cicada(["run", "--certs", certDir, "--port", String(broker.port), "--users", "10", "--msg-rate", "1000", "--publish", "off", "--duration", "3s", "--report", report]);
    expect(r.code).toBe(0);
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.stats.connect.count).toBe(10);
    expect(rep.stats.subscribe.count).toBe(10);
    expect(rep.stats.publish?.count ?? 0).toBe(0);
    expect(rep.config.publish).toBe("off");
    expect(publishes(probe)).toBe(0);
    // Held to the end: every device said DISCONNECT, none was lost on the way.
    expect(rep.stats.disconnect.count).toBe(10);
    expect(rep.stats.disconnect.failures).toBe(0);
  }, 30_000);

  test("--topic, --payload and --retain: what the broker delivers is the templates filled in, per device and per message", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 5);
    // The ACL lets each device write under bench/<its CN>/.
    await using broker = await startBroker({ certDir, stateDir: tmp.path, devicePublishPattern: "bench/%u/#" });
    await using live = await probeOn(certDir, broker, "bench/#", 0);
    const payload = '{"timestamp":{timestamp},"seq":{seq},"v":{rand:1..6},"s":"{string:4}"}';
    const r = await cicada(["run", "--certs", certDir, "--port", String(broker.port), "--users", "5", "--interval", "100ms", "--duration", "3s", "--topic", "bench/{tenant}:{id}/{rand:3}", "--payload", payload, "--retain"]);
    expect(r.code).toBe(0);
    const got = live.packets.flatMap((p) => (p.cmd === "publish" ? [p] : []));
    expect(got.length).toBeGreaterThan(50);
    const devices = new Set<string>();
    for (const p of got) {
      const m = /^bench\/(admin:d\d{5})\/([0-2])$/.exec(p.topic);
      expect(m).not.toBeNull();
      devices.add(m![1]!);
      const body = JSON.parse(p.payload.toString());
      expect(body.timestamp).toBeGreaterThan(Date.now() - 60_000);
      expect(body.v).toBeGreaterThanOrEqual(1);
      expect(body.v).toBeLessThanOrEqual(6);
      expect(body.s).toMatch(/^[a-z0-9]{4}$/);
    }
    expect(devices.size).toBe(5);
    // Retained: a subscriber that comes later still gets the last message of each topic, flagged so.
    live.close();
    await using late = await probeOn(certDir, broker, "bench/#", 0);
    await waitFor(() => late.packets.filter((p) => p.cmd === "publish").length >= 5, "retained messages");
    const retained = late.packets.flatMap((p) => (p.cmd === "publish" ? [p] : []));
    expect(retained.every((p) => p.retain)).toBe(true);
    expect(new Set(retained.map((p) => p.topic)).size).toBe(retained.length);
  }, 30_000);

  test("--churn 10 over 10 devices: the broker sees about 10 reconnects a second, each counted once, every publish accounted for", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 10);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const report = join(tmp.path, "r.json");
    const r = await cicada(["run", "--certs", certDir, "--port", String(broker.port), "--users", "10", "--rate", "100", "--interval", "100ms", "--churn", "10", "--duration", "6s", "--report", report]);
    expect(r.code).toBe(0);
    const rep = JSON.parse(readFileSync(report, "utf8"));
    const atBroker = brokerConnections(readFileSync(broker.log, "utf8")).length;
    // ~6 s at 10/s, the first second partly ramp: every reconnect the report counts, the broker saw.
    // A reconnect still waiting for its CONNACK when the run stops is dropped uncounted, so the
    // broker may have seen one or two more.
    expect(atBroker - rep.stats.connect.count).toBeGreaterThanOrEqual(0);
    expect(atBroker - rep.stats.connect.count).toBeLessThanOrEqual(2);
    expect(atBroker - 10).toBeGreaterThan(40);
    expect(atBroker - 10).toBeLessThan(70);
    expect(rep.stats.connect.failures).toBe(0);
    expect(rep.stats.disconnect.count).toBe(rep.stats.connect.count);
    expect(rep.stats.disconnect.failures).toBe(0);
    expect(rep.config.churn_per_s).toBe(10);
    // Every publish ended one way: acked, or lost with a churned connection.
    expect(rep.publishes.sent).toBe(rep.stats.publish.count);
  }, 30_000);

  test("--subscribers: fan-in, fan-out and a shared subscription, each delivery counted against what was published", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 10);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    // The consumer's identity: the probe's, which the broker's ACL lets read every topic.
    const consumer = consumerFiles(certDir, tmp.path);
    const run = async (extra: string[]) => {
      const report = join(tmp.path, `r-${extra.join("")}.json`);
      const r = await cicada(["run", "--certs", certDir, "--port", String(broker.port), "--users", "10", "--rate", "100", "--interval", "100ms", "--duration", "4s", ...consumer, "--report", report, ...extra]);
      expect(r.code).toBe(0);
      return JSON.parse(readFileSync(report, "utf8")) as { thresholds?: { passed: boolean }; stats: { publish: { count: number } }; publishes: { sent: number }; subscribers: { connections: number; filter: string; delivered: number; published: number; delivered_per_s: number; bytes_per_s: number; e2e_p50_ms: number } };
    };
    // Fan-in: ten devices, one subscriber; QoS 1 both ways, so every acked publish is delivered once.
    const fanIn = await run(["--subscribers", "1", "--threshold", "subscribers.delivered_per_s>50", "--threshold", "subscribers.e2e_p99_ms<2000"]);
    expect(fanIn.subscribers.published).toBe(fanIn.publishes.sent);
    expect(fanIn.publishes.sent).toBeGreaterThan(200);
    expect(fanIn.subscribers.delivered).toBe(fanIn.stats.publish.count);
    expect(fanIn.subscribers.delivered_per_s).toBeGreaterThan(50);
    expect(fanIn.subscribers.bytes_per_s).toBeGreaterThan(fanIn.subscribers.delivered_per_s * 30);
    expect(fanIn.subscribers.e2e_p50_ms).toBeGreaterThan(0);
    expect(fanIn.thresholds?.passed).toBe(true);
    // Fan-out: three subscribers on the same filter, each gets every message.
    const fanOut = await run(["--subscribers", "3", "--sub-qos", "2"]);
    expect(fanOut.subscribers.delivered).toBe(3 * fanOut.stats.publish.count);
    // Shared: three subscribers in one group, each message goes to one of them.
    const shared = await run(["--subscribers", "3", "--shared", "g1"]);
    expect(shared.subscribers.filter).toBe("$share/g1/+/attrs");
    expect(shared.subscribers.delivered).toBe(shared.stats.publish.count);
  }, 60_000);

  test("--msg-rate max: each device keeps its in-flight window full; the window is the pace, never a failure", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 10);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using probe = await probeOn(certDir, broker, "+/attrs", 0);
    const report = join(tmp.path, "r.json");
    const r = await cicada(["run", "--certs", certDir, "--port", String(broker.port), "--users", "10", "--rate", "100", "--msg-rate", "max", "--inflight", "4", "--duration", "4s", "--report", report]);
    expect(r.code).toBe(0);
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.config.msg_rate).toBe("max");
    // Far past one publish per device per tick (10 devices × 100/s), with nothing skipped or failed.
    expect(rep.publishes.sent).toBeGreaterThan(4000);
    expect(rep.stats.publish.failures).toBe(0);
    expect(rep.publishes.sent).toBe(rep.stats.publish.count);
    await waitFor(() => publishes(probe) >= rep.stats.publish.count, "every acked publish at the probe");
  }, 30_000);

  test("bad --msg-rate is bad input: every problem listed, exit 2", async () => {
    const r = await cicada(["run", "--no-tls", "--users", "10", "--msg-rate", "5000", "--interval", "1s", "--publish", "maybe", "--threshold", "subscribers.bogus<1", "--shared", "g"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--msg-rate and --interval both set how often devices publish: give one");
    expect(r.stderr).toContain("--msg-rate 5000 over 10 devices is a publish every 2.00 ms per device; a device publishes at most every 10 ms: raise --users to at least 50 or lower --msg-rate");
    expect(r.stderr).toContain('--publish must be one of on, off (got "maybe")');
    expect(r.stderr).toContain('"subscribers.bogus<1": subscribers has delivered, delivered_per_s, bytes_per_s, published, e2e_p50_ms, e2e_p99_ms, e2e_max_ms (with --subscribers)');
    expect(r.stderr).toContain("--shared needs --subscribers");
  });
});
