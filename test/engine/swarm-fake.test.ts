/** The swarm against an in-process broker: refusals, silence, garbage, QoS 2, MQTT 5, the ramp. */
import { describe, expect, test } from "bun:test";
import { FakeBroker, waitFor } from "../helpers/broker.ts";
import { plainIds, startSwarm, swarmConfig } from "../helpers/swarm.ts";
import { leaseClock } from "../../src/engine/scheduler.ts";
import { checkScenario } from "../../src/scenario/load.ts";
import type { Scenario } from "../../src/scenario/api.ts";

const at = (b: FakeBroker) => [{ host: "127.0.0.1", port: b.port }];

describe("swarm against an in-process broker", () => {
  test("connects, subscribes to tenant:id/config and publishes to tenant:id/attrs", async () => {
    using broker = new FakeBroker();
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 5 }), plainIds(5));
    await waitFor(() => swarm.stats.rows.publish.count >= 10, "10 acked publishes");
    expect(broker.received.filter((r) => r.cmd === "connect").map((r) => r.clientId).sort()).toEqual(["admin:p0", "admin:p1", "admin:p2", "admin:p3", "admin:p4"]);
    expect(swarm.stats.rows.subscribe.count).toBe(5);
    const topics = new Set(broker.received.filter((r) => r.cmd === "publish").map((r) => r.topic));
    expect([...topics].every((t) => /^admin:p\d\/attrs$/.test(t!))).toBe(true);
    expect(swarm.stats.rows.publish.failures).toBe(0);
  });

  test("MQTT 5 CONNACK reason codes are counted by name", async () => {
    using broker = new FakeBroker({ kind: "refuse", code: 0x8a });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 3, version: 5 }), plainIds(3));
    await waitFor(() => swarm.stats.rows.connect.failures >= 3, "3 refused connects");
    expect(swarm.stats.rows.connect.count).toBe(0);
    expect([...swarm.stats.rows.connect.reasons.keys()]).toEqual(["banned"]);
  });

  test("MQTT 3.1.1 CONNACK return codes are counted by name", async () => {
    using broker = new FakeBroker({ kind: "refuse", code: 5 });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 2 }), plainIds(2));
    await waitFor(() => swarm.stats.rows.connect.failures >= 2, "2 refused connects");
    expect([...swarm.stats.rows.connect.reasons.keys()]).toEqual(["not_authorized"]);
  });

  test("a broker that sends random bytes costs counted failures, not the process", async () => {
    using broker = new FakeBroker({ kind: "garbage", bytes: 4096 });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 20, reconnectMs: [50, 100], connectTimeoutMs: 500 }), plainIds(20));
    await waitFor(() => swarm.stats.rows.connect.failures >= 40, "40 failed connects");
    expect(swarm.stats.health.protocol_errors).toBeGreaterThan(0);
    expect(swarm.stats.rows.connect.count).toBe(0);
    for (const reason of swarm.stats.rows.connect.reasons.keys()) expect(reason).toMatch(/^protocol_error:|^closed|^timeout$|^packet_too_large$/);
  });

  test("a packet claiming more than --max-packet-size drops that connection at its header, not the process", async () => {
    // 96 MB claimed: the connection ends on the first bytes, before any of it is gathered.
    using broker = new FakeBroker({ kind: "huge", claim: 96 * 1024 * 1024, send: 4 * 1024 * 1024, chunk: 64 * 1024 });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 3, reconnectMs: [5000, 5000], intervalMs: [100, 100] }), plainIds(3));
    await waitFor(() => swarm.stats.rows.disconnect.failures >= 3, "3 dropped links");
    expect(Object.fromEntries(swarm.stats.rows.disconnect.reasons)).toEqual({ packet_too_large: 3 });
    expect(swarm.stats.rows.connect.count).toBe(3);
  });

  test("packets up to --max-packet-size are gathered across reads, whatever the chunking", async () => {
    // 900 KB in 1 KB writes: accepted under the 1 MiB default, and counted as a received message.
    using broker = new FakeBroker({ kind: "huge", claim: 900 * 1024, send: 900 * 1024, chunk: 1024 });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 1, intervalMs: [60_000, 60_000] }), plainIds(1));
    await waitFor(() => swarm.stats.rows.recv_message.count + swarm.stats.rows.disconnect.failures >= 1, "the big packet to be handled");
    expect(swarm.stats.rows.disconnect.failures).toBe(0);
    expect(swarm.stats.rows.recv_message.count).toBe(1);
  });

  test("MQTT 5 tells the broker the largest packet a device takes; 3.1.1 has no way to", async () => {
    using broker = new FakeBroker();
    await using v5 = startSwarm(swarmConfig(at(broker), { users: 1, version: 5, maxPacketSize: 256 * 1024 }), plainIds(1));
    await waitFor(() => v5.stats.rows.connect.count >= 1, "the device to connect");
    expect(broker.received.find((r) => r.cmd === "connect")!.maximumPacketSize).toBe(256 * 1024);
  });

  test("a smaller --max-packet-size refuses what the default takes", async () => {
    using broker = new FakeBroker({ kind: "huge", claim: 900 * 1024, send: 900 * 1024, chunk: 1024 });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 1, maxPacketSize: 64 * 1024, reconnectMs: [5000, 5000] }), plainIds(1));
    await waitFor(() => swarm.stats.rows.disconnect.failures >= 1, "the link to be dropped");
    expect([...swarm.stats.rows.disconnect.reasons.keys()]).toEqual(["packet_too_large"]);
    expect(swarm.stats.rows.recv_message.count).toBe(0);
  });

  test("a broker that never answers: connect timeouts are counted and retried", async () => {
    using broker = new FakeBroker({ kind: "silent" });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 4, connectTimeoutMs: 300, reconnectMs: [50, 100] }), plainIds(4));
    await waitFor(() => swarm.stats.rows.connect.failures >= 8, "8 timed-out connects");
    expect([...swarm.stats.rows.connect.reasons.keys()]).toEqual(["timeout"]);
    expect(broker.connections).toBeGreaterThanOrEqual(8);
  });

  test("a broker that goes quiet after CONNACK: the dead link is detected within 1.5 keepalives", async () => {
    using broker = new FakeBroker({ kind: "hang-after-connack" });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 2, keepaliveS: 1, intervalMs: [10_000, 10_000] }), plainIds(2));
    await waitFor(() => swarm.stats.rows.disconnect.failures >= 2, "2 dead links", 5000);
    expect([...swarm.stats.rows.disconnect.reasons.keys()]).toEqual(["keepalive_timeout"]);
    expect(broker.count("pingreq")).toBeGreaterThanOrEqual(2);
  });

  test("keepalive 0 turns pings and dead-link detection off", async () => {
    using broker = new FakeBroker({ kind: "hang-after-connack" });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 2, keepaliveS: 0, intervalMs: [60_000, 60_000] }), plainIds(2));
    await waitFor(() => swarm.snapshot().connected === 2, "2 connected");
    await Bun.sleep(1500);
    expect(swarm.snapshot().connected).toBe(2);
    expect(broker.count("pingreq")).toBe(0);
  });

  test("QoS 2: PUBLISH, PUBREC, PUBREL, PUBCOMP", async () => {
    using broker = new FakeBroker();
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 3, qos: 2 }), plainIds(3));
    await waitFor(() => swarm.stats.rows.publish.count >= 6, "6 completed QoS 2 publishes");
    expect(broker.count("pubrel")).toBeGreaterThanOrEqual(6);
    expect(broker.received.filter((r) => r.cmd === "publish").every((r) => r.qos === 2)).toBe(true);
    expect(swarm.stats.rows.publish.failures).toBe(0);
  });

  test("connection refused is counted and retried with backoff", async () => {
    const port = (() => {
      const b = new FakeBroker();
      const p = b.port;
      b.stop();
      return p;
    })();
    await using swarm = startSwarm(swarmConfig([{ host: "127.0.0.1", port }], { users: 2, reconnectMs: [100, 200] }), plainIds(2));
    await Bun.sleep(1000);
    const n = swarm.stats.rows.connect.failures;
    // 2 devices, backoff 100..200 ms: at most ~2 × (1 + 1000/100) attempts in a second.
    expect(n).toBeGreaterThanOrEqual(4);
    expect(n).toBeLessThanOrEqual(24);
    expect([...swarm.stats.rows.connect.reasons.keys()]).toEqual(["econnrefused"]);
  });

  test("the ramp honours the spawn rate (±10%)", async () => {
    using broker = new FakeBroker();
    const t0 = performance.now();
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 150, rate: 100, intervalMs: [60_000, 60_000] }), plainIds(150));
    await waitFor(() => swarm.snapshot().active >= 150, "150 started devices");
    const seconds = (performance.now() - t0) / 1000;
    // 150 devices at 100/s: the last one starts 1.5 s in.
    expect(seconds).toBeGreaterThan(1.35);
    expect(seconds).toBeLessThan(1.65);
    await waitFor(() => swarm.snapshot().connected === 150, "150 connected");
  });

  test("--max-connecting: the ramp waits while that many connects are unanswered, then goes on", async () => {
    // A broker that takes TCP and says nothing: every connect stays in flight until its timeout.
    using broker = new FakeBroker({ kind: "silent" });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 30, rate: 1000, maxConnecting: 5, connectTimeoutMs: 1500, reconnectMs: [50, 100], intervalMs: [60_000, 60_000] }), plainIds(30));
    await Bun.sleep(1000);
    // At 1,000/s all 30 would have dialled by now; 5 did, and the ramp counted its wait.
    expect(broker.connections).toBe(5);
    expect(swarm.snapshot().active).toBe(5);
    expect(swarm.stats.health.ramp_held_ms).toBeGreaterThan(500);
    // The broker answers from now on: the 5 time out, reconnect, and the ramp brings in the rest.
    broker.behaviour = { kind: "normal" };
    await waitFor(() => swarm.snapshot().connected === 30, "30 connected", 10_000);
    expect(Object.fromEntries(swarm.stats.rows.connect.reasons)).toEqual({ timeout: 5 });
    expect(swarm.stats.rows.connect.count).toBe(30);
  });

  test("setUsers lowers and raises the population live; stop sends DISCONNECT", async () => {
    using broker = new FakeBroker();
    const swarm = startSwarm(swarmConfig(at(broker), { users: 10, intervalMs: [60_000, 60_000] }), plainIds(10));
    await waitFor(() => swarm.snapshot().connected === 10, "10 connected");
    swarm.setUsers(4);
    await waitFor(() => swarm.snapshot().connected === 4 && broker.count("disconnect") === 6, "6 devices retired");
    swarm.setUsers(8);
    await waitFor(() => swarm.snapshot().connected === 8, "8 connected");
    await swarm.stop();
    await waitFor(() => broker.count("disconnect") === 14, "14 DISCONNECTs at the broker");
    expect(swarm.stats.rows.disconnect.count).toBe(14);
    expect(swarm.stats.rows.disconnect.failures).toBe(0);
  });
});

describe("every publish ends in exactly one outcome", () => {
  /** sent = acked + failed after sending + in flight, from the swarm's own counters. */
  function flow(swarm: { stats: import("../../src/metrics/stats.ts").Stats; snapshot(): { inflight: number } }) {
    const row = swarm.stats.rows.publish;
    const skipped = (row.reasons.get("window_full") ?? 0) + (row.reasons.get("backpressure") ?? 0);
    return { sent: swarm.stats.sent, acked: row.count, failed: row.failures - skipped, inflight: swarm.snapshot().inflight, skipped };
  }

  test("a broker that drops 10 % of PUBACKs: each dropped ack is an ack_timeout or, at stop, unacked_at_stop", async () => {
    using broker = new FakeBroker({ kind: "drop-acks", share: 0.1 });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 10, intervalMs: [50, 80], ackTimeoutMs: 400, drainMs: 300 }), plainIds(10));
    await waitFor(() => broker.acksDropped >= 20 && swarm.stats.rows.publish.reasons.has("ack_timeout"), "dropped acks to time out");
    const during = flow(swarm);
    expect(during.sent).toBe(during.acked + during.failed + during.inflight);
    await swarm.stop(2000);
    const end = flow(swarm);
    expect(end.inflight).toBe(0);
    expect(end.sent).toBe(end.acked + end.failed);
    // Exactly: what the broker acked was counted acked; what it withheld, failed.
    expect(end.acked).toBe(broker.acksSent);
    expect(end.failed).toBe(broker.acksDropped);
    expect([...swarm.stats.rows.publish.reasons.keys()].every((r) => r === "ack_timeout" || r === "unacked_at_stop")).toBe(true);
    expect(end.sent).toBe(broker.count("publish"));
  });

  test("a broker that never acks: the window fills (window_full, never sent), deadlines pass (ack_timeout)", async () => {
    using broker = new FakeBroker({ kind: "no-acks" });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 2, intervalMs: [20, 20], inflight: 4, ackTimeoutMs: 500, drainMs: 100 }), plainIds(2));
    await waitFor(() => (swarm.stats.rows.publish.reasons.get("ack_timeout") ?? 0) >= 8, "8 acks to time out");
    await swarm.stop(2000);
    const end = flow(swarm);
    const reasons = swarm.stats.rows.publish.reasons;
    expect(end.acked).toBe(0);
    expect(end.sent).toBe(broker.count("publish"));
    expect(end.sent).toBe((reasons.get("ack_timeout") ?? 0) + (reasons.get("unacked_at_stop") ?? 0));
    expect(reasons.get("window_full")).toBeGreaterThan(0);
    expect(end.skipped).toBe(reasons.get("window_full")!);
  });

  test("a link that drops with publishes in flight counts each as connection_lost", async () => {
    using broker = new FakeBroker({ kind: "no-acks" });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 1, intervalMs: [30, 30], ackTimeoutMs: 60_000, reconnectMs: [60_000, 60_000] }), plainIds(1));
    await waitFor(() => broker.count("publish") >= 5, "5 publishes");
    const inflight = swarm.snapshot().inflight;
    broker.dropClients();
    await waitFor(() => swarm.stats.rows.disconnect.failures >= 1, "the link to drop");
    const lost = swarm.stats.rows.publish.reasons.get("connection_lost") ?? 0;
    expect(lost).toBeGreaterThanOrEqual(inflight);
    expect(swarm.snapshot().inflight).toBe(0);
    await swarm.stop(1000);
    const end = flow(swarm);
    expect(end.sent).toBe(end.acked + end.failed);
    // A publish written just as the broker closed may never be read by it: it was in flight, so
    // it is among the lost ones. Nothing the broker got goes uncounted.
    const received = broker.count("publish");
    expect(received).toBeLessThanOrEqual(end.sent);
    expect(end.sent - received).toBeLessThanOrEqual(lost);
  });

  test("MQTT 5 PUBACK reason codes at or above 0x80 are failures named by the code", async () => {
    using broker = new FakeBroker({ kind: "refuse-publish", code: 0x97 });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 2, version: 5, intervalMs: [50, 50] }), plainIds(2));
    await waitFor(() => swarm.stats.rows.publish.failures >= 4, "4 refused publishes");
    expect(swarm.stats.rows.publish.count).toBe(0);
    expect([...swarm.stats.rows.publish.reasons.keys()]).toEqual(["quota_exceeded"]);
  });

  test("a persistent session: what was in flight when the link dropped is sent again on resume, DUP set, same packet ids, and acked; on a clean session it is lost", async () => {
    for (const version of [4, 5] as const) {
      using broker = new FakeBroker({ kind: "session", holdAcks: true });
      const cfg = swarmConfig(at(broker), { users: 2, version, qos: 1, inflight: 4, intervalMs: [20, 20], reconnectMs: [10, 20], session: { clean: false, expiryS: version === 5 ? 60 : 0 } });
      await using swarm = startSwarm(cfg, plainIds(2));
      await waitFor(() => broker.count("publish") >= 8, "both windows full, unacked");
      const first = broker.received.filter((r) => r.cmd === "publish").map((r) => `${r.messageId}`);
      broker.behaviour = { kind: "session", holdAcks: false };
      broker.dropClients();
      await waitFor(() => broker.received.filter((r) => r.cmd === "publish" && r.dup).length >= 8, "the 8 sent again");
      const again = broker.received.filter((r) => r.cmd === "publish" && r.dup).map((r) => `${r.messageId}`);
      expect(again.sort()).toEqual(first.sort());
      await waitFor(() => swarm.stats.rows.publish.count >= 8, "the 8 acked");
      expect(swarm.stats.rows.publish.reasons.get("connection_lost")).toBeUndefined();
      expect(swarm.stats.health.sessions_resumed).toBeGreaterThanOrEqual(2);
    }
    // The same with clean sessions: nothing to resume, the 8 end as connection_lost.
    using broker = new FakeBroker({ kind: "session", holdAcks: true });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 2, qos: 1, inflight: 4, intervalMs: [20, 20], reconnectMs: [10, 20] }), plainIds(2));
    await waitFor(() => broker.count("publish") >= 8, "both windows full, unacked");
    broker.dropClients();
    await waitFor(() => (swarm.stats.rows.publish.reasons.get("connection_lost") ?? 0) >= 8, "the 8 lost");
    expect(broker.received.filter((r) => r.cmd === "publish" && r.dup).length).toBe(0);
  });

  test("an MQTT 5 CONNACK's Maximum QoS 1: QoS 2 publishes are counted as refused and never sent; at QoS 1 they go", async () => {
    using broker = new FakeBroker({ kind: "connack-properties", properties: { maximumQoS: 1 } });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 2, version: 5, qos: 2, intervalMs: [50, 50] }), plainIds(2));
    await waitFor(() => swarm.stats.rows.publish.failures >= 6, "6 refused publishes");
    expect(broker.count("publish")).toBe(0);
    expect([...swarm.stats.rows.publish.reasons.keys()]).toEqual(["qos_over_server_maximum"]);
    expect(swarm.stats.sent).toBe(0);
    await using ok = startSwarm(swarmConfig(at(broker), { users: 2, version: 5, qos: 1, intervalMs: [50, 50] }), plainIds(2));
    await waitFor(() => broker.count("publish") >= 4, "4 QoS 1 publishes at the broker");
    expect(ok.stats.sent).toBeGreaterThanOrEqual(4);
  });
});

test("a lapsed lease drops every device (DISCONNECT) and dials nothing more, whatever comes after", async () => {
  using broker = new FakeBroker();
  await using swarm = startSwarm(swarmConfig(at(broker), { users: 4, intervalMs: [50, 50], reconnectMs: [20, 40] }), plainIds(4));
  swarm.setLease(leaseClock() + 60_000);
  await waitFor(() => swarm.snapshot().connected === 4, "4 connected");
  swarm.setLease(leaseClock() + 100);
  await waitFor(() => swarm.snapshot().connected === 0, "the lease to lapse");
  expect(broker.count("disconnect")).toBe(4);
  const connects = broker.connections;
  // Renewing a lapsed lease, or asking for more devices, brings nothing back.
  swarm.setLease(leaseClock() + 60_000);
  swarm.setUsers(4);
  await Bun.sleep(300);
  expect(broker.connections).toBe(connects);
  expect(swarm.snapshot().active).toBe(0);
});

test("a timer that throws costs its device a counted error and its connection, never the process", async () => {
  using broker = new FakeBroker();
  // A revoke at every publish, asked of a service that throws: every publish timer throws.
  const lifecycle = { revoke: { max: 10, afterMs: 0, probability: 100 }, signer: "local" as const, crlWaitMs: 0 };
  const throwing = {
    request(): never {
      throw new Error("lifecycle service broke");
    },
  };
  await using swarm = startSwarm(swarmConfig(at(broker), { users: 3, intervalMs: [30, 30], reconnectMs: [20, 40], lifecycle }), plainIds(3), throwing);
  await waitFor(() => swarm.stats.health.timer_errors >= 6, "6 timer errors");
  // Each cost a connection, and the devices came back: the swarm is still running.
  expect(swarm.stats.rows.disconnect.reasons.get("internal:Error")).toBeGreaterThanOrEqual(3);
  await waitFor(() => swarm.stats.rows.connect.count >= 6, "the devices to reconnect");
});

test("a device whose identity cannot be read costs a counted error, and the others still start", async () => {
  using broker = new FakeBroker();
  const ids = plainIds(4);
  const broken = { ...ids, id: (i: number) => (i === 1 ? (() => { throw new RangeError("no such identity"); })() : ids.id(i)) };
  await using swarm = startSwarm(swarmConfig(at(broker), { users: 4, intervalMs: [60_000, 60_000] }), broken);
  await waitFor(() => swarm.snapshot().connected === 3, "3 devices connected");
  expect(swarm.stats.health.timer_errors).toBe(1);
  expect(broker.received.filter((r) => r.cmd === "connect").map((r) => r.clientId).sort()).toEqual(["admin:p0", "admin:p2", "admin:p3"]);
});

describe("a scenario's publishes are held to the same rules as the built-in device's", () => {
  const scenario = (def: Scenario<Record<string, unknown>>) => checkScenario(def, { name: "", path: "test.ts", sha256: "0".repeat(64) });

  test("the CONNACK's Maximum QoS, Retain Available and Maximum Packet Size: each refused publish counted by name and never sent", async () => {
    using broker = new FakeBroker({ kind: "connack-properties", properties: { maximumQoS: 1, retainAvailable: false, maximumPacketSize: 300 } });
    const sc = scenario({
      name: "limits",
      every: [
        {
          interval: "50ms",
          run(d) {
            d.publish(`${d.clientId}/a`, { ok: true }, { qos: 1 });
            d.publish(`${d.clientId}/a`, "x", { qos: 2 });
            d.publish(`${d.clientId}/a`, "x", { qos: 1, retain: true });
            d.publish(`${d.clientId}/a`, "x".repeat(400), { qos: 0 });
          },
        },
      ],
    });
    await using swarm = startSwarm(swarmConfig(at(broker), { users: 2, version: 5 }), plainIds(2), null, sc);
    await waitFor(() => swarm.stats.rows.publish.count >= 6, "6 publishes acked");
    const reasons = swarm.stats.rows.publish.reasons;
    expect([...reasons.keys()].sort()).toEqual(["over_server_maximum_packet_size", "qos_over_server_maximum", "retain_unavailable"]);
    // Only the allowed ones reached the broker, and the report's sent counts only those.
    expect(broker.received.filter((p) => p.cmd === "publish").every((p) => p.qos === 1)).toBe(true);
    expect(swarm.stats.sent).toBe(broker.count("publish"));
  });

  test("a full in-flight window is a counted window_full; what is in flight when the run stops is unacked_at_stop", async () => {
    using broker = new FakeBroker({ kind: "no-acks" });
    const sc = scenario({ name: "window", every: [{ interval: "20ms", run: (d) => void d.publish(`${d.clientId}/a`, "x", { qos: 1 }) }] });
    const swarm = startSwarm(swarmConfig(at(broker), { users: 1, inflight: 3, drainMs: 0 }), plainIds(1), null, sc);
    await waitFor(() => (swarm.stats.rows.publish.reasons.get("window_full") ?? 0) >= 3, "3 window_full");
    await swarm.stop(500);
    expect(broker.count("publish")).toBe(3);
    expect(swarm.stats.rows.publish.reasons.get("unacked_at_stop")).toBe(3);
    expect(swarm.stats.sent).toBe(3);
  });
});
