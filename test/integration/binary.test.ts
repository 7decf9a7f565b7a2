/**
 * The compiled executable, as users run it: `bun run build`'s flags, run from a folder with no
 * node_modules. Bundling changes the order modules evaluate in (commands load lazily), so what
 * passes from the sources can still fail here.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { HAVE_MOSQUITTO, startBroker } from "../helpers/testbed.ts";
import { tempDir } from "../helpers/tmp.ts";

const ROOT = join(import.meta.dir, "../..");

async function run(cmd: string[], cwd: string): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn(cmd, { cwd, stdio: ["ignore", "pipe", "pipe"] });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

describe.skipIf(!HAVE_MOSQUITTO)("the compiled executable", () => {
  test("certs create, then a run with two worker processes against mutual-TLS mosquitto", async () => {
    using tmp = tempDir();
    const exe = join(tmp.path, "cicada");
    const build = await run([process.execPath, "build", "--compile", "--minify", join(ROOT, "src/cli/main.ts"), "--outfile", exe], ROOT);
    expect(build.code, build.err).toBe(0);

    const certDir = join(tmp.path, "cert");
    const made = await run([exe, "certs", "create", "--devices", "6", "--certs", certDir], tmp.path);
    expect(made.code, made.err).toBe(0);
    const keys = readdirSync(certDir).filter((f) => f.endsWith(".key") && f !== "ca.key");
    expect(keys.length).toBe(6);
    expect(statSync(join(certDir, keys[0]!)).mode & 0o777).toBe(0o600);

    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const report = join(tmp.path, "run.json");
    const ran = await run([exe, "run", "--certs", certDir, "--port", String(broker.port), "--users", "6", "--rate", "100", "--workers", "2", "--duration", "3s", "--interval", "300ms..500ms", "--report", report], tmp.path);
    expect(ran.code, ran.err).toBe(0);
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.workers.processes).toBe(2);
    expect(rep.stats.connect.count).toBe(6);
    expect(rep.stats.publish.count).toBeGreaterThan(6);
    // The broker saw each device connect with its own certificate's identity.
    const clients = new Set([...readFileSync(broker.log, "utf8").matchAll(/New client connected from \S+ as (admin:\S+) /g)].map((m) => m[1]));
    expect(clients.size).toBe(6);
  }, 120_000);
});
