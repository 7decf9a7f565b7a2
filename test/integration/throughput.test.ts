/** Rate as the knob (--msg-rate) and connection-only runs (--publish off), against real mosquitto with mutual TLS, counted at the broker. */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { waitFor } from "../helpers/broker.ts";
import { Probe } from "../helpers/probe.ts";
import { makeCerts } from "../helpers/swarm.ts";
import { HAVE_MOSQUITTO, issuedIdentity, startBroker } from "../helpers/testbed.ts";
import { cicada, spawnCicada, tempDir } from "../helpers/tmp.ts";

const publishes = (p: Probe) => p.packets.filter((x) => x.cmd === "publish").length;

describe.skipIf(!HAVE_MOSQUITTO)("--msg-rate and --publish off, with mosquitto (mTLS)", () => {
  test("--msg-rate 200 over 40 devices in two processes: the broker sees 200 msg/s, within 2 %", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 40);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const id = issuedIdentity(certDir);
    await using probe = Probe.connect({ port: broker.port, clientId: id.cn, ...id });
    await probe.connack;
    await probe.subscribe("+/attrs", 0);
    const report = join(tmp.path, "r.json");
    const run = spawnCicada(["run", "--certs", certDir, "--port", String(broker.port), "--users", "40", "--rate", "400", "--msg-rate", "200", "--workers", "2", "--duration", "12s", "--report", report]);
    await waitFor(() => publishes(probe) > 0, "the first publish", 20_000);
    // Past the ramp and every device's first interval: count over 5 s, timed here.
    await Bun.sleep(2000);
    const n0 = publishes(probe);
    const t0 = performance.now();
    await Bun.sleep(5000);
    const rate = ((publishes(probe) - n0) * 1000) / (performance.now() - t0);
    expect(Math.abs(rate - 200) / 200).toBeLessThan(0.02);
    expect(await run.proc.exited).toBe(0);
    const r = JSON.parse(readFileSync(report, "utf8"));
    expect(r.config.msg_rate).toBe(200);
    expect(r.config.interval_ms).toEqual([200, 200]);
    // One topic per device: the rate is spread evenly over all 40.
    const topics = new Set(probe.packets.flatMap((p) => (p.cmd === "publish" ? [p.topic] : [])));
    expect(topics.size).toBe(40);
  }, 60_000);

  test("--publish off: devices connect, subscribe and hold; not one publish", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 10);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const id = issuedIdentity(certDir);
    await using probe = Probe.connect({ port: broker.port, clientId: id.cn, ...id });
    await probe.connack;
    await probe.subscribe("+/attrs", 0);
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

  test("bad --msg-rate is bad input: every problem listed, exit 2", async () => {
    const r = await cicada(["run", "--no-tls", "--users", "10", "--msg-rate", "5000", "--interval", "1s", "--publish", "maybe"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--msg-rate and --interval both set how often devices publish: give one");
    expect(r.stderr).toContain("--msg-rate 5000 over 10 devices is a publish every 2.00 ms per device; a device publishes at most every 10 ms: raise --users to at least 50 or lower --msg-rate");
    expect(r.stderr).toContain('--publish must be one of on, off (got "maybe")');
  });
});
