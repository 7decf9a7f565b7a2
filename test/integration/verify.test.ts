/**
 * Every message accounted for end to end (`cicada run --verify`), against real mosquitto: a
 * verifying consumer with its own certificate counts what the broker delivered by each device's
 * seq; the report's integrity block and its thresholds say whether the platform delivered what
 * it acknowledged — including a broker whose ACL acks and drops every publish (MQTT 3.1.1).
 */
import { describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeCerts } from "../helpers/swarm.ts";
import { freePort, startRedis } from "../../scripts/lib/testbed.ts";
import { HAVE_MOSQUITTO, HAVE_REDIS, issuedIdentity, startBroker } from "../helpers/testbed.ts";
import { cicada, spawnCicada, tempDir } from "../helpers/tmp.ts";
import { createApp } from "../../src/api/app.ts";
import { RunManager } from "../../src/api/manager.ts";

/** The consumer's certificate and key (CN cicada-probe: the test broker lets it read and write everything). */
function verifyIdentity(certDir: string, dir: string): string[] {
  const id = issuedIdentity(certDir);
  writeFileSync(join(dir, "verify.crt"), id.cert);
  writeFileSync(join(dir, "verify.key"), id.key);
  return ["--verify", "--verify-cert", join(dir, "verify.crt"), "--verify-key", join(dir, "verify.key")];
}

describe.skipIf(!HAVE_MOSQUITTO)("--verify: every message accounted for end to end", () => {
  test("a healthy broker: every published message delivered once, every command received", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 10);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const report = join(tmp.path, "r.json");
    const r = await cicada([
      "run", "--certs", certDir, "--port", String(broker.port), "--users", "10", "--rate", "100", "--duration", "4s", "--interval", "200ms..300ms",
      ...verifyIdentity(certDir, tmp.path), "--actuate", "20", "--report", report, "--threshold", "integrity.lost==0", "--threshold", "integrity.duplicated==0",
    ]);
    expect(r.code).toBe(0);
    const i = JSON.parse(readFileSync(report, "utf8")).integrity;
    expect(i.published).toBeGreaterThan(100);
    expect(i.delivered).toBe(i.published);
    expect(i.delivered + i.lost).toBe(i.published);
    expect([i.lost, i.duplicated]).toEqual([0, 0]);
    expect(i.acked).toBe(i.published);
    expect(i.commands_sent).toBeGreaterThan(30);
    expect(i.commands_received).toBe(i.commands_sent);
    expect(i.commands_lost).toBe(0);
    expect(JSON.parse(readFileSync(report, "utf8")).health.command_gaps).toBe(0);
    expect(i.delivery_p99_ms).toBeGreaterThan(0);
    expect(r.stdout).toContain(`Integrity: ${i.delivered} of ${i.published} published delivered, 0 LOST`);
    expect(r.stdout).toContain("Thresholds: all 2 held.");
    // The consumer's rows in the stats table: every delivery, each with its latency.
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.stats.deliver.count).toBe(i.delivered);
    expect(rep.stats.e2e.count).toBe(i.delivered);
    expect(rep.throughput.delivered_per_s).toBeGreaterThan(0);
  }, 60_000);

  test("over the API, /metrics counts what the verifying consumer was delivered", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 10);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const manager = new RunManager(["--certs", certDir, "--port", String(broker.port), "--users", "10", "--rate", "100", "--interval", "100ms", "--duration", "1m", ...verifyIdentity(certDir, tmp.path)], join(tmp.path, "runs"), () => {});
    const app = createApp(manager);
    try {
      expect((await app.request("/api/runs", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" })).status).toBe(201);
      const delivered = async () => Number(/^cicada_delivered_total (\d+)$/m.exec(await (await app.request("/metrics")).text())?.[1] ?? NaN);
      const deadline = Date.now() + 15_000;
      while ((await delivered()) < 100 && Date.now() < deadline) await Bun.sleep(200);
      expect(await delivered()).toBeGreaterThanOrEqual(100);
      const text = await (await app.request("/metrics")).text();
      expect(Number(/^cicada_delivery_latency_seconds_count (\d+)$/m.exec(text)?.[1])).toBeGreaterThan(0);
    } finally {
      if (manager.session) await manager.stop(true);
    }
  }, 60_000);

  test("an ACL that acks and drops every publish (MQTT 3.1.1): acked, yet every message lost, and the threshold fails", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 5);
    // Devices may publish only to a topic they never use: mosquitto acks QoS 1 and delivers nothing.
    await using broker = await startBroker({ certDir, stateDir: tmp.path, devicePublishPattern: "%u/elsewhere" });
    const report = join(tmp.path, "r.json");
    const r = await cicada([
      "run", "--certs", certDir, "--port", String(broker.port), "--users", "5", "--rate", "100", "--duration", "3s", "--interval", "200ms..300ms",
      ...verifyIdentity(certDir, tmp.path), "--verify-wait", "1s", "--report", report, "--threshold", "integrity.lost==0",
    ]);
    expect(r.code).toBe(3);
    const rep = JSON.parse(readFileSync(report, "utf8"));
    // The broker acknowledged every publish: without --verify this run read 100 % success.
    expect(rep.stats.publish.failures).toBe(0);
    expect(rep.integrity.acked).toBe(rep.integrity.published);
    expect(rep.integrity.delivered).toBe(0);
    expect(rep.integrity.lost).toBe(rep.integrity.published);
    expect(rep.integrity.published).toBeGreaterThan(30);
    expect(rep.thresholds.broken).toEqual([{ expr: "integrity.lost==0", actual: rep.integrity.published }]);
  }, 60_000);

  test.skipIf(!HAVE_REDIS)("machines federated over Redis: each verifies its own devices, the controller adds them up", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 20);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using redis = await startRedis({ stateDir: tmp.path });
    const [, , cert, , key] = verifyIdentity(certDir, tmp.path);
    const machines = ["127.0.0.2", "127.0.0.3"].map((ip, i) =>
      spawnCicada(["worker", "--redis", redis.url, "--certs", certDir, "--workers", "1", "--source-address", ip, "--name", `m${i + 1}`, "--once", "--verify-cert", cert!, "--verify-key", key!]),
    );
    const report = join(tmp.path, "r.json");
    const metricsPort = await freePort();
    try {
      const run = cicada([
        "run", "--redis", redis.url, "--expect-machines", "2", "--certs", certDir, "--port", String(broker.port), "--users", "20", "--rate", "200", "--duration", "6s",
        "--interval", "200ms..300ms", "--verify", "--actuate", "10", "--report", report, "--metrics", `127.0.0.1:${metricsPort}`,
      ]);
      // The controller's /metrics labels each process with its machine: every device held, machine by machine.
      const held = new Map<string, number>();
      for (const end = Date.now() + 20_000; Date.now() < end && [...held.values()].reduce((a, n) => a + n, 0) < 20; await Bun.sleep(200)) {
        const text = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((res) => res.text(), () => "");
        held.clear();
        for (const m of text.matchAll(/^cicada_process_devices_connected\{machine="([^"]+)",slot="\d+",pid="\d+"\} (\d+)$/gm)) held.set(m[1]!, (held.get(m[1]!) ?? 0) + Number(m[2]));
      }
      expect([...held.keys()].sort()).toEqual(["m1", "m2"]);
      expect([...held.values()]).toEqual([10, 10]);
      const r = await run;
      expect(r.code).toBe(0);
      for (const m of machines) expect(await m.proc.exited).toBe(0);
    } finally {
      for (const m of machines) if (m.proc.exitCode === null) m.proc.kill("SIGKILL");
    }
    const i = JSON.parse(readFileSync(report, "utf8")).integrity;
    // Each machine heard every device's telemetry, but counted only its own: no double counting.
    expect(i.published).toBeGreaterThan(100);
    expect(i.delivered).toBe(i.published);
    expect([i.lost, i.duplicated]).toEqual([0, 0]);
    expect(i.commands_sent).toBeGreaterThan(20);
    expect(i.commands_received).toBe(i.commands_sent);
  }, 90_000);

  test("--verify over TLS without the consumer's own certificate is bad input", async () => {
    const r = await cicada(["run", "--verify", "--actuate", "5"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--verify over TLS needs the consumer's own --verify-cert and --verify-key");
    const a = await cicada(["run", "--actuate", "5"]);
    expect(a.code).toBe(2);
    expect(a.stderr).toContain("--actuate needs --verify");
  });
});
