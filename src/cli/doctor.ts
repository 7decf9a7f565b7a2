/** `cicada doctor`: is this load machine ready for N devices, and what to change if not. */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { MQTT_OPTIONS, readTlsOffer } from "../config/mqtt.ts";
import { parseCommand, type CommandSpec } from "../config/options.ts";
import { EXIT } from "../errors.ts";
import { assess, probeHostFacts, verdictLine, workersFor, type Plan } from "../run/doctor.ts";
import { certDir, listDeviceIds } from "../store/dir.ts";
import { probeBroker, type ProbeTls } from "../transport/probe.ts";

const SPEC: CommandSpec = {
  name: "doctor",
  summary: "Check whether this machine can hold N devices: OS limits, memory, cores and the brokers; print what to change.",
  usage: "cicada doctor [--devices N] [--brokers HOST:PORT,…] [--certs DIR] [--tls-stack bun|cicada] [--tls-version 1.2|1.3] [--tls-groups LIST]",
  options: {
    devices: { type: "string", short: "n", arg: "N", help: "Devices this machine should hold (without it: how many it can)" },
    brokers: { type: "string", arg: "LIST", help: "Broker addresses the devices will dial, HOST:PORT comma-separated: each is dialled once, its TLS certificate checked" },
    certs: { type: "string", arg: "DIR", env: "CERT_DIR", default: "cert", help: "Certificate directory: its ca.crt checks the brokers' certificates, its first device makes the handshake mutual" },
    tls: { type: "boolean", negatable: true, default: "true", help: "Dial the brokers with TLS (--no-tls: plain TCP)" },
    "tls-stack": { ...MQTT_OPTIONS["tls-stack"]!, help: "Whose TLS the devices will speak, as cicada run --tls-stack: the brokers are dialled with it, and a device's memory is its figure" },
    "tls-version": { ...MQTT_OPTIONS["tls-version"]!, help: "Offer only this TLS version, as cicada run --tls-version (default: both; the line says which the broker picked)" },
    "tls-groups": { ...MQTT_OPTIONS["tls-groups"]!, help: "Offer these key-exchange groups, as cicada run --tls-groups (the line says which the broker picked)" },
    workers: { type: "string", short: "w", arg: "auto|N", default: "auto", help: "Worker processes the run will use, as cicada run --workers" },
    "source-address": { type: "string", arg: "LIST", help: "Local addresses the run will connect from, as cicada run --source-address" },
  },
  details: `
Each check turns a limit into a number of devices; the smallest is the verdict ("this machine
can hold ~N devices; the limit is X"). Under each check that falls short: the commands that
lift it (sysctl, ulimit, a systemd drop-in). Per-device memory is cicada's measured figure for
mTLS devices (README, "Sizing").

Exit 0 when N devices fit and every broker answered, 2 when not.`,
};

export async function doctorCommand(argv: string[]): Promise<number> {
  const o = parseCommand(SPEC, argv);
  if (!o) return EXIT.OK;
  const devices = o.has("devices") ? o.int("devices", 1, 1) : null;
  const workers = o.str("workers") === "auto" ? "auto" : o.int("workers", 1, 1, 1024);
  const brokers: [string, number][] = [];
  for (const b of o.list("brokers") ?? []) {
    const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(b);
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) o.fail("brokers", "must be HOST:PORT, comma-separated", b);
    else brokers.push([m[1]!.replace(/^\[(.*)\]$/, "$1"), Number(m[2])]);
  }
  const sources = o.list("source-address") ?? [];
  const offer = readTlsOffer(o, o.bool("tls"), "drop --no-tls");
  o.check();

  const plan: Plan = { devices, workers, destinations: new Set(brokers.map(([h, p]) => `${h}:${p}`)).size || 1, sources: sources.length, ...(offer.tlsStack ? { tlsStack: offer.tlsStack } : {}) };
  const facts = await probeHostFacts();
  const v = assess(plan, facts);
  const out: string[] = [`cicada doctor: ${devices === null ? "this machine" : `${devices.toLocaleString("en-US")} devices`}, ${workersFor(plan, facts)} worker process(es)`, ""];
  for (const c of v.checks) {
    const fits = c.advisory ? "note" : devices !== null && c.holds < devices ? "SHORT" : "ok";
    out.push(`  [${fits.padEnd(5)}] ${c.name}: ${c.found}${c.advisory || !Number.isFinite(c.holds) ? "" : ` → ~${Math.floor(c.holds).toLocaleString("en-US")} devices`}`);
    if ((fits === "SHORT" || (c.advisory && c.fix.length)) && c.fix.length) for (const f of c.fix) out.push(`           ${f}`);
  }

  let brokersOk = true;
  if (brokers.length) {
    out.push("", "Brokers:");
    const tls = o.bool("tls") ? probeTls(o.str("certs")!) : null;
    if (tls?.note) out.push(`  (${tls.note})`);
    for (const [host, port] of brokers) {
      const r = await probeBroker(host, port, tls ? { ...tls.options, ...offer } : null);
      brokersOk &&= r.ok;
      const times = r.connectMs === undefined ? "" : ` (TCP ${r.connectMs.toFixed(1)} ms${r.tlsMs === undefined ? "" : `, TLS ${r.tlsMs.toFixed(1)} ms`}${r.protocol ? `, ${r.protocol}` : ""}${r.group ? ` ${r.group}` : ""})`;
      out.push(`  [${(r.ok ? "ok" : "FAIL").padEnd(5)}] ${host}:${port}: ${r.detail}${times}${r.peer ? `; ${r.peer}` : ""}`);
    }
  }
  out.push("", `Verdict: ${verdictLine(v, devices)}${brokersOk ? "" : "; a broker did not answer as it should"}.`);
  process.stdout.write(`${out.join("\n")}\n`);
  return (devices !== null && v.short.length > 0) || !brokersOk ? EXIT.BAD_INPUT : EXIT.OK;
}

/** The CA of the certificate directory, and its first device's certificate and key, for a mutual handshake. */
function probeTls(root: string): { options: ProbeTls; note?: string } {
  const dir = certDir(root);
  if (!existsSync(dir.caCert)) return { options: {}, note: `no ${dir.caCert}: the brokers' certificates are not checked (give --certs DIR)` };
  const options: ProbeTls = { ca: readFileSync(dir.caCert, "utf8") };
  const [id] = listDeviceIds(root);
  if (id === undefined) return { options, note: `no device in ${root}: the handshake is not mutual` };
  return { options: { ...options, cert: readFileSync(join(root, `${id}.crt`), "utf8"), key: readFileSync(join(root, `${id}.key`), "utf8") }, note: `as device ${id} of ${root}` };
}
