/** The swarm against a real mosquitto with mutual TLS: what the broker saw, not what cicada says it did. */
import { describe, expect, test } from "bun:test";
import { copyFileSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { brokerCerts, freePort } from "../../scripts/lib/testbed.ts";
import { DirIdentities } from "../../src/store/dir.ts";
import { dialsLike, Verifier } from "../../src/engine/verifier.ts";
import { Probe } from "../helpers/probe.ts";
import { waitFor } from "../helpers/broker.ts";
import { makeCerts, startSwarm, swarmConfig } from "../helpers/swarm.ts";
import { HAVE_MOSQUITTO, issuedIdentity, probeOn, startBroker, type Broker } from "../helpers/testbed.ts";
import { cicada, tempDir } from "../helpers/tmp.ts";

function tlsConfig(certDir: string, broker: Broker, over: Parameters<typeof swarmConfig>[1] = {}) {
  return swarmConfig([{ host: "127.0.0.1", port: broker.port }], { tls: true, caPem: readFileSync(join(certDir, "ca.crt"), "utf8"), ...over });
}

describe.skipIf(!HAVE_MOSQUITTO)("swarm with mosquitto (mTLS)", () => {
  test("devices connect with their own certificates; every acked publish reached the broker", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    const ids = await makeCerts(certDir, 20);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using probe = await probeOn(certDir, broker, "+/attrs");
    const swarm = startSwarm(tlsConfig(certDir, broker, { users: 20, intervalMs: [200, 400] }), ids);
    await waitFor(() => swarm.stats.rows.publish.count >= 60, "60 acked publishes");
    await swarm.stop();
    const acked = swarm.stats.rows.publish.count;
    await waitFor(() => probe.packets.filter((p) => p.cmd === "publish").length >= acked, "the probe to see every acked publish");
    const seen = probe.packets.filter((p) => p.cmd === "publish");
    const senders = new Set(seen.map((p) => (p.cmd === "publish" ? p.topic : "")));
    expect(senders.size).toBe(20);
    for (const t of senders) expect(t).toMatch(/^admin:d\d{5}\/attrs$/);
    const first = seen[0]!;
    expect(first.cmd === "publish" && JSON.parse(first.payload.toString()).timestamp).toBeGreaterThan(Date.now() - 60_000);
    expect(swarm.stats.rows.connect.count).toBe(20);
    expect(swarm.stats.rows.subscribe.count).toBe(20);
    expect(swarm.stats.rows.connect.failures + swarm.stats.rows.publish.failures).toBe(0);
    // mosquitto logs each client with its certificate identity as username.
    const log = readFileSync(broker.log, "utf8");
    expect(log).toContain("u'admin:d00000'");
  });

  test("a message published to tenant:id/config reaches that device and is counted with its latency", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    const ids = await makeCerts(certDir, 3);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using swarm = startSwarm(tlsConfig(certDir, broker, { users: 3, intervalMs: [60_000, 60_000] }), ids);
    await waitFor(() => swarm.stats.rows.subscribe.count === 3, "3 subscriptions");
    const id = issuedIdentity(certDir);
    await using admin = Probe.connect({ port: broker.port, clientId: id.cn, ...id });
    await admin.connack;
    await admin.publish("admin:d00001/config", JSON.stringify({ timestamp: Date.now() - 250 }), 1);
    await waitFor(() => swarm.stats.rows.recv_message.count === 1, "the actuation to arrive");
    const s = swarm.stats.rows.recv_message.latency.summary();
    // Wall clock (ms resolution) against the monotonic clock: allow a couple of ms.
    expect(s.min_ms).toBeGreaterThanOrEqual(248);
    expect(s.max_ms).toBeLessThan(5000);
    // Another device's config topic is not delivered to the others.
    await Bun.sleep(200);
    expect(swarm.stats.rows.recv_message.count).toBe(1);
  });

  test("broker restart mid-run: every device reconnects", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    const ids = await makeCerts(certDir, 30);
    let broker = await startBroker({ certDir, stateDir: tmp.path });
    const port = broker.port;
    await using swarm = startSwarm(tlsConfig(certDir, broker, { users: 30, intervalMs: [500, 1000], reconnectMs: [100, 500] }), ids);
    await waitFor(() => swarm.snapshot().connected === 30, "30 connected");
    await broker.stop();
    await waitFor(() => swarm.snapshot().connected === 0, "every device to notice");
    expect(swarm.stats.rows.disconnect.failures).toBe(30);
    broker = await startBroker({ certDir, stateDir: tmp.path, port });
    try {
      await waitFor(() => swarm.snapshot().connected === 30, "30 reconnected", 30_000);
      expect(swarm.stats.rows.connect.count).toBe(60);
      const before = swarm.stats.rows.publish.count;
      await waitFor(() => swarm.stats.rows.publish.count > before + 30, "publishing again");
    } finally {
      await swarm.stop();
      await broker.stop();
    }
    // Every publish in flight when the broker went away ended as connection_lost; nothing is unaccounted for.
    const row = swarm.stats.rows.publish;
    expect(swarm.stats.sent).toBe(row.count + row.failures);
    expect([...row.reasons.keys()].every((r) => ["connection_lost", "ack_timeout", "unacked_at_stop"].includes(r))).toBe(true);
    expect(swarm.snapshot().inflight).toBe(0);
  });

  test("keepalive at QoS 0: publishing faster or slower than the keepalive, a healthy link is never dropped", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    const ids = await makeCerts(certDir, 8);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    // Keepalive 2 s: half the devices publish every 0.5 s (they hear nothing back at QoS 0), half every 5 s.
    const fast = startSwarm(tlsConfig(certDir, broker, { users: 4, qos: 0, keepaliveS: 2, intervalMs: [500, 500] }), ids);
    const slowIds = { count: 4, id: (i: number) => ids.id(i + 4), load: (i: number) => ids.load(i + 4) };
    const slow = startSwarm(tlsConfig(certDir, broker, { users: 4, qos: 0, keepaliveS: 2, intervalMs: [5000, 5000] }), slowIds);
    try {
      await Bun.sleep(9000);
      for (const s of [fast, slow]) {
        expect(s.stats.rows.connect.count).toBe(4);
        expect(s.stats.rows.disconnect.failures).toBe(0);
        expect(s.snapshot().connected).toBe(4);
      }
      expect(fast.stats.rows.publish.count).toBeGreaterThan(50);
    } finally {
      await fast.stop();
      await slow.stop();
    }
    // Neither side timed anyone out: mosquitto logs a keepalive expiry as "exceeded timeout".
    expect(readFileSync(broker.log, "utf8")).not.toContain("exceeded timeout");
  });

  for (const tlsStack of ["bun", "cicada"] as const) {
    test(`the broker's certificate (${tlsStack}'s TLS): pinned after one verification, an impostor refused, a rotation re-verified`, async () => {
      using tmp = tempDir();
      const certDir = join(tmp.path, "cert");
      const ids = await makeCerts(certDir, 12);
      let broker = await startBroker({ certDir, stateDir: tmp.path });
      const port = broker.port;
      // Slow enough that the first handshake completes before most devices dial.
      await using swarm = startSwarm(tlsConfig(certDir, broker, { users: 12, rate: 20, intervalMs: [60_000, 60_000], reconnectMs: [100, 300], tlsStack }), ids);
      try {
        await waitFor(() => swarm.snapshot().connected === 12, "12 connected");
        const first = swarm.serverPins.totals();
        expect(first.verified).toBeGreaterThanOrEqual(1);
        expect(first.matched).toBeGreaterThanOrEqual(8);
        expect(first.verified + first.matched).toBe(12);
        await broker.stop();
        await waitFor(() => swarm.snapshot().connected === 0, "every device to notice");

        // Same port, same client CA, but a broker certificate from another CA: it accepts the
        // devices' certificates, so only cicada's own check keeps them off it.
        const impostor = brokerCerts(join(tmp.path, "other-ca"));
        const logFrom = readFileSync(broker.log, "utf8").length;
        broker = await startBroker({ certDir, stateDir: tmp.path, port, serverCert: impostor });
        const refusedBefore = swarm.stats.rows.connect.failures;
        await waitFor(() => swarm.stats.rows.connect.failures >= refusedBefore + 24, "each device refused twice");
        expect(swarm.snapshot().connected).toBe(0);
        const reasons = [...swarm.stats.rows.connect.reasons.keys()];
        expect(reasons.some((r) => /cert|verify|signature|issuer/.test(r))).toBe(true);
        expect(readFileSync(broker.log, "utf8").slice(logFrom)).not.toContain("New client connected");
        await broker.stop();

        // A new certificate from the right CA: verified once more, then pinned too.
        rmSync(join(certDir, ".broker"), { recursive: true, force: true });
        broker = await startBroker({ certDir, stateDir: tmp.path, port });
        await waitFor(() => swarm.snapshot().connected === 12, "12 reconnected to the rotated broker", 30_000);
        expect(swarm.serverPins.totals().verified).toBeGreaterThan(first.verified);
      } finally {
        await swarm.stop();
        await broker.stop();
      }
    });
  }

  test("--tls-version: the devices offer that version alone, and a broker that will not speak it refuses them", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    const ids = await makeCerts(certDir, 4);
    // A broker of TLS 1.3 only, and one whose TLS 1.3 has no cipher suite a BoringSSL client offers
    // (OpenSSL picks the version first and then finds no shared cipher: only a 1.2 offer gets in).
    await using only13 = await startBroker({ certDir, stateDir: tmp.path, listenerExtra: ["tls_version tlsv1.3"] });
    await using only12 = await startBroker({ certDir, stateDir: tmp.path, listenerExtra: ["ciphers_tls1.3 TLS_AES_128_CCM_8_SHA256"] });
    const run = async (broker: Broker, tlsVersion: "1.2" | "1.3" | undefined) => {
      const from = readFileSync(broker.log, "utf8").length;
      await using swarm = startSwarm(tlsConfig(certDir, broker, { users: 4, intervalMs: [60_000, 60_000], reconnectMs: [200, 200], ...(tlsVersion ? { tlsVersion } : {}) }), ids);
      await waitFor(() => swarm.snapshot().connected === 4 || swarm.stats.rows.connect.failures >= 8, "4 connected or 8 refused");
      return { connected: swarm.snapshot().connected, log: readFileSync(broker.log, "utf8").slice(from) };
    };
    const refused12 = await run(only13, "1.2");
    expect(refused12.connected).toBe(0);
    expect(refused12.log).toContain("unsupported protocol");
    expect((await run(only13, "1.3")).connected).toBe(4);
    const offered13 = await run(only12, undefined);
    expect(offered13.connected).toBe(0);
    expect(offered13.log).toContain("no shared cipher");
    const only = await run(only12, "1.2");
    expect(only.connected).toBe(4);
    expect(only.log.match(/New client connected/g)?.length).toBe(4);

    // --tls-version 1.3 against OpenSSL's own server limited to 1.2 (not an MQTT broker: the
    // handshake is all there is to see).
    const said = await opensslServer(certDir, ["-tls1_2"], async (target) => {
      await using swarm = startSwarm(tlsConfig(certDir, target, { users: 1, tlsVersion: "1.3", reconnectMs: [60_000, 60_000] }), ids);
      await waitFor(() => swarm.stats.rows.connect.failures >= 1, "the 1.3-only device refused");
      expect(swarm.stats.rows.connect.count).toBe(0);
    });
    expect(said).toContain("unsupported protocol");
    // The verifying consumer dials as the devices do: offering 1.3 only, it is refused the same way.
    expect(await consumerDials(certDir, ["-tls1_2"], { tlsVersion: "1.3" }, "unsupported protocol")).toContain("unsupported protocol");
  });

  test("--tls-groups: the devices and the verifying consumer offer those key-exchange groups in that order; by default X25519, P-256, P-384 and no post-quantum share", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    const ids = await makeCerts(certDir, 1);
    // OpenSSL's own server asks for the client's certificate and prints the groups its ClientHello listed.
    const offered = (tlsGroups?: string) =>
      opensslServer(certDir, ["-Verify", "1", "-CAfile", join(certDir, "ca.crt")], async (target, said) => {
        await using _swarm = startSwarm(tlsConfig(certDir, target, { users: 1, reconnectMs: [60_000, 60_000], ...(tlsGroups ? { tlsGroups } : {}) }), ids);
        await waitFor(() => said().includes("Shared groups"), "the device's handshake done");
      });
    const byDefault = await offered();
    expect(byDefault).toContain("Supported groups: x25519:secp256r1:secp384r1\n");
    expect(byDefault).toContain("subject=CN = admin:");
    expect(await offered("P-384:P-256")).toContain("Supported groups: secp384r1:secp256r1\n");
    // Bun's own default, which --tls-groups restores: the hybrid first (OpenSSL 3.0 does not know it: <NULL>).
    expect(await offered("X25519MLKEM768:X25519:P-256:P-384")).toContain("Supported groups: <NULL>:x25519:secp256r1:secp384r1\n");
    // The verifying consumer dials as the devices do.
    expect(await consumerDials(certDir, [], { tlsGroups: "P-384:X25519" }, "Shared groups")).toContain("Supported groups: secp384r1:x25519\n");
  });

  test("QoS 2 and MQTT 5 against mosquitto", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    const ids = await makeCerts(certDir, 5);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using probe = await probeOn(certDir, broker, "+/attrs");
    await using swarm = startSwarm(tlsConfig(certDir, broker, { users: 5, qos: 2, version: 5 }), ids);
    await waitFor(() => swarm.stats.rows.publish.count >= 15, "15 QoS 2 publishes completed");
    expect(swarm.stats.rows.publish.failures).toBe(0);
    expect(swarm.stats.phases.puback.count).toBeGreaterThanOrEqual(15);
    const got = await probe.next((p) => p.cmd === "publish");
    expect(got.cmd === "publish" && got.topic).toMatch(/\/attrs$/);
  });

  test("--source-address: the broker sees the connections come from those addresses", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    const ids = await makeCerts(certDir, 6);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using swarm = startSwarm(tlsConfig(certDir, broker, { users: 6, sources: ["127.0.0.2", "127.0.0.3"], intervalMs: [60_000, 60_000] }), ids);
    await waitFor(() => swarm.snapshot().connected === 6, "6 connected");
    const log = readFileSync(broker.log, "utf8");
    expect(log.match(/New connection from 127\.0\.0\.2:/g)?.length).toBe(3);
    expect(log.match(/New connection from 127\.0\.0\.3:/g)?.length).toBe(3);
  });

  test("a device whose certificate was revoked is refused and counted", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 3);
    expect((await cicada(["certs", "revoke", "--ids", "d00001", "--dir", certDir])).code).toBe(0);
    // Revoked files leave the directory, so run with the revoked one restored as a live identity.
    copyFileSync(join(certDir, "revoke/d00001.crt"), join(certDir, "d00001.crt"));
    copyFileSync(join(certDir, "revoke/d00001.key"), join(certDir, "d00001.key"));
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using swarm = startSwarm(tlsConfig(certDir, broker, { users: 3, reconnectMs: [5000, 5000] }), new DirIdentities(certDir));
    await waitFor(() => swarm.stats.rows.connect.count === 2 && swarm.stats.rows.connect.failures >= 1, "2 accepted, 1 refused");
    expect(swarm.snapshot().connected).toBe(2);
  });
});

describe.skipIf(!HAVE_MOSQUITTO)("cicada run (the binary's code path)", () => {
  test("a short run writes a report whose counts match", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 10);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const r = await cicada(["run", "--certs", certDir, "--port", String(broker.port), "--users", "10", "--rate", "50", "--duration", "3s", "--interval", "300ms..500ms", "--report", join(tmp.path, "r.json")]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("connect");
    const rep = JSON.parse(readFileSync(join(tmp.path, "r.json"), "utf8"));
    expect(rep.stats.connect.count).toBe(10);
    expect(rep.stats.publish.count).toBeGreaterThan(20);
    expect(rep.stats.publish.failures).toBe(0);
    expect(rep.stats.disconnect.count).toBe(10);
    for (const k of ["count", "failures", "min_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms", "rate_per_s"]) expect(rep.stats.publish).toHaveProperty(k);
    expect(rep.config.users).toBe(10);
    expect(rep.health.kept_up).toBe(true);
  });

  test("SIGINT stops cleanly, writes the report and exits 130", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 5);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const report = join(tmp.path, "r.json");
    const proc = Bun.spawn([process.execPath, join(import.meta.dir, "../../src/cli/main.ts"), "run", "--certs", certDir, "--port", String(broker.port), "--users", "5", "--duration", "10m", "--report", report], { stdio: ["ignore", "pipe", "pipe"] });
    const err = new Response(proc.stderr).text();
    await waitFor(() => readFileSync(broker.log, "utf8").split("New client connected").length - 1 >= 5, "5 devices at the broker");
    proc.kill("SIGINT");
    expect(await proc.exited).toBe(130);
    expect(await err).toContain("interrupted");
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.interrupted).toBe(true);
    expect(rep.stats.connect.count).toBe(5);
    expect(rep.stats.disconnect.count).toBe(5);
  });

  test("--reset-stats: the report covers what follows the ramp", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 6);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const report = join(tmp.path, "r.json");
    const r = await cicada(["run", "--certs", certDir, "--port", String(broker.port), "--users", "6", "--rate", "100", "--duration", "5s", "--interval", "300ms..400ms", "--reset-stats", "--report", report]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("stats reset");
    const rep = JSON.parse(readFileSync(report, "utf8"));
    // The 6 connects happened before the reset; publishes and the disconnects at stop after it.
    expect(rep.stats.connect.count).toBe(0);
    expect(rep.stats.publish.count).toBeGreaterThan(6);
    expect(rep.stats.disconnect.count).toBe(6);
  });

  test("--reset-stats: the failures the reset drops are named on its line and kept in the report's ramp", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 4);
    // The broker comes up 1.5 s after the run: the ramp's first connects are refused.
    const port = await freePort();
    const report = join(tmp.path, "r.json");
    const run = cicada(["run", "--certs", certDir, "--port", String(port), "--users", "4", "--rate", "100", "--duration", "6s", "--reconnect-min", "0.2", "--reconnect-max", "0.4", "--reset-stats", "--report", report]);
    await Bun.sleep(1500);
    await using _broker = await startBroker({ certDir, stateDir: tmp.path, port });
    const r = await run;
    expect(r.code).toBe(0);
    const line = /all 4 devices connected: stats reset \(failures during the ramp: ([^)]*)\)/.exec(r.stderr);
    expect(line?.[1]).toMatch(/^connect econnrefused \d+$/);
    // The report keeps them apart, with the devices and when the reset came (after the broker's 1.5 s).
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.ramp.devices).toBe(4);
    expect(rep.ramp.seconds).toBeGreaterThanOrEqual(1.5);
    expect(rep.ramp.failures.connect.econnrefused).toBe(Number(/econnrefused (\d+)/.exec(line![1]!)![1]));
    expect(rep.errors.connect?.econnrefused).toBeUndefined();
  });

  test("bad flags are listed together and exit 2 before any connection", async () => {
    using tmp = tempDir();
    const r = await cicada(["run", "--users", "0", "--qos", "3", "--interval", "abc", "--duration", "-1", "--mqtt", "4", "--certs", join(tmp.path, "none")]);
    expect(r.code).toBe(2);
    for (const s of ["--users must be", "--qos must be", "--interval must be", "--duration must be", "--mqtt must be one of 3.1.1, 5", "cannot read CA certificate"]) expect(r.stderr).toContain(s);
  });

  test("more users than certificates: says how to make them", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 2);
    const r = await cicada(["run", "--certs", certDir, "--users", "5"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`run cicada certs create --devices 3 --certs ${certDir}`);
  });

  test("more users than one process can hold: says what to do instead of failing at the fd limit", async () => {
    const r = await cicada(["run", "--no-tls", "--users", "50000", "--port", "1", "--workers", "1"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("open files");
    expect(r.stderr).toContain("devices per process");
    expect(r.stderr).toContain("use --workers 3 or more");
  });

  test("dojot environment variables are honoured and flags win", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 4, "envt");
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const report = join(tmp.path, "r.json");
    const env = { DOJOT_MQTT_HOST: "127.0.0.1", DOJOT_MQTT_PORT: String(broker.port), TENANT: "envt", CERT_DIR: certDir, DOJOT_MQTT_QOS: "0", TASK_MIN_TIME: "200", TASK_MAX_TIME: "300" };
    const r = await cicada(["run", "--users", "4", "--duration", "2s", "--qos", "1", "--report", report], { env });
    expect(r.code).toBe(0);
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.config.tenant).toBe("envt");
    expect(rep.config.qos).toBe(1);
    expect(rep.config.interval_ms).toEqual([200, 300]);
    expect(rep.stats.connect.count).toBe(4);
    expect(readFileSync(broker.log, "utf8")).toContain("u'envt:d00000'");
  });
});

/**
 * The verifying consumer (`--verify`) dials OpenSSL's own TLS server (`serverArgs`) with the devices'
 * settings and `offer`; returns what the server printed once it says `until`.
 */
function consumerDials(certDir: string, serverArgs: string[], offer: Parameters<typeof swarmConfig>[1], until: string): Promise<string> {
  return opensslServer(certDir, serverArgs, async (target, said) => {
    const verifier = new Verifier({ ...dialsLike(tlsConfig(certDir, target, offer)), connections: 1, actuateRate: 0 });
    const started = verifier.start(5_000).catch(() => {});
    await waitFor(() => said().includes(until), `the consumer's handshake to end in "${until}"`);
    verifier.close();
    await started;
  });
}

/**
 * Runs `use` against OpenSSL's own TLS server (`openssl s_server` with the broker's certificate
 * and `args`; `said()` is what it has printed so far); returns all it printed.
 */
async function opensslServer(certDir: string, args: string[], use: (target: Broker, said: () => string) => Promise<void>): Promise<string> {
  const port = await freePort();
  const made = brokerCerts(certDir);
  const server = Bun.spawn(["openssl", "s_server", "-accept", `127.0.0.1:${port}`, "-cert", made.cert, "-key", made.key, ...args], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  let out = "";
  const read = async (stream: ReadableStream<Uint8Array>) => {
    const text = new TextDecoder();
    for await (const chunk of stream) out += text.decode(chunk, { stream: true });
  };
  const reading = Promise.all([read(server.stdout), read(server.stderr)]);
  try {
    await waitFor(() => out.includes("ACCEPT"), "openssl s_server listening");
    await use({ host: "127.0.0.1", port, log: "" } as unknown as Broker, () => out);
  } finally {
    server.kill();
    await reading;
  }
  return out;
}
