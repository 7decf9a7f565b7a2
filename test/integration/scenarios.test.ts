/**
 * Every shipped scenario (scenarios/*.ts) run by `cicada run --scenario` against real mosquitto
 * with mutual TLS, checked by what a probe at mosquitto saw: the topics and payloads each
 * scenario sends, what it answers, what it receives after being away. Plus what a broken
 * scenario costs (a counted scenario_error, never the process), and bad scenarios at the door.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { IPublishPacket } from "mqtt-packet";
import { waitFor } from "../helpers/broker.ts";
import type { Probe } from "../helpers/probe.ts";
import { makeCerts } from "../helpers/swarm.ts";
import { HAVE_MOSQUITTO, probeOn, startBroker, type Broker } from "../helpers/testbed.ts";
import { cicada, sh, spawnCicada, tempDir, type TempDir } from "../helpers/tmp.ts";

const SCENARIOS = resolve(import.meta.dir, "../../scenarios");

interface Row {
  count: number;
  failures: number;
  reasons: Record<string, number>;
  latency_count: number;
}
interface Report {
  config: Record<string, unknown>;
  stats: Record<string, Row>;
  errors: Record<string, Record<string, number>>;
  publishes: { sent: number; acked: number; failed: number };
  health: { sessions_resumed: number };
  notes?: string[];
}

let tmp: TempDir;
let certDir: string;
let broker: Broker;

beforeAll(async () => {
  if (!HAVE_MOSQUITTO) return;
  tmp = tempDir();
  certDir = join(tmp.path, "cert");
  await makeCerts(certDir, 12);
  // Beyond dojot's topics: each device anywhere under its own name, and the firmware topics read-only.
  broker = await startBroker({ certDir, stateDir: tmp.path, acl: ["pattern readwrite %u/#", "pattern read firmware/#"] });
});

afterAll(async () => {
  await broker?.stop();
  tmp?.[Symbol.dispose]();
});

const base = () => ["--certs", certDir, "--port", String(broker.port), "--rate", "100", "--drain", "2s"];

let runs = 0;
/** `cicada run ARGS` (must exit 0) and its JSON report. */
async function run(args: string[], env: Record<string, string> = {}): Promise<{ report: Report; printed: string }> {
  const path = join(tmp.path, `run-${++runs}.json`);
  const r = await cicada(["run", ...base(), ...args, "--report", path], { env });
  if (r.code !== 0) throw new Error(`cicada exited ${r.code}: ${r.stderr}`);
  return { report: JSON.parse(readFileSync(path, "utf8")) as Report, printed: r.stdout + r.stderr };
}

/** Starts `cicada run ARGS` in the background; resolves to its report when it exits 0. */
function runInBackground(args: string[], env: Record<string, string> = {}): Promise<Report> {
  const path = join(tmp.path, `run-${++runs}.json`);
  const bg = spawnCicada(["run", ...base(), ...args, "--report", path], env);
  return bg.proc.exited.then((code) => {
    if (code !== 0) throw new Error(`cicada exited ${code}: ${bg.out.err}`);
    return JSON.parse(readFileSync(path, "utf8")) as Report;
  });
}

const published = (p: Probe, topic: RegExp = /./) => p.packets.filter((x): x is IPublishPacket => x.cmd === "publish" && topic.test(x.topic));
const json = (p: IPublishPacket) => JSON.parse(Buffer.from(p.payload as Uint8Array).toString()) as Record<string, unknown>;
const deviceOf = (topic: string) => topic.slice(0, topic.indexOf("/"));

describe.skipIf(!HAVE_MOSQUITTO)("shipped scenarios against mosquitto", () => {
  test("tracker: positions at the moving and parked intervals, a pong for each ping, every publish acked and seen by the broker", async () => {
    await using probe = await probeOn(certDir, broker, "+/attrs", 1);
    const env = { TRACKER_MOVING: "250ms", TRACKER_PARKED: "1s" };
    const done = runInBackground(["--scenario", join(SCENARIOS, "tracker.ts"), "--users", "10", "--duration", "5s"], env);
    await waitFor(() => new Set(published(probe).map((p) => deviceOf(p.topic))).size === 10, "a position from each of the 10 trackers");
    const devices = [...new Set(published(probe).map((p) => deviceOf(p.topic)))];
    for (const d of devices) await probe.publish(`${d}/config`, JSON.stringify({ op: "ping" }));
    const report = await done;
    const all = published(probe);
    const gps = all.map(json).filter((m) => "lat" in m);
    const pongs = all.map(json).filter((m) => "pong" in m);
    expect(gps.length).toBeGreaterThan(20);
    for (const m of gps) expect(typeof m.lat === "number" && typeof m.lon === "number" && typeof m.moving === "boolean").toBe(true);
    // Moving, a tracker reports every 250 ms; parked, every second: ~5 s of moving makes ~20 positions, of parking ~5.
    const perDevice = devices.map((d) => all.filter((p) => deviceOf(p.topic) === d && "lat" in json(p)));
    for (const mine of perDevice) {
      const moving = mine.filter((p) => json(p).moving === true).length;
      const parked = mine.length - moving;
      expect(moving + parked).toBeGreaterThan(0);
      if (moving === mine.length) expect(mine.length).toBeGreaterThan(10);
      if (parked === mine.length) expect(mine.length).toBeLessThan(9);
    }
    expect(pongs.length).toBe(10);
    expect(report.stats.recv_message!.count).toBe(10);
    expect(report.stats.subscribe!.count).toBe(10);
    // Every publish the report counts, the broker delivered: no more, no fewer.
    expect(report.publishes.acked).toBe(report.publishes.sent);
    expect(all.length).toBe(report.publishes.sent);
    expect(report.config.scenario).toBe("tracker");
    // Each tracker's messages are numbered 1, 2, 3, … in the order the broker saw them.
    for (const d of devices) {
      const seqs = all.filter((p) => deviceOf(p.topic) === d).map((p) => json(p).seq as number);
      expect(seqs).toEqual(seqs.map((_, i) => i + 1));
    }
  });

  test("meter: readings on its interval, the daily totals of every meter together at the day's boundary, a config message changes one meter's interval", async () => {
    await using probe = await probeOn(certDir, broker, "+/attrs", 1);
    const env = { METER_READING: "1s", METER_DAY: "3s" };
    const done = runInBackground(["--scenario", join(SCENARIOS, "meter.ts"), "--users", "8", "--duration", "7s"], env);
    await waitFor(() => published(probe).length >= 8, "first readings");
    const fast = deviceOf(published(probe)[0]!.topic);
    await probe.publish(`${fast}/config`, JSON.stringify({ report: "200ms" }));
    const report = await done;
    const msgs = published(probe).map((p) => ({ device: deviceOf(p.topic), m: json(p) }));
    const daily = msgs.filter((x) => "daily_kwh" in x.m);
    // Each boundary of the 3 s "day" that passed while connected: all 8 meters report within ~a tick of it.
    expect(daily.length).toBeGreaterThanOrEqual(8);
    for (const x of daily) {
      const off = (x.m.ts as number) % 3000;
      expect(Math.min(off, 3000 - off)).toBeLessThan(50);
    }
    const readings = (d: string) => msgs.filter((x) => x.device === d && "kwh" in x.m).length;
    const others = [...new Set(msgs.map((x) => x.device))].filter((d) => d !== fast);
    expect(readings(fast)).toBeGreaterThan(2 * Math.max(...others.map(readings)));
    expect(report.publishes.acked).toBe(msgs.length);
  });

  test("command-responder (MQTT 5): each request answered on its Response Topic with its Correlation Data; a bad request is counted", async () => {
    await using probe = await probeOn(certDir, broker, "+/resp", 1, { protocolVersion: 5 });
    const done = runInBackground(["--scenario", join(SCENARIOS, "command-responder.ts"), "--users", "5", "--duration", "4s"]);
    // The devices' client ids (their certificates' CNs), as the broker logs them from this run on.
    const logFrom = readFileSync(broker.log, "utf8").length;
    const connected = () => [...new Set([...readFileSync(broker.log, "utf8").slice(logFrom).matchAll(/as (admin:\S+) /g)].map((m) => m[1]!))];
    await waitFor(() => connected().length >= 5, "5 devices connected");
    await Bun.sleep(300); // their SUBSCRIBEs
    const ids = connected();
    for (const [i, id] of ids.entries()) {
      probe.send({ cmd: "publish", topic: `${id}/req`, payload: Buffer.from(JSON.stringify({ op: "reboot", ts: Date.now() })), qos: 0, retain: false, dup: false, properties: { responseTopic: `${id}/resp`, correlationData: Buffer.from(`req-${i}`) } });
    }
    probe.send({ cmd: "publish", topic: `${ids[0]}/req`, payload: Buffer.from("{}"), qos: 0, retain: false, dup: false, properties: { responseTopic: `${ids[0]}/resp` } });
    await waitFor(() => published(probe).length >= 5, "5 answers");
    const report = await done;
    const answers = published(probe);
    expect(answers.length).toBe(5);
    for (const a of answers) {
      const i = ids.indexOf(deviceOf(a.topic));
      expect(i).toBeGreaterThanOrEqual(0);
      expect(Buffer.from(a.properties!.correlationData!).toString()).toBe(`req-${i}`);
      expect(a.properties!.contentType).toBe("application/json");
      expect(json(a)).toMatchObject({ op: "reboot", ok: true });
    }
    expect(report.stats.command!.count).toBe(5);
    expect(report.stats.command!.latency_count).toBe(5);
    expect(report.errors.command).toEqual({ bad_request: 1 });
    expect(report.config.mqtt).toBe("5");
  });

  test("firmware: every device downloads the retained image in chunks, checks it and reports its progress; a bad checksum is counted", async () => {
    await using admin = await probeOn(certDir, broker, "+/attrs", 1);
    const image = new Uint8Array(64 * 1024).map((_, i) => (i * 7) & 0xff);
    const chunks = 16;
    const publishImage = (version: string, sha256: string) => {
      for (let n = 0; n < chunks; n++) admin.send({ cmd: "publish", topic: `firmware/${version}/${n}`, payload: Buffer.from(image.subarray(n * 4096, (n + 1) * 4096)), qos: 0, retain: true, dup: false });
      admin.send({ cmd: "publish", topic: "firmware/manifest", payload: Buffer.from(JSON.stringify({ version, chunks, size: image.length, sha256 })), qos: 0, retain: true, dup: false });
    };
    publishImage("2.0.0", createHash("sha256").update(image).digest("hex"));
    await Bun.sleep(200);
    const { report } = await run(["--scenario", join(SCENARIOS, "firmware.ts"), "--users", "5", "--duration", "3s"]);
    expect(report.stats.firmware_download!.count).toBe(5);
    expect(report.stats.firmware_download!.latency_count).toBe(5);
    const progress = published(admin).map(json).filter((m) => m.firmware === "2.0.0");
    expect(progress.map((m) => m.progress).sort()).toEqual([25, 50, 75, 100].flatMap((p) => Array(5).fill(p)).sort());

    publishImage("2.0.1", "0".repeat(64));
    await Bun.sleep(200);
    const bad = await run(["--scenario", join(SCENARIOS, "firmware.ts"), "--users", "5", "--duration", "3s"]);
    expect(bad.report.errors.firmware).toEqual({ checksum: 5 });
    expect(bad.report.stats.firmware_download?.count ?? 0).toBe(0);
    for (const t of ["firmware/manifest", ...Array.from({ length: chunks }, (_, n) => `firmware/2.0.0/${n}`), ...Array.from({ length: chunks }, (_, n) => `firmware/2.0.1/${n}`)]) {
      admin.send({ cmd: "publish", topic: t, payload: Buffer.alloc(0), qos: 0, retain: true, dup: false });
    }
  });

  test("intermittent: offline for a while, back on its persistent session with the commands sent meanwhile, and with the readings it took while away", async () => {
    await using probe = await probeOn(certDir, broker, "+/attrs", 1);
    const env = { INTERMITTENT_ONLINE: "1500ms", INTERMITTENT_OFFLINE: "2500ms", INTERMITTENT_READING: "200ms" };
    const done = runInBackground(["--scenario", join(SCENARIOS, "intermittent.ts"), "--users", "5", "--duration", "7s"], env);
    await waitFor(() => new Set(published(probe).map((p) => deviceOf(p.topic))).size === 5, "readings from the 5 devices");
    const devices = [...new Set(published(probe).map((p) => deviceOf(p.topic)))];
    // Gone: nothing from any of them for 600 ms (they read every 200 ms).
    await waitFor(() => Date.now() - Math.max(...published(probe).map((p) => (json(p).ts as number) ?? 0)) > 600 && published(probe).length > 0, "the devices offline", 5000);
    const sentAt = Date.now();
    for (const d of devices) await probe.publish(`${d}/config`, JSON.stringify({ ts: sentAt, cmd: "calibrate" }));
    const report = await done;
    // The commands waited in their sessions and came when the devices were back.
    expect(report.stats.command!.count).toBe(5);
    expect(report.health.sessions_resumed).toBeGreaterThanOrEqual(5);
    // Every reading arrived, numbered without a gap; some were taken while away and sent late.
    const msgs = published(probe).map((p) => ({ device: deviceOf(p.topic), m: json(p) }));
    for (const d of devices) {
      const seqs = msgs.filter((x) => x.device === d).map((x) => x.m.seq as number).sort((a, b) => a - b);
      expect(seqs).toEqual(seqs.map((_, i) => i + 1));
    }
    expect(msgs.filter((x) => x.m.late === true).length).toBeGreaterThanOrEqual(5);
    expect(report.publishes.acked).toBe(msgs.length);
    expect(report.config.clean).toBe(false);
  });

  test("dojot.ts sends what the built-in device sends: its attrs topic, {timestamp, seq}, and the config subscription", async () => {
    await using probe = await probeOn(certDir, broker, "+/attrs", 1);
    const scripted = await run(["--scenario", join(SCENARIOS, "dojot.ts"), "--users", "4", "--duration", "2s"], { DOJOT_INTERVAL: "300ms" });
    const fromScript = published(probe).map((p) => ({ topic: p.topic, keys: Object.keys(json(p)).sort() }));
    probe.packets.length = 0;
    const builtIn = await run(["--users", "4", "--duration", "2s", "--interval", "300ms"]);
    const fromBuiltIn = published(probe).map((p) => ({ topic: p.topic, keys: Object.keys(json(p)).sort() }));
    expect(new Set(fromScript.map((x) => x.topic))).toEqual(new Set(fromBuiltIn.map((x) => x.topic)));
    expect(new Set(fromScript.map((x) => x.keys.join()))).toEqual(new Set(["seq,timestamp"]));
    expect(new Set(fromBuiltIn.map((x) => x.keys.join()))).toEqual(new Set(["seq,timestamp"]));
    expect(Object.keys(scripted.report.stats).sort()).toEqual(Object.keys(builtIn.report.stats).sort());
    expect(scripted.report.stats.subscribe!.count).toBe(4);
    expect(builtIn.report.stats.subscribe!.count).toBe(4);
  });
});

describe.skipIf(!HAVE_MOSQUITTO)("a broken scenario costs counted errors, never the process", () => {
  test("throws and async rejections are counted by hook and message, a blocking hook is named, custom rows add up over workers", async () => {
    const file = join(tmp.path, "broken.ts");
    writeFileSync(
      file,
      `import { defineScenario } from "cicada/scenario";
export default defineScenario<{ n: number }>({
  name: "broken",
  state: () => ({ n: 0 }),
  every: [
    { name: "tick", interval: "100ms", run(d) {
      d.state.n++;
      d.measure("ticks", 1);
      if (d.index % 2 === 0) throw new Error("boom");
      if (d.index === 1 && d.state.n === 3) { const end = performance.now() + 80; while (performance.now() < end) {} }
      d.publish("{clientId}/attrs".replace("{clientId}", d.clientId), { n: d.state.n }, { qos: 1 });
    } },
    { name: "later", interval: "300ms", async run(d) { await null; if (d.index === 5) throw new Error("async boom"); } },
  ],
  onConnect(d) { if (d.index === 3) (undefined as unknown as { x: number }).x; },
});
`,
    );
    const { report } = await run(["--scenario", file, "--users", "6", "--duration", "2s", "--workers", "2"]);
    const errors = report.errors.scenario_error!;
    expect(Object.keys(errors).some((k) => /^tick: Error: boom$/.test(k))).toBe(true);
    expect(Object.keys(errors).some((k) => /^onConnect: TypeError/.test(k))).toBe(true);
    // An async hook's rejection is counted too; left unhandled it would have ended the worker.
    expect(errors["later: Error: async boom"]).toBeGreaterThanOrEqual(3);
    expect(errors["blocked:tick"]).toBeGreaterThanOrEqual(1);
    expect(report.notes?.some((n) => n.includes("tick hook ran over 50 ms"))).toBe(true);
    // Devices 1, 3, 5 went on publishing; the custom row counted every tick of the 6, over both workers.
    expect(report.publishes.acked).toBeGreaterThan(15);
    expect(report.stats.ticks!.count).toBeGreaterThan(report.publishes.acked);
    expect(report.stats.ticks!.count).toBe(report.publishes.acked + errors["tick: Error: boom"]!);
  });

  test("bad scenarios and clashing flags are refused before any connection, every problem listed (exit 2)", async () => {
    const file = join(tmp.path, "bad.ts");
    writeFileSync(file, `export default { name: "bad name!", every: [{ interval: "5 parsecs", run: 1 }], onMessage: "no" };\n`);
    const r = await cicada(["run", ...base(), "--scenario", file, "--users", "1", "--duration", "1s"]);
    expect(r.code).toBe(2);
    for (const want of ["name must be", "every[0]: run must be a function", "every[0]: interval must be", "onMessage must be a function"]) expect(r.stderr).toContain(want);
    const clash = await cicada(["run", ...base(), "--scenario", join(SCENARIOS, "tracker.ts"), "--topic", "x/y", "--msg-rate", "10"]);
    expect(clash.code).toBe(2);
    expect(clash.stderr).toContain("--topic does not go with --scenario");
    expect(clash.stderr).toContain("--msg-rate does not go with --scenario");
    const missing = await cicada(["run", ...base(), "--scenario", "tracker"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("give --scenarios DIR");
    const broken = join(tmp.path, "syntax.ts");
    writeFileSync(broken, "export default {{;\n");
    const syntax = await cicada(["run", ...base(), "--scenario", broken]);
    expect(syntax.code).toBe(2);
    expect(syntax.stderr).toContain("does not load");
  });
});

describe("cicada scenario init and check", () => {
  // tsc from this repository's node_modules, as a scenario author's project would have it.
  const withTsc = { PATH: `${resolve(import.meta.dir, "../../node_modules/.bin")}:${process.env.PATH}` };

  test("init writes a starter and the API's types; check type-checks it and shows what one device sends and receives", async () => {
    using dir = tempDir();
    const init = await cicada(["scenario", "init", "thermo", "--dir", dir.path]);
    expect(init.code).toBe(0);
    expect(readFileSync(join(dir.path, "cicada.d.ts"), "utf8")).toContain('declare module "cicada/scenario"');
    expect(readFileSync(join(dir.path, "thermo.ts"), "utf8")).toContain('name: "thermo"');
    // Never over an existing scenario.
    const again = await cicada(["scenario", "init", "thermo", "--dir", dir.path]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain("exists");

    const check = await cicada(["scenario", "check", join(dir.path, "thermo.ts"), "--seconds", "1s", "--send", 'admin:check-0/config {"ts":1}'], { env: withTsc });
    expect(check.code).toBe(0);
    expect(check.stdout).toContain("types: ok");
    expect(check.stdout).toMatch(/SUBSCRIBE admin:check-0\/config \(QoS 1\)/);
    expect(check.stdout).toMatch(/PUBLISH admin:check-0\/attrs \(QoS 1, \d+ B\) \{"ts":\d+,"seq":1,"temperature":[\d.]+\}/);
    expect(check.stdout).toMatch(/command +1 ok, 0 failed/);
  });

  test("check fails a scenario with a type error, and names what its hooks threw", async () => {
    using dir = tempDir();
    writeFileSync(join(dir.path, "typo.ts"), `import { defineScenario } from "cicada/scenario";\nexport default defineScenario({ name: "typo", every: [{ interval: "1s", run: (d) => d.publsh("x") }] });\n`);
    const r = await cicada(["scenario", "check", join(dir.path, "typo.ts"), "--seconds", "300ms"], { env: withTsc });
    expect(r.code).toBe(2);
    expect(r.stdout).toContain("TS2551"); // Property 'publsh' does not exist … Did you mean 'publish'?
    expect(r.stdout).toMatch(/scenario_error +0 ok, 1 failed \(1× every\[0\]: TypeError/);
  });

  test("check piped into head and cut short ends quietly with its own verdict", async () => {
    const main = resolve(import.meta.dir, "../../src/cli/main.ts");
    const r = await sh(["bash", "-c", `set -o pipefail; "${process.execPath}" "${main}" scenario check "${join(SCENARIOS, "dojot.ts")}" --no-typecheck --seconds 300ms | head -1`]);
    expect(r.stdout).toStartWith("scenario dojot: loads");
    expect(r.stderr).not.toContain("EPIPE");
    expect(r.code).toBe(0);
  });

  test("check runs every shipped scenario's hooks once without an error", async () => {
    for (const f of ["dojot", "meter", "tracker", "command-responder", "firmware", "intermittent"]) {
      const r = await cicada(["scenario", "check", join(SCENARIOS, `${f}.ts`), "--seconds", "300ms"], { env: withTsc });
      expect({ f, code: r.code, out: r.code ? r.stdout + r.stderr : "" }).toEqual({ f, code: 0, out: "" });
      expect(r.stdout).toContain("types: ok");
    }
  });
});
