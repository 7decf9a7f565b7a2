/** `cicada run` as a supervisor of worker processes, against real mosquitto. */
import { describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Probe } from "../helpers/probe.ts";
import { waitFor } from "../helpers/broker.ts";
import { makeCerts, swarmConfig } from "../helpers/swarm.ts";
import { planWorkers, Supervisor } from "../../src/cluster/supervisor.ts";
import { HAVE_MOSQUITTO, issuedIdentity, startBroker } from "../helpers/testbed.ts";
import { sh, tempDir } from "../helpers/tmp.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");

function connectedClients(log: string): string[] {
  return [...log.matchAll(/New client connected from \S+ as (\S+) /g)].map((m) => m[1]!);
}

describe.skipIf(!HAVE_MOSQUITTO)("worker processes", () => {
  test("two workers: disjoint devices, and merged counts equal what the broker saw", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 40);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const id = issuedIdentity(certDir);
    await using probe = Probe.connect({ port: broker.port, clientId: id.cn, ...id });
    await probe.connack;
    await probe.subscribe("+/attrs", 1);
    const report = join(tmp.path, "r.json");
    const proc = Bun.spawn([process.execPath, MAIN, "run", "--certs", certDir, "--port", String(broker.port), "--users", "40", "--rate", "100", "--workers", "2", "--duration", "4s", "--interval", "300ms..500ms", "--report", report], { stdio: ["ignore", "pipe", "pipe"] });
    expect(await proc.exited).toBe(0);
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.workers.processes).toBe(2);
    expect(rep.workers.list.map((w: { connected: number }) => w.connected)).toEqual([20, 20]);
    expect(rep.stats.connect.count).toBe(40);
    const clients = connectedClients(readFileSync(broker.log, "utf8")).filter((c) => c.startsWith("admin:"));
    expect(clients.length).toBe(40);
    expect(new Set(clients).size).toBe(40);
    await waitFor(() => probe.packets.filter((p) => p.cmd === "publish").length >= rep.stats.publish.count, "the probe to see every publish");
    // Every acked publish was seen by the broker's subscriber, and nothing more was sent.
    await Bun.sleep(300);
    expect(probe.packets.filter((p) => p.cmd === "publish").length).toBe(rep.stats.publish.count);
  });

  test("kill -9 a worker: noticed, replaced, its devices come back", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 20);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const report = join(tmp.path, "r.json");
    const proc = Bun.spawn([process.execPath, MAIN, "run", "--certs", certDir, "--port", String(broker.port), "--users", "20", "--workers", "2", "--duration", "60s", "--interval", "300ms..500ms", "--reconnect-min", "0.1", "--reconnect-max", "0.5", "--report", report], { stdio: ["ignore", "pipe", "pipe"] });
    let err = "";
    void (async () => {
      for await (const chunk of proc.stderr) err += new TextDecoder().decode(chunk);
    })();
    await waitFor(() => connectedClients(readFileSync(broker.log, "utf8")).length >= 20, "20 devices at the broker");
    const children = (await sh(["pgrep", "-P", String(proc.pid)])).stdout.trim().split("\n").map(Number);
    expect(children.length).toBe(2);
    // The supervisor knows what a worker held from its status, sent every second: let one carry the 10 links.
    await Bun.sleep(1500);
    process.kill(children[0]!, "SIGKILL");
    await waitFor(() => err.includes("restarting it"), "the supervisor to notice", 5000);
    // The replacement reconnects the same 10 devices: 30 connections in all at the broker.
    await waitFor(() => connectedClients(readFileSync(broker.log, "utf8")).length >= 30, "the devices to come back", 20_000);
    const workers = (await sh(["pgrep", "-P", String(proc.pid)])).stdout.trim().split("\n").map(Number);
    expect(workers.length).toBe(2);
    proc.kill("SIGINT");
    expect(await proc.exited).toBe(130);
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.workers.restarts).toBe(1);
    expect(rep.users.connected).toBe(20);
    // The killed worker's 10 links ended with it.
    expect(rep.errors.disconnect.worker_lost).toBe(10);
    // Every worker process is gone, by its pid (exited children are re-parented, so pgrep -P would find none either way).
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    await waitFor(() => workers.every((pid) => !alive(pid)), "the worker processes to exit", 5000);
  });

  test("a worker busy for 8 s is waited for, not killed; one frozen (SIGSTOP) is killed after 5 s and replaced", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 20);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    // Once each worker process has run 2.5 s (it has reported by then), one device's timer blocks
    // its event loop for 8 s: it sends nothing meanwhile, and runs.
    const scenario = join(tmp.path, "blocker.ts");
    writeFileSync(
      scenario,
      `import { defineScenario } from "cicada/scenario";
const loaded = Date.now();
let blocked = false;
export default defineScenario({
  name: "blocker",
  every: [{ name: "block", interval: "1s", run() {
    if (blocked || Date.now() - loaded < 2500) return;
    blocked = true;
    const until = Date.now() + 8000;
    while (Date.now() < until) {}
  } }],
});
`,
    );
    const report = join(tmp.path, "r.json");
    const proc = Bun.spawn([process.execPath, MAIN, "run", "--certs", certDir, "--port", String(broker.port), "--users", "20", "--workers", "2", "--scenario", scenario, "--duration", "60s", "--reconnect-min", "0.1", "--reconnect-max", "0.5", "--report", report], { stdio: ["ignore", "pipe", "pipe"] });
    let err = "";
    void (async () => {
      for await (const chunk of proc.stderr) err += new TextDecoder().decode(chunk);
    })();
    await waitFor(() => (err.match(/answered again/g) ?? []).length === 2, "both workers to be waited for and answer again", 20_000);
    expect(err).toMatch(/worker \d \(pid \d+\) silent for \d+ s but running/);
    expect(err).not.toContain("killing it");
    await waitFor(() => connectedClients(readFileSync(broker.log, "utf8")).length >= 20, "20 devices at the broker");
    const children = (await sh(["pgrep", "-P", String(proc.pid)])).stdout.trim().split("\n").map(Number);
    expect(children.length).toBe(2);
    process.kill(children[0]!, "SIGSTOP");
    await waitFor(() => err.includes("and not running; killing it"), "the supervisor to kill the frozen worker", 10_000);
    await waitFor(() => err.includes("restarting it"), "the supervisor to replace it", 5000);
    // The replacement's first connect blocks again (a new process), is waited for, and its devices come back.
    await waitFor(() => connectedClients(readFileSync(broker.log, "utf8")).length >= 30, "the devices to come back", 30_000);
    proc.kill("SIGINT");
    expect(await proc.exited).toBe(130);
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.workers.restarts).toBe(1);
  }, 90_000);

  test("workers use the ids their supervisor listed, not a listing of their own, as users and ranges grow", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    const all = (await makeCerts(certDir, 12)).ids;
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    // The supervisor's listing was taken before the first 4 certificates were made: its index 0 is
    // the directory's 5th id. A worker that listed the directory itself would dial d00000 first.
    const listed = all.slice(4);
    const swarm = swarmConfig([{ host: "127.0.0.1", port: broker.port }], { tls: true, caPem: readFileSync(join(certDir, "ca.crt"), "utf8"), users: 4, rate: 100, intervalMs: [5000, 5000] });
    const sup = new Supervisor(planWorkers({ certDir, synthetic: false, ranges: [[0, 6]], workers: 2, swarm }), () => {}, null, listed);
    sup.start();
    try {
      await waitFor(() => sup.snapshot().connected === 4, "4 devices connected");
      // Each worker is named the ids of the positions it runs: more users, more names.
      sup.setUsers(6);
      await waitFor(() => sup.snapshot().connected === 6, "6 devices connected");
      // The ranges grow: each worker is named its new positions with them.
      sup.assign([[0, 8]], 8, 100);
      await waitFor(() => sup.snapshot().connected === 8, "8 devices connected");
    } finally {
      await sup.stop();
    }
    const clients = connectedClients(readFileSync(broker.log, "utf8")).filter((c) => c.startsWith("admin:"));
    expect(clients.sort()).toEqual(listed.map((id) => `admin:${id}`));
    expect(sup.snapshot().stats.rows.connect.failures).toBe(0);
    expect(sup.snapshot().stats.rows.connect.count).toBe(8);
  }, 30_000);
});
