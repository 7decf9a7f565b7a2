#!/usr/bin/env bun
/**
 * Where each held device's memory goes, one JSON line per layer: N idle devices (keepalive on,
 * no publishes) held by one cicada process against local mosquittos, split into
 *   js_heap      live JavaScript objects (bun:jsc heapStats().heapSize)
 *   jsc_spare    what the JS heap has committed beyond its live objects (heapCapacity − heapSize)
 *   native_rest  the rest of the process's RSS: BoringSSL, uSockets, Bun's own, the allocator's slack
 *   kernel_tcp   socket buffers of cicada's own sockets (ss -tm: rmem + wmem queued + forward alloc)
 *   kernel_slab  the kernel's slab growth over the machine, per connection: both ends of each
 *                loopback connection (cicada's socket and the broker's), epoll and file entries
 * Layers: `tcp` (plain MQTT), `tls-shared` (TLS, one client certificate for every device),
 * `mtls` (a certificate per device, dojot's case). The differences are each layer's cost.
 * `process` is what each process of the compiled executable costs before its devices: a
 * `cicada run` of 2 devices over 2 workers, its processes' memory split into their own pages
 * (anonymous) and the executable's (file pages, shared by every process: PSS divides them).
 * `--tls-version 1.2|1.3` offers only that version and `--tls-groups` those key-exchange groups (the TLS
 * layers), as `cicada run` does; `--tls-stack cicada` holds the TLS layers with cicada's own TLS 1.3
 * client instead of Bun's TLS sockets.
 *   bun bench/memory.bench.ts [--devices 19000] [--brokers 2] [--rate 1000] [--layers tcp,tls-shared,mtls,process] [--tls-version 1.2] [--tls-groups X25519] [--tls-stack bun|cicada]
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startBrokers, type Broker } from "../scripts/lib/testbed.ts";
import type { SwarmConfig } from "../src/engine/config.ts";
import { issueDevice } from "../src/pki/issue.ts";
import { openLocalCa } from "../src/pki/signers/local.ts";
import { certDir as certDirOf } from "../src/store/dir.ts";
import { pssBytes, treeUsage } from "../scripts/lib/procstat.ts";
import { DEFAULT_TLS_GROUPS, TLS_VERSIONS, type TlsVersion } from "../src/transport/connect.ts";
import { buildExecutable, ensureCerts, processTree, tlsStackArg } from "./fixtures/common.ts";
import { Fixture } from "./fixtures/swarm-process.ts";
import type { FixtureSample } from "./fixtures/swarm-fixture.ts";

const { values } = parseArgs({
  options: {
    devices: { type: "string", default: "19000" },
    brokers: { type: "string", default: "2" },
    rate: { type: "string", default: "1000" },
    layers: { type: "string", default: "tcp,tls-shared,mtls" },
    certs: { type: "string", default: join(tmpdir(), "cicada-bench-certs-ec") },
    "tls-version": { type: "string" },
    "tls-groups": { type: "string" },
    "tls-stack": { type: "string" },
  },
});
const tlsStack = tlsStackArg(values["tls-stack"]);
const tlsVersion = values["tls-version"] as TlsVersion | undefined;
if (tlsVersion && !TLS_VERSIONS.includes(tlsVersion)) throw new Error(`--tls-version: ${TLS_VERSIONS.join(" or ")}, not ${tlsVersion}`);
const tlsGroups = values["tls-groups"];
const devices = Number(values.devices);
const emit = (o: Record<string, unknown>) => console.log(JSON.stringify({ bench: "memory", ...o }));
const log = (s: string) => process.stderr.write(`# ${s}\n`);
type Layer = "tcp" | "tls-shared" | "mtls";

/** Slab memory of the whole machine (SReclaimable + SUnreclaim), bytes. */
function slabBytes(): number {
  const m = /\nSlab:\s+(\d+) kB/.exec(readFileSync("/proc/meminfo", "utf8"));
  return Number(m?.[1] ?? 0) * 1024;
}

/** Socket buffer memory of the established TCP sockets whose peer is one of `ports` (cicada's side), bytes, and how many. */
function clientSocketBytes(ports: number[]): { bytes: number; sockets: number } {
  const out = Bun.spawnSync(["ss", "-tmnH", "state", "established"]).stdout.toString();
  const want = new Set(ports.map(String));
  let bytes = 0;
  let sockets = 0;
  const lines = out.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const cols = lines[i]!.trim().split(/\s+/);
    const peer = cols[3]?.split(":").pop();
    if (!peer || !want.has(peer)) continue;
    const mem = /skmem:\(([^)]*)\)/.exec(lines[i]! + (lines[i + 1] ?? ""));
    if (!mem) continue;
    const f = Object.fromEntries(mem[1]!.split(",").map((kv) => [kv.replace(/\d+$/, ""), Number(/\d+$/.exec(kv)?.[0] ?? 0)]));
    bytes += (f.r ?? 0) + (f.w ?? 0) + (f.f ?? 0) + (f.o ?? 0) + (f.bl ?? 0);
    sockets++;
  }
  return { bytes, sockets };
}

function swarmConfig(brokers: Broker[], tls: boolean): Omit<SwarmConfig, "caPem"> {
  return {
    targets: brokers.map((b) => ({ host: b.host, port: b.port })),
    sources: [],
    tls,
    ...(tls && tlsVersion ? { tlsVersion } : {}),
    ...(tls && tlsGroups ? { tlsGroups } : {}),
    ...(tls && tlsStack !== "bun" ? { tlsStack } : {}),
    insecure: false,
    tenant: "admin",
    qos: 1,
    version: 4,
    keepaliveS: 120,
    // Idle: held connections, no telemetry.
    intervalMs: [3_600_000, 3_600_000],
    payloadSize: 0,
    reconnectMs: [1000, 10_000],
    connectTimeoutMs: 60_000,
    users: devices,
    rate: Number(values.rate),
  };
}

/** One certificate for every device, with an empty CN so each device keeps its own client id. */
function sharedIdentity(certDir: string, into: string): { cert: string; key: string } {
  const { ca } = openLocalCa(certDirOf(certDir), { kind: "ec" });
  const issued = issueDevice(ca, "", "ec", 30);
  mkdirSync(into, { recursive: true });
  const files = { cert: join(into, "shared.crt"), key: join(into, "shared.key") };
  writeFileSync(files.cert, issued.certPem);
  writeFileSync(files.key, issued.keyPem, { mode: 0o600 });
  return files;
}

async function hold(layer: Layer, certDir: string): Promise<void> {
  const state = mkdtempSync(join(tmpdir(), "cicada-bench-memory-"));
  const brokers = await startBrokers(Number(values.brokers), { certDir, stateDir: state, verbose: false, plain: layer === "tcp", anonymous: layer === "tls-shared" });
  try {
    log(`${layer}: ${devices} idle devices over ${brokers.length} brokers at ${values.rate}/s`);
    const slab0 = slabBytes();
    const fx = new Fixture(certDir, swarmConfig(brokers, layer !== "tcp"), layer === "tls-shared" ? { sharedIdentity: sharedIdentity(certDir, state) } : {});
    // The first sample is the process before its first device: the fixture sends it after a
    // full GC and before the swarm starts. (A later one already holds the ramp's first devices.)
    const base: FixtureSample = await fx.until(() => true, "the first sample", 30);
    const brokerCpu0 = treeUsage(brokers.map((b) => b.pid)).cpuS;
    await fx.until((s) => s.connected >= devices || s.connected + s.connect_failures >= devices, `${devices} connected`, (devices / Number(values.rate)) * 3 + 60);
    await Bun.sleep(3000);
    fx.gc();
    await Bun.sleep(2000);
    const held = await fx.next();
    const brokerCpuS = treeUsage(brokers.map((b) => b.pid)).cpuS - brokerCpu0;
    const n = Math.max(1, held.connected);
    const kernel = clientSocketBytes(brokers.map((b) => b.port));
    const slab = slabBytes() - slab0;
    const per = (bytes: number) => Math.round(bytes / n);
    const rss = held.rss - base.rss;
    const heap = held.js_heap - base.js_heap;
    const capacity = held.js_heap_capacity - base.js_heap_capacity;
    emit({
      layer,
      ...(layer !== "tcp" && tlsVersion ? { tls_version: tlsVersion } : {}),
      ...(layer !== "tcp" ? { tls_groups: tlsGroups ?? DEFAULT_TLS_GROUPS, tls_stack: tlsStack } : {}),
      devices,
      connected: held.connected,
      connect_failures: held.connect_failures,
      rss_per_device: per(rss),
      js_heap_per_device: per(heap),
      jsc_spare_per_device: per(capacity - heap),
      native_rest_per_device: per(rss - capacity),
      js_extra_per_device: per(held.js_extra - base.js_extra),
      kernel_tcp_per_device: kernel.sockets ? Math.round(kernel.bytes / kernel.sockets) : 0,
      kernel_slab_per_connection_both_ends: per(slab),
      // The ramp's CPU (plus a few idle seconds), per device connected: what holding them cost to set up.
      cpu_ms_per_connect: +((held.cpu_us - base.cpu_us) / n / 1000).toFixed(3),
      sys_ms_per_connect: +((held.sys_us - base.sys_us) / n / 1000).toFixed(3),
      // The brokers' side of the same ramp: what each connect cost mosquitto.
      brokers_cpu_ms_per_connect: +((brokerCpuS * 1000) / n).toFixed(3),
      process_rss_mb: +(held.rss / 1048576).toFixed(1),
      // The process before its first device: what each worker process costs on top of its devices.
      base_rss_mb: +(base.rss / 1048576).toFixed(1),
    });
    await fx.stop();
  } finally {
    for (const b of brokers) await b.stop();
    rmSync(state, { recursive: true, force: true });
  }
}

/** A process's resident memory (/proc/PID/status: all, its own anonymous pages, file pages) and its PSS, bytes. */
function memoryOf(pid: number): { rss: number; anon: number; file: number; pss: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
  return { rss: kb("VmRSS"), anon: kb("RssAnon"), file: kb("RssFile"), pss: pssBytes(pid) };
}

/** The compiled executable's processes before their devices: a supervisor and 2 workers holding one device each. */
async function processes(certDir: string): Promise<void> {
  const state = mkdtempSync(join(tmpdir(), "cicada-bench-memory-"));
  const exe = buildExecutable(join(state, "cicada"));
  const [broker] = await startBrokers(1, { certDir, stateDir: state, verbose: false });
  try {
    const run = Bun.spawn([exe, "run", "--certs", certDir, "--port", String(broker!.port), "--users", "2", "--workers", "2", "--publish", "off", "--duration", "12s"], { stdio: ["ignore", "ignore", "inherit"] });
    await Bun.sleep(8000);
    const workers = processTree(run.pid).slice(1);
    const sup = memoryOf(run.pid);
    const ws = workers.map(memoryOf);
    const mb = (b: number) => +(b / 1048576).toFixed(1);
    const avg = (k: keyof ReturnType<typeof memoryOf>) => mb(ws.reduce((a, w) => a + w[k], 0) / Math.max(1, ws.length));
    emit({
      layer: "process",
      workers: ws.length,
      worker_rss_mb: avg("rss"),
      worker_own_mb: avg("anon"),
      worker_executable_mb: avg("file"),
      worker_pss_mb: avg("pss"),
      supervisor_rss_mb: mb(sup.rss),
      supervisor_own_mb: mb(sup.anon),
      tree_pss_mb: mb(sup.pss + ws.reduce((a, w) => a + w.pss, 0)),
    });
    await run.exited;
  } finally {
    await broker!.stop();
    rmSync(state, { recursive: true, force: true });
  }
}

const certDir = await ensureCerts(values.certs!, devices, "ec", log);
for (const layer of values.layers!.split(",") as (Layer | "process")[]) {
  if (layer === "process") await processes(certDir);
  else if (["tcp", "tls-shared", "mtls"].includes(layer)) await hold(layer, certDir);
  else throw new Error(`unknown layer ${layer}: tcp, tls-shared, mtls or process`);
}
