/**
 * Machines federated over Redis: a controller (`cicada run --redis`) and `cicada worker`
 * processes standing in for machines, each with its own source address, against real
 * mosquitto and a real redis-server.
 */
import { describe, expect, test } from "bun:test";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Redis from "ioredis";
import { freePort, startRedis } from "../../scripts/lib/testbed.ts";
import { waitFor } from "../helpers/broker.ts";
import { Probe } from "../helpers/probe.ts";
import { makeCerts } from "../helpers/swarm.ts";
import { HAVE_MOSQUITTO, HAVE_REDIS, issuedIdentity, startBroker } from "../helpers/testbed.ts";
import { brokerConnections, spawnCicada, tempDir } from "../helpers/tmp.ts";

const connections = brokerConnections;
const cicada = spawnCicada;

describe.skipIf(!HAVE_MOSQUITTO || !HAVE_REDIS)("machines federated over Redis", () => {
  test("controller + two machines: disjoint ids, totals equal what the broker saw, a Redis restart loses no counts", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 40);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const password = "s3cret pass";
    let redis = await startRedis({ stateDir: tmp.path, password });
    const id = issuedIdentity(certDir);
    await using probe = Probe.connect({ port: broker.port, clientId: id.cn, ...id });
    await probe.connack;
    await probe.subscribe("+/attrs", 1);

    // Machines find Redis through dojot's variables; the controller through --redis plus REDIS_PASSWD.
    const env = { REDIS_HOST: "127.0.0.1", REDIS_PORT: String(redis.port), REDIS_PASSWD: password };
    const machines = ["127.0.0.2", "127.0.0.3"].map((ip, i) => cicada(["worker", "--certs", certDir, "--workers", "1", "--source-address", ip, "--name", `m${i + 1}`, "--once"], env));
    const report = join(tmp.path, "r.json");
    const ctl = cicada(
      ["run", "--redis", `redis://127.0.0.1:${redis.port}`, "--expect-machines", "2", "--certs", certDir, "--port", String(broker.port), "--users", "40", "--rate", "200", "--duration", "16s", "--interval", "300ms..500ms", "--report", report],
      { REDIS_PASSWD: password },
    );
    try {
      await waitFor(() => connections(readFileSync(broker.log, "utf8")).length >= 40, "40 devices at the broker", 20_000);
      // The registry shows each machine and its processes, kept alive by heartbeats.
      const client = new Redis(redis.url);
      let entry = { processes: [] as number[] };
      for (let i = 0; i < 30 && entry.processes.length === 0; i++, await Bun.sleep(100)) entry = JSON.parse((await client.get("cicada:machine:m1"))!);
      expect(entry.processes.length).toBe(1);
      expect(entry.processes[0]).toBeGreaterThan(0);
      expect(await client.pttl("cicada:machine:m2")).toBeGreaterThan(0);
      client.disconnect();
      // Redis goes away for 3 s mid-run and comes back on the same port.
      await redis.stop();
      await Bun.sleep(3000);
      redis = await startRedis({ stateDir: tmp.path, password, port: redis.port });
      expect(await ctl.proc.exited).toBe(0);
      for (const m of machines) expect(await m.proc.exited).toBe(0);
    } finally {
      for (const p of [ctl.proc, ...machines.map((m) => m.proc)]) if (p.exitCode === null) p.kill("SIGKILL");
      await redis.stop();
    }
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.machines.map((m: { id: string; users: number; lost: boolean }) => [m.id, m.users, m.lost]).sort()).toEqual([["m1", 20, false], ["m2", 20, false]]);
    expect(ctl.out.err).toContain("Redis");
    expect(machines[0]!.out.err).toContain("is back");

    const conns = connections(readFileSync(broker.log, "utf8"));
    // Each machine connected its own 20 devices from its own address; no id twice, no id taken over.
    expect(conns.length).toBe(40);
    expect(new Set(conns.map((c) => c.client)).size).toBe(40);
    expect(conns.filter((c) => c.ip === "127.0.0.2").length).toBe(20);
    expect(conns.filter((c) => c.ip === "127.0.0.3").length).toBe(20);
    expect(readFileSync(broker.log, "utf8")).not.toContain("already connected");
    expect(rep.stats.connect.count).toBe(40);
    // The totals include what was counted during the outage: every acked publish reached the probe.
    await waitFor(() => probe.packets.filter((p) => p.cmd === "publish").length >= rep.stats.publish.count, "the probe to see every publish");
    await Bun.sleep(300);
    expect(rep.stats.publish.count).toBeGreaterThan(80);
    expect(probe.packets.filter((p) => p.cmd === "publish").length).toBe(rep.stats.publish.count);
  }, 60_000);

  test("kill -9 a machine: lost, its share moves to the other once its ids are free; controller gone: devices stop", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 20);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using redis = await startRedis({ stateDir: tmp.path });
    const machines = ["127.0.0.2", "127.0.0.3"].map((ip, i) => cicada(["worker", "--redis", redis.url, "--certs", certDir, "--workers", "2", "--source-address", ip, "--name", `m${i + 1}`]));
    // Ids are reused once the lease (3 s) has lapsed and the broker has expired the sessions (1.5 × 4 s), plus 10 s.
    const ctl = cicada(["run", "--redis", redis.url, "--expect-machines", "2", "--grace", "3s", "--keepalive", "4", "--certs", certDir, "--port", String(broker.port), "--users", "20", "--rate", "200", "--duration", "120s", "--interval", "300ms..500ms", "--reconnect-min", "0.1", "--reconnect-max", "0.5"]);
    try {
      const log = () => readFileSync(broker.log, "utf8");
      await waitFor(() => connections(log()).length >= 20, "20 devices at the broker", 20_000);
      const before = connections(log());
      expect(before.filter((c) => c.ip === "127.0.0.3").length).toBe(10);
      machines[1]!.proc.kill("SIGKILL");
      await waitFor(() => ctl.out.err.includes("machine m2 lost"), "the controller to notice", 15_000);
      // After the grace its 10 ids go to m1, which connects them from its own address.
      await waitFor(() => connections(log()).filter((c) => c.ip === "127.0.0.2").length >= 20, "m1 to take over m2's devices", 30_000);
      const all = connections(log());
      expect(new Set(all.filter((c) => c.ip === "127.0.0.2").map((c) => c.client))).toEqual(new Set(before.map((c) => c.client)));
      // m2's worker stopped its devices when its agent died, before m1 reused the ids: never two at once.
      expect(log()).not.toContain("already connected");

      // A machine joins: m1 gives up half its share (the tail of its ranges), m3 takes it.
      machines.push(cicada(["worker", "--redis", redis.url, "--certs", certDir, "--workers", "1", "--source-address", "127.0.0.4", "--name", "m3"]));
      await waitFor(() => connections(log()).filter((c) => c.ip === "127.0.0.4").length >= 10, "m3 to take its share", 20_000);
      expect(log()).not.toContain("already connected");

      // The controller dies: after the 3 s grace m1 and m3 stop their devices cleanly (DISCONNECT).
      ctl.proc.kill("SIGKILL");
      await waitFor(() => machines[0]!.out.err.includes("no word from the controller") && machines[2]!.out.err.includes("no word from the controller"), "the machines to give up on the controller", 15_000);
      // m2's 10 when it died, m1's 10 handed to m3, then m1's and m3's 10 each.
      await waitFor(() => (log().match(/Client admin:\S+ disconnected\./g) ?? []).length >= 40, "every device to disconnect", 15_000);
      expect(machines[0]!.proc.exitCode).toBeNull(); // it waits for the next run
    } finally {
      for (const p of [ctl.proc, ...machines.map((m) => m.proc)]) if (p.exitCode === null) p.kill("SIGTERM");
      await Promise.all([ctl.proc.exited, ...machines.map((m) => m.proc.exited)]);
    }
  }, 90_000);

  test("rediss:// with the server's CA", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 4);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using redis = await startRedis({ stateDir: tmp.path, tlsCertDir: certDir });
    expect(redis.url.startsWith("rediss://")).toBe(true);
    const ca = join(certDir, "ca.crt");
    const m = cicada(["worker", "--redis", redis.url, "--redis-ca", ca, "--certs", certDir, "--workers", "1", "--once"]);
    const report = join(tmp.path, "r.json");
    const ctl = cicada(["run", "--redis", redis.url, "--redis-ca", ca, "--certs", certDir, "--port", String(broker.port), "--users", "4", "--rate", "100", "--duration", "3s", "--report", report]);
    expect(await ctl.proc.exited).toBe(0);
    expect(await m.proc.exited).toBe(0);
    expect(JSON.parse(readFileSync(report, "utf8")).stats.connect.count).toBe(4);
    // Without the CA the server's certificate is refused: a clear error, not a hang.
    const bad = cicada(["worker", "--redis", redis.url, "--certs", certDir]);
    expect(await bad.proc.exited).toBe(4);
    expect(bad.out.err).toContain("cannot reach Redis");
  }, 60_000);

  test("a scenario runs on a machine only as the machine's own file with the controller's content (SHA-256)", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 4);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using redis = await startRedis({ stateDir: tmp.path });
    const scenario = readFileSync(join(import.meta.dir, "../../scenarios/dojot.ts"), "utf8");
    for (const [dir, text] of [["ctl", scenario], ["same", scenario], ["edited", `${scenario}// edited\n`]] as const) {
      mkdirSync(join(tmp.path, dir));
      // The machine's copy under another name: found by content, not by name.
      writeFileSync(join(tmp.path, dir, dir === "same" ? "renamed.ts" : "dojot.ts"), text);
    }
    const env = { DOJOT_INTERVAL: "300ms" };
    const run = (report: string) =>
      cicada(["run", "--redis", redis.url, "--scenario", join(tmp.path, "ctl", "dojot.ts"), "--certs", certDir, "--port", String(broker.port), "--users", "4", "--rate", "100", "--duration", "3s", "--grace", "5s", "--report", report], env);
    const good = cicada(["worker", "--redis", redis.url, "--scenarios", join(tmp.path, "same"), "--certs", certDir, "--workers", "1", "--once"], env);
    const report = join(tmp.path, "r.json");
    expect(await run(report).proc.exited).toBe(0);
    expect(await good.proc.exited).toBe(0);
    const r = JSON.parse(readFileSync(report, "utf8"));
    expect(r.config.scenario).toBe("dojot");
    expect(r.stats.publish.count).toBeGreaterThan(10);

    // An edited copy is not the run's scenario: the machine runs nothing and says which file to copy.
    const edited = cicada(["worker", "--redis", redis.url, "--scenarios", join(tmp.path, "edited"), "--certs", certDir, "--workers", "1", "--once"], env);
    const ctl = run(join(tmp.path, "r2.json"));
    await waitFor(() => edited.out.err.includes("no file in"), "the machine refusing the scenario", 20_000);
    expect(edited.out.err).toContain("copy dojot's file");
    ctl.proc.kill("SIGINT");
    await ctl.proc.exited;
    edited.proc.kill("SIGINT");
    await edited.proc.exited;
    expect(readFileSync(broker.log, "utf8").split("\n").filter((l) => l.includes("New client connected")).length).toBe(4);
  }, 60_000);

  test("cicada worker --metrics: each machine serves its own devices, processes and counters, behind its token", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 6);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using redis = await startRedis({ stateDir: tmp.path });
    const port = await freePort();
    const token = "abcdefabcdefabcdef01";
    const m = cicada(["worker", "--redis", redis.url, "--certs", certDir, "--workers", "2", "--once", "--metrics", `127.0.0.1:${port}`, "--token", token]);
    await waitFor(() => m.out.err.includes(`metrics on http://127.0.0.1:${port}/metrics`), "the machine's metrics server");
    const scrape = (auth = true) => fetch(`http://127.0.0.1:${port}/metrics`, auth ? { headers: { authorization: `Bearer ${token}` } } : {});
    expect((await scrape(false)).status).toBe(401);
    const ctl = cicada(["run", "--redis", redis.url, "--certs", certDir, "--port", String(broker.port), "--users", "6", "--rate", "100", "--duration", "4s", "--interval", "200ms..300ms", "--report", join(tmp.path, "r.json")]);
    let text = "";
    for (const end = Date.now() + 20_000; !/cicada_devices_connected 6\b/.test(text) && Date.now() < end; await Bun.sleep(200)) text = await (await scrape()).text();
    expect(text).toMatch(/cicada_process_resident_memory_bytes\{machine="[^"]+",slot="0",pid="\d+"\} \d+/);
    expect(text).toMatch(/cicada_process_resident_memory_bytes\{machine="[^"]+",slot="1",pid="\d+"\} \d+/);
    expect(Number(/cicada_requests_total\{row="connect"\} (\d+)/.exec(text)![1])).toBe(6);
    expect(await ctl.proc.exited).toBe(0);
    expect(await m.proc.exited).toBe(0);
    const report = JSON.parse(readFileSync(join(tmp.path, "r.json"), "utf8"));
    expect(report.stats.connect.count).toBe(6);
  }, 60_000);

  test("bad input: every problem listed, exit 2", async () => {
    const w = cicada(["worker", "--redis", "http://x", "--workers", "zero"]);
    expect(await w.proc.exited).toBe(2);
    expect(w.out.err).toContain("redis:// or rediss://");
    expect(w.out.err).toContain("--workers");
    const r = cicada(["run", "--redis", "ftp://h", "--grace", "soon", "--no-tls"]);
    expect(await r.proc.exited).toBe(2);
    expect(r.out.err).toContain("--redis");
    expect(r.out.err).toContain("--grace");
  });
});
