#!/usr/bin/env bun
/**
 * Swarm figures, one JSON line each, against local mosquitto brokers with mutual TLS:
 *   held    — mTLS devices one process holds, and client RSS per connection
 *   connect — client CPU per mTLS connect (P-256; RSA-2048 with --rsa N)
 *   publish — client CPU per QoS 1 publish + PUBACK at a given message rate
 * The swarm runs in its own process (bench/fixtures/swarm-fixture.ts) so its CPU and RSS are its own.
 * `--tls-stack cicada`: the devices speak cicada's own TLS 1.3 client instead of Bun's TLS sockets.
 *   bun bench/swarm.bench.ts [--held 19000] [--brokers 2] [--rate 400] [--msgs 5000] [--rsa 1000] [--only held,publish,rsa] [--tls-stack bun|cicada]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startBrokers, type Broker } from "../scripts/lib/testbed.ts";
import type { KeyKind } from "../src/pki/build.ts";
import type { SwarmConfig } from "../src/engine/config.ts";
import { Fixture } from "./fixtures/swarm-process.ts";
import { ensureCerts, tlsStackArg } from "./fixtures/common.ts";

const { values } = parseArgs({
  options: {
    held: { type: "string", default: "19000" },
    brokers: { type: "string", default: "2" },
    rate: { type: "string", default: "400" },
    msgs: { type: "string", default: "5000" },
    rsa: { type: "string", default: "1000" },
    window: { type: "string", default: "20" },
    only: { type: "string", default: "held,publish,rsa" },
    certs: { type: "string", default: join(tmpdir(), "cicada-bench-certs") },
    insecure: { type: "boolean", default: false },
    "tls-stack": { type: "string" },
  },
});
const tlsStack = tlsStackArg(values["tls-stack"]);
const only = new Set(values.only!.split(","));
const emit = (o: Record<string, unknown>) => console.log(JSON.stringify({ bench: "swarm", ...o }));
const log = (s: string) => process.stderr.write(`# ${s}\n`);

/** A reusable certificate directory with at least `n` devices of `kind`. */
function certs(kind: KeyKind, n: number): Promise<string> {
  return ensureCerts(`${values.certs}-${kind}`, n, kind, log);
}

function swarmConfig(brokers: Broker[], users: number, rate: number, intervalMs: [number, number]): Omit<SwarmConfig, "caPem"> {
  return {
    targets: brokers.map((b) => ({ host: b.host, port: b.port })),
    sources: [],
    tls: true,
    ...(tlsStack !== "bun" ? { tlsStack } : {}),
    insecure: values.insecure!,
    tenant: "admin",
    qos: 1,
    version: 4,
    keepaliveS: 120,
    intervalMs,
    payloadSize: 0,
    reconnectMs: [1000, 10_000],
    connectTimeoutMs: 60_000,
    users,
    rate,
  };
}

/** Ramps `users` devices, then reports held connections, RSS per connection and CPU per connect. */
async function held(kind: KeyKind, users: number, brokerCount: number, rate: number, name: string): Promise<void> {
  const certDir = await certs(kind, users);
  const state = mkdtempSync(join(tmpdir(), "cicada-bench-state-"));
  const brokers = await startBrokers(brokerCount, { certDir, stateDir: state, verbose: false });
  try {
    log(`${name}: ${users} ${kind} devices over ${brokerCount} brokers at ${rate}/s`);
    const fx = new Fixture(certDir, swarmConfig(brokers, users, rate, [600_000, 600_000]));
    const base = await fx.until(() => true, "the first sample", 30);
    const rampS = users / rate;
    const full = await fx.until((s) => s.connected + s.connect_failures >= users || s.active >= users && s.connected >= users, `${users} connected`, rampS * 3 + 60);
    // Let stragglers finish, then settle memory.
    await Bun.sleep(2000);
    fx.gc();
    await Bun.sleep(1500);
    const settled = await fx.next();
    emit({
      figure: name,
      key: kind === "ec" ? "P-256" : "RSA-2048",
      verify_server: !values.insecure,
      devices_target: users,
      connected: settled.connected,
      connect_failures: settled.connect_failures,
      brokers: brokerCount,
      ramp_s: +(full.t - base.t).toFixed(1),
      connects_per_s: +(settled.connects / (full.t - base.t)).toFixed(0),
      client_cpu_ms_per_connect: +((full.cpu_us - base.cpu_us) / 1000 / Math.max(1, full.connects)).toFixed(3),
      client_sys_ms_per_connect: +((full.sys_us - base.sys_us) / 1000 / Math.max(1, full.connects)).toFixed(3),
      client_rss_mb: +(settled.rss / 1048576).toFixed(1),
      client_rss_kb_per_conn: +((settled.rss - base.rss) / 1024 / Math.max(1, settled.connected)).toFixed(2),
      client_heap_kb_per_conn: +((settled.heap - base.heap) / 1024 / Math.max(1, settled.connected)).toFixed(2),
      connect_p50_ms: +settled.connect_p50_ms.toFixed(2),
    });
    await fx.stop();
  } finally {
    for (const b of brokers) await b.stop();
    rmSync(state, { recursive: true, force: true });
  }
}

/** `devices` publishing every second: CPU per QoS 1 publish + PUBACK over a steady window. */
async function publish(msgsPerS: number, brokerCount: number, windowS: number): Promise<void> {
  const users = msgsPerS;
  const certDir = await certs("ec", users);
  const state = mkdtempSync(join(tmpdir(), "cicada-bench-state-"));
  const brokers = await startBrokers(brokerCount, { certDir, stateDir: state, verbose: false });
  try {
    log(`publish: ${users} devices publishing every 1 s (${msgsPerS} msg/s target)`);
    const fx = new Fixture(certDir, swarmConfig(brokers, users, 500, [950, 1050]));
    await fx.until((s) => s.connected >= users, `${users} connected`, 120);
    await Bun.sleep(3000); // reach the steady publish rate
    const a = await fx.next();
    await Bun.sleep(windowS * 1000);
    const b = await fx.next();
    const msgs = b.publishes - a.publishes;
    const secs = b.t - a.t;
    emit({
      figure: "publish",
      tls_stack: tlsStack,
      devices: users,
      msgs_per_s: +(msgs / secs).toFixed(0),
      window_s: +secs.toFixed(1),
      client_cpu_us_per_msg: +((b.cpu_us - a.cpu_us) / Math.max(1, msgs)).toFixed(2),
      client_cpu_percent: +(((b.cpu_us - a.cpu_us) / 1e6 / secs) * 100).toFixed(1),
      publish_failures: b.publish_failures - a.publish_failures,
      publish_p50_ms: +b.publish_p50_ms.toFixed(2),
      publish_p99_ms: +b.publish_p99_ms.toFixed(2),
      late_sends: b.late_sends,
      loop_lag_p99_ms: +b.loop_lag_p99_ms.toFixed(2),
    });
    await fx.stop();
  } finally {
    for (const b of brokers) await b.stop();
    rmSync(state, { recursive: true, force: true });
  }
}

const brokers = Number(values.brokers);
if (only.has("held")) await held("ec", Number(values.held), brokers, Number(values.rate), "held");
if (only.has("publish")) await publish(Number(values.msgs), brokers, Number(values.window));
if (only.has("rsa")) await held("rsa", Number(values.rsa), 1, Math.min(200, Number(values.rate)), "connect_rsa");
