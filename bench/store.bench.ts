#!/usr/bin/env bun
/**
 * The Redis certificate store: certificates stored in Redis per second (`cicada certs create
 * --redis`, one process and all cores) and exported per second (`cicada store export` of the
 * whole store into an empty directory, then again into the full one). Runs the real commands
 * against a redis-server it starts on loopback and stops. One JSON line per figure.
 *   bun bench/store.bench.ts [--devices 100000] [--one-core 5000]
 */
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import Redis from "ioredis";
import { startRedis } from "../scripts/lib/testbed.ts";

const { values } = parseArgs({ options: { devices: { type: "string", default: "100000" }, "one-core": { type: "string", default: "5000" } } });
const devices = Number(values.devices);
const oneCore = Number(values["one-core"]);
const MAIN = resolve(import.meta.dir, "../src/cli/main.ts");

function emit(o: Record<string, unknown>): void {
  console.log(JSON.stringify({ bench: "store", ...o }));
}

/** Runs `cicada args...`, fails loudly on a non-zero exit; returns wall seconds and the children's CPU seconds. */
async function cicada(args: string[], cwd: string): Promise<{ seconds: number; cpu_s: number; stdout: string }> {
  const t0 = performance.now();
  const proc = Bun.spawn([process.execPath, MAIN, ...args], { cwd, stdio: ["ignore", "pipe", "pipe"] });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  const seconds = (performance.now() - t0) / 1000;
  if (code !== 0) throw new Error(`cicada ${args.join(" ")} exited ${code}: ${stderr.trim()}`);
  const ru = proc.resourceUsage();
  const cpu_s = ru ? Number(ru.cpuTime.user + ru.cpuTime.system) / 1e6 : NaN;
  return { seconds, cpu_s, stdout };
}

/** The number of device hashes in database `db`: what was really stored. */
async function stored(url: string, db: number): Promise<number> {
  const r = new Redis(`${url}/${db}`);
  try {
    return await r.dbsize();
  } finally {
    r.disconnect();
  }
}

const work = mkdtempSync(join(tmpdir(), "cicada-store-bench-"));
try {
  await using redis = await startRedis({ stateDir: work });

  // Stored per second, one process: a separate database so the big store below starts empty.
  const one = await cicada(["certs", "create", "--devices", String(oneCore), "--jobs", "1", "--store", `${redis.url}/2`, "--certs", "ca"], work);
  if ((await stored(redis.url, 2)) !== oneCore) throw new Error(`db 2 holds ${await stored(redis.url, 2)} devices, expected ${oneCore}`);
  emit({ figure: "stored_per_s", processes: 1, certs: oneCore, seconds: +one.seconds.toFixed(2), certs_per_s: Math.round(oneCore / one.seconds) });

  const all = await cicada(["certs", "create", "--devices", String(devices), "--store", redis.url, "--certs", "ca"], work);
  if ((await stored(redis.url, 0)) !== devices) throw new Error(`db 0 holds ${await stored(redis.url, 0)} devices, expected ${devices}`);
  emit({ figure: "stored_per_s", processes: availableParallelism(), certs: devices, seconds: +all.seconds.toFixed(2), certs_per_s: Math.round(devices / all.seconds) });

  const fresh = await cicada(["store", "export", "--store", redis.url, "--certs", "out"], work);
  const files = readdirSync(join(work, "out")).filter((n) => !n.startsWith(".")).length;
  if (files !== 2 * devices + 3) throw new Error(`export wrote ${files} entries, expected ${2 * devices + 3}`);
  emit({ figure: "exported_per_s", into: "empty dir", certs: devices, seconds: +fresh.seconds.toFixed(2), certs_per_s: Math.round(devices / fresh.seconds), cpu_s: +fresh.cpu_s.toFixed(2), goal_s: 60 });

  const again = await cicada(["store", "export", "--store", redis.url, "--certs", "out"], work);
  emit({ figure: "exported_per_s", into: "full dir (nothing to write)", certs: devices, seconds: +again.seconds.toFixed(2), certs_per_s: Math.round(devices / again.seconds) });
} finally {
  rmSync(work, { recursive: true, force: true });
}
