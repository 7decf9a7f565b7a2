/**
 * The federation under attack and under faults, with real redis-server and mosquitto: a second
 * Redis client forges, replays and floods control messages; a machine is frozen (SIGSTOP) past
 * its lease. Nothing that arrives over Redis may run a command, steer a machine or break the
 * rule that no identity is connected from two machines at once.
 */
import { describe, expect, test } from "bun:test";
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Redis from "ioredis";
import { startRedis } from "../../scripts/lib/testbed.ts";
import { CTL, UP, type Beat } from "../../src/cluster/redis-protocol.ts";
import { Seal } from "../../src/cluster/seal.ts";
import { waitFor } from "../helpers/broker.ts";
import { Probe } from "../helpers/probe.ts";
import { makeCerts, swarmConfig } from "../helpers/swarm.ts";
import { HAVE_MOSQUITTO, HAVE_REDIS, issuedIdentity, startBroker } from "../helpers/testbed.ts";
import { brokerConnections, cicada as runCicada, spawnCicada, tempDir } from "../helpers/tmp.ts";

const KEY = "f00dfeedcafebabe0123456789abcdef";

/** A beat as an attacker writes it: run devices of `machine` against `port`, with `lifecycle` as given (a hook, say). */
function forgedBeat(machine: string, port: number, lifecycle: object): Beat {
  const swarm = swarmConfig([{ host: "127.0.0.1", port }], { tls: true, insecure: true, users: 5, rate: 100, intervalMs: [200, 300] });
  return {
    t: "beat", run: `evil-${Date.now()}`, started: Date.now(), seq: 1, at: Date.now(), epoch: 0, grace_ms: 60_000, stop: false,
    swarm: { ...swarm, lifecycle } as Beat["swarm"], synthetic: false,
    assign: { [machine]: { v: 1, fence: 1, ranges: [[0, 5]], users: 5, rate: 100 } }, acks: {},
  };
}

/** Publishes `make()` on `channel` every 100 ms for `ms`. */
async function keepPublishing(redis: Redis, channel: string, make: () => string, ms: number): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end; await Bun.sleep(100)) await redis.publish(channel, make());
}

describe.skipIf(!HAVE_MOSQUITTO || !HAVE_REDIS)("federation security", () => {
  test("a forged beat with a shell hook and a revoke block runs nothing and connects nothing (loopback Redis, no key)", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 10);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using redis = await startRedis({ stateDir: tmp.path });
    const proof = join(tmp.path, "proof.txt");
    const m1 = spawnCicada(["worker", "--redis", redis.url, "--certs", certDir, "--workers", "1", "--name", "m1"]);
    const attacker = new Redis(redis.url);
    try {
      await waitFor(() => m1.out.err.includes("waiting for a controller"), "the machine to be ready");
      const lifecycle = {
        revoke: { max: 5, afterMs: 0, probability: 100 },
        signer: "local",
        crlWaitMs: 0,
        caDir: certDir,
        renewDir: join(certDir, "renew"),
        revokeDir: join(certDir, "revoke"),
        crlHook: `id > ${proof}`,
      };
      await keepPublishing(attacker, CTL, () => JSON.stringify(forgedBeat("m1", broker.port, lifecycle)), 3000);
      expect(m1.out.err).toContain("dropped control message: invalid");
      expect(existsSync(proof)).toBe(false);
      expect(readdirSync(join(certDir, "revoke"))).toEqual([]);
      expect(brokerConnections(readFileSync(broker.log, "utf8"))).toEqual([]);
    } finally {
      attacker.disconnect();
      m1.proc.kill("SIGTERM");
      await m1.proc.exited;
    }
  }, 30_000);

  test("with a cluster key: forged, wrongly signed, replayed and flooded messages are dropped; the run's totals still match the broker", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 10);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using redis = await startRedis({ stateDir: tmp.path });
    const keyFile = join(tmp.path, "cluster.key");
    writeFileSync(keyFile, `${KEY}\n`);
    chmodSync(keyFile, 0o600);
    const id = issuedIdentity(certDir);
    await using probe = Probe.connect({ port: broker.port, clientId: id.cn, ...id });
    await probe.connack;
    await probe.subscribe("+/attrs", 1);

    const m1 = spawnCicada(["worker", "--redis", redis.url, "--cluster-key", keyFile, "--certs", certDir, "--workers", "1", "--name", "m1", "--once"]);
    const attacker = new Redis(redis.url);
    const listener = new Redis(redis.url);
    const captured: { channel: string; text: string }[] = [];
    listener.on("message", (channel: string, text: string) => captured.push({ channel, text }));
    await listener.subscribe(CTL, UP);
    const report = join(tmp.path, "r.json");
    let ctl: ReturnType<typeof spawnCicada> | null = null;
    try {
      await waitFor(() => m1.out.err.includes("waiting for a controller"), "the machine to be ready");
      // An idle machine is not steered by unsigned beats, nor by beats signed with another key.
      const plan = { signer: "local", crlWaitMs: 0 };
      await keepPublishing(attacker, CTL, () => JSON.stringify(forgedBeat("m1", broker.port, plan)), 1500);
      const wrong = new Seal("not the cluster key at all");
      await keepPublishing(attacker, CTL, () => wrong.wrap(CTL, forgedBeat("m1", broker.port, plan)), 1500);
      expect(m1.out.err).toContain("dropped control message: unsigned");
      expect(m1.out.err).toContain("dropped control message: bad_mac");
      expect(brokerConnections(readFileSync(broker.log, "utf8"))).toEqual([]);

      ctl = spawnCicada(
        ["run", "--redis", redis.url, "--expect-machines", "1", "--certs", certDir, "--port", String(broker.port), "--users", "10", "--rate", "200", "--duration", "10s", "--interval", "300ms..500ms", "--report", report],
        { CICADA_CLUSTER_KEY: KEY },
      );
      await waitFor(() => brokerConnections(readFileSync(broker.log, "utf8")).length >= 10, "10 devices at the broker", 20_000);
      await waitFor(() => captured.filter((c) => c.channel === UP).length >= 2, "states to be captured");
      // A forged state far ahead in sequence would lock the real machine out if it were believed.
      const real = JSON.parse(JSON.parse(captured.find((c) => c.channel === UP)!.text).msg);
      await attacker.publish(UP, JSON.stringify({ ...real, seq: 1e12, connected: "<script>alert(1)</script>" }));
      await attacker.publish(UP, wrong.wrap(UP, { ...real, seq: 1e12 }));
      // Every captured message again (replays), then a flood of junk on both channels.
      for (const c of captured.splice(0)) await attacker.publish(c.channel, c.text);
      const flood = attacker.pipeline();
      for (let i = 0; i < 2000; i++) flood.publish(i % 2 ? CTL : UP, i % 3 ? `{"t":"beat","junk":${i}}` : "not json");
      await flood.exec();
      expect(await ctl.proc.exited).toBe(0);
      expect(await m1.proc.exited).toBe(0);
    } finally {
      for (const p of [ctl?.proc, m1.proc]) if (p && p.exitCode === null) p.kill("SIGKILL");
      attacker.disconnect();
      listener.disconnect();
    }
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.machines.map((m: { id: string; lost: boolean; users: number }) => [m.id, m.lost, m.users])).toEqual([["m1", false, 10]]);
    expect(rep.config.signed).toBe(true);
    // The controller dropped the forged, wrongly signed and replayed states and the junk.
    expect(rep.dropped_messages.unsigned).toBeGreaterThanOrEqual(1);
    expect(rep.dropped_messages.bad_mac).toBeGreaterThanOrEqual(1);
    expect(rep.dropped_messages.replayed).toBeGreaterThanOrEqual(2);
    expect(rep.dropped_messages.malformed + rep.dropped_messages.unsigned).toBeGreaterThanOrEqual(1000);
    expect(rep.machines[0].dropped).toBeGreaterThanOrEqual(1000);
    expect(m1.out.err).toContain("dropped control message: replayed");
    // The real machine kept counting: every acked publish reached the probe, each device connected once.
    const conns = brokerConnections(readFileSync(broker.log, "utf8"));
    expect(new Set(conns.map((c) => c.client)).size).toBe(10);
    expect(conns.length).toBe(10);
    expect(rep.stats.connect.count).toBe(10);
    await waitFor(() => probe.packets.filter((p) => p.cmd === "publish").length >= rep.stats.publish.count, "the probe to see every publish");
    expect(rep.stats.publish.count).toBeGreaterThan(50);
    expect(probe.packets.filter((p) => p.cmd === "publish").length).toBe(rep.stats.publish.count);
  }, 60_000);

  test("bad input: a Redis beyond loopback without a cluster key, or a short key, exits 2 before any connection", async () => {
    const w = await runCicada(["worker", "--redis", "redis://198.18.0.1:6379"]);
    expect(w.code).toBe(2);
    expect(w.stderr).toContain("--redis redis://198.18.0.1:6379 is reachable beyond this machine: give every machine the same --cluster-key FILE");
    const r = await runCicada(["run", "--redis", "redis://198.18.0.1:6379", "--no-tls"], { env: { CICADA_CLUSTER_KEY: "short" } });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("CICADA_CLUSTER_KEY must hold at least 16 characters (got 5)");
  });
});

describe.skipIf(!HAVE_MOSQUITTO || !HAVE_REDIS)("a frozen machine (SIGSTOP past its lease)", () => {
  /** Controller + two machines of 10 devices each; returns them with the broker log reader. */
  async function fleet(tmpPath: string, keepalive: number, durationS: number) {
    const certDir = join(tmpPath, "cert");
    await makeCerts(certDir, 20);
    const broker = await startBroker({ certDir, stateDir: tmpPath });
    const redis = await startRedis({ stateDir: tmpPath });
    const machines = ["127.0.0.2", "127.0.0.3"].map((ip, i) => spawnCicada(["worker", "--redis", redis.url, "--certs", certDir, "--workers", "1", "--source-address", ip, "--name", `m${i + 1}`, "--once"]));
    const ctl = spawnCicada([
      "run", "--redis", redis.url, "--expect-machines", "2", "--grace", "3s", "--keepalive", String(keepalive), "--certs", certDir, "--port", String(broker.port),
      "--users", "20", "--rate", "200", "--duration", `${durationS}s`, "--interval", "300ms..500ms", "--reconnect-min", "0.1", "--reconnect-max", "0.5",
    ]);
    const log = () => readFileSync(broker.log, "utf8");
    await waitFor(() => brokerConnections(log()).length >= 20, "20 devices at the broker", 20_000);
    const client = new Redis(redis.url);
    let workers: number[] = [];
    for (let i = 0; i < 50 && workers.length === 0; i++, await Bun.sleep(100)) workers = JSON.parse((await client.get("cicada:machine:m2")) ?? "{}").processes ?? [];
    client.disconnect();
    expect(workers.length).toBe(1);
    const close = async () => {
      for (const p of [ctl.proc, ...machines.map((m) => m.proc)]) {
        if (p.exitCode === null) p.kill("SIGCONT");
        if (p.exitCode === null) p.kill("SIGKILL");
      }
      await broker.stop();
      await redis.stop();
    };
    return { ctl, machines, log, m2: { agent: machines[1]!.proc.pid, workers }, close };
  }

  test("the whole machine frozen: its ids are not reused while the broker still holds its sessions; woken, it drops them instead of reconnecting", async () => {
    using tmp = tempDir();
    // keepalive 20 s: the broker holds a frozen device's session for 30 s. Reuse waits for that, not only the 3 s grace.
    const f = await fleet(tmp.path, 20, 45);
    try {
      for (const pid of [f.m2.agent, ...f.m2.workers]) process.kill(pid, "SIGSTOP");
      await waitFor(() => f.ctl.out.err.includes("machine m2 lost"), "the controller to notice", 15_000);
      expect(f.ctl.out.err).toMatch(/machine m2 lost .*reused in 4\d s/);
      await Bun.sleep(16_000);
      for (const pid of [f.m2.agent, ...f.m2.workers]) process.kill(pid, "SIGCONT");
      await waitFor(() => f.machines[1]!.out.err.includes("lease lapsed"), "m2 to drop its devices");
      expect(await f.ctl.proc.exited).toBe(0);
      for (const m of f.machines) expect(await m.proc.exited).toBe(0);
      expect(f.log()).not.toContain("already connected");
    } finally {
      await f.close();
    }
  }, 90_000);

  test("the agent frozen past reuse: its worker drops its devices when the lease lapses, the other machine takes them over, nothing is connected twice", async () => {
    using tmp = tempDir();
    // keepalive 4 s: ids are reused ~27 s after the freeze (lost at ~10 s, + max(grace, 6 s) + 10 s).
    const f = await fleet(tmp.path, 4, 55);
    try {
      process.kill(f.m2.agent, "SIGSTOP");
      await Bun.sleep(5000);
      // From here the lease has lapsed: m2's worker process, still running, must not dial anything.
      const from = f.log().length;
      await waitFor(() => brokerConnections(f.log()).filter((c) => c.ip === "127.0.0.2").length >= 20, "m1 to take over m2's devices", 40_000);
      const during = brokerConnections(f.log().slice(from));
      expect(during.filter((c) => c.ip === "127.0.0.3")).toEqual([]);
      process.kill(f.m2.agent, "SIGCONT");
      expect(await f.ctl.proc.exited).toBe(0);
      for (const m of f.machines) expect(await m.proc.exited).toBe(0);
      expect(f.log()).not.toContain("already connected");
    } finally {
      await f.close();
    }
  }, 120_000);
});
