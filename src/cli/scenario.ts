/** `cicada scenario`: start a scenario file (init) and try one before a run (check). */
import * as apiSource from "../scenario/api.ts" with { type: "text" };
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { tmpdir } from "node:os";
import type { Packet } from "mqtt-packet";
import pkg from "../../package.json" with { type: "json" };
import { parseCommand, runSubcommand, type CommandSpec } from "../config/options.ts";
import { SCENARIO_NAME } from "../config/scenario.ts";
import type { IdentitySource, SwarmConfig } from "../engine/config.ts";
import { Swarm } from "../engine/swarm.ts";
import { ConfigError, EXIT } from "../errors.ts";
import { DryBroker, type DryClient } from "../scenario/dry-broker.ts";
import { loadScenario, ScenarioError, type LoadedScenario } from "../scenario/load.ts";
import { writeFileAtomic } from "../sys/fs.ts";
import { parseDuration } from "../sys/units.ts";

const INIT: CommandSpec = {
  name: "scenario init",
  summary: "Write a starter scenario NAME.ts, and cicada.d.ts: the scenario API's types, so editors complete it.",
  usage: "cicada scenario init NAME [--dir DIR]",
  options: { dir: { type: "string", arg: "DIR", default: ".", help: "Where to write (made if missing)" } },
  details: `
Writes DIR/NAME.ts (never over an existing file), DIR/cicada.d.ts (rewritten each time: it
matches this binary) and DIR/tsconfig.json when DIR has none. Then:
  cicada scenario check DIR/NAME.ts
  cicada run --scenario DIR/NAME.ts --users 1000`,
};

const CHECK: CommandSpec = {
  name: "scenario check",
  summary: "Type-check a scenario and run one device against a broker in this process, printing what it sends.",
  usage: "cicada scenario check FILE [--seconds TIME] [--send 'TOPIC PAYLOAD']…",
  options: {
    seconds: { type: "string", arg: "TIME", default: "3s", help: "How long the device runs; each every-hook runs once at its start, then on its interval" },
    send: { type: "string", arg: "TOPIC PAYLOAD", multiple: true, help: "A message the broker sends the device 500 ms after it connects (repeatable; MQTT 5: with a Response Topic TOPIC/resp), e.g. --send 'admin:check-0/config {\"op\":\"ping\"}'" },
    mqtt: { type: "string", arg: "3.1.1|5", default: "3.1.1", help: "MQTT version, unless the scenario names one" },
    tenant: { type: "string", arg: "NAME", default: "admin", help: "The device's tenant: its client id is TENANT:check-0" },
    "no-typecheck": { type: "boolean", help: "Skip the type check (it needs tsc: on PATH or in a node_modules/.bin above FILE)" },
  },
  details: `
Nothing leaves this machine: the broker listens on 127.0.0.1 in this process, grants every
subscription and acknowledges every publish. Exit 0 when the scenario type-checks, loads and
runs without a scenario_error; 2 when it does not.`,
};

const HELP = `Device behaviour written in TypeScript (README, "Scenarios").

Usage: cicada scenario <command> [options]

Commands:
  init NAME   Write a starter NAME.ts and cicada.d.ts (the API's types)
  check FILE  Type-check FILE and run one device against a broker in this process

Run one with: cicada run --scenario FILE.ts
`;

export function scenarioCommand(argv: string[]): Promise<number> {
  return runSubcommand("scenario", HELP, { init, check }, argv);
}

/** The scenario API as a declaration file: `declare module "cicada/scenario"` around scenario/api.ts. */
export function declarationText(): string {
  const source = (apiSource as unknown as { default: string }).default;
  // The folder's two header lines speak to cicada's maintainers, not to scenario authors.
  const lines = source.split("\n");
  while (lines[0]?.startsWith("//")) lines.shift();
  const body = lines.join("\n").replace(/^export declare function /m, "export function ").trim();
  return `// The scenario API of cicada ${pkg.version}, for editors and tsc (written by cicada scenario init).\n// cicada provides the module itself: a scenario needs no package.\ndeclare module "cicada/scenario" {\n${body.replace(/^(?=.)/gm, "  ")}\n}\n`;
}

function starter(name: string): string {
  return `/**
 * ${name}: what this device does. Run it with
 *   cicada scenario check ${name}.ts
 *   cicada run --scenario ${name}.ts --users 1000
 */
import { defineScenario } from "cicada/scenario";

interface State {
  readings: number;
}

export default defineScenario<State>({
  name: "${name}",
  topics: { telemetry: "{clientId}/attrs", commands: "{clientId}/config" },
  state: () => ({ readings: 0 }),
  onConnect(d) {
    d.subscribe("commands", { qos: 1 });
  },
  every: [
    {
      name: "telemetry",
      interval: "30s",
      run(d) {
        d.state.readings++;
        d.publish("telemetry", { ts: d.now(), seq: d.seq(), temperature: Math.round((20 + d.random() * 5) * 10) / 10 }, { qos: 1 });
      },
    },
  ],
  onMessage(d, _topic, payload) {
    // A command {"ts": ms}: its age on arrival, in the report's "command" row.
    const ts = (payload as { ts?: number })?.ts;
    d.measure("command", typeof ts === "number" ? d.now() - ts : undefined);
  },
});
`;
}

const TSCONFIG = `{
  "compilerOptions": {
    "target": "ESNext",
    "module": "Preserve",
    "moduleResolution": "bundler",
    "strict": true,
    "skipLibCheck": true,
    "noEmit": true
  }
}
`;

async function init(argv: string[]): Promise<number> {
  const o = parseCommand(INIT, argv, undefined, { positionals: true });
  if (!o) return EXIT.OK;
  const name = o.positionals[0];
  if (name === undefined) o.issues.push("give the scenario's NAME: cicada scenario init NAME");
  else if (!SCENARIO_NAME.test(name)) o.issues.push(`NAME must be 1-64 letters, digits, - or _ (got ${JSON.stringify(name)})`);
  if (o.positionals.length > 1) o.issues.push(`unexpected argument ${JSON.stringify(o.positionals[1])}`);
  const dir = o.str("dir")!;
  const file = join(dir, `${name}.ts`);
  if (name && existsSync(file)) o.issues.push(`${file} exists: cicada scenario init never writes over a scenario`);
  o.check();
  mkdirSync(dir, { recursive: true });
  await writeFileAtomic(file, starter(name!), 0o644);
  await writeFileAtomic(join(dir, "cicada.d.ts"), declarationText(), 0o644);
  const wrote = [file, join(dir, "cicada.d.ts")];
  if (!existsSync(join(dir, "tsconfig.json"))) {
    await writeFileAtomic(join(dir, "tsconfig.json"), TSCONFIG, 0o644);
    wrote.push(join(dir, "tsconfig.json"));
  }
  process.stdout.write(`wrote ${wrote.join(", ")}\nnext: cicada scenario check ${file}\n`);
  return EXIT.OK;
}

async function check(argv: string[]): Promise<number> {
  const o = parseCommand(CHECK, argv, undefined, { positionals: true });
  if (!o) return EXIT.OK;
  const file = o.positionals[0];
  if (file === undefined) o.issues.push("give the scenario FILE: cicada scenario check FILE.ts");
  else if (!existsSync(file)) o.issues.push(`${file}: no such file`);
  const ms = parseDuration(o.str("seconds")!);
  if (ms === undefined || ms <= 0 || ms > 600_000) o.fail("seconds", "must be a time from 1ms to 10m, e.g. 3s", o.str("seconds"));
  const mqtt = o.choice("mqtt", ["3.1.1", "5"], "3.1.1");
  const sends = o.all("send").map((s) => {
    const at = s.indexOf(" ");
    if (at < 1) o.fail("send", "must be 'TOPIC PAYLOAD'", s);
    return { topic: s.slice(0, at), payload: s.slice(at + 1) };
  });
  o.check();
  const out = (line: string) => process.stdout.write(`${line}\n`);

  let typesOk = true;
  if (!o.bool("no-typecheck")) typesOk = await typecheck(file!, out);
  let sc: LoadedScenario;
  try {
    sc = await loadScenario(file!);
  } catch (err) {
    if (err instanceof ScenarioError) throw new ConfigError(err.problems.map((p) => `${file}: ${p}`));
    throw err;
  }
  out(`scenario ${sc.ref.name}: loads (sha256 ${sc.ref.sha256.slice(0, 12)}…); one device for ${ms! / 1000}s against a broker in this process:`);
  const errors = await dryRun(sc, { ms: ms!, version: sc.version ?? (mqtt === "5" ? 5 : 4), tenant: o.str("tenant")!, sends }, out);
  return typesOk && errors === 0 ? EXIT.OK : EXIT.BAD_INPUT;
}

/** tsc --noEmit on the file with the API's declarations; true when it passes or no tsc is found (said so). */
async function typecheck(file: string, out: (line: string) => void): Promise<boolean> {
  const tsc = findTsc(dirname(resolve(file)));
  if (!tsc) {
    out("types: not checked (no tsc on PATH or in a node_modules/.bin above the file: npm install -D typescript)");
    return true;
  }
  const dts = join(tmpdir(), `cicada-${process.pid}.d.ts`);
  await writeFileAtomic(dts, declarationText(), 0o644);
  // Run where no tsconfig.json is (tsc refuses files beside one), with the @types next to that tsc (node's, for the environment and node modules).
  const types = join(dirname(dirname(tsc)), "@types");
  const args = [resolve(file), dts, "--noEmit", "--strict", "--skipLibCheck", "--target", "esnext", "--module", "preserve", "--moduleResolution", "bundler", ...(existsSync(join(types, "node")) ? ["--typeRoots", types, "--types", "node"] : [])];
  const proc = Bun.spawn([tsc, ...args], { cwd: tmpdir(), stdio: ["ignore", "pipe", "pipe"] });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code === 0) {
    out(`types: ok (${tsc})`);
    return true;
  }
  out(`types: errors (${tsc}):`);
  for (const line of (stdout + stderr).trim().split("\n")) out(`  ${line}`);
  return false;
}

function findTsc(from: string): string | null {
  for (let dir = from; ; dir = dirname(dir)) {
    const p = join(dir, "node_modules", ".bin", "tsc");
    if (existsSync(p)) return p;
    if (dirname(dir) === dir) break;
  }
  return Bun.which("tsc");
}

/** Runs one device of the scenario against a DryBroker, printing each packet it sends; returns the scenario_error count. */
async function dryRun(sc: LoadedScenario, o: { ms: number; version: 4 | 5; tenant: string; sends: { topic: string; payload: string }[] }, out: (line: string) => void): Promise<number> {
  const t0 = performance.now();
  const stamp = () => `+${((performance.now() - t0) / 1000).toFixed(3)}s`;
  const broker = new DryBroker((_c: DryClient | null, p: Packet) => {
    const line = describe(p);
    if (line) out(`  ${stamp()} ${line}`);
  });
  broker.start();
  // Each every-hook runs at once, so a 10-minute interval is seen in a 3-second check.
  const now: LoadedScenario = { ...sc, every: sc.every.map((e) => ({ ...e, hook: { ...e.hook, start: "now" as const } })) };
  const cfg: SwarmConfig = {
    targets: [{ host: "127.0.0.1", port: broker.port }],
    sources: [],
    tls: false,
    insecure: true,
    tenant: o.tenant,
    qos: 1,
    version: o.version,
    keepaliveS: 60,
    intervalMs: [30_000, 30_000],
    payloadSize: 0,
    reconnectMs: [200, 1000],
    connectTimeoutMs: 5000,
    users: 1,
    rate: 100,
    ...(sc.session ? { session: sc.session } : {}),
    scenario: sc.ref,
  };
  const ids: IdentitySource = { count: 1, id: () => "check-0", load: () => ({ cert: "", key: "" }) };
  const swarm = new Swarm(cfg, ids, undefined, null, now);
  swarm.start();
  await Bun.sleep(Math.min(500, o.ms));
  for (const s of o.sends) {
    const n = broker.send(s.topic, Buffer.from(s.payload), { responseTopic: `${s.topic}/resp`, correlationData: Buffer.from("check") });
    out(`  ${stamp()} → device: ${s.topic} ${clip(s.payload)}${n ? "" : " (not delivered: the device is not connected)"}`);
  }
  await Bun.sleep(Math.max(0, o.ms - 500));
  await swarm.stop(1000);
  broker.stop();
  const stats = swarm.stats;
  let errors = 0;
  out("counted:");
  for (const [name, row] of stats.allRows()) {
    if (row.count + row.failures === 0) continue;
    if (name === "scenario_error") errors = row.failures;
    const reasons = [...row.reasons].map(([r, n]) => `${n}× ${r}`).join("; ");
    out(`  ${name.padEnd(18)} ${row.count} ok, ${row.failures} failed${reasons ? ` (${reasons})` : ""}`);
  }
  if (errors) out(`the scenario threw or blocked ${errors} time${errors === 1 ? "" : "s"}: see scenario_error above`);
  return errors;
}

function describe(p: Packet): string | null {
  switch (p.cmd) {
    case "connect":
      return `CONNECT ${p.clientId} (MQTT ${p.protocolVersion === 5 ? "5" : "3.1.1"}, clean ${p.clean})`;
    case "subscribe":
      return `SUBSCRIBE ${p.subscriptions.map((s) => `${s.topic} (QoS ${s.qos})`).join(", ")}`;
    case "publish": {
      const props = p.properties ? Object.keys(p.properties).filter((k) => k !== "topicAlias") : [];
      const body = Buffer.from(p.payload as Uint8Array);
      return `PUBLISH ${p.topic} (QoS ${p.qos}${p.retain ? ", retain" : ""}, ${body.length} B${props.length ? `, ${props.join(", ")}` : ""}) ${clip(body.toString("utf8"))}`;
    }
    case "unsubscribe":
      return `UNSUBSCRIBE ${p.unsubscriptions.join(", ")}`;
    case "disconnect":
      return "DISCONNECT";
    default:
      return null; // acks and pings: the engine's own
  }
}

function clip(s: string): string {
  return s.length > 160 ? `${s.slice(0, 160)}…` : s;
}
