/**
 * Every benchmark mode over every transport, against real mosquitto: plain TCP, mutual TLS, and
 * WebSocket (ws, and wss with each device's certificate) through Debian's websockify in front of
 * mosquitto, whose own websockets listener is not built in here. What arrived is counted by a
 * probe subscribed at mosquitto itself.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { waitFor } from "../helpers/broker.ts";
import type { Probe } from "../helpers/probe.ts";
import { makeCerts } from "../helpers/swarm.ts";
import { brokerCerts } from "../../scripts/lib/testbed.ts";
import { consumerFiles, HAVE_MOSQUITTO, HAVE_WEBSOCKIFY, probeOn, startBroker, startWebsockify, type Broker } from "../helpers/testbed.ts";
import { cicada, spawnCicada, tempDir, type TempDir } from "../helpers/tmp.ts";

/** Each transport; tls and wss also with cicada's own TLS client (--tls-stack cicada) instead of Bun's. */
const TRANSPORTS = ["tcp", "tls", "ws", "wss", "tls+cicada", "wss+cicada"] as const;
type Kind = (typeof TRANSPORTS)[number];

const publishes = (p: Probe) => p.packets.filter((x) => x.cmd === "publish").length;

/** A broker reachable over one transport, and a probe at mosquitto itself. */
interface Bed {
  tmp: TempDir;
  certDir: string;
  broker: Broker;
  /** cicada's flags to reach it, and to let its subscribers in. */
  args: string[];
  consumer: string[];
  probe(filter: string, qos: 0 | 1, version?: 4 | 5): Promise<Probe>;
  stop(): Promise<void>;
}

async function bedFor(spec: Kind): Promise<Bed> {
  const [kind, stack] = spec.split("+") as ["tcp" | "tls" | "ws" | "wss", string | undefined];
  const tmp = tempDir();
  const certDir = join(tmp.path, "cert");
  await makeCerts(certDir, 10);
  const plain = kind !== "tls";
  const broker = await startBroker({ certDir, stateDir: tmp.path, plain });
  let front: { port: number; stop: () => Promise<void> } | undefined;
  if (kind === "ws") front = await startWebsockify({ target: broker, stateDir: tmp.path });
  if (kind === "wss") {
    const made = brokerCerts(certDir);
    front = await startWebsockify({ target: broker, stateDir: tmp.path, tls: { cert: made.cert, key: made.key, ca: join(certDir, "ca.crt") } });
  }
  const ws = kind === "ws" || kind === "wss" ? ["--ws-protocol", "binary"] : [];
  return {
    tmp,
    certDir,
    broker,
    args: ["--transport", kind, "--certs", certDir, "--port", String(front?.port ?? broker.port), ...ws, ...(stack ? ["--tls-stack", stack] : [])],
    consumer: kind === "tls" || kind === "wss" ? consumerFiles(certDir, tmp.path) : [],
    probe: (filter, qos, version = 4) => probeOn(certDir, broker, filter, qos, { plain, protocolVersion: version }),
    stop: async () => {
      await front?.stop();
      await broker.stop();
      tmp[Symbol.dispose]();
    },
  };
}

interface Report {
  config: Record<string, unknown>;
  stats: Record<string, { count: number; failures: number }>;
  errors: Record<string, Record<string, number>>;
  publishes: { sent: number; acked: number };
  duration_s: number;
  throughput: { connects_per_s: number; peak_connects_per_s?: number; sent_per_s: number; sent_mb_per_s: number; acked_per_s: number; delivered_per_s?: number; delivered_mb_per_s?: number };
  phases: Record<string, { count: number; p50_ms: number }>;
  health: { sessions_resumed: number; topic_alias_bytes_saved: number; no_matching_subscribers: number };
  subscribers?: { delivered: number; filter: string };
  notes?: string[];
}

/** `cicada run ARGS`, which must exit 0, with its report in `dir/NAME.json`: the report, and what the run printed. */
async function reportOf(dir: string, name: string, args: string[]): Promise<{ report: Report; printed: string }> {
  const path = join(dir, `${name}.json`);
  const r = await cicada(["run", ...args, "--report", path]);
  if (r.code !== 0) throw new Error(`cicada exited ${r.code}: ${r.stderr}`);
  return { report: JSON.parse(readFileSync(path, "utf8")) as Report, printed: r.stdout + r.stderr };
}

async function runOn(bed: Bed, name: string, extra: string[]): Promise<Report> {
  return (await reportOf(bed.tmp.path, name, [...bed.args, "--users", "10", "--rate", "200", ...extra])).report;
}

for (const spec of TRANSPORTS) {
  const kind = spec.split("+")[0];
  const needs = !HAVE_MOSQUITTO || ((kind === "ws" || kind === "wss") && !HAVE_WEBSOCKIFY);
  describe.skipIf(needs)(`over ${spec}`, () => {
    let bed: Bed;
    beforeAll(async () => {
      bed = await bedFor(spec);
    });
    afterAll(async () => {
      await bed?.stop();
    });

    test("pub-only at --msg-rate 300: the broker delivers 300 msg/s, within 2 %", async () => {
      await using probe = await bed.probe("+/attrs", 0);
      const run = spawnCicada(["run", ...bed.args, "--users", "10", "--rate", "200", "--msg-rate", "300", "--duration", "5s"]);
      await waitFor(() => publishes(probe) > 0, "the first publish", 20_000);
      await Bun.sleep(1000);
      const n0 = publishes(probe);
      const t0 = performance.now();
      await Bun.sleep(3000);
      const rate = ((publishes(probe) - n0) * 1000) / (performance.now() - t0);
      expect(Math.abs(rate - 300) / 300).toBeLessThan(0.02);
      expect(await run.proc.exited).toBe(0);
    }, 40_000);

    test("fan-in, fan-out and a shared subscription: every delivery counted against what was acked", async () => {
      const base = ["--interval", "100ms", "--duration", "2s", ...bed.consumer];
      const fanIn = await runOn(bed, "fan-in", [...base, "--subscribers", "1"]);
      expect(fanIn.stats.publish!.count).toBeGreaterThan(100);
      expect(fanIn.subscribers!.delivered).toBe(fanIn.stats.publish!.count);
      // The stats table's rows for what came out: deliver (every message) and e2e (each one's latency).
      expect(fanIn.stats.deliver!.count).toBe(fanIn.subscribers!.delivered);
      expect(fanIn.stats.e2e!.count).toBe(fanIn.subscribers!.delivered);
      expect(fanIn.throughput.delivered_per_s).toBeCloseTo(fanIn.throughput.acked_per_s, 0);
      // Sent is whole packets (more than the default 38-byte payload each), delivered is payloads.
      expect(fanIn.throughput.sent_mb_per_s).toBeGreaterThan((fanIn.throughput.sent_per_s * 38) / 1e6);
      expect(fanIn.throughput.delivered_mb_per_s).toBeGreaterThan(0);
      const fanOut = await runOn(bed, "fan-out", [...base, "--subscribers", "3"]);
      expect(fanOut.subscribers!.delivered).toBe(3 * fanOut.stats.publish!.count);
      const shared = await runOn(bed, "shared", [...base, "--subscribers", "3", "--shared", "g"]);
      expect(shared.subscribers!.filter).toBe("$share/g/+/attrs");
      expect(shared.subscribers!.delivered).toBe(shared.stats.publish!.count);
    }, 60_000);

    test("churn: reconnects counted once each, every publish accounted for", async () => {
      const rep = await runOn(bed, "churn", ["--interval", "100ms", "--churn", "5", "--duration", "4s"]);
      expect(rep.stats.connect!.count).toBeGreaterThan(10 + 10);
      // Each connect's phases, as far as the transport has them: TLS for tls and wss, the upgrade for ws and wss.
      // (An attempt still short of its CONNACK when the run stops has phases but no connect.)
      const phases = rep.phases;
      const connects = rep.stats.connect!.count;
      const between = (n: number) => n >= connects && n <= phases.tcp_connect!.count;
      expect(phases.tcp_connect!.count - connects).toBeLessThanOrEqual(2);
      expect(kind === "tls" || kind === "wss" ? between(phases.tls_handshake!.count) : phases.tls_handshake!.count === 0).toBe(true);
      expect(kind === "ws" || kind === "wss" ? between(phases.ws_upgrade!.count) : phases.ws_upgrade!.count === 0).toBe(true);
      expect(rep.stats.connect!.failures).toBe(0);
      expect(rep.stats.disconnect!.count).toBe(rep.stats.connect!.count);
      // The connection rate over the run, and its peak in a timeline window.
      expect(rep.throughput.connects_per_s).toBeCloseTo(rep.stats.connect!.count / rep.duration_s, 0);
      expect(rep.throughput.peak_connects_per_s!).toBeGreaterThanOrEqual(rep.throughput.connects_per_s);
      // Every publish ended one way: acked, or lost with a churned connection.
      const { connection_lost = 0, ...other } = rep.errors.publish ?? {};
      expect(other).toEqual({});
      expect(rep.publishes.sent).toBe(rep.stats.publish!.count + connection_lost);
    }, 30_000);

    test("persistent sessions (3.1.1 and 5): messages sent while the devices were away arrive when they come back", async () => {
      await using probe = await bed.probe("nothing/here", 1);
      const ids = Array.from({ length: 10 }, (_, i) => `admin:d${String(i).padStart(5, "0")}`);
      for (const mqtt of [["--mqtt", "3.1.1"], ["--mqtt", "5", "--session-expiry", "60"]]) {
        const hold = ["--clean", "false", "--publish", "off", "--duration", "1s", ...mqtt];
        await runOn(bed, `away-${mqtt[1]}`, hold);
        // The devices are gone: two commands each, queued by the broker in their sessions.
        for (const id of ids) for (let k = 1; k <= 2; k++) await probe.publish(`${id}/config`, JSON.stringify({ timestamp: Date.now(), seq: k }));
        const back = await runOn(bed, `back-${mqtt[1]}`, hold);
        expect(back.health.sessions_resumed).toBe(10);
        expect(back.stats.recv_message!.count).toBe(20);
      }
      // A clean session starts empty: what was sent meanwhile is not delivered.
      for (const id of ids) await probe.publish(`${id}/config`, JSON.stringify({ timestamp: Date.now(), seq: 3 }));
      const clean = await runOn(bed, "clean", ["--publish", "off", "--duration", "1s"]);
      expect(clean.health.sessions_resumed).toBe(0);
      expect(clean.stats.recv_message!.count).toBe(0);
    }, 60_000);

    test("MQTT 5 properties reach a subscriber; topic aliases stand in for the topic and their bytes saved are counted", async () => {
      await using probe = await bed.probe("+/attrs", 1, 5);
      const rep = await runOn(bed, "props", ["--mqtt", "5", "--interval", "100ms", "--duration", "3s", "--user-property", "site=lab", "--user-property", "site=b2", "--user-property", "run=7", "--content-type", "application/json", "--message-expiry", "600", "--topic-alias"]);
      await waitFor(() => publishes(probe) >= rep.stats.publish!.count, "every acked publish at the probe");
      const got = probe.packets.filter((p) => p.cmd === "publish");
      for (const p of got) {
        if (p.cmd !== "publish") continue;
        // The broker resolved the alias: the subscriber sees the device's full topic.
        expect(p.topic).toMatch(/^admin:d\d{5}\/attrs$/);
        expect(p.properties?.userProperties).toEqual({ site: ["lab", "b2"], run: "7" });
        expect(p.properties?.contentType).toBe("application/json");
        expect(p.properties?.messageExpiryInterval).toBeGreaterThan(590);
      }
      // Each device: its first publish carries topic and alias (3 bytes more), each later one
      // the alias alone (the topic's bytes fewer, the alias's 3 more).
      const topicBytes = "admin:d00000/attrs".length;
      const sent = rep.publishes.sent;
      expect(rep.health.topic_alias_bytes_saved).toBe((sent - 10) * (topicBytes - 3) - 10 * 3);
    }, 30_000);
  });
}

describe.skipIf(!HAVE_MOSQUITTO)("the server's MQTT 5 limits, from mosquitto's CONNACK", () => {
  test("Receive Maximum 2: QoS 2 at --msg-rate max with --inflight 8 keeps 2 in flight, and mosquitto refuses none as quota_exceeded", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 4);
    await using broker = await startBroker({ certDir, stateDir: tmp.path, plain: true, extra: ["max_inflight_messages 2"] });
    const { report: rep } = await reportOf(tmp.path, "r", ["--transport", "tcp", "--certs", certDir, "--port", String(broker.port), "--users", "4", "--mqtt", "5", "--qos", "2", "--msg-rate", "max", "--inflight", "8", "--duration", "3s"]);
    expect(rep.stats.publish!.count).toBeGreaterThan(500);
    expect(rep.stats.publish!.failures).toBe(0);
  }, 30_000);

  test("Maximum Packet Size 300: a larger publish is never sent (counted), the connection stays; No matching subscribers counted by name", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 4);
    await using broker = await startBroker({ certDir, stateDir: tmp.path, plain: true, extra: ["max_packet_size 300"] });
    const run = async (size: string) => (await reportOf(tmp.path, `r${size}`, ["--transport", "tcp", "--certs", certDir, "--port", String(broker.port), "--users", "4", "--mqtt", "5", "--interval", "100ms", "--payload-size", size, "--duration", "2s"])).report;
    const big = await run("400");
    expect(big.publishes.sent).toBe(0);
    expect(big.errors.publish?.over_server_maximum_packet_size).toBeGreaterThan(40);
    expect(big.stats.connect!.count).toBe(4);
    expect(big.stats.disconnect!.failures).toBe(0);
    // Small enough: sent, acked with 0x10 since nothing subscribes, each counted by its name.
    const small = await run("100");
    expect(small.stats.publish!.count).toBeGreaterThan(40);
    expect(small.health.no_matching_subscribers).toBe(small.stats.publish!.count);
  }, 30_000);

  test("bad MQTT settings are bad input: every problem listed, exit 2", async () => {
    const r = await cicada(["run", "--transport", "quic", "--user-property", "novalue", "--session-expiry", "60", "--topic-alias", "--ws-path", "x y"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--transport must be one of tcp, tls, ws, wss (got "quic")');
    expect(r.stderr).toContain("--session-expiry is an MQTT 5 property: add --mqtt 5");
    expect(r.stderr).toContain("--topic-alias is an MQTT 5 feature: add --mqtt 5");
    expect(r.stderr).toContain('--user-property must be KEY=VALUE (got "novalue")');
    const v = await cicada(["run", "--tls-version", "1.1"]);
    expect(v.code).toBe(2);
    expect(v.stderr).toContain('--tls-version must be one of 1.2, 1.3 (got "1.1")');
    const plain = await cicada(["run", "--transport", "tcp", "--tls-version", "1.2", "--tls-groups", "X25519"]);
    expect(plain.code).toBe(2);
    expect(plain.stderr).toContain("--tls-version needs TLS: --transport tls or wss");
    expect(plain.stderr).toContain("--tls-groups needs TLS: --transport tls or wss");
    const groups = await cicada(["run", "--tls-groups", "X25519:X448"]);
    expect(groups.code).toBe(2);
    expect(groups.stderr).toContain('--tls-groups names a group this TLS library does not know (it knows X25519, P-256, P-384, P-521, X25519MLKEM768) (got "X25519:X448")');
    const form = await cicada(["run", "--tls-groups", "X25519, P-256"]);
    expect(form.stderr).toContain('--tls-groups must be group names separated by colons, e.g. X25519:P-256 (got "X25519, P-256")');
  });

  test("--tls-stack cicada reaches every worker: a broker with no TLS 1.3 cipher suite they offer refuses them all with its alert; bad pairings are bad input", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 4);
    // Its TLS 1.3 offers only AES-128-CCM-8, which neither TLS client offers: OpenSSL picks 1.3, finds no cipher, and only a 1.2 offer gets in.
    await using only12 = await startBroker({ certDir, stateDir: tmp.path, listenerExtra: ["ciphers_tls1.3 TLS_AES_128_CCM_8_SHA256"] });
    const args = (stack: string) => ["--certs", certDir, "--port", String(only12.port), "--users", "4", "--workers", "2", "--interval", "1s", "--duration", "3s", "--tls-stack", stack];
    // Bun's TLS offering 1.2 alone: the same broker takes those devices.
    const bun = (await reportOf(tmp.path, "bun", [...args("bun"), "--tls-version", "1.2"])).report;
    expect(bun.config.tls_stack).toBe("bun");
    expect(bun.stats.connect!.count).toBe(4);
    const own = (await reportOf(tmp.path, "cicada", args("cicada"))).report;
    expect(own.config.tls_stack).toBe("cicada");
    expect(own.stats.connect?.count ?? 0).toBe(0);
    expect(own.errors.connect?.tls_alert_handshake_failure).toBeGreaterThanOrEqual(4);
    expect(readFileSync(only12.log, "utf8")).toContain("no shared cipher");
    const bad = await cicada(["run", "--tls-stack", "cicada", "--tls-version", "1.2", "--tls-groups", "X25519MLKEM768"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--tls-version 1.2 cannot go with --tls-stack cicada, which speaks TLS 1.3 only: drop one of them");
    expect(bad.stderr).toContain('--tls-groups names a group --tls-stack cicada does not compute (X25519MLKEM768; it computes X25519, P-256, P-384) (got "X25519MLKEM768")');
    const wrong = await cicada(["run", "--tls-stack", "openssl", "--transport", "tcp"]);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain('--tls-stack must be one of bun, cicada (got "openssl")');
    expect(wrong.stderr).toContain("--tls-stack needs TLS: --transport tls or wss");
  }, 40_000);

  test("--tls-groups reaches every worker's devices: P-256 alone connects to mosquitto, the post-quantum hybrid alone is refused by its OpenSSL 3", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 4);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const run = async (name: string, groups: string) => (await reportOf(tmp.path, name, ["--certs", certDir, "--port", String(broker.port), "--users", "4", "--workers", "2", "--interval", "1s", "--duration", "3s", "--tls-groups", groups])).report;
    const p256 = await run("p256", "P-256");
    expect(p256.config.tls_groups).toBe("P-256");
    expect(p256.stats.connect!.count).toBe(4);
    expect(p256.stats.publish!.count).toBeGreaterThanOrEqual(8);
    const pq = await run("pq", "X25519MLKEM768");
    expect(pq.stats.connect?.count ?? 0).toBe(0);
    expect(pq.stats.connect!.failures).toBeGreaterThanOrEqual(4);
    expect(readFileSync(broker.log, "utf8")).toContain("no suitable key share");
  }, 30_000);
});

describe.skipIf(!HAVE_MOSQUITTO)("--payload-size MIN..MAX", () => {
  test("each device publishes its own size within the range, the same on every message; the sizes spread over it", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 10);
    await using broker = await startBroker({ certDir, stateDir: tmp.path, plain: true });
    await using probe = await probeOn(certDir, broker, "+/attrs", 1, { plain: true });
    const r = await cicada(["run", "--transport", "tcp", "--certs", certDir, "--port", String(broker.port), "--users", "10", "--interval", "100ms", "--payload-size", "100..1KiB", "--duration", "2s"]);
    expect(r.code).toBe(0);
    const sizes = new Map<string, Set<number>>();
    for (const p of probe.packets) if (p.cmd === "publish") (sizes.get(p.topic) ?? sizes.set(p.topic, new Set()).get(p.topic)!).add(p.payload.length);
    expect(sizes.size).toBe(10);
    const each = [...sizes.values()].map((s) => [...s]);
    for (const s of each) {
      expect(s.length).toBe(1);
      expect(s[0]!).toBeGreaterThanOrEqual(100);
      expect(s[0]!).toBeLessThanOrEqual(1024);
    }
    expect(new Set(each.map((s) => s[0])).size).toBeGreaterThan(5);
  }, 30_000);
});

describe.skipIf(!HAVE_MOSQUITTO)("the broker's Nagle delay on CONNACK", () => {
  test("mosquitto's default set_tcp_nodelay false over mTLS: CONNACK at ~40 ms, and the report names the setting; with it true, no note", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 10);
    for (const nodelay of [false, true]) {
      await using broker = await startBroker({ certDir, stateDir: tmp.path, nodelay });
      const { report: rep, printed } = await reportOf(tmp.path, `r-${nodelay}`, ["--certs", certDir, "--port", String(broker.port), "--users", "10", "--rate", "20", "--duration", "2s"]);
      if (nodelay) {
        expect(rep.phases.connack.p50_ms).toBeLessThan(20);
        expect(rep.notes).toBeUndefined();
      } else {
        expect(rep.phases.connack.p50_ms).toBeGreaterThan(36);
        expect(rep.notes?.[0]).toContain('set "set_tcp_nodelay true"');
        expect(printed).toContain("Note: CONNACK p50");
      }
    }
  }, 30_000);
});

describe.skipIf(!HAVE_MOSQUITTO)("the server's MQTT 5 Retain Available and Server Keep Alive", () => {
  test("retained publishes the broker said it has no retain for are counted and never sent; its keepalive is the one used", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 4);
    // mosquitto's smallest max_keepalive is 10 s; its debug log shows each PINGREQ.
    await using broker = await startBroker({ certDir, stateDir: tmp.path, plain: true, extra: ["retain_available false", "max_keepalive 10", "log_type debug"] });
    const run = async (name: string, extra: string[]) => (await reportOf(tmp.path, name, ["--transport", "tcp", "--certs", certDir, "--port", String(broker.port), "--users", "4", "--mqtt", "5", "--interval", "100ms", ...extra])).report;
    // (mosquitto 2.0.11 does not say Maximum QoS in its CONNACK: swarm-fake.test.ts checks that one.)
    const retained = await run("retain", ["--qos", "1", "--retain", "--duration", "2s"]);
    expect(retained.publishes.sent).toBe(0);
    expect(retained.errors.publish?.retain_unavailable).toBeGreaterThan(40);
    // Idle for 12 s with a 60 s keepalive asked: each device pings after the broker's 10 s.
    const pings = () => readFileSync(broker.log, "utf8").match(/Received PINGREQ from admin:d\d{5}/g)?.length ?? 0;
    const before = pings();
    const idle = await run("idle", ["--publish", "off", "--keepalive", "60", "--duration", "12s"]);
    expect(idle.stats.connect!.count).toBe(4);
    expect(pings() - before).toBeGreaterThanOrEqual(4);
  }, 40_000);
});

describe.skipIf(!HAVE_MOSQUITTO)("persistent sessions under churn", () => {
  test("--clean false under churn at --msg-rate max, 3.1.1 and 5: every session resumed, every publish acked", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 10);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const run = async (name: string, extra: string[]) => (await reportOf(tmp.path, name, ["--certs", certDir, "--port", String(broker.port), "--users", "10", "--rate", "200", "--msg-rate", "max", "--qos", "1", "--churn", "5", "--duration", "4s", ...extra])).report;
    // (mosquitto acks too fast here to leave anything in flight at a churn; swarm-fake.test.ts
    // checks the resend against a broker that holds its acks.)
    for (const mqtt of [["--mqtt", "3.1.1"], ["--mqtt", "5"]]) {
      const kept = await run(`kept-${mqtt[1]}`, ["--clean", "false", ...mqtt]);
      expect(kept.health.sessions_resumed).toBeGreaterThan(5);
      expect(kept.errors.publish ?? {}).toEqual({});
      expect(kept.publishes.sent).toBe(kept.publishes.acked);
    }
  }, 40_000);
});
