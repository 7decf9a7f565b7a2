/** Settings of `cicada run`: flags, config file and dojot's environment variables, validated together. */
import { existsSync, readFileSync } from "node:fs";
import { isIP } from "node:net";
import { hostname } from "node:os";
import { isAbsolute, join } from "node:path";
import type { CommandSpec, Options } from "./options.ts";
import type { RedisSettings } from "../store/connection.ts";
import { redactUrl } from "../sys/redact.ts";
import { CLUSTER_KEY_OPTION, keyIssue, readClusterKey } from "../cluster/seal.ts";
import { isStoreUrl, type StoreSettings } from "../store/redis.ts";
import { readRedisUrl, readStoreSettings, STORE_OPTIONS } from "./store.ts";
import { DEFAULT_MAX_PACKET_SIZE, type SwarmConfig } from "../engine/config.ts";
import { readSubscribers, readTraffic, TRAFFIC_OPTIONS, type SubscribersConfig } from "./traffic.ts";
import { MQTT_OPTIONS, readMqtt } from "./mqtt.ts";
import { DEFAULT_TLS_GROUPS } from "../transport/connect.ts";
import { readScenario, SCENARIO_OPTIONS } from "./scenario.ts";
import { readListen, SERVE_OPTIONS, type Listen } from "./serve.ts";
import type { QoS } from "../mqtt/codec.ts";
import { LIFECYCLE_OPTIONS, readLifecycle } from "./lifecycle.ts";
import { lifecyclePlan, type LifecycleConfig } from "../lifecycle/types.ts";
import { parseBytes, parseDuration, parseRange } from "../sys/units.ts";
import { formatOf, reportPathIssue } from "../report/formats.ts";
import { parseThreshold, type Threshold } from "../report/thresholds.ts";

export const RUN_SPEC: CommandSpec = {
  name: "run",
  summary: "Simulate devices against an MQTT broker and report how it held up.",
  usage: "cicada run [options]",
  options: {
    host: { type: "string", arg: "LIST", env: "DOJOT_MQTT_HOST", default: "127.0.0.1", help: "Broker host(s), comma-separated; devices are spread round-robin" },
    port: { type: "string", short: "p", arg: "LIST", env: "DOJOT_MQTT_PORT", default: "8883", help: "Broker port(s), comma-separated (every host × port is a destination)" },
    users: { type: "string", short: "u", arg: "N", default: "100", help: "Devices to simulate" },
    rate: { type: "string", short: "r", arg: "N", default: "100", help: "New devices per second while ramping up (spawn rate)" },
    duration: { type: "string", short: "t", arg: "TIME", default: "1m", help: "Run time, e.g. 90s, 10m, 1h30m (ramp included)" },
    certs: { type: "string", arg: "DIR|URL", env: "CERT_DIR", default: "cert", help: "Certificate directory (dojot layout), or a Redis store (redis://host:6379[/db]) — one identity per device" },
    "broker-ca": { type: "string", arg: "FILE", env: "CA_CERT_FILE", aliases: ["ca-cert"], help: "CA that signed the broker certificate (default DIR/ca.crt)" },
    tenant: { type: "string", arg: "NAME", env: "TENANT", default: "admin", help: "Tenant: client id = username = tenant:deviceid" },
    qos: { type: "string", arg: "0|1|2", env: "DOJOT_MQTT_QOS", default: "1", help: "QoS of telemetry and of the config subscription" },
    interval: { type: "string", arg: "MIN..MAX", help: "Time between a device's publishes, uniformly jittered (default 29.5s..30s; env TASK_MIN_TIME/TASK_MAX_TIME, ms)" },
    keepalive: { type: "string", arg: "SECONDS", env: "DOJOT_MQTT_TIMEOUT", default: "60", help: "MQTT keepalive; PINGREQ only when idle" },
    mqtt: { type: "string", arg: "3.1.1|5", default: "3.1.1", help: "MQTT protocol version" },
    tls: { type: "boolean", negatable: true, default: "true", help: "Mutual TLS with each device's certificate (--no-tls: plain TCP; see --transport)" },
    ...MQTT_OPTIONS,
    insecure: { type: "boolean", help: "Do not verify the broker's certificate (as dojot's tool did)" },
    "source-address": { type: "string", arg: "LIST", help: "Local addresses to connect from, e.g. 127.0.0.2,127.0.0.3" },
    ...TRAFFIC_OPTIONS,
    ...SCENARIO_OPTIONS,
    "payload-size": { type: "string", arg: "BYTES|MIN..MAX", default: "0", help: "Pad the JSON payload to this size (e.g. 1KiB), or with a range give each device its own size in it (e.g. 100..4KiB)" },
    "max-packet-size": { type: "string", arg: "BYTES", default: "1MiB", help: "Largest packet a device accepts (e.g. 256KiB); a bigger one drops that connection as packet_too_large. MQTT 5 tells the broker" },
    inflight: { type: "string", arg: "N", default: "8", help: "QoS 1/2 publishes a device may have unacknowledged; a publish that finds the window full is skipped and counted as window_full" },
    "ack-timeout": { type: "string", arg: "TIME", default: "30s", help: "A QoS 1/2 publish not acknowledged this long after it was sent fails as ack_timeout" },
    drain: { type: "string", arg: "TIME", default: "5s", help: "On stop, wait this long for outstanding acks; the rest fail as unacked_at_stop" },
    "reconnect-min": { type: "string", arg: "SECONDS", env: "MIN_TIME_RECONN", default: "1", help: "Shortest reconnect backoff" },
    "reconnect-max": { type: "string", arg: "SECONDS", env: "MAX_TIME_RECONN", default: "60", help: "Longest reconnect backoff" },
    "connect-timeout": { type: "string", arg: "TIME", default: "30s", help: "Give up on a connect without CONNACK after this long" },
    "max-connecting": { type: "string", arg: "N", default: "200", help: "Connects in flight (TCP, TLS, CONNACK not yet come) per worker process; the ramp waits while this many are, so a --rate faster than the broker answers becomes the broker's pace instead of a storm of timeouts and resets (0: no limit)" },
    "first-device": { type: "string", arg: "N", default: "0", help: "Skip the first N identities of the directory" },
    workers: { type: "string", short: "w", arg: "auto|N", default: "auto", help: "Worker processes: auto = one per core, more if the open-file limit needs them" },
    report: { type: "string", arg: "FILE", help: "Write the report here, also on Ctrl-C: run.json, run.csv (stats table) or run.html (tables and charts)" },
    threshold: { type: "string", arg: "EXPR", multiple: true, help: "Fail the run (exit 3) unless ROW.METRIC<OP>N holds, e.g. 'publish.p99_ms<500', 'connect.failure_rate<0.01' (repeatable)" },
    ...SERVE_OPTIONS,
    "reset-stats": { type: "boolean", help: "Reset the stats once every device has connected, so the report covers the steady state (as Locust's --reset-stats); the ramp's failures are named on the reset line and kept in the report's ramp" },
    redis: { type: "string", arg: "URL", help: "Federate machines: be the controller of `cicada worker` processes joined to this Redis (redis:// or rediss://)" },
    "expect-machines": { type: "string", arg: "N", default: "1", help: "With --redis: machines to wait for before the ramp starts" },
    grace: { type: "string", arg: "TIME", default: "60s", help: "With --redis: machines drop their devices after this long without the controller (their lease)" },
    "cluster-key": CLUSTER_KEY_OPTION,
    ...STORE_OPTIONS,
    verify: { type: "boolean", help: "Consume every device's telemetry and account for each message end to end: delivered, lost, duplicated, out of order (report: integrity)" },
    "verify-cert": { type: "string", arg: "FILE", help: "With --verify or --subscribers: the consumer's certificate (its CN is its username: the broker's ACL must let it read what it subscribes to)" },
    "verify-key": { type: "string", arg: "FILE", help: "With --verify or --subscribers: the consumer's private key" },
    "verify-connections": { type: "string", arg: "auto|N", default: "auto", help: "With --verify: subscriber connections per broker address (auto: one per 500 msg/s it receives; more than one link in all share a $share subscription)" },
    "verify-wait": { type: "string", arg: "TIME", default: "5s", help: "With --verify: after the devices stop, wait up to this long for messages still on their way" },
    actuate: { type: "string", arg: "N", help: "With --verify: commands per second published to devices' tenant:id/config topics (cloud → device), counted end to end" },
    "task-min-time": { type: "string", arg: "MS", env: "TASK_MIN_TIME", help: "dojot's shortest interval between publishes, ms (--interval wins)" },
    "task-max-time": { type: "string", arg: "MS", env: "TASK_MAX_TIME", help: "dojot's longest interval between publishes, ms (--interval wins)" },
    config: { type: "string", arg: "FILE", help: "JSON file of flag names to values (defaults < file < env < flags)" },
    ...LIFECYCLE_OPTIONS,
  },
  details: `
Each device connects with its own certificate from --certs (CN = tenant:id), subscribes to
tenant:id/config and publishes {"timestamp": ms} to tenant:id/attrs every --interval.
Latency is measured from the scheduled send time, so a slow broker cannot hide behind a
slow generator (coordinated omission).

With --redis the run spans machines: this process is the controller and runs no devices;
each machine runs \`cicada worker --redis URL\` with the same certificate directory and gets
a share of the users and of the identities (REDIS_PASSWD fills a password the URL lacks).

--renew/--revoke renew or revoke device certificates as the run goes (dojot's RENEW_DEVICES
and REVOKE_DEVICES): with the local CA the certificate is listed in the CRL, --crl-hook tells
the broker, and the device reconnects — with its new certificate after a renew, with the
revoked one after a revoke, which the broker must refuse (else: revoked_but_accepted).

Examples:
  cicada certs create --devices 1000
  cicada run --port 8883 --users 1000 --rate 100 --duration 5m --report run.json
  cicada run --scenario scenarios/tracker.ts --users 5000 --duration 10m
  cicada run --redis redis://10.0.0.1:6379 --expect-machines 3 --users 100000 --rate 300 --duration 30m`,
};

export interface RunConfig {
  swarm: SwarmConfig;
  durationMs: number;
  certDir: string;
  firstDevice: number;
  /** Worker processes, or "auto". */
  workers: number | "auto";
  reportPath?: string;
  resetStats: boolean;
  /** --msg-rate: the total publish rate; each device's interval is users/rate and follows the users. */
  msgRate?: number;
  /** The Redis certificate store, when --certs is a redis:// URL. */
  store?: StoreSettings;
  thresholds: Threshold[];
  /** Renew/revoke with this machine's CA, hook and signer (the swarm carries only the plan). */
  lifecycle?: LifecycleConfig;
  /** Set with --ui: serve the dashboard and API there. */
  ui?: Listen & { historyDir: string; autostart: boolean };
  /** Set with --metrics: serve /metrics alone there, for this run. */
  metrics?: Listen;
  /** Set with --verify: the verifying consumer. */
  verify?: { connections: number; cert?: string; key?: string; waitMs: number; actuateRate: number };
  /** --subscribers: plain subscriber connections, counting what is delivered. */
  subscribers?: SubscribersConfig;
  /** Set with --redis: this process is the controller of a federated run. */
  federation?: { redis: RedisSettings; expect: number; graceMs: number; clusterKey: string | null };
  /** --scenarios: the directory scenario names are looked up in (the dashboard lists them). */
  scenariosDir?: string;
  /** The settings as given, for the report. */
  echo: Record<string, unknown>;
}

/** Reads and validates every run setting; problems are recorded on `o` (call o.check()). */
export function readRunConfig(o: Options): RunConfig {
  const hosts = o.list("host") ?? [];
  if (!hosts.length) o.fail("host", "lists no host", o.str("host"));
  const ports: number[] = [];
  for (const p of o.list("port") ?? []) {
    const n = Number(p);
    if (!Number.isInteger(n) || n < 1 || n > 65535) o.fail("port", "must list ports from 1 to 65535", p);
    else ports.push(n);
  }
  if (!ports.length && o.str("port") !== undefined && !o.issues.some((i) => i.startsWith(o.source("port")))) o.fail("port", "lists no port", o.str("port"));
  const users = o.int("users", 100, 1, 10_000_000);
  const rate = o.num("rate", 100, Number.MIN_VALUE);
  const durationMs = positiveDuration(o, "duration", "1m");
  const qos = o.int("qos", 1, 0, 2) as QoS;
  const keepaliveS = o.int("keepalive", 60, 0, 65535);
  const mqtt = o.choice("mqtt", ["3.1.1", "5"], "3.1.1");
  const [payloadSize, payloadSizeMax] = readPayloadSize(o);
  const maxPacketSize = parseBytes(o.str("max-packet-size") ?? "1MiB");
  // 268,435,455 is the largest Remaining Length MQTT can express (§2.2.3); 64 bytes leaves room for any ack.
  if (maxPacketSize === undefined || maxPacketSize < 64 || maxPacketSize > 268_435_460) o.fail("max-packet-size", "must be a size from 64 bytes to 256MiB, e.g. 65536, 256KiB or 1MiB", o.str("max-packet-size"));
  const inflight = o.int("inflight", 8, 1, 65535);
  const ackTimeoutMs = positiveDuration(o, "ack-timeout", "30s");
  const drainMs = parseDuration(o.str("drain") ?? "5s");
  if (drainMs === undefined || drainMs < 0) o.fail("drain", "must be a duration such as 5s or 0", o.str("drain"));
  const reconnectMin = o.num("reconnect-min", 1, 0);
  const reconnectMax = o.num("reconnect-max", 60, 0);
  if (reconnectMax < reconnectMin) o.issues.push(`${o.source("reconnect-max")} (${reconnectMax}) must be >= ${o.source("reconnect-min")} (${reconnectMin})`);
  const connectTimeoutMs = positiveDuration(o, "connect-timeout", "30s");
  const maxConnecting = o.int("max-connecting", 200, 0, 1_000_000);
  const firstDevice = o.int("first-device", 0, 0);
  const workers = o.str("workers") === "auto" ? "auto" : o.int("workers", 1, 1, 1024);

  let intervalMs: [number, number] = [29_500, 30_000];
  if (o.has("interval")) {
    const r = parseRange(o.str("interval")!);
    if (!r || r[0] <= 0) o.fail("interval", "must be a time or MIN..MAX, e.g. 30s or 29.5s..30s, > 0", o.str("interval"));
    else intervalMs = r;
  } else if (o.has("task-min-time") || o.has("task-max-time")) {
    // dojot's variables, in ms; either alone means a fixed interval.
    const min = o.str("task-min-time") ?? o.str("task-max-time");
    const max = o.str("task-max-time") ?? o.str("task-min-time");
    const lo = Number(min);
    const hi = Number(max);
    if (!(lo > 0) || !(hi >= lo)) o.issues.push(`${o.source("task-min-time")}/${o.source("task-max-time")} must be ms with 0 < min <= max (got ${min}, ${max})`);
    else intervalMs = [lo, hi];
  }
  const traffic = readTraffic(o, users, intervalMs);
  intervalMs = traffic.intervalMs;
  const { msgRate, max, publish, topic, payload, churn } = traffic;

  const certsArg = o.str("certs")!;
  const fromStore = isStoreUrl(certsArg);
  const store = fromStore ? readStoreSettings(o, "certs") : undefined;
  const certDir = store ? store.redis.url : certsArg;
  const wire = readMqtt(o, mqtt === "5" ? 5 : 4);
  const tls = wire.tls;
  let caPem: string | undefined;
  // A store's CA is read from the store itself (runCommand), unless --broker-ca names one.
  if (tls && !(fromStore && !o.has("broker-ca"))) {
    let caPath = o.str("broker-ca") ?? join(certDir, "ca.crt");
    if (!existsSync(caPath) && !isAbsolute(caPath) && existsSync(join(certDir, caPath))) caPath = join(certDir, caPath);
    try {
      caPem = readFileSync(caPath, "utf8");
    } catch {
      o.issues.push(`${o.has("broker-ca") ? o.source("broker-ca") : "--certs"}: cannot read CA certificate ${caPath} (run cicada certs create first, or pass --broker-ca)`);
    }
  }
  const lifecycle = readLifecycle(o, { certs: certsArg, tls });
  const reportPath = o.str("report");
  if (reportPath && !formatOf(reportPath)) o.fail("report", "must end in .json, .csv or .html", reportPath);
  const unwritable = reportPath ? reportPathIssue(reportPath) : undefined;
  if (unwritable) o.fail("report", `cannot be written: ${unwritable}`, reportPath);
  const thresholds: Threshold[] = [];
  for (const expr of o.all("threshold")) {
    const t = parseThreshold(expr, o.has("scenario"));
    if (typeof t === "string") o.issues.push(`${o.source("threshold")} ${t}`);
    else thresholds.push(t);
  }
  const ui = o.has("ui") ? { ...readListen(o, "ui"), historyDir: o.str("history")!, autostart: o.bool("autostart") } : undefined;
  if (o.has("ui") && o.has("metrics")) o.issues.push("--ui serves /metrics already: give --ui or --metrics");
  const metrics = o.has("metrics") && !o.has("ui") ? readListen(o, "metrics") : undefined;
  const sources = readSourceAddresses(o);
  const targets = hosts.flatMap((host) => ports.map((port) => ({ host, port })));
  const expect = o.int("expect-machines", 1, 1, 10_000);
  const graceMs = positiveDuration(o, "grace", "60s");
  let federation: RunConfig["federation"];
  if (o.has("redis")) {
    const before = o.issues.length;
    const url = readRedisUrl(o, "redis");
    const bad = o.issues.length > before;
    const ca = o.fileText("redis-ca");
    const clusterKey = readClusterKey(o, (line) => process.stderr.write(`cicada: warning: ${line}\n`));
    const noKey = keyIssue(url, clusterKey, "--redis");
    if (noKey && !bad) o.issues.push(noKey);
    federation = { redis: { url, ...(ca !== undefined ? { ca } : {}) }, expect, graceMs, clusterKey };
  }
  let verify: RunConfig["verify"];
  if (o.bool("verify")) {
    const cert = o.fileText("verify-cert");
    const key = o.fileText("verify-key");
    // Federated, each machine verifies its own devices with the identity given to its `cicada worker`.
    if (tls && !o.has("redis") && (!o.has("verify-cert") || !o.has("verify-key"))) o.issues.push("--verify over TLS needs the consumer's own --verify-cert and --verify-key (e.g. cicada certs create --ids verify --certs verify-cert)");
    // A QoS 1 subscriber takes ~500-700 msg/s here before mosquitto's 20-message window per client
    // holds it back and the broker's queue overflows (bench/fleet.bench.ts --only verify).
    const perTarget = (users * 1000) / ((intervalMs[0] + intervalMs[1]) / 2) / Math.max(1, targets.length);
    const connections = o.str("verify-connections") === "auto" ? Math.min(64, Math.max(1, Math.ceil(perTarget / VERIFY_MSGS_PER_LINK))) : o.int("verify-connections", 1, 1, 64);
    const rate = o.has("actuate") ? o.num("actuate", 0, 0) : 0;
    const waitMs = parseDuration(o.str("verify-wait") ?? "5s");
    if (waitMs === undefined) o.fail("verify-wait", "must be a duration such as 5s", o.str("verify-wait"));
    verify = { connections, ...(cert ? { cert } : {}), ...(key ? { key } : {}), waitMs: waitMs ?? 5000, actuateRate: rate };
  } else if (o.has("actuate")) o.issues.push("--actuate needs --verify: the verifying consumer is the backend side that sends the commands");
  const subscribers = readSubscribers(o, tls);
  const scenario = readScenario(o);
  return {
    ...(verify ? { verify } : {}),
    ...(subscribers ? { subscribers } : {}),
    swarm: {
      targets,
      sources,
      tls,
      ...(wire.tlsStack ? { tlsStack: wire.tlsStack } : {}),
      ...(wire.tlsVersion ? { tlsVersion: wire.tlsVersion } : {}),
      ...(wire.tlsGroups ? { tlsGroups: wire.tlsGroups } : {}),
      ...(wire.ws ? { ws: wire.ws } : {}),
      ...(wire.session.clean && !wire.session.expiryS ? {} : { session: wire.session }),
      ...(wire.properties ? { properties: wire.properties } : {}),
      ...(wire.topicAlias ? { topicAlias: true } : {}),
      insecure: o.bool("insecure"),
      caPem,
      tenant: readTenant(o),
      qos,
      version: mqtt === "5" ? 5 : 4,
      keepaliveS,
      intervalMs,
      ...(publish ? {} : { publish: false }),
      ...(max ? { max: true } : {}),
      ...(topic !== undefined ? { topic } : {}),
      ...(payload !== undefined ? { payload } : {}),
      ...(o.bool("retain") ? { retain: true } : {}),
      ...(churn > 0 ? { churn } : {}),
      machine: hostname(),
      payloadSize,
      ...(payloadSizeMax > payloadSize ? { payloadSizeMax } : {}),
      maxPacketSize: maxPacketSize ?? DEFAULT_MAX_PACKET_SIZE,
      inflight,
      ackTimeoutMs,
      drainMs: drainMs ?? 5000,
      reconnectMs: [reconnectMin * 1000, reconnectMax * 1000],
      connectTimeoutMs,
      ...(maxConnecting > 0 ? { maxConnecting } : {}),
      users,
      rate,
      ...(lifecycle ? { lifecycle: lifecyclePlan(lifecycle) } : {}),
      ...(scenario ? { scenario } : {}),
    },
    ...(lifecycle ? { lifecycle } : {}),
    durationMs,
    certDir,
    firstDevice,
    workers,
    reportPath,
    thresholds,
    ...(ui ? { ui } : {}),
    ...(metrics ? { metrics } : {}),
    resetStats: o.bool("reset-stats"),
    ...(msgRate !== undefined ? { msgRate } : {}),
    federation,
    ...(store ? { store } : {}),
    ...(o.has("scenarios") ? { scenariosDir: o.str("scenarios")! } : {}),
    echo: {
      targets: targets.map((t) => `${t.host}:${t.port}`),
      users,
      rate,
      duration_s: durationMs / 1000,
      certs: redactUrl(certDir),
      tenant: o.str("tenant"),
      qos,
      mqtt,
      tls,
      transport: wire.transport,
      ...(tls ? { tls_stack: wire.tlsStack ?? "bun" } : {}),
      ...(wire.tlsVersion ? { tls_version: wire.tlsVersion } : {}),
      ...(tls ? { tls_groups: wire.tlsGroups ?? DEFAULT_TLS_GROUPS } : {}),
      ...(wire.ws ? { ws_path: wire.ws.path, ws_protocol: wire.ws.protocol ?? "none" } : {}),
      clean: wire.session.clean,
      ...(wire.session.expiryS ? { session_expiry_s: wire.session.expiryS } : {}),
      ...(wire.properties ? { publish_properties: wire.properties } : {}),
      ...(wire.topicAlias ? { topic_alias: true } : {}),
      insecure: o.bool("insecure"),
      interval_ms: intervalMs,
      ...(msgRate !== undefined ? { msg_rate: msgRate } : max ? { msg_rate: "max" } : {}),
      publish: publish ? "on" : "off",
      ...(topic !== undefined ? { topic } : {}),
      ...(payload !== undefined ? { payload } : {}),
      retain: o.bool("retain"),
      ...(churn > 0 ? { churn_per_s: churn } : {}),
      ...(scenario ? { scenario: scenario.name, scenario_sha256: scenario.sha256 } : {}),
      keepalive_s: keepaliveS,
      payload_size: payloadSizeMax > payloadSize ? [payloadSize, payloadSizeMax] : payloadSize,
      max_packet_size: maxPacketSize,
      inflight,
      ack_timeout_ms: ackTimeoutMs,
      drain_ms: drainMs,
      source_addresses: sources,
      reconnect_s: [reconnectMin, reconnectMax],
      max_connecting: maxConnecting,
      first_device: firstDevice,
      reset_stats: o.bool("reset-stats"),
      ...(verify ? { verify: true, verify_connections: verify.connections, actuate_per_s: verify.actuateRate } : {}),
      ...(federation ? { redis: redactUrl(federation.redis.url), expect_machines: expect, grace_s: graceMs / 1000, signed: !!federation.clusterKey } : {}),
      ...(lifecycle
        ? { renew: lifecycle.renew ?? null, revoke: lifecycle.revoke ?? null, signer: lifecycle.signer, ca_dir: lifecycle.caDir, crl_hook: lifecycle.crlHook ?? null, crl_wait_ms: lifecycle.crlWaitMs }
        : {}),
    },
  };
}

/** --tenant (TENANT): a name that can stand before `:id` in a client id and an MQTT topic level. Problems go to `o.issues`. */
export function readTenant(o: Options): string {
  const tenant = o.str("tenant")!;
  if (!/^[^\s/+#:]+$/.test(tenant)) o.fail("tenant", "must be a non-empty name without spaces, /, +, # or :", tenant);
  return tenant;
}

/** --source-address: local IP addresses only (a name or a typo would otherwise be ignored, and the kernel would choose). */
export function readSourceAddresses(o: Options): string[] {
  const list = o.list("source-address") ?? [];
  for (const a of list) if (isIP(a) === 0) o.fail("source-address", "must list IP addresses of this machine, e.g. 127.0.0.2,127.0.0.3", a);
  return list;
}

/** --payload-size BYTES or MIN..MAX (units as 4KiB); [size, size] when fixed. Problems go to `o.issues`. */
function readPayloadSize(o: Options): [number, number] {
  const text = o.str("payload-size") ?? "0";
  const [a, b = a] = text.split("..");
  const lo = parseBytes(a!);
  const hi = parseBytes(b);
  const max = 256 * 1024 * 1024;
  if (lo === undefined || hi === undefined || lo > hi || hi > max) {
    o.fail("payload-size", "must be a size or MIN..MAX up to 256MiB, e.g. 512, 4KiB or 100..4KiB", text);
    return [0, 0];
  }
  return [lo, hi];
}

function positiveDuration(o: Options, name: string, fallback: string): number {
  const ms = parseDuration(o.str(name) ?? fallback);
  if (ms === undefined || ms <= 0) {
    o.fail(name, "must be a duration > 0 such as 90s, 10m or 1h30m", o.str(name));
    return parseDuration(fallback)!;
  }
  return ms;
}

/** Messages per second one verifying link is planned for (auto --verify-connections). */
const VERIFY_MSGS_PER_LINK = 500;

