/**
 * The README's command lines, run as written on the test bed: every `cicada …` line of its
 * shell blocks, with only what the test bed needs changed — the broker's and Redis's ports for
 * 8883 and 6379 (REDIS_PORT, and loopback for the example 10.0.0.x addresses), fewer devices and a few
 * seconds for minutes, dojot's API played by the fake (DOJOT_URL), `--once` for a machine so it
 * ends by itself. Each line must be accepted and do its job (exit 0, or 1 for a threshold
 * verdict, with the report written). A README line this test cannot place fails it.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { brokerCerts, startRedis } from "../scripts/lib/testbed.ts";
import { FAKE_PASSWORD, startFakeDojot } from "./helpers/fake-dojot.ts";
import { consumerFiles, HAVE_MOSQUITTO, HAVE_REDIS, HAVE_WEBSOCKIFY, startBroker, startWebsockify, type Broker } from "./helpers/testbed.ts";
import { cicada, spawnCicada, tempDir } from "./helpers/tmp.ts";

const README = readFileSync(join(import.meta.dir, "../README.md"), "utf8");

/** Every `cicada` command line of the README's ```sh blocks: continuations joined, comments dropped, `a | b` alternatives expanded. */
export function readmeCommands(text = README): string[] {
  const out: string[] = [];
  for (const block of text.matchAll(/```sh\n([\s\S]*?)```/g)) {
    const lines = block[1]!.replace(/\\\n\s*/g, " ").split("\n");
    for (let line of lines) {
      line = line.replace(/\s+#\s.*$/, "").trim().replace(/^\.\/dist\/cicada\b/, "cicada");
      if (!line.startsWith("cicada ")) continue;
      line = line.replace(/\s*\[[^\]]*\]/g, "").replace(/\s+\.\.\.$/, "");
      if (!line.includes(" | ")) {
        out.push(line);
        continue;
      }
      // `cicada store map | restore | clear --yes`: the first alternative is the last word before the first bar.
      const [first, ...rest] = line.split(" | ");
      const prefix = first!.slice(0, first!.lastIndexOf(" "));
      for (const alt of [first!.slice(prefix.length + 1), ...rest]) out.push(`${prefix} ${alt}`);
    }
  }
  return out;
}

/** Splits a command line as sh would (quotes, `$(…)` substituted by `subst`). */
function words(line: string, subst: (cmd: string) => string): string[] {
  const out: string[] = [];
  for (const m of line.matchAll(/'([^']*)'|"((?:[^"\\]|\\.)*)"|(\S+)/g)) {
    const w = m[1] ?? (m[2] ?? m[3]!).replace(/\$\(([^)]*)\)/g, (_, c: string) => subst(c));
    out.push(w);
  }
  return out;
}

interface Bed {
  broker: Broker;
  redisPort: number;
  /** websockify with client certificates in front of a plain mosquitto: the README's wss port 8084. */
  wssPort: number;
}

/** The test bed's version of a README command: ports, addresses, sizes and times scaled to it. */
function adapt(argv: string[], bed: Bed): string[] {
  const a = argv.slice(1);
  const cmd = a[0] === "certs" || a[0] === "store" || a[0] === "dojot" ? `${a[0]} ${a[1]}` : a[0]!;
  const out: string[] = [];
  for (let i = 0; i < a.length; i++) {
    const w = a[i]!;
    const next = a[i + 1];
    if ((w === "--devices" || w === "--users") && next) {
      out.push(w, String(Math.min(Number(next), cmd === "dojot create" ? 5 : 20)));
      i++;
    } else if (w === "--duration" && next) {
      out.push(w, "3s");
      i++;
    } else if (w === "--port" && next === "8883") {
      out.push(w, String(bed.broker.port));
      i++;
    } else if (w === "--port" && next === "8084") {
      out.push(w, String(bed.wssPort));
      i++;
    } else if (w === "--brokers" && next) {
      out.push(w, next.replace(/:8883\b/g, `:${bed.broker.port}`));
      i++;
    } else if (w === "--expect-machines" && next) {
      out.push(w, "1");
      i++;
    } else if (w === "--ui" && next) {
      out.push(w, "127.0.0.1:0");
      i++;
    } else if (w.startsWith("scenarios/")) out.push(join(import.meta.dir, "..", w)); // the shipped scenarios, from the repository
    else out.push(w.replace(/redis:\/\/(?:10\.0\.0\.1|127\.0\.0\.1):6379/, `redis://127.0.0.1:${bed.redisPort}`));
  }
  if (cmd === "run") {
    if (!out.includes("--port")) out.push("--port", String(bed.broker.port));
    if (!out.includes("--duration")) out.push("--duration", "3s");
  }
  if (cmd === "worker") out.push("--once", "--workers", "1");
  return out;
}

/** The same command with the spellings flags had before they were renamed (still accepted). */
function oldSpelling(argv: string[]): string[] {
  const group = argv[0] === "certs" || argv[0] === "store";
  const renamed: Record<string, string> = group
    ? { "--certs": "--dir", "--store": "--redis", "--signing-ca-cert": "--ca-cert", "--signing-ca-key": "--ca-key" }
    : { "--broker-ca": "--ca-cert" };
  return argv.map((w) => renamed[w] ?? w);
}

/**
 * A `run --ui` line serves until Ctrl-C: once it says where, a run is started and read back
 * over its API (with the token the line gives), then it gets SIGINT. True, or what went wrong.
 */
async function serveAndDrive(argv: string[], cwd: string): Promise<true | string> {
  const server = spawnCicada(argv, {}, cwd);
  try {
    const deadline = Date.now() + 20_000;
    let where: string | undefined;
    while (!(where = /dashboard on (http:\/\/\S+)\//.exec(server.out.err)?.[1]) && Date.now() < deadline && server.proc.exitCode === null) await Bun.sleep(50);
    if (!where) return `never said where it serves: ${server.out.err.trim()}`;
    const token = argv.includes("--token") ? argv[argv.indexOf("--token") + 1] : undefined;
    const headers = { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) };
    const started = await fetch(`${where}/api/runs`, { method: "POST", headers, body: JSON.stringify({ users: 5, duration: "2s" }) });
    if (started.status !== 201) return `POST /api/runs answered ${started.status}: ${await started.text()}`;
    const status = (await (await fetch(`${where}/api/status`, { headers })).json()) as { state: string };
    if (status.state !== "running") return `status ${JSON.stringify(status)}`;
    return true;
  } finally {
    server.proc.kill("SIGINT");
    await server.proc.exited;
  }
}

describe.skipIf(!HAVE_MOSQUITTO || !HAVE_REDIS || !HAVE_WEBSOCKIFY)("the README's commands", () => {
  test("the README's commands are found, and none is left unplaced", () => {
    const cmds = readmeCommands();
    expect(cmds.length).toBeGreaterThan(25);
    expect(cmds).toContain("cicada store restore");
    expect(cmds).toContain("cicada dojot clear --templates");
    // Every command names a subcommand this test runs below.
    for (const c of cmds) expect(c).toMatch(/^cicada (--help|run|worker|certs (create|revoke|crl|server)|store (export|map|restore|clear)|dojot (create|clear)|scenario (init|check)|doctor)\b/);
  });

  test("each runs on the test bed and does its job", async () => {
    using tmp = tempDir();
    const local = join(tmp.path, "local");
    const withDojot = join(tmp.path, "dojot");
    for (const d of [local, withDojot]) mkdirSync(d);
    using dojot = startFakeDojot(join(tmp.path, "dojot-ca"));
    await using redis = await startRedis({ stateDir: tmp.path });
    // The first certificates make the CA the broker is started with.
    expect((await cicada(["certs", "create", "--devices", "20"], { cwd: local })).code).toBe(0);
    await using broker = await startBroker({ certDir: join(local, "cert"), stateDir: tmp.path });
    // The README's WebSocket line: websockify checking device certificates, before a broker's plain port.
    await using plain = await startBroker({ certDir: join(local, "cert"), stateDir: tmp.path, plain: true });
    const made = brokerCerts(join(local, "cert"));
    await using wss = await startWebsockify({ target: plain, stateDir: tmp.path, tls: { cert: made.cert, key: made.key, ca: join(local, "cert", "ca.crt") } });
    const bed: Bed = { broker, redisPort: redis.port, wssPort: wss.port };
    writeFileSync(join(local, "cluster.key"), `${"k".repeat(64)}\n`, { mode: 0o600 });
    // A consumer identity the broker's ACL lets read every topic, for the subscriber lines.
    consumerFiles(join(local, "cert"), local);
    const subst = (c: string) => (c === "pidof mosquitto" ? String(broker.pid) : c === "openssl rand -hex 16" ? "0123456789abcdef0123456789abcdef" : `$(${c})`);
    const dojotEnv = { DOJOT_URL: dojot.url, DOJOT_PASSWD: FAKE_PASSWORD };

    const failures: string[] = [];
    let worker: ReturnType<typeof spawnCicada> | null = null;
    for (const line of readmeCommands()) {
      const argv = adapt(words(line, subst), bed);
      const isDojot = argv[0] === "dojot" || argv.includes("--dojot") || argv.includes("dojot");
      const cwd = isDojot ? withDojot : local;
      // Redis where the README's defaults look for it (REDIS_HOST:REDIS_PORT).
      const env = { ...(isDojot ? dojotEnv : {}), REDIS_PORT: String(redis.port) };
      if (argv[0] === "worker") {
        // A machine waits for its controller: the next README line.
        worker = spawnCicada(argv, env, cwd);
        continue;
      }
      if (argv.includes("--ui")) {
        const ok = await serveAndDrive(argv, cwd);
        if (ok !== true) failures.push(`${line}\n  ran: cicada ${argv.join(" ")}\n  ${ok}`);
        continue;
      }
      // The line as written, then, where it uses a renamed flag, with the old spelling.
      const old = oldSpelling(argv);
      for (const run of old.join(" ") === argv.join(" ") ? [argv] : [argv, old]) {
        const r = await cicada(run, { cwd, env });
        const report = run.includes("--report") ? join(cwd, run[run.indexOf("--report") + 1]!) : null;
        const thresholdVerdict = r.code === 1 && run.includes("--threshold") && report && existsSync(report);
        if (r.code !== 0 && !thresholdVerdict) failures.push(`${line}\n  ran: cicada ${run.join(" ")}\n  exit ${r.code}: ${r.stderr.trim().split("\n").slice(-3).join(" | ")}`);
      }
      if (argv.includes("--redis") && argv[0] === "run" && worker) {
        expect(await worker.proc.exited).toBe(0);
        worker = null;
      }
    }
    expect(failures).toEqual([]);
    expect(worker).toBeNull();
    // What the lines did, seen on disk: the reports, the revoked device, the exported store, dojot's certificates.
    for (const f of ["run.json", "run.html"]) expect(existsSync(join(local, f))).toBe(true);
    expect(existsSync(join(local, "cert", "revoke", "1a2b3c.crt"))).toBe(true);
    expect(existsSync(join(local, "cert", ".broker", "server.crt"))).toBe(true);
    expect([...dojot.certs.values()].length).toBeGreaterThanOrEqual(5 + 20);
  }, 240_000);
});

/** Members of interface `name` in the scenario API's source (scenario/api.ts). */
function membersOf(source: string, name: string): string[] {
  const body = new RegExp(`export interface ${name}\\b[^{]*\\{([\\s\\S]*?)\\n\\}`).exec(source)?.[1] ?? "";
  return [...body.matchAll(/^ {2}(?:readonly )?(\w+)\??[(:<]/gm)].map((m) => m[1]!);
}

test("the README's Scenarios section names every member of the scenario API (src/scenario/api.ts)", () => {
  const api = readFileSync(join(import.meta.dir, "../src/scenario/api.ts"), "utf8");
  const section = README.slice(README.indexOf("## Scenarios"), README.indexOf("\n## ", README.indexOf("## Scenarios") + 3));
  const missing: string[] = [];
  for (const iface of ["Scenario", "Every", "PublishOptions", "Message"]) {
    const members = membersOf(api, iface);
    expect(members.length).toBeGreaterThan(2);
    for (const m of members) if (!section.includes(`\`${m}\``)) missing.push(`${iface}.${m}`);
  }
  const device = membersOf(api, "Device");
  expect(device).toContain("publish");
  for (const m of device) if (!new RegExp(`\`d\\.${m}\\b`).test(section)) missing.push(`Device.${m}`);
  expect(missing).toEqual([]);
});
