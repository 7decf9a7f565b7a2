#!/usr/bin/env bun
/**
 * What an idle mTLS connection costs in Bun itself, without cicada: the floor under
 * `bench/swarm.bench.ts --only held`. Each mode runs in its own process, opens N TLS
 * connections to one local mosquitto with bare Bun.connect (no MQTT), and prints one JSON line
 * with the RSS and CPU per connection:
 *   own        — every connection its own certificate, CA store in each (a naive swarm)
 *   own-no-ca  — own certificate, no CA store (what cicada does once the broker cert is pinned)
 *   shared     — one certificate for all (Bun then shares one TLS context; not a device fleet)
 * `--tls-version 1.2|1.3` offers only that version and `--tls-groups` those key-exchange groups, as
 * `cicada run` does (`--tls-groups bun` leaves Bun's own default, X25519MLKEM768 first).
 *   bun bench/tls-floor.bench.ts [--conns 5000] [--only own,own-no-ca,shared] [--tls-version 1.2] [--tls-groups X25519]
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { Socket } from "bun";
import { startBroker } from "../scripts/lib/testbed.ts";
import { listDeviceIds } from "../src/store/dir.ts";
import { tlsOfferOptions, type TlsVersion } from "../src/transport/connect.ts";
import { ensureCerts } from "./fixtures/common.ts";

const MODES = ["own", "own-no-ca", "shared"] as const;
type Mode = (typeof MODES)[number];

const { values } = parseArgs({
  options: {
    conns: { type: "string", default: "5000" },
    only: { type: "string", default: MODES.join(",") },
    certs: { type: "string", default: join(tmpdir(), "cicada-bench-certs-ec") },
    "tls-version": { type: "string" },
    "tls-groups": { type: "string" },
    // Internal: run one mode against a broker already started by the parent.
    child: { type: "string" },
    port: { type: "string" },
  },
});
const n = Number(values.conns);
const certDir = values.certs!;
const groups = values["tls-groups"];
// `--tls-groups bun`: no ecdhCurve, so Bun's own default groups; otherwise cicada's offer.
const { ecdhCurve, ...version } = tlsOfferOptions({ tlsVersion: values["tls-version"] as TlsVersion | undefined, ...(groups && groups !== "bun" ? { tlsGroups: groups } : {}) });
const offer = groups === "bun" ? version : { ...version, ecdhCurve };

if (values.child) {
  await measure(values.child as Mode, Number(values.port));
  process.exit(0);
}

await ensureCerts(certDir, n, "ec", (line) => process.stderr.write(`# ${line}\n`));
const state = mkdtempSync(join(tmpdir(), "cicada-tls-floor-"));
const broker = await startBroker({ certDir, stateDir: state, verbose: false });
try {
  for (const mode of values.only!.split(",")) {
    if (!MODES.includes(mode as Mode)) throw new Error(`--only: unknown mode ${mode} (${MODES.join(", ")})`);
    const child = Bun.spawn([process.execPath, import.meta.path, "--child", mode, "--port", String(broker.port), "--conns", String(n), "--certs", certDir, ...(values["tls-version"] ? ["--tls-version", values["tls-version"]] : []), ...(groups ? ["--tls-groups", groups] : [])], { stdio: ["ignore", "inherit", "inherit"] });
    if ((await child.exited) !== 0) throw new Error(`mode ${mode} exited ${child.exitCode}`);
  }
} finally {
  await broker.stop();
  rmSync(state, { recursive: true, force: true });
}

async function measure(mode: Mode, port: number): Promise<void> {
  const ca = readFileSync(join(certDir, "ca.crt"), "utf8");
  const ids = listDeviceIds(certDir).slice(0, n);
  const pems = ids.map((id) => ({ cert: readFileSync(join(certDir, `${id}.crt`), "utf8"), key: readFileSync(join(certDir, `${id}.key`), "utf8") }));
  let done = 0;
  let failed = 0;
  const handler = {
    open() {},
    data() {},
    close() {},
    error() {},
    handshake(_s: Socket, success: boolean) {
      done++;
      if (!success) failed++;
    },
    connectError() {
      done++;
      failed++;
    },
  };
  const sockets: Socket[] = [];
  Bun.gc(true);
  await Bun.sleep(300);
  const rss0 = process.memoryUsage().rss;
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < n; i++) {
    const own = pems[i]!;
    const tls = { ...(mode === "shared" ? pems[0]! : own), ...(mode === "own-no-ca" ? {} : { ca }), rejectUnauthorized: false, ...offer };
    sockets.push(await Bun.connect({ hostname: "127.0.0.1", port, tls, socket: handler }));
    // Let handshakes complete as we go, like a ramp.
    if (i % 200 === 199) await Bun.sleep(50);
  }
  const deadline = Date.now() + 120_000;
  while (done < n && Date.now() < deadline) await Bun.sleep(100);
  const cpu = process.cpuUsage(cpu0);
  Bun.gc(true);
  await Bun.sleep(1000);
  Bun.gc(true);
  const rss = process.memoryUsage().rss;
  console.log(
    JSON.stringify({
      bench: "tls-floor",
      mode,
      ...(values["tls-version"] ? { tls_version: values["tls-version"] } : {}),
      tls_groups: groups === "bun" ? "bun's default" : ecdhCurve,
      connections: n,
      handshakes_ok: done - failed,
      rss_kb_per_conn: +((rss - rss0) / n / 1024).toFixed(2),
      cpu_ms_per_conn: +((cpu.user + cpu.system) / n / 1000).toFixed(3),
    }),
  );
  for (const s of sockets) s.end();
}
