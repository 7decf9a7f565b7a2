#!/usr/bin/env bun
/**
 * CONNECT → CONNACK against mosquitto with its default `set_tcp_nodelay false`, and with it
 * true. Two parts, one JSON line per case:
 *  - `cicada run` (one process, --rate 20): the report's connack phase, over TCP and mTLS;
 *  - a bare TLS client in this process, one connection at a time, trying what a client can do:
 *    its own TCP_NODELAY, refusing session tickets (SSL_OP_NO_TICKET), TLS 1.2 only
 *    (SSL_OP_NO_TLSv1_3), and a PINGREQ 3 ms after CONNECT (MQTT lets a client send before
 *    CONNACK, §3.1.4), whose segment carries the ACK the broker waits for.
 *   bun bench/connack.bench.ts [--devices 50] [--tries 50]
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as mqtt from "mqtt-packet";
import { startBroker } from "../scripts/lib/testbed.ts";
import { makeCerts } from "../test/helpers/swarm.ts";
import { deviceIdentity } from "../test/helpers/testbed.ts";

const { values } = parseArgs({ options: { devices: { type: "string", default: "50" }, tries: { type: "string", default: "50" } } });
const devices = Number(values.devices);
const tries = Number(values.tries);
const MAIN = join(import.meta.dir, "../src/cli/main.ts");
const SSL_OP_NO_TICKET = 0x4000;
const SSL_OP_NO_TLSv1_3 = 0x20000000;
const p50 = (xs: number[]) => Math.round([...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! * 1000) / 1000;

interface Try {
  noDelay?: boolean;
  secureOptions?: number;
  pingAfterMs?: number;
}

/** One mTLS connection: ms from CONNECT written to CONNACK read. */
async function connackOnce(port: number, id: { cert: string; key: string; ca: string; cn: string }, t: Try): Promise<number> {
  const parser = mqtt.parser({ protocolVersion: 4 });
  const { promise, resolve, reject } = Promise.withResolvers<number>();
  let sentAt = 0;
  parser.on("packet", (p) => p.cmd === "connack" && resolve(performance.now() - sentAt));
  const sock = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    tls: { cert: id.cert, key: id.key, ca: id.ca, ...(t.secureOptions ? { secureOptions: t.secureOptions } : {}) },
    socket: {
      open: (s) => void (t.noDelay && s.setNoDelay(true)),
      handshake: (s, ok) => {
        if (!ok) return reject(new Error("handshake failed"));
        sentAt = performance.now();
        s.write(mqtt.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: id.cn, clean: true, keepalive: 60 }));
        if (t.pingAfterMs) setTimeout(() => s.write(mqtt.generate({ cmd: "pingreq" })), t.pingAfterMs);
      },
      data: (_s, d) => void parser.parse(Buffer.from(d)),
      close: () => reject(new Error("closed")),
    },
  });
  const ms = await promise;
  sock.end();
  return ms;
}

const state = mkdtempSync(join(tmpdir(), "cicada-connack-"));
const certs = join(state, "cert");
await makeCerts(certs, devices);
try {
  for (const nodelay of [false, true]) {
    for (const transport of ["tcp", "tls"]) {
      await using b = await startBroker({ certDir: certs, stateDir: state, verbose: false, nodelay, plain: transport === "tcp" });
      const report = join(state, "r.json");
      const run = Bun.spawnSync([process.execPath, MAIN, "run", "--transport", transport, "--certs", certs, "--port", String(b.port), "--users", String(devices), "--rate", "20", "--duration", `${Math.ceil(devices / 20) + 2}s`, "--workers", "1", "--report", report], { stdout: "ignore", stderr: "pipe" });
      if (run.exitCode !== 0) throw new Error(`cicada run exited ${run.exitCode}: ${run.stderr.toString().slice(-400)}`);
      const r = JSON.parse(readFileSync(report, "utf8"));
      console.log(JSON.stringify({ bench: "connack", client: "cicada", broker_nodelay: nodelay, transport, connack_p50_ms: r.phases.connack.p50_ms, connack_p99_ms: r.phases.connack.p99_ms, connect_p50_ms: r.stats.connect.p50_ms, note: r.notes ?? [] }));
    }
  }
  await using slow = await startBroker({ certDir: certs, stateDir: state, verbose: false, nodelay: false });
  const id = { ...deviceIdentity(certs, "d00000"), ca: readFileSync(join(certs, "ca.crt"), "utf8") };
  const cases: [string, Try][] = [
    ["bare client", {}],
    ["client TCP_NODELAY", { noDelay: true }],
    ["client SSL_OP_NO_TICKET", { secureOptions: SSL_OP_NO_TICKET }],
    ["client TLS 1.2 only", { secureOptions: SSL_OP_NO_TLSv1_3 }],
    ["PINGREQ 3 ms after CONNECT", { pingAfterMs: 3 }],
  ];
  for (const [name, t] of cases) {
    const ms: number[] = [];
    for (let i = 0; i < tries; i++) ms.push(await connackOnce(slow.port, id, t));
    console.log(JSON.stringify({ bench: "connack", client: name, broker_nodelay: false, transport: "tls", connack_p50_ms: p50(ms), tries }));
  }
} finally {
  rmSync(state, { recursive: true, force: true });
}
